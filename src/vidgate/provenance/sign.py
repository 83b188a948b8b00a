"""Sign a video with a C2PA manifest that says how it was made.

The manifest (c2pa-python's ``Builder``) holds:

* vidgate as claim generator (``vidgate/<version>``);
* a ``c2pa.actions`` assertion whose ``c2pa.created`` action has the IPTC digital source type
  ``trainedAlgorithmicMedia`` and the model as ``softwareAgent`` (with its provider and
  offering);
* an ``org.vidgate.generation`` assertion: the job id, the SHA-256 of the prompt, and the
  prompt itself only when asked (``VIDGATE_C2PA_INCLUDE_PROMPT``);
* ingredients: inputs (``inputTo``), shots of a film (``componentOf``), and — always, when the
  file already carries a manifest (a provider's own) — the file itself as ``parentOf``, so
  that manifest is kept inside ours instead of being stripped.

Ingredient thumbnails are off unless ``VIDGATE_C2PA_THUMBNAILS`` (a 2 KB input image would
otherwise add ~185 KB); there is no timestamp authority unless ``VIDGATE_C2PA_TSA_URL``.

Reuse (e.g. a film assembled from shots, each shot an ingredient)::

    from vidgate.provenance.keys import startup_check
    from vidgate.provenance.sign import COMPOSITE, Ingredient, ManifestInfo, sign_file

    keys = startup_check(settings)            # None when signing is not configured
    sign_file(
        film_path, signed_path,
        manifest_info=ManifestInfo(title="film.mp4", model="vidgate-story",
                                   provider="vidgate", source_type=COMPOSITE,
                                   job_id=story_id, prompt=story_text),
        ingredients=[Ingredient(title=f"shot {i}", path=p, relationship="componentOf")
                     for i, p in enumerate(shot_paths, 1)],
        keys=keys,
    )

``sign_file`` writes to a temporary file beside ``dst`` and renames it (c2pa leaves a 0-byte
destination when it fails), so ``dst`` is either the complete signed file or untouched.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import c2pa  # type: ignore[import-untyped]

from vidgate import __version__
from vidgate.provenance.keys import TRUST_CONFIG, KeyProblem, SigningKeys

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: a composite of generated parts (a film of generated shots)
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
GENERATION_LABEL = "org.vidgate.generation"
CLAIM_GENERATOR = "vidgate"
#: the UUID of the ISO BMFF box a C2PA manifest store lives in
C2PA_BOX_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
#: clips up to this size are signed in memory (faster); larger ones are streamed
IN_MEMORY_BYTES = 64 * 1024 * 1024
#: longest edge of ingredient thumbnails when they are turned on
THUMBNAIL_EDGE = 256

Relationship = Literal["parentOf", "componentOf", "inputTo"]


class SigningFailed(Exception):
    """c2pa refused to sign (the message is c2pa's, one line)."""


@dataclass(frozen=True)
class ManifestInfo:
    """What the manifest says about how the video was made."""

    title: str
    model: str
    provider: str
    offering: str | None = None
    job_id: str | None = None
    #: hashed into the manifest; included as text only with ``include_prompt``
    prompt: str | None = None
    include_prompt: bool = False
    action: str = "c2pa.created"
    source_type: str = TRAINED
    #: more facts for the generation assertion (mode, seed, duration...): JSON values
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ingredient:
    """An input, a part or the parent of the signed file.

    With ``path`` or ``data`` c2pa hashes the bytes (and carries any manifest they hold);
    with neither, the ingredient is a description only (a URL we never fetched)."""

    title: str
    relationship: Relationship = "inputTo"
    path: Path | None = None
    data: bytes | None = None
    #: MIME type of ``path``/``data`` (image/png, video/mp4...)
    format: str | None = None
    description: str | None = None


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def build_manifest(info: ManifestInfo, fmt: str = "video/mp4") -> dict[str, Any]:
    agent: dict[str, Any] = {"name": info.model, "provider": info.provider}
    if info.offering:
        agent["offering"] = info.offering
    generation: dict[str, Any] = {"model": info.model, "provider": info.provider}
    if info.offering:
        generation["offering"] = info.offering
    if info.job_id:
        generation["job_id"] = info.job_id
    if info.prompt is not None:
        generation["prompt_sha256"] = prompt_sha256(info.prompt)
        if info.include_prompt:
            generation["prompt"] = info.prompt
    generation.update(info.extra)
    return {
        "claim_generator_info": [{"name": CLAIM_GENERATOR, "version": __version__}],
        "title": info.title,
        "format": fmt,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": info.action,
                            "digitalSourceType": info.source_type,
                            "softwareAgent": agent,
                        }
                    ]
                },
            },
            {"label": GENERATION_LABEL, "data": generation},
        ],
    }


def settings_dict(*, thumbnails: bool = False) -> dict[str, Any]:
    """c2pa settings for signing and reading: the C2PA EKU set, no network fetches from a
    manifest's contents (a remote manifest URL or OCSP responder is whatever a provider
    wrote), and small or no thumbnails."""
    thumb: dict[str, Any] = {"enabled": thumbnails}
    if thumbnails:
        thumb.update(long_edge=THUMBNAIL_EDGE, quality="low")
    return {
        "trust": {"trust_config": TRUST_CONFIG},
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "builder": {"thumbnail": thumb},
    }


def has_manifest(f: IO[bytes]) -> bool:
    """Whether an MP4/MOV holds a C2PA manifest box: a walk over its top-level box headers
    (a few small reads, not a hash of the file)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    pos = 0
    while pos + 8 <= end:
        f.seek(pos)
        head = f.read(32)
        size, kind = struct.unpack(">I4s", head[:8])
        body = 8
        if size == 1 and len(head) >= 16:
            size, body = struct.unpack(">Q", head[8:16])[0], 16
        elif size == 0:
            size = end - pos
        if kind == b"uuid" and head[body : body + 16] == C2PA_BOX_UUID:
            return True
        if size < 8:
            return False  # not a box structure we can walk
        pos += size
    return False


def _signer(keys: SigningKeys, tsa_url: str | None) -> Any:
    info = c2pa.C2paSignerInfo(keys.alg.encode(), keys.chain_pem, keys.key_pem, tsa_url)
    return c2pa.Signer.from_info(info)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _add_ingredient(builder: Any, ing: Ingredient) -> None:
    meta: dict[str, Any] = {"title": ing.title, "relationship": ing.relationship}
    if ing.description:
        meta["description"] = ing.description
    fmt = ing.format or "video/mp4"
    if ing.data is not None:
        builder.add_ingredient(meta, fmt, io.BytesIO(ing.data))
        return
    assert ing.path is not None
    with open(ing.path, "rb") as f:
        builder.add_ingredient(meta, fmt, f)


def sign_file(
    src: Path,
    dst: Path,
    *,
    manifest_info: ManifestInfo,
    ingredients: Sequence[Ingredient] = (),
    keys: SigningKeys,
    tsa_url: str | None = None,
    thumbnails: bool = False,
    fmt: str = "video/mp4",
) -> int:
    """Sign ``src`` into ``dst`` (atomically); returns the manifest's size in bytes.

    A manifest already in ``src`` becomes the ``parentOf`` ingredient (unless the caller
    gave a parent), so it survives inside the new manifest store."""
    manifest = build_manifest(manifest_info, fmt)
    # description-only ingredients go in the definition: c2pa wants no stream for them
    described = [i for i in ingredients if i.path is None and i.data is None]
    if described:
        manifest["ingredients"] = [
            {
                k: v
                for k, v in {
                    "title": i.title,
                    "relationship": i.relationship,
                    "format": i.format,
                    "description": i.description,
                }.items()
                if v
            }
            for i in described
        ]
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    # c2pa reads and writes through Python callbacks, many small calls: on a clip that fits
    # in IN_MEMORY_BYTES, reading it whole and writing the result once halves the time
    in_memory = src.stat().st_size <= IN_MEMORY_BYTES
    try:
        context = c2pa.Context.from_dict(settings_dict(thumbnails=thumbnails))
        with (
            c2pa.Builder(manifest, context) as builder,
            io.BytesIO(src.read_bytes()) if in_memory else open(src, "rb") as source,
        ):
            if has_manifest(source) and not any(i.relationship == "parentOf" for i in ingredients):
                source.seek(0)
                parent = {
                    "title": f"{manifest_info.title} (as delivered)",
                    "relationship": "parentOf",
                }
                builder.add_ingredient(parent, fmt, source)
            for ing in ingredients:
                if ing.path is not None or ing.data is not None:
                    _add_ingredient(builder, ing)
            source.seek(0)
            with open(tmp, "w+b") as out:
                if in_memory:
                    buffer = io.BytesIO()
                    manifest_bytes = builder.sign(_signer(keys, tsa_url), fmt, source, buffer)
                    out.write(buffer.getbuffer())
                else:
                    manifest_bytes = builder.sign(_signer(keys, tsa_url), fmt, source, out)
        os.replace(tmp, dst)
    except c2pa.C2paError as e:
        raise SigningFailed(_one_line(e)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return len(manifest_bytes)


def _tiny_png() -> bytes:
    """A valid 1×1 PNG, written by hand so the start-up check needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80\x80\x80")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def trial_sign(keys: SigningKeys, *, tsa_url: str | None = None) -> None:
    """Have c2pa sign a 1×1 image with ``keys``: whatever c2pa objects to shows up now."""
    info = ManifestInfo(title="start-up check", model="none", provider="vidgate")
    try:
        context = c2pa.Context.from_dict(settings_dict())
        with c2pa.Builder(build_manifest(info, "image/png"), context) as builder:
            builder.sign(_signer(keys, tsa_url), "image/png", io.BytesIO(_tiny_png()), io.BytesIO())
    except c2pa.C2paError as e:
        where = f" (timestamp authority {tsa_url})" if tsa_url else ""
        raise KeyProblem(
            f"c2pa cannot sign with VIDGATE_C2PA_CERT/VIDGATE_C2PA_KEY{where}: {_one_line(e)}; "
            "check the pair, or unset VIDGATE_C2PA_TSA_URL if the timestamp authority is "
            "unreachable"
        ) from None

"""Signing a delivered MP4 and reading it back with c2pa-python's own Reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import c2pa  # type: ignore[import-untyped]
import pytest

from tests.provenance.conftest import Pair, flip_byte_in, png_bytes
from vidgate import __version__
from vidgate.provenance.sign import (
    GENERATION_LABEL,
    TRAINED,
    Ingredient,
    ManifestInfo,
    SigningFailed,
    has_manifest,
    prompt_sha256,
    sign_file,
)
from vidgate.provenance.verify import BadMedia, describe, verify_file

PROMPT = "a lighthouse at dusk, waves below"


def info(**kw: object) -> ManifestInfo:
    values: dict[str, object] = {
        "title": "job_1.mp4",
        "model": "veo-3",
        "provider": "google",
        "offering": "veo-3-vertex",
        "job_id": "job_1",
        "prompt": PROMPT,
    }
    values.update(kw)
    return ManifestInfo(**values)  # type: ignore[arg-type]


def c2pa_read(path: Path, anchor: bytes | None = None) -> tuple[str, dict[str, object]]:
    """c2pa-python's Reader, with nothing of ours in between."""
    cfg: dict[str, object] = {}
    if anchor is not None:
        cfg = {"trust": {"trust_anchors": anchor.decode()}, "verify": {"verify_trust": True}}
    with open(path, "rb") as f, c2pa.Reader("video/mp4", f, None, c2pa.Context.from_dict(cfg)) as r:
        return str(r.get_validation_state()), json.loads(r.json())


@pytest.fixture
def signed(clip: Path, ours: Pair, tmp_path: Path) -> Path:
    dst = tmp_path / "signed.mp4"
    sign_file(
        clip,
        dst,
        manifest_info=info(),
        ingredients=[Ingredient("reference 1", data=png_bytes(), format="image/png")],
        keys=ours.keys,
    )
    return dst


def test_signed_clip_is_valid_and_trusted_by_the_dev_ca(signed: Path, ours: Pair) -> None:
    state, _store = c2pa_read(signed)
    assert state == "Valid"
    trusted, _ = c2pa_read(signed, ours.anchor)
    assert trusted == "Trusted"
    # and our report agrees with c2pa on both
    assert verify_file(signed).state == "Valid"
    assert verify_file(signed, trust_anchors=ours.anchor).state == "Trusted"


def test_another_ca_as_anchor_does_not_make_it_trusted(signed: Path, provider_pair: Pair) -> None:
    report = verify_file(signed, trust_anchors=provider_pair.anchor)
    assert report.state == "Valid"
    assert "signingCredential.untrusted" in report.codes


def test_manifest_says_what_made_the_clip(signed: Path) -> None:
    _, store = c2pa_read(signed)
    active = store["manifests"][store["active_manifest"]]  # type: ignore[index]
    assert active["claim_generator_info"][0]["name"] == "vidgate"
    assert active["claim_generator_info"][0]["version"] == __version__
    actions = [
        a
        for x in active["assertions"]
        if x["label"].startswith("c2pa.actions")
        for a in x["data"]["actions"]
    ]
    assert [a["action"] for a in actions] == ["c2pa.created"]
    assert actions[0]["digitalSourceType"] == TRAINED
    assert actions[0]["softwareAgent"] == {
        "name": "veo-3",
        "provider": "google",
        "offering": "veo-3-vertex",
    }
    generation = next(x["data"] for x in active["assertions"] if x["label"] == GENERATION_LABEL)
    assert generation["prompt_sha256"] == prompt_sha256(PROMPT)
    assert generation["job_id"] == "job_1"
    assert "prompt" not in generation  # the prompt itself only when configured
    assert PROMPT.encode() not in signed.read_bytes()
    ingredients = [(i["title"], i["relationship"], i["format"]) for i in active["ingredients"]]
    assert ingredients == [("reference 1", "inputTo", "image/png")]


def test_prompt_is_included_only_when_asked(clip: Path, ours: Pair, tmp_path: Path) -> None:
    dst = tmp_path / "with-prompt.mp4"
    sign_file(clip, dst, manifest_info=info(include_prompt=True), keys=ours.keys)
    report = verify_file(dst)
    assert report.generation is not None
    assert report.generation["prompt"] == PROMPT
    assert PROMPT.encode() in dst.read_bytes()


def test_one_flipped_byte_in_the_video_data_is_invalid(signed: Path) -> None:
    flip_byte_in(signed, b"mdat")
    state, _ = c2pa_read(signed)
    assert state == "Invalid"
    report = verify_file(signed)
    assert report.state == "Invalid"
    assert "assertion.bmffHash.mismatch" in report.codes
    assert describe(report)[0].startswith("INVALID: assertion.bmffHash.mismatch")


def test_unsigned_clip_has_no_manifest(clip: Path) -> None:
    with open(clip, "rb") as f:
        assert c2pa.Reader.try_create("video/mp4", f) is None
    report = verify_file(clip)
    assert report.state == "no manifest"
    assert not report.ok
    assert describe(report) == ["no manifest: this video carries no C2PA provenance data"]


def test_provider_manifest_survives_as_parent_ingredient(
    clip: Path, ours: Pair, provider_pair: Pair, tmp_path: Path
) -> None:
    from_provider = tmp_path / "from-provider.mp4"
    sign_file(
        clip,
        from_provider,
        manifest_info=ManifestInfo(title="provider.mp4", model="their-model", provider="acme"),
        keys=provider_pair.keys,
    )
    with open(from_provider, "rb") as f:
        assert has_manifest(f)
    provider_label = verify_file(from_provider).manifest
    ours_path = tmp_path / "ours.mp4"
    sign_file(from_provider, ours_path, manifest_info=info(), keys=ours.keys)

    state, store = c2pa_read(ours_path)
    assert state == "Valid"
    assert provider_label in store["manifests"]  # type: ignore[operator]
    active = store["manifests"][store["active_manifest"]]  # type: ignore[index]
    parents = [i for i in active["ingredients"] if i["relationship"] == "parentOf"]
    assert len(parents) == 1
    assert parents[0]["active_manifest"] == provider_label
    report = verify_file(ours_path)
    assert report.signer is not None
    assert report.signer["common_name"] == ours.keys.subject
    parent = report.ingredients[0]
    assert parent.relationship == "parentOf"
    assert parent.signer == provider_pair.keys.subject


def test_signed_clip_still_decodes_every_frame(clip: Path, signed: Path) -> None:
    def frames(path: Path) -> tuple[int, int]:
        with av.open(str(path)) as c:
            video = sum(1 for _ in c.decode(video=0))
        with av.open(str(path)) as c:
            audio = sum(1 for _ in c.decode(audio=0))
        return video, audio

    assert frames(signed) == frames(clip)
    assert frames(signed)[0] == 48


def test_ingredient_thumbnails_stay_small(clip: Path, ours: Pair, tmp_path: Path) -> None:
    image = png_bytes()
    assert 1500 < len(image) < 2600  # the ~2 KB input the issue measured
    ing = [Ingredient("reference 1", data=image, format="image/png")]
    plain = tmp_path / "plain.mp4"
    sign_file(clip, plain, manifest_info=info(), keys=ours.keys)
    with_input = tmp_path / "with-input.mp4"
    sign_file(clip, with_input, manifest_info=info(), ingredients=ing, keys=ours.keys)
    added = with_input.stat().st_size - plain.stat().st_size
    assert added < 8 * 1024, f"a 2 KB input added {added} bytes"
    # thumbnails on (VIDGATE_C2PA_THUMBNAILS): bounded to a small edge, still far below ~185 KB
    thumbs = tmp_path / "thumbs.mp4"
    sign_file(clip, thumbs, manifest_info=info(), ingredients=ing, keys=ours.keys, thumbnails=True)
    assert 0 < thumbs.stat().st_size - with_input.stat().st_size < 64 * 1024


def test_failed_signing_leaves_no_file(clip: Path, ours: Pair, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: the timestamp authority is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dst = tmp_path / "out.mp4"
    with pytest.raises(SigningFailed):
        sign_file(
            clip, dst, manifest_info=info(), keys=ours.keys, tsa_url=f"http://127.0.0.1:{port}/"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delivered.mp4"]


def test_text_file_and_truncated_video_are_bad_media(clip: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a video at all " * 20)
    with pytest.raises(BadMedia, match="not an MP4 or MOV"):
        verify_file(text)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[:5000])
    with pytest.raises(BadMedia, match="not a readable video"):
        verify_file(truncated)
    with pytest.raises(BadMedia, match="does not exist"):
        verify_file(tmp_path / "missing.mp4")


def test_signing_twice_keeps_the_first_as_parent(signed: Path, ours: Pair, tmp_path: Path) -> None:
    again = tmp_path / "again.mp4"
    shutil.copy(signed, tmp_path / "copy.mp4")
    sign_file(tmp_path / "copy.mp4", again, manifest_info=info(job_id="job_2"), keys=ours.keys)
    report = verify_file(again)
    assert report.state == "Valid"
    assert report.manifests == 2
    assert [i.relationship for i in report.ingredients] == ["parentOf"]


def test_large_clips_are_streamed_and_sign_the_same(
    clip: Path, ours: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vidgate.provenance.sign as sign_module

    monkeypatch.setattr(sign_module, "IN_MEMORY_BYTES", clip.stat().st_size - 1)
    streamed = tmp_path / "streamed.mp4"
    sign_file(clip, streamed, manifest_info=info(), keys=ours.keys)
    monkeypatch.setattr(sign_module, "IN_MEMORY_BYTES", clip.stat().st_size)
    buffered = tmp_path / "buffered.mp4"
    sign_file(clip, buffered, manifest_info=info(), keys=ours.keys)
    assert verify_file(streamed).state == verify_file(buffered).state == "Valid"
    assert streamed.stat().st_size == buffered.stat().st_size

"""Read a file's C2PA manifest with c2pa's ``Reader`` and say what it means.

The report's ``state`` is c2pa's validation state — ``Valid`` (the manifest and the file
match, signed by a well-formed certificate), ``Trusted`` (and the signer chains to one of the
given trust anchors), ``Invalid`` (something does not match: the codes say what, e.g.
``assertion.bmffHash.mismatch`` when the video bytes changed) — or ``no manifest``.

A file that is not an MP4/MOV, or too damaged to read, is a :class:`BadMedia` error (one
line), not a report: "no manifest" is only said of a video that has none.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO, Any, Literal

import c2pa  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

from vidgate.errors import InvalidRequest
from vidgate.provenance.sign import GENERATION_LABEL, IN_MEMORY_BYTES, settings_dict

State = Literal["no manifest", "Valid", "Trusted", "Invalid"]
#: ISO BMFF brands' box: what every MP4/MOV starts with (after its 4-byte size)
_FTYP = b"ftyp"


class BadMedia(InvalidRequest):
    """Not a video c2pa can read (or a damaged one)."""

    code = "bad_media"


class Status(BaseModel):
    code: str
    explanation: str | None = None


class IngredientInfo(BaseModel):
    title: str | None = None
    format: str | None = None
    relationship: str | None = None
    description: str | None = None
    #: the label of the ingredient's own manifest, kept inside this one (a provider's)
    manifest: str | None = None
    #: that manifest's signer and claim generator, when it has one
    signer: str | None = None
    claim_generator: str | None = None


class ProvenanceReport(BaseModel):
    state: State
    #: whether trust anchors were given (without them the best state is Valid)
    trust_anchors: bool = False
    failures: list[Status] = Field(default_factory=list)
    informational: list[Status] = Field(default_factory=list)
    title: str | None = None
    claim_generator: str | None = None
    signer: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = Field(default_factory=list)
    ingredients: list[IngredientInfo] = Field(default_factory=list)
    #: vidgate's own generation assertion (job id, model, prompt hash), when present
    generation: dict[str, Any] | None = None
    manifest: str | None = None
    manifests: int = 0

    @property
    def codes(self) -> list[str]:
        return [s.code for s in self.failures]

    @property
    def ok(self) -> bool:
        return self.state in ("Valid", "Trusted")


def _generator(m: dict[str, Any]) -> str | None:
    info = m.get("claim_generator_info") or []
    if info and isinstance(info[0], dict) and info[0].get("name"):
        version = info[0].get("version")
        return f"{info[0]['name']}/{version}" if version else str(info[0]["name"])
    gen = m.get("claim_generator")
    return str(gen) if gen else None


def _signer(m: dict[str, Any]) -> dict[str, Any] | None:
    sig = m.get("signature_info")
    if not isinstance(sig, dict):
        return None
    keep = ("common_name", "issuer", "alg", "time", "cert_serial_number")
    return {k: sig[k] for k in keep if sig.get(k) is not None}


def _statuses(items: Any) -> list[Status]:
    return [Status(code=str(i.get("code")), explanation=i.get("explanation")) for i in items or ()]


def report_from_store(store: dict[str, Any], state: str, *, anchors: bool) -> ProvenanceReport:
    """Turn c2pa's manifest store JSON into a report."""
    manifests: dict[str, Any] = store.get("manifests") or {}
    label = store.get("active_manifest")
    active: dict[str, Any] = manifests.get(label, {}) if label else {}
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = _statuses(results.get("failure"))
    if not results and store.get("validation_status"):
        failures = _statuses(store["validation_status"])  # older stores: one flat list
    for delta in (store.get("validation_results") or {}).get("ingredientDeltas") or ():
        failures += _statuses((delta.get("validationDeltas") or {}).get("failure"))
    actions: list[dict[str, Any]] = []
    generation = None
    for a in active.get("assertions") or ():
        if str(a.get("label", "")).startswith("c2pa.actions"):
            actions += a.get("data", {}).get("actions") or []
        elif a.get("label") == GENERATION_LABEL:
            generation = a.get("data")
    ingredients = []
    for ing in active.get("ingredients") or ():
        inner = manifests.get(ing.get("active_manifest") or "", {})
        sig = _signer(inner) if inner else None
        ingredients.append(
            IngredientInfo(
                title=ing.get("title"),
                format=ing.get("format"),
                relationship=ing.get("relationship"),
                description=ing.get("description"),
                manifest=ing.get("active_manifest"),
                signer=(sig or {}).get("common_name"),
                claim_generator=_generator(inner) if inner else None,
            )
        )
    shown: State = state if state in ("Valid", "Trusted", "Invalid") else "Invalid"  # type: ignore[assignment]
    return ProvenanceReport(
        state=shown,
        trust_anchors=anchors,
        failures=failures,
        informational=_statuses(results.get("informational")),
        title=active.get("title"),
        claim_generator=_generator(active),
        signer=_signer(active),
        actions=actions,
        ingredients=ingredients,
        generation=generation,
        manifest=label,
        manifests=len(manifests),
    )


def _context(trust_anchors: bytes | None) -> Any:
    cfg = settings_dict()
    if trust_anchors:
        cfg["trust"]["trust_anchors"] = trust_anchors.decode()
        cfg["verify"]["verify_trust"] = True
    return c2pa.Context.from_dict(cfg)


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _probe_video(f: IO[bytes], name: str) -> None:
    """A manifest-less file must still be a readable video to be called "no manifest"."""
    import av

    f.seek(0)
    try:
        with av.open(f, mode="r") as container:
            if not container.streams.video:
                raise BadMedia(f"{name} has no video stream; give an MP4 or MOV video")
    except BadMedia:
        raise
    except Exception as e:  # PyAV raises many error kinds for damaged input
        why = getattr(e, "strerror", None) or _one_line(e)
        raise BadMedia(
            f"{name} is not a readable video ({why}); give a complete MP4 or MOV file"
        ) from None


def verify_stream(
    f: IO[bytes], *, name: str = "the file", trust_anchors: bytes | None = None
) -> ProvenanceReport:
    head = f.read(12)
    if len(head) < 12 or head[4:8] != _FTYP:
        raise BadMedia(f"{name} is not an MP4 or MOV video (no ftyp box); give a video file")
    f.seek(0)
    try:
        reader = c2pa.Reader.try_create("video/mp4", f, None, _context(trust_anchors))
    except c2pa.C2paError as e:
        raise BadMedia(
            f"{name}: its C2PA data cannot be read ({_one_line(e)}); is it a complete video?"
        ) from None
    if reader is None:
        _probe_video(f, name)
        return ProvenanceReport(state="no manifest", trust_anchors=bool(trust_anchors))
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state() or "Invalid"
    return report_from_store(store, state, anchors=bool(trust_anchors))


def verify_file(path: Path, *, trust_anchors: bytes | None = None) -> ProvenanceReport:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise BadMedia(f"{path} {what}; give the path of a video file")
    try:
        # c2pa reads through many small Python callbacks: a clip that fits is read whole first
        if path.stat().st_size <= IN_MEMORY_BYTES:
            return verify_stream(
                io.BytesIO(path.read_bytes()), name=str(path), trust_anchors=trust_anchors
            )
        with open(path, "rb") as f:
            return verify_stream(f, name=str(path), trust_anchors=trust_anchors)
    except OSError as e:
        raise BadMedia(f"cannot read {path}: {e.strerror or e}") from None


def load_anchors(value: str | Path | None) -> bytes | None:
    """A PEM bundle of trust anchors from a path (or the PEM text itself)."""
    if value is None or value == "":
        return None
    text = str(value)
    if text.lstrip().startswith("-----BEGIN"):
        data = text.encode()
    else:
        try:
            data = Path(text).expanduser().read_bytes()
        except OSError as e:
            raise InvalidRequest(
                f"trust anchors {text}: cannot read it ({e.strerror or e}); give a PEM file "
                "of CA certificates (e.g. the dev CA's ca.pem)"
            ) from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InvalidRequest(
            f"trust anchors {text[:80]} hold no PEM certificate; give a PEM file of CA "
            "certificates (e.g. the dev CA's ca.pem)"
        )
    return data


def describe(report: ProvenanceReport) -> list[str]:
    """The report in words, a line each (what `vidgate verify` prints)."""
    if report.state == "no manifest":
        return ["no manifest: this video carries no C2PA provenance data"]
    # the cause first; an untrusted signer is the usual companion, not the news
    codes = ", ".join(sorted(report.codes, key=lambda c: c == "signingCredential.untrusted"))
    if report.state == "Trusted":
        head = "trusted: the manifest is valid and its signer chains to a trust anchor"
    elif report.state == "Valid":
        head = "valid: the manifest matches the video and its signature checks"
        if "signingCredential.untrusted" in report.codes:
            head += (
                "; the signer is not one of your trust anchors"
                if report.trust_anchors
                else "; give --trust CA.pem to check the signer against your CA"
            )
    else:
        head = f"INVALID: {codes or 'the manifest does not validate'}"
    lines = [head]
    for s in report.failures:
        if report.state == "Invalid" or s.code != "signingCredential.untrusted":
            lines.append(f"  ! {s.code}: {s.explanation or ''}".rstrip(": "))
    if report.signer:
        sig = report.signer
        lines.append(f"signed by: {sig.get('common_name', '?')} (issuer {sig.get('issuer', '?')})")
    if report.claim_generator:
        lines.append(f"claim generator: {report.claim_generator}")
    for a in report.actions:
        agent = a.get("softwareAgent")
        who = agent.get("name") if isinstance(agent, dict) else agent
        source = str(a.get("digitalSourceType", "")).rsplit("/", 1)[-1]
        extra = ", ".join(x for x in (f"by {who}" if who else "", source) if x)
        lines.append(f"action: {a.get('action')}" + (f" ({extra})" if extra else ""))
    if report.generation:
        g = report.generation
        facts = [f"{k} {g[k]}" for k in ("job_id", "offering") if g.get(k)]
        if g.get("prompt_sha256"):
            facts.append(f"prompt sha256 {str(g['prompt_sha256'])[:16]}…")
        if facts:
            lines.append("generation: " + ", ".join(facts))
    for ing in report.ingredients:
        line = f"ingredient: {ing.title} [{ing.relationship}, {ing.format or '?'}]"
        if ing.manifest:
            line += f" with its own manifest (by {ing.claim_generator or '?'}"
            line += f", signed by {ing.signer})" if ing.signer else ")"
        lines.append(line)
    return lines


def report_for_stored(f: IO[bytes], name: str, settings: Any) -> ProvenanceReport:
    """The report on a stored output, with the configured trust anchors; a misconfigured
    anchor file is the operator's problem (a ConfigError), never the caller's."""
    from vidgate.errors import ConfigError

    try:
        anchors = load_anchors(getattr(settings, "c2pa_trust_anchors", None))
    except InvalidRequest as e:
        raise ConfigError(f"VIDGATE_C2PA_TRUST_ANCHORS: {e.message}") from None
    return verify_stream(f, name=name, trust_anchors=anchors)

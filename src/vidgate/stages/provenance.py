"""The ``provenance`` stage: sign every stored output with a C2PA manifest.

It writes a signed copy into the stage's workdir and returns it as the replacement asset
(same id: it is the same delivered video, now carrying its provenance). Without a signing pair
it is skipped, saying why — unless ``VIDGATE_C2PA_REQUIRED``, where :meth:`check_ready` stops
the service at start-up instead. Idempotent: an asset that already carries our manifest for
this job is not signed again; one that carries anyone else's (a provider's) keeps it as the
parent ingredient.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vidgate.provenance.keys import CERT_VAR, DEV_FIX, KEY_VAR, SigningKeys, startup_check
from vidgate.provenance.sign import (
    CLAIM_GENERATOR,
    Ingredient,
    ManifestInfo,
    SigningFailed,
    has_manifest,
    sign_file,
)
from vidgate.provenance.verify import BadMedia, ProvenanceReport, load_anchors, verify_file
from vidgate.stages.base import (
    CheckResult,
    Stage,
    StageContext,
    StageResult,
    StageUnavailable,
    now,
    register,
)
from vidgate.types import Asset, Job, Reference

#: what c2pa can sign in place (ISO BMFF video)
SIGNABLE = frozenset({"video/mp4", "video/quicktime"})


@functools.cache
def _catalog_entry(catalog_path: str | None, offering_id: str) -> tuple[str, str] | None:
    from vidgate.catalog.loader import load_catalog

    cat = load_catalog(Path(catalog_path) if catalog_path else None)
    offering = cat.offerings.get(offering_id)
    return (offering.model, offering.provider) if offering else None


def model_and_provider(job: Job, settings: Any) -> tuple[str, str]:
    """The model and provider of the offering that made the clip (the router's summaries on
    the job name them; the catalog when a fallback went beyond them)."""
    offering = job.offering_id or "unknown"
    route = job.route or {}
    for summary in [route.get("chosen"), *(route.get("runners_up") or [])]:
        if isinstance(summary, dict) and summary.get("offering") == offering:
            return str(summary.get("model") or offering), str(summary.get("provider") or "?")
    catalog = getattr(settings, "catalog", None)
    found = _catalog_entry(str(catalog) if catalog else None, offering)
    return found if found else (offering, "unknown")


def reference_ingredient(n: int, ref: Reference) -> Ingredient:
    """An input reference as an ingredient: a data URL's bytes are hashed into it; an http(s)
    URL is described only (vidgate never fetched it, and its query may hold a token)."""
    title = f"reference {n} ({ref.kind.value}, {ref.role.value})"
    if ref.url.startswith("data:"):
        head, _, payload = ref.url.partition(",")
        mime = head[5:].split(";", 1)[0] or "application/octet-stream"
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            data = b""
        if data:
            return Ingredient(title, "inputTo", data=data, format=mime)
    host = urlsplit(ref.url).hostname or "?"
    return Ingredient(
        title,
        "inputTo",
        description=f"{ref.kind.value} at {host}, passed to the provider by URL",
    )


def manifest_info(job: Job, asset: Asset, settings: Any) -> ManifestInfo:
    model, provider = model_and_provider(job, settings)
    req = job.request
    return ManifestInfo(
        title=f"{job.id}.mp4",
        model=model,
        provider=provider,
        offering=job.offering_id,
        job_id=job.id,
        prompt=req.prompt,
        include_prompt=bool(getattr(settings, "c2pa_include_prompt", False)),
        extra={
            "mode": req.mode.value,
            "asset_id": asset.id,
            "synthetic": job.synthetic,
        },
    )


def signed_by_us(report: ProvenanceReport, job_id: str) -> bool:
    gen = report.generation or {}
    return (
        report.ok
        and (report.claim_generator or "").split("/", 1)[0] == CLAIM_GENERATOR
        and gen.get("job_id") == job_id
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check(report: ProvenanceReport) -> CheckResult:
    bad = [c for c in report.codes if c != "signingCredential.untrusted"]
    return CheckResult(
        name="c2pa_manifest",
        verdict="pass" if report.ok else "fail",
        value=report.state,
        threshold="Valid",
        detail=", ".join(bad) or None,
    )


@register
class ProvenanceStage(Stage):
    name = "provenance"
    needs = ("c2pa key",)
    #: it rewrites the file: run after the quality gate, on the clip that will be delivered
    after_gate = True

    def check_ready(self, settings: Any) -> None:
        try:
            startup_check(settings)
        except Exception as e:
            raise StageUnavailable(str(e)) from None

    def applies(self, job: Job) -> bool:
        return any(a.kind == "video" for a in job.assets)

    async def run(self, ctx: StageContext) -> StageResult:
        started = now()

        def result(verdict: Any, checks: list[CheckResult], **kw: Any) -> StageResult:
            return StageResult(
                stage=self.name,
                asset_id=ctx.asset.id,
                verdict=verdict,
                checks=checks,
                started_at=started,
                finished_at=now(),
                **kw,
            )

        try:
            keys = startup_check(ctx.settings)
        except Exception as e:
            return result("error", [CheckResult(name="c2pa_keys", verdict="error", detail=str(e))])
        if keys is None:
            why = f"{CERT_VAR} and {KEY_VAR} are not set; outputs are not signed ({DEV_FIX})"
            return result("skipped", [CheckResult(name="c2pa_keys", verdict="skipped", detail=why)])
        if ctx.asset.kind != "video" or ctx.asset.content_type not in SIGNABLE:
            why = f"{ctx.asset.content_type} is not signed in place (only MP4/MOV)"
            return result("skipped", [CheckResult(name="c2pa_sign", verdict="skipped", detail=why)])
        try:
            return await asyncio.to_thread(self._sign, ctx, keys, result)
        except (SigningFailed, BadMedia) as e:
            return result("error", [CheckResult(name="c2pa_sign", verdict="error", detail=str(e))])

    def _sign(
        self, ctx: StageContext, keys: SigningKeys, result: Callable[..., StageResult]
    ) -> StageResult:
        settings = ctx.settings
        anchors = load_anchors(getattr(settings, "c2pa_trust_anchors", None))
        with open(ctx.path, "rb") as f:
            carries = has_manifest(f)
        parent = None
        if carries:
            before = verify_file(ctx.path, trust_anchors=anchors)
            if signed_by_us(before, ctx.job.id):
                # signed already (a re-run after a crash): nothing to replace
                return result(
                    "pass",
                    [_check(before)],
                    data={"already_signed": True, **_summary(before, keys)},
                )
            parent = before.claim_generator or "unknown"
        dst = ctx.workdir / f"{ctx.asset.id}.c2pa.mp4"
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        ingredients = [
            reference_ingredient(i, r) for i, r in enumerate(ctx.job.request.references, 1)
        ]
        manifest_bytes = sign_file(
            ctx.path,
            dst,
            manifest_info=manifest_info(ctx.job, ctx.asset, settings),
            ingredients=ingredients,
            keys=keys,
            tsa_url=getattr(settings, "c2pa_tsa_url", None),
            thumbnails=bool(getattr(settings, "c2pa_thumbnails", False)),
            fmt=ctx.asset.content_type,
        )
        # read back what will be delivered: a manifest that does not verify is never shipped
        after = verify_file(dst, trust_anchors=anchors)
        size = dst.stat().st_size
        signed = ctx.asset.model_copy(
            update={"uri": str(dst), "sha256": _sha256(dst), "bytes": size}
        )
        data = {
            **_summary(after, keys),
            "manifest_bytes": manifest_bytes,
            "bytes_added": size - ctx.asset.bytes,
            "parent_manifest": parent,
        }
        if not after.ok:
            return result("error", [_check(after)], data=data)
        return result("pass", [_check(after)], asset=signed, data=data)


def _summary(report: ProvenanceReport, keys: SigningKeys) -> dict[str, Any]:
    return {
        "state": report.state,
        "manifest": report.manifest,
        "signer": keys.subject,
        "issuer": keys.issuer,
        "certificate_sha256": keys.fingerprint,
        "claim_generator": report.claim_generator,
        "ingredients": [
            {"title": i.title, "relationship": i.relationship} for i in report.ingredients
        ],
    }

"""The `provenance` stage on a job's stored clip: signed, skipped, idempotent, parent kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.provenance.conftest import Pair, data_url, make_job, png_bytes, settings_for
from vidgate.provenance.sign import ManifestInfo, sign_file
from vidgate.provenance.verify import verify_file
from vidgate.stages.base import REGISTRY, StageContext, StageUnavailable, discover
from vidgate.stages.provenance import ProvenanceStage


def ctx_for(clip: Path, tmp_path: Path, settings: object, **job_kw: object) -> StageContext:
    job = make_job(clip, **job_kw)  # type: ignore[arg-type]
    return StageContext(
        job=job, asset=job.assets[0], path=clip, workdir=tmp_path / "work", settings=settings
    )


def test_registered_under_its_name() -> None:
    discover()
    assert REGISTRY["provenance"] is ProvenanceStage


async def test_signs_the_clip_and_returns_the_signed_copy(
    clip: Path, ours: Pair, tmp_path: Path
) -> None:
    image = png_bytes()
    refs = [
        {"role": "first_frame", "kind": "image", "url": data_url(image)},
        {"role": "style", "kind": "image", "url": "https://img.example.com/style.jpg?token=s3cret"},
    ]
    settings = settings_for(tmp_path / "home", ours, c2pa_trust_anchors=str(ours.ca.ca))
    ctx = ctx_for(clip, tmp_path, settings, references=refs)
    result = await ProvenanceStage().run(ctx)

    assert result.verdict == "pass", result.checks
    assert result.asset is not None
    signed = Path(result.asset.uri)
    assert signed.parent == ctx.workdir
    assert result.asset.id == ctx.asset.id
    assert result.asset.bytes == signed.stat().st_size > clip.stat().st_size
    assert result.checks[0].value == "Trusted"
    # described ingredients (URLs) come first in c2pa's list, hashed ones after: sort
    assert sorted(result.data["ingredients"], key=lambda i: i["title"]) == [
        {"title": "reference 1 (image, first_frame)", "relationship": "inputTo"},
        {"title": "reference 2 (image, style)", "relationship": "inputTo"},
    ]

    report = verify_file(signed, trust_anchors=ours.anchor)
    assert report.state == "Trusted"
    agent = report.actions[0]["softwareAgent"]
    assert agent == {"name": "veo-3", "provider": "google", "offering": "veo-3-vertex"}
    assert report.generation is not None
    assert report.generation["job_id"] == ctx.job.id
    url_ingredient = next(i for i in report.ingredients if i.title == "reference 2 (image, style)")
    assert url_ingredient.description == "image at img.example.com, passed to the provider by URL"
    assert b"s3cret" not in signed.read_bytes()  # a URL's token never lands in the manifest
    # the input file is untouched: the engine replaces it with the signed copy
    assert verify_file(clip).state == "no manifest"


async def test_a_rerun_on_the_signed_file_does_not_sign_again(
    clip: Path, ours: Pair, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path / "home", ours)
    first = await ProvenanceStage().run(ctx_for(clip, tmp_path, settings))
    assert first.asset is not None
    signed = Path(first.asset.uri)
    before = signed.read_bytes()
    again = await ProvenanceStage().run(ctx_for(signed, tmp_path / "again", settings))
    assert again.verdict == "pass"
    assert again.asset is None
    assert again.data["already_signed"] is True
    assert signed.read_bytes() == before
    assert verify_file(signed).manifests == 1


async def test_provider_signed_clip_keeps_its_manifest_as_parent(
    clip: Path, ours: Pair, provider_pair: Pair, tmp_path: Path
) -> None:
    from_provider = tmp_path / "provider.mp4"
    sign_file(
        clip,
        from_provider,
        manifest_info=ManifestInfo(title="p.mp4", model="their-model", provider="acme"),
        keys=provider_pair.keys,
    )
    settings = settings_for(tmp_path / "home", ours)
    result = await ProvenanceStage().run(ctx_for(from_provider, tmp_path, settings))
    assert result.verdict == "pass"
    assert result.asset is not None
    assert result.data["parent_manifest"] == "vidgate/0.1.0"
    report = verify_file(Path(result.asset.uri))
    assert report.state == "Valid"
    assert report.manifests == 2
    assert [(i.relationship, i.signer) for i in report.ingredients] == [
        ("parentOf", provider_pair.keys.subject)
    ]


async def test_without_keys_the_stage_is_skipped_with_the_reason(
    clip: Path, tmp_path: Path
) -> None:
    result = await ProvenanceStage().run(ctx_for(clip, tmp_path, settings_for(tmp_path)))
    assert result.verdict == "skipped"
    assert result.asset is None
    assert result.checks[0].detail is not None
    assert "VIDGATE_C2PA_CERT and VIDGATE_C2PA_KEY are not set" in result.checks[0].detail


def test_check_ready_names_the_fix(tmp_path: Path, ours: Pair) -> None:
    stage = ProvenanceStage()
    stage.check_ready(settings_for(tmp_path))  # unset: fine, outputs stay unsigned
    stage.check_ready(settings_for(tmp_path, ours))
    with pytest.raises(StageUnavailable, match="VIDGATE_C2PA_REQUIRED"):
        stage.check_ready(settings_for(tmp_path, c2pa_required=True))
    with pytest.raises(StageUnavailable, match="does not belong"):
        stage.check_ready(
            settings_for(tmp_path, c2pa_cert=str(ours.ca.cert), c2pa_key=_other_key(tmp_path))
        )


def _other_key(tmp_path: Path) -> str:
    from vidgate.provenance.devca import make_dev_ca

    return str(make_dev_ca(tmp_path / "other").key)

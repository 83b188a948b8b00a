"""What a signed clip tells whoever reads its manifest: the prompt's hash, never the prompt
itself unless VIDGATE_C2PA_INCLUDE_PROMPT says so; a URL reference's host, never its path,
query token or credentials."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.provenance.conftest import Pair, make_job, settings_for
from vidgate.provenance.verify import verify_file
from vidgate.stages.base import StageContext
from vidgate.stages.provenance import ProvenanceStage

PROMPT = "a lighthouse at dusk, waves below"  # make_job's prompt


@pytest.mark.parametrize("include", [False, True])
async def test_the_prompt_is_hashed_and_included_only_when_configured(
    include: bool, clip: Path, ours: Pair, tmp_path: Path
) -> None:
    refs = [
        {
            "role": "first_frame",
            "kind": "image",
            "url": "https://alice:hunter2@img.example.com/private/style.jpg?X-Amz-Signature=abc123",
        }
    ]
    job = make_job(clip, references=refs)
    assert job.request.prompt == PROMPT
    settings = settings_for(tmp_path / "home", ours, c2pa_include_prompt=include)
    ctx = StageContext(
        job=job, asset=job.assets[0], path=clip, workdir=tmp_path / "work", settings=settings
    )
    result = await ProvenanceStage().run(ctx)
    assert result.verdict == "pass", result.checks
    assert result.asset is not None
    signed = Path(result.asset.uri)
    raw = signed.read_bytes()
    report = verify_file(signed, trust_anchors=ours.anchor)
    assert report.generation is not None
    assert report.generation["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert (PROMPT.encode() in raw) is include
    assert ("prompt" in report.generation) is include
    for secret in (b"hunter2", b"alice", b"abc123", b"X-Amz-Signature", b"/private/"):
        assert secret not in raw, secret
    assert b"img.example.com" in raw  # the host alone says where the input came from

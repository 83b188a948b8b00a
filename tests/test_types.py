from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from vidgate.errors import ContentRejected, NoRoute, RateLimited, VidgateError
from vidgate.types import (
    Attempt,
    AttemptState,
    Job,
    JobState,
    Mode,
    Reference,
    Resolution,
    VideoRequest,
    frame_size,
)


def test_request_json_round_trip() -> None:
    req = VideoRequest(
        prompt="a fox",
        negative_prompt="blur",
        mode=Mode.IMAGE_TO_VIDEO,
        duration_s=8,
        resolution="4k",
        aspect_ratio="9:16",
        fps=24,
        audio="required",
        seed=7,
        references=[{"role": "first_frame", "url": "https://example.com/a.png"}],
        quality="premium",
        constraints={
            "max_cost_usd": 2,
            "allowed_jurisdictions": ["us"],
            "deadline": "2026-12-01T00:00:00Z",
        },
        provider_options={"runway": {"watermark": False}},
        metadata={"user": "42"},
    )
    again = VideoRequest.model_validate_json(req.model_dump_json())
    assert again == req
    assert req.resolution is Resolution.R4K
    assert req.constraints.allowed_jurisdictions == ["US"]
    assert req.frame_size == (2160, 3840)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "   "}, "prompt is blank"),
        ({"prompt": "x", "resolution": "5k"}, "unknown resolution '5k'; use one of 480p"),
        ({"prompt": "x", "aspect_ratio": "wide"}, "aspect ratio 'wide' is not W:H"),
        ({"prompt": "x", "duration_s": 0}, "greater than 0"),
        ({"prompt": "x", "mode": "image-to-video"}, "needs a reference with role first_frame"),
        (
            {"prompt": "x", "references": [{"role": "first_frame", "url": "file:///etc/passwd"}]},
            "http(s):// or a data: URL",
        ),
        (
            {
                "prompt": "x",
                "references": [
                    {"role": "last_frame", "kind": "video", "url": "https://e.com/v.mp4"}
                ],
            },
            "last_frame reference must be a image",
        ),
        ({"prompt": "x", "surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_request_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        VideoRequest(**kwargs)
    assert message in str(info.value)


def test_frame_sizes_are_even() -> None:
    assert frame_size(Resolution.R720P, "16:9") == (1280, 720)
    assert frame_size(Resolution.R480P, "21:9") == (1120, 480)
    assert frame_size(Resolution.R1080P, "1:1") == (1080, 1080)
    w, h = frame_size(Resolution.R768P, "4:3")
    assert w % 2 == 0
    assert h % 2 == 0


def test_job_round_trip_and_terminal_states() -> None:
    now = datetime.now(UTC)
    job = Job(
        id="job_1",
        state=JobState.RUNNING,
        request=VideoRequest(prompt="x"),
        created_at=now,
        updated_at=now,
        attempts=[
            Attempt(
                n=1,
                offering_id="o",
                state=AttemptState.SUBMITTED,
                idempotency_key="k",
                started_at=now,
                estimated_cost_usd=0.5,
            )
        ],
    )
    assert Job.model_validate_json(job.model_dump_json()) == job
    assert not JobState.RUNNING.terminal
    assert JobState.NEEDS_RECONCILIATION.terminal


def test_errors_split_and_round_trip() -> None:
    e = RateLimited("slow", retry_after=3, provider="p", request_id="r", status_code=429)
    assert e.retryable
    back = VidgateError.from_dict(e.to_dict())
    assert isinstance(back, RateLimited)
    assert back.retry_after == 3
    assert back.request_id == "r"
    assert not ContentRejected("no").retryable
    assert not NoRoute("none").retryable
    assert "request_id=r" in str(e)


def test_reference_accepts_data_urls() -> None:
    ref = Reference(role="first_frame", url="data:image/png;base64,iVBORw0KGgo=")
    assert ref.url.startswith("data:image/png")

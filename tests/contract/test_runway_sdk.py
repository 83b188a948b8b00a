"""runwayml (Stainless, strict) against the sandbox's Runway emulation: text-to-video,
wait_for_task_output, download, image-to-video from a data URI (the SDK's documented input for
a local image), delete; every task shape parses with the SDK's own response models."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from runwayml import NotFoundError, RunwayML, TaskFailedError
from runwayml.types import TaskRetrieveResponse
from runwayml.types.text_to_video_create_response import TextToVideoCreateResponse

from tests.contract.conftest import KEY, PNG_BYTES
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule


def client(sb: SandboxServer) -> RunwayML:
    return RunwayML(
        api_key=KEY,
        base_url=f"{sb.url}/runway",
        max_retries=0,
        _strict_response_validation=True,
    )


def test_runway_sdk_flow(sb: SandboxServer) -> None:
    rw = client(sb)
    created = rw.text_to_video.create(
        model="gen4.5", prompt_text="a paper boat on a stream", ratio="1280:720", duration=2
    )
    assert created.estimated_cost.credits > 0
    task = created.wait_for_task_output(timeout=60)
    assert task.status == "SUCCEEDED"
    assert task.cost.credits == round(created.estimated_cost.credits)
    video = httpx.get(task.output[0], timeout=120)
    assert video.status_code == 200
    assert video.content[4:8] == b"ftyp"

    data_uri = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    i2v = rw.image_to_video.create(
        model="gen4_turbo", prompt_image=data_uri, ratio="1280:720", duration=2
    )
    done = i2v.wait_for_task_output(timeout=60)
    assert done.status == "SUCCEEDED"

    rw.tasks.delete(done.id)  # a finished task is deleted: later reads are 404
    with pytest.raises(NotFoundError):
        rw.tasks.retrieve(done.id)


def test_runway_sdk_cancel_and_failure(sb: SandboxServer) -> None:
    rw = client(sb)
    slow = rw.with_options(timeout=10)
    sb.core.time_scale = 1.0  # stays in flight long enough to cancel
    created = slow.text_to_video.create(
        model="gen4.5", prompt_text="a slow sunrise", ratio="1280:720", duration=2
    )
    running = rw.tasks.retrieve(created.id)
    assert running.status in ("PENDING", "THROTTLED", "RUNNING")
    assert running.estimated_cost.credits > 0
    rw.tasks.delete(created.id)
    cancelled = rw.tasks.retrieve(created.id)
    assert cancelled.status == "CANCELLED"
    assert cancelled.cost.credits == 0

    sb.core.time_scale = 0.002
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0, protocol="runway")])
    failing = rw.text_to_video.create(
        model="gen4.5", prompt_text="a lighthouse", ratio="720:1280", duration=2
    )
    with pytest.raises(TaskFailedError) as info:
        failing.wait_for_task_output(timeout=60)
    assert info.value.task_details.status == "FAILED"
    assert info.value.task_details.cost.credits == 0


def test_every_runway_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    """Raw emulator bodies, each validated by the SDK's own (strict) model classes."""
    h = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
    base = f"{sb.url}/runway/v1"
    seen: set[str] = set()
    ids: list[str] = []
    sb.core.time_scale = 1.0
    for _ in range(3):  # two in flight ahead -> the third is THROTTLED
        body = {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 2}
        r = httpx.post(f"{base}/text_to_video", json=body, headers=h)
        TextToVideoCreateResponse.model_validate(r.json(), strict=False)
        ids.append(r.json()["id"])
        assert set(r.json()) == {"id", "estimatedCost"}
        task: dict[str, Any] = httpx.get(f"{base}/tasks/{r.json()['id']}", headers=h).json()
        parsed = _parse(task)
        seen.add(parsed.status)
    assert "THROTTLED" in seen
    assert "PENDING" in seen
    last = r.json()["id"]
    httpx.delete(f"{base}/tasks/{last}", headers=h)
    seen.add(_parse(httpx.get(f"{base}/tasks/{last}", headers=h).json()).status)
    for tid in ids:  # cancel the slow ones, so nothing is throttled behind them
        httpx.delete(f"{base}/tasks/{tid}", headers=h)
    sb.core.time_scale = 0.02  # a few seconds per task: polls see it RUNNING
    for prompt, outcome in (("ok", "SUCCEEDED"), ("fail", "FAILED")):
        rules = [FaultRule(kind="fail", rate=1.0, protocol="runway")] if prompt == "fail" else []
        sb.core.faults = FaultConfig(rules=rules)
        body = {"model": "gen4.5", "promptText": prompt, "ratio": "1280:720", "duration": 2}
        tid = httpx.post(f"{base}/text_to_video", json=body, headers=h).json()["id"]
        task = {}
        for _ in range(100_000):
            task = httpx.get(f"{base}/tasks/{tid}", headers=h).json()
            seen.add(_parse(task).status)
            if task["status"] == outcome:
                break
        assert task["status"] == outcome
    assert seen >= {"PENDING", "THROTTLED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}


def _parse(task: dict[str, Any]) -> Any:
    """The SDK's discriminated union, validated strictly (a missing required field fails)."""
    from pydantic import TypeAdapter

    return TypeAdapter(TaskRetrieveResponse).validate_python(task)


def test_runway_fixtures_parse_with_sdk_models() -> None:
    """The recorded shapes the adapter's unit tests replay are the SDK's shapes too."""
    import json

    from tests.conftest import FIXTURES

    for path in sorted((FIXTURES / "runway").glob("task_*.json")):
        _parse(json.loads(path.read_text()))
    created = json.loads((FIXTURES / "runway" / "create_response.json").read_text())
    TextToVideoCreateResponse.model_validate(created)

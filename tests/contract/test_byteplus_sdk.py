"""The BytePlus ark runtime (byteplus-python-sdk-v2) against the sandbox's ModelArk
emulation: the SDK's minimal create (model + content; every unset option goes out as JSON
null), get until done, download, image-to-video from a data URI, list, delete."""

from __future__ import annotations

import base64
from typing import Any, get_args, get_origin

import httpx
from byteplussdkarkruntime import Ark
from byteplussdkarkruntime.types.content_generation.content_generation_task import (
    ContentGenerationTask,
)
from byteplussdkarkruntime.types.content_generation.list_content_generation_tasks_response import (
    ListContentGenerationTasksResponse,
)
from pydantic import BaseModel, TypeAdapter

from tests.contract.conftest import KEY, PNG_BYTES
from vidgate.sandbox.app import SandboxServer

MODEL = "dreamina-seedance-2-0-260128"


def client(sb: SandboxServer) -> Ark:
    return Ark(api_key=KEY, base_url=f"{sb.url}/byteplus-ark/api/v3", max_retries=0)


def wait(ark: Ark, task_id: str) -> ContentGenerationTask:
    for _ in range(5000):
        task = ark.content_generation.tasks.get(task_id=task_id)
        if task.status not in ("queued", "running"):
            return task
    raise AssertionError("task never finished")


def test_byteplus_sdk_minimal_create_sends_nulls_and_succeeds(sb: SandboxServer) -> None:
    ark = client(sb)
    created = ark.content_generation.tasks.create(
        model=MODEL, content=[{"type": "text", "text": "a paper boat on a stream"}]
    )
    task = wait(ark, created.id)
    assert task.status == "succeeded"
    assert task.usage.completion_tokens > 0
    video = httpx.get(task.content.video_url, timeout=120)
    assert video.status_code == 200
    assert video.content[4:8] == b"ftyp"

    data_uri = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    i2v = ark.content_generation.tasks.create(
        model=MODEL,
        content=[
            {"type": "text", "text": "the boat drifts"},
            {"type": "image_url", "image_url": {"url": data_uri}, "role": "first_frame"},
        ],
        duration=5,
    )
    assert wait(ark, i2v.id).status == "succeeded"

    listed = ark.content_generation.tasks.list(page_size=10, model=MODEL)
    assert {created.id, i2v.id} <= {t.id for t in listed.items}

    ark.content_generation.tasks.delete(i2v.id)
    gone = httpx.get(
        f"{sb.url}/byteplus-ark/api/v3/contents/generations/tasks/{i2v.id}",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert gone.status_code == 404


def test_byteplus_null_options_are_unset(sb: SandboxServer) -> None:
    """Exactly the body the SDK's tasks.create sends for a minimal call: every option null."""
    body: dict[str, Any] = {
        "model": MODEL,
        "content": [{"type": "text", "text": "a lighthouse"}],
        **dict.fromkeys(
            [
                "safety_identifier",
                "callback_url",
                "return_last_frame",
                "service_tier",
                "execution_expires_after",
                "priority",
                "generate_audio",
                "draft",
                "camera_fixed",
                "watermark",
                "seed",
                "resolution",
                "ratio",
                "duration",
                "frames",
                "output_format",
                "omni_reference_task_type",
            ]
        ),
    }
    r = httpx.post(
        f"{sb.url}/byteplus-ark/api/v3/contents/generations/tasks",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200, r.text
    task = httpx.get(
        f"{sb.url}/byteplus-ark/api/v3/contents/generations/tasks/{r.json()['id']}",
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert task["resolution"] == "720p"
    assert task["ratio"] == "16:9"
    assert task["duration"] == 5


def test_every_byteplus_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    """The SDK's models are lenient (no strict mode): validate every field the emulator
    sends against the model's declared type, and require the ones an adapter reads."""
    h = {"Authorization": f"Bearer {KEY}"}
    base = f"{sb.url}/byteplus-ark/api/v3/contents/generations/tasks"
    tid = httpx.post(
        base, json={"model": MODEL, "content": [{"type": "text", "text": "x"}]}, headers=h
    ).json()["id"]
    bodies = []
    for _ in range(5000):
        bodies.append(httpx.get(f"{base}/{tid}", headers=h).json())
        if bodies[-1]["status"] == "succeeded":
            break
    assert bodies[-1]["status"] == "succeeded"
    for body in bodies:
        _check(ContentGenerationTask, body)
    assert ContentGenerationTask.construct(**bodies[-1]).status == "succeeded"
    assert TypeAdapter(int).validate_python(bodies[-1]["usage"]["completion_tokens"]) > 0
    _check(ListContentGenerationTasksResponse, httpx.get(base, headers=h).json())


def _check(model: Any, body: Any) -> None:
    """Every key the emulator sends that the SDK model declares has a value of the declared
    type (nested models checked the same way). The SDK declares fields the service omits
    (e.g. ``content.last_frame_url`` without ``return_last_frame``), so absence is allowed;
    what the adapter needs is asserted by the caller."""
    assert isinstance(body, dict), f"{model.__name__}: expected an object, got {body!r}"
    fields = model.model_fields
    for key, value in body.items():
        # undeclared keys are the service's extras (the digest's `usage.total_tokens`)
        if value is None or key not in fields:
            continue
        annotation = fields[key].annotation
        inner = [a for a in (get_args(annotation) or (annotation,)) if a is not type(None)]
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if get_origin(annotation) is list or (inner and get_origin(inner[0]) is list):
            item = get_args(inner[0] if get_origin(annotation) is not list else annotation)[0]
            assert isinstance(value, list)
            for v in value:
                if isinstance(item, type) and issubclass(item, BaseModel):
                    _check(item, v)
                else:
                    TypeAdapter(item).validate_python(v)
        elif nested:
            _check(nested[0], value)
        else:
            TypeAdapter(annotation).validate_python(value)

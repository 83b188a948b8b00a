"""replicate (replicate-python) against the sandbox's Replicate emulation: run() with its
FileOutput download, predictions.create + wait, an image input uploaded by the SDK's default
file handling (POST /v1/files, the file's urls.get passed as the input), cancel, list, and the
Files API; every response parses with the SDK's own classes."""

from __future__ import annotations

import io

import httpx
import pytest
import replicate
from replicate.file import File
from replicate.helpers import FileOutput
from replicate.prediction import Prediction

from tests.contract.conftest import KEY, PNG_BYTES, TlsSandbox
from vidgate.sandbox.app import SandboxServer

T2V = "wan-video/wan-2.2-t2v-fast"
I2V = "wan-video/wan-2.2-i2v-fast"


@pytest.fixture
def rep(tls_sb: TlsSandbox, monkeypatch: pytest.MonkeyPatch) -> replicate.Client:
    # replicate-python turns only https: URLs into FileOutput, so this flow runs over TLS
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")
    return replicate.Client(
        api_token=KEY,
        base_url=f"{tls_sb.url}/replicate",
        transport=httpx.HTTPTransport(verify=tls_sb.ssl_context()),
    )


def test_replicate_sdk_flow(rep: replicate.Client, tls_sb: TlsSandbox) -> None:
    sb = tls_sb
    out = rep.run(T2V, input={"prompt": "a paper boat on a stream"})
    assert isinstance(out, FileOutput)
    assert out.read()[4:8] == b"ftyp"

    image = io.BytesIO(PNG_BYTES)
    image.name = "frame.png"
    pred = rep.models.predictions.create(model=I2V, input={"prompt": "it drifts", "image": image})
    uploaded = rep.files.list()
    assert len(uploaded) == 1
    assert pred.input["image"] == uploaded[0].urls["get"]  # the SDK passed the served URL
    pred.wait()
    assert pred.status == "succeeded"
    assert pred.metrics["predict_time"] > 0
    assert httpx.get(pred.output, verify=tls_sb.ssl_context(), timeout=120).status_code == 200

    sb.core.time_scale = 1.0  # in flight long enough to cancel
    slow = rep.models.predictions.create(model=T2V, input={"prompt": "a slow sunrise"})
    rep.predictions.cancel(slow.id)
    slow.reload()
    assert slow.status == "canceled"

    ids = {p.id for p in rep.predictions.list().results}
    assert {pred.id, slow.id} <= ids

    assert isinstance(rep.files.get(uploaded[0].id), File)
    rep.files.delete(uploaded[0].id)
    assert rep.files.list() == []


def test_replicate_unknown_file_url_is_rejected(sb: SandboxServer) -> None:
    r = httpx.post(
        f"{sb.url}/replicate/v1/models/{I2V}/predictions",
        json={"input": {"prompt": "x", "image": f"{sb.url}/replicate/v1/files/nosuchfile"}},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 422
    assert r.json()["invalid_fields"][0]["field"] == "input.image"


def test_every_replicate_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    base = f"{sb.url}/replicate/v1"
    up = httpx.post(
        f"{base}/files",
        files={"content": ("f.png", PNG_BYTES, "image/png")},
        data={"metadata": '{"k": "v"}'},
        headers=h,
    )
    assert up.status_code == 201
    File(**up.json())
    File(**httpx.get(f"{base}/files/{up.json()['id']}", headers=h).json())
    created = httpx.post(
        f"{base}/models/{T2V}/predictions", json={"input": {"prompt": "x"}}, headers=h
    )
    assert created.status_code == 201
    Prediction(**created.json())
    seen = set()
    for _ in range(5000):
        body = httpx.get(f"{base}/predictions/{created.json()['id']}", headers=h).json()
        seen.add(Prediction(**body).status)
        if body["status"] == "succeeded":
            break
    assert "succeeded" in seen
    for p in httpx.get(f"{base}/predictions", headers=h).json()["results"]:
        Prediction(**p)

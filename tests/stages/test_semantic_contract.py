"""The judge emulation is only as true as an independent client: google-genai (Gemini API
mode) calls generateContent on the sandbox with a video part and a JSON response schema, and
its own GenerateContentResponse parses the answer — the text, the finish reason and the
usage counts the stage bills from. The request the stage itself sends is accepted too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.stages.semantic_support import clip_file
from vidgate.catalog.loader import load_catalog
from vidgate.sandbox.app import SandboxServer
from vidgate.stages import _judge

KEY = "sk-contract-not-a-real-key"


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sb"), load_catalog(), time_scale=0.002)
    server.start()
    yield server
    server.stop()


def client(sb: SandboxServer, key: str = KEY) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(base_url=f"{sb.url}/gemini-veo/", api_version="v1beta"),
    )


def test_sdk_generate_content_with_video(sb: SandboxServer, tmp_path: Path) -> None:
    video = clip_file(tmp_path / "off.mp4", defect="off_prompt").read_bytes()
    g = client(sb)  # kept: the SDK closes its HTTP client when the Client is collected
    resp = g.models.generate_content(
        model="gemini-2.5-flash",
        contents=[
            types.Part.from_bytes(data=video, mime_type="video/mp4"),
            _judge.INSTRUCTION + "a red fox in snow",
        ],
        config=types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=_judge.RESPONSE_SCHEMA,
            temperature=0,
        ),
    )
    assert isinstance(resp, types.GenerateContentResponse)
    assert resp.candidates is not None
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP
    verdict = _judge.Verdict.model_validate(json.loads(resp.text or ""))
    assert verdict.prompt_adherence.score == 2
    usage = resp.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count is not None
    assert usage.candidates_token_count is not None
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    modalities = {d.modality: d.token_count for d in usage.prompt_tokens_details or []}
    assert modalities[types.MediaModality.VIDEO] == 2 * 258
    assert resp.model_version == "gemini-2.5-flash"


def test_sdk_sees_google_errors(sb: SandboxServer) -> None:
    refused, g = client(sb, "invalid-key"), client(sb)
    with pytest.raises(errors.ClientError) as e:
        refused.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert e.value.code == 400
    assert "API key not valid" in str(e.value.message)
    with pytest.raises(errors.ClientError) as nf:
        g.models.generate_content(model="gemini-0-nano", contents="hi")
    assert nf.value.code == 404


def test_stage_request_parses_as_sdk_types(sb: SandboxServer, tmp_path: Path) -> None:
    video = clip_file(tmp_path / "ok.mp4").read_bytes()
    body = _judge.request_body(video, "a kite", 256)
    # the SDK's own models accept what the stage sends
    content = types.Content.model_validate(body["contents"][0])
    assert content.parts is not None
    assert content.parts[0].inline_data is not None
    assert content.parts[0].inline_data.data == video
    config = types.GenerateContentConfig.model_validate(body["generationConfig"])
    assert config.response_mime_type == "application/json"
    assert config.max_output_tokens == 256
    r = httpx.post(
        f"{sb.url}/gemini-veo/v1beta/models/gemini-2.5-flash:generateContent",
        json=body,
        headers={"x-goog-api-key": KEY},
    )
    assert r.status_code == 200
    parsed = types.GenerateContentResponse.model_validate(r.json())
    assert _judge.Verdict.model_validate(json.loads(parsed.text or "")).text.score >= 7


def test_bad_video_bytes_are_refused(sb: SandboxServer) -> None:
    import base64

    body = {
        "contents": [
            {
                "parts": [
                    {
                        "inline_data": {
                            "mime_type": "video/mp4",
                            "data": base64.b64encode(b"x" * 99).decode(),
                        }
                    },
                    {"text": "judge"},
                ]
            }
        ]
    }
    r = httpx.post(
        f"{sb.url}/gemini-veo/v1beta/models/gemini-2.5-flash:generateContent",
        json=body,
        headers={"x-goog-api-key": KEY},
    )
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"

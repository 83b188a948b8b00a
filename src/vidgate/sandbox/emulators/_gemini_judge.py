"""Emulation of the Gemini API's ``models/{model}:generateContent`` as a video judge, mounted
beside the Veo endpoints on the same Gemini API base (``/gemini-veo/v1beta``), as on the real
service where one key and one base serve both.

Shapes follow the real API (checked by google-genai's own ``GenerateContentResponse`` in
tests/stages/test_semantic_contract.py): ``contents[].parts[]`` with ``inlineData`` /
``inline_data`` (``mimeType`` / ``mime_type``, base64 ``data``) and ``text``; the answer's
``candidates[0].content.parts[0].text``, ``finishReason: STOP``, ``usageMetadata``
(``promptTokenCount``, ``candidatesTokenCount``, ``totalTokenCount``,
``promptTokensDetails`` by modality) and ``modelVersion``; the Google error envelope.

Verdicts are scripted and deterministic from the request alone:

* every criterion scores 7–9, drawn from a hash of the text and the video bytes;
* a clip the sandbox rendered with a defect carries it in its MP4 metadata
  (``comment = vidgate-sandbox-defect=<kind>``): ``off_prompt`` scores prompt adherence 2,
  ``black``/``frozen``/``flicker`` score artifacts 3;
* ``[judge:<criterion>=<n>]`` in the prompt pins a score (tests script a verdict that way).

Video prompt tokens are counted as the real API does at the default media resolution: 258 per
frame sampled at 1 fps plus 32 per second of audio.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import re
from typing import Any

import av
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.sandbox.core import SandboxCore
from vidgate.sandbox.render import DEFECT_TAG

PROTOCOL = "gemini-judge"  # the fault-rule protocol name for judge calls
MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro")
CRITERIA = ("prompt_adherence", "artifacts", "physics", "text")
_PIN = re.compile(r"\[judge:(prompt_adherence|artifacts|physics|text)=(10|[1-9])\]")
_VIDEO_TOKENS_PER_FRAME, _AUDIO_TOKENS_PER_S = 258, 32
_REASONS = {
    "prompt_adherence": "The clip shows the subjects and setting the prompt describes.",
    "artifacts": "No visible warping, smearing or glitches.",
    "physics": "Motion is smooth and plausible.",
    "text": "No text is shown and none was asked for.",
}
_BAD_REASONS = {
    "prompt_adherence": "The clip shows abstract moving patterns, not what the prompt asks.",
    "artifacts": "Long stretches of the clip are black or frozen.",
}


def _parts(body: dict[str, Any]) -> list[dict[str, Any]] | str:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    parts: list[dict[str, Any]] = []
    for c in contents:
        ps = c.get("parts") if isinstance(c, dict) else None
        if not isinstance(ps, list) or not ps:
            return "* GenerateContentRequest.contents.parts: contents.parts must not be empty."
        parts.extend(p for p in ps if isinstance(p, dict))
    return parts


def _inline(part: dict[str, Any]) -> tuple[str, bytes] | str | None:
    blob = part.get("inlineData", part.get("inline_data"))
    if blob is None:
        return None
    if not isinstance(blob, dict):
        return "inline_data must be an object."
    mime = blob.get("mimeType", blob.get("mime_type"))
    try:
        # proto3 JSON bytes: standard or URL-safe base64, padded or not (google-genai sends
        # URL-safe)
        raw = str(blob.get("data", "")).replace("-", "+").replace("_", "/")
        data = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return (
            "Invalid value at 'contents.parts.inline_data.data' (TYPE_BYTES), "
            "Base64 decoding failed."
        )
    if not isinstance(mime, str) or not data:
        return "inline_data needs mime_type and data."
    return mime, data


def _probe(video: bytes) -> tuple[float, bool, str] | None:
    """(duration s, has audio, defect tag or "") of an MP4, or None when it does not open."""
    try:
        with av.open(io.BytesIO(video), mode="r") as c:
            tag = ""
            for key in ("comment", "description"):
                value = str(c.metadata.get(key, ""))
                if value.startswith(DEFECT_TAG):
                    tag = value[len(DEFECT_TAG) :]
            if not c.streams.video:
                return None
            duration = (c.duration or 0) / 1_000_000
            return duration, bool(c.streams.audio), tag
    except (av.error.FFmpegError, OSError):
        return None


def verdict(text: str, video: bytes, defect: str) -> dict[str, dict[str, Any]]:
    digest = hashlib.sha256(text.encode() + video).digest()
    out: dict[str, dict[str, Any]] = {
        c: {"score": 7 + digest[i] % 3, "reason": _REASONS[c]} for i, c in enumerate(CRITERIA)
    }
    kinds = set(defect.split(","))
    if "off_prompt" in kinds:
        out["prompt_adherence"] = {"score": 2, "reason": _BAD_REASONS["prompt_adherence"]}
    if kinds & {"black", "frozen", "flicker"}:
        out["artifacts"] = {"score": 3, "reason": _BAD_REASONS["artifacts"]}
    for crit, n in _PIN.findall(text):
        out[crit] = {"score": int(n), "reason": f"Scripted score {n} for {crit}."}
    return out


def add_generate_content(r: APIRouter, core: SandboxCore, auth: Any) -> None:
    """Mount ``models/{model}:generateContent`` on the Gemini emulator's router ``r``;
    ``auth(request)`` is its key check (an error answer or None)."""
    from vidgate.sandbox.emulators.gemini_veo import (
        bad_request,
        create_fault,
        google_error,
        json_object,
    )

    @r.post("/models/{model}:generateContent")
    async def generate_content(model: str, request: Request) -> Response:
        err: Response | None = auth(request)
        if err is not None:
            return err
        if model not in MODELS:
            return google_error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported "
                "for generateContent.",
            )
        body = await json_object(request)
        if isinstance(body, JSONResponse):
            return body
        parts = _parts(body)
        if isinstance(parts, str):
            return bad_request(parts)
        text = "".join(str(p.get("text", "")) for p in parts)
        videos: list[tuple[float, bool, str, bytes]] = []
        for p in parts:
            if "fileData" in p or "file_data" in p:
                return bad_request("The sandbox judge takes videos inline (inline_data) only.")
            blob = _inline(p)
            if isinstance(blob, str):
                return bad_request(blob)
            if blob is None:
                continue
            mime, data = blob
            if not mime.startswith("video/"):
                return bad_request(f"Unsupported MIME type: {mime}")
            probed = await asyncio.to_thread(_probe, data)
            if probed is None:
                return bad_request("Request contains an invalid argument.")
            videos.append((*probed, data))
        answer, _drop = await create_fault(core, PROTOCOL, model)
        if answer is not None:
            return answer
        core.store.event("judge", model)
        video = b"".join(v[3] for v in videos)
        defect = ",".join(v[2] for v in videos if v[2])
        scores = verdict(text, video, defect)
        out_text = json.dumps(scores)
        video_tokens = sum(
            math.ceil(d) * _VIDEO_TOKENS_PER_FRAME
            + (math.ceil(d) * _AUDIO_TOKENS_PER_S if a else 0)
            for d, a, _, _ in videos
        )
        text_tokens = max(1, len(text) // 4)
        out_tokens = max(1, len(out_text) // 4)
        details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if videos:
            details.append({"modality": "VIDEO", "tokenCount": video_tokens})
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": out_text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": text_tokens + video_tokens,
                    "candidatesTokenCount": out_tokens,
                    "totalTokenCount": text_tokens + video_tokens + out_tokens,
                    "promptTokensDetails": details,
                },
                "modelVersion": model,
                "responseId": hashlib.sha256(text.encode() + video).hexdigest()[:22],
            }
        )

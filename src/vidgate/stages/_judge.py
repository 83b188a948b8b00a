"""A VLM judge over the video through the Gemini API's ``generateContent``.

The wire protocol is the real one: ``POST {base}/v1beta/models/{model}:generateContent`` with
the key in ``x-goog-api-key``, the clip as ``inlineData`` (base64, up to the API's 20 MB
request limit) and an instruction asking for JSON (``responseMimeType`` +
``responseSchema``) with a 1–10 score and a reason for each criterion. The answer's
``candidates[0].content.parts[].text`` is that JSON; ``usageMetadata`` gives the tokens the
call is billed for, priced from ``judge_prices.yaml``.

Money: the call's worst case (prompt tokens from the clip's length, output at
``maxOutputTokens``) is estimated before it is made and the call is skipped, with the reason,
when that exceeds the per-call cap or what is left of the request's budget. It is never
retried automatically (a retried call is billed twice). A transport failure after the request
was sent may still be billed: the estimate is booked then, an HTTP error answer books nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CRITERIA = ("prompt_adherence", "artifacts", "physics", "text")
GOOGLE_BASE = "https://generativelanguage.googleapis.com"
#: the largest clip sent inline: the API takes 20 MB per request and base64 inflates by 4/3
#: (14 MB → 18.7 MB), leaving room for the instruction and the JSON around it
INLINE_LIMIT_BYTES = 14_000_000
_PROMPT_TOKENS_FIXED = 400  # the instruction and schema, rounded up
_PRICES = Path(__file__).with_name("judge_prices.yaml")

INSTRUCTION = """You review one AI-generated video clip against the prompt it was made from.
Score each criterion from 1 (very poor) to 10 (flawless), with a one-sentence reason:
- prompt_adherence: does the video show what the prompt asks (subjects, actions, setting, style)?
- artifacts: visual defects (warping, smearing, flicker, black or frozen frames, glitches).
- physics: plausible motion, gravity, collisions, object permanence.
- text: legibility and correctness of any text shown; 10 when there is no text and none asked.
Answer with JSON only.

Prompt: """

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        c: {
            "type": "OBJECT",
            "properties": {"score": {"type": "INTEGER"}, "reason": {"type": "STRING"}},
            "required": ["score", "reason"],
        }
        for c in CRITERIA
    },
    "required": list(CRITERIA),
}


class JudgeError(Exception):
    """The judge could not give a verdict (HTTP error, unparseable answer); says why."""

    def __init__(self, message: str, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.cost_usd = cost_usd


class Rating(BaseModel):
    model_config = ConfigDict(extra="ignore")
    score: int = Field(ge=1, le=10)
    reason: str = Field(max_length=2000)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_adherence: Rating
    artifacts: Rating
    physics: Rating
    text: Rating

    def ratings(self) -> dict[str, Rating]:
        return {c: getattr(self, c) for c in CRITERIA}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return round(
            (prompt_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6, 6
        )


@cache
def price_table(path: Path = _PRICES) -> tuple[dict[str, Price], float]:
    """(model → price, video prompt tokens per second) from the YAML table."""
    data = yaml.safe_load(path.read_text())
    prices = {
        m: Price(float(p["input_per_mtok"]), float(p["output_per_mtok"]))
        for m, p in data["models"].items()
    }
    return prices, float(data["video_tokens_per_s"])


def price_of(model: str, table: Path | None = None) -> Price:
    prices, _ = price_table(table or _PRICES)
    hit = prices.get(model)
    if hit is None:
        raise JudgeError(
            f"no price for judge model {model!r}; use one of {', '.join(sorted(prices))} "
            "or add it to a VIDGATE_JUDGE_PRICES table"
        )
    return hit


def estimate_cost(
    model: str, duration_s: float, prompt: str, max_output_tokens: int, table: Path | None = None
) -> float:
    """The worst case of one judge call: the whole clip as prompt tokens, full output."""
    _, per_s = price_table(table or _PRICES)
    prompt_tokens = int(duration_s * per_s) + len(prompt) // 3 + _PROMPT_TOKENS_FIXED
    return price_of(model, table).cost(prompt_tokens, max_output_tokens)


def request_body(video: bytes, prompt: str, max_output_tokens: int) -> dict[str, Any]:
    return {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "video/mp4",
                            "data": base64.b64encode(video).decode(),
                        }
                    },
                    {"text": INSTRUCTION + prompt},
                ],
            }
        ],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": RESPONSE_SCHEMA,
            "temperature": 0,
            "maxOutputTokens": max_output_tokens,
        },
    }


@dataclass(frozen=True)
class JudgeAnswer:
    verdict: Verdict
    cost_usd: float
    prompt_tokens: int
    output_tokens: int
    model: str


async def judge(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str,
    model: str,
    video: bytes,
    prompt: str,
    max_output_tokens: int,
    estimate_usd: float,
    timeout_s: float = 120.0,
    table: Path | None = None,
) -> JudgeAnswer:
    url = f"{base_url.rstrip('/')}/v1beta/models/{model}:generateContent"
    body = request_body(video, prompt, max_output_tokens)
    try:
        r = await client.post(
            url, json=body, headers={"x-goog-api-key": api_key}, timeout=timeout_s
        )
    except httpx.TransportError as e:
        # sent (perhaps) and unanswered: the provider may bill it, so the estimate is booked
        raise JudgeError(
            f"the judge call got no answer ({type(e).__name__})", estimate_usd
        ) from None
    if r.status_code >= 400:
        raise JudgeError(f"the judge answered {r.status_code}: {_google_message(r)}")
    try:
        data = r.json()
    except ValueError:
        raise JudgeError("the judge's answer is not JSON") from None
    usage = data.get("usageMetadata") or {}
    prompt_tokens = int(usage.get("promptTokenCount") or 0)
    output_tokens = int(usage.get("candidatesTokenCount") or 0) + int(
        usage.get("thoughtsTokenCount") or 0
    )
    # priced as the model asked for: modelVersion names a dated snapshot of the same price
    cost = price_of(model, table).cost(prompt_tokens, output_tokens)
    candidates = data.get("candidates") or []
    if not candidates:
        reason = (data.get("promptFeedback") or {}).get("blockReason", "no candidates")
        raise JudgeError(f"the judge gave no verdict ({reason})", cost)
    parts = (candidates[0].get("content") or {}).get("parts") or []
    text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    try:
        verdict = Verdict.model_validate(json.loads(text))
    except (ValueError, ValidationError) as e:
        finish = candidates[0].get("finishReason", "?")
        raise JudgeError(
            f"the judge's verdict is not the asked-for JSON (finishReason {finish}): "
            f"{str(e).splitlines()[0]}",
            cost,
        ) from None
    return JudgeAnswer(verdict, cost, prompt_tokens, output_tokens, model)


def _google_message(r: httpx.Response) -> str:
    try:
        err = r.json().get("error") or {}
        return str(err.get("message") or err.get("status") or r.reason_phrase)[:300]
    except (ValueError, AttributeError):
        return r.reason_phrase

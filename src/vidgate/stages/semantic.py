"""The ``semantic`` stage: does the clip show what was asked?

Two optional checks, each asked for by the request's quality gate (``quality: {clip: true,
judge: true}``):

* ``clip_adherence`` — CLIP similarity between the prompt and frames sampled evenly through the
  clip, from a local model (:mod:`vidgate.stages._clip`, which documents the 0–10 mapping);
  frames under the threshold are flagged with their timestamps for the dashboard's strip.
* ``judge_<criterion>`` — a VLM judge (Gemini ``generateContent``, :mod:`vidgate.stages._judge`)
  scores prompt adherence, artifacts, physics and text 1–10 with reasons; its worst-case cost
  is given to the engine first (:meth:`SemanticStage.estimate_cost_usd`, reserved against the
  budget), a call whose estimate exceeds ``VIDGATE_JUDGE_MAX_USD`` is skipped, and what it
  cost goes on the ledger through :attr:`StageResult.cost_usd`. Against the sandbox the judge
  is emulated.

The stage's score is the mean of what ran (the CLIP score and the judge's four ratings), 0–10.
Configuration is read from ``VIDGATE_*`` variables by :class:`SemanticSettings`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vidgate.settings import SANDBOX_CREDENTIAL, Credentials
from vidgate.stages import _judge
from vidgate.stages._clip import check_path, cosine_of, scorer
from vidgate.stages._frames import FrameError, sample_frames
from vidgate.stages.base import (
    CheckResult,
    Stage,
    StageContext,
    StageResult,
    StageUnavailable,
    Verdict,
    now,
    register,
)
from vidgate.types import Job, QualityGate

JUDGE_KEY_ENV = "GEMINI_API_KEY"


class SemanticSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDGATE_", extra="ignore")

    #: a folder holding a transformers CLIP model and processor (save_pretrained)
    clip_model: str | None = None
    clip_frames: int = Field(default=8, ge=1, le=64)
    #: the lowest passing CLIP score, 0–10 (5 ≈ cosine 0.25)
    clip_min_score: float = Field(default=5.0, ge=0, le=10)
    judge_model: str = "gemini-2.5-flash"
    #: the Gemini API base; unset: Google's, or the sandbox's emulation in sandbox mode
    judge_base_url: str | None = None
    #: the lowest passing judge rating per criterion, 1–10
    judge_min_score: int = Field(default=5, ge=1, le=10)
    #: the most one judge call may cost (its estimate), USD
    judge_max_usd: float = Field(default=0.05, ge=0)
    judge_max_output_tokens: int = Field(default=1024, ge=64, le=65536)
    judge_timeout_s: float = Field(default=120.0, gt=0)
    #: a price table replacing the bundled judge_prices.yaml
    judge_prices: Path | None = None


def gate_of(job: Job) -> QualityGate | None:
    return job.request.quality_gate


@register
class SemanticStage(Stage):
    name = "semantic"
    needs = ("pyav", "clip model (for clip)", "Gemini API key (for judge)")

    def check_ready(self, settings: Any) -> None:
        s = SemanticSettings()
        if s.clip_model:
            check_path(s.clip_model)
        try:
            _judge.price_of(s.judge_model, s.judge_prices)
        except _judge.JudgeError as e:
            raise StageUnavailable(str(e)) from None

    def applies(self, job: Job) -> bool:
        gate = gate_of(job)
        return gate is not None and (gate.clip or gate.judge)

    def applies_to(self, job: Job, gate: Any) -> bool:
        # the gate in force: the request's, else the tenant default
        return isinstance(gate, QualityGate) and (gate.clip or gate.judge)

    def estimate_cost_usd(self, job: Job, gate: Any) -> float:
        """The judge call's worst case (the engine reserves it before the stage runs); CLIP
        runs locally and costs nothing on the ledger."""
        if not (isinstance(gate, QualityGate) and gate.judge):
            return 0.0
        s = SemanticSettings()
        duration = job.assets[0].duration_s if job.assets and job.assets[0].duration_s else None
        return _judge.estimate_cost(
            s.judge_model,
            duration or job.request.duration_s,
            job.request.prompt,
            s.judge_max_output_tokens,
            s.judge_prices,
        )

    async def run(self, ctx: StageContext) -> StageResult:
        started = now()
        s = SemanticSettings()
        gate = ctx.extra.get("gate") or gate_of(ctx.job) or QualityGate()
        checks: list[CheckResult] = []
        scores: list[float] = []
        data: dict[str, Any] = {}
        cost = 0.0
        if gate.clip:
            check, score, data["clip"] = await asyncio.to_thread(self._clip, ctx, s)
            checks.append(check)
            scores.append(score)
        if gate.judge:
            judged, ratings, cost, data["judge"] = await self._judge(ctx, s)
            checks.extend(judged)
            scores.extend(ratings)
        return StageResult(
            stage=self.name,
            asset_id=ctx.asset.id,
            verdict=overall(checks),
            score=round(sum(scores) / len(scores), 3) if scores else None,
            checks=checks,
            cost_usd=cost,
            data=data,
            started_at=started,
            finished_at=now(),
        )

    # -- CLIP --------------------------------------------------------------------------------

    def _clip(
        self, ctx: StageContext, s: SemanticSettings
    ) -> tuple[CheckResult, float, dict[str, Any]]:
        model = scorer(s.clip_model)  # StageUnavailable with the fix when unset or unloadable
        try:
            frames = sample_frames(ctx.path, count=s.clip_frames)
        except FrameError as e:
            return CheckResult(name="clip_adherence", verdict="error", detail=str(e)), 0.0, {}
        result = model.score(ctx.job.request.prompt, frames)
        floor = cosine_of(s.clip_min_score)
        check = CheckResult(
            name="clip_adherence",
            verdict="pass" if result.score >= s.clip_min_score else "fail",
            value=round(result.mean_cosine, 4),
            threshold=round(floor, 4),
            unit="cosine",
            detail=f"CLIP score {result.score:g}/10 over {len(frames)} frames",
            frames_s=[t for t, c in result.per_frame if c < floor],
        )
        info = {
            "model": Path(s.clip_model or "").name,
            "score": result.score,
            "per_frame": [{"t": t, "cosine": round(c, 4)} for t, c in result.per_frame],
        }
        return check, result.score, info

    # -- the VLM judge -----------------------------------------------------------------------

    async def _judge(
        self, ctx: StageContext, s: SemanticSettings
    ) -> tuple[list[CheckResult], list[float], float, dict[str, Any]]:
        job = ctx.job
        duration = ctx.asset.duration_s or job.request.duration_s
        estimate = _judge.estimate_cost(
            s.judge_model, duration, job.request.prompt, s.judge_max_output_tokens, s.judge_prices
        )
        info: dict[str, Any] = {"model": s.judge_model, "estimate_usd": estimate}
        skip = self._judge_skip(ctx, s, estimate)
        if skip is not None:
            return [CheckResult(name="judge", verdict="skipped", detail=skip)], [], 0.0, info
        base, key = self._judge_endpoint(ctx, s)
        video = await asyncio.to_thread(ctx.path.read_bytes)
        client = ctx.client or httpx.AsyncClient()
        try:
            answer = await _judge.judge(
                client,
                base_url=base,
                api_key=key,
                model=s.judge_model,
                video=video,
                prompt=job.request.prompt,
                max_output_tokens=s.judge_max_output_tokens,
                estimate_usd=estimate,
                timeout_s=s.judge_timeout_s,
                table=s.judge_prices,
            )
        except _judge.JudgeError as e:
            info["cost_usd"] = e.cost_usd
            return [CheckResult(name="judge", verdict="error", detail=str(e))], [], e.cost_usd, info
        finally:
            if ctx.client is None:
                await client.aclose()
        info.update(
            cost_usd=answer.cost_usd,
            prompt_tokens=answer.prompt_tokens,
            output_tokens=answer.output_tokens,
        )
        checks = [
            CheckResult(
                name=f"judge_{c}",
                verdict="pass" if r.score >= s.judge_min_score else "fail",
                value=r.score,
                threshold=s.judge_min_score,
                unit="/10",
                detail=r.reason,
            )
            for c, r in answer.verdict.ratings().items()
        ]
        return (
            checks,
            [float(r.score) for r in answer.verdict.ratings().values()],
            answer.cost_usd,
            info,
        )

    def _judge_skip(self, ctx: StageContext, s: SemanticSettings, estimate: float) -> str | None:
        if estimate > s.judge_max_usd:
            return (
                f"the judge call would cost up to ${estimate:.4f}, over the "
                f"${s.judge_max_usd:.4f} cap (VIDGATE_JUDGE_MAX_USD)"
            )
        size = ctx.path.stat().st_size
        if size > _judge.INLINE_LIMIT_BYTES:
            return (
                f"the clip is {size / 1e6:.1f} MB; the judge sends clips up to "
                f"{_judge.INLINE_LIMIT_BYTES / 1e6:.0f} MB inline (the Files API is not used)"
            )
        return None

    def _judge_endpoint(self, ctx: StageContext, s: SemanticSettings) -> tuple[str, str]:
        if s.judge_base_url:
            base = s.judge_base_url
        elif ctx.sandbox_url:
            base = f"{ctx.sandbox_url.rstrip('/')}/gemini-veo"
        else:
            base = _judge.GOOGLE_BASE
        if ctx.sandbox_url and not s.judge_base_url:
            return base, SANDBOX_CREDENTIAL
        creds = Credentials()
        if not creds.present([JUDGE_KEY_ENV]):
            raise StageUnavailable(
                f"the VLM judge needs {JUDGE_KEY_ENV}: export it, or turn `judge` off"
            )
        return base, creds.get(JUDGE_KEY_ENV)


def overall(checks: list[CheckResult]) -> Verdict:
    """fail if any check failed; error if one could not run; skipped if none ran; else pass."""
    verdicts = {c.verdict for c in checks}
    order: tuple[Verdict, ...] = ("fail", "error")
    for v in order:
        if v in verdicts:
            return v
    if not checks or verdicts == {"skipped"}:
        return "skipped"
    return "pass"

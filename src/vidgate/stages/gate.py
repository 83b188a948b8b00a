"""The quality gate: which gate applies to a job, its verdict on the stage results, and what
happens next. Pure decisions — the job engine (:mod:`vidgate.jobs.postprocess`) acts on them.

* **Which gate.** The request's (``quality: {...}``), else the tenant default
  (``VIDGATE_QUALITY_DEFAULT``, a JSON QualityGate: there is no per-tenant settings store yet),
  else the built-in default: checks run and a failing clip is delivered flagged.
* **Verdict.** ``pass`` when no stage reported a failed check and the composite score (the mean
  of the scoring stages' 0–10 scores) is at least ``min_score``; a stage that could not run
  (``error``) neither passes nor fails a clip.
* **What next** (``on_fail``): ``deliver_flagged`` delivers it marked; ``fail`` fails the job
  naming the failed checks; ``fallback`` tries the next ranked offering; ``regenerate`` tries
  the same offering once more with a new seed, then the next ranked offering. Extra attempts
  are bounded by ``max_extra_attempts`` (and, in the engine, by budget and deadline); when none
  is left the job fails with what failed and why no attempt was left.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from vidgate.errors import ConfigError, FinalError
from vidgate.stages.base import StageResult
from vidgate.types import Job, QualityGate

Action = Literal["deliver", "deliver_flagged", "regenerate", "fallback", "fail"]


class QualityGateFailed(FinalError):
    """The delivered clip failed the quality gate and no extra attempt may be made."""

    code = "quality_gate_failed"
    http_status = 422


def parse_default(raw: str | None) -> QualityGate | None:
    """The tenant-wide default gate from its JSON setting; a bad value is a start-up error."""
    if not raw or not raw.strip():
        return None
    try:
        return QualityGate.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as e:
        first = str(e).splitlines()[0] if not isinstance(e, ValidationError) else _first(e)
        raise ConfigError(
            f"VIDGATE_QUALITY_DEFAULT: {first}; give a JSON object such as "
            '{"min_score": 6, "on_fail": "regenerate", "max_extra_attempts": 2}'
        ) from None


def _first(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def gate_for(job: Job, default: QualityGate | None) -> tuple[QualityGate, str]:
    """(the gate, where it came from: request | tenant | builtin)."""
    if job.request.quality_gate is not None:
        return job.request.quality_gate, "request"
    if default is not None:
        return default, "tenant"
    return QualityGate(), "builtin"


@dataclass
class Verdict:
    verdict: Literal["pass", "fail"]
    score: float | None
    #: "stage.check" for each failed check, plus "min_score" when the score is below it
    failed: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)


def judge(gate: QualityGate, results: dict[str, StageResult]) -> Verdict:
    failed: list[str] = []
    detail: list[str] = []
    for name, r in results.items():
        for c in r.failed_checks:
            failed.append(f"{name}.{c.name}")
            detail.append(f"{c.name}: {c.value} (threshold {c.threshold})")
    scores = [r.score for r in results.values() if r.score is not None and r.verdict != "error"]
    score = round(statistics.fmean(scores), 2) if scores else None
    if gate.min_score is not None and score is not None and score < gate.min_score:
        failed.append("min_score")
        detail.append(f"score {score:g} below min_score {gate.min_score:g}")
    return Verdict("fail" if failed else "pass", score, failed, detail)


def rejected_count(job: Job) -> int:
    """Extra attempts the gate has started for this job so far."""
    return sum(1 for h in (job.quality or {}).get("history", []) if h.get("action") in _RETRY)


_RETRY = ("regenerate", "fallback")


def next_action(gate: QualityGate, verdict: Verdict, job: Job, offering_id: str) -> Action:
    """What to do with the clip just judged (before budget and deadline, which the engine
    checks when it starts the attempt)."""
    if verdict.verdict == "pass":
        return "deliver"
    if gate.on_fail in ("deliver_flagged", "fail"):
        return gate.on_fail
    if rejected_count(job) >= gate.max_extra_attempts:
        return "fail"
    if gate.on_fail == "regenerate":
        # one regeneration per offering, then the next ranked one
        regenerated = {
            h.get("offering")
            for h in (job.quality or {}).get("history", [])
            if h.get("action") == "regenerate"
        }
        return "fallback" if offering_id in regenerated else "regenerate"
    return "fallback"


def failure_message(verdict: Verdict, why_no_more: str) -> str:
    what = ", ".join(verdict.failed) or "the gate"
    return (
        f"the clip failed the quality gate ({what}: {'; '.join(verdict.detail)}) and "
        f"{why_no_more}; raise quality.max_extra_attempts, or set quality.on_fail to "
        "deliver_flagged to receive flagged clips"
    )


def openai_metadata(job: Job) -> dict[str, str]:
    """The verdict in an OpenAI-style ``metadata`` map (string values, as that API has them)
    for the OpenAI-compatible video object; empty when no gate ran."""
    q = job.quality
    if not q:
        return {}
    score = q.get("score")
    return {
        "vidgate_quality_verdict": str(q.get("verdict")),
        "vidgate_quality_score": "" if score is None else f"{score:g}",
        "vidgate_quality_flagged": "true" if q.get("flagged") else "false",
        "vidgate_quality_failed": ",".join(q.get("failed", []))[:512],
        "vidgate_quality_regenerations": str(q.get("regenerations", 0)),
    }

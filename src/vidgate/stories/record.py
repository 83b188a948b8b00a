"""The story record: which offering made what, what it cost, the quality verdicts and the
joins — built from the child jobs and the ledger, so the record and the ledger agree to the
cent by construction (and a test holds them to it)."""

from __future__ import annotations

from typing import Any

from vidgate.stories.plan import StoryPlan
from vidgate.types import Job


def _cents(x: float) -> float:
    # "+ 0.0" only turns -0.0 into 0.0 (equal to it anyway); another constant added to both
    # sides of the comparison gives the same answer but at float edges of half a cent
    return round(x + 0.0, 2)  # pragma: no mutate - see above


def verdict(quality: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's quality gate verdict in brief (``Job.quality`` without its history)."""
    if not quality or "verdict" not in quality:
        return None
    return {
        "verdict": quality["verdict"],
        "score": quality.get("score"),
        "flagged": bool(quality.get("flagged")),
        "failed": list(quality.get("failed") or []),
        "regenerations": int(quality.get("regenerations") or 0),
        "gate": (quality.get("gate") or {}).get("source"),
    }


def shot_verdict(jobs: list[Job]) -> dict[str, Any] | None:
    """A shot's verdict from its segments': it passes when every judged segment passed;
    its score is the lowest; what failed, anywhere, is listed. None: nothing judged yet."""
    judged = [v for v in (verdict(j.quality) for j in jobs) if v is not None]
    if not judged:
        return None
    if len(judged) == 1 and len(jobs) == 1:
        return judged[0]
    scores = [v["score"] for v in judged if v["score"] is not None]
    return {
        "verdict": "fail" if any(v["verdict"] == "fail" for v in judged) else "pass",
        "score": min(scores) if scores else None,
        "flagged": any(v["flagged"] for v in judged),
        "failed": sorted({f for v in judged for f in v["failed"]}),
        "regenerations": sum(v["regenerations"] for v in judged),
        "gate": judged[0]["gate"],
        "segments_judged": len(judged),
    }


def build_record(
    *,
    story_id: str,
    title: str,
    plan: StoryPlan,
    children: dict[str, Job],
    ledger: list[dict[str, Any]],
    joins: list[dict[str, Any]],
    film: dict[str, Any] | None,
    shot_files: dict[str, str],
) -> dict[str, Any]:
    """``children`` maps "shot.segment" to its job; ``ledger`` holds the children's rows."""
    by_job: dict[str, float] = {}
    for row in ledger:
        if row["kind"] in ("charge", "pending"):
            by_job[row["job_id"]] = by_job.get(row["job_id"], 0.0) + float(row["amount_usd"])
    shots = []
    total = 0.0
    for sp in plan.shots:
        segs: list[dict[str, Any]] = []
        made: list[Job] = []
        for seg in sp.segments:
            job = children.get(f"{sp.index}.{seg.index}")
            if job is None:
                continue
            made.append(job)
            cost = job.cost_usd or 0.0
            total += cost
            segs.append(
                {
                    "segment": seg.index,
                    "job_id": job.id,
                    "state": job.state.value,
                    "planned_offering": seg.offering_id,
                    "offering": job.offering_id,
                    "starts": seg.starts,
                    "attempts": [
                        {
                            "offering": a.offering_id,
                            "state": a.state.value,
                            "cost_usd": a.cost_usd,
                        }
                        for a in job.attempts
                    ],
                    "estimated_cost_usd": seg.cost_usd,
                    "cost_usd": cost,
                    "ledger_usd": round(by_job.get(job.id, 0.0), 6),
                    "delivered_s": job.assets[0].duration_s if job.assets else None,
                    "keep_s": seg.keep_s,
                    "quality": job.quality,
                    "stages": job.stages or None,
                }
            )
        shots.append(
            {
                "shot": sp.index,
                "prompt": sp.prompt,
                "duration_s": sp.duration_s,
                "offering": sp.offering_id,
                "model": sp.model,
                "chain": sp.chain,
                "switched_because": sp.switched_because,
                "references": sp.references,
                "seed": sp.seed,
                "transition": sp.transition,
                "audio": sp.audio,
                "file": shot_files.get(str(sp.index)),
                "segments": segs,
                "quality": shot_verdict(made),
                "cost_usd": round(sum(s["cost_usd"] for s in segs), 6),
            }
        )
    ledger_total = sum(by_job.values())
    return {
        "story": story_id,
        "title": title,
        "film": film,
        "plan": plan.summary(),
        "shots": shots,
        "joins": joins,
        "cost_usd": round(total, 6),
        "ledger_usd": round(ledger_total, 6),
        # both to the cent: the record is made from the same rows the ledger books
        "matches_ledger": _cents(total) == _cents(ledger_total),
    }

"""Post-processing: run the configured stages on a stored clip, let the quality gate judge it,
and act on the verdict — all in the ``post_processing`` state, crash-safe.

* **Which stages.** ``VIDGATE_STAGES`` (default ``checks,semantic,provenance``), in that order;
  each stage's ``applies(job)`` says whether a job needs it (``semantic`` only when the gate
  asks for CLIP or a judge; ``provenance`` signs, or reports "skipped" without keys). Stages
  marked ``after_gate`` (they rewrite the file: signing) run only on the clip that will be
  delivered, after the gate; the others review the clip before it. Every configured stage's
  ``check_ready`` runs when the processor is built (worker start), so a bad key fails there.
* **Crash safety.** Each result is stored on the job (``job.stages[name]``) the moment its stage
  ends, in one fenced write with the ledger row for what the stage cost. After a crash the
  engine resumes at the stage it was in: a stored result is never recomputed, and the clip is
  not downloaded again (the stored asset is on the job).
* **Replacement assets.** A stage that writes a new file (a signed copy) returns it as
  ``StageResult.asset`` with a local ``uri``; the engine stores it, replaces the job's asset of
  the same id (sha256 and bytes of the stored copy), then deletes the old file.
* **The gate** (:mod:`vidgate.stages.gate`): pass → deliver; otherwise deliver flagged, fail, or
  start an extra attempt (same offering with a new seed, or the next ranked one) within
  ``max_extra_attempts``, the request's ``max_cost_usd``, the tenant's budget (the reservation
  is topped up first) and the deadline. A rejected clip was made, so its attempt is billed
  (state ``rejected``); its stage results and files stay listed in ``job.quality.history``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from vidgate.errors import ConfigError, VidgateError
from vidgate.jobs.crash import crash_point
from vidgate.jobs.store import LedgerEntry
from vidgate.stages.base import Stage, StageContext, StageResult, StageUnavailable, resolve
from vidgate.stages.gate import (
    QualityGateFailed,
    Verdict,
    failure_message,
    gate_for,
    judge,
    next_action,
    parse_default,
)
from vidgate.storage.assets import AssetStorage
from vidgate.types import Asset, AttemptState, Job, JobState, QualityGate

if TYPE_CHECKING:
    from vidgate.jobs.driver import JobDriver
    from vidgate.jobs.store import Claim

log = logging.getLogger(__name__)

DEFAULT_STAGES = "checks,semantic,provenance"
#: ledger rows for stage costs are numbered from here (the ledger keeps one row per
#: (job, attempt_n); attempts count from 1, so these never collide with an attempt's row)
STAGE_ROW_BASE = 100_000


class StageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDGATE_", extra="ignore")

    #: post-generation stages in order (comma-separated names)
    stages: str = DEFAULT_STAGES
    #: the default quality gate for requests without one (JSON QualityGate)
    quality_default: str | None = None


def stage_row(attempt_n: int, stage_index: int) -> int:
    return STAGE_ROW_BASE + attempt_n * 100 + stage_index


class PostProcessor:
    """The configured stages and default gate; built once per worker."""

    def __init__(
        self,
        stages: list[Stage],
        *,
        settings: Any = None,
        default_gate: QualityGate | None = None,
        sandbox_url: str | Callable[[], str] | None = None,
    ) -> None:
        self.stages = stages
        self.settings = settings
        self.default_gate = default_gate
        self.sandbox_url = sandbox_url

    @classmethod
    def configure(
        cls, settings: Any = None, *, sandbox_url: str | Callable[[], str] | None = None
    ) -> PostProcessor:
        """From ``VIDGATE_STAGES`` / ``VIDGATE_QUALITY_DEFAULT``; every stage's readiness is
        checked now, so a missing key or model fails at start-up, naming the fix."""
        try:
            cfg = StageSettings()
        except ValueError as e:
            raise ConfigError(f"stage settings: {str(e).splitlines()[0]}") from None
        if settings is None:
            from vidgate.settings import Settings

            settings = Settings()
        default_gate = parse_default(cfg.quality_default)
        names = [n.strip() for n in cfg.stages.split(",") if n.strip()]
        try:
            stages = resolve(names)
            for stage in stages:
                stage.check_ready(settings)
        except StageUnavailable as e:
            raise ConfigError(f"VIDGATE_STAGES: {e}") from None
        return cls(
            stages,
            settings=settings,
            default_gate=default_gate,
            sandbox_url=sandbox_url,
        )

    def gate(self, job: Job) -> tuple[QualityGate, str]:
        return gate_for(job, self.default_gate)

    def sandbox(self) -> str | None:
        # resolved when a stage runs: asking the gateway may start its in-process sandbox
        url = self.sandbox_url
        return url() if callable(url) else url


# -- the engine ---------------------------------------------------------------------------


async def post_process(
    driver: JobDriver, claim: Claim, idx: int, on_progress: Any
) -> tuple[bool, VidgateError | None] | None:
    """Review the stored clip of attempt ``idx`` and act on the gate's verdict.

    Returns None when the clip is to be delivered (the driver settles and succeeds the job),
    else what :meth:`JobDriver._follow` returns: (True, None) when the job ended here (failed
    by the gate), (False, error) when another attempt was started or must be routed."""
    post: PostProcessor = driver.post
    job = claim.job
    video = next((a for a in job.assets if a.kind == "video"), None)
    if video is None:
        return None
    gate, source = post.gate(job)
    review = [s for s in post.stages if not getattr(s, "after_gate", False)]
    finish = [s for s in post.stages if getattr(s, "after_gate", False)]
    await _run(driver, claim, idx, review, gate)
    results = {
        k: StageResult.model_validate(v)
        for k, v in job.stages.items()
        if v.get("asset_id") == video.id and k in {s.name for s in review}
    }
    verdict = judge(gate, results)
    offering_id = job.attempts[idx].offering_id
    action = next_action(gate, verdict, job, offering_id)
    if action in ("regenerate", "fallback"):
        return await _retry(driver, claim, idx, gate, verdict, action, on_progress)
    _record(job, gate, source, verdict, action, offering_id)
    if action == "fail":
        why = (
            "quality.on_fail is fail"
            if gate.on_fail == "fail"
            else f"all {gate.max_extra_attempts} extra attempt(s) were used"
        )
        return await _fail(driver, claim, idx, verdict, why, on_progress)
    await _run(driver, claim, idx, finish, gate)
    return None


async def _run(
    driver: JobDriver, claim: Claim, idx: int, stages: list[Stage], gate: QualityGate
) -> None:
    post: PostProcessor = driver.post
    job = claim.job
    for pos, stage in enumerate(post.stages):
        if stage not in stages:
            continue
        video = next((a for a in job.assets if a.kind == "video"), None)
        if video is None:
            return
        stored = job.stages.get(stage.name)
        if stored is not None and stored.get("asset_id") == video.id:
            continue  # ended before a crash: never recomputed
        if not stage.applies_to(job, gate):
            continue
        crash_point("while_post_processing")
        crash_point(f"stage_{stage.name}")  # chaos tests aim at one stage
        cost = stage.estimate_cost_usd(job, gate)
        if cost > 0 and (why := await driver._cover(claim, committed(job) + cost)) is not None:
            await _keep(driver, claim, idx, pos, stage, _skipped(stage, video, why))
            continue
        # made and removed off the event loop: on a busy disk each takes milliseconds
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"vidgate-{stage.name}-"))
        try:
            result = await _one(driver, claim, stage, video, gate, workdir)
            await _keep(driver, claim, idx, pos, stage, result)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


async def _keep(
    driver: JobDriver, claim: Claim, idx: int, pos: int, stage: Stage, result: StageResult
) -> None:
    """Store one stage's result on the job (with its cost's ledger row and any replacement
    file) in one fenced write."""
    job = claim.job
    ledger: list[LedgerEntry] = []
    if result.cost_usd > 0:
        n = job.attempts[idx].n
        ledger.append(
            LedgerEntry(stage_row(n, pos), f"stage:{stage.name}", round(result.cost_usd, 6))
        )
        billing = dict(job.billing or {})
        costs = dict(billing.get("stages_usd", {}))
        costs[f"{n}:{stage.name}"] = round(result.cost_usd, 6)
        billing["stages_usd"] = costs
        job.billing = billing
    old_uri: str | None = None
    if result.asset is not None:
        new, old_uri = await _store_replacement(driver.storage, job, result.asset)
        # the stored copy is job.assets[i]; the result keeps what was written, not where
        data = {**result.data, "replaced": {"sha256": new.sha256, "bytes": new.bytes}}
        result = result.model_copy(update={"asset": None, "data": data})
    job.stages[stage.name] = result.model_dump(mode="json")
    job.cost_usd = job_cost(job)
    await driver._save(claim, ledger=ledger)
    if old_uri is not None:
        _delete(driver.storage, old_uri)


async def _one(
    driver: JobDriver,
    claim: Claim,
    stage: Stage,
    video: Asset,
    gate: QualityGate,
    workdir: Path,
) -> StageResult:
    post: PostProcessor = driver.post
    job = claim.job
    started = datetime.now(UTC)
    try:
        async with _local(driver.storage, video, workdir) as path:
            ctx = StageContext(
                job=job,
                asset=video,
                path=path,
                workdir=workdir / "out",
                settings=post.settings,
                client=driver.client,
                sandbox_url=post.sandbox(),
                extra={"gate": gate},
            )
            return await stage.run(ctx)
    except Exception as e:  # a stage's bug must not lose the clip: recorded, not raised
        log.exception("stage %s failed on job %s", stage.name, job.id)
        return StageResult(
            stage=stage.name,
            asset_id=video.id,
            verdict="error",
            data={"error": f"{type(e).__name__}: {str(e)[:300]}"},
            started_at=started,
            finished_at=datetime.now(UTC),
        )


class _LocalPath:
    def __init__(self, storage: AssetStorage, asset: Asset, workdir: Path) -> None:
        self.storage, self.asset, self.workdir = storage, asset, workdir

    async def __aenter__(self) -> Path:
        path = _storage_path(self.storage, self.asset.uri)
        if self.storage.protocol == "file":
            return Path(path)
        # remote storage: a local copy for decoders and signers that need a file
        local = self.workdir / "in.mp4"
        await asyncio.to_thread(self.storage.fs.get, path, str(local))
        return local

    async def __aexit__(self, *exc: object) -> None:
        return None


def _local(storage: AssetStorage, asset: Asset, workdir: Path) -> _LocalPath:
    return _LocalPath(storage, asset, workdir)


def _storage_path(storage: AssetStorage, uri: str) -> str:
    prefix = f"{storage.protocol}://"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            yield chunk


async def _store_replacement(
    storage: AssetStorage, job: Job, replacement: Asset
) -> tuple[Asset, str | None]:
    """Store a stage's new file in place of the asset with the same id; returns (the stored
    asset, the old file's uri to delete once the job is saved)."""
    src = Path(replacement.uri)
    path = storage.new_path(job.tenant, job.id)
    sha, size = await storage.write_stream(path, _file_chunks(src))
    stored = replacement.model_copy(update={"uri": storage.uri(path), "sha256": sha, "bytes": size})
    old: str | None = None
    for i, a in enumerate(job.assets):
        if a.id == replacement.id:
            old = a.uri
            job.assets[i] = stored
            break
    else:
        job.assets.append(stored)
    return stored, old


def _delete(storage: AssetStorage, uri: str) -> None:
    try:
        storage.delete(_storage_path(storage, uri))
    except OSError:  # a leftover file costs disk, not correctness
        log.warning("could not delete replaced asset %s", uri)


def _skipped(stage: Stage, video: Asset, why: str) -> StageResult:
    at = datetime.now(UTC)
    return StageResult(
        stage=stage.name,
        asset_id=video.id,
        verdict="skipped",
        data={"reason": why},
        started_at=at,
        finished_at=at,
    )


def committed(job: Job) -> float:
    """What the job has spent or may still be billed: attempts (pending ones, and the clip
    being post-processed, whose bill is settled on delivery, at their estimate) and stage
    costs."""
    open_states = (AttemptState.AMBIGUOUS, AttemptState.ABANDONED, AttemptState.SUCCEEDED)
    spent = sum(
        a.estimated_cost_usd if a.cost_usd is None and a.state in open_states else a.cost_usd or 0.0
        for a in job.attempts
    )
    return round(
        spent + sum(float(v) for v in (job.billing or {}).get("stages_usd", {}).values()), 6
    )


def job_cost(job: Job) -> float:
    """What the job has cost so far: its attempts' bills plus what its stages cost."""
    attempts = sum(a.cost_usd or 0.0 for a in job.attempts)
    stages = sum(float(v) for v in (job.billing or {}).get("stages_usd", {}).values())
    return round(attempts + stages, 6)


def _record(
    job: Job,
    gate: QualityGate,
    source: str,
    verdict: Verdict,
    action: str,
    offering_id: str,
    **extra: Any,
) -> None:
    q = dict(job.quality or {})
    history = list(q.get("history", []))
    n = next((a.n for a in reversed(job.attempts) if a.offering_id == offering_id), None)
    history.append(
        {
            "attempt": n,
            "offering": offering_id,
            "verdict": verdict.verdict,
            "score": verdict.score,
            "failed": verdict.failed,
            "action": action,
            "at": datetime.now(UTC).isoformat(),
            **extra,
        }
    )
    q.update(
        {
            "verdict": verdict.verdict,
            "score": verdict.score,
            "failed": verdict.failed,
            "detail": verdict.detail,
            "flagged": verdict.verdict == "fail",
            "gate": {**gate.model_dump(mode="json"), "source": source},
            "regenerations": sum(1 for h in history if h["action"] in ("regenerate", "fallback")),
            "history": history,
        }
    )
    job.quality = q


async def _fail(
    driver: JobDriver,
    claim: Claim,
    idx: int,
    verdict: Verdict,
    why: str,
    on_progress: Any,
) -> tuple[bool, VidgateError | None]:
    job = claim.job
    # the clip was made: its attempt is billed even though the job fails
    ledger = driver._end_attempt(job, idx, AttemptState.SUCCEEDED)
    job.attempts[idx].state = AttemptState.REJECTED
    job.cost_usd = job_cost(job)
    err = QualityGateFailed(failure_message(verdict, why), details={"failed": verdict.failed})
    await driver._fail(claim, err, on_progress, ledger=[ledger])
    return True, err


async def _retry(
    driver: JobDriver,
    claim: Claim,
    idx: int,
    gate: QualityGate,
    verdict: Verdict,
    action: str,
    on_progress: Any,
) -> tuple[bool, VidgateError | None]:
    """Reject the clip (billed) and start an extra attempt, or fail when none may start."""
    job = claim.job
    attempt = job.attempts[idx]
    offering_id = attempt.offering_id
    ledger = driver._end_attempt(job, idx, AttemptState.SUCCEEDED)
    attempt.state = AttemptState.REJECTED
    # what was turned down, without where its files were (they are deleted below: nothing
    # serves a rejected clip, and the history is shown to API users)
    rejected = {
        "assets": [a.model_dump(mode="json", exclude={"uri"}) for a in job.assets],
        "stages": job.stages,
    }
    rejected_files = [a.uri for a in job.assets]
    target = offering_id if action == "regenerate" else None
    why = await _can_extend(driver, claim, target)
    if why is not None and action == "regenerate":
        action, target = "fallback", None
        why = await _can_extend(driver, claim, None)
    if why is not None:
        _record(
            job, gate, gate_source(driver, job), verdict, "fail", offering_id, rejected=rejected
        )
        return await _fail_rejected(driver, claim, verdict, why, ledger, on_progress)
    _record(
        job,
        gate,
        gate_source(driver, job),
        verdict,
        action,
        offering_id,
        rejected=rejected,
        seed=job.request.seed,
    )
    job.assets = []
    job.stages = {}
    job.cost_usd = job_cost(job)
    job.state = JobState.ROUTING
    job.progress = None
    if action == "regenerate":
        # a new seed, so the same model does not make the same clip again
        job.request = job.request.model_copy(update={"seed": random.randrange(2**32)})
    await driver._save(claim, ledger=[ledger])
    for uri in rejected_files:
        _delete(driver.storage, uri)
    err = QualityGateFailed(failure_message(verdict, "no further offering could take it"))
    if target is not None:
        offering = driver.catalog.offering(target)
        submit_err = await driver._submit(claim, offering, on_progress)
        return False, submit_err or err
    return False, err


def gate_source(driver: JobDriver, job: Job) -> str:
    post: PostProcessor = driver.post
    return post.gate(job)[1]


async def _fail_rejected(
    driver: JobDriver,
    claim: Claim,
    verdict: Verdict,
    why: str,
    ledger: LedgerEntry,
    on_progress: Any,
) -> tuple[bool, VidgateError | None]:
    job = claim.job
    job.cost_usd = job_cost(job)
    err = QualityGateFailed(failure_message(verdict, why), details={"failed": verdict.failed})
    await driver._fail(claim, err, on_progress, ledger=[ledger])
    return True, err


async def _can_extend(driver: JobDriver, claim: Claim, offering_id: str | None) -> str | None:
    """Why no extra attempt can start on ``offering_id`` (None: on the next ranked offering
    not tried yet); None when one can. Budget (request cap, tenant reservation top-up),
    deadline and the offering's health are checked here, before anything is submitted."""
    job = claim.job
    route = job.route or {}
    tried = {a.offering_id for a in job.attempts}
    if offering_id is None:
        candidates = [o for o in route.get("ranked", []) if o not in tried]
        if not candidates:
            return "no other ranked offering is left to fall back on"
        offering_id = candidates[0]
        check_only_budget = True
    else:
        check_only_budget = False
    offering = driver.catalog.offerings.get(offering_id)
    estimate = float(route.get("estimates", {}).get(offering_id, 0.0))
    if offering is None:
        return f"offering {offering_id} is no longer in the catalog"
    spent = committed(job)
    cap = job.request.constraints.max_cost_usd
    if cap is not None and spent + estimate > cap + 1e-9:
        return (
            f"another attempt on {offering_id} (${estimate:.2f}) would pass the request's "
            f"max_cost_usd ${cap:.2f} (${spent:.2f} spent)"
        )
    deadline = job.request.constraints.deadline
    if deadline is not None:
        w, h = job.request.frame_size
        need = offering.latency.p50 * offering.latency.size_factor(job.request.duration_s, w * h)
        left = (deadline - datetime.now(UTC)).total_seconds()
        if left < need:
            return (
                f"{left:.0f} s remain before the deadline; {offering_id} takes about {need:.0f} s"
            )
    if check_only_budget:
        # the drive loop's own routing picks and covers the next offering
        return None
    blocked = driver._usable(offering)
    if blocked is not None:
        return f"{offering_id} cannot take an attempt now ({blocked})"
    return await driver._cover(claim, spent + estimate)


__all__ = [
    "DEFAULT_STAGES",
    "PostProcessor",
    "StageSettings",
    "job_cost",
    "post_process",
    "stage_row",
]

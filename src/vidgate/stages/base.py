"""The stage contract and its registry.

A stage takes a job and one stored asset and returns a :class:`StageResult` that the job
engine stores on the job (``job.stages[name]``) as soon as the stage ends. Stages run in the
``post_processing`` state in a configured order; each is idempotent — after a crash the
engine re-runs the stage it was in, and skips the ones whose result is stored — and says what
it needs (a decoder, a key, a model path) so a missing need is a clear start-up error, not a
failure at the first job.

Adding a stage is one module in this package that subclasses :class:`Stage` and decorates it
with :func:`register`; nothing else changes: :func:`discover` imports every module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidgate.types import Asset, Job

Verdict = Literal["pass", "fail", "skipped", "error"]


class CheckResult(BaseModel):
    """One measurement of a stage: what was measured, against what, and the verdict."""

    model_config = ConfigDict(extra="forbid")

    name: str
    verdict: Verdict
    value: float | str | bool | None = None
    threshold: float | str | bool | None = None
    unit: str | None = None
    detail: str | None = None
    #: timestamps (seconds) of the frames that made it fail, for the dashboard's strip
    frames_s: list[float] = Field(default_factory=list)


class StageResult(BaseModel):
    """What a stage concluded about one asset; stored on the job under the stage's name."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    asset_id: str
    verdict: Verdict
    #: 0–10 where the stage scores quality (None: it only passes or fails)
    score: float | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    #: what running the stage cost (a VLM judge's call), put on the ledger by the engine
    cost_usd: float = 0.0
    #: the asset the stage wrote in place of its input (a signed copy), else None
    asset: Asset | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == "fail"]


@dataclass(frozen=True)
class StageContext:
    """What a stage is given: the job, the asset under review and a local path to its bytes.

    Only the things stages need, never the whole gateway (design.md §10)."""

    job: Job
    asset: Asset
    path: Path
    #: where a stage may write files it produces (a signed copy); the engine stores them
    workdir: Path
    settings: Any
    #: an httpx.AsyncClient for stages that call out (the VLM judge), SSRF rules applied
    client: Any = None
    #: the sandbox's base URL when running against it (judges are emulated there)
    sandbox_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StageUnavailable(Exception):
    """A stage cannot run as configured (a missing key, model or extra); says what to fix."""


class Stage(ABC):
    """One post-generation step. Subclasses set ``name`` and implement :meth:`run`."""

    #: the key its result is stored under, and how it is named in configuration
    name: ClassVar[str]
    #: what it needs, for `vidgate doctor`-style reports ("pyav", "c2pa key", "clip model")
    needs: ClassVar[tuple[str, ...]] = ()
    #: True for a stage that rewrites the file (signing): it runs after the quality gate, only
    #: on the clip that will be delivered; review stages (checks, semantic) run before it
    after_gate: ClassVar[bool] = False

    def check_ready(self, settings: Any) -> None:
        """Raise :class:`StageUnavailable` when this stage cannot run with ``settings``.

        Called at start-up for every configured stage, so a bad key or path fails there."""
        return None

    def applies(self, job: Job) -> bool:
        """Whether this stage has work on ``job`` (the default: always)."""
        return True

    def applies_to(self, job: Job, gate: Any) -> bool:
        """Whether this stage has work on ``job`` under the gate in force (the request's or the
        tenant default, a ``QualityGate``); the engine asks this. Default: :meth:`applies`."""
        return self.applies(job)

    def estimate_cost_usd(self, job: Job, gate: Any) -> float:
        """What running it will cost at most (a paid judge call); the engine covers it in the
        job's reservation first and skips the stage when the budget cannot. Default: free."""
        return 0.0

    @abstractmethod
    async def run(self, ctx: StageContext) -> StageResult:
        """Review (or transform) ``ctx.asset``; must be safe to run again after a crash."""


REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage known under its ``name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no stage name")
    existing = REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise TypeError(f"stage name {cls.name!r} is taken by {existing.__name__}")
    REGISTRY[cls.name] = cls
    return cls


def discover() -> dict[str, type[Stage]]:
    """Import every module of this package so their stages register; returns the registry."""
    import vidgate.stages as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"vidgate.stages.{mod.name}")
    return REGISTRY


def resolve(names: list[str]) -> list[Stage]:
    """The configured stages in order; an unknown name is an error naming the known ones."""
    known = discover()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StageUnavailable(
            f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return [known[n]() for n in names]


def now() -> datetime:
    return datetime.now(UTC)

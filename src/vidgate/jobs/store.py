"""Durable job records (SQLAlchemy Core; SQLite by default, any SQLAlchemy URL otherwise).

A job is stored as its full JSON document plus the columns we query by. Every save is a
compare-and-set on ``version``, so two writers can never silently overwrite each other: the
loser gets :class:`StaleJob` and must reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from vidgate.errors import NotFound, VidgateError
from vidgate.types import Job, JobState

metadata = MetaData()

jobs_table = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("state", String(32), nullable=False, index=True),
    Column("offering_id", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("doc", Text, nullable=False),
)


class StaleJob(VidgateError):
    """Someone else saved this job since it was loaded."""

    code = "stale_job"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class JobStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        self._versions: dict[str, int] = {}

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def create(self, job: Job) -> Job:
        with self._tx() as conn:
            conn.execute(
                jobs_table.insert().values(
                    id=job.id,
                    tenant=job.tenant,
                    state=job.state.value,
                    offering_id=job.offering_id,
                    created_at=job.created_at,
                    updated_at=job.updated_at,
                    version=1,
                    doc=job.model_dump_json(),
                )
            )
        self._versions[job.id] = 1
        return job

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        q = select(jobs_table.c.doc, jobs_table.c.version).where(jobs_table.c.id == job_id)
        if tenant is not None:
            q = q.where(jobs_table.c.tenant == tenant)
        with self._tx() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}; list jobs with `vidgate jobs`")
        self._versions[job_id] = row.version
        return Job.model_validate_json(row.doc)

    def save(self, job: Job) -> Job:
        """Write ``job`` if nobody else changed it since we read it; bump its version."""
        job.updated_at = datetime.now(UTC)
        version = self._versions.get(job.id)
        if version is None:
            raise StaleJob(f"job {job.id} was not loaded through this store")
        with self._tx() as conn:
            res = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job.id, jobs_table.c.version == version)
                .values(
                    state=job.state.value,
                    offering_id=job.offering_id,
                    updated_at=job.updated_at,
                    version=version + 1,
                    doc=job.model_dump_json(),
                )
            )
        if res.rowcount != 1:
            raise StaleJob(f"job {job.id} changed since it was read")
        self._versions[job.id] = version + 1
        return job

    def list(
        self,
        *,
        tenant: str | None = None,
        state: JobState | None = None,
        limit: int = 50,
    ) -> list[Job]:
        q = select(jobs_table.c.doc).order_by(jobs_table.c.created_at.desc()).limit(limit)
        if tenant is not None:
            q = q.where(jobs_table.c.tenant == tenant)
        if state is not None:
            q = q.where(jobs_table.c.state == state.value)
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [Job.model_validate_json(r.doc) for r in rows]

    def counts(self) -> dict[str, int]:
        from sqlalchemy import func

        q = select(jobs_table.c.state, func.count()).group_by(jobs_table.c.state)
        with self._tx() as conn:
            return {s: n for s, n in conn.execute(q).all()}

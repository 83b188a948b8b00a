from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import IN_CI
from vidgate.jobs.store import JobStore
from vidgate.types import Job, JobState, VideoRequest

PG_ADMIN = os.environ.get("VIDGATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        with sa.create_engine(PG_ADMIN).connect() as c:
            c.execute(sa.text("select 1"))
        return True
    except Exception:
        return False


PG_OK = _pg_available()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database URL whose search_path is a fresh schema, dropped afterwards."""
    if not PG_OK:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_ADMIN}")
        pytest.skip("PostgreSQL not reachable (set VIDGATE_TEST_PG)")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    s = JobStore(store_url)
    yield s
    s.close()


def make_job(prompt: str = "x", tenant: str = "default", **kw: object) -> Job:
    now = datetime.now(UTC)
    return Job(
        id="job_" + uuid.uuid4().hex[:20],
        tenant=tenant,
        state=JobState.QUEUED,
        request=VideoRequest(prompt=prompt),
        created_at=now,
        updated_at=now,
        route={"ranked": [], "estimates": {}},
        **kw,  # type: ignore[arg-type]
    )

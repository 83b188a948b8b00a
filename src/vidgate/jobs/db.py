"""Tables, engines and migrations for the job store (SQLite by default, PostgreSQL too).

The tables are declared once here (SQLAlchemy Core); Alembic migrations in
``jobs/migrations`` create them, and a test checks the two never drift apart.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("terminal", Boolean, nullable=False, default=False),
    Column("offering_id", String(128)),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    # The claim: who works on the job, until when, and the fencing token that makes a stale
    # worker's writes fail once someone else has claimed it.
    Column("lease_owner", String(128)),
    Column("lease_until", DateTime(timezone=True)),
    Column("fence", Integer, nullable=False, default=0),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("poll_hint_at", DateTime(timezone=True)),
    Column("doc", Text, nullable=False),
    # Poison containment: crashes of the code driving this job (bounded), and why a row that
    # could not be read was set aside instead of being claimed again and again.
    Column("drive_errors", Integer, nullable=False, default=0, server_default="0"),
    Column("last_drive_error", Text),
    Column("quarantine", Text),
    UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
)
Index("ix_jobs_claim", jobs.c.terminal, jobs.c.next_run_at)
Index("ix_jobs_tenant_created", jobs.c.tenant, jobs.c.created_at)
Index("ix_jobs_state", jobs.c.state)

#: webhook events, written in the same transaction as the state change they announce
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(64), primary_key=True),  # the webhook-id, stable across retries
    Column("job_id", String(64), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("endpoint_id", String(64)),
    Column("url", Text, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, dead, disabled
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", DateTime(timezone=True)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
)
Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)
Index("ix_outbox_job", outbox.c.job_id)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: one row per attempt that ended, written with the transition that ended it
ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False),
    Column("attempt_n", Integer, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("offering_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # charge (billed) or void (not billed)
    Column("amount_usd", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("job_id", "attempt_n", name="uq_ledger_attempt"),
)
Index("ix_ledger_tenant", ledger.c.tenant, ledger.c.created_at)

workers = Table(
    "workers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)


#: who may call the service, with what allowance; budgets are reserved atomically at submit
tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("budget_usd", Float),  # None: unlimited
    Column("reserved_usd", Float, nullable=False, default=0.0),
    Column("spent_usd", Float, nullable=False, default=0.0),
    #: resellers: what the tenant is charged per USD of provider cost (seed 000: 3x)
    Column("markup", Float, nullable=False, default=1.0),
    Column("max_concurrent_jobs", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256: never the key
    Column("prefix", String(16), nullable=False),  # shown in listings to tell keys apart
    Column("rpm", Integer),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    #: sees every tenant on the dashboard; granted explicitly (`vidgate keys create --admin`)
    Column("admin", Boolean, nullable=False, default=False, server_default=false()),
)

#: responses of POSTs made with an Idempotency-Key, replayed on repeats
idempotency = Table(
    "idempotency",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # in_progress, done
    Column("status_code", Integer),
    Column("response", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


#: stories: parent jobs whose shots and segments are ordinary jobs (vidgate.stories)
stories = Table(
    "stories",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("terminal", Boolean, nullable=False, default=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", DateTime(timezone=True)),
    Column("fence", Integer, nullable=False, default=0),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    #: what is still held of the budget reserved for the whole story at submit
    Column("reserved_usd", Float, nullable=False, default=0.0),
    Column("doc", Text, nullable=False),
    UniqueConstraint("tenant", "idempotency_key", name="uq_stories_tenant_idempotency_key"),
)
Index("ix_stories_claim", stories.c.terminal, stories.c.next_run_at)
Index("ix_stories_tenant_created", stories.c.tenant, stories.c.created_at)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # The database holds key hashes, webhook secrets and every tenant's jobs: create
            # it readable by its owner only (SQLite gives its -wal and -shm files the
            # database file's mode), before SQLite would create it under the umask.
            with contextlib.suppress(FileExistsError):
                fd = os.open(path.split("?", 1)[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below take control
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # type: ignore[no-untyped-def]
            # Take the write lock at BEGIN: a read-then-write transaction (a claim) can then
            # never deadlock on lock upgrade, which is SQLite's "SKIP LOCKED" equivalent.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the latest migration (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

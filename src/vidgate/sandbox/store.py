"""The sandbox's own durable record of every job it was sent.

It lives in its own SQLite file, written before the create call answers, so the sandbox can
count duplicate submissions even when the gateway crashed in between: that count is how the
chaos test proves "never paid twice". A job's progress is a function of time (created_at and
its drawn latency), so the emulation survives a sandbox restart as well.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    model TEXT NOT NULL,
    offering_id TEXT,
    fingerprint TEXT NOT NULL,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    latency_s REAL NOT NULL,
    outcome TEXT NOT NULL,
    params TEXT NOT NULL,
    canceled_at REAL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_fp ON jobs (fingerprint);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs (protocol, idempotency_key);
CREATE TABLE IF NOT EXISTS events (
    kind TEXT NOT NULL,
    detail TEXT,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SandboxJob:
    id: str
    protocol: str
    model: str
    offering_id: str | None
    fingerprint: str
    idempotency_key: str | None
    created_at: float
    latency_s: float
    outcome: str  # "ok" or "fail:<kind>"
    params: dict[str, Any]
    canceled_at: float | None
    deleted: bool

    def phase(self, now: float | None = None) -> tuple[str, float]:
        """("queued"|"running"|"succeeded"|"failed"|"canceled", progress 0..1)."""
        now = time.time() if now is None else now
        if self.canceled_at is not None and self.canceled_at <= now:
            return "canceled", 0.0
        elapsed = now - self.created_at
        if elapsed >= self.latency_s:
            return ("succeeded" if self.outcome == "ok" else "failed"), 1.0
        progress = elapsed / self.latency_s if self.latency_s > 0 else 1.0
        return ("queued" if progress < 0.1 else "running"), progress


class SandboxStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def find_by_key(self, protocol: str, key: str) -> SandboxJob | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM jobs WHERE protocol=? AND idempotency_key=?", (protocol, key)
            ).fetchone()
        return _job(row) if row else None

    def insert(self, job: SandboxJob) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    job.protocol,
                    job.model,
                    job.offering_id,
                    job.fingerprint,
                    job.idempotency_key,
                    job.created_at,
                    job.latency_s,
                    job.outcome,
                    json.dumps(job.params),
                    job.canceled_at,
                    int(job.deleted),
                ),
            )

    def get(self, job_id: str) -> SandboxJob | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, protocol: str, limit: int = 100) -> list[SandboxJob]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM jobs WHERE protocol=? AND deleted=0 ORDER BY created_at DESC "
                "LIMIT ?",
                (protocol, limit),
            ).fetchall()
        return [_job(r) for r in rows]

    def mark(self, job_id: str, *, canceled_at: float | None = None, deleted: bool = False) -> None:
        with self._lock:
            if canceled_at is not None:
                self._conn.execute(
                    "UPDATE jobs SET canceled_at=? WHERE id=? AND canceled_at IS NULL",
                    (canceled_at, job_id),
                )
            if deleted:
                self._conn.execute("UPDATE jobs SET deleted=1 WHERE id=?", (job_id,))

    def event(self, kind: str, detail: str | None = None) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO events VALUES (?,?,?)", (kind, detail, time.time()))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = self._conn
            creates = c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            by_protocol = dict(c.execute("SELECT protocol, COUNT(*) FROM jobs GROUP BY protocol"))
            by_model = dict(c.execute("SELECT model, COUNT(*) FROM jobs GROUP BY model"))
            dup_rows = c.execute(
                "SELECT fingerprint, COUNT(*) FROM jobs GROUP BY fingerprint HAVING COUNT(*) > 1"
            ).fetchall()
            events = dict(c.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind"))
        return {
            "creates": creates,
            "by_protocol": by_protocol,
            "by_model": by_model,
            # extra creates of an identical request body: each one is a job paid twice
            "duplicate_submissions": sum(n - 1 for _, n in dup_rows),
            "duplicate_fingerprints": [fp for fp, _ in dup_rows],
            "events": events,
        }


def _job(row: tuple[Any, ...]) -> SandboxJob:
    return SandboxJob(
        id=row[0],
        protocol=row[1],
        model=row[2],
        offering_id=row[3],
        fingerprint=row[4],
        idempotency_key=row[5],
        created_at=row[6],
        latency_s=row[7],
        outcome=row[8],
        params=json.loads(row[9]),
        canceled_at=row[10],
        deleted=bool(row[11]),
    )

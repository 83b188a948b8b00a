"""Prometheus metrics, JSON logs with job ids, health and readiness."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from vidgate.supervise import METRICS_ENV
from vidgate.types import Job, JobState


def multiprocess() -> bool:
    return bool(os.environ.get(METRICS_ENV))


class Metrics:
    """One registry per app, so several apps (tests) never collide on metric names.

    Under ``vidgate serve`` the API and the workers are separate processes; the supervisor
    then sets :data:`vidgate.supervise.METRICS_ENV` and every process's counters land in one
    folder, so the jobs a worker finished show in the API's ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vidgate_http_requests_total", "HTTP requests", ["route", "status"], registry=r
        )
        self.submitted = Counter(
            "vidgate_jobs_submitted_total", "Jobs accepted", ["offering"], registry=r
        )
        self.finished = Counter(
            "vidgate_jobs_finished_total",
            "Jobs that reached an end",
            ["offering", "state"],
            registry=r,
        )
        # Set by whichever API process is scraped: the newest value is the truth.
        self.jobs_by_state = Gauge(
            "vidgate_jobs",
            "Jobs by state (at scrape time)",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.cost = Counter(
            "vidgate_cost_usd_total", "Provider cost of finished jobs", ["offering"], registry=r
        )
        self.latency = Histogram(
            "vidgate_job_latency_seconds",
            "Submit to finish",
            ["offering"],
            registry=r,
            buckets=(5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 1200),
        )
        self.provider_errors = Counter(
            "vidgate_provider_errors_total",
            "Failed attempts by provider error code",
            ["offering", "code"],
            registry=r,
        )
        self.breakers = Gauge(
            "vidgate_breaker_open",
            "1 when a circuit breaker is open",
            ["kind", "name"],
            registry=r,
            multiprocess_mode="mostrecent",
        )

    def job_finished(self, job: Job) -> None:
        offering = job.offering_id or "none"
        self.finished.labels(offering, job.state.value).inc()
        if job.cost_usd:
            self.cost.labels(offering).inc(job.cost_usd)
        if job.latency_s is not None:
            self.latency.labels(offering).observe(job.latency_s)
        for a in job.attempts:
            if a.error:
                self.provider_errors.labels(a.offering_id, str(a.error.get("code"))).inc()

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every process's samples."""
        if multiprocess():
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)

    def refresh(self, counts: dict[str, int], health: dict[str, Any]) -> None:
        # Every state is set at each scrape (0 when no job is in it): a state that emptied
        # since the last scrape must not keep showing its old count.
        for state in JobState:
            self.jobs_by_state.labels(state.value).set(counts.get(state.value, 0))
        for kind in ("offerings", "providers"):
            for name, state in health.get(kind, {}).items():
                self.breakers.labels(kind[:-1], name).set(1 if state == "open" else 0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; job ids and tenants travel in ``extra``.

    (A dozen lines of our own rather than another dependency; secrets never reach log
    records because errors and jobs never hold them.)"""

    FIELDS = ("job_id", "tenant", "offering", "status", "route", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for f in self.FIELDS:
            if hasattr(record, f):
                out[f] = getattr(record, f)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_json_logs(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

"""Fixtures for the gateway service: real servers on loopback (lifespan on, so the worker
runs in the server's own event loop), a sandbox-mode gateway on a temporary VIDGATE_HOME,
and tenants/keys created through ``gateway.accounts``."""

from __future__ import annotations

import os

# litellm fetches its cost map from the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import IN_CI
from tests.jobs.conftest import PG_ADMIN, PG_OK
from vidgate.gateway import Gateway
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import LoopbackServer
from vidgate.server.app import create_app
from vidgate.settings import Credentials, Settings

TIME_SCALE = 0.005
POLL_S = 0.05
TERMINAL = {"succeeded", "failed", "canceled", "expired", "needs_reconciliation"}


@dataclass
class Tenant:
    name: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


@dataclass
class Server:
    """A running vidgate service and the gateway behind it."""

    gateway: Gateway
    loopback: LoopbackServer
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return self.loopback.url

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def tenant(
        self,
        prefix: str = "t",
        *,
        budget_usd: float | None = None,
        rpm: int | None = None,
        max_jobs: int | None = None,
    ) -> Tenant:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        acc = self.gateway.accounts
        acc.ensure_tenant(name, budget_usd=budget_usd, max_concurrent_jobs=max_jobs)
        kid, raw = acc.create_key(name, rpm=rpm)
        return Tenant(name, raw, kid)

    def client(self, tenant: Tenant | None = None, **kw: Any) -> httpx.Client:
        headers = tenant.headers if tenant else {}
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=kw.pop("timeout", 30),
            transport=httpx.HTTPTransport(retries=0),
            **kw,
        )

    def wait_job(self, tenant: Tenant, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """Poll the native API until the job is terminal (fails the test at the deadline)."""
        deadline = time.monotonic() + timeout_s
        with self.client(tenant) as c:
            while True:
                r = c.get(f"/v1/jobs/{job_id}")
                assert r.status_code == 200, r.text
                job: dict[str, Any] = r.json()
                if job["state"] in TERMINAL:
                    return job
                if time.monotonic() > deadline:
                    pytest.fail(f"job {job_id} still {job['state']} after {timeout_s}s")
                time.sleep(POLL_S)

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.loopback.stop()


def sandbox_settings(home: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "sandbox": True,
        "sandbox_url": None,
        "database_url": None,
        "storage_url": None,
        "sandbox_time_scale": TIME_SCALE,
        "poll_interval_s": POLL_S,
        "redis_url": None,
    }
    values.update(kw)
    return Settings(**values)


def start_server(
    settings: Settings,
    *,
    run_worker: bool = True,
    credentials: Credentials | None = None,
) -> Server:
    gw = Gateway(settings, credentials=credentials)
    loop = LoopbackServer(create_app(settings, gateway=gw, run_worker=run_worker))
    loop.server.config.lifespan = "on"
    loop.start()
    return Server(gw, loop)


ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start a server with its own home and settings (stopped after the test)."""
    started: list[Server] = []

    def make(
        *, run_worker: bool = True, credentials: Credentials | None = None, **kw: Any
    ) -> Server:
        home = tmp_path_factory.mktemp("home")
        srv = start_server(
            sandbox_settings(home, **kw), run_worker=run_worker, credentials=credentials
        )
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared service: sandbox mode, SQLite, a worker. Tests use their own tenants."""
    srv = start_server(sandbox_settings(tmp_path_factory.mktemp("server")))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A service without a worker: its jobs stay queued, for 'not finished yet' cases."""
    srv = start_server(sandbox_settings(tmp_path_factory.mktemp("idle")), run_worker=False)
    yield srv
    srv.stop()


def require_pg() -> None:
    if not PG_OK:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_ADMIN}")
        pytest.skip("PostgreSQL not reachable (set VIDGATE_TEST_PG)")


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_pg()
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


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on PostgreSQL (a fresh schema), with a worker."""
    with pg_schema() as url:
        srv = start_server(sandbox_settings(tmp_path_factory.mktemp("pg"), database_url=url))
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def tenant(server: Server) -> Tenant:
    return server.tenant()


async def drain(settings: Settings) -> None:
    """Run every due job to its end with a worker of its own (its own gateway, as another
    process would have): for servers started without a worker."""
    gw = Gateway(settings)
    try:
        await gw.worker(WorkerConfig(idle_sleep_s=0.05)).run(until_idle=True)
    finally:
        await gw.aclose()
        gw.close()


def submit_job(
    server: Server, tenant: Tenant, prompt: str = "a red fox in the snow", **body: Any
) -> dict[str, Any]:
    """POST /v1/jobs (5 s, 720p unless ``request`` says otherwise); returns the job."""
    payload: dict[str, Any] = {"request": {"prompt": prompt, "duration_s": 5}}
    payload.update(body)
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json=payload)
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out

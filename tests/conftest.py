from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from vidgate.catalog.loader import Catalog, catalog_from_yaml
from vidgate.gateway import Gateway
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: shared/ sits beside the checkout (CI clones main with shared/ next to it)
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_shared() -> Path:
    """The seeds and references; their absence is a failure in CI, a skip elsewhere."""
    if not (SHARED / "seeds").is_dir():
        if IN_CI:
            pytest.fail(f"{SHARED}/seeds is missing in CI")
        pytest.skip("shared/ (seeds) is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def mini_catalog() -> Catalog:
    return catalog_from_yaml((FIXTURES / "mini_catalog.yaml").read_text(), "mini_catalog.yaml")


@pytest.fixture
def sandbox(tmp_path: Path, mini_catalog: Catalog) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", mini_catalog, time_scale=0.004).start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, transport=httpx.AsyncHTTPTransport(retries=0)) as c:
        yield c


def sandbox_settings(home: Path, sandbox_url: str | None = None, **kw: object) -> Settings:
    return Settings(
        home=home,
        sandbox=True,
        sandbox_url=sandbox_url,
        sandbox_time_scale=0.004,
        poll_interval_s=0.05,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def gateway(tmp_path: Path, mini_catalog: Catalog, sandbox: SandboxServer) -> Iterator[Gateway]:
    gw = Gateway(sandbox_settings(tmp_path / "home", sandbox.url), catalog=mini_catalog)
    yield gw
    gw.close()

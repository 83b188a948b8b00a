"""The SDK contract suite: each provider's official Python SDK (the test-only ``contract``
extra) runs its own flows against the sandbox, and its response models parse what the
emulator answers. Providers without an SDK are checked against fixtures from their docs
(tests/contract/test_documented_fixtures.py). The table lives in docs/adding-a-provider.md."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL

#: a key every emulator accepts (any value except the refused one)
KEY = "sk-contract-not-a-real-key"
assert KEY != INVALID_CREDENTIAL

#: 1x1 PNG (a valid image for every emulator that checks the bytes)
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

SDKS = (
    "openai",
    "google-genai",
    "runwayml",
    "lumaai",
    "replicate",
    "fal-client",
    "byteplus-python-sdk-v2",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "contract: an official provider SDK against the sandbox (tests/contract)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.contract)


def pytest_report_header() -> list[str]:
    """The SDK versions under test, printed at the top of every run."""
    out = []
    for dist in SDKS:
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} MISSING")
    return ["contract SDKs: " + ", ".join(out)]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def sb(tmp_path: Path, catalog: Catalog) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sb", catalog, time_scale=0.002).start()
    yield server
    server.stop()

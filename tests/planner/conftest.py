from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vidgate.catalog.loader import Catalog, load_catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workloads"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The shipped catalog: the seed tables are reproduced from its price rules."""
    return load_catalog()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def _write(text: str, name: str = "workload.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write

"""Providers with no official Python SDK (Kling, MiniMax) or only a gRPC one (xAI): their
request/response fixtures (tests/fixtures/<provider>/, each with its source and what stays
unconfirmed in SOURCES.json) are the independent reference. Here the emulator's live answers,
driven through the adapter, must have the documented shape (every documented key present, with
the documented JSON type), and the adapter must read what the documented bodies say (the
per-provider tests replay each fixture through a scripted server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES
from vidgate.catalog.loader import Catalog
from vidgate.providers.base import RemoteState, adapter_class
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Credentials
from vidgate.types import VideoRequest

#: provider -> (fixture dir, offering, (documented create body, documented final body))
CASES = {
    "kling": ("kling", "kling-3.0-kling", "create.json", "task_succeed.json", "720p"),
    "minimax": ("minimax", "hailuo-2.3-minimax", "create.json", "query_success.json", "768p"),
    "xai-video": ("xai", "grok-imagine-xai", "create.json", "status_done.json", "720p"),
}


def shape_mismatches(doc: Any, got: Any, path: str = "$") -> list[str]:
    """Where ``got`` lacks a key ``doc`` has, or holds a different JSON type."""
    if isinstance(doc, dict):
        if not isinstance(got, dict):
            return [f"{path}: object expected, got {type(got).__name__}"]
        out = []
        for k, v in doc.items():
            if k not in got:
                out.append(f"{path}.{k}: missing")
            else:
                out += shape_mismatches(v, got[k], f"{path}.{k}")
        return out
    if isinstance(doc, list):
        if not isinstance(got, list):
            return [f"{path}: array expected"]
        return shape_mismatches(doc[0], got[0], f"{path}[0]") if doc and got else []
    kinds = (bool, int | float, str, type(None))
    for kind in kinds:
        if isinstance(doc, kind):
            ok = isinstance(got, kind) and not (kind is not bool and isinstance(got, bool))
            return [] if ok else [f"{path}: {type(doc).__name__} expected, got {got!r}"]
    return []


@pytest.mark.parametrize("provider", sorted(CASES))
def test_every_fixture_names_its_source(provider: str) -> None:
    folder = FIXTURES / CASES[provider][0]
    sources = json.loads((folder / "SOURCES.json").read_text())
    assert sources["_provider"]["docs"].startswith("https://")
    files = {p.name for p in folder.glob("*.json")} - {"SOURCES.json"}
    assert files == set(sources) - {"_provider"}, "a fixture without a source (or a stale entry)"
    for name in files:
        assert sources[name]["source"], name


@pytest.mark.parametrize("provider", sorted(CASES))
async def test_emulator_answers_in_the_documented_shape(
    provider: str, sb: SandboxServer, catalog: Catalog, tmp_path: Path
) -> None:
    folder, oid, create_doc, final_doc, resolution = CASES[provider]
    bodies: list[tuple[str, Any]] = []

    async def record(resp: httpx.Response) -> None:
        await resp.aread()
        if resp.headers.get("content-type", "").startswith("application/json"):
            bodies.append((resp.request.method, resp.json()))

    offering = catalog.offering(oid)
    cls = adapter_class(offering.protocol)
    async with httpx.AsyncClient(event_hooks={"response": [record]}, timeout=10) as client:
        base = f"{sb.url}/{cls.protocol}" + httpx.URL(cls.default_base_url).path.rstrip("/")
        # sandbox credentials: Kling JWTs are signed with the secret the emulator verifies
        adapter = cls(client=client, credentials=Credentials(sandbox=True), base_url=base)
        job = await adapter.submit(
            VideoRequest(prompt="a paper boat on a stream", duration_s=6, resolution=resolution),
            offering,
            idempotency_key="contract-1",
        )
        status = await adapter.poll(job)
        for _ in range(5000):
            if status.state.terminal:
                break
            status = await adapter.poll(job)
        assert status.state is RemoteState.SUCCEEDED
        assets = await adapter.fetch(job)
        assert assets

    documented = {
        n: json.loads((FIXTURES / folder / n).read_text()) for n in (create_doc, final_doc)
    }
    create = next(b for m, b in bodies if m == "POST")
    assert shape_mismatches(documented[create_doc], create) == []
    finals = [b for m, b in bodies if m == "GET" and not shape_mismatches(documented[final_doc], b)]
    assert finals, "no status body has the documented final shape: " + "; ".join(
        shape_mismatches(documented[final_doc], bodies[-1][1])
    )

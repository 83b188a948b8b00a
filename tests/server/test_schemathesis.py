"""Property-based API testing with schemathesis against the live service's own OpenAPI
schema: whatever is sent, no operation answers with a 5xx."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.server.conftest import (
    Server,
    Tenant,
    drain,
    sandbox_settings,
    start_server,
    submit_job,
)

EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Tenant, list[str]]]:
    """A service without a worker (jobs the fuzzer manages to create stay queued rather than
    rendering large videos), and a tenant with a few finished jobs whose real ids are mixed
    into the generated ones, so id-taking operations reach past their 404s."""
    server = start_server(sandbox_settings(tmp_path_factory.mktemp("fuzz")), run_worker=False)
    try:
        tenant = server.tenant("fuzz")
        ids = [submit_job(server, tenant, f"clip {i}")["id"] for i in range(4)]
        asyncio.run(drain(server.gateway.settings))
        assert {server.gateway.store.get(i).state.value for i in ids} == {"succeeded"}
        yield server, tenant, ids
    finally:
        server.stop()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_operation_answers_5xx(
    fuzz_target: tuple[Server, Tenant, list[str]], mode: GenerationMode
) -> None:
    """Every operation of /openapi.json, with data that fits the schema (positive) and data
    that breaks it (negative): never a 5xx. (schemathesis' pytest plugin does not load
    under pytest 9, so its Python API drives hypothesis here, one operation at a time.)"""
    server, tenant, ids = fuzz_target
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {tenant.key}"}
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert len(operations) >= 15
    tested = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case[Any]) -> None:
            for name in ("job_id", "video_id"):
                value = (case.path_parameters or {}).get(name)
                if value is not None and zlib.crc32(str(value).encode()) % 2:
                    # half the ids are real: the operation gets past its 404
                    case.path_parameters[name] = ids[zlib.crc32(str(value).encode()) % len(ids)]
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)

        try:
            call()
        except Unsatisfiable:
            # an operation without inputs (GET /v1/spend) has no schema to break
            assert mode is GenerationMode.NEGATIVE
            continue
        tested.append(operation.label)
    assert "POST /v1/jobs" in tested
    assert "POST /v1/videos" in tested

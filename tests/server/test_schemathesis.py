"""Property-based API testing with schemathesis against the live service's own OpenAPI
schema: whatever is sent, no operation answers with a 5xx.

Three passes, each bounded so the module runs well under a minute:

* every operation with data that fits the schema (positive) and data that breaks it
  (negative);
* every operation that takes a JSON body with hostile bodies: nested hundreds deep,
  numbers with hundreds of digits, megabyte strings, thousands of items;
* stateful: the OpenAPI links from a create (``POST /v1/jobs``, ``POST /v1/videos``) to
  the calls that take its id, followed by schemathesis' state machine.

Each pass counts the requests it made (printed with ``-s``; the report quotes them)."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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

EXAMPLES = 12
HOSTILE_EXAMPLES = 40
STATEFUL_EXAMPLES = 25
STATEFUL_STEPS = 5

#: requests made per pass (module-wide, printed at the end of each test)
SENT: Counter[str] = Counter()
#: status codes the stateful pass saw per operation (to show it reached past the create)
STATEFUL_SEEN: Counter[tuple[str, int]] = Counter()


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


def _schema(server: Server) -> Any:
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def _operations(schema: Any) -> list[Any]:
    return [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_operation_answers_5xx(
    fuzz_target: tuple[Server, Tenant, list[str]], mode: GenerationMode
) -> None:
    """Every operation of /openapi.json, with data that fits the schema (positive) and data
    that breaks it (negative): never a 5xx. (schemathesis' pytest plugin does not load
    under pytest 9, so its Python API drives hypothesis here, one operation at a time.)"""
    server, tenant, ids = fuzz_target
    headers = {"Authorization": f"Bearer {tenant.key}"}
    operations = _operations(_schema(server))
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
            SENT[mode.value] += 1
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
    print(f"\nschemathesis {mode.value}: {SENT[mode.value]} requests, {len(tested)} operations")


def _deep(depth: int, leaf: Any) -> Any:
    node = leaf
    for i in range(depth):
        node = [node] if i % 2 else {"a": node}
    return node


#: values no request should carry: each must be a 4xx, never a 5xx
HOSTILE = st.one_of(
    st.integers(min_value=33, max_value=400).map(lambda d: _deep(d, 1)),
    st.integers(min_value=25, max_value=600).map(lambda n: int("9" * n)),
    st.integers(min_value=25, max_value=600).map(lambda n: -int("7" * n)),
    st.sampled_from([1e308, -1e308, 2**63, -(2**63), 2**64]),
    st.booleans(),
    st.integers(min_value=65 * 1024, max_value=2 * 1024 * 1024).map(lambda n: "x" * n),
    st.integers(min_value=1001, max_value=20_000).map(lambda n: [0] * n),
    st.integers(min_value=1001, max_value=5000).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.just("data:image/png;base64," + "A" * (1024 * 1024)),  # a megabyte of non-image
)


def _hostile_pass(
    operation: Any, places: st.SearchStrategy[str | None], headers: dict[str, str]
) -> Any:
    """A hypothesis test sending HOSTILE values in the given places of one operation."""
    params = {name: "kling" for name in re.findall(r"{(\w+)}", operation.path)}

    @given(value=HOSTILE, place=places)
    @settings(
        max_examples=HOSTILE_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(value: Any, place: str | None) -> None:
        body: Any
        if place is None:
            body = value
        elif place.startswith("request."):
            body = {"request": {"prompt": "x", place.split(".", 1)[1]: value}}
        else:
            body = {"prompt": "x", "request": {"prompt": "x"}, place: value}
        case = operation.Case(body=body, media_type="application/json", path_parameters=params)
        SENT["hostile"] += 1
        response = case.call(headers=headers, timeout=60)
        assert 400 <= response.status_code < 500, (operation.label, place, response.text[:300])

    return call


def test_hostile_bodies_never_5xx(fuzz_target: tuple[Server, Tenant, list[str]]) -> None:
    """Every operation taking a JSON body, with a hostile value at the top level or in place
    of one of its properties (and inside the nested request of the native API)."""
    server, tenant, _ids = fuzz_target
    headers = {"Authorization": f"Bearer {tenant.key}"}
    tested = []
    for operation in _operations(_schema(server)):
        media = [b.media_type for b in operation.body]
        if "application/json" not in media:
            continue
        props = sorted(
            next(b for b in operation.body if b.media_type == "application/json")
            .definition.get("schema", {})
            .get("properties", {"prompt": {}})
        )
        places = st.sampled_from([None, *props, "request.duration_s", "request.metadata"])
        _hostile_pass(operation, places, headers)()
        tested.append(operation.label)
    # POST /v1/stories reads its raw body; its documented schema brings it in here
    assert {"POST /v1/jobs", "POST /v1/videos", "POST /v1/route", "POST /v1/stories"} <= set(tested)
    print(f"\nschemathesis hostile bodies: {SENT['hostile']} requests over {tested}")


def test_stateful_create_then_follow_links(fuzz_target: tuple[Server, Tenant, list[str]]) -> None:
    """Schemathesis' state machine over the OpenAPI links: a create's id goes to retrieve,
    content and delete. Never a 5xx; and the links do lead somewhere (a retrieve of a
    created job answers 200)."""
    server, tenant, _ids = fuzz_target
    # the event stream of a job that never runs (no worker here) only ends at the timeout
    # Only the job and video operations: the walk is about their links, and routes added
    # elsewhere (stories, provenance, admin) must not thin out the create → retrieve steps.
    schema = (
        _schema(server)
        .include(path_regex=r"^/v1/(jobs|videos)(/|$)")
        .exclude(path_regex=r"/events$")
    )
    headers = {"Authorization": f"Bearer {tenant.key}"}
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[valid-type,misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"headers": headers, "timeout": 30}

        def after_call(self, response: Any, case: schemathesis.Case[Any]) -> None:
            SENT["stateful"] += 1
            STATEFUL_SEEN[(case.operation.label, response.status_code)] += 1
            assert response.status_code < 500, (case.operation.label, response.text[:300])

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            return None  # the one check that matters here ran in after_call

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    linked = {label for (label, status) in STATEFUL_SEEN if status == 200}
    assert linked & {"GET /v1/jobs/{job_id}", "GET /v1/videos/{video_id}"}, STATEFUL_SEEN
    print(
        f"\nschemathesis stateful: {SENT['stateful']} requests; "
        f"{dict(sorted(STATEFUL_SEEN.items()))}"
    )

"""Each routing constraint on its own: what it reads, its boundaries, its reason, and proof
that breaking it (or leaving it out of a cache key) makes the property test fail.

The catalog here is tests/fixtures/mini_catalog.yaml:
alpha-openai (values 4/8/12 s, 720p $0.10/s, 1080p $0.30/s, 24 fps, audio always, one first
frame, premium, US, closed), beta-openai (2–10 s in 1 s steps, 480p/720p, $0.25 per started
6 s clip, 16/24 fps, no audio, no references, standard, CN, open weights), gamma-retired.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest

from tests.conftest import FIXTURES
from tests.routing.test_router_property import PROVEN_ELSEWHERE, run_warm
from vidgate.catalog.loader import Catalog, catalog_from_yaml
from vidgate.routing.compiled import Compiled, RequestView
from vidgate.routing.constraints import (
    CONSTRAINTS,
    NO_ESTIMATE,
    PER_REQUEST_STAGES,
    SHAPE_FIELDS,
    SHAPE_STAGES,
    SIZE_INPUTS,
    Constraint,
    Estimate,
    Stage,
    key_of,
    shape_fields,
    size_fields,
)
from vidgate.routing.estimate import estimate_latency
from vidgate.routing.router import Router, RouterEnv
from vidgate.types import AudioMode, LatencyPercentile, Mode, VideoRequest

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
PNG = "data:image/png;base64,iVBORw0KGgo="
FIRST = {"role": "first_frame", "url": PNG}


def make_router(
    cat: Catalog,
    *,
    now: datetime = NOW,
    creds: Callable[[list[str]], bool] = lambda names: True,
    protocols: frozenset[str] = frozenset({"openai-videos"}),
    headroom: Callable[[str], bool] | None = None,
    constraints: tuple[Constraint, ...] = CONSTRAINTS,
) -> Router:
    env = RouterEnv(
        catalog=cat,
        protocols=protocols,
        has_credentials=creds,
        now=lambda: now,
        headroom=headroom,
    )
    return Router(env, constraints)


def reasons(r: Router, offering: str, **request: Any) -> list[tuple[str, str]]:
    """(code, message) of every rule ``offering`` breaks for the request, in list order."""
    cand = r.check(r.view(VideoRequest(prompt="x", **request)), r.by_id[offering])
    return [(x.code, x.message) for x in cand.rejections]


def routed(r: Router, **request: Any) -> list[str]:
    """The offerings the fast path keeps (routed twice: cold, then from warm caches)."""
    req = VideoRequest(prompt="x", **request)
    first = [c.offering.id for c in r._finish(r.view(req), r._sized(r.view(req)))]
    again = [c.offering.id for c in r._finish(r.view(req), r._sized(r.view(req)))]
    assert first == again
    return sorted(first)


# -- every constraint's reason, exactly ----------------------------------------------------------

#: one request per rule that breaks it on one offering, and the reasons the router must give
LAST = {"role": "last_frame", "url": PNG}
REASONS: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "alpha-openai",
        {"mode": Mode.FIRST_LAST_FRAME, "references": [FIRST, LAST], "duration_s": 4},
        [
            ("mode", "does not do first-last-frame (does text-to-video, image-to-video)"),
            ("references", "cannot take last_frame references"),
        ],
    ),
    (
        "beta-openai",
        {"mode": Mode.FIRST_LAST_FRAME, "references": [FIRST, LAST]},
        [
            ("mode", "does not do first-last-frame (does text-to-video)"),
            ("references", "cannot take first_frame, last_frame references"),
        ],
    ),
    (
        "alpha-openai",
        {"duration_s": 4, "constraints": {"deadline": NOW}},
        [("deadline", "p90 latency 160s would miss the deadline (0s left)")],
    ),
    (
        "beta-openai",
        {"mode": Mode.IMAGE_TO_VIDEO, "references": [FIRST], "duration_s": 6},
        [
            ("mode", "does not do image-to-video (does text-to-video)"),
            ("references", "cannot take first_frame references"),
        ],
    ),
    (
        "alpha-openai",
        {"mode": Mode.IMAGE_TO_VIDEO, "references": [FIRST, FIRST], "duration_s": 4},
        [("references", "takes at most 1 references")],
    ),
    (
        "alpha-openai",
        {"duration_s": 6, "duration_tolerance_s": 1.5},
        [("duration", "6s not available (nearest 8s, max 12s)")],
    ),
    (
        "alpha-openai",
        {"duration_s": 4, "resolution": "480p"},
        [
            ("resolution", "no 480p (has 720p, 1080p)"),
            ("price", "no price listed for 480p at 4s"),
        ],
    ),
    ("beta-openai", {"aspect_ratio": "21:9"}, [("aspect_ratio", "no 21:9 (has 16:9, 1:1, 9:16)")]),
    ("beta-openai", {"fps": 25}, [("fps", "no 25 fps (has 16, 24)")]),
    ("beta-openai", {"audio": AudioMode.REQUIRED}, [("audio", "no native audio")]),
    ("beta-openai", {"negative_prompt": "blur"}, [("negative_prompt", "takes no negative prompt")]),
    ("beta-openai", {"quality": "premium"}, [("quality", "below the premium quality tier")]),
    (
        "beta-openai",
        {"constraints": {"allowed_providers": ["openai"], "blocked_providers": ["compat"]}},
        [
            ("provider", "provider compat not in the allowed list"),
            ("provider", "provider compat is blocked"),
        ],
    ),
    (
        "beta-openai",
        {"constraints": {"allowed_jurisdictions": ["US"]}},
        [("jurisdiction", "vendor jurisdiction CN not allowed")],
    ),
    (
        "alpha-openai",
        {"duration_s": 4, "constraints": {"open_weights_only": True}},
        [("open_weights", "weights are not open")],
    ),
    (
        "beta-openai",
        {"constraints": {"required_strengths": ["physics", "cost", "audio"]}},
        [("strengths", "not known for audio, physics")],
    ),
    (
        "beta-openai",
        {"duration_s": 7, "constraints": {"max_cost_usd": 0.49}},
        [("cost", "costs $0.50, over the $0.49 limit")],
    ),
    (
        "alpha-openai",
        {"duration_s": 4, "constraints": {"max_latency_s": 90, "latency_percentile": "p50"}},
        [("latency", "p50 latency 96s over the 90s limit")],
    ),
    (
        "alpha-openai",
        {"duration_s": 4, "constraints": {"deadline": NOW + timedelta(seconds=60)}},
        [("deadline", "p90 latency 160s would miss the deadline (60s left)")],
    ),
    (
        "alpha-openai",
        {"duration_s": 4, "constraints": {"deadline": NOW - timedelta(seconds=60)}},
        [("deadline", "p90 latency 160s would miss the deadline (0s left)")],
    ),
    (
        "gamma-retired",
        {"duration_s": 4},
        [("availability", "retired by the provider after 2026-09-24")],
    ),
]


@pytest.mark.parametrize(("offering", "request_", "expected"), REASONS)
def test_each_rule_gives_its_reason(
    mini_catalog: Catalog, offering: str, request_: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    r = make_router(mini_catalog)
    assert reasons(r, offering, **request_) == expected
    assert offering not in routed(r, **request_)


def test_the_world_rules_give_their_reasons(mini_catalog: Catalog) -> None:
    no_keys = make_router(mini_catalog, creds=lambda names: False, protocols=frozenset())
    assert reasons(no_keys, "beta-openai") == [
        ("adapter", "no adapter for protocol openai-videos yet"),
        ("credentials", "credential BETA_KEY not set"),
    ]
    assert routed(no_keys) == []
    only_openai = make_router(mini_catalog, creds=lambda names: names == ["OPENAI_API_KEY"])
    assert routed(only_openai, duration_s=4) == ["alpha-openai"]
    two_keys = variant("    credential_env: [BETA_KEY]", "    credential_env: [BETA_KEY, BETA_ORG]")
    r = make_router(two_keys, creds=lambda names: "BETA_ORG" not in names)
    assert reasons(r, "beta-openai") == [("credentials", "credential BETA_KEY + BETA_ORG not set")]


def variant(old: str, new: str) -> Catalog:
    """The mini catalog with the first line ``old`` replaced by ``new`` (lines)."""
    text = (FIXTURES / "mini_catalog.yaml").read_text()
    assert f"{old}\n" in text
    return catalog_from_yaml(text.replace(f"{old}\n", f"{new}\n", 1), "variant")


def test_an_offering_without_a_price_for_the_size_is_not_routed() -> None:
    r = make_router(variant("      - {usd: 0.30, resolutions: [1080p], source: *s}", ""))
    assert reasons(r, "alpha-openai", duration_s=4, resolution="1080p") == [
        ("price", "no price listed for 1080p at 4s")
    ]
    assert routed(r, duration_s=4, resolution="1080p") == []
    assert routed(r, duration_s=4, resolution="720p") == ["alpha-openai", "beta-openai"]
    # no price is the price rule's failure alone, budget or not
    budget = {"max_cost_usd": 0.01}
    assert reasons(r, "alpha-openai", duration_s=4, resolution="1080p", constraints=budget) == [
        ("price", "no price listed for 1080p at 4s")
    ]


def test_disabled_offerings_are_explained() -> None:
    r = make_router(
        variant(
            "    provider_model_id: beta-1", "    provider_model_id: beta-1\n    enabled: false"
        )
    )
    assert reasons(r, "beta-openai") == [("disabled", "disabled in the catalog configuration")]
    assert routed(r, duration_s=4) == ["alpha-openai"]


def test_live_health_blocks_and_is_explained(mini_catalog: Catalog) -> None:
    full = make_router(mini_catalog, headroom=lambda provider: provider != "compat")
    assert routed(full, duration_s=4) == ["alpha-openai"]
    assert reasons(full, "beta-openai", duration_s=4) == [
        ("health", "rate limit for compat reached; no headroom")
    ]
    # without live state the rule is not even asked; with headroom everywhere it passes
    assert routed(make_router(mini_catalog), duration_s=4) == ["alpha-openai", "beta-openai"]
    free = make_router(mini_catalog, headroom=lambda provider: True)
    assert routed(free, duration_s=4) == ["alpha-openai", "beta-openai"]


# -- boundaries: a limit met exactly is met ------------------------------------------------------


def test_duration_tolerance_is_inclusive(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    # alpha has 4 and 8 s: 6 s is 2 s from either (ties go to the longer); beta has 6 s
    assert routed(r, duration_s=6, duration_tolerance_s=2) == ["alpha-openai", "beta-openai"]
    assert routed(r, duration_s=6, duration_tolerance_s=1.99) == ["beta-openai"]
    assert routed(r, duration_s=6, duration_tolerance_s=0) == ["beta-openai"]
    # beyond beta's 10 s maximum: 11 s is within 1 s of it, 11.5 s is not
    assert routed(r, duration_s=11, duration_tolerance_s=1) == ["alpha-openai", "beta-openai"]
    assert routed(r, duration_s=11.5, duration_tolerance_s=1) == ["alpha-openai"]
    assert [c for c, _ in reasons(r, "beta-openai", duration_s=11.5)] == ["duration"]


def test_budget_equal_to_the_price_is_enough(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    # beta at 6 s: one $0.25 clip; alpha at 4 s: $0.40
    assert routed(r, duration_s=6, constraints={"max_cost_usd": 0.25}) == ["beta-openai"]
    assert routed(r, duration_s=6, constraints={"max_cost_usd": 0.2499}) == []
    assert routed(r, duration_s=4, constraints={"max_cost_usd": 0.40}) == [
        "alpha-openai",
        "beta-openai",
    ]
    assert routed(r, duration_s=4, constraints={"max_cost_usd": 0.3999}) == ["beta-openai"]


def test_fps_must_be_one_the_offering_has(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    assert routed(r, duration_s=4, fps=24) == ["alpha-openai", "beta-openai"]
    assert routed(r, duration_s=4, fps=16) == ["beta-openai"]
    assert routed(r, duration_s=4, fps=30) == []


def test_latency_limit_and_deadline_equal_to_the_estimate_are_met(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    # 5 s 720p 16:9 is the catalog's reference clip: latencies are whole seconds, so a limit
    # and a deadline can equal them exactly (a deadline has microsecond resolution)
    req = VideoRequest(prompt="x", duration_s=5)
    for pct in LatencyPercentile:
        lat = estimate_latency(req, mini_catalog.offering("beta-openai"), pct)
        assert lat == int(lat)
        alpha = estimate_latency(req, mini_catalog.offering("alpha-openai"), pct)
        assert alpha > lat + 1  # so only beta is at the boundary
        limit = {"latency_percentile": pct}
        assert routed(r, constraints={**limit, "max_latency_s": lat}) == ["beta-openai"]
        assert routed(r, constraints={**limit, "max_latency_s": lat - 0.01}) == []
        at = {**limit, "deadline": NOW + timedelta(seconds=lat)}
        assert routed(r, constraints=at) == ["beta-openai"]
        early = {**limit, "deadline": NOW + timedelta(seconds=lat - 0.01)}
        assert routed(r, constraints=early) == []


def test_quality_tier_is_a_floor(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    assert routed(r, duration_s=4, quality="standard") == ["alpha-openai", "beta-openai"]
    assert routed(r, duration_s=4, quality="premium") == ["alpha-openai"]
    assert routed(r, duration_s=4, quality="draft") == ["alpha-openai", "beta-openai"]


def test_reference_count_is_a_ceiling(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    one = {"mode": Mode.IMAGE_TO_VIDEO, "duration_s": 4}
    assert routed(r, **one, references=[FIRST]) == ["alpha-openai"]
    assert routed(r, **one, references=[FIRST, FIRST]) == []
    subject = {"role": "subject", "url": PNG}
    assert reasons(r, "alpha-openai", **one, references=[FIRST, subject]) == [
        ("references", "cannot take subject references")
    ]


def test_unclear_licences_do_not_count_as_commercial() -> None:
    r = make_router(
        variant("    license: Apache-2.0", "    license: Apache-2.0\n    commercial_use: null")
    )
    assert reasons(r, "beta-openai", constraints={"commercial_use_required": True}) == [
        ("commercial", "licence does not clearly allow commercial use")
    ]
    assert routed(r, duration_s=4, constraints={"commercial_use_required": True}) == [
        "alpha-openai"
    ]
    assert routed(r, duration_s=4) == ["alpha-openai", "beta-openai"]


def test_availability_includes_its_first_and_last_day(mini_catalog: Catalog) -> None:
    cat = variant(
        "    provider_model_id: beta-1",
        "    provider_model_id: beta-1\n    available_from: 2026-12-01",
    )

    def at(day: date, hour: int) -> Router:
        return make_router(cat, now=datetime(day.year, day.month, day.day, hour, tzinfo=UTC))

    assert routed(at(date(2026, 11, 30), 23), duration_s=4) == ["alpha-openai"]
    assert reasons(at(date(2026, 11, 30), 23), "beta-openai", duration_s=4) == [
        ("availability", "not available before 2026-12-01")
    ]
    assert routed(at(date(2026, 12, 1), 0), duration_s=4) == ["alpha-openai", "beta-openai"]
    # gamma retires after 2026-09-24: still served that day, not the next
    assert "gamma-retired" in routed(at(date(2026, 9, 24), 23), duration_s=4)
    assert "gamma-retired" not in routed(at(date(2026, 9, 25), 0), duration_s=4)
    # one router across the day boundary: the day is part of the shape, never stale
    clock = [datetime(2026, 9, 24, 23, tzinfo=UTC)]
    live = Router(
        RouterEnv(
            catalog=mini_catalog,
            protocols=frozenset({"openai-videos"}),
            has_credentials=lambda names: True,
            now=lambda: clock[0],
        )
    )
    assert "gamma-retired" in routed(live, duration_s=4)
    clock[0] = datetime(2026, 9, 25, 0, 1, tzinfo=UTC)
    assert "gamma-retired" not in routed(live, duration_s=4)


def test_audio_any_accepts_silent_offerings(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    assert routed(r, duration_s=4, audio=AudioMode.ANY) == ["alpha-openai", "beta-openai"]
    assert routed(r, duration_s=4, audio=AudioMode.REQUIRED) == ["alpha-openai"]


# -- what each rule reads ------------------------------------------------------------------------


class Recorder:
    """Stands in for a view, estimate or world and records which attributes a rule touches."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.touched: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.touched.add(name)
        return getattr(self._real, name)


def _views(cat: Catalog) -> list[RequestView]:
    rng = random.Random(3)
    out = []
    for _ in range(200):
        out.append(
            RequestView.of(
                VideoRequest(
                    prompt="x",
                    duration_s=rng.choice([4, 6, 11]),
                    fps=rng.choice([None, 24, 30]),
                    audio=rng.choice(list(AudioMode)),
                    quality=rng.choice([None, "premium"]),
                    negative_prompt=rng.choice([None, "n"]),
                    mode=Mode.IMAGE_TO_VIDEO,
                    references=[FIRST] * rng.randint(1, 2),
                    constraints={
                        "allowed_providers": rng.choice([None, ["openai"]]),
                        "allowed_jurisdictions": rng.choice([None, ["US"]]),
                        "open_weights_only": rng.random() < 0.5,
                        "commercial_use_required": rng.random() < 0.5,
                        "required_strengths": rng.choice([[], ["cost"]]),
                        "max_cost_usd": rng.choice([None, 0.3]),
                        "max_latency_s": rng.choice([None, 100]),
                        "deadline": rng.choice([None, NOW + timedelta(seconds=100)]),
                    },
                ),
                NOW + timedelta(days=rng.choice([0, -60])),
            )
        )
    return out


@pytest.mark.parametrize("k", CONSTRAINTS, ids=lambda k: f"{k.code}:{k.ok.__name__}")
def test_each_rule_reads_only_what_it_declares(mini_catalog: Catalog, k: Constraint) -> None:
    """The cache keys are built from ``reads``; a rule that read more would be cached wrongly."""
    r = make_router(mini_catalog, headroom=lambda p: p != "compat")
    touched_view: set[str] = set()
    touched_estimate: set[str] = set()
    touched_world: set[str] = set()
    for v in _views(mini_catalog):
        for c in r.compiled:
            view, world = Recorder(v), Recorder(r)
            e = Recorder(NO_ESTIMATE if k.stage in SHAPE_STAGES else r.estimate(v, c))
            k.ok(cast(RequestView, view), c, cast(Estimate, e), cast(Router, world))
            touched_view |= view.touched
            touched_estimate |= e.touched
            touched_world |= world.touched
    assert touched_view <= set(k.reads)
    if k.stage in SHAPE_STAGES:
        assert touched_estimate == set()  # decided before any estimate exists
    if k.stage is Stage.SIZE:
        assert touched_estimate <= {"duration", "audio", "cost"}  # what SIZE_INPUTS determine
    if k.stage is Stage.SHAPE:
        assert touched_world == set()  # the shape alone decides it


def test_the_size_estimate_reads_only_its_declared_inputs(mini_catalog: Catalog) -> None:
    r = make_router(mini_catalog)
    for v in _views(mini_catalog):
        for c in r.compiled:
            view = Recorder(v)
            r._size_estimate(cast(RequestView, view), c)
            assert view.touched <= set(SIZE_INPUTS)


@pytest.mark.parametrize(
    "k", [k for k in CONSTRAINTS if k.needed is not None], ids=lambda k: k.code
)
def test_a_rule_not_asked_for_passes_every_offering(mini_catalog: Catalog, k: Constraint) -> None:
    """The hot path skips a rule whose needed() is false; that is sound only if the rule
    would have passed anyway."""
    r = make_router(mini_catalog)
    skipped = 0
    for v in _views(mini_catalog):
        if k.applies(v, r):
            continue
        for c in r.compiled:
            assert k.ok(v, c, r.estimate(v, c), r)
            skipped += 1
    assert skipped  # the views include requests that do not ask for it
    # and where the request does ask, the rule is applied
    assert any(k.applies(v, r) for v in _views(mini_catalog)) or k.code == "health"


def test_no_key_fields_give_one_constant_key(mini_catalog: Catalog) -> None:
    views = _views(mini_catalog)
    assert {key_of(())(v) for v in views} == {()}
    assert len({key_of(("fps",))(v) for v in views}) == 3  # None, 24, 30


def test_the_stages_partition_every_rule() -> None:
    later = set(PER_REQUEST_STAGES)
    assert SHAPE_STAGES | {Stage.SIZE} | later == set(Stage)
    assert not (SHAPE_STAGES & later)
    assert Stage.SIZE not in SHAPE_STAGES | later


def test_cache_keys_are_the_union_of_what_the_cached_rules_read() -> None:
    shape_reads = {f for k in CONSTRAINTS if k.stage in SHAPE_STAGES for f in k.reads}
    assert set(SHAPE_FIELDS) == shape_reads
    assert {"today", "fps", "allowed_jurisdictions", "roles", "n_refs"} <= shape_reads
    assert set(size_fields(CONSTRAINTS)) == shape_reads | {"duration", "tolerance", *SIZE_INPUTS}


# -- breaking any one rule fails the property test -----------------------------------------------


def _always(v: RequestView, c: Compiled, e: Estimate, w: object) -> bool:
    return True


def _never_needed(v: RequestView, w: object) -> bool:
    return False


def _with(k: Constraint, **change: Any) -> tuple[Constraint, ...]:
    """The constraint list with ``k`` changed (the others untouched, in place)."""
    return tuple(dataclasses.replace(x, **change) if x is k else x for x in CONSTRAINTS)


#: the rules the property test's corpus can break (the others have their own unit tests above)
#: no shipped offering has an available_from date: test_availability_includes_its_first_and_
#: last_day proves that rule on the mini catalog
NOT_IN_SHIPPED_CATALOG = {"_released"}
BREAKABLE = [
    k
    for k in CONSTRAINTS
    if k.code not in PROVEN_ELSEWHERE and k.ok.__name__ not in NOT_IN_SHIPPED_CATALOG
]


def _name(k: Constraint) -> str:
    return k.ok.__name__.strip("_")


@pytest.mark.parametrize("k", BREAKABLE, ids=_name)
def test_switching_off_any_rule_fails_the_property(k: Constraint) -> None:
    with pytest.raises(AssertionError):
        run_warm(1_500, seed=20261121, constraints=_with(k, ok=_always))


def _drop(k: Constraint, field: str) -> tuple[Constraint, ...]:
    return _with(k, reads=tuple(f for f in k.reads if f != field))


#: every (rule, field) whose omission really changes a cache key (a field another cached rule
#: also reads, or that the size estimate needs anyway, stays in the key)
KEYED = [
    (k, f)
    for k in CONSTRAINTS
    for f in k.reads
    if shape_fields(_drop(k, f)) != SHAPE_FIELDS
    or size_fields(_drop(k, f)) != size_fields(CONSTRAINTS)
]


@pytest.mark.parametrize(("k", "field"), KEYED, ids=[f"{_name(k)}-{f}" for k, f in KEYED])
def test_leaving_any_field_out_of_a_cache_key_fails_the_property(k: Constraint, field: str) -> None:
    """Were a rule to under-declare what it reads, a warm cache would serve a neighbouring
    shape's verdicts: the warm property test must notice."""
    with pytest.raises(AssertionError):
        run_warm(1_500, seed=20261121, constraints=_drop(k, field))


def test_every_cache_key_field_is_tried() -> None:
    # "roles" and "today" are each read by two rules (references; retired and not yet
    # released), so dropping one declaration leaves the field in the key
    assert {f for _, f in KEYED} == set(SHAPE_FIELDS) - {"roles", "today"} | {"tolerance"}


@pytest.mark.parametrize("k", [k for k in BREAKABLE if k.needed is not None], ids=_name)
def test_skipping_any_asked_for_rule_fails_the_property(k: Constraint) -> None:
    with pytest.raises(AssertionError):
        run_warm(1_500, seed=20261121, constraints=_with(k, needed=_never_needed))


def test_a_views_shape_key_holds_its_shape_not_its_size() -> None:
    def view(**kw: Any) -> RequestView:
        return RequestView.of(VideoRequest(prompt="x", **kw), NOW)

    assert view(duration_s=4).shape_key() == view(duration_s=8).shape_key()
    assert view(fps=24).shape_key() != view(fps=25).shape_key()
    assert (
        view().shape_key()
        != RequestView.of(VideoRequest(prompt="x"), NOW + timedelta(days=1)).shape_key()
    )

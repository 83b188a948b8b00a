"""The shipped catalog: complete, sourced, valid, and enforcing availability windows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.conftest import require_shared
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Source
from vidgate.errors import ConfigError, NoRoute
from vidgate.routing.router import Router, RouterEnv
from vidgate.types import VideoRequest

CATALOG = load_catalog()

#: every video model in shared/seeds/ a builder can call or self-host (issue: Foundation §3)
SEED_MODELS = {
    "veo-3.1",
    "veo-3.1-fast",
    "sora-2",
    "sora-2-pro",
    "runway-gen-4.5-turbo",
    "runway-gen-4.5-aleph",
    "runway-gen-4",
    "kling-3.0",
    "seedance-2.0",
    "luma-ray-3.14",
    "luma-ray-3",
    "hailuo-2.3",
    "hailuo-2.3-fast",
    "pika-2.2",
    "grok-imagine",
    "wan-2.6",
    "wan-2.2",
    "wan-2.1",
    "ltx-2",
    "cogvideox-5b",
    "cogvideox-2b",
    "hunyuanvideo",
}
#: routes the seeds name for them (model -> providers that must each have an offering)
SEED_ROUTES = {
    "veo-3.1": {"google-gemini", "google-vertex"},
    "veo-3.1-fast": {"google-gemini", "google-vertex"},
    "sora-2": {"openai"},
    "sora-2-pro": {"openai"},
    "kling-3.0": {"kling", "fal"},
    "seedance-2.0": {"fal", "byteplus"},
    "wan-2.6": {"fal"},
    "wan-2.2": {"self-hosted"},
    "wan-2.1": {"self-hosted"},
    "ltx-2": {"fal", "self-hosted"},
    "cogvideox-5b": {"self-hosted"},
    "cogvideox-2b": {"self-hosted"},
    "hunyuanvideo": {"self-hosted"},
    "grok-imagine": {"xai"},
    "hailuo-2.3": {"minimax"},
}
KNOWN_PROTOCOLS = {
    "openai-videos",
    "gemini-veo",
    "vertex-veo",
    "runway",
    "luma",
    "minimax",
    "kling",
    "fal-queue",
    "replicate",
    "xai-video",
    "byteplus-ark",
    "local-diffusers",
}


def all_sources() -> list[tuple[str, Source]]:
    out: list[tuple[str, Source]] = []
    for m in CATALOG.models.values():
        out += [(f"model {m.id}", m.source), (f"model {m.id} quality", m.quality.source)]
    for o in CATALOG.offerings.values():
        out += [
            (f"{o.id} capabilities", o.capabilities.source),
            (f"{o.id} latency", o.latency.source),
        ]
        out += [(f"{o.id} price[{i}]", r.source) for i, r in enumerate(o.price)]
    return out


def test_every_seed_model_is_present() -> None:
    missing = SEED_MODELS - set(CATALOG.models)
    assert not missing, f"models missing from the catalog: {sorted(missing)}"


def test_seed_routes_have_offerings() -> None:
    for model, providers in SEED_ROUTES.items():
        have = {o.provider for o in CATALOG.by_model[model]}
        assert providers <= have, f"{model}: missing routes {sorted(providers - have)}"


def test_models_without_an_api_have_no_offerings() -> None:
    assert "movie-gen" in CATALOG.models
    assert CATALOG.by_model["movie-gen"] == []


def test_every_number_names_a_source_found_verbatim() -> None:
    shared = require_shared()
    texts: dict[str, str] = {}
    for doc in {s.doc for _, s in all_sources()}:
        if doc.startswith("seed:"):
            [path] = list((shared / "seeds").glob(f"{doc[5:]}_*.txt"))
        elif doc == "provider-apis":
            path = shared / "reference" / "provider-apis.md"
        else:
            continue  # an official URL: cannot be fetched offline
        texts[doc] = Path(path).read_text("utf-8")
    bad = [
        f"{where}: {s.doc} has no {s.section!r}"
        for where, s in all_sources()
        if s.doc in texts and s.section not in texts[s.doc]
    ]
    assert not bad, "\n".join(bad[:20])


def test_sources_are_dated_and_not_in_the_future() -> None:
    today = datetime.now(UTC).date()
    assert all(s.as_of <= today for _, s in all_sources())


def test_offerings_use_known_protocols_and_sane_numbers() -> None:
    for o in CATALOG.offerings.values():
        assert o.protocol in KNOWN_PROTOCOLS, o.id
        assert o.capabilities.modes, o.id
        assert o.capabilities.resolutions, o.id
        assert 0 < o.latency.p50 < 3600, o.id
        for rule in o.price:
            usd = (
                rule.usd if rule.usd is not None else (rule.credits or 0) * (o.usd_per_credit or 0)
            )
            assert 0 <= usd <= 10, f"{o.id}: implausible price {usd}"


def test_sora_end_date_is_recorded_and_enforced() -> None:
    sora = [o for o in CATALOG.offerings.values() if o.model.startswith("sora-2")]
    assert sora
    assert all(o.available_until == date(2026, 9, 24) for o in sora)

    def route_on(day: datetime) -> list[str]:
        env = RouterEnv(
            catalog=CATALOG,
            protocols=frozenset(KNOWN_PROTOCOLS),
            has_credentials=lambda _: True,
            now=lambda: day,
        )
        req = VideoRequest(prompt="x", duration_s=4, resolution="720p", aspect_ratio="16:9")
        try:
            plan = Router(env).route(req, pinned=[o.id for o in sora])
        except NoRoute:
            return []
        return [c.offering.id for c in plan.ranked]

    assert route_on(datetime(2026, 6, 1, tzinfo=UTC)), "Sora must route before its end date"
    assert route_on(datetime(2026, 9, 25, 0, 1, tzinfo=UTC)) == []


def test_override_file_patches_disables_and_adds(tmp_path: Path) -> None:
    some = next(iter(CATALOG.offerings.values()))
    other = list(CATALOG.offerings)[1]
    override = tmp_path / "catalog.yaml"
    override.write_text(f"""
offerings:
  {some.id}:
    price:
      - {{usd: 0.011, source: {{doc: user-config, section: contract, as_of: 2026-10-01}}}}
  {other}: {{enabled: false}}
add_offerings:
  - {some.model_dump_json(exclude={"id"})[:-1]}, "id": "my-private-route"}}
""")
    cat = load_catalog(override)
    assert cat.offering(some.id).price[0].usd == 0.011
    assert cat.offering(other).enabled is False
    assert "my-private-route" in cat.offerings
    assert len(cat.offerings) == len(CATALOG.offerings) + 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("offerings:\n  no-such-offering: {enabled: false}\n", "no such id to override"),
        ("prices: {}\n", "unknown section(s) ['prices']"),
        ("add_models:\n  - {id: x}\n", "models[x].name: Field required"),
        ("offerings: [1, 2]\n", "offerings must map ids to patches"),
        ("offerings: {\n", "not valid YAML"),
    ],
)
def test_bad_override_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_catalog(f)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_price_in_override_names_offering_and_field(tmp_path: Path) -> None:
    oid = next(iter(CATALOG.offerings))
    f = tmp_path / "bad.yaml"
    f.write_text(f"offerings:\n  {oid}:\n    latency: {{p50: 10, p90: 5}}\n")
    with pytest.raises(ConfigError, match=rf"offerings\[{oid}\]\.latency"):
        load_catalog(f)

"""Load and validate the catalog: package data first, then an optional user override file.

The override file (YAML) can change prices for negotiated rates, disable offerings, and add
offerings or models::

    offerings:
      veo-3.1-fast-gemini:            # patch an existing offering (deep merge)
        price:
          - {usd: 0.12, source: {doc: user-config, section: contract 2026-10, as_of: 2026-10-01}}
      pika-2.2-fal: {enabled: false}  # disable one
    add_offerings: [ {...full offering...} ]
    add_models: [ {...full model...} ]
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vidgate.catalog.schema import CatalogData, Model, Offering
from vidgate.errors import ConfigError


class Catalog:
    """An immutable, indexed view over validated catalog data."""

    def __init__(self, data: CatalogData) -> None:
        self.data = data
        self.models: dict[str, Model] = {}
        self.offerings: dict[str, Offering] = {}
        for m in data.models:
            if m.id in self.models:
                raise ConfigError(f"catalog: model id {m.id!r} appears twice")
            self.models[m.id] = m
        for o in data.offerings:
            if o.id in self.offerings:
                raise ConfigError(f"catalog: offering id {o.id!r} appears twice")
            if o.model not in self.models:
                raise ConfigError(f"catalog: offering {o.id!r} names unknown model {o.model!r}")
            self.offerings[o.id] = o
        self.hints = dict(data.hints)
        self.providers = dict(data.providers)
        self.aliases = dict(data.aliases)
        self.by_model: dict[str, list[Offering]] = {m: [] for m in self.models}
        for o in data.offerings:
            self.by_model[o.model].append(o)

    def offering(self, offering_id: str) -> Offering:
        try:
            return self.offerings[offering_id]
        except KeyError:
            close = _closest(offering_id, self.offerings)
            hint = f"; did you mean {close!r}?" if close else "; see `vidgate models`"
            raise ConfigError(f"unknown offering {offering_id!r}{hint}") from None

    def model(self, model_id: str) -> Model:
        try:
            return self.models[model_id]
        except KeyError:
            close = _closest(model_id, [*self.models, *self.offerings])
            hint = f"; did you mean {close!r}?" if close else "; see `vidgate models`"
            raise ConfigError(f"unknown model {model_id!r}{hint}") from None

    def model_of(self, offering: Offering) -> Model:
        return self.models[offering.model]


def _closest(name: str, choices: Iterable[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _read_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def package_data() -> dict[str, Any]:
    """The raw catalog shipped with the package: models.yaml plus offerings/*.yaml."""
    root = resources.files("vidgate.catalog") / "data"
    try:
        models = _read_yaml((root / "models.yaml").read_text("utf-8"), "models.yaml")
        hints = _read_yaml((root / "hints.yaml").read_text("utf-8"), "hints.yaml")
        providers = _read_yaml((root / "providers.yaml").read_text("utf-8"), "providers.yaml")
        aliases = _read_yaml((root / "aliases.yaml").read_text("utf-8"), "aliases.yaml")
        offerings: list[Any] = []
        for entry in sorted((root / "offerings").iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".yaml"):
                doc = _read_yaml(entry.read_text("utf-8"), f"offerings/{entry.name}")
                offerings.extend(doc.get("offerings", []) if doc else [])
    except OSError as e:
        raise ConfigError(f"the packaged catalog is missing or unreadable: {e}") from None
    return {
        "models": (models or {}).get("models", []),
        "offerings": offerings,
        "hints": (hints or {}).get("hints", {}),
        "providers": (providers or {}).get("providers", {}),
        "aliases": (aliases or {}).get("aliases", {}),
    }


def catalog_from_yaml(text: str, where: str = "catalog") -> Catalog:
    """Build a catalog from one YAML document with ``models`` and ``offerings`` (tests, tools)."""
    raw = _read_yaml(text, where) or {}
    try:
        return Catalog(CatalogData.model_validate(raw))
    except ValidationError as e:
        raise ConfigError(_validation_message(e, raw, where)) from None


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(raw: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(override) - {
        "offerings",
        "models",
        "add_offerings",
        "add_models",
        "providers",
        "aliases",
    }
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {sorted(unknown)}; "
            "use offerings, models, add_offerings, add_models, providers, aliases"
        )
    models: list[Any] = list(raw["models"])
    offerings: list[Any] = list(raw["offerings"])
    providers: dict[str, Any] = dict(raw.get("providers", {}))
    out: dict[str, Any] = {
        "models": models,
        "offerings": offerings,
        "hints": dict(raw.get("hints", {})),
        "providers": providers,
        "aliases": {**raw.get("aliases", {}), **(override.get("aliases") or {})},
    }
    for section in ("models", "offerings"):
        patches = override.get(section) or {}
        if not isinstance(patches, dict):
            raise ConfigError(f"{where}: {section} must map ids to patches")
        index = {item["id"]: i for i, item in enumerate(out[section])}
        for oid, patch in patches.items():
            if oid not in index:
                close = _closest(oid, index)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise ConfigError(f"{where}: {section}.{oid}: no such id to override{hint}")
            out[section][index[oid]] = _deep_merge(out[section][index[oid]], patch or {})
    for name, patch in (override.get("providers") or {}).items():
        base = providers.get(name) or {
            "source": {
                "doc": "user-config",
                "section": str(where),
                "as_of": date.today().isoformat(),
            }
        }
        providers[name] = _deep_merge(base, patch or {})
    models.extend(override.get("add_models") or [])
    offerings.extend(override.get("add_offerings") or [])
    return out


def _validation_message(e: ValidationError, raw: dict[str, Any], where: str) -> str:
    err = e.errors()[0]
    loc = list(err["loc"])
    label = ".".join(str(x) for x in loc)
    # Name the item by id rather than list index: "offerings[kling-3.0-fal].price.0.usd"
    if len(loc) >= 2 and isinstance(loc[1], int):
        try:
            item_id = raw[str(loc[0])][loc[1]].get("id", loc[1])
            label = f"{loc[0]}[{item_id}]." + ".".join(str(x) for x in loc[2:])
        except (KeyError, IndexError, AttributeError):
            pass
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{where}: {label}: {err['msg']}{more}"


def load_catalog(override_path: Path | None = None) -> Catalog:
    raw = package_data()
    where = "catalog"
    if override_path is not None:
        if not override_path.exists():
            raise ConfigError(f"catalog override {override_path} does not exist")
        override = _read_yaml(override_path.read_text("utf-8"), str(override_path)) or {}
        if not isinstance(override, dict):
            raise ConfigError(f"{override_path}: expected a mapping at top level")
        raw = apply_overrides(raw, override, str(override_path))
        where = f"catalog (with {override_path})"
    try:
        data = CatalogData.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_validation_message(e, raw, where)) from None
    return Catalog(data)

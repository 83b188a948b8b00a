"""Print the README's model table from the catalog: every model, its offerings, the adapter
that serves each, and its state (working / retired by provider / disabled / no public API)."""

from __future__ import annotations

from datetime import UTC, datetime

from vidgate.catalog.loader import load_catalog
from vidgate.providers.base import registry


def main() -> None:
    cat = load_catalog()
    adapters = registry()
    today = datetime.now(UTC).date()
    print("| model | vendor | offering | provider | adapter | state |")
    print("|---|---|---|---|---|---|")
    for m in sorted(cat.models.values(), key=lambda m: m.name.lower()):
        offerings = cat.by_model[m.id]
        if not offerings:
            print(f"| {m.name} | {m.vendor} | — | — | — | no public API |")
            continue
        for o in offerings:
            if o.protocol not in adapters:
                state = "needs a local GPU adapter (self-hosted, disabled)"
            elif o.available_until and today > o.available_until:
                state = f"retired by provider ({o.available_until})"
            elif (o.adapter_options or {}).get("unavailable"):
                state = f"unavailable: {o.adapter_options['unavailable']}"
            elif o.protocol == "local-diffusers":
                state = "enabled when a `vidgate model serve` server has it (sandbox-verified)"
            elif not o.enabled:
                state = "disabled (see catalog note)"
            else:
                state = "working (sandbox-verified)"
            print(f"| {m.name} | {m.vendor} | `{o.id}` | {o.provider} | `{o.protocol}` | {state} |")


if __name__ == "__main__":
    main()

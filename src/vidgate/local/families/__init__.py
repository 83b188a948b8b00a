"""The family registry: one module per family, one entry here.

``detect`` picks the family from model_index.json's ``_class_name`` (Wan 2.2 before Wan 2.1:
they share pipeline classes and differ by components). ``NO_PIPELINE`` names catalog models
diffusers has no pipeline for; the gateway shows the reason on their disabled offerings.
"""

from __future__ import annotations

from vidgate.local.families import cogvideox, hunyuanvideo15, ltx2, wan, wan22
from vidgate.local.families.base import Family, ModelIndex

FAMILIES: tuple[Family, ...] = (
    wan22.FAMILY,
    wan.FAMILY,
    ltx2.FAMILY,
    cogvideox.FAMILY,
    hunyuanvideo15.FAMILY,
)

#: catalog model id -> why no model server can serve it
NO_PIPELINE: dict[str, str] = {
    "wan-2.6": "diffusers 0.42 has no Wan 2.6 pipeline (no open Wan 2.6 weights in diffusers "
    "format): no model server can serve it",
}

#: the reason for Wan 2.6, for the gateway's disabled offering
WAN_26_DISABLED_REASON = NO_PIPELINE["wan-2.6"]


def supported_pipelines() -> list[str]:
    return sorted({cls for f in FAMILIES for cls in f.pipelines})


def detect(index: ModelIndex) -> Family | None:
    for family in FAMILIES:
        if family.matches(index):
            return family
    return None


def by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)

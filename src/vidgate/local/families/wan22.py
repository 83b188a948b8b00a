"""Wan 2.2: the two-expert A14B (``transformer`` for high-noise steps, ``transformer_2`` below
``boundary_ratio``; the pipeline switches experts itself) at 16 fps, and TI2V-5B (expanded
timesteps, 24 fps, 121 frames, 1280x704). Same classes and shape rules as Wan 2.1."""

from __future__ import annotations

from typing import Any

from vidgate.local.families.base import Family, ModelIndex
from vidgate.local.families.wan import PIPELINES, is_wan22, wan_constraints, wan_kwargs
from vidgate.local.protocol import Constraints


def _is_ti2v(pipe: Any) -> bool:
    return bool(pipe.config.get("expand_timesteps"))


def constraints(pipe: Any) -> Constraints:
    if _is_ti2v(pipe):
        c = wan_constraints(pipe, "Wan 2.2 TI2V", fps=24.0, max_frames=121)
        return Constraints(**{**c.__dict__, "default_size": (1280, 704), "default_frames": 121})
    return wan_constraints(pipe, "Wan 2.2", fps=16.0, max_frames=81)


def _matches(index: ModelIndex) -> bool:
    return index.get("_class_name") in PIPELINES and is_wan22(index)


FAMILY = Family(
    name="wan22",
    label="Wan 2.2",
    pipelines=PIPELINES,
    matches=_matches,
    catalog_model=lambda pipe: "wan-2.2",
    constraints=constraints,
    call_kwargs=wan_kwargs,
)

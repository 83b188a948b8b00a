"""Wan 2.1 (WanPipeline, WanImageToVideoPipeline): frames 4k+1, sides divisible by 16,
16 fps, up to 81 frames; 832x480 by default (the 1.3B and 14B 480p checkpoints)."""

from __future__ import annotations

from typing import Any

from vidgate.local.families.base import (
    IMAGE_TO_VIDEO,
    TEXT_TO_VIDEO,
    Family,
    ModelIndex,
    component,
    vae_rules,
)
from vidgate.local.protocol import Constraints, JobSpec

PIPELINES = {"WanPipeline": TEXT_TO_VIDEO, "WanImageToVideoPipeline": IMAGE_TO_VIDEO}


def is_wan22(index: ModelIndex) -> bool:
    """Wan 2.2 ships the same pipeline classes; its checkpoints carry a second expert
    (A14B: ``transformer_2`` + ``boundary_ratio``) or expanded timesteps (TI2V-5B)."""
    return (
        component(index, "transformer_2")
        or index.get("boundary_ratio") is not None
        or bool(index.get("expand_timesteps"))
    )


def wan_constraints(pipe: Any, label: str, fps: float, max_frames: int) -> Constraints:
    temporal, side = vae_rules(pipe)
    default_frames = min(81, max_frames)
    return Constraints(
        family_label=label,
        frame_step=temporal,
        side_multiple=side,
        max_frames=max_frames,
        fps=fps,
        fps_free=False,
        default_size=(832, 480),
        default_frames=default_frames - (default_frames - 1) % temporal,
    )


def wan_kwargs(pipe: Any, job: JobSpec) -> dict[str, Any]:
    return {}


FAMILY = Family(
    name="wan",
    label="Wan 2.1",
    pipelines=PIPELINES,
    matches=lambda index: index.get("_class_name") in PIPELINES and not is_wan22(index),
    catalog_model=lambda pipe: "wan-2.1",
    constraints=lambda pipe: wan_constraints(pipe, "Wan 2.1", fps=16.0, max_frames=81),
    call_kwargs=wan_kwargs,
)

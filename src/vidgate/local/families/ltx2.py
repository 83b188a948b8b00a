"""LTX-2 (LTX2Pipeline, LTX2ImageToVideoPipeline): video and audio in one pass. Frames 8k+1,
sides divisible by 32 on the real model; any frame rate (the pipeline takes ``frame_rate``)."""

from __future__ import annotations

import inspect
from typing import Any

from vidgate.local.families.base import IMAGE_TO_VIDEO, TEXT_TO_VIDEO, Family, vae_rules
from vidgate.local.protocol import Constraints, JobSpec

PIPELINES = {"LTX2Pipeline": TEXT_TO_VIDEO, "LTX2ImageToVideoPipeline": IMAGE_TO_VIDEO}


def constraints(pipe: Any) -> Constraints:
    temporal, side = vae_rules(pipe)
    return Constraints(
        family_label="LTX-2",
        frame_step=temporal,
        side_multiple=side,
        max_frames=257,
        fps=24.0,
        fps_free=True,
        default_size=(768, 512),
        default_frames=121,
    )


def call_kwargs(pipe: Any, job: JobSpec) -> dict[str, Any]:
    kw: dict[str, Any] = {"frame_rate": job.fps}
    # Spatio-temporal guidance perturbs fixed block indices (default [28]); a checkpoint with
    # fewer blocks would fail on them, so STG is off there rather than silently wrong.
    default = inspect.signature(pipe.__call__).parameters["spatio_temporal_guidance_blocks"]
    blocks = default.default or []
    if any(b >= pipe.transformer.config.num_layers for b in blocks):
        kw.update(spatio_temporal_guidance_blocks=None, stg_scale=0.0, audio_stg_scale=0.0)
    return kw


FAMILY = Family(
    name="ltx2",
    label="LTX-2",
    pipelines=PIPELINES,
    matches=lambda index: index.get("_class_name") in PIPELINES,
    catalog_model=lambda pipe: "ltx-2",
    constraints=constraints,
    call_kwargs=call_kwargs,
    makes_audio=True,
)

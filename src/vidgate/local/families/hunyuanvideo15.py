"""HunyuanVideo 1.5 (HunyuanVideo15Pipeline, HunyuanVideo15ImageToVideoPipeline): frames 4k+1,
sides divisible by 16, 24 fps, up to 121 frames. Classifier-free guidance is a ``guider``
component (``__call__`` takes no guidance_scale); the I2V pipeline sizes itself from the image."""

from __future__ import annotations

from typing import Any

from vidgate.local.families.base import IMAGE_TO_VIDEO, TEXT_TO_VIDEO, Family, vae_rules
from vidgate.local.protocol import Constraints, JobSpec

PIPELINES = {
    "HunyuanVideo15Pipeline": TEXT_TO_VIDEO,
    "HunyuanVideo15ImageToVideoPipeline": IMAGE_TO_VIDEO,
}


def constraints(pipe: Any) -> Constraints:
    temporal, side = vae_rules(pipe)
    return Constraints(
        family_label="HunyuanVideo 1.5",
        frame_step=temporal,
        side_multiple=side,
        max_frames=121,
        fps=24.0,
        fps_free=False,
        default_size=(848, 480),
        default_frames=121,
    )


def call_kwargs(pipe: Any, job: JobSpec) -> dict[str, Any]:
    return {}


def set_guidance(pipe: Any, scale: float) -> None:
    pipe.guider.guidance_scale = scale


FAMILY = Family(
    name="hunyuanvideo15",
    label="HunyuanVideo 1.5",
    pipelines=PIPELINES,
    matches=lambda index: index.get("_class_name") in PIPELINES,
    catalog_model=lambda pipe: "hunyuanvideo",
    constraints=constraints,
    call_kwargs=call_kwargs,
    set_guidance=set_guidance,
    sized_by_image=frozenset({"HunyuanVideo15ImageToVideoPipeline"}),
)

"""CogVideoX 2B / 5B / 5B-I2V (CogVideoXPipeline, CogVideoXImageToVideoPipeline): exactly the
transformer's ``sample_frames`` (49 on the real models) at 8 fps; sides divisible by 16,
720x480 by default (the trained ``sample_width/height`` × the VAE's compression)."""

from __future__ import annotations

from typing import Any

from vidgate.local.families.base import IMAGE_TO_VIDEO, TEXT_TO_VIDEO, Family, vae_rules
from vidgate.local.protocol import Constraints, JobSpec

PIPELINES = {
    "CogVideoXPipeline": TEXT_TO_VIDEO,
    "CogVideoXImageToVideoPipeline": IMAGE_TO_VIDEO,
}


def constraints(pipe: Any) -> Constraints:
    temporal, side = vae_rules(pipe)
    cfg = pipe.transformer.config
    spatial = int(pipe.vae_scale_factor_spatial)
    frames = int(cfg.sample_frames)
    return Constraints(
        family_label="CogVideoX",
        frame_step=temporal,
        side_multiple=side,
        max_frames=frames,
        fps=8.0,
        fps_free=False,
        default_size=(int(cfg.sample_width) * spatial, int(cfg.sample_height) * spatial),
        default_frames=frames,
        fixed_frames=frames,
    )


def catalog_model(pipe: Any) -> str:
    # The 5B models use rotary positions; the 2B one fixed sincos embeddings.
    rotary = pipe.transformer.config.get("use_rotary_positional_embeddings", False)
    return "cogvideox-5b" if rotary else "cogvideox-2b"


def call_kwargs(pipe: Any, job: JobSpec) -> dict[str, Any]:
    # The prompt is padded to what the transformer was trained on (226 on the real models).
    return {"max_sequence_length": int(pipe.transformer.config.max_text_seq_length)}


FAMILY = Family(
    name="cogvideox",
    label="CogVideoX",
    pipelines=PIPELINES,
    matches=lambda index: index.get("_class_name") in PIPELINES,
    catalog_model=catalog_model,
    constraints=constraints,
    call_kwargs=call_kwargs,
)

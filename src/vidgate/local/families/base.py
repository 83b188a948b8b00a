"""What a model family is: which pipelines it serves, the shapes they take, and how a
request becomes that pipeline's ``__call__`` arguments. One module per family, no torch at
import (the rules are readable without the ``local`` extra)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidgate.local.protocol import Constraints, JobSpec

TEXT_TO_VIDEO = "text_to_video"
IMAGE_TO_VIDEO = "image_to_video"

#: model_index.json as read from disk
ModelIndex = dict[str, Any]


def component(index: ModelIndex, name: str) -> bool:
    """Whether model_index.json names a component (optional ones are stored as null)."""
    spec = index.get(name)
    return isinstance(spec, list) and len(spec) == 2 and spec[0] is not None


@dataclass(frozen=True)
class Family:
    name: str  # wan | wan22 | ltx2 | cogvideox | hunyuanvideo15 (the protocol's `family`)
    label: str  # for messages: "Wan 2.1"
    pipelines: dict[str, str]  # pipeline class name -> mode
    matches: Callable[[ModelIndex], bool]
    catalog_model: Callable[[Any], str]  # loaded pipeline -> catalog model id
    constraints: Callable[[Any], Constraints]  # from the loaded pipeline's components
    call_kwargs: Callable[[Any, JobSpec], dict[str, Any]]  # pipe, job -> family-only kwargs
    #: HunyuanVideo 1.5 keeps CFG in a ``guider`` component: set it there (None: use kwargs)
    set_guidance: Callable[[Any, float], None] | None = None
    #: I2V pipelines that take their size from the image (HunyuanVideo 1.5 I2V) get no
    #: height/width; the image is resized to the fitted shape instead
    sized_by_image: frozenset[str] = frozenset()
    makes_audio: bool = False

    def mode(self, pipeline_class: str) -> str:
        return self.pipelines[pipeline_class]


def vae_rules(pipe: Any) -> tuple[int, int]:
    """(temporal compression, spatial compression × patch) of a loaded pipeline.

    Read from the components rather than hard-coded, so the real models give the published
    rules (Wan 4k+1 and %16, LTX-2 8k+1 and %32) and the tiny test ones their own."""
    temporal = int(
        getattr(pipe, "vae_scale_factor_temporal", 0)
        or getattr(pipe, "vae_temporal_compression_ratio", 1)
    )
    spatial = int(
        getattr(pipe, "vae_scale_factor_spatial", 0)
        or getattr(pipe, "vae_spatial_compression_ratio", 1)
    )
    patch = pipe.transformer.config.get("patch_size", 1)
    patch_hw = int(patch[-1] if isinstance(patch, list | tuple) else patch)
    return temporal, spatial * patch_hw

"""Prompt adherence as CLIP similarity between the prompt and sampled frames.

The model is a transformers CLIP checkpoint in a local folder (``VIDGATE_CLIP_MODEL``), loaded
with ``from_pretrained`` exactly as real weights are; nothing is downloaded (the Hub is only
consulted when ``HF_HUB_OFFLINE`` is unset, and the path is a folder anyway). torch and
transformers come with the ``local`` extra and are imported only here, only when a request
asks for CLIP.

Score mapping (0–10). CLIP's cosine similarity between an image and a caption sits in a narrow
band: for ViT-B/32 and ViT-L/14, unrelated pairs score about 0.10–0.18 and good matches
0.28–0.35 (the CLIPScore paper, Hessel et al. 2021, rescales by 2.5 for the same reason). So

    score = 10 · clamp((cos − COS_FLOOR) / (COS_CEIL − COS_FLOOR), 0, 1)

with COS_FLOOR = 0.15 (unrelated → 0) and COS_CEIL = 0.35 (a strong match → 10); the clip's
score comes from the mean cosine over its sampled frames, and each frame scoring under the
pass threshold is flagged with its timestamp.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidgate.stages._frames import Frame
from vidgate.stages.base import StageUnavailable

COS_FLOOR = 0.15
COS_CEIL = 0.35


def score_of(cosine: float) -> float:
    """The 0–10 score of a CLIP cosine similarity (see the module docstring)."""
    x = (cosine - COS_FLOOR) / (COS_CEIL - COS_FLOOR)
    return round(10.0 * min(1.0, max(0.0, x)), 3)


def cosine_of(score: float) -> float:
    """The cosine a 0–10 score corresponds to (for thresholds given as scores)."""
    return COS_FLOOR + (COS_CEIL - COS_FLOOR) * score / 10.0


@dataclass(frozen=True)
class ClipScores:
    mean_cosine: float
    score: float
    per_frame: list[tuple[float, float]]  # (seconds, cosine)


def check_path(path: str | None) -> Path:
    """The model folder, or StageUnavailable naming the fix."""
    if not path:
        raise StageUnavailable(
            "CLIP prompt adherence needs a local CLIP model: set VIDGATE_CLIP_MODEL to a "
            "folder saved with CLIPModel.save_pretrained (e.g. openai/clip-vit-base-patch32)"
        )
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise StageUnavailable(
            f"VIDGATE_CLIP_MODEL={path} is not a saved CLIP model (no config.json there); "
            "point it at a folder written by CLIPModel.save_pretrained"
        )
    return folder


class ClipScorer:
    """A loaded CLIP model and processor; thread-safe scoring (one forward at a time)."""

    def __init__(self, folder: Path) -> None:
        try:
            import torch
            from transformers import CLIPModel, CLIPProcessor
        except ModuleNotFoundError as e:
            from vidgate.extras import missing_extra

            raise StageUnavailable(
                missing_extra(e, "CLIP prompt adherence") or f"CLIP needs {e.name}"
            ) from None
        self._torch = torch
        try:
            self.model = CLIPModel.from_pretrained(str(folder))
            self.model.eval()  # type: ignore[no-untyped-call]
            self.processor = CLIPProcessor.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise StageUnavailable(
                f"cannot load the CLIP model at {folder} ({e}); save both the model and its "
                "processor (CLIPProcessor.save_pretrained) in that folder"
            ) from None
        self._lock = threading.Lock()

    def score(self, prompt: str, frames: list[Frame]) -> ClipScores:
        if not frames:
            raise ValueError("no frames to score")
        torch = self._torch
        inputs: Any = self.processor(
            text=[prompt],
            images=[f.rgb for f in frames],
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        with self._lock, torch.inference_mode():
            out = self.model(**inputs)
        # CLIPOutput's embeddings are already L2-normalised: the dot product is the cosine
        cos = (out.image_embeds @ out.text_embeds.T)[:, 0].tolist()
        per_frame = [(f.t, float(c)) for f, c in zip(frames, cos, strict=True)]
        mean = sum(c for _, c in per_frame) / len(per_frame)
        return ClipScores(mean_cosine=mean, score=score_of(mean), per_frame=per_frame)


_loaded: dict[Path, ClipScorer] = {}
_loaded_lock = threading.Lock()


def scorer(path: str | None) -> ClipScorer:
    """The scorer for ``path``, loaded once per process (loading takes seconds)."""
    folder = check_path(path).resolve()
    with _loaded_lock:
        hit = _loaded.get(folder)
        if hit is None:
            hit = _loaded[folder] = ClipScorer(folder)
        return hit

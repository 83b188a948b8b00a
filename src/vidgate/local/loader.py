"""Find and load a pipeline: a local folder or a Hub id from the local cache, never fetched.

The checks before loading are cheap (files only, no torch) so that `vidgate model serve` with
a wrong path exits 2 at once with one line naming the path and the files expected.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidgate.local.families import detect, supported_pipelines
from vidgate.local.families.base import Family, ModelIndex

EXPECTED = (
    "model_index.json and one folder per component it names "
    "(e.g. transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class LoadError(Exception):
    """A one-line reason the model cannot be served."""


@dataclass(frozen=True)
class ModelDir:
    path: Path
    index: ModelIndex
    family: Family
    pipeline_class: str


def offline() -> None:
    """Weights are never fetched by the server: the Hub is offline unless the user said so."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def resolve(path_or_id: str) -> Path:
    """A folder as given, else a Hub repo id looked up in the local cache only."""
    path = Path(path_or_id).expanduser()
    if path.exists() or not REPO_ID.match(path_or_id):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(path_or_id, local_files_only=True))
    except LocalEntryNotFoundError:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise LoadError(
            f"{path_or_id}: no such folder, and not a model in the local Hub cache "
            f"({HF_HUB_CACHE}); download it first (`hf download {path_or_id}`) or give the "
            f"folder holding {EXPECTED}"
        ) from None


def inspect_dir(path: Path) -> ModelDir:
    """Validate a pipeline folder and pick its family, without importing torch."""
    if not path.is_dir():
        raise LoadError(f"{path}: no such folder; expected a folder holding {EXPECTED}")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise LoadError(f"{path}: model_index.json is missing; expected {EXPECTED}")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise LoadError(f"{index_file}: not readable JSON ({e})") from None
    if not isinstance(index, dict):
        raise LoadError(f"{index_file}: not a diffusers model index (a JSON object)")
    missing = [
        f"{name}/"
        for name, spec in index.items()
        if not name.startswith("_")
        and isinstance(spec, list)
        and len(spec) == 2
        and spec[0] is not None
        and not (path / name).is_dir()
    ]
    if missing:
        raise LoadError(
            f"{path}: component folder(s) {', '.join(missing)} missing; expected {EXPECTED}"
        )
    family = detect(index)
    cls = str(index.get("_class_name"))
    if family is None:
        raise LoadError(
            f"{path}: pipeline {cls} is not served; supported: {', '.join(supported_pipelines())}"
        )
    model = ModelDir(path=path, index=index, family=family, pipeline_class=cls)
    if cls.startswith("Wan") and "ImageToVideo" in cls:
        _require_ftfy(model)
    return model


def load_pipeline(model: ModelDir, dtype: str) -> Any:
    """The real ``from_pretrained`` path, local files only."""
    import diffusers
    import torch

    pipeline_cls: Any = diffusers.DiffusionPipeline  # from_pretrained is untyped

    torch_dtype = getattr(torch, dtype)
    pipe = pipeline_cls.from_pretrained(model.path, dtype=torch_dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _require_ftfy(model: ModelDir) -> None:
    # diffusers calls ftfy.fix_text unconditionally in Wan I2V but does not install it; the
    # failure would only show at the first request, as a NameError.
    import importlib.util

    if importlib.util.find_spec("ftfy") is None:
        raise LoadError(
            f"{model.path}: {model.pipeline_class} needs the ftfy package, which is not "
            "installed: pip install ftfy"
        )

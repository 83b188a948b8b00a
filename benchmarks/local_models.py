"""Local models: each speed option against plain diffusers on the tiny Wan, side by side.

A tiny random-weight Wan 2.1 pipeline (tests/local/tiny.py) is saved and loaded back with
``from_pretrained``; then, in one run:

* **plain diffusers**: ``DiffusionPipeline.from_pretrained`` and a call, nothing of vidgate's;
* **vidgate, no option**: the model server's runner (kwargs, step callback, MP4 encode);
* each speed option alone, and the First Block Cache with compile.

For each: seconds per denoising step (median of the step callback's intervals), end-to-end
seconds of compute per second of video, the first (cold) run's seconds (compile pays there),
and the transformer calls a cache skipped. CPU figures on a shared machine: compare the rows
of one run. The real Wan 2.1 1.3B architecture at 480p×81 is ``benchmarks.local_models_gpu``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Options, heading, say, table

NAME = "local_models"
STEPS = 10  # caches engage over ten steps or more
W = H = 32
FRAMES, FPS = 9, 16.0


def _cases(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    backend = "aot_eager" if quick else "inductor"
    return [
        ("vidgate, no option", {}),
        (f"--compile ({backend})", {"compile": True, "compile_backend": backend}),
        ("--cache first-block (0.2)", {"cache": "first-block", "cache_threshold": 0.2}),
        ("--cache taylorseer", {"cache": "taylorseer"}),
        ("--attention native", {"attention": "native"}),
        ("--offload model", {"offload": "model"}),
        ("--offload group", {"offload": "group"}),
        ("--vae-tiling", {"vae_tiling": True}),
        (
            f"--cache first-block + --compile ({backend})",
            {
                "cache": "first-block",
                "cache_threshold": 0.2,
                "compile": True,
                "compile_backend": backend,
            },
        ),
    ]


def _plain(folder: Path, runs: int) -> dict[str, Any]:
    import diffusers
    import torch

    lib: Any = diffusers  # from_pretrained is untyped
    pipe = lib.DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    times: list[float] = []
    steps: list[float] = []
    marks: list[float] = []

    def on_step(_p: Any, _i: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        marks.append(time.perf_counter())
        return kw

    for _ in range(runs):
        marks.clear()

        t0 = time.perf_counter()
        pipe(
            prompt="a red fox running through snow",
            height=H,
            width=W,
            num_frames=FRAMES,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            callback_on_step_end=on_step,
        )
        times.append(time.perf_counter() - t0)
        steps.extend(b - a for a, b in zip([t0, *marks], marks, strict=False))
    return {
        "cold_s": times[0],
        "e2e_s": min(times[1:] or times),
        "step_s": statistics.median(steps),
        "skipped": 0,
    }


def _vidgate(folder: Path, options: dict[str, Any], runs: int) -> dict[str, Any]:
    from vidgate.local.loader import inspect_dir
    from vidgate.local.protocol import JobSpec
    from vidgate.local.runner import Runner
    from vidgate.local.speed import SpeedOptions

    runner = Runner(inspect_dir(folder), steps=STEPS, speed=SpeedOptions(**options))
    job = JobSpec(
        prompt="a red fox running through snow",
        negative_prompt=None,
        width=W,
        height=H,
        num_frames=FRAMES,
        fps=FPS,
        seed=0,
        guidance_scale=None,
        steps=STEPS,
    )
    times: list[float] = []
    steps: list[float] = []
    skipped = 0
    marks: list[float] = []

    def on_progress(_done: int, _total: int) -> None:
        marks.append(time.perf_counter())

    for _ in range(runs):
        marks.clear()
        t0 = time.perf_counter()
        result = runner.run(job, on_progress, lambda: False)
        times.append(result.compute_seconds)
        steps.extend(b - a for a, b in zip([t0, *marks], marks, strict=False))
        skipped = result.skipped_calls
    return {
        "cold_s": times[0],
        "e2e_s": min(times[1:] or times),
        "step_s": statistics.median(steps),
        "skipped": skipped,
    }


def run(options: Options) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers.utils import logging as diffusers_logging
    from tests.local import tiny

    diffusers_logging.disable_progress_bar()  # loading bars would bury the table

    runs = 2 if options.quick else 4
    video_s = FRAMES / FPS
    heading(
        f"Local models: speed options on the tiny Wan ({W}x{H}, {FRAMES} frames, "
        f"{STEPS} steps, best of {runs - 1} warm runs)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        folder = tiny.save("wan21-t2v", Path(tmp))
        results = {"plain diffusers": _plain(folder, runs)}
        for name, opts in _cases(options.quick):
            results[name] = _vidgate(folder, opts, runs)
    base = results["plain diffusers"]
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r['step_s'] * 1000:.1f}",
                f"{r['e2e_s']:.3f}",
                f"{r['e2e_s'] / video_s:.3f}",
                f"{base['e2e_s'] / r['e2e_s']:.2f}x",
                f"{r['cold_s']:.2f}",
                str(r["skipped"]),
            ]
        )
    say(
        table(
            ["", "ms/step", "e2e s", "compute s / video s", "vs plain", "cold s", "skipped"], rows
        )
    )
    say(
        "compute s / video s: the pipeline call (denoise + decode) over the clip's seconds; "
        "'skipped': cached module calls that computed nothing (per run)."
    )
    return {
        "shape": f"{W}x{H}x{FRAMES}",
        "steps": STEPS,
        "cases": {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
            for name, r in results.items()
        },
    }

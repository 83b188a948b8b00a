"""Each speed option on the tiny Wan: it runs, and the output is still a valid video."""

from __future__ import annotations

import pytest

from tests.local.conftest import ModelPath
from tests.local.video import decode
from vidgate.local.loader import inspect_dir
from vidgate.local.protocol import JobSpec
from vidgate.local.runner import Runner
from vidgate.local.speed import SpeedOptions


def job(steps: int) -> JobSpec:
    return JobSpec(
        prompt="a red fox",
        negative_prompt=None,
        width=32,
        height=32,
        num_frames=9,
        fps=16.0,
        seed=3,
        guidance_scale=5.0,
        steps=steps,
    )


@pytest.mark.parametrize(
    "options",
    [
        SpeedOptions(compile=True, compile_backend="aot_eager"),
        SpeedOptions(attention="native"),
        SpeedOptions(offload="model"),
        SpeedOptions(offload="group"),
        SpeedOptions(vae_tiling=True),
    ],
    ids=["compile", "attention", "offload-model", "offload-group", "vae-tiling"],
)
def test_option_runs_and_makes_a_valid_video(tiny_model: ModelPath, options: SpeedOptions) -> None:
    runner = Runner(inspect_dir(tiny_model("wan21-t2v")), steps=2, speed=options)
    result = runner.run(job(2), lambda d, t: None, lambda: False)
    d = decode(result.mp4)
    assert (d.frames, d.width, d.height) == (9, 32, 32)
    assert runner.describe()["speed"] == options.wire()


@pytest.mark.parametrize(
    "options",
    [
        SpeedOptions(cache="first-block", cache_threshold=0.2),
        SpeedOptions(cache="taylorseer"),
        SpeedOptions(
            cache="first-block", cache_threshold=0.2, compile=True, compile_backend="aot_eager"
        ),
    ],
    ids=["first-block", "taylorseer", "first-block+compile"],
)
def test_cache_saves_transformer_work_and_says_how_much(
    tiny_model: ModelPath, options: SpeedOptions
) -> None:
    # Caches reuse work from earlier steps: they engage only over ten steps or more.
    runner = Runner(inspect_dir(tiny_model("wan21-t2v")), steps=10, speed=options)
    result = runner.run(job(10), lambda d, t: None, lambda: False)
    assert decode(result.mp4).frames == 9
    assert runner.counter is not None
    assert 0 < result.skipped_calls < runner.counter.calls
    if not options.compile:  # (a second compiled run would only add time)
        # per job: a second run counts its own savings from a clean cache state
        again = runner.run(job(10), lambda d, t: None, lambda: False)
        assert again.skipped_calls == result.skipped_calls


def test_without_a_cache_nothing_is_counted(tiny_model: ModelPath) -> None:
    runner = Runner(inspect_dir(tiny_model("wan21-t2v")), steps=2)
    assert runner.counter is None
    assert runner.run(job(2), lambda d, t: None, lambda: False).skipped_calls == 0

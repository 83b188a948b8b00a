"""All technical quality checks against a plain full decode of the same clip.

For 5 s and 30 s sandbox clips (H.264 + AAC, 24 fps) at 720p and 1080p: the median time to
decode every video frame with PyAV (the baseline, default threading) beside the time of every
technical check (``run_checks``: packet index, audio loudness, sampled reduced-size frames,
PySceneDetect on the samples). The sandbox encodes a keyframe every second, as web-delivery
encodes do; two more 30 s clips with a 10 s keyframe interval show the price of long GOPs (a
sample between keyframes costs decoding up to it): one P-frames only (x264 ultrafast), one
with B-frames (x264 veryfast, as most encoders' defaults), whose unreferenced frames the
checks skip. The issue's aim: all technical checks ≤ 25% of one full decode. ``--quick``: 2 s
clips at 360p and 720p.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from benchmarks.common import Options, fmt, heading, say, table
from vidgate.sandbox.render import render_mp4
from vidgate.stages._sampling import read
from vidgate.stages.checks import Expect, run_checks

NAME = "stages"
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
AIM = 0.25


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _decode_all(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def run(options: Options) -> dict[str, Any]:
    heading("stages: every technical check vs a full PyAV decode of the same clip")
    # (resolution, seconds, keyframe interval in seconds, x264 preset)
    shapes = (
        [("360p", 2.0, 1.0, "ultrafast"), ("720p", 2.0, 1.0, "ultrafast")]
        if options.quick
        else [
            ("720p", 5.0, 1.0, "ultrafast"),
            ("720p", 30.0, 1.0, "ultrafast"),
            ("1080p", 5.0, 1.0, "ultrafast"),
            ("1080p", 30.0, 1.0, "ultrafast"),
            ("1080p", 30.0, 10.0, "ultrafast"),
            ("1080p", 30.0, 10.0, "veryfast"),
        ]
    )
    repeat = 3 if options.quick else 5
    rows: list[list[object]] = []
    figures: dict[str, Any] = {"clips": {}}
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-stages-") as tmp:
        root = Path(tmp)
        for res, seconds, gop, preset in shapes:
            w, h = SIZES[res]
            label = f"{res} {seconds:g}s gop {gop:g}s" + ("" if preset == "ultrafast" else " B")
            say(f"  rendering {label}...")
            clip = render_mp4(
                root / f"{res}_{seconds:g}_{gop:g}_{preset}.mp4",
                width=w,
                height=h,
                fps=24,
                duration_s=seconds,
                audio=True,
                gop_s=gop,
                preset=preset,
            )
            expect = Expect(duration_s=seconds, size=(w, h), fps=24, audio=True)
            results = run_checks(clip, expect)
            failed = [r.name for r in results if r.verdict == "fail"]
            if failed:  # a clean clip must pass: otherwise the timing measures a bug
                raise RuntimeError(f"{label}: clean clip failed {failed}")
            media = read(clip)
            frames = _decode_all(clip)
            decode_s = _median(lambda c=clip: _decode_all(c), repeat)  # type: ignore[misc]
            checks_s = _median(lambda c=clip, e=expect: run_checks(c, e), repeat)  # type: ignore[misc]
            ratio = checks_s / decode_s
            figures["clips"][label] = {
                "frames": frames,
                "decoded_by_checks": media.decoded_frames,
                "samples": len(media.samples),
                "decode_s": round(decode_s, 4),
                "checks_s": round(checks_s, 4),
                "checks_vs_decode": round(ratio, 4),
            }
            rows.append(
                [
                    label,
                    frames,
                    media.decoded_frames,
                    len(media.samples),
                    fmt(decode_s * 1e3, 0),
                    fmt(checks_s * 1e3, 1),
                    f"{ratio:.1%}",
                ]
            )
    say()
    say(
        table(
            [
                "clip",
                "frames",
                "decoded",
                "samples",
                "full decode ms",
                "all checks ms",
                "checks/decode",
            ],
            rows,
        )
    )
    short_gop = [v for k, v in figures["clips"].items() if "gop 1s" in k]
    long_gop = [v["checks_vs_decode"] for k, v in figures["clips"].items() if "gop 10s" in k]
    worst = max(c["checks_vs_decode"] for c in short_gop)
    figures["worst_checks_vs_decode_gop_1s"] = worst
    figures["aim_checks_vs_decode"] = AIM
    if long_gop:
        figures["long_gop_checks_vs_decode"] = long_gop
    say(
        f"\n  medians of {repeat}; decode = every video frame with PyAV (default threading); "
        f"checks = all {len(results)} technical checks incl. opening the file.\n  worst "
        f"checks/decode with 1 s keyframes: {worst:.1%} (aim ≤ {AIM:.0%})"
    )
    return figures

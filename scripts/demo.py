"""`make demo`: the main job, offline. Runs vidgate's CLI against the sandbox (no keys, no
network): lists the catalog, routes a request, generates two real MP4s (each checked by the
quality stages and signed with C2PA by an offline test CA), verifies one, makes a two-shot
film from a story file, and prices a multi-model workload with the planner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".demo"


def step(title: str, argv: list[str]) -> None:
    from vidgate.cli.main import main

    print(f"\n\033[1m$ vidgate {' '.join(argv)}\033[0m   # {title}", flush=True)
    code = main(argv)
    if code != 0:
        sys.exit(f"demo step failed with exit code {code}")


def run() -> None:
    OUT.mkdir(exist_ok=True)
    os.environ.setdefault("VIDGATE_HOME", str(OUT / "home"))
    os.environ["VIDGATE_SANDBOX"] = "1"
    os.environ.setdefault("VIDGATE_SANDBOX_TIME_SCALE", "0.02")
    os.environ.setdefault("VIDGATE_POLL_INTERVAL_S", "0.2")
    # the sandbox's emulated model server: the self-hosted offerings have a route too
    os.environ.setdefault("VIDGATE_LOCAL_DIFFUSERS_BASE_URL", "sandbox")

    ca = OUT / "c2pa"
    if not (ca / "key.pem").exists():
        step(
            "an offline test CA, so every output is signed with C2PA",
            ["provenance", "dev-ca", str(ca)],
        )
    os.environ["VIDGATE_C2PA_CERT"] = str(ca / "cert.pem")
    os.environ["VIDGATE_C2PA_KEY"] = str(ca / "key.pem")

    step("offerings under $0.06/s", ["models", "--max-price", "0.06"])
    prompt = "A red fox trots through fresh snow at dawn, low tracking shot"
    step("the cheapest route for a 5 s 720p clip", ["route", prompt, "--duration", "5"])
    step("generate it", ["generate", prompt, "--duration", "5", "-o", str(OUT / "fox.mp4")])
    step(
        "a premium clip with native audio, 8 s 1080p",
        [
            "generate",
            "Two chefs argue over a soufflé, dialogue, handheld camera",
            "--duration",
            "8",
            "--resolution",
            "1080p",
            "--audio",
            "--quality",
            "premium",
            "-o",
            str(OUT / "chefs.mp4"),
        ],
    )

    fox = str(OUT / "fox.mp4")
    step(
        "the technical checks, on any file",
        ["check", fox, "--resolution", "720p"],
    )
    step("its C2PA manifest, in words", ["verify", fox, "--trust", str(ca / "ca.pem")])

    story = str(ROOT / "examples/stories/fox-at-dawn.yaml")
    step("a two-shot story: the plan", ["story", story, "--dry-run"])
    step("and the film", ["story", story, "-o", str(OUT / "film.mp4"), "--new"])

    step(
        "what seed 000's multi-model platform costs with the router instead of fixed picks",
        [
            "plan",
            str(ROOT / "examples/workloads/router-platform-mix.yaml"),
            "--compare",
            str(ROOT / "examples/workloads/seed-000-platform-mix.yaml"),
        ],
    )

    import av

    for name in ("fox.mp4", "chefs.mp4", "film.mp4"):
        with av.open(str(OUT / name)) as c:
            v = c.streams.video[0]
            frames = sum(1 for _ in c.decode(video=0))
            audio = "with audio" if c.streams.audio else "silent"
            print(
                f"checked {OUT / name}: decoded {frames} frames "
                f"{v.codec_context.width}x{v.codec_context.height}, {audio}"
            )


if __name__ == "__main__":
    run()

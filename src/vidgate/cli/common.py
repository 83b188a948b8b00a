"""Shared CLI plumbing: settings from flags, request options, one-line errors."""

from __future__ import annotations

import base64
import json
import mimetypes
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from vidgate.errors import InvalidRequest
from vidgate.settings import Settings
from vidgate.types import (
    AudioMode,
    Constraints,
    GateAction,
    Mode,
    QualityTier,
    Reference,
    ReferenceKind,
    ReferenceRole,
    VideoRequest,
)

console = Console()
#: the quality gate's actions, as the request model spells them
GATE_ACTIONS: tuple[str, ...] = typing.get_args(GateAction)
err_console = Console(stderr=True)

MAX_LOCAL_REFERENCE_BYTES = 20 * 1024 * 1024  # the OpenAI digest's limit for image_url strings


def fail(message: str, code: int = 2) -> NoReturn:
    # escape(): a message may contain [brackets] (option lists) that rich would eat as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def validation_message(e: ValidationError) -> str:
    """One line: the first failing field and what would work."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p not in ("__root__",))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def settings_from(sandbox: bool) -> Settings:
    try:
        s = Settings()
    except ValidationError as e:
        fail(f"environment: {validation_message(e)}")
    if sandbox:
        s = s.model_copy(update={"sandbox": True})
    return s


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _reference_url(value: str) -> str:
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        fail(f"--image {value!r} is neither an http(s) URL nor a readable file")
    size = path.stat().st_size
    if size > MAX_LOCAL_REFERENCE_BYTES:
        fail(f"--image {value!r} is {size} bytes; the limit is {MAX_LOCAL_REFERENCE_BYTES}")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not mime.startswith("image/"):
        fail(f"--image {value!r} does not look like an image ({mime}); use PNG, JPEG or WebP")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


# Options shared by generate, route and submit. Typer reads these annotations.
Duration = Annotated[float, typer.Option("--duration", "-d", help="Seconds of video.")]
ResolutionOpt = Annotated[
    str, typer.Option("--resolution", "-r", help="480p, 540p, 720p, 768p, 1080p, 1440p or 4k.")
]
Aspect = Annotated[str, typer.Option("--aspect", help="Aspect ratio W:H, e.g. 16:9, 9:16, 1:1.")]
Fps = Annotated[int | None, typer.Option("--fps", help="Frames per second (any if unset).")]
AudioOpt = Annotated[bool, typer.Option("--audio", help="Require native audio.")]
Quality = Annotated[
    str | None, typer.Option("--quality", "-q", help="Minimum tier: draft, standard or premium.")
]
MaxCost = Annotated[float | None, typer.Option("--max-cost", help="Budget in USD for the clip.")]
MaxLatency = Annotated[
    float | None, typer.Option("--max-latency", help="Seconds the job may take (at p90).")
]
Policy = Annotated[str, typer.Option("--policy", "-p", help="cheapest, fastest or best-quality.")]
OfferingOpt = Annotated[
    list[str] | None,
    typer.Option("--offering", help="Pin an offering id (repeat for an ordered fallback list)."),
]
Image = Annotated[str | None, typer.Option("--image", help="First-frame image: a path or URL.")]
Negative = Annotated[str | None, typer.Option("--negative", help="Negative prompt.")]
OnFail = Annotated[
    str | None,
    typer.Option(
        "--on-fail",
        help="Quality gate: what to do with a clip that fails its checks: regenerate, "
        "fallback, deliver_flagged or fail (docs/quality.md).",
    ),
]
MinScore = Annotated[
    float | None,
    typer.Option("--min-score", help="Quality gate: the lowest acceptable score, 0-10."),
]
Judge = Annotated[
    bool, typer.Option("--judge", help="Quality gate: a VLM judge scores the clip (billed).")
]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed, where the model takes one.")]
SandboxOpt = Annotated[
    bool,
    typer.Option(
        "--sandbox", envvar="VIDGATE_SANDBOX", help="Serve every offering from the offline sandbox."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def build_request(
    prompt: str,
    *,
    duration: float,
    resolution: str,
    aspect: str,
    fps: int | None,
    audio: bool,
    quality: str | None,
    max_cost: float | None,
    max_latency: float | None,
    image: str | None,
    negative: str | None,
    seed: int | None,
    on_fail: str | None = None,
    min_score: float | None = None,
    judge: bool = False,
) -> VideoRequest:
    references = []
    mode = Mode.TEXT_TO_VIDEO
    if image:
        references.append(
            Reference(
                role=ReferenceRole.FIRST_FRAME, kind=ReferenceKind.IMAGE, url=_reference_url(image)
            )
        )
        mode = Mode.IMAGE_TO_VIDEO
    if quality is not None and quality not in {q.value for q in QualityTier}:
        raise InvalidRequest(f"--quality {quality!r}: use draft, standard or premium")
    gate: dict[str, Any] | None = None
    if on_fail is not None or min_score is not None or judge:
        if on_fail is not None and on_fail not in GATE_ACTIONS:
            raise InvalidRequest(f"--on-fail {on_fail!r}: use {', '.join(GATE_ACTIONS)}")
        gate = {"min_score": min_score, "judge": judge}
        if on_fail is not None:
            gate["on_fail"] = on_fail
    try:
        return VideoRequest(
            prompt=prompt,
            negative_prompt=negative,
            mode=mode,
            duration_s=duration,
            resolution=resolution,  # a string: the validator parses it
            aspect_ratio=aspect,
            fps=fps,
            audio=AudioMode.REQUIRED if audio else AudioMode.NONE,
            seed=seed,
            references=references,
            quality=QualityTier(quality) if quality else None,
            quality_gate=gate,
            constraints=Constraints(max_cost_usd=max_cost, max_latency_s=max_latency),
        )
    except ValidationError as e:
        raise InvalidRequest(_flagged(validation_message(e))) from None


_FLAG_NAMES = {
    "duration_s": "--duration",
    "resolution": "--resolution",
    "aspect_ratio": "--aspect",
    "fps": "--fps",
    "max_cost_usd": "--max-cost",
    "max_latency_s": "--max-latency",
    "seed": "--seed",
    "prompt": "PROMPT",
    "negative_prompt": "--negative",
    "min_score": "--min-score",
    "on_fail": "--on-fail",
}


def _flagged(message: str) -> str:
    """Name the CLI flag rather than the model field: "--duration: must be > 0"."""
    field, sep, rest = message.partition(": ")
    last = field.split(".")[-1]
    return f"{_FLAG_NAMES[last]}: {rest}" if sep and last in _FLAG_NAMES else message

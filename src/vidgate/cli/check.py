"""`vidgate check FILE`: the technical quality checks on any video file.

Exit 0 when every check passes (or is skipped), 1 when one fails, 2 on bad input (a missing
file, not a video, an unknown flag value) — always one line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vidgate.cli.common import console, fail, print_json
from vidgate.stages.checks import (
    CHECKS,
    THRESHOLDS,
    Expect,
    NotAVideo,
    parse_resolution,
    run_checks,
)
from vidgate.types import parse_aspect

_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "skipped": "dim", "error": "yellow"}


def check(
    file: Annotated[
        Path | None, typer.Argument(help="The video file to check.", show_default=False)
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Asked duration in seconds.", min=0.1)
    ] = None,
    resolution: Annotated[
        str | None,
        typer.Option("--resolution", help="Asked resolution: a tier (720p) or WxH (1280x720)."),
    ] = None,
    aspect: Annotated[
        str | None, typer.Option("--aspect", help="Asked aspect ratio W:H (e.g. 16:9).")
    ] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Asked frame rate.", min=1)] = None,
    audio: Annotated[
        bool, typer.Option("--audio", help="Audio was required: a missing track fails.")
    ] = False,
    allow_cuts: Annotated[
        bool, typer.Option("--allow-cuts", help="Multi-shot: hard cuts are not a failure.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Each check's name, value, threshold and verdict.")
    ] = False,
    list_checks: Annotated[
        bool, typer.Option("--list", help="List the checks and their thresholds, then exit.")
    ] = False,
) -> None:
    """Run the technical checks (duration, size, fps, audio, black, frozen, flicker,
    truncation, hard cuts) on FILE; exit 1 when one fails."""
    if list_checks:
        _list(as_json)
        return
    if file is None:
        fail("give the video file to check: vidgate check FILE (or --list for the checks)")
    if not file.is_file():
        what = "no such file"
        if file.is_dir():
            what = "is a directory"
        elif file.exists():
            what = "is not a regular file"  # a device or pipe (/dev/zero never ends)
        fail(f"{file}: {what}; give the path of a video file")
    short, size = None, None
    ratio = None
    try:
        if resolution is not None:
            short, size = parse_resolution(resolution)
        if aspect is not None:
            w, h = parse_aspect(aspect)
            ratio = w / h
    except ValueError as e:
        fail(str(e))
    expect = Expect(
        duration_s=duration,
        short_side=short,
        size=size,
        aspect=ratio,
        fps=fps,
        audio=True if audio else None,
        single_shot=not allow_cuts,
    )
    try:
        results = run_checks(file, expect)
    except NotAVideo as e:
        fail(f"{e}; give an MP4, MOV, WebM or another file FFmpeg can read")
    failed = [r for r in results if r.verdict == "fail"]
    if as_json:
        print_json(
            {
                "file": str(file),
                "verdict": "fail" if failed else "pass",
                "checks": [r.model_dump(mode="json") for r in results],
            }
        )
    else:
        table = Table("check", "verdict", "value", "threshold", "detail", title=str(file))
        for r in results:
            value = "" if r.value is None else f"{r.value}{' ' + r.unit if r.unit else ''}"
            style = _VERDICT_STYLE.get(r.verdict, "")
            table.add_row(
                r.name,
                f"[{style}]{r.verdict}[/]",
                value,
                "" if r.threshold is None else str(r.threshold),
                r.detail or "",
            )
        console.print(table)
        console.print(
            f"[bold red]{len(failed)} check(s) failed:[/] {', '.join(r.name for r in failed)}"
            if failed
            else "[green]all checks passed[/]"
        )
    if failed:
        raise typer.Exit(1)


def _list(as_json: bool) -> None:
    rows = {name: THRESHOLDS.get(name) for name in CHECKS}
    if as_json:
        print_json(
            {
                "checks": list(CHECKS),
                "thresholds": {
                    k: {"value": t.value, "unit": t.unit, "why": t.why}
                    for k, t in THRESHOLDS.items()
                },
            }
        )
        return
    table = Table("check", "threshold", "why")
    for name, t in rows.items():
        table.add_row(
            name, "" if t is None else f"{t.value:g} {t.unit}", "" if t is None else t.why
        )
    console.print(table)

"""`vidgate story FILE -o film.mp4 [--dry-run]`: a multi-shot film from a story file.

``--dry-run`` prints the plan (per shot: offering, segments, estimated cost and time; the
total against the budget). A real run shows a progress bar per shot and one for the film,
then writes the film, every shot's file (``<film>.shots/``) and the story record
(``<film>.record.json``). Running the same file again resumes its story rather than starting
a second one (``--new`` starts afresh). ``vidgate story schema`` prints the JSON Schema.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from vidgate.cli.common import JsonOpt, SandboxOpt, err_console, print_json, settings_from
from vidgate.stories.plan import StoryPlan, plan_story
from vidgate.stories.spec import json_schema, parse_story, read_story_file
from vidgate.types import Job, JobState


def story(
    file: Annotated[str, typer.Argument(help="The story file (YAML or JSON), or `schema`.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the film (MP4).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and its cost; generate nothing.")
    ] = False,
    sandbox: SandboxOpt = False,
    as_json: JsonOpt = False,
    tenant: Annotated[str, typer.Option("--tenant", help="Whose budget pays.")] = "default",
    new: Annotated[
        bool, typer.Option("--new", help="Start a new story even if this file ran before.")
    ] = False,
) -> None:
    """Make a multi-shot film from a story file (or print the story file's JSON Schema)."""
    if file == "schema":
        sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
        return
    path = Path(file)
    text = read_story_file(path)
    checked = parse_story(text, source=str(path), base_dir=path.resolve().parent)
    problems = list(checked.problems)
    if not dry_run and output is None:
        _fail_lines(["-o/--output: where to write the film, e.g. -o film.mp4"])
    if not dry_run and output is not None:
        _check_output(output)  # before any shot is paid for, not after the film is made
    from vidgate.gateway import Gateway

    gw = Gateway(settings_from(sandbox))
    try:
        plan: StoryPlan | None = None
        if checked.loaded is not None:
            plan, more = plan_story(checked.loaded, gw.router(), gw.catalog)
            problems += more
        loaded = checked.loaded
        if problems or loaded is None or plan is None:
            problems.sort(key=lambda p: (p.line or 0, p.field))
            _fail_lines([p.render(str(path)) for p in problems])
            return
        if dry_run:
            if as_json:
                print_json({"summary": plan.summary(), "plan": plan.model_dump(mode="json")})
            else:
                print_plan(plan)
            return
        assert output is not None
        from vidgate.stories.driver import story_fingerprint, submit_story

        key = None if new else "cli:" + story_fingerprint(loaded.story)[:40]
        doc, created = submit_story(gw, loaded, plan, tenant=tenant, idempotency_key=key)
        if not created:
            err_console.print(f"resuming story {doc.id} ({doc.state.value})")
        with _Bars(plan) as bars:
            doc = asyncio.run(_run(gw, doc.id, bars))
        if doc.state.value != "succeeded" or doc.film is None:
            msg = (doc.error or {}).get("message", doc.state.value)
            _fail_lines([f"story {doc.id} {doc.state.value}: {msg}{_kept(gw, doc, output)}"], 1)
        try:
            written = _write_outputs(gw, doc.film, doc.shot_files, doc.record or {}, output)
        except OSError as e:
            _fail_lines(
                [
                    f"-o {output}: cannot write the film ({e.strerror or e}); the story is kept:"
                    " run the same command with another -o to write it without paying again"
                ]
            )
        if as_json:
            print_json({"story": doc.id, "film": str(output), **written, "record": doc.record})
        else:
            rec = doc.record or {}
            err_console.print(
                f"film {output} ({doc.film['duration_s']:.2f}s, {doc.film['width']}x"
                f"{doc.film['height']} @ {doc.film['fps']} fps), cost ${rec.get('cost_usd', 0):.2f}"
                f"; shots in {written['shots_dir']}; record {written['record']}",
                highlight=False,
            )
    finally:
        gw.close()


def _check_output(output: Path) -> None:
    """-o names a file whose folder exists or can be made."""
    if output.is_dir():
        _fail_lines([f"-o {output} is a directory; give a file name, e.g. -o film.mp4"])
    if output.exists() and not output.is_file():
        _fail_lines([f"-o {output} is not a regular file; give a file name, e.g. -o film.mp4"])
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail_lines([f"-o {output}: cannot make its folder ({e.strerror or e})"])
    if not output.parent.is_dir():
        _fail_lines([f"-o {output}: {output.parent} is not a directory"])


async def _run(gw: Any, story_id: str, bars: _Bars) -> Any:
    from vidgate.stories.driver import run_story

    try:
        return await run_story(gw, story_id, on_progress=bars.update)
    finally:
        await gw.aclose()


def _fail_lines(lines: list[str], code: int = 2) -> NoReturn:
    for line in lines:
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_plan(plan: StoryPlan, console: Console | None = None) -> None:
    """The plan as a table that reads at 80 columns (and when piped)."""
    out = console or Console()
    table = Table(title=f"{plan.title} — plan", title_justify="left", expand=False)
    table.add_column("#", justify="right")
    table.add_column("offering", overflow="fold")
    table.add_column("secs", justify="right")
    table.add_column("segs", justify="right")
    table.add_column("est. $", justify="right")
    table.add_column("est. time", justify="right")
    table.add_column("note", overflow="fold", max_width=28)
    for s in plan.shots:
        note = []
        if s.chain != "none":
            note.append("extend" if s.chain == "extend" else "last-frame chained")
        if s.switched_because:
            note.append(f"switched: {s.switched_because}")
        if s.references:
            note.append("refs " + ", ".join(s.references))
        table.add_row(
            str(s.index + 1),
            s.offering_id,
            f"{s.duration_s:g}",
            str(len(s.segments)),
            f"{s.cost_usd:.2f}",
            f"{s.latency_s:.0f}s",
            "; ".join(note),
        )
    out.print(table)
    budget = f" of ${plan.budget_usd:.2f} budget" if plan.budget_usd is not None else ""
    out.print(
        f"total ${plan.cost_usd:.2f}{budget}; film {plan.film_s:.2f}s at "
        f"{plan.width}x{plan.height} {plan.fps} fps; about {plan.latency_s:.0f}s to make "
        f"(shots run side by side); seed {plan.seed}",
        highlight=False,
    )


class _Bars:
    """A progress bar per shot and one for the film (on stderr)."""

    def __init__(self, plan: StoryPlan) -> None:
        self.plan = plan
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[int, TaskID] = {}
        self.film: TaskID | None = None

    def __enter__(self) -> _Bars:
        self.progress.start()
        for s in self.plan.shots:
            self.tasks[s.index] = self.progress.add_task(f"shot {s.index + 1}", total=1.0)
        self.film = self.progress.add_task("film", total=1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, doc: Any, jobs: dict[str, Job]) -> None:
        for s in self.plan.shots:
            done = 0.0
            for seg in s.segments:
                job = jobs.get(f"{s.index}.{seg.index}")
                if job is None:
                    continue
                if job.state is JobState.SUCCEEDED:
                    done += 1.0
                elif job.progress is not None:
                    done += min(1.0, job.progress)
            self.progress.update(self.tasks[s.index], completed=done / len(s.segments))
        if self.film is not None:
            self.progress.update(self.film, completed=float(doc.progress))


def _kept(gw: Any, doc: Any, output: Path) -> str:
    """A story that ended without its film: write the shots it finished and its record
    beside where the film would be; what was written, for the error line."""
    if doc.record is None:
        return ""
    try:
        written = _write_outputs(gw, None, doc.shot_files, doc.record, output)
    except OSError as e:
        return f" (the finished shots could not be written: {e.strerror or e})"
    n = len(doc.shot_files)
    return f"; kept {n} finished shot(s) in {written['shots_dir']}, record {written['record']}"


def _write_outputs(
    gw: Any,
    film: dict[str, Any] | None,
    shots: dict[str, str],
    record: dict[str, Any],
    output: Path,
) -> dict[str, str]:
    output.parent.mkdir(parents=True, exist_ok=True)
    if film is not None:
        _copy(gw, film["uri"], output)
    shots_dir = output.with_name(output.stem + ".shots")
    shots_dir.mkdir(exist_ok=True)
    for k, uri in sorted(shots.items(), key=lambda kv: int(kv[0])):
        _copy(gw, uri, shots_dir / f"shot-{int(k) + 1:02d}.mp4")
    rec_path = output.with_name(output.stem + ".record.json")
    rec_path.write_text(json.dumps(record, indent=2, default=str))
    out = {"shots_dir": str(shots_dir), "record": str(rec_path)}
    if film is not None and film.get("captions_uri"):
        cap = output.with_suffix(Path(film["captions_uri"]).suffix)
        _copy(gw, film["captions_uri"], cap)
        out["captions"] = str(cap)
    return out


def _copy(gw: Any, uri: str, dest: Path) -> None:
    with gw.storage.open(gw.storage_path(uri)) as src, dest.open("wb") as f:
        shutil.copyfileobj(src, f)

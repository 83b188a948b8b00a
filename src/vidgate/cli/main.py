"""The `vidgate` command. Commands are thin: they parse flags and call the gateway."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

# Typer ≥ 0.20 vendors click as typer._click; earlier releases use click itself. Catch
# whichever this install raises, so a usage error is always one line, never a traceback.
try:
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

from vidgate import __version__
from vidgate.cli import check as check_cli
from vidgate.cli import generate as gen
from vidgate.cli import jobs as jobs_cli
from vidgate.cli import mcp as mcp_cli
from vidgate.cli import model as model_cli
from vidgate.cli import models as models_cli
from vidgate.cli import plan as plan_cli
from vidgate.cli import provenance as provenance_cli
from vidgate.cli import quality as quality_cli
from vidgate.cli import reconcile as reconcile_cli
from vidgate.cli import service as service_cli
from vidgate.cli import story as story_cli
from vidgate.cli.common import err_console, print_json, settings_from
from vidgate.cli.output import LOG_FORMAT_ENV, configure_logging
from vidgate.errors import (
    AmbiguousSubmission,
    ConfigError,
    FinalError,
    VidgateError,
)
from vidgate.extras import missing_extra

app = typer.Typer(
    name="vidgate",
    help="One API over every AI video model: route, generate, and run jobs durably.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _options(
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-plain",
            help="Log lines as JSON objects (default: plain; or VIDGATE_LOG_FORMAT=json).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also log vidgate's debug lines.")
    ] = False,
) -> None:
    # Every command logs the same way: vidgate's own lines, no library set-up chatter.
    configure_logging(json_logs=log_json, verbose=verbose)
    if log_json is not None:
        # Processes this one supervises (workers, API) log the way it was asked to.
        os.environ[LOG_FORMAT_ENV] = "json" if log_json else "plain"


app.add_typer(models_cli.app, name="models")
app.add_typer(model_cli.app, name="model")
app.command("route")(gen.route)
app.command("generate")(gen.generate)
app.command("submit")(jobs_cli.submit)
app.command("worker")(jobs_cli.worker)
app.command("jobs")(jobs_cli.jobs)
app.command("job")(jobs_cli.job)
app.command("wait")(jobs_cli.wait)
app.command("cancel")(jobs_cli.cancel)
app.command("reconcile")(reconcile_cli.reconcile)
app.command("serve")(service_cli.serve)
app.command("spend")(service_cli.spend)
app.add_typer(service_cli.keys_app, name="keys")
app.add_typer(plan_cli.app, name="plan")
app.command("simulate")(plan_cli.simulate)
app.command("story")(story_cli.story)
app.add_typer(provenance_cli.app, name="provenance")
app.command("verify")(provenance_cli.verify)
app.command("mcp")(mcp_cli.mcp)
app.command("check")(check_cli.check)
app.add_typer(quality_cli.app, name="quality")

sandbox_app = typer.Typer(help="The offline provider emulator.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option("--port", help="Loopback port to listen on.")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Interface (loopback by default).")
    ] = "127.0.0.1",
    time_scale: Annotated[
        float | None,
        typer.Option(
            "--time-scale", help="Multiply emulated latencies (default VIDGATE_SANDBOX_TIME_SCALE)."
        ),
    ] = None,
    faults: Annotated[
        Path | None, typer.Option("--faults", help="JSON file of fault rules to inject.")
    ] = None,
) -> None:
    """Serve every emulated provider protocol on HOST:PORT until interrupted."""
    from vidgate.catalog.loader import load_catalog
    from vidgate.sandbox.app import SandboxServer, emulated_protocols
    from vidgate.sandbox.core import FaultConfig

    settings = settings_from(False)
    fault_cfg = FaultConfig()
    if faults is not None:
        try:
            fault_cfg = FaultConfig.model_validate_json(faults.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--faults {faults}: {str(e).splitlines()[0]}") from None
    server = SandboxServer(
        settings.sandbox_home(),
        load_catalog(settings.catalog),
        host=host,
        port=port,
        time_scale=settings.sandbox_time_scale if time_scale is None else time_scale,
        faults=fault_cfg,
    )
    err_console.print(
        f"sandbox on http://{host}:{port} — protocols: {', '.join(sorted(emulated_protocols()))}"
        f"; records in {settings.sandbox_home()}; stats at /sandbox/stats"
    )
    server.serve_forever()


@sandbox_app.command("stats")
def sandbox_stats(
    url: Annotated[
        str, typer.Option("--url", envvar="VIDGATE_SANDBOX_URL")
    ] = "http://127.0.0.1:8765",
) -> None:
    """Print a running sandbox's counts (creates, duplicates, faults)."""
    import httpx

    try:
        print_json(httpx.get(f"{url.rstrip('/')}/sandbox/stats", timeout=10).json())
    except httpx.HTTPError as e:
        raise ConfigError(f"cannot reach the sandbox at {url}: {e}") from None


@app.command("version")
def version() -> None:
    """Print the version."""
    print(__version__)


# Errors a user fixes by changing their input: exit code 2, like a usage error.
_INPUT_ERRORS = (FinalError,)


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, click returns a typer.Exit's code instead of raising it.
        rv = command.main(args=argv, prog_name="vidgate", standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        err_console.print(
            f"[bold red]error:[/] {escape(e.format_message())}{escape(hint)}",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    except ClickException as e:
        err_console.print(
            f"[bold red]error:[/] {escape(e.format_message())}", highlight=False, soft_wrap=True
        )
        return 2
    except VidgateError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        if isinstance(e, AmbiguousSubmission):
            return 1
        return 2 if isinstance(e, _INPUT_ERRORS) else 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except ModuleNotFoundError as e:
        words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
        fix = missing_extra(e, f"`vidgate {words[0]}`" if words else "vidgate")
        if fix is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(fix)}", highlight=False, soft_wrap=True)
        return 2
    return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()

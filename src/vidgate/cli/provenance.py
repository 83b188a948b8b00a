"""`vidgate provenance dev-ca DIR` and `vidgate verify FILE`.

`vidgate verify` exits 0 when the manifest is valid or trusted, 1 when it is invalid or the
video has no manifest (so a script can refuse unsigned or tampered files), and 2 on bad input
(a missing, non-video or damaged file; an unreadable trust anchor file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidgate.cli.common import err_console, print_json, settings_from

app = typer.Typer(help="C2PA provenance: development keys.", no_args_is_help=True)


@app.command("dev-ca")
def dev_ca(
    folder: Annotated[Path, typer.Argument(help="Directory for cert.pem, ca.pem and key.pem.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the files if DIR already has them.")
    ] = False,
) -> None:
    """Make an offline test CA and a signing leaf for development (never for production)."""
    from vidgate.provenance.devca import make_dev_ca  # cryptography loads only when used

    made = make_dev_ca(folder, force=force)
    for line in made.env_lines():
        print(line)
    err_console.print(
        f"wrote {made.cert} (leaf + CA chain), {made.key} (0600) and {made.ca} (trust anchor:"
        f" `vidgate verify FILE --trust {made.ca}` or VIDGATE_C2PA_TRUST_ANCHORS)",
        highlight=False,
        soft_wrap=True,
    )


def verify(
    file: Annotated[Path, typer.Argument(help="The video to check (MP4 or MOV).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    trust: Annotated[
        Path | None,
        typer.Option(
            "--trust",
            help="PEM file of trust anchors (CA certificates); default VIDGATE_C2PA_TRUST_ANCHORS.",
        ),
    ] = None,
) -> None:
    """Print a video's C2PA manifest and whether it is valid, trusted or invalid.

    Exit status: 0 valid or trusted, 1 invalid or no manifest, 2 bad input."""
    from vidgate.provenance.verify import describe, load_anchors, verify_file  # loads c2pa

    anchors = load_anchors(trust if trust is not None else settings_from(False).c2pa_trust_anchors)
    report = verify_file(file, trust_anchors=anchors)
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        for line in describe(report):
            print(line)
    if not report.ok:
        raise typer.Exit(1)

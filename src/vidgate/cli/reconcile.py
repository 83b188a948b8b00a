"""`vidgate reconcile JOB --adopt ID | --resubmit | --abandon`: resolve a parked job."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from vidgate.cli.common import JsonOpt, console, fail, print_json, settings_from
from vidgate.errors import VidgateError
from vidgate.gateway import Gateway
from vidgate.jobs.reconcile import reconcile as apply


def reconcile(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    adopt: Annotated[
        str | None,
        typer.Option("--adopt", metavar="PROVIDER_JOB_ID", help="The remote job you found."),
    ] = None,
    resubmit: Annotated[
        bool, typer.Option("--resubmit", help="The provider has no such job: send it again.")
    ] = False,
    abandon: Annotated[
        bool, typer.Option("--abandon", help="Give up: fail the job, charge the estimate.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve a job parked as needs_reconciliation (see `vidgate jobs --state
    needs_reconciliation` for why each one is parked and what to check)."""
    chosen = [n for n, on in (("adopt", adopt), ("resubmit", resubmit), ("abandon", abandon)) if on]
    if len(chosen) != 1:
        fail("give exactly one of --adopt PROVIDER_JOB_ID, --resubmit, --abandon")
    gw = Gateway(settings_from(False))
    try:
        job = apply(
            gw.store,
            gw.catalog,
            gw.for_offering,
            job_id,
            chosen[0],
            provider_job_id=adopt,
            operator=f"cli:{getpass.getuser()}",
        )
    except VidgateError as e:
        fail(str(e))
    finally:
        gw.close()
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        console.print(f"{job.id} {job.state.value} ({chosen[0]})")

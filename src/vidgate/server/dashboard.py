"""The dashboard's one aggregate call: job counts, spend, provider health and the offerings
the submit form offers, in a single request per refresh.

A key sees its own tenant only; a key created admin (``vidgate keys create --admin``) sees
every tenant (jobs, cost by offering and by tenant). Admin is a property of the key, stored
with it, never inferred from a tenant's name (a tenant called "admin" is just a tenant).
Provider health is the gateway's, not a tenant's, so every key sees it: it says which routes
are usable, nothing about anyone's traffic.

``/v1/dashboard/jobs/{id}/frames?t=`` serves the thumbnails of the job's quality panel: a
frame of the stored video at a timestamp some stage check flagged, decoded with PyAV and
encoded as a small JPEG. Only flagged timestamps are served (it is not a general frame
grabber), and a job of another tenant is "not found", like every job route."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles

from vidgate.billing.accounts import KeyInfo
from vidgate.catalog.loader import Catalog
from vidgate.errors import NotFound
from vidgate.routing.policies import POLICIES
from vidgate.server.deps import caller, gateway
from vidgate.server.errors import ApiError
from vidgate.types import Job, JobState, QualityTier, Resolution, parse_aspect

router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])
#: thumbnails' short side in pixels (a strip of them sits under the checks table)
THUMB_SHORT_SIDE = 90


@router.get("/summary")
def summary(
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
    offerings: Annotated[bool, Query(description="include the form's offering list")] = True,
) -> dict[str, Any]:
    """One refresh of the dashboard. ``offerings=false`` leaves out the catalog's offering
    list (the page asks for it once, then polls without it)."""
    gw = gateway(request)
    admin = key.admin
    scope = None if admin else key.tenant

    counts = gw.store.counts(scope)
    by_state = {s.value: counts.get(s.value, 0) for s in JobState}
    active = sum(n for s, n in by_state.items() if not JobState(s).terminal)
    cat = gw.catalog
    return {
        "tenant": key.tenant,
        "admin": admin,
        "sandbox": gw.sandbox,
        "jobs": {"by_state": by_state, "total": sum(by_state.values()), "active": active},
        "cost": _cost(gw.accounts.spend(scope), key.tenant),
        "health": _health(cat, gw.health.snapshot()),
        "offerings": _offerings(cat) if offerings else [],
        "form": {
            "policies": sorted(POLICIES),
            "resolutions": [r.value for r in Resolution],
            "aspect_ratios": _aspect_ratios(cat),
            "qualities": [q.value for q in QualityTier],
        },
    }


@router.get(
    "/jobs/{job_id}/frames",
    responses={200: {"content": {"image/jpeg": {}}, "description": "the flagged frame"}},
)
def flagged_frame(
    job_id: Annotated[str, Path(max_length=64)],
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
    t: Annotated[float, Query(ge=0, le=86_400, description="a flagged timestamp (s)")],
) -> Response:
    """One frame a quality check flagged, as a JPEG thumbnail."""
    gw = gateway(request)
    try:
        job = gw.store.get(job_id, None if key.admin else key.tenant)
    except NotFound:
        raise ApiError(404, "not_found", f"job {job_id!r} not found") from None
    if job.deleted or not job.assets:
        raise ApiError(404, "not_found", f"job {job_id!r} has no stored video")
    if not any(abs(t - f) < 5e-4 for f in flagged_times(job)):
        raise ApiError(
            404, "not_found", f"no check of job {job_id} flagged a frame at {t:g} s", param="t"
        )
    from vidgate.stages._frames import FrameError, jpeg, sample_frames

    try:
        with gw.storage.open(gw.storage_path(job.assets[0].uri)) as f:
            [frame] = sample_frames(f, [t], short_side=THUMB_SHORT_SIDE)
    except FrameError as e:
        raise ApiError(409, "undecodable", f"job {job_id}'s video: {e}") from None
    return Response(
        jpeg(frame),
        media_type="image/jpeg",
        headers={"cache-control": "private, max-age=3600"},
    )


def flagged_times(job: Job) -> set[float]:
    """Every timestamp any stage check stored as flagged on ``job``."""
    out: set[float] = set()
    for result in job.stages.values():
        for check in result.get("checks") or []:
            if isinstance(check, dict):
                out.update(float(x) for x in check.get("frames_s") or [])
    return out


def _cost(spend: list[dict[str, Any]], tenant: str) -> dict[str, Any]:
    """Spend by offering (summed over the tenants in view) and by tenant, largest first."""
    by_offering: dict[str, dict[str, Any]] = {}
    for entry in spend:
        for oid, row in entry["by_offering"].items():
            agg = by_offering.setdefault(oid, {"offering": oid, "usd": 0.0, "clips": 0})
            agg["usd"] += row["usd"]
            agg["clips"] += row["clips"]
            # reported vs estimated (billing/reported.py): what providers said they charged
            for k in ("estimated_usd", "reported_usd", "reported_clips", "over_reservation"):
                agg[k] = round(agg.get(k, 0) + row.get(k, 0), 6)
    offerings = sorted(
        ({**v, "usd": round(v["usd"], 6)} for v in by_offering.values()),
        key=lambda v: (-v["usd"], v["offering"]),
    )
    tenants = [
        {
            "tenant": e["tenant"],
            "spent_usd": e["spent_usd"],
            "charged_usd": e["charged_usd"],
            "reserved_usd": e["reserved_usd"],
            "budget_usd": e["budget_usd"],
            "clips": sum(r["clips"] for r in e["by_offering"].values()),
        }
        for e in spend
    ]
    if not tenants:  # a tenant with no row yet still sees itself, at zero
        tenants = [
            {
                "tenant": tenant,
                "spent_usd": 0.0,
                "charged_usd": 0.0,
                "reserved_usd": 0.0,
                "budget_usd": None,
                "clips": 0,
            }
        ]
    tenants.sort(key=lambda t: (-t["spent_usd"], t["tenant"]))
    return {
        "total_usd": round(sum(t["spent_usd"] for t in tenants), 6),
        "by_offering": offerings,
        "by_tenant": tenants,
    }


def _health(cat: Catalog, snap: dict[str, Any]) -> dict[str, Any]:
    """Every provider of the catalog with its breaker state; one that has seen no call yet
    has no breaker and reads as closed, ``observed: false``."""
    offering_states: dict[str, str] = snap["offerings"]
    provider_states: dict[str, str] = snap["providers"]
    providers = sorted({o.provider for o in cat.offerings.values()} | set(provider_states))
    not_closed: dict[str, list[str]] = {}
    for oid, st in sorted(offering_states.items()):
        if st != "closed" and oid in cat.offerings:
            not_closed.setdefault(cat.offerings[oid].provider, []).append(oid)
    return {
        "providers": [
            {
                "provider": p,
                "state": provider_states.get(p, "closed"),
                "observed": p in provider_states,
                "offerings_not_closed": not_closed.get(p, []),
            }
            for p in providers
        ],
        "offerings": dict(sorted(offering_states.items())),
    }


def _offerings(cat: Catalog) -> list[dict[str, Any]]:
    """The offerings a job can be pinned to today (enabled, within their availability)."""
    today = datetime.now(UTC).date()
    return [
        {
            "id": o.id,
            "model": o.model,
            "model_name": cat.models[o.model].name,
            "provider": o.provider,
            "resolutions": [r.value for r in o.capabilities.resolutions],
            "audio": o.capabilities.audio,
        }
        for o in sorted(cat.offerings.values(), key=lambda o: (o.model, o.id))
        if o.enabled and o.available_on(today)
    ]


def _aspect_ratios(cat: Catalog) -> list[str]:
    """Every ratio some offering takes, widest first."""
    ratios = {a for o in cat.offerings.values() for a in o.capabilities.aspect_ratios}

    def width(a: str) -> float:
        w, h = parse_aspect(a)
        return w / h

    return sorted(ratios, key=lambda a: (-width(a), a))


def static_files() -> StaticFiles:
    """The dashboard's scripts and stylesheet (``/static``), from the installed package."""
    folder = resources.files("vidgate.server") / "static"
    return StaticFiles(directory=str(folder))

"""`deps.caller` outside the gate: a route that asks for the caller's key but is not under
/v1 (where the gate authenticates before the body is read) is refused, never guessed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends

from tests.server.conftest import sandbox_settings
from vidgate.billing.accounts import KeyInfo
from vidgate.gateway import Gateway
from vidgate.server.app import create_app
from vidgate.server.deps import caller


async def test_a_keyed_route_outside_v1_is_refused_with_401(tmp_path: Path) -> None:
    gw = Gateway(sandbox_settings(tmp_path / "home"))
    app = create_app(gateway=gw, run_worker=False)

    @app.get("/internal/whoami")
    def whoami(key: Annotated[KeyInfo, Depends(caller)]) -> dict[str, str]:
        return {"tenant": key.tenant}

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/internal/whoami", headers={"Authorization": "Bearer vg_x"})
    finally:
        gw.close()
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == "missing_api_key"
    assert body["detail"] == "this route needs a vidgate key under /v1"

"""Tenant isolation on every story route: another tenant's story answers exactly as an
unknown id does (404, same body but for the id), and its cancel changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.stories.test_story_api import Api, _story, api  # noqa: F401  (the fixture)

ROUTES = [
    ("GET", "/v1/stories/{id}"),
    ("GET", "/v1/stories/{id}/events"),
    ("GET", "/v1/stories/{id}/content"),
    ("GET", "/v1/stories/{id}/shots/1/content"),
    ("GET", "/v1/stories/{id}/record"),
    ("POST", "/v1/stories/{id}/cancel"),
]


def _answer(c: httpx.Client, method: str, path: str, sid: str) -> tuple[int, str]:
    r = c.request(method, path.format(id=sid))
    return r.status_code, r.text.replace(sid, "<id>")


def test_another_tenants_story_is_an_unknown_story_on_every_route(
    tmp_path: Path,
    api: Api,  # noqa: F811
) -> None:
    api.sandbox.core.time_scale = 5.0  # the story is still running while it is probed
    with api.client("alice", budget=5.0) as alice, api.client("mallory") as mallory:
        r = alice.post("/v1/stories", json=_story(tmp_path))
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        unknown = "story_" + "0" * (len(sid) - len("story_"))
        for method, path in ROUTES:
            theirs = _answer(mallory, method, path, sid)
            assert theirs[0] == 404, (path, theirs)
            assert theirs == _answer(mallory, method, path, unknown), path
        assert sid not in mallory.get("/v1/stories").text
        # mallory's cancel did nothing: alice's story still runs, and alice can cancel it
        assert alice.get(f"/v1/stories/{sid}").json()["state"] in ("queued", "running")
        assert alice.post(f"/v1/stories/{sid}/cancel").status_code == 200


def test_a_finished_storys_views_never_show_our_storage(
    tmp_path: Path,
    api: Api,  # noqa: F811
) -> None:
    root = str(api.gw.storage.root)
    with api.client("alice", budget=5.0) as alice:
        sid = alice.post("/v1/stories", json=_story(tmp_path)).json()["id"]
        deadline = time.monotonic() + 120
        while (doc := alice.get(f"/v1/stories/{sid}").json())["state"] != "succeeded":
            assert doc["state"] not in ("failed", "canceled", "expired"), doc
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        record = alice.get(f"/v1/stories/{sid}/record")
        assert record.status_code == 200
        assert record.json()["matches_ledger"] is True
        assert len(record.json()["shots"]) == 2
        for text in (alice.get(f"/v1/stories/{sid}").text, record.text):
            assert root not in text
            assert "file://" not in text
            assert f"{api.gw.storage.protocol}://" not in text

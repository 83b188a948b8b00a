"""`vidgate mcp` over stdio, driven by the official SDK's client as an agent would drive it:
the server is a real process (``python -m vidgate mcp``) spawned by the SDK's stdio_client."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import av
import pytest
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent
from PIL import Image

from mcp import Client
from tests.mcp.conftest import ROOT, server_env

TOOLS = {
    "route",
    "generate",
    "get_job",
    "follow",
    "cancel_job",
    "price_workload",
    "plan_story",
    "story_schema",
    "run_story",
    "get_story",
    "follow_story",
}

STORY = """title: Fox at dawn
resolution: 480p
shots:
  - prompt: A red fox trots across a frosty meadow at dawn
    duration: 3
  - prompt: The fox stops and looks back at the camera
    duration: 2
    transition: crossfade
"""


def data(r: CallToolResult) -> dict[str, Any]:
    assert not r.is_error, r.content
    out: dict[str, Any] | None = r.structured_content
    assert out is not None
    return out


def error_line(r: CallToolResult) -> str:
    assert r.is_error
    assert len(r.content) == 1
    block = r.content[0]
    assert isinstance(block, TextContent)
    assert "\n" not in block.text
    assert "Traceback" not in block.text
    return block.text


def stdio(home: Path, python: str) -> Client:
    params = StdioServerParameters(
        command=python, args=["-m", "vidgate", "mcp"], env=server_env(home), cwd=str(ROOT)
    )
    return Client(params, read_timeout_seconds=240)


async def test_an_agent_routes_generates_and_follows_a_job_on_the_sandbox(
    tmp_path: Path, python: str
) -> None:
    async with stdio(tmp_path / "home", python) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        gen_tool = next(t for t in listed.tools if t.name == "generate")
        assert gen_tool.description
        assert "job id" in gen_tool.description
        assert gen_tool.input_schema["required"] == ["prompt"]
        assert "duration_s" in gen_tool.input_schema["properties"]

        # no provider key in the server's environment: the sandbox serves every offering
        route = data(await client.call_tool("route", {"prompt": "a red fox", "duration_s": 5}))
        assert route["sandbox"] is True
        assert route["feasible"] >= 1
        chosen = route["chosen"]
        assert chosen["estimated_cost_usd"] > 0
        assert all(
            r["estimated_cost_usd"] >= chosen["estimated_cost_usd"] for r in route["runners_up"]
        )
        assert all(r["reasons"] for r in route["rejected"])

        job = data(
            await client.call_tool(
                "generate", {"prompt": "a red fox", "duration_s": 4, "resolution": "480p"}
            )
        )
        assert job["state"] == "queued"
        assert job["job_id"].startswith("job_")

        seen: list[tuple[float, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, message))

        done = data(
            await client.call_tool(
                "follow", {"job_id": job["job_id"], "timeout_s": 120}, progress_callback=on_progress
            )
        )
        assert done["state"] == "succeeded"
        assert done["timed_out"] is False
        assert done["cost_usd"] == pytest.approx(job["estimated_cost_usd"])
        assert seen[-1] == (1.0, "succeeded")
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        (asset,) = done["assets"]
        with av.open(asset["path"]) as c:
            s = c.streams.video[0]
            assert (s.codec_context.width, s.codec_context.height) == (854, 480)
            assert sum(1 for _ in c.decode(s)) == round(asset["duration_s"] * asset["fps"])
        again = data(await client.call_tool("get_job", {"job_id": job["job_id"]}))
        assert again["state"] == "succeeded"
        assert again["assets"][0]["sha256"] == asset["sha256"]


BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    ("route", {"prompt": "fox", "duration_s": "long"}, "duration_s"),
    ("route", {"duration_s": 5}, "prompt"),
    ("route", {"prompt": "fox", "resolution": "999p"}, "resolution"),
    ("route", {"prompt": "fox", "policy": "random"}, "policy 'random'"),
    ("generate", {"prompt": "fox", "quality": "stellar"}, "quality 'stellar'"),
    ("generate", {"prompt": "fox", "image_url": "/etc/passwd"}, "image_url"),
    ("generate", {"prompt": "fox", "image_url": "http://127.0.0.1/a.png"}, "is not allowed"),
    ("route", {"prompt": "fox", "image_url": "data:image/png;base64,aGVsbG8="}, "image_url"),
    ("generate", {"prompt": "fox", "offerings": ["no-such-offering"]}, "no-such-offering"),
    ("get_job", {"job_id": "job_missing"}, "job_missing"),
    ("follow", {"job_id": "job_missing", "timeout_s": 0}, "timeout_s"),
    ("price_workload", {"workload": "daily_volume: lots\n"}, "workload"),
    ("plan_story", {"story": "title: x\nshots:\n  - prompt: a\n    duration: -3\n"}, "story:4"),
    ("get_story", {"story_id": "story_missing"}, "story_missing"),
    ("no_such_tool", {}, "no_such_tool"),
]


async def test_bad_tool_input_is_a_one_line_tool_error_and_the_server_lives_on(
    tmp_path: Path, python: str
) -> None:
    async with stdio(tmp_path / "home", python) as client:
        for tool, args, words in BAD_INPUT:
            line = error_line(await client.call_tool(tool, args))
            assert words in line, (tool, args, line)
        # the same server still answers, and nothing was submitted
        assert data(await client.call_tool("route", {"prompt": "fox"}))["feasible"] >= 1
        # a real image inline is taken (its bytes decide its type, not the label)
        png = io.BytesIO()
        Image.new("RGB", (64, 36), (200, 80, 20)).save(png, "PNG")
        url = "data:text/plain;base64," + base64.b64encode(png.getvalue()).decode()
        routed = data(await client.call_tool("route", {"prompt": "fox", "image_url": url}))
        assert routed["feasible"] >= 1


async def test_an_agent_prices_a_workload_and_plans_and_runs_a_story(
    tmp_path: Path, python: str
) -> None:
    workload = (ROOT / "examples" / "workloads" / "router-platform-mix.yaml").read_text()
    async with stdio(tmp_path / "home", python) as client:
        priced = data(await client.call_tool("price_workload", {"workload": workload}))
        assert priced["totals"]["usd_per_day"] > 0
        assert priced["totals"]["usd_per_month"] == pytest.approx(
            priced["totals"]["usd_per_day"] * priced["days_per_month"], abs=0.01
        )

        schema = data(await client.call_tool("story_schema", {}))
        assert {"title", "shots"} <= set(schema["properties"])

        plan = data(await client.call_tool("plan_story", {"story": STORY}))
        assert plan["summary"]["shots"] == 2
        assert plan["summary"]["estimated_cost_usd"] > 0
        # 3 s + 2 s less the default crossfade
        assert plan["summary"]["film_s"] < 5.0

        started = data(await client.call_tool("run_story", {"story": STORY}))
        assert started["created"] is True
        assert started["state"] == "queued"
        film = data(
            await client.call_tool(
                "follow_story", {"story_id": started["story_id"], "timeout_s": 240}
            )
        )
        assert film["state"] == "succeeded", film["error"]
        assert set(film["segments"]) == {"0.0", "1.0"}
        assert all(s["state"] == "succeeded" for s in film["segments"].values())
        with av.open(film["film"]["path"]) as c:
            s = c.streams.video[0]
            frames = sum(1 for _ in c.decode(s))
        assert frames == round(plan["summary"]["film_s"] * 24) == film["film"]["frames"]


async def test_a_provider_key_in_the_environment_means_live_offerings(
    tmp_path: Path, python: str
) -> None:
    from vidgate.catalog.loader import load_catalog

    keyed = next(o for o in load_catalog().offerings.values() if o.credential_env)
    env = server_env(tmp_path / "home", **dict.fromkeys(keyed.credential_env, "not-a-real-key"))
    params = StdioServerParameters(
        command=python, args=["-m", "vidgate", "mcp"], env=env, cwd=str(ROOT)
    )
    async with Client(params, read_timeout_seconds=120) as client:
        # routing only reads the catalog: nothing reaches the provider with the fake key
        route = data(await client.call_tool("route", {"prompt": "fox", "offerings": [keyed.id]}))
        assert route["sandbox"] is False

"""The `vidgate` command as a user runs it: a real process, the shipped catalog, the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest


def vidgate(
    *args: str,
    home: Path,
    sandbox: bool = True,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update(
        {
            "VIDGATE_HOME": str(home),
            "VIDGATE_SANDBOX_TIME_SCALE": "0.003",
            "VIDGATE_POLL_INTERVAL_S": "0.05",
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
    )
    if sandbox:
        env["VIDGATE_SANDBOX"] = "1"
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "vidgate", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_generate_writes_a_playable_mp4_and_a_report(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    proc = vidgate(
        "generate", "a fox in the snow", "--duration", "5", "-o", str(out), home=tmp_path / "h"
    )
    assert proc.returncode == 0, proc.stderr
    assert "route (cheapest)" in proc.stdout
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        fps = float(v.average_rate)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["state"] == "succeeded"
    assert report["synthetic"] is True
    for key in ("job", "offering", "estimated_cost_usd", "cost_usd", "latency_s", "attempts"):
        assert report[key] is not None, key
    asset = report["assets"][0]
    assert asset["frames"] == frames == round(asset["duration_s"] * fps)
    assert report["cost_usd"] == report["estimated_cost_usd"]
    assert report["route"]["chosen"]["offering"] == report["offering"]


def test_generate_json_with_audio(tmp_path: Path) -> None:
    out = tmp_path / "a.mp4"
    proc = vidgate(
        "generate",
        "two chefs argue",
        "--audio",
        "--duration",
        "8",
        "--json",
        "-o",
        str(out),
        home=tmp_path / "h",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["assets"][0]["has_audio"] is True
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1


def test_route_json_lists_ranked_and_rejected(tmp_path: Path) -> None:
    proc = vidgate(
        "route",
        "x",
        "--duration",
        "8",
        "--resolution",
        "1080p",
        "--audio",
        "--json",
        home=tmp_path / "h",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    costs = [c["estimated_cost_usd"] for c in data["ranked"]]
    assert costs == sorted(costs)
    assert all(c["audio"] for c in data["ranked"])
    assert data["chosen"]["offering"] == data["ranked"][0]["offering"]
    reasons = {r["offering"]: r["reasons"] for r in data["rejected"]}
    sora = [oid for oid in reasons if oid.startswith("sora-2")]
    assert sora, "Sora offerings must be rejected after the API's end date"
    assert all(any("retired" in why for why in reasons[oid]) for oid in sora)


def test_route_explain_shows_rejections(tmp_path: Path) -> None:
    proc = vidgate("route", "x", "--explain", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    assert "rejected" in proc.stdout
    assert "retired by the provider after 2026-09-24" in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["route", "x", "--resolution", "5k"], ["--resolution", "5k", "480p"]),
        (["route", "x", "--duration", "-3"], ["--duration", "greater than 0"]),
        (["route", "x", "--aspect", "wide"], ["--aspect", "W:H"]),
        (["route", "x", "--quality", "ultra"], ["--quality", "draft, standard or premium"]),
        (["route", "x", "--policy", "smartest"], ["unknown policy", "cheapest"]),
        (["route", "x", "--offering", "veo-9"], ["unknown offering 'veo-9'"]),
        (["route", "x", "--duration", "abc"], ["--duration", "valid number"]),
        (["route", "x", "--image", "/nonexistent.png"], ["--image", "neither"]),
        (["generate", "x", "-o", "out.webm"], ["--output", ".mp4"]),
        (["models", "show", "nope-1"], ["unknown model 'nope-1'"]),
        (
            ["route", "x", "--resolution", "4k", "--audio", "--max-cost", "0.05"],
            [
                "no offering gives 5s 4k 16:9 with native audio under $0.05",
                "cheapest that meets the rest",
            ],
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], fragments) -> None:
    assert_one_line_error(vidgate(*args, home=tmp_path / "h"), *fragments)


def test_no_route_without_keys_outside_sandbox(tmp_path: Path) -> None:
    proc = vidgate("route", "x", home=tmp_path / "h", sandbox=False)
    assert_one_line_error(proc, "no offering gives", "no provider key is set", "--sandbox")


def test_models_json_filters(tmp_path: Path) -> None:
    proc = vidgate("models", "--json", "--audio", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows
    assert all(r["audio"] in ("optional", "always") for r in rows)
    proc = vidgate("models", "--json", "--open-weights", "--max-price", "0.05", home=tmp_path / "h")
    rows = json.loads(proc.stdout)
    assert rows
    assert all(r["open_weights"] and r["usd_per_second_from"] <= 0.05 for r in rows)


def test_models_table_and_show(tmp_path: Path) -> None:
    proc = vidgate("models", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    assert "offering" in proc.stdout
    proc = vidgate("models", "show", "sora-2", "--json", home=tmp_path / "h")
    data = json.loads(proc.stdout)
    assert data["model"]["id"] == "sora-2"
    assert all(o["available_until"] == "2026-09-24" for o in data["offerings"])


def test_generate_quality_gate_falls_back_from_a_defective_offering(tmp_path: Path) -> None:
    """`--on-fail fallback`: the sandbox blacks out every clip of the cheapest offering; the
    gate rejects it (still billed: the provider made it) and the next offering delivers."""
    import socket
    import time

    import httpx

    home = tmp_path / "h"
    first = json.loads(vidgate("route", "a fox", "--duration", "5", "--json", home=home).stdout)[
        "chosen"
    ]["offering"]
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"rules": [{"kind": "black", "rate": 1.0, "offering": first}]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update({"VIDGATE_HOME": str(tmp_path / "sb"), "VIDGATE_SANDBOX_TIME_SCALE": "0.003"})
    argv = [sys.executable, "-m", "vidgate", "sandbox", "serve", "--port", str(port)]
    sandbox = subprocess.Popen(
        [*argv, "--faults", str(faults)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        out = tmp_path / "gated.mp4"
        proc = vidgate(
            "generate", "a fox", "--duration", "5", "--on-fail", "fallback", "-o", str(out),
            home=home, extra_env={"VIDGATE_SANDBOX_URL": url},
        )  # fmt: skip
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["offering"] != first
    history = report["quality"]["history"]
    assert [h["verdict"] for h in history] == ["fail", "pass"]
    assert history[0]["offering"] == first
    assert "checks.black_frames" in history[0]["failed"]
    assert report["stages"]["checks"]["verdict"] == "pass"
    # both clips were made, so both are billed
    assert report["cost_usd"] == pytest.approx(
        sum(a["cost_usd"] for a in report["attempts"]), abs=1e-9
    )
    assert len(report["attempts"]) == 2
    assert report["attempts"][0]["cost_usd"] > 0
    assert "checks pass" in proc.stdout


def test_generate_quality_gate_bad_action_is_one_line(tmp_path: Path) -> None:
    proc = vidgate("generate", "a fox", "--on-fail", "retry", "-o", str(tmp_path / "x.mp4"),
                   home=tmp_path / "h")  # fmt: skip
    assert_one_line_error(proc, "--on-fail 'retry'", "regenerate", "deliver_flagged")
    proc = vidgate("submit", "a fox", "--min-score", "11", home=tmp_path / "h")
    assert_one_line_error(proc, "--min-score")

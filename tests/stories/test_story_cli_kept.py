"""`vidgate story` when the story ends without its film: exit code 1 with the reason, and the
shots it finished and its record written beside where the film would have been (they were
paid for). A real process, a real sandbox over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.stories.story_helpers import probe_video
from vidgate.catalog.loader import load_catalog
from vidgate.sandbox.app import SandboxServer

STORY = """\
title: Half a film
resolution: 480p
shots:
  - {prompt: A quick glance at a fox, duration: 1}
  - {prompt: "[unsafe] a long look at something refused", duration: 8}
"""


def test_a_failed_story_writes_the_shots_it_finished_and_its_record(tmp_path: Path) -> None:
    # latencies scaled so the 1 s shot finishes well before the 8 s one is refused
    sb = SandboxServer(tmp_path / "sandbox", load_catalog(), time_scale=0.04).start()
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    out = tmp_path / "film.mp4"
    env = {
        **os.environ,
        "VIDGATE_HOME": str(tmp_path / "home"),
        "VIDGATE_SANDBOX_URL": sb.url,
        "VIDGATE_POLL_INTERVAL_S": "0.1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vidgate", "story", str(story), "-o", str(out), "--sandbox"],
            env=env,
            capture_output=True,
            timeout=240,
        )
    finally:
        sb.stop()
    err = done.stderr.decode()
    assert done.returncode == 1, err[-2000:]
    assert "failed: shot 2 segment 1 failed" in err
    assert "kept 1 finished shot(s)" in err
    assert "Traceback" not in err
    assert not out.exists()  # no film
    [shot] = sorted((tmp_path / "film.shots").glob("shot-*.mp4"))
    assert shot.name == "shot-01.mp4"
    assert probe_video(shot).frames >= 1
    record = json.loads((tmp_path / "film.record.json").read_text())
    assert record["matches_ledger"] is True
    assert record["shots"][0]["file"] is not None
    assert record["shots"][1]["file"] is None

"""A story survives its process being SIGKILLed mid-story: running the same story file again
resumes it; no finished shot is generated again (the sandbox's own create count) and the
film has the planned length. Real processes (`vidgate story`), a real sandbox over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.stories.story_helpers import probe_video
from vidgate.catalog.loader import load_catalog
from vidgate.jobs.store import JobStore
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Settings
from vidgate.stories.store import StoryStore
from vidgate.types import JobState

STORY = """\
title: Crash course
resolution: 480p
shots:
  - {prompt: A quick glance at a fox, duration: 1}
  - {prompt: A long look at the meadow at dawn, duration: 8}
  - {prompt: The fox trots away over the frost, duration: 8}
"""


def _cli(home: Path, sandbox_url: str, story: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "VIDGATE_HOME": str(home),
        "VIDGATE_SANDBOX_URL": sandbox_url,
        "VIDGATE_POLL_INTERVAL_S": "0.1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "vidgate", "story", str(story), "-o", str(out), "--sandbox"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_sigkill_mid_story_resumes_without_generating_a_finished_shot_again(
    tmp_path: Path,
) -> None:
    # latencies scaled so the 1 s shot finishes seconds before the 8 s ones
    sb = SandboxServer(tmp_path / "sandbox", load_catalog(), time_scale=0.08).start()
    home = tmp_path / "home"
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    out = tmp_path / "film.mp4"
    try:
        first = _cli(home, sb.url, story, out)
        db = Settings(home=home).resolved_database_url()
        deadline = time.monotonic() + 120
        store: JobStore | None = None
        killed_with: list[str] = []
        while time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
            if store is None:
                if not (home / "vidgate.db").exists():
                    continue
                store = JobStore(db, migrate=False)
            try:
                docs = StoryStore(store.engine).list()
            except Exception:
                continue  # the schema is still being created
            if not docs:
                continue
            jobs = [store.get(j) for j in docs[0].children.values()]
            done = [j for j in jobs if j.state is JobState.SUCCEEDED]
            if done and len(done) < len(docs[0].plan.shots):
                first.send_signal(signal.SIGKILL)
                killed_with = [j.id for j in done]
                break
        first.wait(timeout=30)
        assert killed_with, "the story ended before a shot finished; no kill happened mid-story"
        assert first.returncode == -signal.SIGKILL
        assert not out.exists()

        second = _cli(home, sb.url, story, out)
        _, err = second.communicate(timeout=240)
        assert second.returncode == 0, err.decode()[-2000:]
        assert b"resuming story" in err

        assert store is not None
        [doc] = StoryStore(store.engine).list()
        assert doc.state.value == "succeeded"
        # every segment was created at the sandbox exactly once, across both processes
        stats = sb.core.store.stats()
        assert stats["creates"] == sum(len(s.segments) for s in doc.plan.shots)
        assert stats["duplicate_submissions"] == 0
        # the shots finished before the kill are the same jobs, created once
        for jid in killed_with:
            assert jid in doc.children.values()
            assert len(store.get(jid).attempts) == 1
        # the CLI wrote every shot's file and the record beside the film
        shots = sorted((tmp_path / "film.shots").glob("shot-*.mp4"))
        assert [p.name for p in shots] == [f"shot-{n:02d}.mp4" for n in (1, 2, 3)]
        record = json.loads((tmp_path / "film.record.json").read_text())
        assert record["story"] == doc.id
        assert record["matches_ledger"] is True
        film = probe_video(out)
        assert abs(film.frames - doc.plan.film_frames()) <= 1
        store.close()
    finally:
        sb.stop()

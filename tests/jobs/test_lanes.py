"""The store's own thread lane (jobs/lanes.py): its calls never wait behind work that holds
every thread of the event loop's default pool (decodes, probes, signing)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.server.conftest import sandbox_settings
from vidgate.gateway import Gateway
from vidgate.jobs.lanes import Lane
from vidgate.types import JobState, Resolution, VideoRequest


async def test_a_lane_call_finishes_while_the_default_pool_is_full() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(2))
    release = threading.Event()
    running: list[int] = []
    both = asyncio.Event()

    def hold() -> bool:
        running.append(1)
        if len(running) == 2:
            loop.call_soon_threadsafe(both.set)
        return release.wait(timeout=60)

    # both default threads held, one more call queued behind them
    held = [loop.run_in_executor(None, hold) for _ in range(3)]
    await asyncio.wait_for(both.wait(), 30)
    lane = Lane("vidgate-store", 2)
    try:
        name = await asyncio.wait_for(lane.run(lambda: threading.current_thread().name), 30)
        # it ran in the lane's own thread while every default thread was still held
        assert name.startswith("vidgate-store")
        assert len(running) == 2
        assert not any(f.done() for f in held)
    finally:
        release.set()
        await asyncio.gather(*held)
        lane.close()


async def test_a_closed_lane_makes_new_threads_on_its_next_call() -> None:
    lane = Lane("lane-x", 1)
    assert await lane.run(lambda a, b=0: a + b, 2, b=3) == 5
    lane.close()
    assert await lane.run(lambda: threading.current_thread().name) == "lane-x_0"
    lane.close()


def test_a_lane_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        Lane("none", 0)


async def test_the_worker_writes_job_state_in_the_store_lane(tmp_path: Path) -> None:
    gw = Gateway(sandbox_settings(tmp_path))
    try:
        seen: list[str] = []
        store = gw.store
        original = store.save

        def save(*args: object, **kw: object) -> object:
            seen.append(threading.current_thread().name)
            return original(*args, **kw)  # type: ignore[arg-type]

        store.save = save  # type: ignore[method-assign,assignment]
        job = gw.submit(VideoRequest(prompt="a lane", duration_s=4, resolution=Resolution.R480P))
        done = await gw.run(job.id)
        assert done.state is JobState.SUCCEEDED, done.error
        assert seen
        assert all(n.startswith("vidgate-store") for n in seen), seen
    finally:
        await gw.aclose()
        gw.close()

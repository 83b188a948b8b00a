"""Jobs, the bounded queue in front of the device, and the worker thread(s) that drain it.

One worker per device: one job on the device at a time. (Under Ray, one dispatcher per
replica, each waiting on its replica.) Finished jobs and their MP4s are kept in memory for
the gateway to fetch; the oldest finished ones are dropped past ``keep_finished``.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidgate.local.protocol import ApiError, JobSpec, Shape
from vidgate.local.runner import Cancelled, OutOfMemory, PipelineFailed, RunResult

log = logging.getLogger("vidgate.local")

#: runs one job: (spec, progress(done, total), cancelled()) -> RunResult
RunFn = Callable[[JobSpec, Callable[[int, int], None], Callable[[], bool]], RunResult]

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Job:
    id: str
    model: str
    spec: JobSpec
    shape: Shape
    created_at: int
    status: str = "queued"
    progress: int = 0
    completed_at: int | None = None
    compute_seconds: float | None = None
    cost_usd: float | None = None
    error: dict[str, str] | None = None
    content: bytes | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Stats:
    jobs: int = 0
    failed: int = 0
    video_seconds: float = 0.0
    compute_seconds: float = 0.0
    cache_skipped_calls: int = 0

    def wire(self) -> dict[str, Any]:
        per = self.compute_seconds / self.video_seconds if self.video_seconds else None
        return {
            "jobs": self.jobs,
            "failed": self.failed,
            "video_seconds": round(self.video_seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "compute_s_per_video_s": None if per is None else round(per, 4),
            "cache_skipped_calls": self.cache_skipped_calls,
        }


class Board:
    def __init__(
        self,
        run: RunFn,
        *,
        workers: int = 1,
        max_depth: int = 16,
        usd_per_hour: float = 0.0,
        keep_finished: int = 64,
    ) -> None:
        self._run = run
        self.max_depth = max_depth
        self.usd_per_hour = usd_per_hour
        self.keep_finished = keep_finished
        self.stats = Stats()
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._finished: collections.deque[str] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"device-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # -- the API's side ----------------------------------------------------------------

    def submit(self, model: str, spec: JobSpec, shape: Shape) -> Job:
        with self._cv:
            if len(self._queue) >= self.max_depth:
                raise ApiError(
                    429,
                    "queue_full",
                    f"the queue is full ({self.max_depth} jobs waiting); retry later or send "
                    "the job to another server",
                )
            job = Job(
                id=f"vid_{secrets.token_hex(12)}",
                model=model,
                spec=spec,
                shape=shape,
                created_at=int(time.time()),
            )
            self._jobs[job.id] = job
            self._queue.append(job)
            self._cv.notify()
            return job

    def get(self, job_id: str) -> Job:
        with self._cv:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no video {job_id} on this server", param="id")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cv:
            if job.status == "queued":
                self._queue.remove(job)
                self._finish(job, "cancelled", error={"code": "cancelled", "message": "cancelled"})
            elif job.status == "in_progress":
                job.cancel.set()  # the step callback raises at the next denoising step
        return job

    def position(self, job: Job) -> int | None:
        with self._cv:
            if job.status == "in_progress":
                return 0
            if job.status == "queued":
                return self._queue.index(job) + 1
            return None

    def queue(self) -> dict[str, Any]:
        with self._cv:
            return {
                "depth": len(self._queue),
                "max_depth": self.max_depth,
                "running": self._running[0].id if self._running else None,
                "running_jobs": len(self._running),
            }

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # -- the device's side --------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                job.status = "in_progress"
                self._running.append(job)
            self._execute(job)

    def _execute(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            # 100 means the file is ready: the last step still has decoding and encoding.
            job.progress = min(99, done * 100 // max(total, 1))

        try:
            result = self._run(job.spec, progress, job.cancel.is_set)
        except Cancelled:
            self._finish(job, "cancelled", error={"code": "cancelled", "message": "cancelled"})
        except OutOfMemory as e:
            self._finish(job, "failed", error={"code": "out_of_memory", "message": str(e)})
        except PipelineFailed as e:
            self._finish(job, "failed", error={"code": "pipeline_error", "message": str(e)})
        except Exception as e:  # a bug here must fail the job, never kill the worker
            log.exception("job %s failed", job.id)
            self._finish(job, "failed", error={"code": "pipeline_error", "message": repr(e)})
        else:
            with self._cv:
                job.content = result.mp4
                job.compute_seconds = round(result.compute_seconds, 3)
                job.cost_usd = round(result.compute_seconds * self.usd_per_hour / 3600, 6)
                job.progress = 100
                self.stats.jobs += 1
                self.stats.video_seconds += job.shape.seconds
                self.stats.compute_seconds += result.compute_seconds
                self.stats.cache_skipped_calls += result.skipped_calls
                self._finish(job, "completed")

    def _finish(self, job: Job, status: str, error: dict[str, str] | None = None) -> None:
        with self._cv:
            job.status = status
            job.error = error
            job.completed_at = int(time.time())
            if status == "failed":
                self.stats.failed += 1
            if job in self._running:
                self._running.remove(job)
            self._finished.append(job.id)
            while len(self._finished) > self.keep_finished:
                self._jobs.pop(self._finished.popleft(), None)

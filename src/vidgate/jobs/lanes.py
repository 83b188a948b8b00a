"""A thread pool of its own for the job store's blocking calls.

The store is synchronous, so the worker runs its calls in threads. ``asyncio.to_thread`` puts
them in the event loop's default pool, which on a 2-core machine holds 6 threads — shared with
the media work (probing a download, decoding it for the checks, signing it). When a few
thousand jobs finish at once, those take every thread for seconds, and a job's state change
or a lease renewal waited behind them: completions looked late and leases could lapse. The
store gets its own lane, so its short writes never queue behind long decodes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Lane:
    """``await lane.run(fn, *args)``: ``fn`` in one of this lane's threads (made on first
    use; :meth:`close` lets them go and a later call makes new ones)."""

    def __init__(self, name: str, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"a lane needs at least one thread, not {threads}")
        self.name = name
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
        # like asyncio.to_thread: the call sees the caller's context variables
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kw)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

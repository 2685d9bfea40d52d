"""One background loop that deletes expired records every N seconds.

Used by the stores that prune themselves (MongoDB without TTL indexes, PostgreSQL)
and by the manager for stores that do not expire records natively (memory, SQLite),
so that no application has to write its own timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .base import StoreError

log = logging.getLogger("sessions")


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped (None: nothing to do)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class PruneLoop:
    """Runs ``prune()`` every ``interval`` seconds on the running event loop until :meth:`stop`."""

    def __init__(self, prune: Callable[[], Awaitable[int]], interval: float, *, name: str) -> None:
        if interval <= 0:
            raise ValueError("a prune interval must be positive")
        self.prune = prune
        self.interval = float(interval)
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start on the running loop (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._forever(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def run_once(self) -> int:
        """One prune; a failure is logged, never raised (the next run may succeed)."""
        try:
            deleted = await self.prune()
        except StoreError as exc:
            log.warning("%s: pruning expired records failed (will retry): %s", self.name, exc)
            return 0
        except Exception:  # keep pruning whatever happens
            log.exception("%s: pruning expired records failed unexpectedly", self.name)
            return 0
        if deleted:
            log.debug("%s: pruned %d expired records", self.name, deleted)
        return deleted

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.run_once()

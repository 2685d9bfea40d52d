"""Session events between the processes sharing one SQLite file: an events table, polled.

SQLite has no notifications between processes, so events are rows of a table in
the store's own database file::

    CREATE TABLE session_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- the rowid, never reused
        body    TEXT NOT NULL,                       -- the encoded event
        created REAL NOT NULL                        -- Unix seconds, for pruning
    )

Publishing inserts a row (one short write transaction). Each bus reads the rows
after the last id it has seen every ``interval`` seconds (0.1 by default), starting
from the largest id when it starts, so old events are not replayed. SQLite
serialises writers and a row becomes visible only when its transaction commits,
which happens in id order, so a reader never skips a row that commits later.
``AUTOINCREMENT`` keeps ids increasing even when pruning has emptied the table
(a plain rowid would start again after the largest row left, below what readers
have seen). Rows older than ``retention`` seconds (60) are deleted by the readers,
each at most once per ``retention / 6`` seconds.

The bus has its own connection, used from one worker thread of its own, so the
store's worker and its write batches are untouched; the two only share SQLite's
file lock, for the moment of an insert or a prune. It opens the file only after
the store has (``store.setup()``), so the file keeps the store's private mode.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .listening import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN, ListeningBus

__all__ = ["SQLiteBus"]

T = TypeVar("T")

DEFAULT_INTERVAL = 0.1
DEFAULT_RETENTION = 60.0
#: Rows read per query; a reader behind by more reads again at once.
_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS session_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    body    TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_created ON session_events (created);
"""


class SQLiteBus(ListeningBus):
    """Events as rows of ``session_events`` in the store's file; see the module documentation.

    ``prepare`` is awaited before the file is first opened (the store's ``setup``,
    which creates the file with its private mode).
    """

    name = "sqlite events table poll"
    pushes = False

    def __init__(
        self,
        path: str,
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
        interval: float = DEFAULT_INTERVAL,
        retention: float = DEFAULT_RETENTION,
        timeout: float = 5.0,
        origin: str | None = None,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(origin=origin, retry_min=retry_min, retry_max=retry_max)
        if path == ":memory:":
            raise ValueError("an in-memory SQLite database is one process: use LocalBus")
        if interval <= 0 or retention <= 0 or timeout <= 0:
            raise ValueError("interval, retention and timeout must be positive")
        self.path = path
        self.interval = float(interval)
        self.retention = float(retention)
        self.timeout = float(timeout)
        self._prepare = prepare
        self._prepared = False
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        #: The last id read; None until the first connection.
        self._last: int | None = None
        self._pruned = 0.0

    def describe(self) -> str:
        return (f"{self.name} (table session_events in {self.path}, read every {self.interval:g} s, "
                f"kept {self.retention:g} s)")  # fmt: skip

    # -- the connection, on a thread of its own --------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the bus's connection on its thread (opening it first if needed)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-bus")

        def run() -> T:
            if self._conn is None:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                       check_same_thread=False)  # fmt: skip
                # Bodies as bytes: a row that is not UTF-8 is dropped by the decoder, not fatal here.
                conn.text_factory = bytes
                try:
                    conn.executescript(_SCHEMA)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return fn(self._conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def _ensure_file(self) -> None:
        if not self._prepared and self._prepare is not None:
            await self._prepare()
        self._prepared = True

    # -- ListeningBus ------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._ensure_file()

        def newest(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM session_events").fetchone()[0])

        top = await self._call(newest)
        if self._last is None:  # a first start reads from here; a reconnect goes on where it was
            self._last = top

    async def _listen(self) -> None:
        while True:
            began = time.monotonic()
            await self._poll()
            now = time.time()
            if now - self._pruned >= self.retention / 6:
                self._pruned = now
                await self._call(functools.partial(_prune, before=now - self.retention))
            # A read every ``interval``, however long the read took.
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    async def _poll(self) -> None:
        while True:
            rows = await self._call(functools.partial(_read, after=self._last or 0))
            for row_id, body in rows:
                self._last = row_id
                self._receive(body if isinstance(body, bytes) else str(body).encode())
            if len(rows) < _BATCH:
                return

    async def _disconnect(self) -> None:
        if self._conn is not None:
            await self._call(_close)
            self._conn = None

    async def _send(self, text: str) -> None:
        await self._ensure_file()
        now = time.time()
        await self._call(lambda conn: conn.execute(
            "INSERT INTO session_events (body, created) VALUES (?, ?)", (text, now)))  # fmt: skip

    async def close(self) -> None:
        await super().close()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


def _read(conn: sqlite3.Connection, *, after: int) -> list[tuple[int, object]]:
    return conn.execute(
        "SELECT id, body FROM session_events WHERE id > ? ORDER BY id LIMIT ?", (after, _BATCH)
    ).fetchall()


def _prune(conn: sqlite3.Connection, *, before: float) -> None:
    conn.execute("DELETE FROM session_events WHERE created < ?", (before,))

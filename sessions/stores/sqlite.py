"""SQLite store: the embedded default, persistent across restarts, no server to run.

sqlite3 blocks, so every call runs on one dedicated worker thread that owns the
connection; the event loop only awaits. The database file (and its WAL and
shared-memory files, which SQLite creates with the same mode) is private to the
owner: 0600, in a directory created 0700. Each value lives in its own row
(``session_items``), so a save that changes one key rewrites only that row and two
requests changing different keys never overwrite each other. WAL mode lets other
processes read while one writes.

An open connection keeps writing to its file even after that file is deleted or
replaced on disk, and everything written then is gone at the next start. So the
store records the file's identity (device, inode) when it opens it and compares it
with the path before and after every write batch (one ``stat``, about 2 µs): a file
removed or replaced makes every write fail with StoreError (503s, nothing
acknowledged that a restart would lose) and ``ping`` fail (/ready says 503) until
the same file is back at its path. ``ping`` also writes a one-row heartbeat, so a
read-only or full database is "not ready" too, not only an unreachable one.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..bus import EventBus, LocalBus
from .base import KEEP, Clock, Record, Store, window_bounds
from .plumbing import DriverErrors, Lifecycle

T = TypeVar("T")
#: A finished call: its future, and its result or the exception it raised.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]

#: One statement, one row: the record and its items as a JSON object of JSON texts.
_LOAD = (
    "SELECT created, updated, expires, user_id, meta, kind,"
    " (SELECT json_group_object(name, value) FROM session_items WHERE key = s.key)"
    " FROM sessions AS s WHERE key = ? AND expires > ?"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key     TEXT PRIMARY KEY,
    user_id TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    expires REAL NOT NULL,
    meta    TEXT,
    kind    TEXT NOT NULL DEFAULT 'session'
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
CREATE TABLE IF NOT EXISTS session_items (
    key   TEXT NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name    TEXT NOT NULL,
    slot    TEXT NOT NULL,
    hits    INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (name, slot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_expires ON counters (expires);
CREATE TABLE IF NOT EXISTS store_heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
"""


class DatabaseFileGone(sqlite3.OperationalError):
    """The database file was removed from its path or replaced by another file."""


class DatabaseFileGuard:
    """Notices that the file an open SQLite connection writes to is no longer at its path.

    Call :meth:`record` right after opening the connection, then :meth:`check` around
    writes: it raises :class:`DatabaseFileGone` while the path is missing or names
    another file (another device/inode), and passes again once the same file is back
    (renamed or restored in place). Anything else that opens its own connection to the
    same file (the demo's user table, say) can use one too. ``path`` ":memory:" (or a
    guard never recorded) always passes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.identity: tuple[int, int] | None = None

    def record(self) -> None:
        if self.path != ":memory:":
            st = os.stat(self.path)
            self.identity = (st.st_dev, st.st_ino)

    def check(self) -> None:
        if self.identity is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise DatabaseFileGone(f"the database file {self.path} was removed while open") from None
        except OSError as exc:
            raise DatabaseFileGone(f"the database file {self.path} cannot be checked: {exc}") from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise DatabaseFileGone(f"the database file {self.path} was replaced by another file while open")



class _Worker:
    """One thread that owns the connection and runs calls in batches, writes grouped.

    Each wake-up takes every call queued so far and runs them in order. The writes of a
    batch share one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), each inside a
    savepoint of its own, so one failing call rolls back only itself: under load, many
    logins cost one commit instead of one each (group commit). Results go back to the
    event loop in a single callback after the commit, so nobody hears "saved" before
    it is. The loop and the thread swap once per batch, not once per call.
    """

    _STOP = object()

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        disconnect: Callable[[], None],
        check: Callable[[], None] = lambda: None,
    ) -> None:
        self._connect = connect
        self._disconnect = disconnect
        #: Raises (an sqlite3.Error) when writing now would be lost: run before and after
        #: every batch's write transaction.
        self._check = check
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: Started on the first call, so that building a store (before a fork, say)
        #: starts no thread and opens no file.
        self._thread: threading.Thread | None = None
        self._name = name

    def submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, future, loop, write))
        return future

    def _main(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is self._STOP for item in batch)
            calls = [item for item in batch if item is not self._STOP]
            done: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            for loop, outcome in self._run_batch(calls):
                done.setdefault(loop, []).append(outcome)
            for loop, outcomes in done.items():
                try:
                    loop.call_soon_threadsafe(_deliver, outcomes)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    pass
            if stop:
                try:
                    self._disconnect()
                except sqlite3.Error:
                    pass
                return

    def _run_batch(self, calls: list[Any]) -> list[tuple[asyncio.AbstractEventLoop, _Outcome]]:
        try:
            conn = self._connect()
            # Reads too: a file moved away or replaced must not keep answering from the
            # old copy as if nothing happened (one stat per batch, about 2 µs).
            self._check()
        except BaseException as exc:
            return [(loop, (future, None, exc)) for _, future, loop, _ in calls]
        results: list[tuple[asyncio.AbstractEventLoop, _Outcome]] = []
        in_transaction: list[int] = []  # indexes of results that depend on the COMMIT
        open_transaction = False
        for fn, future, loop, write in calls:
            if write and not open_transaction:
                try:
                    self._check()
                    conn.execute("BEGIN IMMEDIATE")
                    open_transaction = True
                except BaseException as exc:  # locked by another process past the timeout
                    results.append((loop, (future, None, exc)))
                    continue
            if not open_transaction:
                try:
                    results.append((loop, (future, fn(conn), None)))
                except BaseException as exc:
                    results.append((loop, (future, None, exc)))
                continue
            in_transaction.append(len(results))
            try:
                conn.execute("SAVEPOINT call")
                try:
                    value = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    raise
                conn.execute("RELEASE call")
            except BaseException as exc:
                results.append((loop, (future, None, exc)))
            else:
                results.append((loop, (future, value, None)))
        if open_transaction:
            try:
                conn.execute("COMMIT")
                # Removed or replaced during the batch: what it wrote went to a file that
                # is no longer at the path, so nobody hears "saved".
                self._check()
            except BaseException as exc:  # nothing of this transaction was saved (or kept): say so
                try:
                    conn.rollback()
                except sqlite3.Error:
                    pass
                for i in in_transaction:
                    loop, (future, _, _) = results[i]
                    results[i] = (loop, (future, None, exc))
        return results

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(self._STOP)
            self._thread.join()


def _deliver(outcomes: list[_Outcome]) -> None:
    for future, result, exc in outcomes:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


_ERRORS = DriverErrors("sqlite", (sqlite3.Error,))
#: Keys per statement in :meth:`SQLiteStore.alive` (SQLite allows 32,766 variables; older builds 999).
_ALIVE_CHUNK = 500


def _meta_text(meta: Mapping[str, str]) -> str | None:
    return json.dumps(dict(meta), separators=(",", ":")) if meta else None


def _meta(text: str | None) -> dict[str, str]:
    return json.loads(text) if text else {}


class SQLiteStore(Store):
    name = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 5.0, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self.path = str(path)
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._guard = DatabaseFileGuard(self.path)
        self._worker = _Worker("sqlite-store", self._connect, self._disconnect, self._guard.check)
        self._lifecycle = Lifecycle(self.name)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0, clock: Clock = time.time) -> SQLiteStore:
        """SQLAlchemy's convention: ``sqlite:///relative.db``, ``sqlite:////absolute.db``."""
        scheme, _, rest = url.partition("://")
        if scheme != "sqlite" or not rest.startswith("/") or len(rest) < 2:
            raise ValueError(f"not a sqlite URL: {url!r} (use sqlite:///path/to/file.db)")
        return cls(rest[1:], timeout=timeout, clock=clock)

    # -- plumbing ------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                _create_private(Path(self.path))
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            _migrate(conn)
            self._guard.record()
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``fn`` on the worker; writes run in the batch's transaction, atomically each.

        After :meth:`close` every call fails at once instead of waiting behind the stop
        for a thread that is gone.
        """
        self._lifecycle.check_open()
        try:
            return await self._worker.submit(fn, write=write)
        except sqlite3.Error as exc:
            raise _ERRORS.translate(fn.__name__, exc) from exc

    # -- Store -----------------------------------------------------------------
    async def load(self, key: str) -> Record | None:
        now = self.clock()

        def load(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(_LOAD, (key, now)).fetchone()
            if row is None:
                return None
            return Record(json.loads(row[6]), row[0], row[1], row[2], row[3], _meta(row[4]), row[5])

        return await self._run(load, write=False)

    async def create(self, key: str, record: Record) -> None:
        def create(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sessions WHERE key = ?", (key,))
            conn.execute(
                "INSERT INTO sessions (key, user_id, created, updated, expires, meta, kind)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, record.user_id, record.created, record.updated, record.expires, _meta_text(record.meta),
                 record.kind),
            )
            conn.executemany(
                "INSERT INTO session_items (key, name, value) VALUES (?, ?, ?)",
                [(key, n, v) for n, v in record.data.items()],
            )

        await self._run(create)

    async def update(
        self,
        key: str,
        *,
        set_items: Mapping[str, str],
        unset_keys: Iterable[str],
        expires: float,
        updated: float,
        user_id: str | None = KEEP,
        meta: Mapping[str, str] = KEEP,
    ) -> bool:
        unset = list(unset_keys)
        assignments = "expires = ?, updated = ?"
        params: list[Any] = [expires, updated]
        if user_id is not KEEP:
            assignments += ", user_id = ?"
            params.append(user_id)
        if meta is not KEEP:
            assignments += ", meta = ?"
            params.append(_meta_text(meta))
        params += [key, self.clock()]
        statement = f"UPDATE sessions SET {assignments} WHERE key = ? AND expires > ?"

        def update(conn: sqlite3.Connection) -> bool:
            if conn.execute(statement, params).rowcount != 1:
                return False
            if set_items:
                conn.executemany(
                    "INSERT OR REPLACE INTO session_items (key, name, value) VALUES (?, ?, ?)",
                    [(key, n, v) for n, v in set_items.items()],
                )
            if unset:
                conn.executemany("DELETE FROM session_items WHERE key = ? AND name = ?", [(key, n) for n in unset])
            return True

        return await self._run(update)

    async def take(self, key: str, names: Iterable[str]) -> dict[str, str] | None:
        wanted = list(dict.fromkeys(names))
        now = self.clock()

        def take(conn: sqlite3.Connection) -> dict[str, str] | None:
            # A write: it runs in the batch's BEGIN IMMEDIATE transaction, which holds the
            # write lock, so another process's take of the same items waits, then finds
            # them gone.
            live = conn.execute("SELECT 1 FROM sessions WHERE key = ? AND expires > ?", (key, now)).fetchone()
            if live is None:
                return None
            taken: dict[str, str] = {}
            for name in wanted:
                row = conn.execute(
                    "DELETE FROM session_items WHERE key = ? AND name = ? RETURNING value", (key, name)
                ).fetchone()
                if row is not None:
                    taken[name] = row[0]
            return taken

        return await self._run(take)

    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        now = self.clock()

        def touch(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE sessions SET expires = ?, updated = ? WHERE key = ? AND expires > ?",
                (expires, updated, key, now),
            )
            return cur.rowcount == 1

        return await self._run(touch)

    async def destroy(self, key: str) -> None:
        def destroy(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sessions WHERE key = ?", (key,))

        await self._run(destroy)

    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        def destroy_user(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND key IS NOT ?", (user_id, keep)
            )
            return cur.rowcount

        return await self._run(destroy_user)

    async def list_user(self, user_id: str, *, kind: str | None = None) -> list[tuple[str, Record]]:
        now = self.clock()

        def list_user(conn: sqlite3.Connection) -> list[tuple[str, Record]]:
            rows = conn.execute(
                "SELECT key, created, updated, expires, meta, kind FROM sessions"
                " WHERE user_id = ? AND expires > ? AND (?3 IS NULL OR kind = ?3) ORDER BY created DESC, key DESC",
                (user_id, now, kind),
            ).fetchall()
            found = []
            for key, created, updated, expires, meta, stored_kind in rows:
                items = conn.execute("SELECT name, value FROM session_items WHERE key = ?", (key,))
                record = Record(dict(items.fetchall()), created, updated, expires, user_id, _meta(meta), stored_kind)
                found.append((key, record))
            return found

        return await self._run(list_user, write=False)

    async def hit(self, name: str, window: float) -> tuple[int, float]:
        slot, end = window_bounds(self.clock(), window)

        def hit(conn: sqlite3.Connection) -> int:
            # One statement: SQLite serialises writers, so every process counts each hit once.
            row = conn.execute(
                "INSERT INTO counters (name, slot, hits, expires) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (name, slot) DO UPDATE SET hits = hits + 1 RETURNING hits",
                (name, slot, end),
            ).fetchone()
            return int(row[0])

        return await self._run(hit), end

    async def reset_hits(self, name: str, window: float) -> None:
        slot, _ = window_bounds(self.clock(), window)

        def reset_hits(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM counters WHERE name = ? AND slot = ?", (name, slot))

        await self._run(reset_hits)

    async def prune(self) -> int:
        now = self.clock()

        def prune(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM counters WHERE expires <= ?", (now,))
            return conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount

        return await self._run(prune)

    async def alive(self, keys: Iterable[str]) -> set[str]:
        """One worker call: ``SELECT key ... WHERE key IN (...) AND expires > now``, 500 keys a statement."""
        wanted = list(dict.fromkeys(keys))
        now = self.clock()

        def alive(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(wanted), _ALIVE_CHUNK):
                chunk = wanted[start : start + _ALIVE_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT key FROM sessions WHERE key IN ({marks}) AND expires > ?", (*chunk, now))
                found.update(row[0] for row in rows)
            return found

        return await self._run(alive, write=False) if wanted else set()

    def event_bus(self) -> EventBus:
        """An events table in the same file, polled (:mod:`sessions.buses.sqlite`); in-process
        for ``:memory:``, which no other process can open."""
        if self.path == ":memory:":
            return LocalBus()
        from ..buses.sqlite import SQLiteBus

        return SQLiteBus(self.path, prepare=self.setup, timeout=self._timeout)

    async def setup(self) -> None:
        def setup(conn: sqlite3.Connection) -> None:
            """Nothing: the worker opens the file and creates the schema before any call."""

        await self._run(setup, write=False)

    async def ping(self) -> None:
        """Fail unless a write would be kept: the file is still the one opened, and writable.

        A one-row heartbeat written in the batch's transaction: a read-only file, a full
        disk or database, a lock held past the timeout or a removed file all fail it.
        """
        now = self.clock()

        def ping(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO store_heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (now,),
            )

        await self._run(ping)

    def _disconnect(self) -> None:
        """Close the connection (on the worker thread, after its last batch)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Finish the queued calls, close the connection, stop the thread."""
        self._lifecycle.close()
        await asyncio.get_running_loop().run_in_executor(None, self._worker.stop)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to the current schema, once.

    In one write transaction, so that processes opening the file at once neither add a
    column twice nor see it half done. Sessions before ``meta`` get none; records before
    ``kind`` are sessions, except those an older version marked in ``meta["kind"]``
    (remember-me tokens): that mark becomes their kind and leaves the meta.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
        if "meta" not in columns:
            conn.execute("ALTER TABLE sessions ADD COLUMN meta TEXT")
        if "kind" not in columns:
            conn.execute("ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'session'")
            conn.execute(
                "UPDATE sessions SET kind = json_extract(meta, '$.kind'), meta = nullif(json_remove(meta, '$.kind'), '{}')"
                " WHERE json_type(meta, '$.kind') = 'text'"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _create_private(path: Path) -> None:
    """Create the database file 0600 (its directory 0700) before SQLite opens it.

    SQLite creates missing files with the process umask (usually world-readable) and
    gives its -wal and -shm files the database file's mode.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)

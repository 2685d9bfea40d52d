"""Users in an SQLite file, table ``users`` (``sqlite:///path``: by default the session store's file).

The path comes from the URL, with the session store's convention
(``sqlite:///relative.db``, ``sqlite:////absolute.db``). Its own connection (SQLite allows several; WAL lets them work side by side), used
from one worker thread at a time behind a lock: user operations are a handful per
login, so a thread hop each is fine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sessions import StoreError
from sessions.stores.sqlite import DatabaseFileGuard

from ..users import EmailTaken, User, UserRepository

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id                  TEXT PRIMARY KEY,
    email               TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    created             REAL NOT NULL,
    credentials_version INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
"""
_COLUMNS = "id, email, name, password_hash, created, credentials_version"


class SQLiteUsers(UserRepository):
    def __init__(self, path: str, *, timeout: float = 5.0) -> None:
        self.path = path
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # The users share the sessions' file: a file removed or replaced under us must
        # fail (503) rather than acknowledge sign-ups that vanish at the next restart.
        self._guard = DatabaseFileGuard(path)

    @classmethod
    def from_url(cls, url: str, *, share: Any = None, timeout: float = 5.0) -> SQLiteUsers:
        """The file the URL names; always a connection of its own (``share`` is not used)."""
        scheme, _, rest = url.partition("://")
        if scheme.lower() != "sqlite" or not rest.startswith("/") or len(rest) < 2:
            raise ValueError(f"not a sqlite URL: {url!r} (use sqlite:///path/to/file.db)")
        return cls(rest[1:], timeout=timeout)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._guard.record()
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                conn = self._connect()
                self._guard.check()
                result = fn(conn)
                self._guard.check()  # an answer written into a removed file is no answer
                return result

        try:
            return await asyncio.to_thread(call)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite users: {exc}") from exc

    @staticmethod
    def _user(row: tuple[str, str, str, str, float, int] | None) -> User | None:
        return None if row is None else User(*row)

    async def setup(self) -> None:
        await self._run(lambda conn: None)

    async def add(self, user: User) -> None:
        try:
            await self._run(
                lambda conn: conn.execute(
                    f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (user.id, user.email, user.name, user.password_hash, user.created, user.credentials_version),
                )
            )
        except sqlite3.IntegrityError as exc:  # the UNIQUE index on email
            raise EmailTaken(user.email) from exc

    async def by_email(self, email: str) -> User | None:
        return self._user(
            await self._run(lambda conn: conn.execute(f"SELECT {_COLUMNS} FROM users WHERE email = ?", (email,)).fetchone())
        )

    async def by_id(self, user_id: str) -> User | None:
        return self._user(
            await self._run(lambda conn: conn.execute(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone())
        )

    async def set_name(self, user_id: str, name: str) -> bool:
        cursor = await self._run(lambda conn: conn.execute("UPDATE users SET name = ? WHERE id = ?", (name, user_id)))
        return cursor.rowcount == 1

    async def set_password(
        self, user_id: str, password_hash: str | None, *, expected_version: int | None = None
    ) -> int | None:
        def change(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "UPDATE users SET password_hash = COALESCE(?, password_hash),"
                " credentials_version = credentials_version + 1"
                " WHERE id = ? AND (? IS NULL OR credentials_version = ?) RETURNING credentials_version",
                (password_hash, user_id, expected_version, expected_version),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._run(change)

    async def set_password_hash_if(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        cursor = await self._run(
            lambda conn: conn.execute(
                "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?", (new_hash, user_id, old_hash)
            )
        )
        return cursor.rowcount == 1

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

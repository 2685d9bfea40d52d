"""Users in a PostgreSQL database, table ``users`` (``postgresql://``: by default the session store's).

With ``share`` (a :class:`PostgresStore`) the statements go through the store's
pool and :meth:`PostgresStore.run_query` (public "for companions that live in the
same database and pool"), in the store's schema; otherwise the repository opens a
pool of its own from the URL (a ``PostgresStore`` of its own, for the same timeouts
and retry, without its prune task) and closes it in :meth:`close`.

::

    id                   text PRIMARY KEY
    email                text NOT NULL, UNIQUE (constraint <table>_email_key)
    name                 text NOT NULL
    password_hash        text NOT NULL
    created              double precision NOT NULL   -- Unix seconds, as the User holds them
    credentials_version  integer NOT NULL DEFAULT 1

The unique constraint makes registration atomic: of two sign-ups with one address
one INSERT fails with a unique violation on that constraint, answered as
:class:`EmailTaken`. Changes are single ``UPDATE ... RETURNING`` statements, so a
password change bumps ``credentials_version`` atomically. Statements go through the
session store's pool (:meth:`PostgresStore.run_query`), with its timeouts and its
retry on connections a server restart broke. Every value is a bound parameter; the
table name is quoted with ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import TupleRow

from sessions import Store, StoreError
from sessions.stores.postgres import PostgresStore

from ..users import EmailTaken, User, UserRepository

__all__ = ["DEFAULT_TABLE", "PostgresUsers"]

DEFAULT_TABLE = "users"
_COLUMNS = "id, email, name, password_hash, created, credentials_version"
_ERRORS = (psycopg.Error, OSError, UnicodeError)


class PostgresUsers(UserRepository):
    """Users in one table next to a :class:`PostgresStore`'s sessions, through its pool.

    ``table`` lives in the store's schema. :meth:`setup`, or the first call, creates
    it if missing (idempotent, safe from several processes at once). The pool stays
    the store's: :meth:`close` leaves it open.
    """

    def __init__(self, store: PostgresStore, *, table: str = DEFAULT_TABLE, own_store: bool = False) -> None:
        self._store = store
        self._own_store = own_store
        self.table = table
        identifier = sql.Identifier(store.schema, table) if store.schema else sql.Identifier(table)
        self.qualified_name = identifier.as_string(None)
        self._email_constraint = f"{table}_email_key"

        def render(template: str) -> str:
            return sql.SQL(template).format(t=identifier, email_key=sql.Identifier(self._email_constraint)).as_string(None)

        self._sql = {
            "create": render(
                "CREATE TABLE IF NOT EXISTS {t} (id text PRIMARY KEY, email text NOT NULL, name text NOT NULL, "
                "password_hash text NOT NULL, created double precision NOT NULL, "
                "credentials_version integer NOT NULL DEFAULT 1, CONSTRAINT {email_key} UNIQUE (email))"
            ),
            "lock": "SELECT pg_advisory_xact_lock(hashtext(%(name)s))",
            "add": render(
                f"INSERT INTO {{t}} ({_COLUMNS}) VALUES (%(id)s, %(email)s, %(name)s, %(password_hash)s, "
                "%(created)s, %(credentials_version)s)"
            ),
            "by_email": render(f"SELECT {_COLUMNS} FROM {{t}} WHERE email = %(email)s"),
            "by_id": render(f"SELECT {_COLUMNS} FROM {{t}} WHERE id = %(id)s"),
            "set_name": render("UPDATE {t} SET name = %(name)s WHERE id = %(id)s"),
            "set_hash_if": render(
                "UPDATE {t} SET password_hash = %(new)s WHERE id = %(id)s AND password_hash = %(old)s"
            ),
            "set_password": render(
                "UPDATE {t} SET password_hash = COALESCE(%(password_hash)s::text, password_hash), "
                "credentials_version = credentials_version + 1 WHERE id = %(id)s "
                "AND (%(expected)s::integer IS NULL OR credentials_version = %(expected)s::integer) "
                "RETURNING credentials_version"
            ),
        }
        self._ready = False
        self._setup_lock = asyncio.Lock()

    @classmethod
    def for_store(cls, store: Store, *, table: str = DEFAULT_TABLE) -> PostgresUsers:
        if not isinstance(store, PostgresStore):
            raise TypeError(f"PostgresUsers needs a PostgresStore, not {type(store).__name__}")
        return cls(store, table=table)

    @classmethod
    def from_url(
        cls, url: str, *, share: Store | None = None, schema: str | None = None, table: str = DEFAULT_TABLE
    ) -> PostgresUsers:
        if share is not None:
            return cls.for_store(share, table=table)
        return cls(PostgresStore(url, schema=schema, prune_interval=None), table=table, own_store=True)

    # -- UserRepository ----------------------------------------------------------

    async def setup(self) -> None:
        """Create the table if missing (a later call retries after a failure)."""
        async with self._setup_lock:
            if self._ready:
                return
            try:
                await self._store.setup()
                # One transaction on one connection: the advisory lock keeps concurrent
                # CREATE TABLE IF NOT EXISTS from several processes apart.
                async with self._store.pool.connection(timeout=self._store.timeout) as conn, conn.transaction():
                    await conn.execute(self._sql["lock"], {"name": f"tornado-sessions:{self.qualified_name}"})
                    await conn.execute(self._sql["create"])
            except _ERRORS as exc:
                raise StoreError(f"postgresql users setup failed: {type(exc).__name__}: {exc}") from exc
            self._ready = True

    async def add(self, user: User) -> None:
        params = {
            "id": user.id, "email": user.email, "name": user.name, "password_hash": user.password_hash,
            "created": float(user.created), "credentials_version": int(user.credentials_version),
        }  # fmt: skip
        try:
            # Not retried after a lost connection: the INSERT may have run, and a retry
            # would answer EmailTaken to the user it had just registered.
            await self._run("add", params, idempotent=False)
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name == self._email_constraint:
                raise EmailTaken(user.email) from exc
            raise ValueError(f"a user with id {user.id!r} exists already") from exc

    async def by_email(self, email: str) -> User | None:
        if "\x00" in email:  # PostgreSQL text cannot hold NUL, so no stored email has one
            return None
        return self._user(await self._fetchone("by_email", {"email": email}))

    async def by_id(self, user_id: str) -> User | None:
        if "\x00" in user_id:
            return None
        return self._user(await self._fetchone("by_id", {"id": user_id}))

    async def set_name(self, user_id: str, name: str) -> bool:
        if "\x00" in user_id:
            return False
        cursor = await self._run("set_name", {"id": user_id, "name": name}, idempotent=True)
        return cursor.rowcount == 1

    async def set_password(
        self, user_id: str, password_hash: str | None, *, expected_version: int | None = None
    ) -> int | None:
        if "\x00" in user_id:
            return None
        # Not idempotent (it bumps the version): retried only when the server never ran it.
        params = {"id": user_id, "password_hash": password_hash, "expected": expected_version}
        cursor = await self._run("set_password", params, idempotent=False)
        row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def set_password_hash_if(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        if "\x00" in user_id:
            return False
        params = {"id": user_id, "old": old_hash, "new": new_hash}
        cursor = await self._run("set_hash_if", params, idempotent=True)  # the same outcome if run twice
        return cursor.rowcount == 1

    async def close(self) -> None:
        """Close the pool opened from the URL; a shared one stays the session store's."""
        if self._own_store:
            self._own_store = False
            await self._store.close()

    # -- internals ---------------------------------------------------------------

    async def _run(self, name: str, params: Mapping[str, Any], *, idempotent: bool) -> psycopg.AsyncCursor[TupleRow]:
        """Run one statement through the store's pool; driver errors become StoreError."""
        if not self._ready:
            await self.setup()
        try:
            return await self._store.run_query(self._sql[name], params, idempotent=idempotent)
        except pg_errors.UniqueViolation:
            raise
        except _ERRORS as exc:
            raise StoreError(f"postgresql users {name} failed: {type(exc).__name__}: {exc}") from exc

    async def _fetchone(self, name: str, params: Mapping[str, Any]) -> TupleRow | None:
        cursor = await self._run(name, params, idempotent=True)
        try:
            return await cursor.fetchone()
        except _ERRORS as exc:
            raise StoreError(f"postgresql users {name} failed: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _user(row: TupleRow | None) -> User | None:
        if row is None:
            return None
        user_id, email, name, password_hash, created, version = row
        return User(str(user_id), str(email), str(name), str(password_hash), float(created), int(version))

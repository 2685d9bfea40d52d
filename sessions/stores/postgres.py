"""PostgreSQL session store on psycopg 3 and its connection pool (``psycopg_pool``).

One row per session in one table (``sessions`` in the connection's default schema
unless told otherwise)::

    key      text PRIMARY KEY        -- already a hash of the session ID
    data     jsonb NOT NULL          -- {item name: JSON text of its value}
    created  timestamptz NOT NULL
    updated  timestamptz NOT NULL
    expires  timestamptz NOT NULL    -- indexed: reads filter on it, prune deletes by it
    user_id  text                    -- indexed (partial, non-null): log out everywhere
    meta     jsonb NOT NULL          -- {name: text} about the session
    kind     text NOT NULL           -- 'session', or another kind of record ('remember')

and rate-limit counters in a second table (``counters``, same schema)::

    name     text                    -- the counter's name, NUL and % percent-encoded
    slot     text                    -- the window: its length and start
    hits     bigint NOT NULL
    expires  timestamptz NOT NULL    -- the window's end; indexed for pruning
    PRIMARY KEY (name, slot)

Why this shape:

* Values stay JSON *text*, stored as JSON strings inside ``data``: the store never
  parses them, and they come back byte for byte (JSONB would reorder and respace
  nested objects if they were stored as parsed JSON).
* A save is one ``UPDATE`` with ``(data || changes) - removed``: PostgreSQL locks
  the row and re-applies the expression to the newest row version when two saves
  race, so concurrent requests that change different items both persist, in one
  round trip and without a transaction block. The ``expires > now`` condition in
  the same statement makes "update only if it still exists" atomic.
* Item names are JSONB object keys; a NUL character cannot be stored in JSONB (nor
  in text), so ``%`` and NUL are percent-encoded (reversibly, :func:`escape_nul`) in
  item names, meta and counter names, and ``"$where"``, ``"a.b"`` or SQL
  text are just keys (everything is a bound parameter; the table name is quoted
  with ``psycopg.sql.Identifier``).
* Expiry: every read filters on ``expires`` (the store's clock), so expiry is exact;
  deletion is a background task every ``prune_interval`` seconds (the expires index
  serves it), like the Mongo store's interval mode. ``prune_interval=None`` turns
  the task off and leaves pruning to the app (``expires_natively`` is then False).
* A hit is one ``INSERT ... ON CONFLICT (name, slot) DO UPDATE SET hits =
  counters.hits + 1 RETURNING hits``: PostgreSQL serialises concurrent upserts of
  one row, so every process counts every hit once. Windows that have ended are
  deleted by the same statement that prunes sessions (a data-modifying ``WITH``),
  so counters need no task or round trip of their own.

Times: ``timestamptz`` columns (readable in psql), float Unix seconds at the
interface, converted in SQL with ``to_timestamp`` / ``extract(epoch ...)``;
microsecond precision.

Tables written by an older version are brought up to date by :meth:`PostgresStore.setup`
(or the first call): a missing ``kind`` column is added with the default
``'session'``, and rows an older version marked with ``meta.kind`` (remember-me
tokens) take that as their kind instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..bus import EventBus
from .base import KEEP, Clock, Record, Store, window_bounds
from .plumbing import DriverErrors, Lifecycle
from .pruning import PruneLoop

__all__ = ["DEFAULT_COUNTER_TABLE", "DEFAULT_TABLE", "PostgresStore"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = "sessions"
DEFAULT_COUNTER_TABLE = "counters"
#: Seconds: connect, wait for a pooled connection, and the server's statement
#: timeout, so a database that is down answers 503 in about two seconds.
DEFAULT_TIMEOUT = 2.0
DEFAULT_POOL_SIZE = 10
DEFAULT_PRUNE_INTERVAL = 60.0

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]

#: Errors raised by the server when it is shutting down or starting: the statement
#: never ran, so even a non-idempotent one (take) may run again on a new connection.
_NOT_RUN = (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)
_errors = DriverErrors("postgresql", (psycopg.Error, OSError, UnicodeError))
#: Past the timeout, how long a statement may still take before the client gives up
#: on it: the server's statement_timeout (the same ``timeout``) should answer first.
_DEADLINE_GRACE = 0.25


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned statement's outcome, so asyncio logs no "never retrieved"."""
    if not task.cancelled():
        task.exception()

_COLUMNS = (
    "data, extract(epoch FROM created)::float8, extract(epoch FROM updated)::float8, "
    "extract(epoch FROM expires)::float8, user_id, meta, kind"
)


def escape_nul(text: str) -> str:
    """Make text storable in PostgreSQL (text, JSONB keys and strings), which refuses NUL.

    Reversible: ``%`` and NUL are percent-encoded (``%25``, ``%00``); other text is
    returned as it is.
    """
    if "%" in text or "\x00" in text:
        return text.replace("%", "%25").replace("\x00", "%00")
    return text


def unescape_nul(text: str) -> str:
    """Invert :func:`escape_nul`."""
    if "%" not in text:
        return text
    return text.replace("%00", "\x00").replace("%25", "%")


def _json(mapping: Mapping[str, str]) -> str:
    return json.dumps({escape_nul(k): v for k, v in mapping.items()}, ensure_ascii=False)


def _meta_json(meta: Mapping[str, str]) -> str:
    # Meta values are free text (a user agent): they may hold NUL too.
    return json.dumps({escape_nul(k): escape_nul(v) for k, v in meta.items()}, ensure_ascii=False)


_Render = Callable[..., str]


def _record_statements(render: _Render) -> dict[str, str]:
    """The statements of the Store interface (``{t}`` the sessions table, ``{c}`` the counters)."""
    live = "key = %(key)s AND expires > to_timestamp(%(now)s)"
    statements = {
        "load": render(f"SELECT {_COLUMNS} FROM {{t}} WHERE {live}"),
        "create": render(
            "INSERT INTO {t} AS s (key, data, created, updated, expires, user_id, meta, kind) "
            "VALUES (%(key)s, %(data)s::jsonb, to_timestamp(%(created)s), to_timestamp(%(updated)s), "
            "to_timestamp(%(expires)s), %(user_id)s, %(meta)s::jsonb, %(kind)s) "
            "ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, created = EXCLUDED.created, "
            "updated = EXCLUDED.updated, expires = EXCLUDED.expires, user_id = EXCLUDED.user_id, "
            "meta = EXCLUDED.meta, kind = EXCLUDED.kind"
        ),
        "take": render(
            "UPDATE {t} AS s SET data = s.data - %(names)s::text[] FROM "
            f"(SELECT key, data FROM {{t}} WHERE {live} FOR UPDATE) AS old "
            "WHERE s.key = old.key RETURNING old.data"
        ),
        "touch": render(
            f"UPDATE {{t}} SET expires = to_timestamp(%(expires)s), updated = to_timestamp(%(updated)s) "
            f"WHERE {live}"
        ),
        "alive": render("SELECT key FROM {t} WHERE key = ANY(%(keys)s) AND expires > to_timestamp(%(now)s)"),
        "destroy": render("DELETE FROM {t} WHERE key = %(key)s"),
        "destroy_user": render("DELETE FROM {t} WHERE user_id = %(user_id)s"),
        "destroy_user_keep": render("DELETE FROM {t} WHERE user_id = %(user_id)s AND key <> %(keep)s"),
        "list_user": render(
            f"SELECT key, {_COLUMNS} FROM {{t}} WHERE user_id = %(user_id)s "
            "AND expires > to_timestamp(%(now)s) AND (%(kind)s::text IS NULL OR kind = %(kind)s::text) "
            "ORDER BY created DESC, updated DESC, key DESC"
        ),
        # One round trip prunes both tables; the row count is the sessions'.
        "prune": render(
            "WITH ended AS (DELETE FROM {c} WHERE expires <= to_timestamp(%(now)s)) "
            "DELETE FROM {t} WHERE expires <= to_timestamp(%(now)s)"
        ),
        "hit": render(
            "INSERT INTO {c} AS c (name, slot, hits, expires) "
            "VALUES (%(name)s, %(slot)s, 1, to_timestamp(%(end)s)) "
            "ON CONFLICT (name, slot) DO UPDATE SET hits = c.hits + 1 RETURNING c.hits"
        ),
        "reset_hits": render("DELETE FROM {c} WHERE name = %(name)s AND slot = %(slot)s"),
        "ping": "SELECT 1",
    }
    # The save, in four shapes: user_id and meta are written only when given.
    for with_user in (False, True):
        for with_meta in (False, True):
            extra = (", user_id = %(user_id)s" if with_user else "") + (
                ", meta = %(meta)s::jsonb" if with_meta else ""
            )
            statements[f"update{int(with_user)}{int(with_meta)}"] = render(
                "UPDATE {t} SET data = (data || %(set)s::jsonb) - %(unset)s::text[], "
                f"expires = to_timestamp(%(expires)s), updated = to_timestamp(%(updated)s){extra} "
                f"WHERE {live}"
            )
    return statements


def _schema_statements(render: _Render, base: str, counters_base: str) -> dict[str, str]:
    """Creating the tables and indexes (idempotent), and upgrading a table of an older version.

    The advisory lock keeps concurrent CREATE TABLE IF NOT EXISTS (and upgrades) from
    several processes from tripping over each other's catalog rows.
    """
    return {
        "lock": "SELECT pg_advisory_xact_lock(hashtext(%(name)s))",
        "create_table": render(
            "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, data jsonb NOT NULL DEFAULT '{{}}', "
            "created timestamptz NOT NULL, updated timestamptz NOT NULL, expires timestamptz NOT NULL, "
            "user_id text, meta jsonb NOT NULL DEFAULT '{{}}', kind text NOT NULL DEFAULT 'session')"
        ),
        "has_kind": (
            "SELECT 1 FROM pg_attribute WHERE attrelid = %(table)s::regclass AND attname = 'kind' "
            "AND NOT attisdropped"
        ),
        "add_kind": render("ALTER TABLE {t} ADD COLUMN kind text NOT NULL DEFAULT 'session'"),
        # Before kinds, remember-me tokens were marked in their meta.
        "legacy_kinds": render(
            "UPDATE {t} SET kind = meta->>'kind', meta = meta - 'kind' WHERE jsonb_typeof(meta->'kind') = 'string'"
        ),
        "index_expires": render(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} (expires)", i=sql.Identifier(f"{base}_expires_idx")
        ),
        "index_user": render(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} (user_id) WHERE user_id IS NOT NULL",
            i=sql.Identifier(f"{base}_user_id_idx"),
        ),
        "create_counters": render(
            "CREATE TABLE IF NOT EXISTS {c} (name text NOT NULL, slot text NOT NULL, hits bigint NOT NULL, "
            "expires timestamptz NOT NULL, PRIMARY KEY (name, slot))"
        ),
        "index_counters": render(
            "CREATE INDEX IF NOT EXISTS {i} ON {c} (expires)", i=sql.Identifier(f"{counters_base}_expires_idx")
        ),
    }


class PostgresStore(Store):
    """Sessions in one PostgreSQL table, through a psycopg 3 connection pool.

    ``target`` is a ``postgresql://`` URL (or libpq conninfo string) or a ready
    ``psycopg_pool.AsyncConnectionPool``. From a URL the store builds its own pool
    (``pool_size`` connections at most, autocommit, ``timeout`` seconds to connect
    and to wait for a connection, the same as the server-side ``statement_timeout``)
    and closes it in :meth:`close`. A pool passed in stays the caller's; its
    connections must be in autocommit mode.

    ``table`` (and optional ``schema``) name the sessions table, ``counter_table``
    the rate-limit counters' table in the same schema; :meth:`setup`, or the first
    call, creates them and their indexes if missing (idempotent, safe from several
    processes at once).
    """

    name = "postgresql"

    def __init__(
        self,
        target: str | Pool,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        counter_table: str = DEFAULT_COUNTER_TABLE,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        prune_interval: float | None = DEFAULT_PRUNE_INTERVAL,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        if pool_size < 1 or timeout <= 0 or (prune_interval is not None and prune_interval <= 0):
            raise ValueError("pool_size, timeout and prune_interval must be positive")
        self.timeout = float(timeout)
        self.prune_interval = prune_interval
        if counter_table == table:
            raise ValueError("the counter table must not be the sessions table")
        self.table = table
        self.schema = schema
        self.counter_table = counter_table
        if isinstance(target, str):
            self.pool: Pool = self._pool_from_url(target, pool_size, self.timeout)
            self._owned = True
        elif isinstance(target, AsyncConnectionPool):
            self.pool = target
            self._owned = False
        else:
            raise TypeError(
                f"PostgresStore needs a postgresql:// URL or a psycopg_pool.AsyncConnectionPool, "
                f"not {type(target).__name__}"
            )
        identifier = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        #: The quoted table name, as in the SQL the store runs.
        self.qualified_name = identifier.as_string(None)
        counters = sql.Identifier(schema, counter_table) if schema else sql.Identifier(counter_table)
        self._sql = self._statements(identifier, table, counters, counter_table)
        self._lifecycle = Lifecycle(self.name, self._prepare)
        self._pruner: PruneLoop | None = None

    @staticmethod
    def _pool_from_url(url: str, pool_size: int, timeout: float) -> Pool:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(timeout)),  # libpq: whole seconds, at least 2
            "options": f"-c statement_timeout={int(timeout * 1000)}",
            "application_name": "tornado-sessions",
        }
        return AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs=kwargs, timeout=timeout, open=False,
            name="tornado-sessions",
        )  # fmt: skip

    @staticmethod
    def _statements(
        table: sql.Identifier, base: str, counters: sql.Identifier, counters_base: str
    ) -> dict[str, str]:
        """Every statement, rendered once (psycopg prepares them after a few uses)."""

        def render(template: str, **parts: sql.Composable) -> str:
            return sql.SQL(template).format(t=table, c=counters, **parts).as_string(None)

        return {
            **_record_statements(render),
            **_schema_statements(render, base, counters_base),
            "lock_name": f"tornado-sessions:{table.as_string(None)}",
        }

    # -- capabilities ----------------------------------------------------------

    @property
    def expires_natively(self) -> bool:
        """True while the store's own prune task runs (``prune_interval`` set)."""
        return self.prune_interval is not None

    def describe(self) -> str:
        how = f"pruned every {self.prune_interval:g} s by the store" if self.prune_interval else "pruned by the app"
        return f"{self.name} (table {self.qualified_name}; {how})"

    # -- Store interface -------------------------------------------------------

    @_errors
    async def load(self, key: str) -> Record | None:
        row = await self._fetchone("load", {"key": key, "now": self.clock()})
        return None if row is None else self._record(row)

    @_errors
    async def create(self, key: str, record: Record) -> None:
        await self._execute("create", {
            "key": key, "data": _json(record.data), "created": record.created, "updated": record.updated,
            "expires": record.expires, "user_id": record.user_id, "meta": _meta_json(record.meta),
            "kind": record.kind,
        })  # fmt: skip

    @_errors
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
        params: dict[str, Any] = {
            "key": key, "now": self.clock(), "set": _json(set_items),
            "unset": [escape_nul(name) for name in unset_keys], "expires": expires, "updated": updated,
        }  # fmt: skip
        with_user, with_meta = user_id is not KEEP, meta is not KEEP
        if with_user:
            params["user_id"] = user_id
        if with_meta:
            params["meta"] = _meta_json(meta)
        return await self._execute(f"update{int(with_user)}{int(with_meta)}", params) == 1

    @_errors
    async def take(self, key: str, names: Iterable[str]) -> dict[str, str] | None:
        wanted = {escape_nul(name): name for name in names}
        row = await self._fetchone(
            "take", {"key": key, "now": self.clock(), "names": list(wanted)}, idempotent=False
        )
        if row is None:
            return None
        before: dict[str, str] = row[0]
        return {name: before[stored] for stored, name in wanted.items() if stored in before}

    @_errors
    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        params = {"key": key, "now": self.clock(), "expires": expires, "updated": updated}
        return await self._execute("touch", params) == 1

    @_errors
    async def destroy(self, key: str) -> None:
        await self._execute("destroy", {"key": key})

    @_errors
    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        """One DELETE through the user_id index; expired, unpruned sessions go too."""
        if keep is None:
            return await self._execute("destroy_user", {"user_id": user_id})
        return await self._execute("destroy_user_keep", {"user_id": user_id, "keep": keep})

    @_errors
    async def list_user(self, user_id: str, *, kind: str | None = None) -> list[tuple[str, Record]]:
        rows = await self._fetchall("list_user", {"user_id": user_id, "now": self.clock(), "kind": kind})
        return [(row[0], self._record(row[1:])) for row in rows]

    @_errors
    async def hit(self, name: str, window: float) -> tuple[int, float]:
        slot, end = window_bounds(self.clock(), window)
        row = await self._fetchone("hit", {"name": escape_nul(name), "slot": slot, "end": end}, idempotent=False)
        assert row is not None  # an upsert with RETURNING always returns its row
        return int(row[0]), end

    @_errors
    async def reset_hits(self, name: str, window: float) -> None:
        slot, _ = window_bounds(self.clock(), window)
        await self._execute("reset_hits", {"name": escape_nul(name), "slot": slot})

    @_errors
    async def prune(self) -> int:
        """Delete expired sessions and ended counter windows; returns how many sessions."""
        return await self._execute("prune", {"now": self.clock()})

    @_errors
    async def alive(self, keys: Iterable[str]) -> set[str]:
        """One ``SELECT key ... WHERE key = ANY(%s) AND expires > now`` (the primary key serves it)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        rows = await self._fetchall("alive", {"keys": wanted, "now": self.clock()})
        return {row[0] for row in rows}

    def event_bus(self) -> EventBus:
        """LISTEN/NOTIFY on a channel named after the table (:mod:`sessions.buses.postgres`)."""
        from ..buses.postgres import PostgresBus, channel_for

        return PostgresBus(self.pool.conninfo, self.pool.kwargs, self.run_query, channel_for(self.table, self.schema),
                           timeout=self.timeout)  # fmt: skip

    @_errors
    async def setup(self) -> None:
        """Open the pool, create the table and indexes if missing, upgrade a table of an older
        version (a later call retries on failure)."""
        await self._lifecycle.ensure_ready()

    @_errors
    async def ping(self) -> None:
        await self._fetchone("ping", {})

    async def close(self) -> None:
        """Stop the prune task and close the pool if this store built it; later calls fail."""
        self._lifecycle.close()
        pruner, self._pruner = self._pruner, None
        if pruner is not None:
            await pruner.stop()
        if self._owned:
            self._owned = False
            await self.pool.close()

    # -- internals -------------------------------------------------------------

    async def _execute(self, name: str, params: Mapping[str, Any]) -> int:
        """Run a statement; return its row count."""
        cursor = await self._run(name, params, idempotent=True)
        return cursor.rowcount

    async def _fetchone(self, name: str, params: Mapping[str, Any], *, idempotent: bool = True) -> TupleRow | None:
        cursor = await self._run(name, params, idempotent=idempotent)
        return await cursor.fetchone()

    async def _fetchall(self, name: str, params: Mapping[str, Any]) -> list[TupleRow]:
        cursor = await self._run(name, params, idempotent=True)
        return await cursor.fetchall()

    async def _run(
        self, name: str, params: Mapping[str, Any], *, idempotent: bool
    ) -> psycopg.AsyncCursor[TupleRow]:
        return await self.run_query(self._sql[name], params, idempotent=idempotent)

    async def run_query(
        self, query: str, params: Mapping[str, Any], *, idempotent: bool
    ) -> psycopg.AsyncCursor[TupleRow]:
        """Run one statement on a pooled connection, once more on a fresh one if the first had died.

        Public for companions that keep their own tables in the same database and
        pool: it opens the pool and creates the sessions schema first if needed.
        Driver errors are raised as they are, not as StoreError (a closed store
        raises StoreError). The rows are already on the client when it returns.

        After a server restart the pool still holds connections to the old server
        process; the first statement on each fails. Such a failure is retried once
        after the pool has checked its idle connections, so the app recovers
        without a 503 per stale connection. A statement that is not idempotent
        (take) is retried only when the server said it never ran it.

        The whole call has a client-side deadline of ``timeout`` (plus a moment, so
        that the server's own statement_timeout normally answers first): a server
        that keeps the connection open but never answers (SIGSTOP, a hung host, a
        dead link the kernel has not noticed) costs one timeout, not a request hung
        for as long as the server is. The abandoned statement is cancelled in the
        background, and its connection goes back to the pool or is discarded.
        """
        task = asyncio.ensure_future(self._run_query(query, params, idempotent=idempotent))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout + _DEADLINE_GRACE)
        except asyncio.CancelledError:
            task.cancel()
            task.add_done_callback(_forget)
            raise
        if task in done:
            return task.result()
        task.cancel()  # psycopg then cancels the query (itself bounded); nobody waits for it
        task.add_done_callback(_forget)
        raise psycopg.OperationalError(f"no answer from the server within {self.timeout:g} s")

    async def _run_query(
        self, query: str, params: Mapping[str, Any], *, idempotent: bool
    ) -> psycopg.AsyncCursor[TupleRow]:
        await self._lifecycle.ensure_ready()
        for attempt in (1, 2):
            try:
                # The cursor's rows are already on the client (a client-side cursor), so
                # they stay readable after the connection goes back to the pool.
                async with self.pool.connection(timeout=self.timeout) as conn:
                    return await conn.execute(query, params)
            except psycopg.OperationalError as exc:
                retry = isinstance(exc, _NOT_RUN) or (idempotent and _connection_lost(exc))
                if attempt == 2 or not retry:
                    raise
                await self.pool.check()
        raise AssertionError("not reached")

    async def _prepare(self) -> None:
        """Once, before the first statement (see :class:`Lifecycle`): pool, schema, prune task."""
        if self._owned:
            await self.pool.open(wait=False)
        await self._create_schema()
        if self.prune_interval is not None and self._pruner is None:
            self._pruner = PruneLoop(self.prune, self.prune_interval, name=f"postgres-prune:{self.table}")
            self._pruner.start()

    async def _create_schema(self) -> None:
        async with self.pool.connection(timeout=self.timeout) as conn, conn.transaction():
            await conn.execute(self._sql["lock"], {"name": self._sql["lock_name"]})
            if self.schema:
                await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            await conn.execute(self._sql["create_table"])
            has_kind = await conn.execute(self._sql["has_kind"], {"table": self.qualified_name})
            if await has_kind.fetchone() is None:  # a table of a version before record kinds
                await conn.execute(self._sql["add_kind"])
                await conn.execute(self._sql["legacy_kinds"])
            for name in ("index_expires", "index_user", "create_counters", "index_counters"):
                await conn.execute(self._sql[name])
        log.info("PostgreSQL session store: %s", self.describe())

    @staticmethod
    def _record(row: Sequence[Any]) -> Record:
        data, created, updated, expires, user_id, meta, kind = row
        return Record(
            data={unescape_nul(k): v for k, v in data.items()},
            created=created,
            updated=updated,
            expires=expires,
            user_id=user_id,
            meta={unescape_nul(k): unescape_nul(v) for k, v in meta.items()},
            kind=kind,
        )


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """True for a connection that broke (no SQLSTATE), not for a statement the server refused."""
    return exc.sqlstate is None and not isinstance(exc, PoolTimeout)

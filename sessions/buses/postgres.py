"""Session events over PostgreSQL's LISTEN/NOTIFY.

The bus listens on a connection of its own (autocommit, built with the settings of
the store's pool: same server, user, TLS), and publishes with ``pg_notify`` through
the store (:meth:`~sessions.stores.postgres.PostgresStore.run_query`, the store's
pool and deadline). NOTIFY is transactional and delivered to every listening
session of the database, in commit order; a payload takes at most 8,000 bytes
(:data:`~sessions.bus.MAX_EVENT_BYTES` keeps events under 7,000).

The channel is derived from the store's table, ``[<schema>.]<table>.events``, so
deployments sharing a database but not a table do not hear each other. Channel
names are identifiers: LISTEN quotes it (``psycopg.sql.Identifier``), ``pg_notify``
takes it as text, and one longer than PostgreSQL's 63 bytes is shortened with a
hash of the whole name so that it stays distinct.

A listener that hears nothing for ``keepalive`` seconds runs ``SELECT 1`` (bounded
by ``timeout``): a server that went away without closing the socket is noticed.
A terminated backend, a restart or a network failure end the listening
connection; the bus reconnects with backoff and calls ``on_resync``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from .listening import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN, ListeningBus

__all__ = ["PostgresBus", "channel_for"]

#: Longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes).
MAX_CHANNEL_BYTES = 63
DEFAULT_KEEPALIVE = 5.0
DEFAULT_TIMEOUT = 2.0

#: ``run_query(query, params, idempotent=...)`` of the store: one statement on its pool.
RunQuery = Callable[..., Awaitable[Any]]


def channel_for(table: str, schema: str | None = None) -> str:
    """The NOTIFY channel of a sessions table: ``[schema.]table.events``, at most 63 bytes."""
    name = f"{schema}.{table}.events" if schema else f"{table}.events"
    if len(name.encode()) <= MAX_CHANNEL_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    head = name.encode()[: MAX_CHANNEL_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}~{digest}"


async def _resolved(value: Any) -> Any:
    """A pool's conninfo or kwargs: a value, or a (possibly async) callable giving one."""
    if callable(value):
        value = value()
        if inspect.isawaitable(value):
            value = await value
    return value


class PostgresBus(ListeningBus):
    """LISTEN on a dedicated connection, NOTIFY through the store; see the module documentation.

    ``conninfo`` and ``connect_options`` are the pool's (``pool.conninfo``,
    ``pool.kwargs``, either may be a callable); ``run_query`` is the store's.
    """

    name = "postgresql LISTEN/NOTIFY"
    pushes = True

    def __init__(
        self,
        conninfo: Any,
        connect_options: Mapping[str, Any] | Callable[[], Any] | None,
        run_query: RunQuery,
        channel: str,
        *,
        keepalive: float = DEFAULT_KEEPALIVE,
        timeout: float = DEFAULT_TIMEOUT,
        origin: str | None = None,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(origin=origin, retry_min=retry_min, retry_max=retry_max)
        if len(channel.encode()) > MAX_CHANNEL_BYTES:
            raise ValueError(f"a channel name takes at most {MAX_CHANNEL_BYTES} bytes: {channel!r}")
        if keepalive <= 0 or timeout <= 0:
            raise ValueError("keepalive and timeout must be positive")
        self.channel = channel
        self.keepalive = float(keepalive)
        self.timeout = float(timeout)
        self._conninfo = conninfo
        self._connect_options = connect_options
        self._run_query = run_query
        self._listen_sql = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def describe(self) -> str:
        return f"{self.name} (channel {self.channel!r}, a connection of its own)"

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (None while disconnected)."""
        return None if self._conn is None else self._conn.info.backend_pid

    async def _connect(self) -> None:
        conninfo = await _resolved(self._conninfo)
        options = dict(await _resolved(self._connect_options) or {})
        # The origin in the name: pg_stat_activity shows which process listens where.
        options.update(autocommit=True, application_name=f"tornado-sessions-bus:{self.origin}"[:63])
        options.setdefault("connect_timeout", max(2, round(self.timeout)))
        self._conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(conninfo or "", **options), self.timeout + 1
        )
        await asyncio.wait_for(self._conn.execute(self._listen_sql), self.timeout)

    async def _listen(self) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not listening")
        while True:
            async for notify in conn.notifies(timeout=self.keepalive):
                self._receive(notify.payload)
            # Quiet for a while: is the server still there? (Notifications arriving
            # meanwhile wait in the connection's backlog for the next round.)
            await asyncio.wait_for(conn.execute("SELECT 1"), self.timeout)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _send(self, text: str) -> None:
        # Not retried on a fresh connection: delivery is at most once.
        await self._run_query("SELECT pg_notify(%(channel)s, %(payload)s)",
                              {"channel": self.channel, "payload": text}, idempotent=False)  # fmt: skip

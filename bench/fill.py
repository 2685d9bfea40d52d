"""Fill a session store with many realistic sessions through its driver, not through HTTP.

Issue 15 §3 compares a store holding 1,000,000 sessions with one holding 1,000;
through the library (one ``store.create`` per session) that would take longer than the
benchmark itself, so each store gets one function here that writes the rows, hashes or
keys the store itself writes, in bulk: SQLite ``executemany`` in one transaction, a
Redis pipeline, PostgreSQL ``COPY``. The store creates its own schema first
(``store.setup()``), and :func:`verify` reads a sample back through the store's own
``load`` and ``list_user``, so a fill that drifts from the store's layout fails loudly
instead of measuring empty lookups.

What a session looks like (:func:`sessions`): the key is ``hash_session_id`` of a fresh
random ID, as the manager makes it; about half the sessions belong to a user (spread
over ``users`` user ids, each with its user-index entries); data ``{"count": "1"}``
(plus ``"user"`` for a user's session), JSON text as the manager encodes it; meta for a
user's session as a login writes it (client address, user agent, login time); the idle
deadline ``ttl`` seconds ahead (minus up to a minute), so nothing expires during a run.

    filled = await fill_sqlite("sqlite:////tmp/big.sqlite3", Plan(1_000_000))
    await verify("sqlite:////tmp/big.sqlite3", filled)
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sessions import Record, SessionMeta, open_store
from sessions.manager import DEFAULT_IDLE_TIMEOUT, hash_session_id

#: The Redis store's prefix for an item field (``sessions/stores/redis.py``: ``d:<name>``).
REDIS_ITEM_PREFIX = "d:"
#: Rows (SQLite, PostgreSQL) or sessions (Redis) per batch sent to the driver.
BATCH = 10_000
#: Two records read back are equal when their times differ by at most this (PostgreSQL
#: keeps microseconds; the times written are already rounded to them).
TIME_TOLERANCE = 2e-6
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How many sessions of what kind to write."""

    count: int
    #: User ids the user sessions are spread over (``user-000000`` ...).
    users: int = 100_000
    #: Share of the sessions that belong to a user.
    user_share: float = 0.5
    #: Seconds from the fill to the idle deadline (the manager's idle timeout by default).
    ttl: float = DEFAULT_IDLE_TIMEOUT
    seed: int = 15
    #: Sessions (picked at random) whose records are kept for :func:`verify`; their
    #: users' sessions are all kept too, for ``list_user``.
    sample: int = 5
    #: Keep every record (tests); otherwise only the sample.
    keep_all: bool = False


@dataclass
class Filled:
    """What a fill wrote: the records kept for checking, and how long it took."""

    url: str
    count: int
    seconds: float = 0.0
    #: key -> record of the sampled sessions (every session when ``keep_all``).
    records: dict[str, Record] = field(default_factory=dict)
    #: user id -> keys of all that user's sessions, for the sampled users (every user when ``keep_all``).
    users: dict[str, set[str]] = field(default_factory=dict)


def sessions(plan: Plan, filled: Filled, now: float | None = None) -> Iterator[tuple[str, Record]]:
    """``plan.count`` (key, record) pairs, generated as they are consumed; the sample lands in ``filled``."""
    now = time.time() if now is None else now
    rng = random.Random(plan.seed)
    owners = [
        f"user-{rng.randrange(plan.users):06d}" if rng.random() < plan.user_share else None
        for _ in range(plan.count)
    ]
    picked = set(rng.sample(range(plan.count), min(plan.sample, plan.count)))
    # At least one sampled session with a user, so that list_user is checked too.
    with_user = [i for i in range(min(plan.count, 1000)) if owners[i] is not None]
    if with_user and not any(owners[i] for i in picked):
        picked.add(rng.choice(with_user))
    sampled_users = {owners[i] for i in picked if owners[i] is not None}
    for i, user in enumerate(owners):
        key = hash_session_id(_session_id(rng))
        updated = round(now - rng.uniform(0, 60), 6)
        created = round(updated - rng.uniform(0, 4 * 3600), 6)
        expires = round(updated + plan.ttl, 6)
        if user is None:
            record = Record({"count": "1"}, created, updated, expires)
        else:
            meta = SessionMeta()
            meta.client(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", USER_AGENT)
            meta.login_at = created
            record = Record(
                {"count": "1", "user": json.dumps(user)}, created, updated, expires, user, dict(meta)
            )
        if plan.keep_all or i in picked or user in sampled_users:
            filled.records[key] = record
            if user is not None:
                filled.users.setdefault(user, set()).add(key)
        yield key, record


def _session_id(rng: random.Random) -> str:
    """A 256-bit base64url ID like the manager's (from a seeded generator: reproducible fills)."""
    return base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode()


def _batches(rows: Iterator[tuple[str, Record]], size: int = BATCH) -> Iterator[list[tuple[str, Record]]]:
    batch: list[tuple[str, Record]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _report(progress: Progress | None, label: str, done: int, total: int, started: float) -> None:
    if progress is not None and (done == total or done % 100_000 < BATCH):
        progress(f"{label}: {done:,}/{total:,} sessions written ({time.monotonic() - started:.0f} s)")


# -- SQLite --------------------------------------------------------------------------
async def fill_sqlite(url: str, plan: Plan, *, progress: Progress | None = None, **options: Any) -> Filled:
    """``executemany`` into ``sessions`` and ``session_items`` in one transaction, then a WAL checkpoint.

    The store creates the file (0600) and schema first; the checkpoint leaves the file
    as a long-running store would have it, not with the whole fill in its WAL.
    """
    import sqlite3

    from sessions.stores.sqlite import SQLiteStore

    store = open_store(url, **options)
    assert isinstance(store, SQLiteStore)
    await store.setup()
    path = store.path
    await store.close()
    filled = Filled(url, plan.count)
    started = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # 256 MiB of page cache for this connection only: the fill's B-trees stay cached.
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("BEGIN IMMEDIATE")
        done = 0
        for batch in _batches(sessions(plan, filled)):
            conn.executemany(
                "INSERT INTO sessions (key, user_id, created, updated, expires, meta, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (key, r.user_id, r.created, r.updated, r.expires, _sqlite_meta(r.meta), r.kind)
                    for key, r in batch
                ],
            )
            conn.executemany(
                "INSERT INTO session_items (key, name, value) VALUES (?, ?, ?)",
                [(key, name, value) for key, r in batch for name, value in r.data.items()],
            )
            done += len(batch)
            _report(progress, "sqlite", done, plan.count, started)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    filled.seconds = time.monotonic() - started
    return filled


def _sqlite_meta(meta: dict[str, str]) -> str | None:
    """As the SQLite store writes meta: compact JSON, NULL when empty."""
    return json.dumps(meta, separators=(",", ":")) if meta else None


# -- Redis ---------------------------------------------------------------------------
async def fill_redis(url: str, plan: Plan, *, progress: Progress | None = None, **options: Any) -> Filled:
    """One pipeline per batch: ``HSET`` + ``PEXPIREAT`` per session, then ``ZADD`` + ``PEXPIREAT``
    per user index (standalone Redis; keys named by the store's ``session_key``/``user_key``).

    Each user-index entry is scored, and each session's ``index_until`` set, to the
    session's expiry plus the store's ``index_slack`` in whole milliseconds rounded up,
    as ``RedisStore.create`` does; the index key expires at its highest score. Written
    with redis-py's blocking client, which packs commands with hiredis (the asyncio
    client packs them in Python: about four times slower here).
    """
    import redis

    from sessions.stores.redis import RedisStore

    store = open_store(url, **options)
    assert isinstance(store, RedisStore) and not store.cluster, "fill_redis fills a standalone Redis"
    await store.setup()
    await store.close()
    filled = Filled(url, plan.count)
    started = time.monotonic()
    index: dict[str, dict[str, int]] = {}  # user key -> {session key: until ms}
    client = redis.Redis.from_url(url)
    try:
        done = 0
        for batch in _batches(sessions(plan, filled)):
            pipe = client.pipeline(transaction=False)
            for key, r in batch:
                fields = {"created": repr(r.created), "updated": repr(r.updated), "expires": repr(r.expires)}
                if r.user_id is not None:
                    until = math.ceil((r.expires + store.index_slack) * 1000)
                    fields |= {"user_id": r.user_id, "index_until": str(until)}
                    index.setdefault(store.user_key(r.user_id), {})[key] = until
                if r.meta:
                    fields["meta"] = json.dumps(r.meta, ensure_ascii=False)
                fields["kind"] = r.kind
                fields |= {REDIS_ITEM_PREFIX + name: value for name, value in r.data.items()}
                name = store.session_key(key)
                pipe.hset(name, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpireat(name, math.ceil(r.expires * 1000))
            pipe.execute()
            done += len(batch)
            _report(progress, "redis", done, plan.count, started)
        users = list(index.items())
        for start in range(0, len(users), BATCH):
            pipe = client.pipeline(transaction=False)
            for user_key, members in users[start : start + BATCH]:
                pipe.zadd(user_key, members)  # type: ignore[arg-type]
                pipe.pexpireat(user_key, max(members.values()))
            pipe.execute()
    finally:
        client.close()
    filled.seconds = time.monotonic() - started
    return filled


# -- PostgreSQL ----------------------------------------------------------------------
async def fill_postgres(url: str, plan: Plan, *, progress: Progress | None = None, **options: Any) -> Filled:
    """``COPY`` into the store's table in one transaction, then ``VACUUM ANALYZE`` and a checkpoint.

    A connection of its own (the store's pool has a 2 s statement timeout). The store
    creates the table and its indexes first; the ANALYZE gives the planner the
    statistics a table this size would have, so autovacuum does not do it mid-run.
    """
    import psycopg

    from sessions.stores.postgres import PostgresStore

    store = open_store(url, **options)
    assert isinstance(store, PostgresStore)
    await store.setup()
    table = store.qualified_name
    await store.close()
    filled = Filled(url, plan.count)
    started = time.monotonic()
    copy_sql = f"COPY {table} (key, data, created, updated, expires, user_id, meta, kind) FROM STDIN"
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            done = 0
            for batch in _batches(sessions(plan, filled)):
                for key, r in batch:
                    copy.write_row((
                        key, json.dumps(r.data, ensure_ascii=False), _timestamp(r.created), _timestamp(r.updated),
                        _timestamp(r.expires), r.user_id, json.dumps(r.meta, ensure_ascii=False), r.kind,
                    ))  # fmt: skip
                done += len(batch)
                _report(progress, "postgres", done, plan.count, started)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CHECKPOINT")
    filled.seconds = time.monotonic() - started
    return filled


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- checking and sizing ---------------------------------------------------------------
FILLERS = {"sqlite": fill_sqlite, "redis": fill_redis, "postgres": fill_postgres}


def same(got: Record | None, want: Record) -> bool:
    """The store gave back what was written (times to a microsecond)."""
    return (
        got is not None
        and (got.data, got.user_id, got.meta, got.kind) == (want.data, want.user_id, want.meta, want.kind)
        and all(
            abs(a - b) <= TIME_TOLERANCE
            for a, b in (
                (got.created, want.created),
                (got.updated, want.updated),
                (got.expires, want.expires),
            )
        )
    )


async def verify(url: str, filled: Filled, **options: Any) -> int:
    """Read the kept records back through the real store's ``load`` and ``list_user``.

    Raises AssertionError naming the first difference; returns how many records were checked.
    """
    store = open_store(url, **options)
    try:
        checked = 0
        for key, want in filled.records.items():
            got = await store.load(key)
            assert same(got, want), f"{url}: load({key[:12]}...) gave {got!r}, wrote {want!r}"
            checked += 1
        for user, keys in filled.users.items():
            listed = dict(await store.list_user(user))
            assert set(listed) == keys, (
                f"{url}: list_user({user!r}) gave {len(listed)} keys, wrote {len(keys)}"
            )
            for key, got in listed.items():
                assert same(got, filled.records[key]), (
                    f"{url}: list_user({user!r}) gave {got!r} for {key[:12]}..."
                )
        absent = hash_session_id("never issued")
        assert await store.load(absent) is None, f"{url}: a key never written loads"
        return checked
    finally:
        await store.close()


async def stored_size(url: str, **options: Any) -> dict[str, Any]:
    """What the database holds now: sessions (or keys) stored and the space they take."""
    from sessions.stores.postgres import PostgresStore
    from sessions.stores.redis import RedisStore
    from sessions.stores.sqlite import SQLiteStore

    store = open_store(url, **options)
    try:
        if isinstance(store, SQLiteStore):
            import sqlite3

            conn = sqlite3.connect(store.path)
            try:
                count = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
            finally:
                conn.close()
            size = sum(
                os.path.getsize(store.path + s) for s in ("", "-wal") if os.path.exists(store.path + s)
            )
            return {"sessions": count, "bytes": size, "human": _human(size), "what": "database file + WAL"}
        if isinstance(store, RedisStore):
            info = await store.client.info("memory")
            return {
                "keys": await store.client.dbsize(), "bytes": info["used_memory"], "human": info["used_memory_human"],
                "what": "INFO memory used_memory (the whole server); keys: DBSIZE of this database",
            }  # fmt: skip
        if isinstance(store, PostgresStore):
            table = store.qualified_name
            cur = await store.run_query(
                f"SELECT count(*), pg_total_relation_size('{table}'), pg_size_pretty(pg_total_relation_size('{table}'))"
                f" FROM {table}",
                {}, idempotent=True,
            )  # fmt: skip
            row = await cur.fetchone()
            assert row is not None
            return {
                "sessions": row[0],
                "bytes": row[1],
                "human": row[2],
                "what": "pg_total_relation_size (table + indexes)",
            }
        raise ValueError(f"no size for a {store.name} store")
    finally:
        await store.close()


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1024
    raise AssertionError("not reached")

"""bench/fill.py writes what each store itself writes: a few hundred sessions, read back exactly.

The store-size benchmark (bench/store_size.py) fills SQLite, Redis and PostgreSQL with a
million sessions through the driver; a fill that drifted from a store's layout would
measure lookups of nothing. Each test here fills a store with 200 sessions, reads every
one back through the store's own ``load`` and ``list_user``, compares one filled session
field by field with the same record written by ``store.create``, and checks that the
read-back check itself fails on a changed record. Correctness only: no timing.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bench.fill import Filled, Plan, fill_postgres, fill_redis, fill_sqlite, sessions, stored_size, verify
from sessions.manager import DEFAULT_IDLE_TIMEOUT
from sessions.stores import open_store
from sessions.testing import new_key

COUNT = 200
#: 40 users over 200 sessions: most users have several sessions, so list_user has work.
PLAN = Plan(COUNT, users=40, keep_all=True)


def test_the_generated_sessions_look_like_the_managers() -> None:
    now = time.time()
    filled = Filled("-", 1000)
    rows = list(sessions(Plan(1000, users=100_000), filled, now=now))
    keys = [key for key, _ in rows]
    assert len(set(keys)) == 1000 and all(len(k) == 64 and int(k, 16) >= 0 for k in keys)
    with_user = [r for _, r in rows if r.user_id is not None]
    assert 400 < len(with_user) < 600  # about half
    assert all(
        r.meta.keys() == {"ip", "ua", "login"} and r.data["user"] == f'"{r.user_id}"' for r in with_user
    )
    assert all(r.meta == {} and r.data == {"count": "1"} for _, r in rows if r.user_id is None)
    assert all(
        now + DEFAULT_IDLE_TIMEOUT - 61 < r.expires <= now + DEFAULT_IDLE_TIMEOUT + 1e-6 for _, r in rows
    )
    assert all(r.created <= r.updated < r.expires for _, r in rows)
    # The sample: a few sessions, and every session of their users (at least one user).
    assert filled.users and all(
        filled.users[r.user_id] >= {k} for k, r in filled.records.items() if r.user_id
    )
    assert all(key in filled.records for keys in filled.users.values() for key in keys)
    # Reproducible from the seed, apart from the time.
    again = list(sessions(Plan(1000, users=100_000), Filled("-", 1000), now=now))
    assert [k for k, _ in again] == keys


async def read_back(url: str, filled: Filled, **options: Any) -> None:
    """Every record through the store's load, every user's sessions through its list_user."""
    assert len(filled.records) == COUNT and sum(len(keys) for keys in filled.users.values()) > COUNT // 3
    assert await verify(url, filled, **options) == COUNT


async def a_changed_record_is_noticed(url: str, filled: Filled, **options: Any) -> None:
    """The read-back check is no rubber stamp: one item changed through the store fails it."""
    key, record = next((k, r) for k, r in filled.records.items() if r.user_id is not None)
    store = open_store(url, **options)
    try:
        assert await store.update(
            key, set_items={"count": "2"}, unset_keys=(), expires=record.expires, updated=record.updated
        )
    finally:
        await store.close()
    with pytest.raises(AssertionError, match="load"):
        await verify(url, filled, **options)


async def create_reference(url: str, filled: Filled, **options: Any) -> tuple[str, str]:
    """(a filled session with a user, the same record written by the store under a new key)."""
    key, record = next((k, r) for k, r in filled.records.items() if r.user_id is not None and r.meta)
    reference = new_key()
    store = open_store(url, **options)
    try:
        await store.create(reference, record)
    finally:
        await store.close()
    return key, reference


@pytest.mark.gen_test(timeout=60)
async def test_sqlite_fill_reads_back_as_the_store_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "fill.sqlite3"
    url = f"sqlite:///{path}"
    filled = await fill_sqlite(url, PLAN)
    assert (await stored_size(url))["sessions"] == COUNT
    await read_back(url, filled)
    key, reference = await create_reference(url, filled)
    conn = sqlite3.connect(path)
    try:
        row = "SELECT user_id, created, updated, expires, meta, kind FROM sessions WHERE key = ?"
        items = "SELECT name, value FROM session_items WHERE key = ? ORDER BY name"
        assert conn.execute(row, (key,)).fetchall() == conn.execute(row, (reference,)).fetchall() != []
        assert conn.execute(items, (key,)).fetchall() == conn.execute(items, (reference,)).fetchall() != []
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    assert path.stat().st_mode & 0o777 == 0o600  # the store made the file, private
    await a_changed_record_is_noticed(url, filled)


@pytest.mark.gen_test(timeout=60)
async def test_redis_fill_reads_back_as_the_store_writes_it(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    from sessions.stores.redis import RedisStore

    filled = await fill_redis(redis_url, PLAN, prefix=redis_prefix)
    await read_back(redis_url, filled, prefix=redis_prefix)
    key, reference = await create_reference(redis_url, filled, prefix=redis_prefix)
    store = RedisStore(redis_url, prefix=redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ours = [name async for name in client.scan_iter(match=f"{redis_prefix}*")]
        assert len(ours) == COUNT + 1 + len({r.user_id for r in filled.records.values() if r.user_id})
        user = filled.records[key].user_id
        assert user is not None
        filled_hash, reference_hash = (store.session_key(k) for k in (key, reference))
        assert await client.hgetall(filled_hash) == await client.hgetall(reference_hash) != {}
        assert await client.pexpiretime(filled_hash) == await client.pexpiretime(reference_hash) > 0
        index = store.user_key(user)
        assert await client.zscore(index, key) == await client.zscore(index, reference) is not None
        entries = await client.zrange(index, 0, -1, withscores=True)  # [(member, score)]
        top = max(float(entry[1]) for entry in entries)
        assert await client.pexpiretime(index) == int(top)
    finally:
        await client.aclose()
        await store.close()
    await a_changed_record_is_noticed(redis_url, filled, prefix=redis_prefix)


@pytest.mark.gen_test(timeout=60)
async def test_postgres_fill_reads_back_as_the_store_writes_it(
    postgres_url: str, postgres_test_schema: str
) -> None:
    import psycopg

    filled = await fill_postgres(postgres_url, PLAN, schema=postgres_test_schema)
    assert (await stored_size(postgres_url, schema=postgres_test_schema))["sessions"] == COUNT
    await read_back(postgres_url, filled, schema=postgres_test_schema)
    key, reference = await create_reference(postgres_url, filled, schema=postgres_test_schema)
    row = (
        f'SELECT data, created::text, updated::text, expires::text, user_id, meta, kind FROM "{postgres_test_schema}".'
        "sessions WHERE key = %s"
    )
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute(row, (key,)).fetchall() == conn.execute(row, (reference,)).fetchall() != []
    await a_changed_record_is_noticed(postgres_url, filled, schema=postgres_test_schema)

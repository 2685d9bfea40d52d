"""SQLite-specific behaviour: group commit, private files, a second process, old databases."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time

import pytest

from sessions.stores.base import StoreError
from sessions.stores.sqlite import SQLiteStore
from sessions.testing import new_key, record


@pytest.fixture
def store(tmp_path, io_loop):
    store = SQLiteStore(tmp_path / "sessions.db")
    yield store
    io_loop.run_sync(store.close)


@pytest.mark.gen_test
async def test_a_failing_write_in_a_batch_rolls_back_only_itself(store):
    await store.setup()
    keys = [new_key() for _ in range(20)]

    def half_done_then_fail(conn):
        conn.execute("INSERT INTO sessions (key, created, updated, expires) VALUES ('doomed', 0, 0, 9e12)")
        raise sqlite3.IntegrityError("made to fail")

    outcomes = await asyncio.gather(
        *(store.create(k, record({"i": str(i)})) for i, k in enumerate(keys[:10])),
        store._run(half_done_then_fail),
        *(store.create(k, record({"i": str(i)})) for i, k in enumerate(keys[10:], 10)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[10], StoreError)
    assert [o for i, o in enumerate(outcomes) if i != 10] == [None] * 20
    for i, key in enumerate(keys):
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == {"i": str(i)}
    assert await store.load("doomed") is None  # its savepoint was rolled back


@pytest.mark.gen_test
async def test_nobody_hears_saved_before_the_commit(tmp_path, store):
    """A second connection (another process) sees every write a caller was told about."""
    keys = [new_key() for _ in range(30)]
    await asyncio.gather(*(store.create(k, record({"a": "1"})) for k in keys))
    other = sqlite3.connect(tmp_path / "sessions.db")
    try:
        found = {row[0] for row in other.execute("SELECT key FROM sessions")}
    finally:
        other.close()
    assert set(keys) <= found


@pytest.mark.gen_test
async def test_files_are_private(tmp_path):
    path = tmp_path / "new-dir" / "sessions.db"
    store = SQLiteStore(path)
    try:
        await store.create(new_key(), record({"a": "1"}))
    finally:
        await store.close()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    for name in os.listdir(path.parent):
        assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name


def _old_database(path, extra_columns):
    """A database as an older version left it: sessions with ``extra_columns`` and items, nothing else."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # as every version of the store leaves it
    conn.executescript(
        f"""
        CREATE TABLE sessions (key TEXT PRIMARY KEY, user_id TEXT, created REAL NOT NULL,
                               updated REAL NOT NULL, expires REAL NOT NULL{extra_columns}) WITHOUT ROWID;
        CREATE TABLE session_items (key TEXT NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
                                    name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key, name)) WITHOUT ROWID;
        """
    )
    return conn


@pytest.mark.gen_test
async def test_a_database_from_before_meta_and_counters_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    conn = _old_database(path, "")
    now = time.time()
    conn.execute("INSERT INTO sessions VALUES ('old', 'u1', ?, ?, ?)", (now, now, now + 600))
    conn.execute("INSERT INTO session_items VALUES ('old', 'count', '3')")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    try:
        loaded = await store.load("old")
        assert loaded is not None and loaded.data == {"count": "3"} and loaded.meta == {}
        assert await store.update("old", set_items={}, unset_keys=[], expires=now + 900, updated=now, meta={"ip": "x"})
        assert (await store.load("old")).meta == {"ip": "x"}
        assert (await store.hit("n", 60))[0] == 1
    finally:
        await store.close()


@pytest.mark.gen_test
async def test_a_database_from_before_kinds_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    conn = _old_database(path, ", meta TEXT")
    now = time.time()
    rows = [
        ("token", '{"kind":"remember","ua":"Firefox"}'), ("bare-token", '{"kind":"remember"}'),
        ("session", '{"ua":"Firefox"}'), ("no-meta", None),
    ]  # fmt: skip
    for key, meta in rows:
        conn.execute("INSERT INTO sessions VALUES (?, 'u1', ?, ?, ?, ?)", (key, now, now, now + 600, meta))
    conn.commit()
    conn.close()
    stores = [SQLiteStore(path) for _ in range(3)]  # several processes opening it at once
    try:
        await asyncio.gather(*(s.setup() for s in stores))
        store = stores[0]
        loaded = {key: await store.load(key) for key, _ in rows}
        assert {key: (r.kind, r.meta) for key, r in loaded.items()} == {
            "token": ("remember", {"ua": "Firefox"}), "bare-token": ("remember", {}),
            "session": ("session", {"ua": "Firefox"}), "no-meta": ("session", {}),
        }  # fmt: skip
        assert sorted(k for k, _ in await store.list_user("u1", kind="remember")) == ["bare-token", "token"]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@pytest.mark.gen_test
async def test_close_finishes_queued_calls_first(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    keys = [new_key() for _ in range(10)]
    writes = [asyncio.ensure_future(store.create(k, record({"a": "1"}))) for k in keys]
    await asyncio.sleep(0)  # the writes are queued
    await store.close()
    await asyncio.gather(*writes)
    with pytest.raises(StoreError, match="closed"):
        await store.create(new_key(), record({"a": "1"}))
    reopened = SQLiteStore(tmp_path / "s.db")
    try:
        assert all([await reopened.load(k) is not None for k in keys])
    finally:
        await reopened.close()

"""The public store contract suite (``sessions.testing``) over the memory and SQLite stores
(MongoDB, Redis, Redis Cluster, PostgreSQL: tests/lib/test_store_mongo.py, test_store_redis.py,
test_store_postgres.py; a third-party store through the public API: test_sessions_testing.py)."""

from __future__ import annotations

import pytest

from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore
from sessions.testing import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self, clock):
        return MemoryStore(clock=clock)


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path, io_loop, clock):
        store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
        yield store
        io_loop.run_sync(store.close)

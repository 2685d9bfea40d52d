"""The store contract over the memory and SQLite stores (Mongo: tests/test_store_mongo.py)."""

from __future__ import annotations

import pytest

from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore
from tests.store_contract import StoreContract


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

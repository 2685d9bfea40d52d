"""The store contract over the memory and SQLite stores (Mongo: tests/test_store_mongo.py)."""

from __future__ import annotations

import pytest

from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore
from tests.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return MemoryStore()


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path, io_loop):
        store = SQLiteStore(tmp_path / "sessions.db")
        yield store
        io_loop.run_sync(store.close)

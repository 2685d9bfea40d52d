"""The user repository over memory, SQLite and MongoDB (Redis, PostgreSQL: their store test modules)."""

from __future__ import annotations

import uuid

import pytest

from accounts.backends.memory import MemoryUsers
from accounts.backends.sqlite import SQLiteUsers
from accounts.users import InvalidUserInput, clean_name, normalize_email, open_user_repository
from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore
from tests.user_contract import UserRepositoryContract


class TestMemoryUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self):
        return MemoryUsers()


class TestSQLiteUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self, tmp_path, io_loop):
        store = SQLiteStore(tmp_path / "s.db")
        users = open_user_repository(store)
        assert isinstance(users, SQLiteUsers)
        yield users
        io_loop.run_sync(users.close)
        io_loop.run_sync(store.close)


@pytest.mark.mongo
class TestMongoUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self, mongo_url, io_loop):
        from sessions.stores.mongo import MongoStore

        store = MongoStore(mongo_url, database=f"users_{uuid.uuid4().hex[:12]}")
        yield open_user_repository(store)
        io_loop.run_sync(store.close)


def test_memory_store_shares_one_repository():
    store = MemoryStore()
    assert open_user_repository(store) is open_user_repository(store)


@pytest.mark.parametrize(
    "raw, normal",
    [(" Ana@Example.COM ", "ana@example.com"), ("ｂｏｂ@example.com", "bob@example.com"), ("a.b+c@d.co", "a.b+c@d.co")],
)
def test_emails_are_normalised(raw, normal):
    assert normalize_email(raw) == normal


@pytest.mark.parametrize("bad", ["", "ana", "ana@", "@x.com", "a b@c.com", "a@b", "a@@b.com", "x" * 250 + "@e.com", "a\n@b.com"])
def test_malformed_emails_are_refused(bad):
    with pytest.raises(InvalidUserInput):
        normalize_email(bad)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 81, "tab\there", "line\nbreak"])
def test_bad_names_are_refused(bad):
    with pytest.raises(InvalidUserInput):
        clean_name(bad)

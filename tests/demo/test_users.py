"""The user repository over memory, SQLite and MongoDB (Redis, PostgreSQL: their store test modules)."""

from __future__ import annotations

import uuid

import pytest

from accounts.backends.memory import MemoryUsers
from accounts.backends.sqlite import SQLiteUsers
from accounts.users import InvalidUserInput, clean_name, normalize_email, open_user_repository, user_schemes
from server import DemoConfig
from sessions import KeyRing, generate_key
from sessions.stores.memory import MemoryStore
from sessions.stores.sqlite import SQLiteStore
from tests.fixtures.user_contract import UserRepositoryContract


class TestMemoryUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self):
        return MemoryUsers()


class TestSQLiteUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self, tmp_path, io_loop):
        users = open_user_repository(f"sqlite:///{tmp_path / 's.db'}")  # its own connection, from the URL
        assert isinstance(users, SQLiteUsers)
        yield users
        io_loop.run_sync(users.close)


class TestSQLiteUsersBesideTheStore(UserRepositoryContract):
    @pytest.fixture
    def users(self, tmp_path, io_loop):
        store = SQLiteStore(tmp_path / "s.db")
        io_loop.run_sync(store.setup)
        users = open_user_repository(f"sqlite:///{tmp_path / 's.db'}", share=store)
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
        yield open_user_repository(mongo_url, share=store)  # in the store's database, on its client
        io_loop.run_sync(store.close)


@pytest.mark.mongo
class TestMongoUsersOwnClient(UserRepositoryContract):
    @pytest.fixture
    def users(self, mongo_url, io_loop):
        users = open_user_repository(mongo_url, database=f"users_{uuid.uuid4().hex[:12]}")
        yield users
        io_loop.run_sync(users.close)


def test_memory_store_shares_one_repository():
    """memory:// users live in the repository object: the demo keeps one per app, every handler sees it."""
    config = DemoConfig(keys=KeyRing.from_text(generate_key()), store=MemoryStore(), bcrypt_cost=4)
    accounts = config.build_accounts()
    assert config.build_accounts().users is accounts.users
    assert isinstance(accounts.users, MemoryUsers)
    accounts.hasher.close()
    assert open_user_repository("memory://") is not open_user_repository("memory://")


def test_user_storage_opens_by_url_scheme():
    assert {"memory", "sqlite", "mongodb", "redis", "redis+cluster", "postgresql"} <= set(user_schemes())
    with pytest.raises(ValueError, match="unknown user storage URL"):
        open_user_repository("nosuch://x")
    with pytest.raises(ValueError, match="memory://"):
        open_user_repository("memory://elsewhere")
    with pytest.raises(ValueError, match="sqlite"):
        open_user_repository("sqlite://relative-without-slash")
    with pytest.raises(TypeError):
        open_user_repository("memory://", no_such_option=1)


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

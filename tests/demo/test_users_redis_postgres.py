"""The user repository on Redis (standalone and Cluster) and PostgreSQL, next to the sessions.

The contract suite (tests/fixtures/user_contract.py) runs over all three, each test isolated
by its own key prefix or schema; the tests below cover what only these backends
have: the key and table layout, the cross-slot registration steps in Redis, and
error translation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from accounts.backends.postgres import PostgresUsers
from accounts.backends.redis import RedisUsers
from accounts.users import EmailTaken, open_user_repository
from sessions import StoreError
from sessions.stores.memory import MemoryStore
from sessions.stores.postgres import PostgresStore
from sessions.stores.redis import RedisStore
from sessions.testing import new_key, record
from tests.fixtures.support import free_port
from tests.fixtures.user_contract import UserRepositoryContract, make_user


def _redis_users(url: str, prefix: str, io_loop: Any) -> Iterator[RedisUsers]:
    store = RedisStore(url, prefix=prefix)
    users = open_user_repository(url, share=store)  # on the store's client and prefix
    assert isinstance(users, RedisUsers)
    yield users
    io_loop.run_sync(users.close)
    io_loop.run_sync(store.close)


class TestRedisUsersOwnClient(UserRepositoryContract):
    @pytest.fixture
    def users(self, redis_url: str, redis_prefix: str, io_loop: Any) -> Iterator[RedisUsers]:
        users = open_user_repository(redis_url, prefix=redis_prefix)  # a client of its own, from the URL
        assert isinstance(users, RedisUsers)
        yield users
        io_loop.run_sync(users.close)


class TestRedisUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self, redis_url: str, redis_prefix: str, io_loop: Any) -> Iterator[RedisUsers]:
        yield from _redis_users(redis_url, redis_prefix, io_loop)


class TestRedisClusterUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self, redis_cluster_url: str, redis_prefix: str, io_loop: Any) -> Iterator[RedisUsers]:
        yield from _redis_users(redis_cluster_url, redis_prefix, io_loop)


class TestPostgresUsers(UserRepositoryContract):
    @pytest.fixture
    def users(self, postgres_url: str, postgres_test_schema: str, io_loop: Any) -> Iterator[PostgresUsers]:
        store = PostgresStore(postgres_url, schema=postgres_test_schema)
        users = open_user_repository(postgres_url, share=store)  # through the store's pool
        assert isinstance(users, PostgresUsers)
        yield users
        io_loop.run_sync(users.close)
        io_loop.run_sync(store.close)


class TestPostgresUsersOwnPool(UserRepositoryContract):
    @pytest.fixture
    def users(self, postgres_url: str, postgres_test_schema: str, io_loop: Any) -> Iterator[PostgresUsers]:
        users = open_user_repository(postgres_url, schema=postgres_test_schema)  # a pool of its own
        assert isinstance(users, PostgresUsers)
        yield users
        io_loop.run_sync(users.close)


# -- Redis -----------------------------------------------------------------------


@pytest.fixture(params=["standalone", "cluster"])
def redis_store(request: pytest.FixtureRequest, redis_prefix: str, io_loop: Any) -> Iterator[RedisStore]:
    url = str(request.getfixturevalue("redis_url" if request.param == "standalone" else "redis_cluster_url"))
    store = RedisStore(url, prefix=redis_prefix)
    yield store
    io_loop.run_sync(store.close)


@pytest.mark.gen_test(timeout=30)
async def test_redis_layout_is_apart_from_sessions_and_counters(redis_store: RedisStore) -> None:
    users = RedisUsers.for_store(redis_store)
    user = make_user(email="a{b}c@example.com")
    await users.add(user)
    # The user's sessions index is <prefix>user:{<id>}: a session of this user and a
    # counter named after them live beside the account and never touch it.
    key = new_key()
    await redis_store.create(key, record({"a": "1"}, user_id=user.id))
    await redis_store.hit(user.id, 60)
    fields = await redis_store.client.hgetall(users.user_key(user.id))
    assert fields == {
        "email": "a{b}c@example.com", "name": "Ana", "password_hash": "bcrypt-sha256$x",
        "created": repr(user.created), "credentials_version": "1",
    }  # fmt: skip
    claim = await redis_store.client.get(users.email_key(user.email))
    assert claim.split(" ")[0] == user.id and claim.split(" ")[1].isdigit()
    assert users.user_key(user.id) != redis_store.user_key(user.id)
    assert await redis_store.destroy_user(user.id) == 1
    assert await users.by_id(user.id) == user and await users.by_email(user.email) == user
    assert await redis_store.client.ttl(users.user_key(user.id)) == -1  # users never expire


@pytest.mark.gen_test(timeout=30)
async def test_redis_orphan_claim_is_taken_over_only_after_the_grace(redis_store: RedisStore) -> None:
    users = RedisUsers.for_store(redis_store)
    email_key = users.email_key("ana@example.com")
    # A registration that died after claiming the address, just now...
    await redis_store.client.set(email_key, f"{'0' * 32} {10**13}")  # claimed in the far future: "now"
    with pytest.raises(EmailTaken):
        await users.add(make_user())
    assert await users.by_email("ana@example.com") is None  # a claim without a user is no user
    # ... and one that died long ago: the address is free again.
    await redis_store.client.set(email_key, f"{'0' * 32} 1000")
    user = make_user()
    await users.add(user)
    assert await users.by_email("ana@example.com") == user
    # A claim whose user exists is never taken over, however old.
    await redis_store.client.set(email_key, f"{user.id} 1000")
    with pytest.raises(EmailTaken):
        await users.add(make_user(name="Other"))


@pytest.mark.gen_test(timeout=30)
async def test_redis_failed_create_releases_the_claim(redis_store: RedisStore) -> None:
    users = RedisUsers.for_store(redis_store)
    first = make_user(email="first@example.com")
    await users.add(first)
    with pytest.raises(ValueError, match="exists"):
        await users.add(make_user(id=first.id))  # same id, new address: step 2 refuses
    assert await redis_store.client.get(users.email_key("ana@example.com")) is None
    await users.add(make_user())  # the address is free


@pytest.mark.gen_test(timeout=60)
async def test_redis_concurrent_password_changes_each_bump_the_version(redis_store: RedisStore) -> None:
    users = RedisUsers.for_store(redis_store)
    user = make_user()
    await users.add(user)
    versions = await asyncio.gather(*(users.set_password(user.id, f"h{i}") for i in range(20)))
    assert sorted(v for v in versions if v is not None) == list(range(2, 22))
    assert (await users.by_id(user.id)).credentials_version == 21  # type: ignore[union-attr]


@pytest.mark.gen_test(timeout=30)
async def test_redis_users_work_on_a_bytes_client(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        users = RedisUsers.for_store(RedisStore(client, prefix=redis_prefix))
        user = make_user(name="Zoë")
        await users.add(user)
        assert await users.by_email(user.email) == user
        assert await users.set_password(user.id, "x") == 2
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=15)
async def test_redis_users_unreachable_is_a_store_error() -> None:
    for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis+cluster://127.0.0.1:{free_port()}"):
        store = RedisStore(url, timeout=0.5)
        users = RedisUsers.for_store(store)
        for call in (users.setup(), users.by_id("x"), users.add(make_user()), users.set_password("x", "y")):
            with pytest.raises(StoreError):
                await call
        await store.close()


# -- PostgreSQL ------------------------------------------------------------------


@pytest.fixture
def pg_store(postgres_url: str, postgres_test_schema: str, io_loop: Any) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_url, schema=postgres_test_schema)
    yield store
    io_loop.run_sync(store.close)


@pytest.mark.gen_test(timeout=30)
async def test_postgres_users_table_layout_and_idempotent_setup(
    pg_store: PostgresStore, postgres_url: str, postgres_test_schema: str
) -> None:
    repositories = [PostgresUsers.for_store(pg_store) for _ in range(3)]
    await asyncio.gather(*(u.setup() for u in repositories))
    await asyncio.gather(*(u.setup() for u in repositories))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        columns = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'users'", [postgres_test_schema],
        ).fetchall())  # fmt: skip
        constraints = {row[0] for row in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass", [f'"{postgres_test_schema}".users']
        ).fetchall()}  # fmt: skip
    assert columns == {
        "id": "text", "email": "text", "name": "text", "password_hash": "text",
        "created": "double precision", "credentials_version": "integer",
    }  # fmt: skip
    assert "users_email_key" in constraints and "users_pkey" in constraints


@pytest.mark.gen_test(timeout=30)
async def test_postgres_duplicate_id_is_not_email_taken(pg_store: PostgresStore) -> None:
    users = PostgresUsers.for_store(pg_store)
    first = make_user(email="first@example.com")
    await users.add(first)
    with pytest.raises(ValueError, match="exists") as caught:
        await users.add(make_user(id=first.id))
    assert not isinstance(caught.value, EmailTaken)


@pytest.mark.gen_test(timeout=60)
async def test_postgres_concurrent_password_changes_each_bump_the_version(pg_store: PostgresStore) -> None:
    users = PostgresUsers.for_store(pg_store)
    user = make_user()
    await users.add(user)
    versions = await asyncio.gather(*(users.set_password(user.id, f"h{i}") for i in range(20)))
    assert sorted(v for v in versions if v is not None) == list(range(2, 22))


@pytest.mark.gen_test(timeout=15)
async def test_postgres_users_unreachable_is_a_store_error() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout=0.5)
    users = PostgresUsers.for_store(store)
    try:
        for call in (users.setup(), users.by_id("x"), users.add(make_user())):
            with pytest.raises(StoreError):
                await call
    finally:
        await store.close()


def test_for_store_refuses_other_stores() -> None:
    with pytest.raises(TypeError):
        RedisUsers.for_store(MemoryStore())
    with pytest.raises(TypeError):
        PostgresUsers.for_store(MemoryStore())

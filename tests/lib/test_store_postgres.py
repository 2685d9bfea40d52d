"""The PostgreSQL store against a real server (initdb/pg_ctl by the fixture, or POSTGRES_URL).

The contract suite runs over it; the tests below cover what only this store has:
the table layout, the one-statement partial save, setup, pruning, and options.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from sessions.stores import open_store
from sessions.stores.postgres import PostgresStore, escape_nul, unescape_nul
from sessions.testing import FakeClock, StoreContract, new_key, record
from tests.fixtures.support import assert_unreachable_fails_fast, free_port


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(
        self, clock: FakeClock, postgres_url: str, postgres_test_schema: str, io_loop: Any
    ) -> Iterator[PostgresStore]:
        # A schema per test: the default table names (sessions, counters), nothing shared.
        store = PostgresStore(postgres_url, schema=postgres_test_schema, clock=clock)
        yield store
        io_loop.run_sync(store.close)


@pytest.fixture
def store(
    clock: FakeClock, postgres_url: str, postgres_schema: str, postgres_table: str, io_loop: Any
) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_url, schema=postgres_schema, table=postgres_table, clock=clock)
    yield store
    io_loop.run_sync(store.close)


@pytest.fixture
def db(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to look at what the store wrote."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def now_record(clock: FakeClock, data: dict[str, str], **kwargs: Any) -> Any:
    return record(data, clock=clock, **kwargs)


# -- key escaping (no server) ----------------------------------------------------


@pytest.mark.parametrize("name", ["", "plain", "%", "%25", "%00", "x\x00y", "a.b", "$where", "ünï%\x00"])
def test_escape_nul_round_trips_without_nul(name: str) -> None:
    stored = escape_nul(name)
    assert "\x00" not in stored and unescape_nul(stored) == name


# -- against the server ----------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_row_layout_and_nul_in_names(
    store: PostgresStore, clock: FakeClock, db: psycopg.Connection[Any]
) -> None:
    key = new_key()
    data = {"nested": '{"b":1,  "a":[1,2]}', "x\x00y": "1", "%": "2"}
    await store.create(key, now_record(clock, data, user_id="alice", meta={"ua": "A\x00B"}))
    loaded = await store.load(key)
    assert loaded is not None and loaded.data == data and loaded.meta == {"ua": "A\x00B"}
    row = db.execute(
        f"SELECT data, user_id, extract(epoch FROM expires)::float8 FROM {store.qualified_name} WHERE key = %s",
        [key],
    ).fetchone()
    assert row is not None
    assert row[0] == {"nested": '{"b":1,  "a":[1,2]}', "x%00y": "1", "%25": "2"}  # JSON text kept verbatim
    assert row[1] == "alice" and row[2] == pytest.approx(clock.now + 600, abs=1e-5)


@pytest.mark.gen_test(timeout=30)
async def test_setup_creates_table_and_indexes_idempotently_from_many_processes(
    postgres_url: str, postgres_schema: str, postgres_table: str, db: psycopg.Connection[Any]
) -> None:
    stores = [PostgresStore(postgres_url, schema=postgres_schema, table=postgres_table) for _ in range(4)]
    try:
        await asyncio.gather(*(s.setup() for s in stores))
        await asyncio.gather(*(s.setup() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    columns = dict(db.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        [postgres_schema, postgres_table],
    ).fetchall())  # fmt: skip
    assert columns == {
        "key": "text", "data": "jsonb", "created": "timestamp with time zone",
        "updated": "timestamp with time zone", "expires": "timestamp with time zone",
        "user_id": "text", "meta": "jsonb", "kind": "text",
    }  # fmt: skip
    indexes = sorted(row[0] for row in db.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s", [postgres_schema, postgres_table]
    ).fetchall())  # fmt: skip
    assert len(indexes) == 3
    assert any("(expires)" in i for i in indexes) and any("(user_id) WHERE (user_id IS NOT NULL)" in i for i in indexes)


@pytest.mark.gen_test(timeout=30)
async def test_a_table_from_before_kinds_is_upgraded(
    postgres_url: str, postgres_schema: str, postgres_table: str, db: psycopg.Connection[Any]
) -> None:
    table = f'"{postgres_schema}"."{postgres_table}"'
    db.execute(
        f"CREATE TABLE {table} (key text PRIMARY KEY, data jsonb NOT NULL DEFAULT '{{}}', "
        "created timestamptz NOT NULL, updated timestamptz NOT NULL, expires timestamptz NOT NULL, "
        "user_id text, meta jsonb NOT NULL DEFAULT '{}')"
    )
    for key, meta in [("token", '{"kind": "remember", "ua": "Firefox"}'), ("session", '{"ua": "Firefox"}')]:
        db.execute(
            f"INSERT INTO {table} VALUES (%s, '{{}}', now(), now(), now() + interval '10 minutes', 'u1', %s)",
            [key, meta],
        )
    stores = [PostgresStore(postgres_url, schema=postgres_schema, table=postgres_table) for _ in range(3)]
    try:
        await asyncio.gather(*(s.setup() for s in stores))  # several processes at once: one upgrade
        token, session = await stores[0].load("token"), await stores[1].load("session")
        assert token is not None and token.kind == "remember" and token.meta == {"ua": "Firefox"}
        assert session is not None and session.kind == "session" and session.meta == {"ua": "Firefox"}
        assert [k for k, _ in await stores[2].list_user("u1", kind="remember")] == ["token"]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    default = db.execute(
        "SELECT column_default, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s AND column_name = 'kind'", [postgres_schema, postgres_table],
    ).fetchone()  # fmt: skip
    assert default == ("'session'::text", "NO")


@pytest.mark.gen_test(timeout=30)
async def test_counters_table_layout_nul_names_and_pruning(
    postgres_url: str, postgres_test_schema: str, clock: FakeClock, db: psycopg.Connection[Any]
) -> None:
    store = PostgresStore(postgres_url, schema=postgres_test_schema, prune_interval=None, clock=clock)
    try:
        clock.now = 1_800_000_000.0 + 5
        assert await store.hit("a\x00b%", 60) == (1, 1_800_000_060.0)
        assert await store.hit("a\x00b%", 60) == (2, 1_800_000_060.0)
        assert (await store.hit("a%00b%25", 60))[0] == 1  # its escaped form is another name
        await store.hit("long", 3600)
        table = f'"{postgres_test_schema}".counters'
        columns = dict(db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'counters'", [postgres_test_schema],
        ).fetchall())  # fmt: skip
        assert columns == {"name": "text", "slot": "text", "hits": "bigint", "expires": "timestamp with time zone"}
        rows = db.execute(
            f"SELECT name, slot, hits, extract(epoch FROM expires)::float8 FROM {table} ORDER BY name, slot"
        ).fetchall()
        assert rows == [
            ("a%00b%25", "60@1800000000", 2, 1_800_000_060.0),
            ("a%2500b%2525", "60@1800000000", 1, 1_800_000_060.0),
            ("long", "3600@1800000000", 1, 1_800_003_600.0),
        ]
        assert await store.prune() == 0
        assert len(db.execute(f"SELECT 1 FROM {table}").fetchall()) == 3  # no window has ended
        clock.advance(60)
        await store.create(new_key(), record({"a": "1"}, ttl=-1, clock=clock))
        assert await store.prune() == 1  # the count is the sessions'
        assert db.execute(f"SELECT name FROM {table}").fetchall() == [("long",)]
        await store.reset_hits("long", 3600)
        assert db.execute(f"SELECT name FROM {table}").fetchall() == []
        with pytest.raises(ValueError):
            PostgresStore(postgres_url, table="x", counter_table="x")
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_partial_save_is_one_statement(store: PostgresStore, clock: FakeClock) -> None:
    """The save is a single UPDATE using || and - on the JSONB: no read, no transaction block."""
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1", "b": "2"}))
    assert await store.update(key, set_items={"c": "3"}, unset_keys=["a"], expires=clock.now + 60, updated=clock.now)
    assert (await store.load(key)).data == {"b": "2", "c": "3"}  # type: ignore[union-attr]
    update_sql = store._sql["update00"]
    assert "(data || %(set)s::jsonb) - %(unset)s::text[]" in update_sql and update_sql.startswith("UPDATE ")
    assert "expires > to_timestamp(%(now)s)" in update_sql


@pytest.mark.gen_test(timeout=30)
async def test_prune_task_deletes_expired_rows(
    postgres_url: str, postgres_schema: str, postgres_table: str, db: psycopg.Connection[Any]
) -> None:
    store = PostgresStore(postgres_url, schema=postgres_schema, table=postgres_table, prune_interval=0.2)
    try:
        assert store.expires_natively and "pruned every 0.2 s" in store.describe()
        live, dead = new_key(), new_key()
        await store.create(live, record({"a": "1"}))
        await store.create(dead, record({"a": "1"}, ttl=-1))
        deadline = time.monotonic() + 10
        while db.execute(f"SELECT 1 FROM {store.qualified_name} WHERE key = %s", [dead]).fetchone():
            assert time.monotonic() < deadline, "the prune task never removed the expired session"
            await asyncio.sleep(0.1)
        assert await store.load(live) is not None
    finally:
        await store.close()
    assert PostgresStore(postgres_url, prune_interval=None).expires_natively is False


@pytest.mark.gen_test(timeout=60)
async def test_fifty_concurrent_saves_of_different_items_all_persist(
    postgres_url: str, postgres_schema: str, postgres_table: str
) -> None:
    stores = [PostgresStore(postgres_url, schema=postgres_schema, table=postgres_table, pool_size=5) for _ in range(3)]
    try:
        key = new_key()
        await stores[0].create(key, record({"base": "0"}, user_id="gus"))

        async def save(i: int) -> bool:
            return await stores[i % 3].update(
                key, set_items={f"k.{i}": str(i)}, unset_keys=["base"] if i == 7 else [],
                expires=time.time() + 600, updated=time.time(),
            )  # fmt: skip

        assert all(await asyncio.gather(*(save(i) for i in range(50))))
        loaded = await stores[1].load(key)
        assert loaded is not None and loaded.data == {f"k.{i}": str(i) for i in range(50)}
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@pytest.mark.gen_test(timeout=30)
async def test_a_pool_passed_in_works_and_stays_open(
    postgres_url: str, postgres_schema: str, postgres_table: str
) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        postgres_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    try:
        store = PostgresStore(pool, schema=postgres_schema, table=postgres_table)
        key = new_key()
        await store.create(key, record({"a": "1"}))
        assert (await store.load(key)).data == {"a": "1"}  # type: ignore[union-attr]
        await store.close()
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
    finally:
        await pool.close()


@pytest.mark.gen_test(timeout=30)
async def test_open_store_builds_postgres_stores_and_checks_options(
    postgres_url: str, postgres_schema: str, postgres_table: str
) -> None:
    for scheme in ("postgresql", "postgres"):
        url = scheme + postgres_url[postgres_url.index("://"):]
        store = open_store(url, schema=postgres_schema, table=postgres_table, pool_size=2, timeout=1.5)
        assert isinstance(store, PostgresStore) and store.pool.max_size == 2
        await store.setup()
        await store.ping()
        await store.close()
    with pytest.raises(ValueError, match="prefix"):
        open_store(postgres_url, prefix="x:")
    with pytest.raises(ValueError):
        PostgresStore(postgres_url, pool_size=0)
    with pytest.raises(TypeError):
        PostgresStore(object())  # type: ignore[arg-type]


@pytest.mark.gen_test(timeout=15)
async def test_unreachable_server_is_a_store_error_quickly() -> None:
    await assert_unreachable_fails_fast(PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout=0.5))


@pytest.mark.gen_test(timeout=30)
async def test_statement_timeout_is_set(store: PostgresStore) -> None:
    await store.setup()
    async with store.pool.connection() as conn:
        row = await (await conn.execute("SHOW statement_timeout")).fetchone()
    assert row is not None and row[0] == "2s"

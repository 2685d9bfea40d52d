"""The Mongo store against a real MongoDB-compatible server (FerretDB, or MONGODB_URL).

The contract suite runs twice, over a PyMongo async client and over a Motor client;
the tests below cover what only the Mongo store has: its document shape, expiry
modes, indexes and error mapping.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

from sessions.manager import hash_session_id
from sessions.stores.base import Record, StoreError
from sessions.stores.mongo import MongoStore, escape_mongo_field, unescape_mongo_field
from sessions.testing import FakeClock, StoreContract, new_key, record
from tests.fixtures.support import assert_unreachable_fails_fast, free_port

# -- the contract, over both drivers ---------------------------------------------


class TestMongoStorePyMongo(StoreContract):
    @pytest.fixture
    def store(self, mongo_url: str, mongo_db_name: str, io_loop: Any, clock: Any):
        store = MongoStore(mongo_url, database=mongo_db_name, clock=clock)
        yield store
        io_loop.run_sync(store.close)


class TestMongoStoreMotor(StoreContract):
    @pytest.fixture
    def store(self, mongo_url: str, mongo_db_name: str, io_loop: Any, clock: Any):
        client = AsyncIOMotorClient(mongo_url, serverSelectionTimeoutMS=2000)
        store = MongoStore(client, database=mongo_db_name, clock=clock)
        yield store
        io_loop.run_sync(store.close)
        client.close()


# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def sync_db(mongo_url: str, mongo_db_name: str):
    """A synchronous view of the test database, to inspect what the store wrote."""
    client: MongoClient = MongoClient(mongo_url, serverSelectionTimeoutMS=2000, tz_aware=True)
    yield client[mongo_db_name]
    client.close()


@pytest.fixture
def store(mongo_url: str, mongo_db_name: str, io_loop: Any):
    """A store on the real clock, its indexes created."""
    store = MongoStore(mongo_url, database=mongo_db_name)
    io_loop.run_sync(store.setup)
    yield store
    io_loop.run_sync(store.close)


def server_supports_ttl(db: Any) -> bool:
    """Ask the server itself, independently of the store, whether it takes TTL indexes."""
    probe = db[f"ttl_probe_{secrets.token_hex(4)}"]
    try:
        probe.create_index("expires", expireAfterSeconds=0)
    except OperationFailure:
        return False
    finally:
        probe.drop()
    return True


def explain_delete(db: Any, collection: str, query: dict[str, Any]) -> dict[str, Any]:
    """``explain`` of a delete with executionStats (explain never deletes anything)."""
    return db.command(
        "explain",
        {"delete": collection, "deletes": [{"q": query, "limit": 0}]},
        verbosity="executionStats",
    )


def plan_stages(plan: Any) -> list[dict[str, Any]]:
    """Every stage of a MongoDB query plan tree, flattened."""
    stages: list[dict[str, Any]] = []
    todo = [plan]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "stage" in node:
                stages.append(node)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return stages


# -- key escaping (no server needed) ---------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "plain", "a.b", "$where", "$", ".", "%", "%%", "%2E", "%25", "a%2Eb", "x\x00y", "ünï.$%", "..$$"],
)
def test_escape_mongo_field_round_trips_and_is_a_safe_field_name(key: str) -> None:
    field = escape_mongo_field(key)
    assert field, "an empty update path is invalid in Mongo"
    assert "." not in field and "$" not in field and "\x00" not in field
    assert unescape_mongo_field(field) == key


def test_escape_mongo_field_is_injective() -> None:
    keys = ["", "%", "%25", "%2525", ".", "%2E", "$", "%24", "\x00", "%00", "a", "a."]
    assert len({escape_mongo_field(k) for k in keys}) == len(keys)


def test_escape_mongo_field_leaves_ordinary_keys_alone() -> None:
    assert escape_mongo_field("user_id") == "user_id"
    assert escape_mongo_field("flash-messages") == "flash-messages"


# -- construction (no server needed) ---------------------------------------------


def test_url_client_gets_short_timeouts_and_url_database() -> None:
    store = MongoStore("mongodb://127.0.0.1:1/appdb")
    client = store.database.client
    assert store.database.name == "appdb"
    assert store.collection.name == "sessions"
    assert client.options.server_selection_timeout == 2.0
    assert client.options.pool_options.connect_timeout == 2.0
    assert client.options.pool_options.socket_timeout == 2.0


def test_url_options_win_over_default_timeouts_and_database_argument_wins() -> None:
    store = MongoStore(
        "mongodb://127.0.0.1:1/appdb?serverSelectionTimeoutMS=5000",
        database="other",
        collection="web_sessions",
        connect_timeout=1.5,
    )
    options = store.database.client.options
    assert options.server_selection_timeout == 5.0
    assert options.pool_options.connect_timeout == 1.5
    assert store.database.name == "other"
    assert store.collection.name == "web_sessions"


def test_client_options_reach_the_client() -> None:
    store = MongoStore("mongodb://127.0.0.1:1/", client_options={"maxPoolSize": 7, "appname": "demo"})
    options = store.database.client.options
    assert options.pool_options.max_pool_size == 7
    assert options.pool_options.metadata["application"]["name"] == "demo"


def test_default_database_name() -> None:
    assert MongoStore("mongodb://127.0.0.1:1/").database.name == "tornado_sessions"


def test_rejects_sync_clients_and_bad_options() -> None:
    with pytest.raises(TypeError, match="async client"):
        MongoStore(MongoClient("mongodb://127.0.0.1:1/", connect=False))
    with pytest.raises(ValueError):
        MongoStore("mongodb://127.0.0.1:1/", expiry_mode="ttl")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MongoStore("mongodb://127.0.0.1:1/", prune_interval=0)


@pytest.mark.gen_test(timeout=15)
async def test_unreachable_server_raises_store_error_quickly() -> None:
    await assert_unreachable_fails_fast(MongoStore(f"mongodb://127.0.0.1:{free_port()}/", server_selection_timeout=0.3))


# -- against the server ----------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_document_shape_and_raw_id_never_stored(
    mongo_url: str, mongo_db_name: str, sync_db: Any
) -> None:
    raw_id = secrets.token_urlsafe(32)  # what the cookie would carry
    key = hash_session_id(raw_id)
    store = MongoStore(mongo_url, database=mongo_db_name)
    try:
        now = time.time()
        await store.create(
            key,
            Record(
                data={"user": '"alice"', "a.b": "1", "$where": "2"},
                created=now,
                updated=now,
                expires=now + 600,
                user_id="alice",
                meta={"ip": "203.0.113.9"},
            ),
        )
        await store.update(key, set_items={"seen": "true"}, unset_keys=[], expires=now + 900, updated=now)
        loaded = await store.load(key)
        assert loaded is not None and loaded.meta == {"ip": "203.0.113.9"}
    finally:
        await store.close()

    docs = list(sync_db.sessions.find())
    assert len(docs) == 1
    doc = docs[0]
    assert doc["_id"] == key
    assert set(doc) == {"_id", "data", "expires", "created", "updated", "user_id", "meta", "kind"}
    assert doc["kind"] == "session"
    assert doc["data"] == {"user": '"alice"', "a%2Eb": "1", "%24where": "2", "seen": "true"}
    for name in ("expires", "created", "updated"):
        assert isinstance(doc[name], datetime) and doc[name].utcoffset().total_seconds() == 0
    assert doc["expires"].timestamp() == pytest.approx(now + 900, abs=0.002)
    assert doc["user_id"] == "alice"
    # The raw ID appears nowhere: not in any document of any collection of the database.
    for name in sync_db.list_collection_names():
        for stored in sync_db[name].find():
            assert raw_id not in repr(stored)


@pytest.mark.gen_test(timeout=30)
async def test_documents_written_before_kinds_read_their_kind_from_meta(store: MongoStore, sync_db: Any) -> None:
    now = datetime.now(UTC)
    old = {"data": {"v:x": "1"}, "created": now, "updated": now, "expires": now + timedelta(minutes=10)}
    sync_db.sessions.insert_many([
        {"_id": "token", **old, "user_id": "kim", "meta": {"kind": "remember", "ua": "Firefox"}},
        {"_id": "session", **old, "user_id": "kim", "meta": {"ua": "Firefox"}},
    ])  # fmt: skip
    token, session = await store.load("token"), await store.load("session")
    assert token is not None and token.kind == "remember" and token.meta == {"ua": "Firefox"}
    assert session is not None and session.kind == "session" and session.meta == {"ua": "Firefox"}
    assert [k for k, _ in await store.list_user("kim", kind="remember")] == ["token"]
    assert [k for k, _ in await store.list_user("kim", kind="session")] == ["session"]


@pytest.mark.gen_test(timeout=30)
async def test_reads_ignore_expired_documents_before_any_pruning(
    mongo_url: str, mongo_db_name: str, sync_db: Any
) -> None:
    clock = FakeClock()
    store = MongoStore(mongo_url, database=mongo_db_name, expiry_mode="interval", prune_interval=3600, clock=clock)
    try:
        key = new_key()
        await store.create(key, record({"a": "1"}, user_id="alice", ttl=0.4, clock=clock))
        assert await store.load(key) is not None
        clock.advance(0.6)
        assert await store.load(key) is None
        assert await store.list_user("alice") == []
        assert await store.touch(key, expires=clock() + 60, updated=clock()) is False
        assert (
            await store.update(key, set_items={"b": "2"}, unset_keys=[], expires=clock() + 60, updated=clock())
            is False
        )
        # Still in the collection: the filter, not a deletion, hid it.
        stored = sync_db.sessions.find_one({"_id": key})
        assert stored is not None and stored["data"] == {"a": "1"}
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_expiry_follows_the_given_clock(mongo_url: str, mongo_db_name: str) -> None:
    offset = 0.0
    store = MongoStore(mongo_url, database=mongo_db_name, clock=lambda: time.time() + offset)
    try:
        key = new_key()
        await store.create(key, record({"a": "1"}, ttl=60))
        assert await store.load(key) is not None
        offset = 120.0  # two minutes later by the store's clock
        assert await store.load(key) is None
        assert await store.touch(key, expires=time.time() + 600, updated=time.time()) is False
        assert await store.prune() == 1
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_interval_mode_prunes_in_the_background(
    mongo_url: str, mongo_db_name: str, sync_db: Any
) -> None:
    store = MongoStore(mongo_url, database=mongo_db_name, expiry_mode="interval", prune_interval=0.2)
    try:
        live, dead = new_key(), new_key()
        await store.create(live, record({"a": "1"}))
        await store.create(dead, record({"a": "1"}, ttl=-1))
        assert store.expiry_mode_in_force == "interval"
        deadline = time.monotonic() + 10
        while sync_db.sessions.find_one({"_id": dead}) is not None:
            assert time.monotonic() < deadline, "the prune task never removed the expired session"
            await asyncio.sleep(0.1)
        assert await store.load(live) is not None
    finally:
        await store.close()
    assert store._pruner is None  # close() stopped it


@pytest.mark.gen_test(timeout=30)
async def test_auto_mode_uses_ttl_when_the_server_has_it_and_interval_otherwise(
    mongo_url: str, mongo_db_name: str, sync_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    expected = "native" if server_supports_ttl(sync_db) else "interval"
    caplog.set_level(logging.INFO, logger="sessions.stores.mongo")
    store = MongoStore(mongo_url, database=mongo_db_name)
    try:
        assert store.expiry_mode_in_force is None
        await store.setup()
        assert store.expiry_mode_in_force == expected
        assert (store._pruner is not None) == (expected == "interval")
    finally:
        await store.close()
    assert f"expiry mode {expected}" in caplog.text
    indexes = sync_db.sessions.index_information()
    expires_index = next(spec for spec in indexes.values() if spec["key"] == [("expires", 1)])
    if expected == "native":
        assert expires_index.get("expireAfterSeconds") == 0
    else:
        assert "expireAfterSeconds" not in expires_index


@pytest.mark.gen_test(timeout=30)
async def test_native_mode_needs_ttl_support(mongo_url: str, mongo_db_name: str, sync_db: Any) -> None:
    store = MongoStore(mongo_url, database=mongo_db_name, expiry_mode="native")
    try:
        if server_supports_ttl(sync_db):
            await store.setup()
            assert store.expiry_mode_in_force == "native"
        else:
            with pytest.raises(StoreError, match="TTL index"):
                await store.setup()
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_setup_is_idempotent_across_concurrent_processes(
    mongo_url: str, mongo_db_name: str, sync_db: Any
) -> None:
    # Separate clients stand for separate processes starting at once.
    stores = [MongoStore(mongo_url, database=mongo_db_name) for _ in range(4)]
    try:
        await asyncio.gather(*(store.setup() for store in stores))
        await asyncio.gather(*(store.setup() for store in stores))
        assert len({store.expiry_mode_in_force for store in stores}) == 1
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    keys = sorted(tuple(spec["key"]) for spec in sync_db.sessions.index_information().values())
    assert keys == [(("_id", 1),), (("expires", 1),), (("user_id", 1),)]


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_saves_from_two_clients_all_persist(mongo_url: str, mongo_db_name: str) -> None:
    first = MongoStore(mongo_url, database=mongo_db_name)
    motor_client = AsyncIOMotorClient(mongo_url)
    second = MongoStore(motor_client, database=mongo_db_name)
    try:
        key = new_key()
        await first.create(key, record({"base": "0"}))

        async def write(store: MongoStore, i: int) -> bool:
            return await store.update(
                key,
                set_items={f"k.{i}": str(i)},
                unset_keys=["base"] if i == 0 else [],
                expires=time.time() + 600,
                updated=time.time(),
            )

        results = await asyncio.gather(*(write(first if i % 2 else second, i) for i in range(100)))
        assert all(results)
        loaded = await first.load(key)
        assert loaded is not None
        assert loaded.data == {f"k.{i}": str(i) for i in range(100)}
    finally:
        await first.close()
        await second.close()
        motor_client.close()


@pytest.mark.gen_test(timeout=60)
async def test_destroy_user_goes_through_the_user_id_index(
    mongo_url: str, mongo_db_name: str, sync_db: Any
) -> None:
    store = MongoStore(mongo_url, database=mongo_db_name)
    try:
        mine = [new_key() for _ in range(3)]
        for key in mine:
            await store.create(key, record({"a": "1"}, user_id="alice"))
        for i in range(60):
            await store.create(new_key(), record({"a": "1"}, user_id=f"user{i % 20}"))

        indexes = sync_db.sessions.index_information()
        assert any(spec["key"] == [("user_id", 1)] for spec in indexes.values())

        explained = explain_delete(sync_db, "sessions", store._user_query("alice", keep=mine[0]))
        stats = explained.get("executionStats")
        if stats is not None:
            # MongoDB: the delete walks the index, examining only alice's documents.
            assert stats["totalDocsExamined"] == len(mine)
            ixscans = [s for s in plan_stages(explained["queryPlanner"]) if s["stage"] == "IXSCAN"]
            assert any(s.get("keyPattern") == {"user_id": 1} for s in ixscans), explained
        else:
            # FerretDB v1 (SQLite) pushes only `{_id: ...}` filters down to SQL and its
            # explain carries no executionStats: the index exists but is not used there.
            assert explained.get("ok") == 1.0

        assert await store.destroy_user("alice", keep=mine[0]) == 2
        assert [k for k, _ in await store.list_user("alice")] == [mine[0]]
        assert sync_db.sessions.count_documents({}) == 61
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_accepts_databases_and_collections_of_both_drivers(mongo_url: str, mongo_db_name: str) -> None:
    pymongo_client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    motor_client = AsyncIOMotorClient(mongo_url)
    targets = [
        pymongo_client,
        pymongo_client[mongo_db_name],
        pymongo_client[mongo_db_name]["sessions"],
        motor_client,
        motor_client[mongo_db_name],
        motor_client[mongo_db_name]["sessions"],
    ]
    try:
        key = new_key()
        writer = MongoStore(targets[0], database=mongo_db_name)
        await writer.create(key, record({"a": "1"}))
        for target in targets:
            store = MongoStore(target, database=mongo_db_name)
            assert store.collection.full_name == f"{mongo_db_name}.sessions"
            loaded = await store.load(key)
            assert loaded is not None and loaded.data == {"a": "1"}
            await store.ping()
            await store.close()  # a caller's client stays open
        assert await writer.load(key) is not None
        await writer.close()
    finally:
        await pymongo_client.close()
        motor_client.close()


@pytest.mark.gen_test(timeout=30)
async def test_closed_store_refuses_work(mongo_url: str, mongo_db_name: str) -> None:
    store = MongoStore(mongo_url, database=mongo_db_name, expiry_mode="interval")
    await store.setup()
    pruner = store._pruner
    assert pruner is not None and pruner.running
    await store.close()
    assert not pruner.running
    with pytest.raises(StoreError, match="closed"):
        await store.load(new_key())

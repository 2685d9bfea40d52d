"""The Redis store against real servers: a standalone Redis and a three-master Redis Cluster.

The contract suite runs over both; the tests below cover what only this store has:
its key layout and prefix, native expiry that follows touches, the per-user index
kept across slots, and the option and error handling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from sessions.stores import open_store
from sessions.stores.base import Record, StoreError
from sessions.stores.redis import RedisStore
from sessions.testing import FakeClock, StoreContract, new_key, record
from tests.fixtures.support import free_port


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, clock: FakeClock, redis_url: str, redis_prefix: str, io_loop: Any) -> Iterator[RedisStore]:
        store = RedisStore(redis_url, prefix=redis_prefix, clock=clock)
        yield store
        io_loop.run_sync(store.close)


class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    def store(
        self, clock: FakeClock, redis_cluster_url: str, redis_prefix: str, io_loop: Any
    ) -> Iterator[RedisStore]:
        store = RedisStore(redis_cluster_url, prefix=redis_prefix, clock=clock)
        yield store
        io_loop.run_sync(store.close)


# -- helpers ---------------------------------------------------------------------


@pytest.fixture(params=["standalone", "cluster"])
def any_url(request: pytest.FixtureRequest) -> str:
    """Each store-specific test runs on one server and on the cluster."""
    name = "redis_url" if request.param == "standalone" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def store(any_url: str, redis_prefix: str, clock: FakeClock, io_loop: Any) -> Iterator[RedisStore]:
    store = RedisStore(any_url, prefix=redis_prefix, clock=clock)
    yield store
    io_loop.run_sync(store.close)


def now_record(clock: FakeClock, data: dict[str, str] | None = None, *, user_id: str | None = None,
               ttl: float = 600, meta: dict[str, str] | None = None) -> Record:  # fmt: skip
    return Record(dict(data or {}), clock.now, clock.now, clock.now + ttl, user_id, dict(meta or {}))


async def our_keys(store: RedisStore) -> list[str]:
    """Every key under the store's prefix (SCAN in a test is fine; the store never scans)."""
    found: set[str] = set()
    if isinstance(store.client, RedisCluster):
        nodes = [(node.host, node.port) for node in store.client.get_primaries()]
    else:
        kwargs = store.client.connection_pool.connection_kwargs
        nodes = [(kwargs["host"], kwargs["port"])]
    for host, port in nodes:
        client = aioredis.Redis(host=host, port=port, decode_responses=True)
        try:
            async for name in client.scan_iter(match=f"{store.prefix}*"):
                found.add(name)
        finally:
            await client.aclose()
    return sorted(found)


# -- layout, prefix, expiry ------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_hash_layout_and_native_expiry(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    rec = now_record(clock, {"n": "1", "expires": '"x"'}, user_id="alice", meta={"ip": "192.0.2.1"})
    await store.create(key, rec)
    fields = await store.client.hgetall(store.session_key(key))
    assert fields["d:n"] == "1" and fields["d:expires"] == '"x"'
    assert float(fields["expires"]) == rec.expires and fields["user_id"] == "alice"
    assert await store.client.pexpiretime(store.session_key(key)) == pytest.approx(rec.expires * 1000, abs=1)
    assert sorted(await our_keys(store)) == sorted([store.session_key(key), store.user_key("alice")])


@pytest.mark.gen_test(timeout=30)
async def test_pexpireat_moves_with_touch_and_update(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1"}, ttl=60))
    session = store.session_key(key)
    for later in (clock.now + 600, clock.now + 1200):
        assert await store.touch(key, expires=later, updated=clock.now)
        assert await store.client.pexpiretime(session) == pytest.approx(later * 1000, abs=1)
    assert await store.update(key, set_items={"b": "2"}, unset_keys=[], expires=clock.now + 90, updated=clock.now)
    assert await store.client.pexpiretime(session) == pytest.approx((clock.now + 90) * 1000, abs=1)


@pytest.mark.gen_test(timeout=30)
async def test_redis_deletes_expired_sessions_and_user_index_itself(any_url: str, redis_prefix: str) -> None:
    store = RedisStore(any_url, prefix=redis_prefix, index_slack=0)  # real clock: Redis expires in real time
    try:
        await store.setup()  # a cluster's discovery must not eat into the short lifetimes below
        keys = [new_key(), new_key()]
        for key in keys:
            await store.create(key, record({"a": "1"}, user_id="carol", ttl=0.3))
        assert len(await our_keys(store)) == 3
        await asyncio.sleep(0.6)
        assert await our_keys(store) == []  # sessions and the index are gone, nobody pruned
        assert await store.prune() == 0
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_prefix_isolates_stores(any_url: str, redis_prefix: str, clock: FakeClock) -> None:
    first = RedisStore(any_url, prefix=redis_prefix + "a:", clock=clock)
    second = RedisStore(any_url, prefix=redis_prefix + "b:", clock=clock)
    try:
        key = new_key()
        await first.create(key, now_record(clock, {"who": "1"}, user_id="u"))
        assert await second.load(key) is None
        assert await second.list_user("u") == []
        assert await second.destroy_user("u") == 0
        await second.create(key, now_record(clock, {"who": "2"}, user_id="u"))
        assert (await first.load(key)).data == {"who": "1"}  # type: ignore[union-attr]
        assert all(name.startswith(redis_prefix + "a:") for name in await our_keys(first))
    finally:
        await first.close()
        await second.close()


@pytest.mark.gen_test(timeout=30)
async def test_hashes_written_before_kinds_read_their_kind_from_meta(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    await store.create(key, now_record(clock, {"v:x": "1"}, user_id="kim", meta={"ua": "Firefox"}))
    assert await store.client.hget(store.session_key(key), "kind") == "session"
    # What an older version wrote for a remember-me token: no kind field, meta.kind instead.
    await store.client.hdel(store.session_key(key), "kind")
    await store.client.hset(store.session_key(key), "meta", '{"kind": "remember", "ua": "Firefox"}')
    loaded = await store.load(key)
    assert loaded is not None and loaded.kind == "remember" and loaded.meta == {"ua": "Firefox"}
    assert [k for k, _ in await store.list_user("kim", kind="remember")] == [key]
    assert await store.list_user("kim", kind="session") == []


# -- the user index ----------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_user_index_entries_go_once_their_sessions_have_expired(store: RedisStore, clock: FakeClock) -> None:
    store.index_slack = 30
    short, long = new_key(), new_key()
    await store.create(short, now_record(clock, {"a": "1"}, user_id="dave", ttl=10))
    await store.create(long, now_record(clock, {"a": "1"}, user_id="dave", ttl=600))
    index = store.user_key("dave")
    assert await store.client.zcard(index) == 2
    clock.advance(20)  # short expired, but its entry reaches 30 s past its expiry
    assert [k for k, _ in await store.list_user("dave")] == [long]
    assert await store.client.zcard(index) == 2
    clock.advance(30)
    assert [k for k, _ in await store.list_user("dave")] == [long]
    assert await store.client.zrange(index, 0, -1) == [long]
    # The index key expires with its latest entry.
    assert await store.client.pexpiretime(index) == pytest.approx((clock.now - 50 + 630) * 1000, abs=1)


@pytest.mark.gen_test(timeout=30)
async def test_index_is_raised_before_a_session_outlives_it(store: RedisStore, clock: FakeClock) -> None:
    store.index_slack = 5
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1"}, user_id="erin", ttl=60))
    index = store.user_key("erin")
    first = await store.client.zscore(index, key)
    assert first == pytest.approx((clock.now + 65) * 1000, abs=1)
    # Inside the covered span: no index write.
    assert await store.touch(key, expires=clock.now + 62, updated=clock.now)
    assert await store.client.zscore(index, key) == first
    for _ in range(5):
        clock.advance(50)  # past the covered span (expiry + 5 s slack), session still live
        expires = clock.now + 60
        assert await store.touch(key, expires=expires, updated=clock.now)
        assert await store.client.zscore(index, key) >= expires * 1000
        assert await store.client.pexpiretime(index) >= expires * 1000
    assert await store.destroy_user("erin") == 1
    assert await store.load(key) is None


@pytest.mark.gen_test(timeout=60)
async def test_index_covers_every_session_under_concurrent_user_changes(store: RedisStore, clock: FakeClock) -> None:
    store.index_slack = 1
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1"}, user_id="u0"))

    async def save(i: int) -> bool:
        return await store.update(
            key, set_items={f"k{i}": "1"}, unset_keys=[], expires=clock.now + 600 + i,
            updated=clock.now, user_id=f"u{i % 3}",
        )  # fmt: skip

    assert all(await asyncio.gather(*(save(i) for i in range(30))))
    loaded = await store.load(key)
    assert loaded is not None and loaded.user_id is not None
    score = await store.client.zscore(store.user_key(loaded.user_id), key)
    assert score is not None and score >= loaded.expires * 1000
    assert await store.destroy_user(loaded.user_id) == 1


@pytest.mark.gen_test(timeout=30)
async def test_user_ids_with_braces_and_changed_users(store: RedisStore, clock: FakeClock) -> None:
    odd = "a{b}c"
    key, moved = new_key(), new_key()
    await store.create(key, now_record(clock, {"a": "1"}, user_id=odd))
    await store.create(moved, now_record(clock, {"a": "1"}, user_id=odd))
    assert await store.update(moved, set_items={}, unset_keys=[], expires=clock.now + 600, updated=clock.now,
                              user_id="other")  # fmt: skip
    assert [k for k, _ in await store.list_user(odd)] == [key]  # the stale entry is ignored
    assert await store.destroy_user(odd) == 1  # and the moved session spared
    assert await store.load(moved) is not None
    assert [k for k, _ in await store.list_user("other")] == [moved]


@pytest.mark.gen_test(timeout=30)
async def test_destroy_drops_the_index_entry(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1"}, user_id="fay"))
    await store.destroy(key)
    assert await our_keys(store) == []


# -- counters ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_counter_is_one_key_expiring_at_its_window_end(store: RedisStore, clock: FakeClock) -> None:
    clock.now = 1_800_000_000.0 + 5
    assert await store.hit("login:{ip}:203.0.113.1", 60) == (1, 1_800_000_060.0)
    key = store.counter_key("login:{ip}:203.0.113.1", "60@1800000000")
    assert await our_keys(store) == [key]
    assert key == f"{store.prefix}hits:60@1800000000:{{login:{{ip}}:203.0.113.1}}"
    assert await store.client.get(key) == "1"
    assert await store.client.pexpiretime(key) == 1_800_000_060_000
    await store.reset_hits("login:{ip}:203.0.113.1", 60)
    assert await our_keys(store) == []


@pytest.mark.gen_test(timeout=30)
async def test_counter_keys_never_meet_session_or_index_keys(store: RedisStore, clock: FakeClock) -> None:
    # Names made to look like the other key families, braces and all.
    names = ["}", "{", "{}", "user:{x}", "x}:{y", "60@0:{a}", "", "ünï"]
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1"}, user_id="x"))
    for name in names:
        assert (await store.hit(name, 60))[0] == 1
    slot = f"60@{int(clock.now // 60 * 60)}"
    counters = {store.counter_key(name, slot) for name in names}
    assert len(counters) == len(names)
    assert sorted(await our_keys(store)) == sorted([store.session_key(key), store.user_key("x"), *counters])
    assert await store.destroy_user("x") == 1
    for name in names:
        assert (await store.hit(name, 60))[0] == 2


@pytest.mark.gen_test(timeout=30)
async def test_redis_deletes_ended_counter_windows_itself(any_url: str, redis_prefix: str) -> None:
    store = RedisStore(any_url, prefix=redis_prefix)  # real clock: Redis expires in real time
    try:
        count, end = await store.hit("burst", 0.25)
        assert count == 1 and end - time.time() <= 0.25
        await asyncio.sleep(max(0.0, end - time.time()) + 0.2)
        assert await our_keys(store) == []
        assert await store.prune() == 0
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_fresh_cluster_client_survives_a_burst_of_first_commands(redis_cluster_url: str,
                                                                         redis_prefix: str) -> None:  # fmt: skip
    # redis-py discovers the cluster on the first command; concurrent first commands
    # used to reset each other's connections. The store discovers it once first.
    for _ in range(3):
        store = RedisStore(redis_cluster_url, prefix=redis_prefix)
        try:
            results = await asyncio.gather(*(store.hit(f"n{i % 7}", 600) for i in range(60)))
            assert sum(count for count, _ in results) == sum(range(1, 10)) * 4 + sum(range(1, 9)) * 3
        finally:
            await store.close()
        redis_prefix += "x"


# -- meta, take, concurrency --------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_meta_persists_and_is_replaced_whole(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    await store.create(key, now_record(clock, {"a": "1"}, meta={"ip": "192.0.2.1", "ua": "Zoë/1"}))
    assert (await store.load(key)).meta == {"ip": "192.0.2.1", "ua": "Zoë/1"}  # type: ignore[union-attr]
    kwargs: dict[str, Any] = {"set_items": {}, "unset_keys": [], "expires": clock.now + 60, "updated": clock.now}
    assert await store.update(key, **kwargs)
    assert (await store.load(key)).meta == {"ip": "192.0.2.1", "ua": "Zoë/1"}  # type: ignore[union-attr]
    assert await store.update(key, **kwargs, meta={"ip": "198.51.100.7"})
    assert (await store.load(key)).meta == {"ip": "198.51.100.7"}  # type: ignore[union-attr]
    assert await store.update(key, **kwargs, meta={})
    assert (await store.load(key)).meta == {}  # type: ignore[union-attr]


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_takes_of_one_item_give_it_once(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    await store.create(key, now_record(clock, {"flash": '["hi"]', "keep": "1"}))
    results = await asyncio.gather(*(store.take(key, ["flash", "missing"]) for _ in range(10)))
    assert sorted(map(str, results)) == sorted([str({"flash": '["hi"]'})] + [str({})] * 9)
    assert (await store.load(key)).data == {"keep": "1"}  # type: ignore[union-attr]
    clock.advance(601)
    assert await store.take(key, ["keep"]) is None


@pytest.mark.gen_test(timeout=60)
async def test_fifty_concurrent_saves_of_different_items_all_persist(store: RedisStore, clock: FakeClock) -> None:
    key = new_key()
    await store.create(key, now_record(clock, {"base": "0"}, user_id="gus"))
    # Separate store objects stand for separate app processes.
    others = [RedisStore(store.client, prefix=store.prefix, clock=clock) for _ in range(4)]

    async def save(i: int) -> bool:
        writer = others[i % 4]
        return await writer.update(
            key, set_items={f"k.{i}": str(i)}, unset_keys=["base"] if i == 7 else [],
            expires=clock.now + 600 + i, updated=clock.now,
        )  # fmt: skip

    assert all(await asyncio.gather(*(save(i) for i in range(50))))
    loaded = await store.load(key)
    assert loaded is not None and loaded.data == {f"k.{i}": str(i) for i in range(50)}


# -- clients, options, errors ------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_bytes_client_passed_in_works_and_stays_open(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)  # decode_responses off: replies are bytes
    try:
        store = RedisStore(client, prefix=redis_prefix)
        key = new_key()
        await store.create(key, record({"ünï": '"v"'}, user_id="hal", ttl=60))
        assert (await store.load(key)).data == {"ünï": '"v"'}  # type: ignore[union-attr]
        assert await store.take(key, ["ünï"]) == {"ünï": '"v"'}
        assert [k for k, _ in await store.list_user("hal")] == [key]
        await store.close()
        assert await client.ping()
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_open_store_builds_redis_stores_and_checks_options(
    redis_url: str, redis_cluster_url: str, redis_prefix: str
) -> None:
    for url, cluster in ((redis_url, False), (redis_cluster_url, True)):
        store = open_store(url, prefix=redis_prefix, timeout=1.5)
        assert isinstance(store, RedisStore) and store.cluster is cluster
        assert store.expires_natively and "PEXPIREAT" in store.describe()
        await store.setup()
        await store.ping()
        await store.close()
    with pytest.raises(ValueError, match="collection"):
        open_store(redis_url, collection="x")
    with pytest.raises(ValueError, match="prefix"):
        RedisStore(redis_url, prefix="a{b}:")
    with pytest.raises(TypeError):
        RedisStore(object())  # type: ignore[arg-type]


@pytest.mark.gen_test(timeout=15)
async def test_unreachable_server_is_a_store_error_quickly() -> None:
    for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis+cluster://127.0.0.1:{free_port()}"):
        store = RedisStore(url, timeout=0.5)
        started = time.monotonic()
        for call in (store.ping(), store.load(new_key()), store.create(new_key(), record({}))):
            with pytest.raises(StoreError):
                await call
        assert time.monotonic() - started < 5
        await store.close()


@pytest.mark.gen_test
async def test_a_driver_bug_under_a_failing_server_is_a_store_error_not_a_500():
    """redis-py's cluster client can raise AttributeError on a connection another task closed;
    inside the driver that is a failed store call (StoreError, 503), anywhere else our bug."""
    from sessions import StoreError
    from sessions.stores.plumbing import DriverErrors

    errors = DriverErrors("redis", (ConnectionError,), driver_bugs=(AttributeError,), driver_package="redis")
    driver: dict = {}
    exec(compile("def send(writer):\n    writer.writelines([b'x'])\n", "/site-packages/redis/asyncio/connection.py",
                 "exec"), driver)

    @errors
    async def load():
        driver["send"](None)

    @errors
    async def ours():
        None.writelines([b"x"])  # type: ignore[attr-defined]

    with pytest.raises(StoreError, match="redis load failed: AttributeError"):
        await load()
    with pytest.raises(AttributeError):
        await ours()

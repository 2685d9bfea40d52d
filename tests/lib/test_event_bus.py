"""The session event buses of every store, against real servers.

Two buses of one store stand for two processes: each gets an origin of its own
(``bus.origin``), as two processes would have two process ids. Events are awaited
(futures), never slept for; "not delivered" is shown by a later event arriving
first-in-order after it. Per-store delivery latency is printed (``-s`` shows it),
not asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import ReturnDocument

from sessions.bus import MAX_EVENT_BYTES, BusEvent, LocalBus, MalformedEvent
from sessions.buses.listening import ListeningBus
from sessions.buses.mongo import MongoBus
from sessions.buses.postgres import PostgresBus, channel_for
from sessions.buses.redis import RedisBus
from sessions.buses.sqlite import SQLiteBus
from sessions.stores.base import Store
from sessions.stores.memory import MemoryStore
from sessions.stores.mongo import MongoStore
from sessions.stores.postgres import PostgresStore
from sessions.stores.redis import RedisStore
from sessions.stores.sqlite import SQLiteStore
from sessions.testing import FakeClock, new_key, record

KINDS = ["sqlite", "redis", "redis-cluster", "postgres", "mongo"]
WAIT = 10.0  # seconds an awaited event may take before the test fails (polling buses: 0.1 s)

EVERY_KIND = [
    BusEvent("session_ended", key="k1"),
    BusEvent("session_renamed", key="k1", new_key="k2"),
    BusEvent("user_sessions_ended", user_id="u1", keep="k2"),
    BusEvent("notice", user_id="u1", payload={"text": "hello", "n": 1}),
    BusEvent("broadcast", channel="chat", payload={"from": "u1", "text": "hi ünï"}),
]


@dataclass
class Backend:
    kind: str
    store: Store
    #: Put raw text or bytes straight into the backend, as a foreign publisher would.
    inject: Callable[[str | bytes], Awaitable[None]]
    #: Whether the backend can carry bytes that are not UTF-8.
    carries_bytes: bool = True


@dataclass
class Receiver:
    """A bus's deliver/on_resync pair that tests can await."""

    events: list[BusEvent] = field(default_factory=list)
    resyncs: int = 0
    _waiters: list[tuple[Callable[[BusEvent], bool], asyncio.Future[BusEvent]]] = field(default_factory=list)
    _resynced: asyncio.Future[None] | None = None

    def deliver(self, event: BusEvent) -> None:
        self.events.append(event)
        for match, future in list(self._waiters):
            if not future.done() and match(event):
                future.set_result(event)
                self._waiters.remove((match, future))

    def on_resync(self) -> None:
        self.resyncs += 1
        if self._resynced is not None and not self._resynced.done():
            self._resynced.set_result(None)

    async def next(self, match: Callable[[BusEvent], bool], timeout: float = WAIT) -> BusEvent:
        for event in self.events:
            if match(event):
                return event
        future: asyncio.Future[BusEvent] = asyncio.get_running_loop().create_future()
        self._waiters.append((match, future))
        return await asyncio.wait_for(future, timeout)

    def expect_resync(self) -> asyncio.Future[None]:
        self._resynced = asyncio.get_running_loop().create_future()
        return self._resynced


def marked(tag: str) -> Callable[[BusEvent], bool]:
    return lambda event: event.kind == "broadcast" and event.channel == tag


def bus_of(store: Store, origin: str) -> ListeningBus:
    bus = store.event_bus()
    assert isinstance(bus, ListeningBus), bus
    bus.origin = origin  # a second "process" in this one
    return bus


async def started(store: Store, origin: str) -> tuple[ListeningBus, Receiver]:
    bus, receiver = bus_of(store, origin), Receiver()
    await bus.start(receiver.deliver, receiver.on_resync)
    assert bus.connected
    return bus, receiver


# -- backends ----------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any, io_loop: Any) -> Iterator[Backend]:
    kind = request.param
    store: Store
    inject: Callable[[str | bytes], Awaitable[None]]
    carries_bytes = True
    if kind == "sqlite":
        sqlite_store = store = SQLiteStore(tmp_path / "sessions.db")

        async def inject(raw: str | bytes) -> None:
            await sqlite_store.setup()
            conn = sqlite3.connect(sqlite_store.path, isolation_level=None)
            try:
                conn.execute("INSERT INTO session_events (body, created) VALUES (?, ?)", (raw, time.time()))
            finally:
                conn.close()

    elif kind in ("redis", "redis-cluster"):
        url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
        redis_store = store = RedisStore(url, prefix=request.getfixturevalue("redis_prefix"))

        async def inject(raw: str | bytes) -> None:
            await redis_store.ensure_connected()
            channel = f"{redis_store.prefix}events"
            if redis_store.cluster:
                await redis_store.client.spublish(channel, raw)
            else:
                await redis_store.client.publish(channel, raw)

    elif kind == "postgres":
        pg_store = store = PostgresStore(
            request.getfixturevalue("postgres_url"),
            table=request.getfixturevalue("postgres_table"),
            schema=request.getfixturevalue("postgres_schema"),
        )
        carries_bytes = False  # NOTIFY payloads are text in the server's encoding

        async def inject(raw: str | bytes) -> None:
            text = raw.decode() if isinstance(raw, bytes) else raw
            channel = channel_for(pg_store.table, pg_store.schema)
            await pg_store.run_query("SELECT pg_notify(%(c)s, %(p)s)", {"c": channel, "p": text}, idempotent=False)

    else:
        mongo_store = store = MongoStore(request.getfixturevalue("mongo_url"),
                                         database=request.getfixturevalue("mongo_db_name"))  # fmt: skip

        async def inject(raw: str | bytes) -> None:
            events = mongo_store.database[f"{mongo_store.collection.name}_events"]
            counter = await events.find_one_and_update(
                {"_id": "seq"}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
            )
            await events.insert_one({"seq": counter["n"], "body": raw, "created": datetime.now(UTC)})

    yield Backend(kind, store, inject, carries_bytes)
    io_loop.run_sync(store.close)


# -- the mode in force ---------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_each_store_has_its_bus_and_says_which_mode(backend: Backend, caplog: Any) -> None:
    expected: dict[str, tuple[type, str]] = {
        "sqlite": (SQLiteBus, "sqlite events table poll"),
        "redis": (RedisBus, "PUBLISH/SUBSCRIBE"),
        "redis-cluster": (RedisBus, "SPUBLISH/SSUBSCRIBE"),
        "postgres": (PostgresBus, "LISTEN/NOTIFY"),
        "mongo": (MongoBus, "polling"),  # FerretDB v1 has no change streams
    }
    cls, words = expected[backend.kind]
    caplog.set_level(logging.INFO, logger="sessions")
    bus, _ = await started(backend.store, "A")
    try:
        assert isinstance(bus, cls)
        assert words in bus.describe()
        assert any(words in r.getMessage() and "session events" in r.getMessage() for r in caplog.records)
        if backend.kind == "mongo":
            assert "no change streams" in bus.describe() and not bus.pushes
        assert bus.pushes == (backend.kind not in ("sqlite", "mongo"))
        assert bus_of(backend.store, "A") is not bus  # a new bus per call
    finally:
        await bus.close()


def test_memory_and_in_memory_sqlite_stay_in_process() -> None:
    assert isinstance(MemoryStore().event_bus(), LocalBus)
    assert isinstance(SQLiteStore(":memory:").event_bus(), LocalBus)


@pytest.mark.gen_test
async def test_local_bus_refuses_oversized_events_too() -> None:
    with pytest.raises(MalformedEvent):
        await MemoryStore().event_bus().publish(BusEvent("notice", user_id="u", payload={"x": "y" * MAX_EVENT_BYTES}))


# -- delivery ---------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_every_kind_reaches_the_other_process_and_not_its_own(backend: Backend) -> None:
    a, heard_by_a = await started(backend.store, "A")
    b, heard_by_b = await started(backend.store, "B")
    try:
        for event in EVERY_KIND:
            await a.publish(event)
        await heard_by_b.next(lambda e: e.kind == EVERY_KIND[-1].kind)
        assert heard_by_b.events == [
            BusEvent(e.kind, e.key, e.new_key, e.user_id, e.keep, e.channel, e.payload, origin="A") for e in EVERY_KIND
        ]
        # B answers; A hears that, and by then it would have heard its own events (sent before).
        await b.publish(BusEvent("broadcast", channel="answer", payload={}))
        await heard_by_a.next(marked("answer"))
        assert [e.channel for e in heard_by_a.events] == ["answer"]
        assert [e.channel for e in heard_by_b.events if e.kind == "broadcast"] == ["chat"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.gen_test(timeout=90)
async def test_malformed_and_oversized_events_are_dropped_and_the_listener_goes_on(
    backend: Backend, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="sessions")
    a, _ = await started(backend.store, "A")
    b, heard_by_b = await started(backend.store, "B")
    bad: list[str | bytes] = [
        "not json",
        "[1, 2]",
        '{"kind": "logout_everyone"}',
        '{"kind": "session_ended"}',  # without its key
        '{"kind": "notice", "user_id": 5, "payload": {}}',
        '{"kind": "broadcast", "channel": "x", "payload": "not an object"}',
        "[" * 5000,  # deep nesting, under the size limit
        json.dumps({"kind": "broadcast", "channel": "big", "payload": {"pad": "x" * (MAX_EVENT_BYTES + 200)}}),
    ]
    if backend.carries_bytes:
        bad.append(b"\xff\xfe not utf-8")
    try:
        for raw in bad:
            await backend.inject(raw)
        await a.publish(BusEvent("broadcast", channel="good", payload={"n": 1}))
        event = await heard_by_b.next(marked("good"))
        assert event.payload == {"n": 1} and event.origin == "A"
        assert heard_by_b.events == [event]  # nothing of the bad ones came through
        dropped = [r for r in caplog.records if "session event dropped" in r.getMessage()]
        assert len(dropped) >= len(bad), [r.getMessage() for r in dropped]
        assert b.connected and b.reconnects == 0
    finally:
        await a.close()
        await b.close()


@pytest.mark.gen_test(timeout=60)
async def test_publishing_an_oversized_event_is_the_callers_error(backend: Backend) -> None:
    bus = bus_of(backend.store, "A")
    try:
        with pytest.raises(MalformedEvent):
            await bus.publish(BusEvent("notice", user_id="u", payload={"x": "y" * MAX_EVENT_BYTES}))
    finally:
        await bus.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_receiver_that_raises_does_not_stop_the_listener(backend: Backend) -> None:
    a, _ = await started(backend.store, "A")
    seen: list[str] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def deliver(event: BusEvent) -> None:
        seen.append(event.channel or "")
        if event.channel == "first":
            raise RuntimeError("a receiver's bug")
        done.set_result(None)

    b = bus_of(backend.store, "B")
    await b.start(deliver, lambda: None)
    try:
        await a.publish(BusEvent("broadcast", channel="first", payload={}))
        await a.publish(BusEvent("broadcast", channel="second", payload={}))
        await asyncio.wait_for(done, WAIT)
        assert seen == ["first", "second"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.gen_test(timeout=60)
async def test_events_from_before_the_start_are_not_replayed(backend: Backend) -> None:
    a, _ = await started(backend.store, "A")
    try:
        await a.publish(BusEvent("broadcast", channel="old", payload={}))
        b, heard_by_b = await started(backend.store, "B")
        try:
            await a.publish(BusEvent("broadcast", channel="new", payload={}))
            await heard_by_b.next(marked("new"))
            assert [e.channel for e in heard_by_b.events] == ["new"]
        finally:
            await b.close()
    finally:
        await a.close()


@pytest.mark.gen_test(timeout=60)
async def test_publish_on_a_closed_store_only_logs(backend: Backend, caplog: Any) -> None:
    bus = bus_of(backend.store, "A")
    await backend.store.close()
    await bus.publish(BusEvent("session_ended", key="k"))  # no exception: the re-check is the safety net
    if backend.kind != "sqlite":  # the SQLite bus writes through a connection of its own
        assert any("not published" in r.getMessage() for r in caplog.records)
    await bus.close()


@pytest.mark.gen_test(timeout=120)
async def test_delivery_latency(backend: Backend) -> None:
    """200 events, one every 10 ms, each timed from publish to delivery (printed, not asserted)."""
    a, _ = await started(backend.store, "A")
    b = bus_of(backend.store, "B")
    count = 200
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    all_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def deliver(event: BusEvent) -> None:
        assert event.payload is not None
        received[event.payload["i"]] = time.perf_counter()
        if len(received) == count and not all_in.done():
            all_in.set_result(None)

    await b.start(deliver, lambda: None)
    try:
        for i in range(count):
            sent[i] = time.perf_counter()
            await a.publish(BusEvent("broadcast", channel="latency", payload={"i": i}))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(all_in, WAIT)
    finally:
        await a.close()
        await b.close()
    p50, p99 = _percentiles([(received[i] - sent[i]) * 1000 for i in range(count)])
    print(f"\n[event bus latency] {backend.kind:14} {b.name:32} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({count} events)")


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


# -- reconnecting --------------------------------------------------------------------------


async def _flows_again(a: ListeningBus, heard_by_b: Receiver, tag: str) -> None:
    """Events flow again: publish until one arrives (the publisher's own pool may need a
    retry or two after an outage), awaiting delivery each time rather than sleeping."""
    for attempt in range(20):
        await a.publish(BusEvent("broadcast", channel=tag, payload={"attempt": attempt}))
        try:
            await heard_by_b.next(marked(tag), timeout=1.0)
            return
        except TimeoutError:
            continue
    raise AssertionError(f"no event {tag!r} after the reconnect")


@pytest.mark.gen_test(timeout=120)
async def test_redis_restart_reconnects_and_resyncs(redis_server_factory: Callable[[], Any], caplog: Any) -> None:
    server = redis_server_factory()
    store = RedisStore(server.url, prefix="bus:")
    a, _ = await started(store, "A")
    b, heard_by_b = await started(store, "B")
    b.retry_max = 0.5  # keep the test short
    try:
        resynced = heard_by_b.expect_resync()
        server.stop(kill=True)
        await a.publish(BusEvent("session_ended", key="lost"))  # an outage: logged, not raised
        assert any("not published" in r.getMessage() for r in caplog.records)
        server.start()
        await asyncio.wait_for(resynced, 30)
        assert b.connected and b.reconnects >= 1 and heard_by_b.resyncs >= 1
        await _flows_again(a, heard_by_b, "after-restart")
    finally:
        await a.close()
        await b.close()
        await store.close()


async def _kill_redis_subscriber(store: RedisStore, origin: str) -> None:
    """CLIENT KILL the bus connection named after ``origin`` on whichever node holds it."""
    await store.ensure_connected()
    name = f"tornado-sessions-bus:{origin}"
    if store.cluster:
        nodes = store.client.get_primaries()  # type: ignore[union-attr]
        replies = await store.client.client_list(target_nodes=nodes)  # type: ignore[call-overload]
        clients = replies if isinstance(replies, list) else [c for r in replies.values() for c in r]
    else:
        clients = await store.client.client_list()
    killed = 0
    for client in clients:
        if client.get("name") == name:
            if store.cluster:
                for node in store.client.get_primaries():  # type: ignore[union-attr]
                    killed += int(await store.client.client_kill_filter(_id=client["id"], target_nodes=node))  # type: ignore[call-arg]
            else:
                killed += int(await store.client.client_kill_filter(_id=client["id"]))
    assert killed >= 1, f"no connection named {name}"


@pytest.mark.gen_test(timeout=120)
async def test_redis_cluster_subscriber_killed_reconnects_and_resyncs(redis_cluster_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_cluster_url, prefix=redis_prefix)
    a, _ = await started(store, "A")
    b, heard_by_b = await started(store, "B")
    try:
        resynced = heard_by_b.expect_resync()
        await _kill_redis_subscriber(store, "B")
        await asyncio.wait_for(resynced, 30)
        assert b.connected and b.reconnects == 1
        await _flows_again(a, heard_by_b, "after-kill")
    finally:
        await a.close()
        await b.close()
        await store.close()


@pytest.mark.gen_test(timeout=120)
async def test_postgres_listener_terminated_reconnects_and_resyncs(
    postgres_url: str, postgres_schema: str, postgres_table: str
) -> None:
    store = PostgresStore(postgres_url, table=postgres_table, schema=postgres_schema)
    a, _ = await started(store, "A")
    b, heard_by_b = await started(store, "B")
    try:
        assert isinstance(b, PostgresBus) and b.backend_pid is not None
        resynced = heard_by_b.expect_resync()
        cursor = await store.run_query("SELECT pg_terminate_backend(%(pid)s)", {"pid": b.backend_pid}, idempotent=False)
        assert (await cursor.fetchone()) == (True,)
        await asyncio.wait_for(resynced, 30)
        assert b.connected and b.reconnects == 1
        await _flows_again(a, heard_by_b, "after-terminate")
    finally:
        await a.close()
        await b.close()
        await store.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_bus_started_while_the_server_is_down_connects_later_and_resyncs(
    redis_server_factory: Callable[[], Any],
) -> None:
    server = redis_server_factory()
    store = RedisStore(server.url, prefix="bus:")
    server.stop(kill=True)
    b, heard_by_b = bus_of(store, "B"), Receiver()
    b.retry_max = 0.5
    resynced = heard_by_b.expect_resync()
    try:
        await b.start(heard_by_b.deliver, heard_by_b.on_resync)  # does not raise
        assert not b.connected
        server.start()
        await asyncio.wait_for(resynced, 30)
        a, _ = await started(store, "A")
        try:
            await _flows_again(a, heard_by_b, "late")
        finally:
            await a.close()
    finally:
        await b.close()
        await store.close()


# -- polling details ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_mongo_poll_delivers_past_a_number_never_inserted(mongo_url: str, mongo_db_name: str) -> None:
    """A publisher that died between taking its number and inserting leaves a gap: later events
    still arrive at once, and the gap is given up after its grace."""
    store = MongoStore(mongo_url, database=mongo_db_name)
    a, _ = await started(store, "A")
    b, heard_by_b = await started(store, "B")
    assert isinstance(b, MongoBus)
    b.gap_grace = 0.3
    try:
        events = store.database[f"{store.collection.name}_events"]
        await events.update_one({"_id": "seq"}, {"$inc": {"n": 1}}, upsert=True)  # taken, never inserted
        await a.publish(BusEvent("broadcast", channel="after-gap", payload={}))
        await heard_by_b.next(marked("after-gap"))
        await a.publish(BusEvent("broadcast", channel="later", payload={}))
        await heard_by_b.next(marked("later"))
        assert [e.channel for e in heard_by_b.events] == ["after-gap", "later"]
        deadline = time.monotonic() + WAIT
        while b._seen and time.monotonic() < deadline:  # the floor moves past the gap after its grace
            await asyncio.sleep(0.1)
        assert not b._seen
    finally:
        await a.close()
        await b.close()
        await store.close()


@pytest.mark.gen_test(timeout=60)
async def test_sqlite_ids_keep_increasing_after_pruning_empties_the_table(tmp_path: Any) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    a, _ = await started(store, "A")
    b, heard_by_b = await started(store, "B")
    try:
        await a.publish(BusEvent("broadcast", channel="one", payload={}))
        await heard_by_b.next(marked("one"))
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            conn.execute("DELETE FROM session_events")  # what pruning does once every event is old
        finally:
            conn.close()
        await a.publish(BusEvent("broadcast", channel="two", payload={}))
        await heard_by_b.next(marked("two"))
    finally:
        await a.close()
        await b.close()
        await store.close()


# -- Redis Cluster: sharded or forwarded pub/sub -----------------------------------------------


@pytest.mark.gen_test(timeout=180)
async def test_redis_cluster_modes_latency(redis_cluster_url: str, redis_prefix: str) -> None:
    """500 events each way on the three-master cluster, one at a time (printed, not asserted).

    "broadcast" PUBLISHes through redis-py, which sends it to a random node: two times in
    three the cluster bus forwards it to the subscriber's node.
    """
    store = RedisStore(redis_cluster_url, prefix=redis_prefix)
    try:
        for mode in ("sharded", "broadcast", "sharded", "broadcast"):
            samples = []
            a = RedisBus(store.client, f"{redis_prefix}events", cluster_mode=mode,  # type: ignore[arg-type]
                         ready=store.ensure_connected, origin="A")  # fmt: skip
            b = RedisBus(store.client, f"{redis_prefix}events", cluster_mode=mode,  # type: ignore[arg-type]
                         ready=store.ensure_connected, origin="B")  # fmt: skip
            receiver = Receiver()
            await b.start(receiver.deliver, receiver.on_resync)
            try:
                for i in range(500):
                    start = time.perf_counter()
                    await a.publish(BusEvent("broadcast", channel=f"m{i}", payload={}))
                    await receiver.next(marked(f"m{i}"))
                    samples.append((time.perf_counter() - start) * 1000)
            finally:
                await a.close()
                await b.close()
            p50, p99 = _percentiles(samples)
            print(f"\n[redis cluster] {mode:9} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  (500 events)")
    finally:
        await store.close()


# -- alive ------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", *KINDS])
def any_store(request: pytest.FixtureRequest, tmp_path: Any, io_loop: Any, clock: FakeClock) -> Iterator[Store]:
    kind = request.param
    store: Store
    if kind == "memory":
        store = MemoryStore(clock=clock)
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "alive.db", clock=clock)
    elif kind in ("redis", "redis-cluster"):
        url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
        store = RedisStore(url, prefix=request.getfixturevalue("redis_prefix"), clock=clock)
    elif kind == "postgres":
        store = PostgresStore(request.getfixturevalue("postgres_url"), table=request.getfixturevalue("postgres_table"),
                              schema=request.getfixturevalue("postgres_schema"), clock=clock)  # fmt: skip
    else:
        store = MongoStore(request.getfixturevalue("mongo_url"), database=request.getfixturevalue("mongo_db_name"),
                           clock=clock)  # fmt: skip
    yield store
    io_loop.run_sync(store.close)


@pytest.mark.gen_test(timeout=60)
async def test_alive_in_one_round_trip_names_only_unexpired_records(any_store: Store, clock: FakeClock) -> None:
    live = [new_key() for _ in range(3)]
    for key in live:
        await any_store.create(key, record({"a": "1"}, ttl=600, clock=clock))
    short = new_key()
    await any_store.create(short, record({"a": "1"}, ttl=60, clock=clock))
    remembered = new_key()
    await any_store.create(remembered, record({}, ttl=600, clock=clock, kind="remember"))
    assert await any_store.alive([]) == set()
    unknown = [new_key() for _ in range(1200)]  # past one SQLite statement's chunk
    asked = [*unknown[:600], *live, short, remembered, *unknown[600:], live[0]]
    assert await any_store.alive(asked) == {*live, short, remembered}
    clock.advance(120)  # the short one expires by the store's clock, before any backend deletes it
    assert await any_store.alive(asked) == {*live, remembered}
    await any_store.destroy(live[1])
    assert await any_store.alive(iter(asked)) == {live[0], live[2], remembered}


# -- MongoDB change streams (no replica set here: a stand-in collection) ------------------------


class _FakeStream:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def try_next(self) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), 0.05)
        except TimeoutError:
            return None

    async def close(self) -> None:
        return None


class _FakeDatabase:
    def __init__(self, hello: dict[str, Any]) -> None:
        self.hello = hello

    async def command(self, name: str) -> dict[str, Any]:
        assert name == "hello"
        return self.hello


class _FakeCursor:
    def sort(self, *args: Any) -> _FakeCursor:
        return self

    async def to_list(self, length: int) -> list[dict[str, Any]]:
        return []


class _FakeEvents:
    """What MongoBus uses of a collection, for a replica set (``watch``) or a refusing server."""

    full_name = "db.sessions_events"

    def __init__(self, *, set_name: bool, refuse_watch: bool = False) -> None:
        self.database = _FakeDatabase({"setName": "rs0"} if set_name else {})
        self.refuse_watch = refuse_watch
        self.streams: list[_FakeStream] = []
        self.inserted: list[dict[str, Any]] = []

    async def watch(self, pipeline: list[Any], **options: Any) -> _FakeStream:
        if self.refuse_watch:
            from pymongo.errors import OperationFailure

            raise OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)
        stream = _FakeStream()
        self.streams.append(stream)
        return stream

    async def insert_one(self, doc: dict[str, Any]) -> None:
        self.inserted.append(doc)
        for stream in self.streams:
            stream.queue.put_nowait({"operationType": "insert", "fullDocument": doc})

    async def create_index(self, *args: Any, **options: Any) -> None:
        return None

    async def find_one(self, query: dict[str, Any]) -> None:
        return None

    def find(self, *args: Any) -> _FakeCursor:
        return _FakeCursor()

    async def delete_many(self, query: dict[str, Any]) -> None:
        return None


@pytest.mark.gen_test(timeout=30)
async def test_mongo_change_stream_on_a_replica_set() -> None:
    events = _FakeEvents(set_name=True)
    a, b, heard_by_b = MongoBus(events, origin="A"), MongoBus(events, origin="B"), Receiver()
    await b.start(heard_by_b.deliver, heard_by_b.on_resync)
    try:
        assert b.mode_in_force == "change_stream" and b.pushes and "change stream" in b.describe()
        await a.publish(BusEvent("broadcast", channel="pushed", payload={}))
        await heard_by_b.next(marked("pushed"))
        assert "seq" not in events.inserted[0]  # no counter needed: the server orders the stream
    finally:
        await b.close()


@pytest.mark.gen_test(timeout=30)
async def test_mongo_falls_back_to_polling_when_watch_is_refused() -> None:
    bus = MongoBus(_FakeEvents(set_name=True, refuse_watch=True), origin="B")
    await bus.start(lambda event: None, lambda: None)
    try:
        assert bus.mode_in_force == "poll" and not bus.pushes
        assert "watch() refused" in bus.describe() and "40573" not in bus.name
    finally:
        await bus.close()


def test_each_forked_worker_has_its_own_process_id():
    """server.py --processes N imports sessions.bus before the fork: siblings must differ."""
    import os

    from sessions.bus import BusEvent, process_id

    parent = process_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its id and the default origin of a new event
        os.write(write, f"{process_id()} {BusEvent('session_ended', key='k').origin}".encode())
        os._exit(0)
    os.close(write)
    child_id, child_origin = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    os.close(read)
    assert child_id != parent and child_origin == child_id
    assert process_id() == parent  # stable within a process

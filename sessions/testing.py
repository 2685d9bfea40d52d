"""The store contract suite, public: run it over your own :class:`~sessions.stores.Store`.

Every store of this package passes the same suite; a store of your own should too.
Subclass :class:`StoreContract` in a test module and give it one fixture, ``store``:
a fresh, empty store built with ``clock=clock``, where ``clock`` is the suite's own
fixture (a :class:`FakeClock` that starts at the real time and moves only when a test
moves it)::

    import pytest

    from sessions.testing import StoreContract

    from mypackage.store import MyStore


    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, clock, io_loop):
            store = MyStore(clock=clock)
            io_loop.run_sync(store.setup)
            yield store
            io_loop.run_sync(store.close)

The fixture may return the store or yield it (to close it afterwards); it runs outside
the event loop, so it uses pytest-tornado's ``io_loop`` fixture for async set-up and
clean-up. The store must read the time only from its ``clock``: expiry is tested by
moving that clock, never by sleeping. Records "expired" at creation have their
deadline in the real past too, so a backend's own expiry (TTL, PEXPIREAT) agrees with
the store's checks.

This module is for test time only: it imports pytest and needs the pytest-tornado
plugin (the tests are ``@pytest.mark.gen_test`` coroutines on Tornado's loop), neither
of which the library needs at runtime; ``import sessions`` never imports it. Add
``pytest.register_assert_rewrite("sessions.testing")`` to your ``conftest.py`` for
pytest's detailed assertion messages.

Also here, for tests of your own: :func:`new_key` (a session key as the manager makes
them: a SHA-256 hex digest) and :func:`record` (a :class:`~sessions.stores.Record`
that lives ``ttl`` seconds from now, by the suite's clock inside the suite).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from .stores.base import KEEP, Record, Store

__all__ = ["FakeClock", "StoreContract", "new_key", "record"]


class FakeClock:
    """A clock for the manager and the stores: starts at real time, moves only when told."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_key() -> str:
    """A fresh session key, shaped like the manager's (the SHA-256 hex digest of a random ID)."""
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


#: What record() and the tests read as "now": the current test's clock inside the
#: contract suite, the wall clock for other modules that build records.
_CLOCK: Callable[[], float] = time.time


def record(
    data: dict[str, str] | None = None,
    *,
    user_id: str | None = None,
    ttl: float = 600,
    meta: dict[str, str] | None = None,
    kind: str = "session",
    clock: Callable[[], float] | None = None,
) -> Record:
    now = (clock or _CLOCK)()
    return Record(
        data=dict(data or {}), created=now, updated=now, expires=now + ttl, user_id=user_id, meta=dict(meta or {}),
        kind=kind,
    )


async def _loaded(store: Store, key: str) -> Record:
    """The live record under ``key`` (the test fails when there is none)."""
    loaded = await store.load(key)
    assert loaded is not None, key
    return loaded


class StoreContract:
    """Behaviour every Store must have. Tests are async, run on Tornado's loop.

    A subclass provides the ``store`` fixture (see the module's documentation).
    """

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The clock the ``store`` fixture builds its store with; tests move it."""
        return FakeClock()

    @pytest.fixture(autouse=True)
    def _shared_clock(self, clock: FakeClock) -> Iterator[None]:
        # record() and the store read one clock; each test gets a fresh one.
        global _CLOCK
        _CLOCK = clock
        yield
        _CLOCK = time.time

    @pytest.mark.gen_test
    async def test_load_missing_returns_none(self, store: Store) -> None:
        assert await store.load(new_key()) is None

    @pytest.mark.gen_test
    async def test_create_then_load_round_trips(self, store: Store) -> None:
        key = new_key()
        original = record({"count": "3", "name": '"Zoë"', "nested": '{"a":[1,2]}'}, user_id="u1")
        await store.create(key, original)
        loaded = await store.load(key)
        assert loaded is not None
        assert loaded.data == original.data
        assert loaded.user_id == "u1"
        assert loaded.created == pytest.approx(original.created, abs=0.002)
        assert loaded.expires == pytest.approx(original.expires, abs=0.002)

    @pytest.mark.gen_test
    async def test_odd_keys_round_trip(self, store: Store) -> None:
        key = new_key()
        data = {"$where": "1", "a.b": "2", "%2E": "3", "": "4", "ünï": "5", "x'; DROP TABLE sessions;--": "6"}
        await store.create(key, record(data))
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == data

    @pytest.mark.gen_test
    async def test_expired_record_is_never_returned(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1"}, ttl=-1))
        assert await store.load(key) is None

    @pytest.mark.gen_test
    async def test_update_applies_only_named_keys(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1", "b": "2", "c": "3"}))
        later = _CLOCK() + 900
        ok = await store.update(
            key, set_items={"a": "10", "d": "4"}, unset_keys=["c"], expires=later, updated=_CLOCK()
        )
        assert ok is True
        loaded = await store.load(key)
        assert loaded is not None
        assert loaded.data == {"a": "10", "b": "2", "d": "4"}
        assert loaded.expires == pytest.approx(later, abs=0.002)

    @pytest.mark.gen_test
    async def test_update_of_missing_or_expired_session_writes_nothing(self, store: Store) -> None:
        gone, expired = new_key(), new_key()
        await store.create(expired, record({"a": "1"}, ttl=-1))
        for key in (gone, expired):
            ok = await store.update(
                key, set_items={"x": "1"}, unset_keys=[], expires=_CLOCK() + 600, updated=_CLOCK()
            )
            assert ok is False
            assert await store.load(key) is None

    @pytest.mark.gen_test
    async def test_concurrent_updates_of_different_keys_both_persist(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"base": "0"}))

        async def write(i: int) -> bool:
            return await store.update(
                key, set_items={f"k{i}": str(i)}, unset_keys=[], expires=_CLOCK() + 600, updated=_CLOCK()
            )

        results = await asyncio.gather(*(write(i) for i in range(20)))
        assert all(results)
        loaded = await store.load(key)
        assert loaded is not None
        assert loaded.data == {"base": "0", **{f"k{i}": str(i) for i in range(20)}}

    @pytest.mark.gen_test
    async def test_user_id_kept_unless_given(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1"}, user_id="alice"))
        await store.update(key, set_items={"b": "2"}, unset_keys=[], expires=_CLOCK() + 60, updated=_CLOCK(), user_id=KEEP)
        assert (await _loaded(store, key)).user_id == "alice"
        await store.update(key, set_items={}, unset_keys=[], expires=_CLOCK() + 60, updated=_CLOCK(), user_id="bob")
        assert (await _loaded(store, key)).user_id == "bob"
        await store.update(key, set_items={}, unset_keys=[], expires=_CLOCK() + 60, updated=_CLOCK(), user_id=None)
        assert (await _loaded(store, key)).user_id is None

    @pytest.mark.gen_test
    async def test_touch_moves_expiry_only(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1"}, ttl=60))
        later, now = _CLOCK() + 3600, _CLOCK()
        assert await store.touch(key, expires=later, updated=now) is True
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == {"a": "1"}
        assert loaded.expires == pytest.approx(later, abs=0.002)
        assert loaded.updated == pytest.approx(now, abs=0.002)
        assert await store.touch(new_key(), expires=later, updated=now) is False

    @pytest.mark.gen_test
    async def test_destroy(self, store: Store) -> None:
        key, other = new_key(), new_key()
        await store.create(key, record({"a": "1"}))
        await store.create(other, record({"b": "2"}))
        await store.destroy(key)
        await store.destroy(key)  # absent: no error
        assert await store.load(key) is None
        assert await store.load(other) is not None

    @pytest.mark.gen_test
    async def test_create_replaces_stale_items(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"old": "1"}))
        await store.create(key, record({"new": "2"}))
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == {"new": "2"}

    @pytest.mark.gen_test
    async def test_destroy_user_and_list_user(self, store: Store) -> None:
        mine = [new_key() for _ in range(3)]
        theirs = new_key()
        for i, key in enumerate(mine):
            rec = record({"i": str(i)}, user_id="alice")
            rec.created += i  # distinct creation times: newest first
            await store.create(key, rec)
        await store.create(theirs, record({"x": "1"}, user_id="bob"))
        await store.create(new_key(), record({"x": "1"}, user_id="alice", ttl=-1))  # expired

        listed = await store.list_user("alice")
        assert [k for k, _ in listed] == list(reversed(mine))
        assert listed[0][1].data == {"i": "2"}

        assert await store.destroy_user("alice", keep=mine[0]) >= 2
        assert [k for k, _ in await store.list_user("alice")] == [mine[0]]
        assert await store.load(mine[1]) is None
        assert await store.load(theirs) is not None
        await store.destroy_user("alice")
        assert await store.list_user("alice") == []
        assert await store.list_user("nobody") == []

    @pytest.mark.gen_test
    async def test_prune_removes_only_expired(self, store: Store) -> None:
        live, dead = new_key(), new_key()
        await store.create(live, record({"a": "1"}))
        await store.create(dead, record({"a": "1"}, ttl=-5))
        assert await store.prune() >= 1 or store.expires_natively  # Redis expires keys itself and never scans
        assert await store.load(live) is not None
        assert await store.touch(dead, expires=_CLOCK() + 60, updated=_CLOCK()) is False

    @pytest.mark.gen_test
    async def test_ping(self, store: Store) -> None:
        await store.ping()

    # -- the injectable clock ----------------------------------------------------

    @pytest.mark.gen_test
    async def test_store_uses_its_clock_for_expiry(self, store: Store, clock: FakeClock) -> None:
        assert store.clock is clock
        key = new_key()
        await store.create(key, record({"a": "1"}, user_id="carol", ttl=60))
        clock.advance(59)
        assert await store.load(key) is not None
        clock.advance(2)  # past the deadline by the store's clock, not the wall clock
        assert await store.load(key) is None
        assert await store.update(key, set_items={"b": "2"}, unset_keys=[], expires=clock() + 60, updated=clock()) is False
        assert await store.touch(key, expires=clock() + 60, updated=clock()) is False
        assert await store.take(key, ["a"]) is None
        assert await store.list_user("carol") == []
        assert await store.prune() >= 1 or store.expires_natively  # Redis expires keys itself and never scans

    # -- meta --------------------------------------------------------------------

    @pytest.mark.gen_test
    async def test_meta_round_trips_and_is_replaced_only_when_given(self, store: Store) -> None:
        key = new_key()
        meta = {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11) \"quoted\" $where.a", "login": "1700000000"}
        await store.create(key, record({"a": "1"}, user_id="dave", meta=meta))
        loaded = await store.load(key)
        assert loaded is not None and loaded.meta == meta
        await store.update(key, set_items={"b": "2"}, unset_keys=[], expires=_CLOCK() + 60, updated=_CLOCK())
        assert (await _loaded(store, key)).meta == meta  # KEEP by default
        await store.update(key, set_items={}, unset_keys=[], expires=_CLOCK() + 60, updated=_CLOCK(), meta={"ip": "198.51.100.1"})
        assert (await _loaded(store, key)).meta == {"ip": "198.51.100.1"}
        [(listed_key, listed)] = await store.list_user("dave")
        assert listed_key == key and listed.meta == {"ip": "198.51.100.1"}
        await store.update(key, set_items={}, unset_keys=[], expires=_CLOCK() + 60, updated=_CLOCK(), meta={})
        assert (await _loaded(store, key)).meta == {}

    @pytest.mark.gen_test
    async def test_record_without_meta_loads_empty_meta(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1"}))
        assert (await _loaded(store, key)).meta == {}

    # -- kinds -------------------------------------------------------------------

    @pytest.mark.gen_test
    async def test_each_kind_round_trips_and_update_keeps_it(self, store: Store) -> None:
        for kind in ("session", "remember", "api-token"):
            key = new_key()
            await store.create(key, record({"a": "1"}, user_id="fay", meta={"kind": "not this"}, kind=kind))
            loaded = await store.load(key)
            assert loaded is not None and loaded.kind == kind and loaded.meta == {"kind": "not this"}
            assert await store.update(
                key, set_items={"b": "2"}, unset_keys=["a"], expires=_CLOCK() + 60, updated=_CLOCK(),
                user_id="gus", meta={"ip": "x"},
            )  # fmt: skip
            assert await store.touch(key, expires=_CLOCK() + 90, updated=_CLOCK())
            assert await store.take(key, ["b"]) == {"b": "2"}
            loaded = await store.load(key)
            assert loaded is not None and loaded.kind == kind and loaded.meta == {"ip": "x"}

    @pytest.mark.gen_test
    async def test_a_record_is_a_session_unless_told(self, store: Store) -> None:
        key = new_key()
        now = _CLOCK()
        await store.create(key, Record({"a": "1"}, now, now, now + 60, "hal"))
        loaded = await store.load(key)
        assert loaded is not None and loaded.kind == "session"
        [(_, listed)] = await store.list_user("hal", kind="session")
        assert listed.kind == "session"

    @pytest.mark.gen_test
    async def test_list_user_filters_by_kind_and_destroy_user_removes_every_kind(self, store: Store) -> None:
        keys: dict[str, list[str]] = {"session": [], "remember": []}
        for i, kind in enumerate(["session", "remember", "session", "remember"]):
            key = new_key()
            rec = record({"i": str(i)}, user_id="ivy", kind=kind)
            rec.created += i  # newest last
            await store.create(key, rec)
            keys[kind].insert(0, key)
        await store.create(new_key(), record({"x": "1"}, user_id="ivy", ttl=-1, kind="remember"))  # expired
        await store.create(new_key(), record({"x": "1"}, user_id="jon", kind="remember"))  # another user

        everything = await store.list_user("ivy")
        assert [r.kind for _, r in everything] == ["remember", "session", "remember", "session"]  # newest first
        for kind, expected in keys.items():
            listed = await store.list_user("ivy", kind=kind)
            assert [k for k, _ in listed] == expected and all(r.kind == kind for _, r in listed)
        assert await store.list_user("ivy", kind="api-token") == []

        assert await store.destroy_user("ivy", keep=keys["remember"][0]) >= 3
        assert [k for k, _ in await store.list_user("ivy")] == [keys["remember"][0]]
        await store.destroy_user("ivy")
        assert await store.list_user("ivy") == [] and await store.load(keys["remember"][0]) is None
        assert len(await store.list_user("jon", kind="remember")) == 1

    # -- take --------------------------------------------------------------------

    @pytest.mark.gen_test
    async def test_take_removes_and_returns_only_present_items(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1", "b": '"two"', "$c.d": "[3]", "keep": "4"}))
        taken = await store.take(key, ["a", "b", "$c.d", "missing"])
        assert taken == {"a": "1", "b": '"two"', "$c.d": "[3]"}
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == {"keep": "4"}
        assert await store.take(key, ["a"]) == {}
        assert await store.take(key, []) == {}

    @pytest.mark.gen_test
    async def test_take_of_missing_or_expired_session_is_none(self, store: Store) -> None:
        expired = new_key()
        await store.create(expired, record({"a": "1"}, ttl=-1))
        assert await store.take(new_key(), ["a"]) is None
        assert await store.take(expired, ["a"]) is None

    @pytest.mark.gen_test
    async def test_take_moves_no_deadline(self, store: Store) -> None:
        key = new_key()
        original = record({"a": "1", "b": "2"}, ttl=300)
        await store.create(key, original)
        await store.take(key, ["a"])
        loaded = await store.load(key)
        assert loaded is not None
        assert loaded.expires == pytest.approx(original.expires, abs=0.002)
        assert loaded.updated == pytest.approx(original.updated, abs=0.002)

    @pytest.mark.gen_test
    async def test_concurrent_takes_hand_each_item_to_exactly_one(self, store: Store) -> None:
        key = new_key()
        items = {f"_flash:{i:04d}": f'["info","m{i}"]' for i in range(10)}
        await store.create(key, record({**items, "other": "1"}))
        results = await asyncio.gather(*(store.take(key, list(items)) for _ in range(8)))
        handed_out = [name for result in results for name in (result or {})]
        assert sorted(handed_out) == sorted(items)  # every item once, none twice
        merged = {k: v for result in results for k, v in (result or {}).items()}
        assert merged == items
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == {"other": "1"}

    @pytest.mark.gen_test
    async def test_take_concurrent_with_updates_of_other_keys(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"_flash:1": "1"}))

        async def write(i: int) -> bool:
            return await store.update(key, set_items={f"k{i}": str(i)}, unset_keys=[], expires=_CLOCK() + 600, updated=_CLOCK())

        outcome = await asyncio.gather(store.take(key, ["_flash:1"]), *(write(i) for i in range(10)))
        assert outcome[0] == {"_flash:1": "1"}
        loaded = await store.load(key)
        assert loaded is not None and loaded.data == {f"k{i}": str(i) for i in range(10)}

    # -- capabilities ------------------------------------------------------------

    def test_declares_its_expiry_capability(self, store: Store) -> None:
        assert isinstance(store.expires_natively, bool)
        assert store.name in store.describe()

    # -- counters (rate limiting) ------------------------------------------------

    @pytest.mark.gen_test
    async def test_hits_count_per_name_and_window(self, store: Store, clock: FakeClock) -> None:
        clock.now = 1_800_000_000.0 + 5  # 5 s into a 60 s window
        assert await store.hit("login:ip:203.0.113.1", 60) == (1, 1_800_000_060.0)
        assert await store.hit("login:ip:203.0.113.1", 60) == (2, 1_800_000_060.0)
        assert (await store.hit("login:ip:203.0.113.2", 60))[0] == 1  # another name
        assert (await store.hit("login:ip:203.0.113.1", 3600))[0] == 1  # another window length
        clock.advance(55)  # the next window
        assert await store.hit("login:ip:203.0.113.1", 60) == (1, 1_800_000_120.0)

    @pytest.mark.gen_test
    async def test_reset_hits_forgets_only_that_name(self, store: Store, clock: FakeClock) -> None:
        for _ in range(3):
            await store.hit("acct:a", 300)
            await store.hit("acct:b", 300)
        await store.reset_hits("acct:a", 300)
        await store.reset_hits("acct:never", 300)  # no error
        assert (await store.hit("acct:a", 300))[0] == 1
        assert (await store.hit("acct:b", 300))[0] == 4

    @pytest.mark.gen_test
    async def test_concurrent_hits_are_all_counted(self, store: Store) -> None:
        results = await asyncio.gather(*(store.hit("burst", 600) for _ in range(40)))
        assert sorted(count for count, _ in results) == list(range(1, 41))

    @pytest.mark.gen_test
    async def test_counter_names_are_opaque(self, store: Store) -> None:
        odd = ['x"; DROP TABLE counters;--', "$where", "a.b|c", "ünï", "{'$gt': ''}"]
        for name in odd:
            assert (await store.hit(name, 60))[0] == 1
        for name in odd:
            assert (await store.hit(name, 60))[0] == 2

    @pytest.mark.gen_test
    async def test_counters_are_not_sessions(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1"}, user_id="erin"))
        await store.hit("erin", 60)
        assert [k for k, _ in await store.list_user("erin")] == [key]
        assert await store.destroy_user("erin") == 1
        assert (await store.hit("erin", 60))[0] == 2

    @pytest.mark.gen_test
    async def test_alive_names_only_unexpired_records(self, store: Store, clock: FakeClock) -> None:
        live, short, token = new_key(), new_key(), new_key()
        await store.create(live, record({"a": "1"}))
        await store.create(short, record({"a": "1"}, ttl=60))
        await store.create(token, record({}, kind="remember"))
        assert await store.alive([]) == set()
        asked = [new_key(), live, short, token, new_key(), live]
        assert await store.alive(asked) == {live, short, token}
        clock.advance(120)
        assert await store.alive(iter(asked)) == {live, token}
        await store.destroy(live)
        assert await store.alive(asked) == {token}

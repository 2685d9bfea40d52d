"""The store contract: one suite, run unchanged over every backend.

Subclass :class:`StoreContract` and provide a ``store`` fixture that yields a fresh,
empty store (see tests/test_store_contract.py). Times are real: a record "expired"
here has its deadline in the past, so no store can rely on a patched clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

import pytest

from sessions.stores.base import KEEP, Record, Store


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def record(data: dict[str, str] | None = None, *, user_id: str | None = None, ttl: float = 600) -> Record:
    now = time.time()
    return Record(
        data=dict(data or {}), created=now, updated=now, expires=now + ttl, user_id=user_id
    )


class StoreContract:
    """Behaviour every Store must have. Tests are async, run on Tornado's loop."""

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
        later = time.time() + 900
        ok = await store.update(
            key, set_items={"a": "10", "d": "4"}, unset_keys=["c"], expires=later, updated=time.time()
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
                key, set_items={"x": "1"}, unset_keys=[], expires=time.time() + 600, updated=time.time()
            )
            assert ok is False
            assert await store.load(key) is None

    @pytest.mark.gen_test
    async def test_concurrent_updates_of_different_keys_both_persist(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"base": "0"}))

        async def write(i: int) -> bool:
            return await store.update(
                key, set_items={f"k{i}": str(i)}, unset_keys=[], expires=time.time() + 600, updated=time.time()
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
        await store.update(key, set_items={"b": "2"}, unset_keys=[], expires=time.time() + 60, updated=time.time(), user_id=KEEP)
        assert (await store.load(key)).user_id == "alice"
        await store.update(key, set_items={}, unset_keys=[], expires=time.time() + 60, updated=time.time(), user_id="bob")
        assert (await store.load(key)).user_id == "bob"
        await store.update(key, set_items={}, unset_keys=[], expires=time.time() + 60, updated=time.time(), user_id=None)
        assert (await store.load(key)).user_id is None

    @pytest.mark.gen_test
    async def test_touch_moves_expiry_only(self, store: Store) -> None:
        key = new_key()
        await store.create(key, record({"a": "1"}, ttl=60))
        later, now = time.time() + 3600, time.time()
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
        assert await store.prune() >= 1
        assert await store.load(live) is not None
        assert await store.touch(dead, expires=time.time() + 60, updated=time.time()) is False

    @pytest.mark.gen_test
    async def test_ping(self, store: Store) -> None:
        await store.ping()

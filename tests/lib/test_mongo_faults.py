"""The database goes away and comes back while one store object stays in use.

Each test runs its own FerretDB process (it stops it), so these need the Go-built
server even when MONGODB_URL points elsewhere. The time bound is a behaviour
bound, not a benchmark: with the default 2 s timeouts a call against a dead or
hung server must give up in well under 5 s (the demo then answers 503), never
hang for the driver's default 30 s.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymongo.errors import PyMongoError

from sessions.stores.base import StoreError
from sessions.stores.mongo import MongoStore
from sessions.testing import new_key, record

#: Generous: the configured timeouts are 2 s; slow CI machines get headroom.
FAIL_WITHIN = 5.0


async def assert_fails_fast(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await call()
    elapsed = time.monotonic() - started
    assert isinstance(caught.value.__cause__, PyMongoError)
    assert elapsed < FAIL_WITHIN, f"took {elapsed:.2f} s to report the database down"
    return elapsed


async def save_sessions(store: MongoStore, count: int) -> dict[str, dict[str, str]]:
    saved: dict[str, dict[str, str]] = {}
    for i in range(count):
        key = new_key()
        await store.create(key, record({"n": str(i)}, user_id=f"user{i % 3}"))
        assert await store.update(
            key, set_items={"extra": f'"{i}"'}, unset_keys=[], expires=time.time() + 600, updated=time.time()
        )
        saved[key] = {"n": str(i), "extra": f'"{i}"'}
    return saved


async def assert_all_present(store: MongoStore, saved: dict[str, dict[str, str]]) -> None:
    for key, data in saved.items():
        loaded = await store.load(key)
        assert loaded is not None, "a session saved before the outage was lost"
        assert loaded.data == data


@pytest.mark.parametrize("how", ["terminate", "kill"])
@pytest.mark.gen_test(timeout=120)
async def test_server_down_then_back(how: str, mongo_server_factory: Callable[[], Any]) -> None:
    server = mongo_server_factory()
    store = MongoStore(server.url, database="fault_test")
    try:
        saved = await save_sessions(store, 20)

        server.stop(kill=(how == "kill"))
        timings = [
            await assert_fails_fast(lambda: store.load(next(iter(saved)))),
            await assert_fails_fast(
                lambda: store.update(
                    new_key(),
                    set_items={"a": "1"},
                    unset_keys=[],
                    expires=time.time() + 60,
                    updated=time.time(),
                )
            ),
            await assert_fails_fast(lambda: store.create(new_key(), record({"a": "1"}))),
            await assert_fails_fast(
                lambda: store.touch(new_key(), expires=time.time() + 60, updated=time.time())
            ),
            await assert_fails_fast(lambda: store.destroy_user("user0")),
            await assert_fails_fast(store.ping),
        ]
        print(f"{how}: store errors after {', '.join(f'{t:.2f}' for t in timings)} s")

        server.start()  # same port, same data directory
        # The same store object works again at once: no restart, no reconnect call.
        await store.ping()
        await assert_all_present(store, saved)
        key = next(iter(saved))
        assert await store.update(
            key, set_items={"after": "1"}, unset_keys=[], expires=time.time() + 600, updated=time.time()
        )
        fresh = new_key()
        await store.create(fresh, record({"new": "1"}))
        assert (await store.load(fresh)) is not None
        user1 = sorted(k for k, data in saved.items() if int(data["n"]) % 3 == 1)
        assert sorted(k for k, _ in await store.list_user("user1")) == user1
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=120)
async def test_outage_before_first_use_then_setup_retries(mongo_server_factory: Callable[[], Any]) -> None:
    """A store built while the database is down sets itself up once it comes back."""
    server = mongo_server_factory()
    server.stop()
    store = MongoStore(server.url, database="fault_test")
    try:
        await assert_fails_fast(lambda: store.load(new_key()))
        assert store.expiry_mode_in_force is None
        server.start()
        key = new_key()
        await store.create(key, record({"a": "1"}))
        assert store.expiry_mode_in_force in ("native", "interval")
        assert (await store.load(key)) is not None
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=120)
async def test_hung_server_times_out(mongo_server_factory: Callable[[], Any]) -> None:
    """A server that accepts but never answers (SIGSTOP) trips the socket timeout."""
    server = mongo_server_factory()
    store = MongoStore(server.url, database="fault_test")
    try:
        saved = await save_sessions(store, 3)
        server.pause()
        try:
            timings = [
                await assert_fails_fast(lambda: store.load(next(iter(saved)))),
                await assert_fails_fast(lambda: store.create(new_key(), record({"a": "1"}))),
            ]
            print(f"hung: store errors after {', '.join(f'{t:.2f}' for t in timings)} s")
        finally:
            server.resume()
        await store.ping()
        await assert_all_present(store, saved)
    finally:
        await store.close()

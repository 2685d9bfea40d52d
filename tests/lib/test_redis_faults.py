"""Redis goes away, hangs and comes back while one store object stays in use.

Each test starts its own server (it stops it). The bound is behaviour, not speed:
with the 2 s timeouts a call against a dead or hung server gives up well under
5 s (the app then answers 503), never after redis-py's default retries.
The test servers have no persistence, like many session Redises: a restarted one
is empty, so the sessions are gone (users log in again); with RDB/AOF persistence
they would come back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sessions.stores.redis import RedisStore
from sessions.testing import new_key, record
from tests.fixtures.support import assert_fails_fast


def every_call(store: RedisStore, key: str) -> list[Callable[[], Awaitable[Any]]]:
    now = time.time()
    return [
        lambda: store.load(key),
        lambda: store.update(key, set_items={"a": "1"}, unset_keys=[], expires=now + 60, updated=now),
        lambda: store.create(new_key(), record({"a": "1"}, user_id="u")),
        lambda: store.touch(key, expires=now + 60, updated=now),
        lambda: store.take(key, ["a"]),
        lambda: store.destroy_user("u"),
        store.ping,
    ]


@pytest.mark.parametrize("how", ["terminate", "kill"])
@pytest.mark.gen_test(timeout=60)
async def test_server_down_then_back(how: str, redis_server_factory: Callable[[], Any]) -> None:
    server = redis_server_factory()
    store = RedisStore(server.url)
    try:
        key = new_key()
        await store.create(key, record({"n": "1"}, user_id="u"))
        server.stop(kill=(how == "kill"))
        timings = [await assert_fails_fast(call) for call in every_call(store, key)]
        print(f"{how}: store errors after {', '.join(f'{t:.2f}' for t in timings)} s")

        server.start()  # same port; no persistence, so an empty server
        await store.ping()  # the same store object works again: no restart, no reconnect call
        assert await store.load(key) is None  # lost with the server's memory, as documented
        fresh = new_key()
        await store.create(fresh, record({"new": "1"}, user_id="u"))
        assert await store.update(fresh, set_items={"b": "2"}, unset_keys=[], expires=time.time() + 60,
                                  updated=time.time())  # fmt: skip
        assert [k for k, _ in await store.list_user("u")] == [fresh]
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=60)
async def test_hung_server_times_out(redis_server_factory: Callable[[], Any]) -> None:
    """A server that accepts but never answers (SIGSTOP) trips the socket timeout once, not per retry."""
    server = redis_server_factory()
    store = RedisStore(server.url)
    try:
        key = new_key()
        await store.create(key, record({"n": "1"}))
        server.pause()
        try:
            timings = [await assert_fails_fast(call) for call in every_call(store, key)[:3]]
            print(f"hung: store errors after {', '.join(f'{t:.2f}' for t in timings)} s")
        finally:
            server.resume()
        await store.ping()
        assert (await store.load(key)).data == {"n": "1"}  # type: ignore[union-attr]
    finally:
        await store.close()

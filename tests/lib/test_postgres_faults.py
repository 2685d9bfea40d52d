"""PostgreSQL goes away and comes back while one store object stays in use.

Each test starts its own server (it stops it). With the 2 s timeouts a call against
a stopped server gives up well under 5 s (the app answers 503); after a restart the
same store works again at once (stale pooled connections are retried on a fresh
one), and every session committed before the outage is still there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sessions.stores.base import StoreError
from sessions.stores.postgres import PostgresStore
from sessions.testing import new_key, record
from tests.fixtures.support import assert_fails_fast


async def ping_until_back(store: PostgresStore, within: float = 15.0) -> None:
    """Service resumes without a restart of the app: the pool reconnects on its own
    schedule (it backs off after failed attempts), so allow it a few seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            await store.ping()
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.gen_test(timeout=120)
async def test_server_down_then_back(mode: str, postgres_server_factory: Callable[[], Any]) -> None:
    server = postgres_server_factory()
    store = PostgresStore(server.url, pool_size=4, timeout=1.0)  # 1 s keeps the test short
    try:
        saved = {}
        for i in range(10):
            key = new_key()
            await store.create(key, record({"n": str(i)}, user_id=f"user{i % 2}"))
            saved[key] = {"n": str(i)}
        server.stop(mode=mode)
        now = time.time()
        some = next(iter(saved))
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.load(some),
            lambda: store.update(some, set_items={"a": "1"}, unset_keys=[], expires=now + 600, updated=now),
            lambda: store.create(new_key(), record({"a": "1"})),
            lambda: store.touch(some, expires=now + 600, updated=now),
            lambda: store.take(some, ["n"]),
            lambda: store.destroy_user("user0"),
            store.ping,
        ]
        timings = [await assert_fails_fast(call) for call in calls]
        print(f"{mode}: store errors after {', '.join(f'{t:.2f}' for t in timings)} s")

        server.start()  # same port and data folder
        await ping_until_back(store)
        for key, data in saved.items():
            loaded = await store.load(key)
            assert loaded is not None and loaded.data == data, "a session committed before the outage was lost"
        assert await store.update(some, set_items={"after": "1"}, unset_keys=[], expires=time.time() + 600,
                                  updated=time.time())  # fmt: skip
        assert len(await store.list_user("user1")) == 5
    finally:
        await store.close()

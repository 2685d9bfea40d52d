"""The Redis store's connection pool against a real redis-server: bursts wait, none is lost.

A burst larger than the pool must queue for a free connection (not fail with "Too
many connections"), a caller that waits past the timeout must get a clean
connection error, and slots must add up afterwards, whatever was cancelled.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from sessions.stores.redis import RedisStore
from sessions.stores.redis_pool import WaitingConnectionPool
from sessions.testing import new_key, record


def pool_client(url: str, size: int, timeout: float) -> tuple[Redis, WaitingConnectionPool]:
    pool = WaitingConnectionPool.from_url(url, max_connections=size, timeout=timeout, decode_responses=True)
    return Redis(connection_pool=pool), pool


@pytest.mark.gen_test(timeout=30)
async def test_a_burst_larger_than_the_pool_waits_and_all_succeed(redis_url: str, redis_prefix: str) -> None:
    client, pool = pool_client(redis_url, size=3, timeout=5.0)
    try:
        # Each BLPOP holds its connection on the server for 50 ms: 30 of them on 3
        # connections need 10 turns (about half a second), and none may fail.
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await asyncio.gather(
            *(client.blpop([f"{redis_prefix}empty{i}"], timeout=0.05) for i in range(30))
        )
        assert replies == [None] * 30
        assert loop.time() - started >= 0.45  # they really took turns on 3 connections
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 3
        assert pool._free_slots == 3 and not pool._waiters
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_a_caller_waits_at_most_the_timeout_then_gets_a_connection_error(redis_url: str) -> None:
    client, pool = pool_client(redis_url, size=1, timeout=0.3)
    try:
        held = await pool.get_connection()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        assert 0.25 <= loop.time() - started < 2.0
        await pool.release(held)
        assert await client.ping() is True  # the slot came back
        assert pool._free_slots == 1 and not pool._waiters
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_cancelled_waiters_and_a_double_release_leave_the_count_right(redis_url: str) -> None:
    client, pool = pool_client(redis_url, size=2, timeout=5.0)
    try:
        first, second = await pool.get_connection(), await pool.get_connection()
        waiters = [asyncio.ensure_future(pool.get_connection()) for _ in range(4)]
        await asyncio.sleep(0.05)
        waiters[0].cancel()
        waiters[2].cancel()
        await asyncio.sleep(0.05)
        await pool.release(first)
        with pytest.raises(KeyError):  # redis-py refuses a second release; it must not make up a slot
            await pool.release(first)
        await pool.release(second)
        await asyncio.sleep(0.05)
        done = [w for w in waiters if not w.cancelled()]
        assert [w.done() for w in done] == [True, True]  # the two still waiting got them, in order
        for waiter in done:
            await pool.release(waiter.result())
        assert pool._free_slots == 2 and not pool._waiters
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_the_store_built_from_a_url_serves_a_burst_beyond_its_pool(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix, max_connections=4)
    assert isinstance(store.client.connection_pool, WaitingConnectionPool)
    try:
        keys = [new_key() for _ in range(200)]
        await asyncio.gather(*(store.create(key, record({"n": str(i)})) for i, key in enumerate(keys)))
        loaded = await asyncio.gather(*(store.load(key) for key in keys))
        assert [r.data["n"] for r in loaded if r is not None] == [str(i) for i in range(200)]
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_slot_handed_over_as_the_wait_times_out_is_not_lost(redis_url: str) -> None:
    # The release hands the waiter its slot, then the loop is blocked past the waiter's
    # deadline: the timeout and the hand-over land in the same loop pass.
    client, pool = pool_client(redis_url, size=1, timeout=0.2)
    try:
        held = await pool.get_connection()
        waiting = asyncio.ensure_future(pool.get_connection())
        await asyncio.sleep(0.1)
        await pool.release(held)
        time.sleep(0.25)  # noqa: ASYNC251 - blocking the loop on purpose
        try:
            connection = await waiting
        except RedisConnectionError:
            pass  # it gave up: the slot must have gone back
        else:
            await pool.release(connection)
        assert pool._free_slots == 1 and not pool._waiters
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_the_slot_on(redis_url: str) -> None:
    client, pool = pool_client(redis_url, size=1, timeout=5.0)
    try:
        held = await pool.get_connection()
        first = asyncio.ensure_future(pool.get_connection())
        second = asyncio.ensure_future(pool.get_connection())
        await asyncio.sleep(0.05)
        await pool.release(held)  # hands the slot to `first`...
        first.cancel()  # ...which is cancelled before it runs again
        connection = await asyncio.wait_for(second, 2.0)  # the slot reached `second`
        assert first.cancelled()
        await pool.release(connection)
        assert pool._free_slots == 1 and not pool._waiters
    finally:
        await client.aclose()


def test_the_slot_count_follows_redis_py_reading_of_max_connections() -> None:
    assert (
        WaitingConnectionPool(max_connections=None)._free_slots
        == WaitingConnectionPool(max_connections=None).max_connections
    )
    assert WaitingConnectionPool(max_connections=7)._free_slots == 7

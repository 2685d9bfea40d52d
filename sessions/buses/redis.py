"""Session events over Redis pub/sub, on one server or a Redis Cluster.

Standalone: ``PUBLISH``/``SUBSCRIBE`` on one channel under the store's prefix
(``<prefix>events``). The subscriber is a connection of the bus's own, built with
the store client's settings (address, password, TLS) but no automatic retry, so a
lost connection surfaces here: the bus reconnects with backoff and calls
``on_resync``. A subscriber that hears nothing for ``keepalive`` seconds sends a
``PING``; no answer within ``timeout`` more counts as a lost connection (a hung
server that keeps the socket open is noticed too).

Redis Cluster: the channel lives on the shard that owns its hash slot.
``cluster_mode="sharded"`` (the default) uses Redis 7's sharded pub/sub:
``SPUBLISH`` goes to the owner of the channel's slot, which delivers it to its
``SSUBSCRIBE``-rs, and no other node sees the message. ``cluster_mode="broadcast"``
uses classic ``PUBLISH``, which the cluster bus forwards to every node, so a
subscriber may listen anywhere, at the cost of every message crossing the cluster
bus to every node.

Measured on the tests' three-master cluster (Redis 7.0.15, redis-py 8.1.0, all on
one host with two shared cores; 500 events published one at a time, each awaited
at the subscriber; tests/lib/test_event_bus.py::test_redis_cluster_modes_latency,
two rounds each, plus a standalone script that forced PUBLISH onto a node other
than the subscriber's, i.e. always forwarded)::

    sharded    SPUBLISH/SSUBSCRIBE           p50 0.37-0.60 ms   p99 0.52-3.1 ms
    broadcast  PUBLISH to a random node      p50 0.37-0.63 ms   p99 0.57-2.2 ms
    forwarded  PUBLISH to another node       p50 0.64 ms        p99 2.5-4.3 ms

On one host the modes are within the noise of each other (a forwarded hop adds
about 0.05-0.1 ms at the median). Sharded is the default for what the numbers on
one host cannot show: a forwarded ``PUBLISH`` costs every node of the cluster a
copy of every event (cluster-bus traffic grows with nodes x events), while a
sharded message stays on its shard; and it follows slot migrations and failovers
(the node answers ``MOVED`` or sends ``sunsubscribe``; the bus re-reads the
topology, resubscribes on the new owner, then resyncs). It needs Redis 7 (SSUBSCRIBE
is sent on a plain connection to the owning node, so the client needs no cluster
pub/sub support of its own); ``cluster_mode="broadcast"`` is there for Redis 6.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .listening import DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN, ListeningBus

__all__ = ["ClusterMode", "RedisBus"]

ClusterMode = Literal["sharded", "broadcast"]

#: Seconds of silence after which the subscriber sends a PING.
DEFAULT_KEEPALIVE = 5.0
#: Seconds to connect, subscribe, and wait for a PING's answer.
DEFAULT_TIMEOUT = 2.0


class RedisBus(ListeningBus):
    """Session events over (sharded) pub/sub; see the module documentation.

    ``client`` is the store's client (publishing goes through it); ``ready`` is
    awaited before using it (the store's ``ensure_connected``, which discovers a
    cluster once).
    """

    pushes = True

    def __init__(
        self,
        client: Redis | RedisCluster,
        channel: str,
        *,
        cluster_mode: ClusterMode = "sharded",
        ready: Callable[[], Awaitable[None]] | None = None,
        keepalive: float = DEFAULT_KEEPALIVE,
        timeout: float = DEFAULT_TIMEOUT,
        origin: str | None = None,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(origin=origin, retry_min=retry_min, retry_max=retry_max)
        if cluster_mode not in ("sharded", "broadcast"):
            raise ValueError(f"cluster_mode must be sharded or broadcast, not {cluster_mode!r}")
        if keepalive <= 0 or timeout <= 0:
            raise ValueError("keepalive and timeout must be positive")
        self.client = client
        self.channel = channel
        self.cluster = isinstance(client, RedisCluster)
        self.sharded = self.cluster and cluster_mode == "sharded"
        self.keepalive = float(keepalive)
        self.timeout = float(timeout)
        self._ready = ready
        self._subscriber: Redis | None = None
        self._pubsub: PubSub | None = None
        self._node = ""
        if not self.cluster:
            self.name = "redis pub/sub"
        elif self.sharded:
            self.name = "redis-cluster sharded pub/sub"
        else:
            self.name = "redis-cluster pub/sub"

    def describe(self) -> str:
        where = f" via {self._node}" if self._node else ""
        if not self.cluster:
            how = "PUBLISH/SUBSCRIBE"
        elif self.sharded:
            how = "SPUBLISH/SSUBSCRIBE on the channel's shard"
        else:
            how = "PUBLISH forwarded to every node, SUBSCRIBE"
        return f"{self.name} ({how}, channel {self.channel!r}{where})"

    # -- ListeningBus ------------------------------------------------------------

    async def _connect(self) -> None:
        if self._ready is not None:
            await self._ready()
        connection_class, kwargs = await self._connection_settings()
        kwargs.update(
            # Errors must reach the listener (which resyncs), not be retried away inside redis-py.
            retry=Retry(NoBackoff(), 0),
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            health_check_interval=0,
            # Bytes: a message that is not UTF-8 is dropped by the decoder, not by a reconnect.
            decode_responses=False,
            client_name=re.sub(r"[^\w:.-]", "_", f"tornado-sessions-bus:{self.origin}")[:100],
        )
        self._node = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}" if self.cluster else ""
        self._subscriber = Redis(connection_pool=ConnectionPool(connection_class=connection_class, **kwargs))
        pubsub = self._pubsub = self._subscriber.pubsub()
        if self.sharded:
            await pubsub.ssubscribe(self.channel)
        else:
            await pubsub.subscribe(self.channel)
        # Only once the server has confirmed does a PUBLISH from elsewhere reach us.
        deadline = time.monotonic() + self.timeout
        while True:
            message = await pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] in ("subscribe", "ssubscribe"):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no confirmation of the subscription within {self.timeout:g} s")

    async def _connection_settings(self) -> tuple[Any, dict[str, Any]]:
        """The connection class and options of the node to subscribe on (a copy)."""
        if isinstance(self.client, RedisCluster):
            if self.reconnects or self._node:
                # After a failure the slot may have moved (failover, resharding): ask again.
                await self.client.nodes_manager.initialize()
            node = self.client.get_node_from_key(self.channel)
            if node is None:
                raise ConnectionError(f"no node serves the slot of channel {self.channel!r}")
            return node.connection_class, dict(node.connection_kwargs)
        pool = self.client.connection_pool
        return pool.connection_class, dict(pool.connection_kwargs)

    async def _listen(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise ConnectionError("not subscribed")
        heard = time.monotonic()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.keepalive))
            now = time.monotonic()
            if message is None:
                if now - heard > self.keepalive + self.timeout:
                    raise TimeoutError(f"no answer to PING within {self.timeout:g} s")
                if now - heard > self.keepalive and not pinged:
                    await pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            kind = message["type"]
            if kind in ("message", "smessage"):
                self._receive(message["data"])
            elif kind in ("unsubscribe", "sunsubscribe"):
                # The server dropped the subscription: the channel's slot moved to another node.
                raise ConnectionError(f"the server ended the subscription ({kind})")

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        subscriber, self._subscriber = self._subscriber, None
        try:
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            if subscriber is not None:
                await subscriber.aclose()

    async def _send(self, text: str) -> None:
        if self._ready is not None:
            await self._ready()
        if self.sharded:
            await self.client.spublish(self.channel, text)
        else:
            await self.client.publish(self.channel, text)

    async def close(self) -> None:
        await super().close()
        await asyncio.sleep(0)  # let the closed transports finish before the loop may end

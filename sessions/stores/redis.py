"""Redis session store on ``redis.asyncio`` (redis-py), standalone or Redis Cluster.

Key layout (``prefix`` defaults to ``"sess:"``)::

    <prefix>{<key>}            hash: one session
        d:<name>               JSON text of session item <name> (any string)
        created, updated, expires   float Unix seconds, as text
        user_id                absent when the session has no user
        meta                   JSON object text, absent when empty
        kind                   "session", "remember", ... (absent: written before kinds;
                               read as a session, or as the meta's "kind" if it has one)
        index_until            ms up to which the user index holds this session
    <prefix>user:{<user_id>}   sorted set: the user's session keys, scored by index_until
    <prefix>hits:<slot>:{<name>}   string: hits on counter <name> in window <slot>,
                               expiring (PEXPIREAT) when the window ends

A session key has ``{`` right after the prefix and every other key a word and a
colon (``user:``, ``hits:``), so no family of keys can meet another; keys of others
sharing the prefix must start with a word and a colon too.

Why this shape:

* One hash per session, one field per item, so a save writes only the items a
  request changed (``HSET``/``HDEL``): concurrent requests that change different
  items of one session both persist. Item names get a ``d:`` prefix so that no
  name, however odd (``"$where"``, ``""``, ``"expires"``), can meet a bookkeeping
  field.
* Expiry is native: every write sets ``PEXPIREAT`` on the hash to the deadline the
  manager computed (idle deadline capped by the absolute timeout), so a touch moves
  it and Redis deletes the session on time. Reads still compare ``expires`` with
  the store's clock, so expiry is exact to the clock the app uses.
* Conditional writes are Lua scripts (atomic on the server; the sha is cached and
  the script text sent again only after a restart): "update only if the session
  still exists and has not expired" needs a read and a write in one step, and a
  ``WATCH`` transaction would cost extra round trips and retry under contention,
  where a script never conflicts.
* Hash tags (``{...}``): Redis Cluster puts a key in the slot of its tag, so a
  session's keys stay in one slot, and so do a user's; every script touches keys
  of one slot only.
* Rate-limit counters (:meth:`RedisStore.hit`) are one key per name and window:
  ``INCR`` and ``PEXPIREAT`` (the window's end) in one script, so every process
  counts every hit once and old windows vanish by themselves. The slot (window
  length and start, no ``:``, ``{`` or ``}``) comes before the name, and the name
  is taken whole after it, so two counters never share a key. A name is opaque: a
  ``{`` or ``}`` in it only moves which part of it is the hash tag, i.e. which
  cluster slot the one key lives in.

The per-user index and the sessions it names are in different slots, so no
single script can keep them consistent. The store keeps one invariant instead:
*every live session whose user is U is in U's index with a score (index_until)
at or after its expiry.* It holds under any interleaving because the index is
always written first: a script that would move a session's expiry past the
index_until it has recorded (or give the session a user) refuses and names the
user; the store then raises that user's index entry (a script on the user's own
key) and re-runs the session script with that new bound, which it records.
A client that dies between the two steps leaves only an extra index entry, never
a missing one. Scores are raised in steps of ``index_slack`` beyond the expiry, so
a session touched every minute updates the index about once per ``index_slack``.
Entries whose score has passed name sessions that are surely gone; each index
write and read drops them (``ZREMRANGEBYSCORE``), and the index key expires at its
highest score, so indexes are cleaned as sessions expire without ``KEYS`` or
``SCAN``. Reading an index re-checks each session's own ``user_id``, so an entry
left behind after a session changed user is harmless.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from ..bus import EventBus
from .base import KEEP, Clock, Record, Store, StoreError, window_bounds
from .plumbing import DriverErrors, Lifecycle, split_legacy_kind
from .redis_pool import WaitingConnectionPool

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "sess:"
#: Short timeouts: a Redis that is down or hung turns a request into a 503 in about
#: two seconds instead of redis-py's 5 s per try times ten retries.
DEFAULT_TIMEOUT = 2.0
#: How far past a session's expiry its user-index entry reaches (see the module doc).
DEFAULT_INDEX_SLACK = 3600.0
#: A refused session script (index first) is retried this often before giving up.
_INDEX_ATTEMPTS = 4

_DATA = "d:"
#: Connections a standalone store's pool opens at most (requests beyond wait for one).
DEFAULT_MAX_CONNECTIONS = 64

_errors = DriverErrors(
    "redis", (RedisError, RedisClusterException, OSError, UnicodeError, TimeoutError),
    # redis-py's cluster client, with a node going down under concurrent calls, can touch
    # a connection another task just closed ("'NoneType' object has no attribute
    # 'writelines'"): a failed call to the store, not a bug of ours.
    driver_bugs=(AttributeError,), driver_package="redis",
)

# -- Lua scripts ------------------------------------------------------------------
# Every script touches only the keys in KEYS, all in one slot. Times arrive as
# text: seconds for comparisons, whole milliseconds for PEXPIREAT and scores.

#: CREATE: replace whatever the key held with a new hash and set its expiry.
#: KEYS[1] session; ARGV: pexpireat_ms, then field/value pairs.
_CREATE = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""

#: UPDATE (and touch): a partial save applied only to a live session.
#: KEYS[1] session; ARGV: now, expires, expires_ms, updated, user_mode ('' keep,
#: '=' set, '-' clear), user_id, meta_mode ('' keep, '=' set, '-' clear), meta,
#: indexed_user, indexed_until_ms, n_set, n_set name/value pairs, then names to unset.
#: Returns 0 when gone or expired, 1 when applied, {user} when the user's index
#: must first be raised to cover the new expiry (nothing written then).
_UPDATE = """
local key = KEYS[1]
local stored = redis.call('HMGET', key, 'expires', 'user_id', 'index_until')
if not stored[1] or tonumber(stored[1]) <= tonumber(ARGV[1]) then return 0 end
local user = stored[2]
if ARGV[5] == '=' then user = ARGV[6] elseif ARGV[5] == '-' then user = false end
local index_until = false
if user then
  local bound = 0
  if user == stored[2] and stored[3] then bound = tonumber(stored[3]) end
  if user == ARGV[9] then bound = math.max(bound, tonumber(ARGV[10])) end
  if tonumber(ARGV[3]) > bound then return {user} end
  index_until = bound
end
local n = tonumber(ARGV[11])
local first_unset = 12 + 2 * n
for i = 12, first_unset - 1, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
for i = first_unset, #ARGV do redis.call('HDEL', key, ARGV[i]) end
redis.call('HSET', key, 'expires', ARGV[2], 'updated', ARGV[4])
if user then
  redis.call('HSET', key, 'user_id', user, 'index_until', string.format('%d', index_until))
else
  redis.call('HDEL', key, 'user_id', 'index_until')
end
if ARGV[7] == '=' then redis.call('HSET', key, 'meta', ARGV[8])
elseif ARGV[7] == '-' then redis.call('HDEL', key, 'meta') end
redis.call('PEXPIREAT', key, ARGV[3])
return 1
"""

#: TAKE: remove the named items of a live session and return those that were there.
#: KEYS[1] session; ARGV: now, then field names. Returns false when gone or expired,
#: else a flat list of name, value pairs.
_TAKE = """
local expires = redis.call('HGET', KEYS[1], 'expires')
if not expires or tonumber(expires) <= tonumber(ARGV[1]) then return false end
local found = {}
for i = 2, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    redis.call('HDEL', KEYS[1], ARGV[i])
    found[#found + 1] = ARGV[i]
    found[#found + 1] = value
  end
end
return found
"""

#: DESTROY: delete a session and return its user (to drop its index entry), or false.
_DESTROY = """
local user = redis.call('HGET', KEYS[1], 'user_id')
redis.call('DEL', KEYS[1])
return user
"""

#: DESTROY_IF_USER: delete a session only if it (still) belongs to ARGV[1].
_DESTROY_IF_USER = """
if redis.call('HGET', KEYS[1], 'user_id') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: INDEX_ADD: drop entries past their score, raise (never lower) one entry, and make
#: the index expire with its highest score. KEYS[1] user index; ARGV: now_ms,
#: member, until_ms.
_INDEX_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[2])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return 1
"""

#: INDEX_MEMBERS: drop entries past their score and return the rest. KEYS[1] user
#: index; ARGV: now_ms.
_INDEX_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


#: HIT: count one hit and make the counter expire when its window ends.
#: KEYS[1] counter; ARGV: window end (ms).
_HIT = """
local hits = redis.call('INCR', KEYS[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return hits
"""


def _text(value: str | bytes) -> str:
    """Replies are bytes unless the client decodes responses; the store works with both."""
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    """Whole milliseconds, rounded up so that Redis never deletes a session early."""
    return math.ceil(seconds * 1000)


def _num(seconds: float) -> str:
    return repr(float(seconds))


def _client_options(timeout: float) -> dict[str, Any]:
    """Short socket timeouts and one immediate retry on a broken connection only.

    The retry lets a pooled connection that died with a server restart reconnect
    within the same call; timeouts are not retried, so a hung server costs one
    ``timeout``, not eleven.
    """
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "decode_responses": True,
        "client_name": "tornado-sessions",
    }


class RedisStore(Store):
    """Sessions in Redis hashes with native expiry, on one server or a Redis Cluster.

    ``target`` is a URL (``redis://``, ``rediss://``, or ``redis+cluster://`` /
    ``rediss+cluster://`` naming any node of a cluster) or a ready
    ``redis.asyncio.Redis`` / ``redis.asyncio.cluster.RedisCluster``. A client built
    from a URL gets ``timeout``-second socket timeouts and is closed by
    :meth:`close`; a client passed in stays the caller's (its own timeouts and
    retries apply, so give it short ones). Needs Redis 6.2 or later (``ZADD GT``).

    ``prefix`` starts every key, so several apps (or tests) can share a database;
    it may not contain ``{`` or ``}``, which would change the hash tags.
    """

    name = "redis"

    def __init__(
        self,
        target: str | Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int | None = None,
        index_slack: float = DEFAULT_INDEX_SLACK,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the key prefix may not contain '{{' or '}}': {prefix!r}")
        if timeout <= 0 or index_slack < 0:
            raise ValueError("timeout must be positive and index_slack not negative")
        self.prefix = prefix
        self.index_slack = float(index_slack)
        self._owned = isinstance(target, str)
        self.client: Redis | RedisCluster = (
            self._client_from_url(target, timeout, max_connections) if isinstance(target, str) else target
        )
        if not isinstance(self.client, Redis | RedisCluster):
            raise TypeError(
                "RedisStore needs a redis:// URL or a redis.asyncio Redis or RedisCluster client, "
                f"not {type(target).__name__}"
            )
        self.cluster = isinstance(self.client, RedisCluster)
        self.name = "redis-cluster" if self.cluster else "redis"
        #: A cluster client discovers the cluster before its first command (see ensure_connected).
        self._lifecycle = Lifecycle(self.name, self._discover if self.cluster else None)
        script = self.client.register_script
        self._create, self._update, self._take = script(_CREATE), script(_UPDATE), script(_TAKE)
        self._destroy, self._destroy_if_user = script(_DESTROY), script(_DESTROY_IF_USER)
        self._index_add, self._index_members = script(_INDEX_ADD), script(_INDEX_MEMBERS)
        self._hit = script(_HIT)

    @staticmethod
    def _client_from_url(url: str, timeout: float, max_connections: int | None) -> Redis | RedisCluster:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        options = _client_options(timeout)
        if max_connections is not None:
            options["max_connections"] = max_connections
        if scheme in ("redis+cluster", "rediss+cluster"):
            plain = urlunsplit(parts._replace(scheme=scheme.removesuffix("+cluster")))
            return RedisCluster.from_url(plain, **options)
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r}")
        # A burst of requests waits (up to the timeout) for one of the pool's connections
        # instead of failing at once with "Too many connections" (a 503 for nothing).
        options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        pool = WaitingConnectionPool.from_url(url, timeout=timeout, **options)
        return Redis(connection_pool=pool)

    async def ensure_connected(self) -> None:
        """Let a cluster client discover the cluster once, before any other command.

        redis-py discovers the cluster lazily on the first command. When many commands
        start at once on a fresh client (a burst of requests right after start-up),
        that discovery resets connections other commands are still opening, and some
        of those commands fail. One discovery first avoids it. A no-op for a
        standalone server and after the first success. Every store method calls it;
        code of its own that shares :attr:`client` should too. Driver errors are
        raised as they are; a closed store raises StoreError.
        """
        await self._lifecycle.ensure_ready()

    async def _discover(self) -> None:
        assert isinstance(self.client, RedisCluster)
        await self.client.initialize()

    # -- capabilities ----------------------------------------------------------

    @property
    def expires_natively(self) -> bool:
        """Redis deletes each session at its ``PEXPIREAT`` deadline."""
        return True

    def describe(self) -> str:
        kind = "Redis Cluster" if self.cluster else "Redis"
        return f"{self.name} ({kind}, prefix {self.prefix!r}; expires natively via PEXPIREAT)"

    # -- keys -------------------------------------------------------------------

    def session_key(self, key: str) -> str:
        """The Redis key of a session hash (its hash tag is the whole session key)."""
        return f"{self.prefix}{{{key}}}"

    def user_key(self, user_id: str) -> str:
        """The Redis key of a user's index (tagged by the user, so one slot per user)."""
        return f"{self.prefix}user:{{{user_id}}}"

    def counter_key(self, name: str, slot: str) -> str:
        """The Redis key of a counter in one window (tagged by the name: one key, one slot)."""
        return f"{self.prefix}hits:{slot}:{{{name}}}"

    # -- Store interface -------------------------------------------------------

    @_errors.ready_first
    async def load(self, key: str) -> Record | None:
        # A plain HGETALL: one round trip, no script; expiry is checked here.
        fields = await self.client.hgetall(self.session_key(key))
        if not fields:
            return None
        record = self._record(fields)
        if record is None or record.expires <= self.clock():
            return None
        return record

    @_errors.ready_first
    async def create(self, key: str, record: Record) -> None:
        fields: list[str] = [
            "created", _num(record.created), "updated", _num(record.updated), "expires", _num(record.expires),
        ]  # fmt: skip
        if record.user_id is not None:
            until = await self._raise_index(record.user_id, key, record.expires)
            fields += ["user_id", record.user_id, "index_until", str(until)]
        if record.meta:
            fields += ["meta", json.dumps(record.meta, ensure_ascii=False)]
        fields += ["kind", record.kind]
        for name, value in record.data.items():
            fields += [_DATA + name, value]
        await self._create(keys=[self.session_key(key)], args=[_ms(record.expires), *fields])

    @_errors.ready_first
    async def update(
        self,
        key: str,
        *,
        set_items: Mapping[str, str],
        unset_keys: Iterable[str],
        expires: float,
        updated: float,
        user_id: str | None = KEEP,
        meta: Mapping[str, str] = KEEP,
    ) -> bool:
        unset = [_DATA + name for name in unset_keys]
        dropped = set(unset)
        pairs = [(_DATA + name, value) for name, value in set_items.items() if _DATA + name not in dropped]
        if user_id is KEEP:
            user_args = ["", ""]
        else:
            user_args = ["-", ""] if user_id is None else ["=", user_id]
        if meta is KEEP:
            meta_args = ["", ""]
        else:
            meta_args = ["=", json.dumps(dict(meta), ensure_ascii=False)] if meta else ["-", ""]
        tail = [str(len(pairs)), *(part for pair in pairs for part in pair), *unset]
        return await self._apply(key, expires, updated, [*user_args, *meta_args], tail)

    @_errors.ready_first
    async def take(self, key: str, names: Iterable[str]) -> dict[str, str] | None:
        wanted = list(dict.fromkeys(names))
        reply = await self._take(
            keys=[self.session_key(key)], args=[_num(self.clock()), *(_DATA + n for n in wanted)]
        )
        if reply is None:
            return None
        flat = [_text(part) for part in reply]
        return {flat[i][len(_DATA) :]: flat[i + 1] for i in range(0, len(flat), 2)}

    @_errors.ready_first
    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        return await self._apply(key, expires, updated, ["", "", "", ""], ["0"])

    @_errors.ready_first
    async def destroy(self, key: str) -> None:
        user = await self._destroy(keys=[self.session_key(key)])
        if user:
            # Only after the session is gone. Keys are hashes of fresh 256-bit IDs and
            # never created again once destroyed, so no later session loses its entry.
            await self.client.zrem(self.user_key(_text(user)), key)

    @_errors.ready_first
    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        """Delete each indexed session that still belongs to the user, one slot at a time.

        Each delete re-checks the session's own ``user_id`` in its script, so a
        session that changed user meanwhile is spared. A session given to this user
        after the index was read is not deleted: it counts as logged in afterwards.
        """
        members = [key for key in await self._members(user_id) if key != keep]
        if not members:
            return 0
        results = [
            await self._destroy_if_user(keys=[self.session_key(member)], args=[user_id]) for member in members
        ]
        deleted = [member for member, result in zip(members, results, strict=True) if int(result)]
        if deleted:
            await self.client.zrem(self.user_key(user_id), *deleted)
        return len(deleted)

    @_errors.ready_first
    async def list_user(self, user_id: str, *, kind: str | None = None) -> list[tuple[str, Record]]:
        members = await self._members(user_id)
        if not members:
            return []
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(self.session_key(member))
        replies: Sequence[Mapping[Any, Any]] = await pipe.execute()
        now = self.clock()
        items: list[tuple[str, Record]] = []
        for member, fields in zip(members, replies, strict=True):
            record = self._record(fields) if fields else None
            if record is not None and record.user_id == user_id and record.expires > now and kind in (None, record.kind):
                items.append((member, record))
        items.sort(key=lambda item: (item[1].created, item[1].updated, item[0]), reverse=True)
        return items

    @_errors.ready_first
    async def hit(self, name: str, window: float) -> tuple[int, float]:
        """One script: ``INCR`` and ``PEXPIREAT`` at the window's end, atomic on the server."""
        slot, end = window_bounds(self.clock(), window)
        hits = await self._hit(keys=[self.counter_key(name, slot)], args=[_ms(end)])
        return int(hits), end

    @_errors.ready_first
    async def reset_hits(self, name: str, window: float) -> None:
        slot, _ = window_bounds(self.clock(), window)
        await self.client.delete(self.counter_key(name, slot))

    async def prune(self) -> int:
        """Nothing to do: Redis deletes expired sessions and counters itself (reads ignore them before)."""
        return 0

    @_errors.ready_first
    async def alive(self, keys: Iterable[str]) -> set[str]:
        """One pipeline of ``HGET <session> expires`` (on a cluster, one per node), checked
        against the store's clock like :meth:`load`."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for key in wanted:
            pipe.hget(self.session_key(key), "expires")
        replies: Sequence[Any] = await pipe.execute()
        now = self.clock()
        return {key for key, expires in zip(wanted, replies, strict=True) if expires is not None and float(expires) > now}

    def event_bus(self) -> EventBus:
        """Pub/sub on the channel ``<prefix>events``: PUBLISH/SUBSCRIBE, or sharded
        (SPUBLISH/SSUBSCRIBE) on a cluster (:mod:`sessions.buses.redis`)."""
        from ..buses.redis import RedisBus

        return RedisBus(self.client, f"{self.prefix}events", ready=self.ensure_connected)

    @_errors.ready_first
    async def setup(self) -> None:
        """Check the server answers; scripts load themselves on first use."""
        await self.client.ping()

    @_errors.ready_first
    async def ping(self) -> None:
        """Every primary must answer: with one of a cluster's masters down, the sessions
        in its slots cannot be served, so the store is not ready (a plain PING reaches
        one node only and would still say yes)."""
        if isinstance(self.client, RedisCluster):
            await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.client.ping()

    async def close(self) -> None:
        """Close the client if this store built it (a client passed in stays open); later calls fail."""
        self._lifecycle.close()
        if self._owned:
            self._owned = False
            await self.client.aclose()

    # -- internals -------------------------------------------------------------

    async def _apply(self, key: str, expires: float, updated: float, modes: list[str], tail: list[str]) -> bool:
        """Run the UPDATE script, raising the user's index first whenever it asks.

        ``modes`` are the user and meta mode/value pairs; ``tail`` the item count,
        pairs and names to unset. The script asks (returns ``[user]``) when the
        session's new expiry or new user is not yet covered by an index entry.
        """
        indexed = ["", "0"]
        head = [_num(self.clock()), _num(expires), str(_ms(expires)), _num(updated)]
        for _ in range(_INDEX_ATTEMPTS):
            result = await self._update(keys=[self.session_key(key)], args=[*head, *modes, *indexed, *tail])
            if not isinstance(result, list):
                return bool(result)
            user = _text(result[0])
            until = await self._raise_index(user, key, expires)
            indexed = [user, str(until)]
        raise StoreError(f"redis update of a session kept changing user ({_INDEX_ATTEMPTS} attempts)")

    async def _raise_index(self, user_id: str, key: str, expires: float) -> int:
        """Make the user's index hold ``key`` until ``expires`` + slack; return that bound (ms)."""
        until = _ms(expires + self.index_slack)
        now_ms = math.floor(self.clock() * 1000)
        await self._index_add(keys=[self.user_key(user_id)], args=[now_ms, key, until])
        return until

    async def _members(self, user_id: str) -> list[str]:
        reply = await self._index_members(
            keys=[self.user_key(user_id)], args=[math.floor(self.clock() * 1000)]
        )
        return [_text(member) for member in reply]

    @staticmethod
    def _record(fields: Mapping[Any, Any]) -> Record | None:
        """Build a Record from a hash; None for a hash without bookkeeping fields."""
        data: dict[str, str] = {}
        other: dict[str, str] = {}
        for raw_name, raw_value in fields.items():
            name, value = _text(raw_name), _text(raw_value)
            if name.startswith(_DATA):
                data[name[len(_DATA) :]] = value
            else:
                other[name] = value
        if "expires" not in other:
            return None
        meta = other.get("meta")
        kind, stored_meta = split_legacy_kind(other.get("kind"), json.loads(meta) if meta else {})
        return Record(
            data=data,
            created=float(other.get("created", "0")),
            updated=float(other.get("updated", "0")),
            expires=float(other["expires"]),
            user_id=other.get("user_id"),
            meta=stored_meta,
            kind=kind,
        )

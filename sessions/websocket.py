"""Websocket clients authenticated by the session cookie, and closed when it ends.

Usage::

    manager = SessionManager(store, keys)
    registry = SocketRegistry.attach(manager)          # one per application

    class Live(SessionWebSocketMixin, tornado.websocket.WebSocketHandler):
        def open(self) -> None:
            self.send_json({"type": "hello", "user": self.user_id})

        def on_json(self, data: dict[str, Any]) -> None:
            if data.get("type") == "ping":
                self.send_json({"type": "pong"})

    app = tornado.web.Application(
        [(r"/ws", Live)], session_manager=manager, socket_registry=registry,
        websocket_max_message_size=4096,
    )
    ...
    await registry.close()                              # on shutdown

The handshake (``prepare()``, which Tornado runs before the upgrade) checks
``Origin`` and loads the session from the cookie through the manager; it refuses
with 403 a foreign origin and a missing, tampered, expired or anonymous (no
``user_id``) session, and with 429 a socket over one of the caps below. It never
writes a session and never sets a cookie (the one store write a handshake can cause
is the manager deleting an expired session it found, as any request does).

The :class:`SocketRegistry` tracks open sockets by session and by user. As a
:class:`~sessions.manager.SessionListener` it closes a session's sockets with code
1008 the moment the session ends in this process (logout, revoke, log out
everywhere, password change, expiry seen by a request), and tells the deployment's
other processes through the store's event bus (:mod:`sessions.bus`: Redis pub/sub,
PostgreSQL LISTEN/NOTIFY, polled tables elsewhere), which close theirs. Notices for
a user and broadcasts travel the same way. As a safety net (a bus outage, an expiry
nobody saw) every open socket's session is re-checked every ``recheck_interval``
seconds (30 by default), many sessions per store round trip (``Store.alive``); after
the bus reconnects, at once.

Idle expiry: the welcome message may carry :meth:`SessionWebSocketMixin.session_deadlines`;
``websocket_expiry_warning`` seconds (default 120) before the idle deadline the
client gets ``{"type": "expiring", "idle_deadline", "absolute_deadline"}``; a
``{"type": "activity"}`` from it touches the session (rate-limited, never past the
absolute deadline) and is answered ``{"type": "deadlines", ...}``; at the deadline
the socket closes with 1008 "session expired".

Application settings read here:

``socket_registry``
    The :class:`SocketRegistry` (required).
``websocket_allowed_origins``
    Origins allowed to connect, like ``["https://example.com"]``. Default (unset):
    the request's own ``Host`` only (Tornado's rule). Requests without an ``Origin``
    header (non-browser clients) are not origin-checked.
``websocket_message_rate`` / ``websocket_message_burst``
    Messages per second per connection (default 20) and the burst allowed above it
    (default 40); a client over it is closed with 1008.
``websocket_max_message_size``
    Tornado's own limit (default 10 MiB: set a small one); a larger message is
    closed with 1009 by Tornado.
``websocket_max_per_session`` / ``websocket_max_per_user`` / ``websocket_max_per_address``
    Open sockets allowed per session (default 8), per user (default 32) and per
    client address (``request.remote_ip``; default 64); ``None`` for no cap. A socket
    counts from the moment its handshake is accepted (the address from the start of
    the handshake) until it closes, so parallel handshakes cannot overshoot: the slot
    is taken synchronously, before the handshake awaits anything, and given back when
    the handshake is refused or the socket closes. Over a cap the handshake gets
    **429** (the reason in the status line and the log message) and a
    ``websocket_refused`` security log line.
``websocket_max_write_buffer``
    Outgoing data a socket may have waiting for a slow (or non-reading) client,
    default 1 MiB; ``None`` for no bound. A message that would go over it is dropped
    and the socket closed with **1013** ("slow consumer": the client may reconnect
    later, unlike 1008) and a ``websocket_slow_consumer`` security log line. Waiting
    data is the bytes in the socket's ``IOStream`` write buffer that the kernel has not
    taken (:func:`stream_backlog`: Tornado has no public count, so this reads its
    private buffer in that one function, pinned by a test) plus :data:`WRITE_OVERHEAD`
    for each ``write_message`` whose future has not resolved yet (the Task and futures
    Tornado keeps per unfinished write: a flood of small messages is bounded too).
``websocket_ping_interval`` / ``websocket_ping_timeout``
    Keep-alive pings every ``interval`` seconds (unset or 0: none); a socket whose
    oldest unanswered ping is ``timeout`` seconds old (default: the interval; 0: never)
    is closed with 1000 "ping timed out". Tornado's names, but the mixin sends the
    pings itself (Tornado's own loop is switched off): each ping carries 8 random
    bytes, and only a pong echoing the payload of a ping this server sent counts as
    an answer (RFC 6455 5.5.3 lets a pong answer the latest of several pings). Tornado
    counts any pong, so a client that never reads could keep itself alive with
    unsolicited pongs. The timeout may be longer than the interval here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from tornado.concurrent import Future
from tornado.escape import json_encode, utf8
from tornado.web import HTTPError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .bus import BusEvent, EventBus, MalformedEvent
from .events import audit_log, log_event, security_log, short_key
from .manager import SessionManager
from .session import Session
from .stores.base import StoreError
from .tornado import CookieReaderMixin, manager_from_settings
from .tornado_internals import stream_backlog

log = logging.getLogger("sessions")

#: Close codes (RFC 6455 section 7.4.1; 1013 from the IANA registry).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

#: The safety-net re-check of every open socket's session (events arrive through the
#: store's bus; this catches what a bus outage may have missed).
DEFAULT_RECHECK_INTERVAL = 30.0
#: Session keys asked about in one store round trip by the re-check.
RECHECK_BATCH = 500
#: Seconds before the idle deadline that a socket is told ``expiring`` (default).
DEFAULT_EXPIRY_WARNING = 120.0
DEFAULT_MESSAGE_RATE = 20.0
DEFAULT_MESSAGE_BURST = 40
DEFAULT_MAX_PER_SESSION = 8
DEFAULT_MAX_PER_USER = 32
DEFAULT_MAX_PER_ADDRESS = 64
DEFAULT_MAX_WRITE_BUFFER = 1 << 20
#: Bytes counted per waiting outgoing message on top of its own: Tornado keeps a Task,
#: a wrapper coroutine and two futures for each unfinished write (about 1.8 KB measured
#: with tracemalloc on CPython 3.11), so a flood of small messages is bounded too.
WRITE_OVERHEAD = 2048
#: Random bytes in each keep-alive ping.
PING_PAYLOAD_BYTES = 8


class TrackedSocket(Protocol):
    """What the registry needs of a socket (``SessionWebSocketMixin`` provides it)."""

    session_key: str
    user_id: str
    session_created: float

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...

    def send_json(self, payload: Mapping[str, Any]) -> bool: ...


class Slot:
    """One socket counted against the caps, from its handshake until it closes.

    Taken by :meth:`SocketRegistry.reserve` (the client address) and
    :meth:`SocketRegistry.claim` (its session and user); :meth:`release` (idempotent)
    gives it back.
    """

    __slots__ = ("registry", "address", "key", "user_id", "released")

    def __init__(self, registry: SocketRegistry, address: str) -> None:
        self.registry, self.address = registry, address
        self.key: str | None = None
        self.user_id: str | None = None
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.registry._release(self)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per message."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "clock")

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a trailing slash."""
    return origin.strip().rstrip("/").lower()


class SocketRegistry:
    """The open session sockets of one application, by session key and by user.

    Attach it to the manager (:meth:`attach`) so that sessions ended in this process
    close their sockets at once; its re-check (every ``recheck_interval`` seconds,
    while any socket is open) catches sessions ended by other processes or expired.
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
        bus: EventBus | None = None,
    ) -> None:
        if recheck_interval <= 0:
            raise ValueError("recheck_interval must be positive")
        self.manager = manager
        self.recheck_interval = recheck_interval
        #: Session events to and from the deployment's other processes (the store's own
        #: bus unless given: :meth:`Store.event_bus`).
        self.bus: EventBus = bus if bus is not None else manager.store.event_bus()
        self._bus_started = False
        self._by_key: dict[str, set[TrackedSocket]] = {}
        self._by_user: dict[str, set[TrackedSocket]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False
        # The caps' counts: slots (handshakes accepted, sockets not yet closed) by
        # client address, session key and user.
        self._slots_by_address: dict[str, set[Slot]] = {}
        self._slots_by_key: dict[str, set[Slot]] = {}
        self._slots_by_user: dict[str, set[Slot]] = {}

    @classmethod
    def attach(
        cls, manager: SessionManager, *, recheck_interval: float = DEFAULT_RECHECK_INTERVAL, bus: EventBus | None = None
    ) -> SocketRegistry:
        """A registry listening to ``manager``'s session events (and, through the bus, to
        those of every other process of the deployment)."""
        registry = cls(manager, recheck_interval=recheck_interval, bus=bus)
        manager.listeners.append(registry)
        return registry

    async def start(self) -> None:
        """Listen to the other processes' events (the first socket starts it too)."""
        if self._bus_started or self._closed:
            return
        self._bus_started = True
        await self.bus.start(self._deliver, self._resync)
        log.info("session events between processes: %s", self.bus.describe())

    def detach(self) -> None:
        """Stop listening to the manager (``close()`` does this too)."""
        with contextlib.suppress(ValueError):
            self.manager.listeners.remove(self)

    # -- membership --------------------------------------------------------------------
    def add(self, socket: TrackedSocket) -> None:
        if self._closed:
            socket.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        self._by_key.setdefault(socket.session_key, set()).add(socket)
        self._by_user.setdefault(socket.user_id, set()).add(socket)
        if not self._bus_started:
            self._spawn(self.start())
        self._start()

    def discard(self, socket: TrackedSocket) -> None:
        for index, name in ((self._by_key, socket.session_key), (self._by_user, socket.user_id)):
            group = index.get(name)
            if group is not None:
                group.discard(socket)
                if not group:
                    del index[name]

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_key.values())

    def sockets(self) -> list[TrackedSocket]:
        """Every open socket (a copy)."""
        return [socket for group in self._by_key.values() for socket in group]

    def sockets_of_session(self, key: str) -> list[TrackedSocket]:
        return list(self._by_key.get(key, ()))

    def sockets_of_user(self, user_id: str) -> list[TrackedSocket]:
        return list(self._by_user.get(user_id, ()))

    # -- the caps ----------------------------------------------------------------------
    def reserve(self, address: str, limit: int | None) -> Slot | None:
        """A slot for one more socket from ``address``; None when it has ``limit`` already.

        Synchronous: call it before the handshake awaits anything.
        """
        group = self._slots_by_address.get(address)
        if limit is not None and group is not None and len(group) >= limit:
            return None
        slot = Slot(self, address)
        self._slots_by_address.setdefault(address, set()).add(slot)
        return slot

    def claim(self, slot: Slot, key: str, user_id: str, *, per_session: int | None,
              per_user: int | None) -> str | None:
        """Count ``slot`` for its session and user too; what is full ("session" or
        "user") instead when one of them has its cap already (the slot is then unchanged)."""
        for scope, index, name, limit in (
            ("session", self._slots_by_key, key, per_session),
            ("user", self._slots_by_user, user_id, per_user),
        ):
            group = index.get(name)
            if limit is not None and group is not None and slot not in group and len(group) >= limit:
                return scope
        self._unindex(slot)
        slot.key, slot.user_id = key, user_id
        self._slots_by_key.setdefault(key, set()).add(slot)
        self._slots_by_user.setdefault(user_id, set()).add(slot)
        self._slots_by_address.setdefault(slot.address, set()).add(slot)
        return None

    def slot_count(self, *, address: str | None = None, key: str | None = None, user_id: str | None = None) -> int:
        """Slots held by one address, session or user (the one given); all slots if none."""
        for index, name in ((self._slots_by_address, address), (self._slots_by_key, key),
                            (self._slots_by_user, user_id)):
            if name is not None:
                return len(index.get(name, ()))
        return sum(len(group) for group in self._slots_by_address.values())

    def _release(self, slot: Slot) -> None:
        self._unindex(slot)

    def _unindex(self, slot: Slot) -> None:
        for index, name in ((self._slots_by_address, slot.address), (self._slots_by_key, slot.key),
                            (self._slots_by_user, slot.user_id)):
            if name is None:
                continue
            group = index.get(name)
            if group is not None:
                group.discard(slot)
                if not group:
                    del index[name]

    # -- sending -----------------------------------------------------------------------
    def send_to_user(self, user_id: str, payload: Mapping[str, Any], *, exclude_key: str | None = None) -> int:
        """Send ``payload`` to the user's sockets (except one session's) in every process;
        how many of this process's got it."""
        self._publish(BusEvent("notice", user_id=user_id, keep=exclude_key, payload=dict(payload)))
        return self._send_to_user_here(user_id, payload, exclude_key)

    def broadcast(self, payload: Mapping[str, Any], *, channel: str = "broadcast") -> int:
        """Send ``payload`` to every open socket of the deployment; how many of this
        process's got it."""
        self._publish(BusEvent("broadcast", channel=channel, payload=dict(payload)))
        return self._send(self.sockets(), payload)

    def _send_to_user_here(self, user_id: str, payload: Mapping[str, Any], exclude_key: str | None) -> int:
        return self._send(
            (s for s in self.sockets_of_user(user_id) if exclude_key is None or s.session_key != exclude_key), payload
        )

    @staticmethod
    def _send(sockets: Iterable[TrackedSocket], payload: Mapping[str, Any]) -> int:
        return sum(1 for socket in sockets if socket.send_json(payload))

    # -- closing -----------------------------------------------------------------------
    def end(self, socket: TrackedSocket, reason: str, code: int = CLOSE_POLICY_VIOLATION) -> None:
        """Forget ``socket`` and close it (1008 by default)."""
        self.discard(socket)
        log_event(
            audit_log, logging.INFO, "websocket_closed", reason=reason, code=code,
            key=short_key(socket.session_key), user=socket.user_id,
        )
        try:
            socket.close(code, reason)
        except Exception:  # one broken socket must not keep the others open
            log.exception("closing a websocket failed")

    # -- SessionListener: events of this process, told to the others too -------------
    def session_ended(self, key: str) -> None:
        self._end_session_here(key)
        self._publish(BusEvent("session_ended", key=key))

    def session_renamed(self, old_key: str, new_key: str) -> None:
        self._rename_here(old_key, new_key)
        self._publish(BusEvent("session_renamed", key=old_key, new_key=new_key))

    def user_sessions_ended(self, user_id: str, keep: str | None) -> None:
        self._end_user_here(user_id, keep)
        self._publish(BusEvent("user_sessions_ended", user_id=user_id, keep=keep))

    # -- the bus -------------------------------------------------------------------------
    def _publish(self, event: BusEvent) -> None:
        if not self._closed:
            self._spawn(self._publish_now(event))

    async def _publish_now(self, event: BusEvent) -> None:
        try:
            await self.bus.publish(event)
        except MalformedEvent as exc:  # too large: this process's sockets were told already
            log.warning("session event not sent to other processes: %s", exc)
        except Exception:  # a store outage: the other processes' re-check catches up
            log.exception("publishing a %s session event failed", event.kind)

    def _deliver(self, event: BusEvent) -> None:
        """An event from another process: the same effect here, without telling anyone."""
        if event.kind == "session_ended" and event.key:
            self._end_session_here(event.key)
        elif event.kind == "session_renamed" and event.key and event.new_key:
            self._rename_here(event.key, event.new_key)
        elif event.kind == "user_sessions_ended" and event.user_id:
            self._end_user_here(event.user_id, event.keep)
        elif event.kind == "notice" and event.user_id and event.payload is not None:
            self._send_to_user_here(event.user_id, event.payload, event.keep)
        elif event.kind == "broadcast" and event.payload is not None:
            self._send(self.sockets(), event.payload)

    def _resync(self) -> None:
        """The bus reconnected and may have missed events: check every socket once."""
        self._spawn(self.recheck())

    def _end_session_here(self, key: str) -> None:
        for socket in self.sockets_of_session(key):
            self.end(socket, "session ended")

    def _rename_here(self, old_key: str, new_key: str) -> None:
        slots = self._slots_by_key.pop(old_key, set())
        for slot in slots:  # the sockets still count for their (renamed) session
            slot.key = new_key
        if slots:
            self._slots_by_key.setdefault(new_key, set()).update(slots)
        moved = self._by_key.pop(old_key, set())
        if not moved:
            return
        for socket in moved:
            socket.session_key = new_key
        self._by_key.setdefault(new_key, set()).update(moved)
        # A login as another user in the same browser renames the session too: make
        # sure the sockets still belong to the session's user.
        self._spawn(self._check_session(new_key))

    def _end_user_here(self, user_id: str, keep: str | None) -> None:
        for socket in self.sockets_of_user(user_id):
            if keep is None or socket.session_key != keep:
                self.end(socket, "session ended")

    # -- the re-check ------------------------------------------------------------------
    async def recheck(self) -> int:
        """Close the sockets whose session the store no longer holds or that passed their
        absolute deadline; how many were closed. One store round trip per
        :data:`RECHECK_BATCH` sessions (``Store.alive``), not one per socket."""
        keys = list(self._by_key)
        closed = 0
        for start in range(0, len(keys), RECHECK_BATCH):
            batch = keys[start : start + RECHECK_BATCH]
            try:
                alive = await self.manager.store.alive(batch)
            except StoreError as exc:  # keep the sockets; the next round tries again
                log_event(log, logging.WARNING, "websocket_recheck_failed", sessions=len(batch), error=str(exc))
                continue
            now = self.manager.clock()
            for key in batch:
                for socket in self.sockets_of_session(key):  # as they are now, after the await
                    why = None if key in alive else "session ended"
                    if why is None and socket_absolute_deadline(socket, self.manager) <= now:
                        why = "session expired"
                    if why is not None:
                        self.end(socket, why)
                        closed += 1
        return closed

    async def _check_session(self, key: str) -> int:
        try:
            record = await self.manager.store.load(key)
        except StoreError as exc:  # keep the sockets; the next round tries again
            log_event(log, logging.WARNING, "websocket_recheck_failed", key=short_key(key), error=str(exc))
            return 0
        now = self.manager.clock()
        reason = None
        if record is None:
            reason = "session ended"
        elif record.expires <= now or record.created + self.manager.options.absolute_timeout <= now:
            reason = "session expired"
        closed = 0
        for socket in self.sockets_of_session(key):  # as they are now, after the await
            why = reason
            if why is None and record is not None and record.user_id != socket.user_id:
                why = "session changed user"
            if why is not None:
                self.end(socket, why)
                closed += 1
        return closed

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._by_key and not self._closed:
            await asyncio.sleep(self.recheck_interval)
            try:
                await self.recheck()
            except Exception:  # the loop must outlive one bad round
                log.exception("websocket re-check failed")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop: the periodic re-check will do it
            coro.close()
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop the re-check, close every socket (1001 by default) and stop listening."""
        self._closed = True
        self.detach()
        tasks = [t for t in (self._task, *self._pending) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for socket in self.sockets():
            self.end(socket, reason, code)
        await self.bus.close()


def activity_touch_interval(manager: SessionManager) -> float:
    """Least seconds between two store touches caused by a socket's ``activity`` messages."""
    options = manager.options
    return max(1.0, min(options.touch_after, options.idle_timeout / 10))


def socket_absolute_deadline(socket: TrackedSocket, manager: SessionManager) -> float:
    """When the socket's session reaches its absolute timeout (no store read needed)."""
    created = getattr(socket, "session_created", None)
    return float("inf") if created is None else created + manager.options.absolute_timeout


class SessionWebSocketMixin(CookieReaderMixin, WebSocketHandler):
    """A ``WebSocketHandler`` whose handshake requires a logged-in session.

    After ``prepare()`` (the handshake), ``self.session`` is the session (read it;
    changes are never saved from a socket), ``self.session_key`` its store key and
    ``self.user_id`` its user. Messages go through a per-connection rate limit, then
    :meth:`on_session_message`, which by default parses JSON objects and calls
    :meth:`on_json` (malformed input gets an ``{"type": "error"}`` message).

    The limits (module docstring, application settings): the socket caps per session
    (``websocket_max_per_session``, default 8), per user (``websocket_max_per_user``,
    32) and per client address (``websocket_max_per_address``, 64), refused with 429
    at the handshake; the bound on data waiting for the client
    (``websocket_max_write_buffer``, 1 MiB), over which the socket closes with 1013
    "slow consumer" (every ``write_message`` is counted, ``send_json`` included); and
    keep-alive pings (``websocket_ping_interval`` / ``websocket_ping_timeout``) that
    only a pong echoing this server's ping answers.

    A subclass that overrides ``prepare``, ``on_finish``, ``on_connection_close`` or
    ``on_pong`` must call ``super()``: the slot is taken in ``prepare``, registration
    and the pings start in ``on_finish`` (status 101), removal and the slot's release
    happen in ``on_finish`` (refused handshake) and ``on_connection_close``, and pongs
    are matched in ``on_pong``.
    """

    session_key: str
    user_id: str
    _ws_session: Session | None = None
    _bucket: TokenBucket | None = None
    _slot: Slot | None = None
    _keepalive_task: asyncio.Task[None] | None = None
    #: Payload -> loop time of the pings sent and not answered yet (oldest first).
    _pings: dict[bytes, float] | None = None
    _write_limit: int | None = DEFAULT_MAX_WRITE_BUFFER
    #: ``write_message`` futures not resolved yet.
    _unfinished_writes = 0
    session_created: float
    #: The session's idle deadline as last seen (handshake, activity, store re-read).
    _idle_deadline: float = 0.0
    _last_touch: float = 0.0
    _expiry_task: asyncio.Task[None] | None = None
    _deadline_moved: asyncio.Event | None = None

    @property
    def session_manager(self) -> SessionManager:
        return manager_from_settings(self.settings)

    @property
    def socket_registry(self) -> SocketRegistry:
        registry: SocketRegistry | None = self.settings.get("socket_registry")
        if registry is None:
            raise RuntimeError(
                "SessionWebSocketMixin needs the socket_registry application setting: "
                "socket_registry=SocketRegistry.attach(session_manager)"
            )
        return registry

    @property
    def session(self) -> Session:
        """The session the handshake loaded (read-only use: a socket saves nothing)."""
        if self._ws_session is None:
            raise RuntimeError("the session is loaded in prepare(), during the handshake")
        return self._ws_session

    def setting_limit(self, name: str, default: int | None) -> int | None:
        """An integer limit from the application settings (``None``: no limit)."""
        value = self.settings.get(name, default)
        return None if value is None else int(value)

    # -- keep-alive: Tornado's ping loop is off, ours matches the pongs ----------------
    @property
    def ping_interval(self) -> float | None:
        """None: Tornado's own ping loop (which counts any pong) stays off; the mixin
        pings every ``websocket_ping_interval`` seconds itself (:meth:`keepalive`)."""
        return None

    @property
    def ping_timeout(self) -> float | None:
        return None

    # -- the handshake -----------------------------------------------------------------
    def origin_allowed(self, origin: str) -> bool:
        """``websocket_allowed_origins`` when set; else the request's own Host only."""
        allowed: Iterable[str] | None = self.settings.get("websocket_allowed_origins")
        if allowed is not None:
            return normalize_origin(origin) in {normalize_origin(o) for o in allowed}
        host = self.request.headers.get("Host", "").lower()
        return bool(host) and urlsplit(origin.strip()).netloc.lower() == host

    def check_origin(self, origin: str) -> bool:
        """Tornado's own check after ``prepare()``: the same rule."""
        return self.origin_allowed(origin)

    def refuse(self, reason: str, *, security: bool = False, status: int = 403, **fields: Any) -> HTTPError:
        """Log a refused handshake (a security event when ``security``); the error to raise
        (403 unless ``status`` says otherwise)."""
        log_event(
            security_log if security else audit_log, logging.WARNING if security else logging.INFO,
            "websocket_refused", reason=reason, remote=self.request.remote_ip, path=self.request.path, **fields,
        )
        if status == 429:
            return HTTPError(429, reason, reason="Too Many Websockets")
        return HTTPError(status, reason)

    async def prepare(self) -> None:
        result = super().prepare()
        if result is not None:
            await result
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin):
            raise self.refuse("origin not allowed", security=True, origin=origin)
        registry = self.socket_registry  # a missing setting is a 500 before any store read
        # The address's slot first, before any await: handshakes in flight count too.
        per_address = self.setting_limit("websocket_max_per_address", DEFAULT_MAX_PER_ADDRESS)
        slot = registry.reserve(self.request.remote_ip or "", per_address)
        if slot is None:
            raise self.refuse("too many websockets from this address", security=True, status=429,
                              limit=per_address)
        self._slot = slot
        try:
            session = await self.session_manager.load(self)
        except StoreError as exc:
            log.error("session store failed on websocket handshake: %s", exc)
            raise HTTPError(503, reason="Session Store Unavailable") from exc
        if slot.released:  # the client left while the session loaded
            raise self.refuse("client went away")
        if session.key is None:
            raise self.refuse("no session")
        if session.user_id is None:
            raise self.refuse("not logged in", key=short_key(session.key))
        # Check and count in one synchronous step (no await in between).
        per_session = self.setting_limit("websocket_max_per_session", DEFAULT_MAX_PER_SESSION)
        per_user = self.setting_limit("websocket_max_per_user", DEFAULT_MAX_PER_USER)
        full = registry.claim(slot, session.key, session.user_id, per_session=per_session, per_user=per_user)
        if full is not None:
            raise self.refuse(
                f"too many websockets for this {full}", security=True, status=429,
                limit=per_session if full == "session" else per_user,
                key=short_key(session.key), user=session.user_id,
            )
        self._ws_session = session
        self.session_key = session.key
        self.user_id = session.user_id
        self.session_created = session.created
        self._idle_deadline = session.expires
        self._last_touch = session.last_access

    def on_finish(self) -> None:
        super().on_finish()
        if self.get_status() == 101 and self._ws_session is not None:
            self._write_limit = self.setting_limit("websocket_max_write_buffer", DEFAULT_MAX_WRITE_BUFFER)
            self.socket_registry.add(self)
            self._start_keepalive()
            self._deadline_moved = asyncio.Event()
            self._expiry_task = asyncio.get_running_loop().create_task(self._watch_expiry())
        else:
            self._release_slot()  # a refused handshake

    def on_connection_close(self) -> None:
        if self._ws_session is not None:
            self.socket_registry.discard(self)
        self._release_slot()
        for task in (self._keepalive_task, self._expiry_task):
            if task is not None:
                task.cancel()
        self._keepalive_task = self._expiry_task = None
        super().on_connection_close()

    def _release_slot(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

    # -- keep-alive ----------------------------------------------------------------------
    def _start_keepalive(self) -> None:
        interval = float(self.settings.get("websocket_ping_interval") or 0)
        if interval <= 0 or self._keepalive_task is not None:
            return
        timeout_setting = self.settings.get("websocket_ping_timeout")
        timeout = interval if timeout_setting is None else float(timeout_setting)
        self._pings = {}
        self._keepalive_task = asyncio.get_running_loop().create_task(self.keepalive(interval, timeout))

    async def keepalive(self, interval: float, timeout: float) -> None:
        """Ping every ``interval`` seconds; close the socket (1000 "ping timed out") once
        its oldest unanswered ping is ``timeout`` seconds old (never when 0)."""
        loop = asyncio.get_running_loop()
        pings = self._pings
        assert pings is not None
        next_ping = loop.time() + interval
        while True:
            wake = next_ping
            if pings and timeout > 0:
                wake = min(wake, next(iter(pings.values())) + timeout)
            await asyncio.sleep(max(0.0, wake - loop.time()))
            connection = self.ws_connection
            if connection is None or connection.is_closing():
                return
            now = loop.time()
            if pings and timeout > 0 and next(iter(pings.values())) + timeout <= now:
                log_event(
                    audit_log, logging.INFO, "websocket_ping_timeout",
                    key=short_key(self.session_key), user=self.user_id, remote=self.request.remote_ip,
                )
                self.socket_registry.end(self, "ping timed out", CLOSE_NORMAL)
                return
            if now >= next_ping:
                if timeout <= 0:
                    pings.clear()  # nothing times out: only the latest ping is kept
                payload = secrets.token_bytes(PING_PAYLOAD_BYTES)
                pings[payload] = now
                self.ping(payload)
                next_ping = now + interval

    def on_pong(self, data: bytes) -> None:
        """Only a pong echoing a ping this server sent (and not yet answered) counts; it
        answers that ping and every earlier one."""
        pings = self._pings
        sent = pings.get(data) if pings else None
        if pings is not None and sent is not None:
            for payload, when in list(pings.items()):
                if when > sent:
                    break
                del pings[payload]
        super().on_pong(data)

    # -- messages ----------------------------------------------------------------------
    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        if self.ws_connection is None:  # closing already
            return None
        bucket = self._bucket
        if bucket is None:
            bucket = self._bucket = TokenBucket(
                float(self.settings.get("websocket_message_rate", DEFAULT_MESSAGE_RATE)),
                float(self.settings.get("websocket_message_burst", DEFAULT_MESSAGE_BURST)),
            )
        if not bucket.take():
            log_event(
                security_log, logging.WARNING, "websocket_rate_limited",
                key=short_key(self.session_key), user=self.user_id, remote=self.request.remote_ip,
            )
            self.socket_registry.end(self, "message rate exceeded")
            return None
        try:
            result = self.on_session_message(message)
        except Exception:
            self._internal_error()
            return None
        return None if result is None else self._guard(result)

    async def _guard(self, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            self._internal_error()

    def _internal_error(self) -> None:
        """A bug in a message handler: log it, close with 1011 (Tornado would drop the
        connection without a close frame)."""
        self.log_exception(*sys.exc_info())
        self.socket_registry.end(self, "internal error", CLOSE_INTERNAL_ERROR)

    def on_session_message(self, message: str | bytes) -> Awaitable[None] | None:
        """One message within the rate limit; by default a JSON object for :meth:`on_json`
        (``{"type": "activity"}`` is the library's own: see :meth:`on_activity`)."""
        data = self.parse_json_message(message)
        if data is None:
            return None
        if data.get("type") == "activity":
            return self.on_activity()
        return self.on_json(data)

    # -- idle expiry -----------------------------------------------------------------------
    @property
    def absolute_deadline(self) -> float:
        return self.session_created + self.session_manager.options.absolute_timeout

    def session_deadlines(self) -> dict[str, float]:
        """``{"idle_deadline", "absolute_deadline"}`` in Unix seconds, for messages to the client."""
        return {"idle_deadline": round(self._idle_deadline, 3), "absolute_deadline": round(self.absolute_deadline, 3)}

    async def on_activity(self) -> None:
        """``{"type": "activity"}``: the user is here. Touch the session (at most once per
        :func:`activity_touch_interval`; never past the absolute deadline) and answer
        ``{"type": "deadlines", ...}``."""
        manager = self.session_manager
        now = manager.clock()
        if now - self._last_touch >= activity_touch_interval(manager):
            self._last_touch = now
            expires = min(now + manager.options.idle_timeout, self.absolute_deadline)
            try:
                touched = await manager.store.touch(self.session_key, expires=expires, updated=now)
            except StoreError:
                self.send_error_message("the session store is unavailable; try again", retry_after=5)
                return
            if not touched:
                self.socket_registry.end(self, "session ended")
                return
            self._idle_deadline = max(self._idle_deadline, expires)
            if self._deadline_moved is not None:
                self._deadline_moved.set()
        self.send_json({"type": "deadlines", **self.session_deadlines()})

    async def _watch_expiry(self) -> None:
        """Tell the client ``expiring`` before the deadline; close 1008 "session expired" at it.

        Before warning and before closing, the store is asked again: requests of the
        same session (another tab) may have moved the idle deadline.
        """
        clock = self.session_manager.clock
        warning = float(self.settings.get("websocket_expiry_warning", DEFAULT_EXPIRY_WARNING))
        warned_for: float | None = None
        while True:
            deadline = min(self._idle_deadline, self.absolute_deadline)
            now = clock()
            if now < deadline - warning:
                await self._sleep_or_wake(deadline - warning - now)
                continue
            if not await self._refresh_deadline():
                return
            deadline = min(self._idle_deadline, self.absolute_deadline)
            now = clock()
            if now >= deadline:
                self.socket_registry.end(self, "session expired")
                return
            if now >= deadline - warning and warned_for != deadline:
                warned_for = deadline
                self.send_json({"type": "expiring", **self.session_deadlines()})
            await self._sleep_or_wake(min(deadline, deadline - warning if now < deadline - warning else deadline) - now)

    async def _refresh_deadline(self) -> bool:
        """Re-read the idle deadline from the store; False (socket closed) when the session is gone."""
        try:
            record = await self.session_manager.store.load(self.session_key)
        except StoreError:
            await self._sleep_or_wake(1.0)  # keep the socket; ask again shortly
            return True
        if record is None:  # the store does not return an expired session either
            expired = self.session_manager.clock() >= min(self._idle_deadline, self.absolute_deadline)
            self.socket_registry.end(self, "session expired" if expired else "session ended")
            return False
        if record.expires != self._idle_deadline:
            # Requests of the same session (another tab) moved it: tell the client.
            self._idle_deadline = record.expires
            self.send_json({"type": "deadlines", **self.session_deadlines()})
        return True

    async def _sleep_or_wake(self, seconds: float) -> None:
        event = self._deadline_moved
        if event is None:
            await asyncio.sleep(max(seconds, 0.0))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(seconds, 0.0))
        event.clear()

    def on_json(self, data: dict[str, Any]) -> Awaitable[None] | None:
        """One JSON object from the client; override it."""
        self.send_error_message("unsupported message")
        return None

    def parse_json_message(self, message: str | bytes) -> dict[str, Any] | None:
        """The message as a JSON object, or None after telling the client what was wrong."""
        if isinstance(message, bytes):
            self.send_error_message("send text messages (JSON), not binary")
            return None
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):
            self.send_error_message("malformed JSON")
            return None
        if not isinstance(data, dict):
            self.send_error_message("a message must be a JSON object")
            return None
        return data

    # -- sending -------------------------------------------------------------------------
    @property
    def pending_write_bytes(self) -> int:
        """Outgoing data waiting for the client, as counted against
        ``websocket_max_write_buffer``: the stream's backlog plus :data:`WRITE_OVERHEAD`
        per unfinished write."""
        return stream_backlog(self) + WRITE_OVERHEAD * self._unfinished_writes

    def write_message(self, message: bytes | str | dict[str, Any], binary: bool = False) -> Future[None]:
        """Tornado's ``write_message``, within ``websocket_max_write_buffer``: a message that
        would go over it is dropped, the socket closed with 1013 "slow consumer", and
        ``WebSocketClosedError`` raised (as for any closed socket)."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            raise WebSocketClosedError()
        data = utf8(json_encode(message) if isinstance(message, dict) else message)
        limit = self._write_limit
        if limit is not None:
            pending = self.pending_write_bytes
            if pending + len(data) + WRITE_OVERHEAD > limit:
                self._slow_consumer(pending, len(data))
                raise WebSocketClosedError()
        future = super().write_message(data, binary)
        self._unfinished_writes += 1
        future.add_done_callback(self._written)
        return future

    def _written(self, future: Future[None]) -> None:
        self._unfinished_writes -= 1
        if not future.cancelled():
            future.exception()  # a write cut short by the client leaving is no error

    def _slow_consumer(self, pending: int, size: int) -> None:
        log_event(
            security_log, logging.WARNING, "websocket_slow_consumer", pending=pending,
            message=size, limit=self._write_limit,
            key=short_key(self.session_key), user=self.user_id, remote=self.request.remote_ip,
        )
        self.socket_registry.end(self, "slow consumer", CLOSE_TRY_AGAIN_LATER)

    def send_json(self, payload: Mapping[str, Any]) -> bool:
        """Send one JSON message; False when the socket is closed, or closes now for
        being too far behind (never raises for either)."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            return False
        try:
            self.write_message(json.dumps(payload, separators=(",", ":")))
        except WebSocketClosedError:
            return False
        return True

    def send_error_message(self, error: str, **fields: Any) -> bool:
        return self.send_json({"type": "error", "error": error, **fields})

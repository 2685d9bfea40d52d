"""Session events across processes and hosts, through the store's own server.

When a session ends (logout, revoke, expiry), changes ID, or all of a user's sessions
end, the process that did it closes its own websockets at once; the other processes
of the deployment learn it from an :class:`EventBus`. Notices for a user and
broadcasts on a named channel (the demo's chat) travel the same way.

Each store chooses its bus like its expiry mode (:meth:`Store.event_bus`): Redis
publishes (PUBLISH/SUBSCRIBE, sharded on a cluster), PostgreSQL uses LISTEN/NOTIFY,
MongoDB a change stream where the server offers one and otherwise an events
collection read from its last position, SQLite an events table read from its last
rowid, memory stays in-process. :attr:`EventBus.describe` says which, for the
startup log.

Delivery is at most once and may miss events while the bus is cut off from its
server: after a reconnect the bus calls ``on_resync``, and the receiver re-checks
what it holds (every open socket) against the store.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

log = logging.getLogger("sessions")

Kind = Literal["session_ended", "session_renamed", "user_sessions_ended", "notice", "broadcast"]
KINDS: Final = frozenset({"session_ended", "session_renamed", "user_sessions_ended", "notice", "broadcast"})

#: Largest encoded event: PostgreSQL's NOTIFY takes at most 8,000 bytes of payload.
MAX_EVENT_BYTES = 7000

_identity: tuple[int, str] = (0, "")


def process_id() -> str:
    """This process among all the deployment's processes (events it published come back
    to it on most buses; it handled them already when it published).

    Worked out again after a fork: ``server.py --processes N`` imports this module in
    the parent, and each worker must be told apart from its siblings.
    """
    global _identity
    pid = os.getpid()
    if _identity[0] != pid:
        _identity = (pid, f"{pid}-{secrets.token_hex(4)}")
    return _identity[1]


class MalformedEvent(ValueError):
    """An event that cannot be read or is too large: dropped with a log line."""


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One session event. Which fields are set depends on ``kind``:

    - ``session_ended``: ``key``;
    - ``session_renamed``: ``key`` (old) and ``new_key``;
    - ``user_sessions_ended``: ``user_id`` and ``keep`` (a key spared, or None);
    - ``notice``: ``user_id``, ``payload``, optionally ``keep`` (a session not told);
    - ``broadcast``: ``channel`` and ``payload``.
    """

    kind: Kind
    key: str | None = None
    new_key: str | None = None
    user_id: str | None = None
    keep: str | None = None
    channel: str | None = None
    payload: Mapping[str, Any] | None = None
    origin: str = field(default_factory=process_id)

    def encode(self) -> str:
        """Compact JSON; raises MalformedEvent over :data:`MAX_EVENT_BYTES`."""
        body = {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        if len(text) > MAX_EVENT_BYTES:
            raise MalformedEvent(f"a {self.kind} event of {len(text)} bytes is over {MAX_EVENT_BYTES}")
        return text

    @classmethod
    def decode(cls, text: str | bytes) -> BusEvent:
        """Read an encoded event; MalformedEvent for anything else (never another error)."""
        if len(text) > MAX_EVENT_BYTES:
            raise MalformedEvent(f"an event of {len(text)} bytes is over {MAX_EVENT_BYTES}")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedEvent("an event that is not JSON") from exc
        if not isinstance(body, dict) or body.get("kind") not in KINDS:
            raise MalformedEvent("an event without a known kind")
        values: dict[str, Any] = {}
        for name in ("key", "new_key", "user_id", "keep", "channel", "origin"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise MalformedEvent(f"an event whose {name} is not text")
            if value is not None:
                values[name] = value
        payload = body.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise MalformedEvent("an event whose payload is not an object")
        event = cls(body["kind"], payload=payload, **values)
        if not event._complete():
            raise MalformedEvent(f"a {event.kind} event without its fields")
        return event

    def _complete(self) -> bool:
        needs = {
            "session_ended": (self.key,),
            "session_renamed": (self.key, self.new_key),
            "user_sessions_ended": (self.user_id,),
            "notice": (self.user_id, self.payload),
            "broadcast": (self.channel, self.payload),
        }[self.kind]
        return all(value is not None for value in needs)


Deliver = Callable[[BusEvent], None]


class EventBus(abc.ABC):
    """Publish session events to every process of the deployment; hear the others'.

    ``start(deliver, on_resync)`` begins listening: ``deliver`` gets every event
    published by *another* process (this process's own are not delivered back), from
    the event loop, and must not block; ``on_resync`` runs after the bus reconnected
    and may have missed events. ``publish`` never raises for a store outage (it logs:
    the receivers' periodic re-check is the safety net).
    """

    #: Short name for logs ("redis pub/sub", "sqlite poll"...).
    name: str = "bus"
    #: True when events are pushed by the server; False when they are polled.
    pushes: bool = False

    def describe(self) -> str:
        return self.name

    @abc.abstractmethod
    async def start(self, deliver: Deliver, on_resync: Callable[[], None]) -> None:
        """Begin listening (idempotent)."""

    @abc.abstractmethod
    async def publish(self, event: BusEvent) -> None:
        """Send ``event`` to the other processes."""

    async def close(self) -> None:
        """Stop listening and release connections."""
        return None

    @staticmethod
    def handle_raw(text: str | bytes, deliver: Deliver) -> None:
        """Decode one received message and deliver it unless it is ours; log and drop a bad one."""
        try:
            event = BusEvent.decode(text)
        except MalformedEvent as exc:
            log.warning("session event dropped: %s", exc)
            return
        if event.origin == process_id():
            return
        try:
            deliver(event)
        except Exception:  # a receiver's bug must not stop the listener
            log.exception("session event receiver failed on %s", event.kind)


class LocalBus(EventBus):
    """One process only (memory store): nothing to send, nothing to hear."""

    name = "in-process (one process only)"
    pushes = True

    async def start(self, deliver: Deliver, on_resync: Callable[[], None]) -> None:
        return None

    async def publish(self, event: BusEvent) -> None:
        event.encode()  # the same size rule as everywhere

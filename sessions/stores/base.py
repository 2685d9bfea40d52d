"""The narrow interface every session backend implements.

Stores only move data. They never see a raw session ID (the manager hands them a
hash), never parse session values (each value is already JSON text), and know
nothing about cookies, HTTP or timeouts beyond "this record expires at T". All the
rules (idle/absolute expiry, touch throttling, regeneration, serialization) live
once in :mod:`sessions.manager`.

Values are stored per key so that a save applies only the keys a request changed:
two concurrent requests that change different keys of one session both persist.

Every store takes an injectable ``clock`` (Unix seconds, ``time.time`` by default):
"now" in every expiry check comes from it, so tests move time instead of sleeping,
and a manager built on the store uses the same clock.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..bus import EventBus, LocalBus


class _Keep:
    """Marker: leave the stored value (user_id, meta) as it is."""

    def __repr__(self) -> str:
        return "KEEP"


#: Pass as ``user_id`` or ``meta`` to :meth:`Store.update` to leave the stored value alone.
KEEP: Final[Any] = _Keep()

Clock = Callable[[], float]

#: The kind of an ordinary session record; other kinds (remember-me tokens, "remember")
#: live in the same store, under the same user index, and are told apart by it.
DEFAULT_KIND: Final = "session"


def window_bounds(now: float, window: float) -> tuple[str, float]:
    """The fixed counter window holding ``now``: (its slot name, when it ends).

    The slot names the window's length and start, so windows of different lengths
    that start together count apart.
    """
    if window <= 0:
        raise ValueError("a counter window must be positive")
    start = math.floor(now / window) * window
    return f"{window!r}@{start!r}", start + window


class StoreError(Exception):
    """The backend failed (down, timed out, refused). Callers answer 503."""


@dataclass(slots=True)
class Record:
    """What a store holds for one session.

    ``data`` maps each session key to the JSON text of its value. Times are Unix
    seconds (float). ``updated`` is the last write or touch, ``expires`` the idle
    deadline the manager computed. ``meta`` is small text about the session itself
    (login time, client address, user agent) for pages such as "active sessions";
    it is not session data and handlers do not see it as such.

    ``kind`` says what the record is: ``"session"`` for a session, another short name
    for other records a store keeps for a user (``"remember"``: a remember-me token).
    It is set at :meth:`Store.create` and never changed by :meth:`Store.update`;
    :meth:`Store.list_user` can filter by it, :meth:`Store.destroy_user` removes every kind.
    """

    data: dict[str, str]
    created: float
    updated: float
    expires: float
    user_id: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    kind: str = DEFAULT_KIND


class Store(abc.ABC):
    """Async session storage keyed by ``key`` (a hash of the session ID)."""

    #: Short backend name for logs and /ready.
    name: str = "store"

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock: Clock = clock

    # -- capabilities ----------------------------------------------------------
    @property
    def expires_natively(self) -> bool:
        """True when expired records go away without anyone calling :meth:`prune`.

        A TTL index, a key expiry or the store's own background task all count. The
        server runs a prune timer only for stores where this is False.
        """
        return False

    def describe(self) -> str:
        """One line for the startup log: the backend and how records expire."""
        how = "expires natively" if self.expires_natively else "pruned by the app"
        return f"{self.name} ({how})"

    # -- records ---------------------------------------------------------------
    @abc.abstractmethod
    async def load(self, key: str) -> Record | None:
        """Return the record, or None when absent or already expired (``expires <= now``)."""

    @abc.abstractmethod
    async def create(self, key: str, record: Record) -> None:
        """Insert a new record of ``record.kind``, replacing whatever the key held (new and regenerated sessions)."""

    @abc.abstractmethod
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
        """Apply only the given changes to an existing, unexpired session, atomically.

        ``user_id`` and ``meta`` are written only when given (not :data:`KEEP`), so a
        request that did not change them cannot put back a stale value another request
        replaced; a given ``meta`` replaces the stored one whole. Keys not named stay as
        they are in the store, whatever this request loaded. A key both set and unset
        ends up unset. The record's ``kind`` stays as created. Returns False (and writes
        nothing) when the session no longer exists, so a request racing a logout cannot
        bring the session back.
        """

    @abc.abstractmethod
    async def take(self, key: str, names: Iterable[str]) -> dict[str, str] | None:
        """Remove the named items and return the ones that were there, atomically.

        Of two concurrent calls naming the same item, exactly one gets it: this is what
        makes flash messages show once under parallel requests. Moves no deadline.
        Returns None when the session is gone or expired.
        """

    @abc.abstractmethod
    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        """Move the idle deadline of an existing session; False when it is gone."""

    @abc.abstractmethod
    async def destroy(self, key: str) -> None:
        """Delete one session (no error when absent)."""

    @abc.abstractmethod
    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        """Delete every record of a user, of every kind (except ``keep``), through a user index; returns how many."""

    @abc.abstractmethod
    async def list_user(self, user_id: str, *, kind: str | None = None) -> list[tuple[str, Record]]:
        """The user's unexpired records as (key, record), newest first: those of ``kind``, or all kinds (None)."""

    @abc.abstractmethod
    async def prune(self) -> int:
        """Delete expired sessions now; returns how many."""

    # -- counters (rate limiting) ----------------------------------------------
    async def hit(self, name: str, window: float) -> tuple[int, float]:
        """Count one hit on ``name`` in the current fixed window, atomically across processes.

        Windows are ``window`` seconds long and aligned to the clock (they start at
        multiples of ``window``), so every process agrees on them. Returns the hits in
        this window including this one, and when the window ends. Old windows expire
        like sessions do. This is what a login rate limiter shared by every process
        needs, and nothing more.
        """
        raise NotImplementedError(f"the {self.name} store has no counters")

    async def reset_hits(self, name: str, window: float) -> None:
        """Forget the hits on ``name`` in the current window (e.g. after a successful login)."""
        raise NotImplementedError(f"the {self.name} store has no counters")

    # -- across processes ------------------------------------------------------
    def event_bus(self) -> EventBus:
        """A bus for session events between the deployment's processes (:mod:`sessions.bus`).

        Through this store's own server; the default stays in-process (one process).
        """
        return LocalBus()

    async def alive(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` name unexpired records (the websocket re-check asks for many at once).

        This default loads them one by one; stores override it with one round trip.
        """
        return {key for key in keys if await self.load(key) is not None}

    # -- lifecycle -------------------------------------------------------------
    async def setup(self) -> None:
        """Prepare the backend (schema, indexes) at startup instead of on first use."""
        return None

    async def ping(self) -> None:
        """Raise StoreError when the backend cannot serve requests (for /ready)."""
        return None

    async def close(self) -> None:
        """Release connections, threads and timers."""
        return None

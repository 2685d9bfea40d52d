"""The narrow interface every session backend implements.

Stores only move data. They never see a raw session ID (the manager hands them a
hash), never parse session values (each value is already JSON text), and know
nothing about cookies, HTTP or timeouts beyond "this record expires at T". All the
rules (idle/absolute expiry, touch throttling, regeneration, serialization) live
once in :mod:`sessions.manager`.

Values are stored per key so that a save applies only the keys a request changed:
two concurrent requests that change different keys of one session both persist.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class _Keep:
    """Marker: leave the stored user_id as it is."""

    def __repr__(self) -> str:
        return "KEEP"


#: Pass as ``user_id`` to :meth:`Store.update` to leave the stored value alone.
KEEP: Any = _Keep()


class StoreError(Exception):
    """The backend failed (down, timed out, refused). Callers answer 503."""


@dataclass(slots=True)
class Record:
    """What a store holds for one session.

    ``data`` maps each session key to the JSON text of its value. Times are Unix
    seconds (float). ``updated`` is the last write or touch, ``expires`` the idle
    deadline the manager computed.
    """

    data: dict[str, str]
    created: float
    updated: float
    expires: float
    user_id: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


class Store(abc.ABC):
    """Async session storage keyed by ``key`` (a hash of the session ID)."""

    #: Short backend name for logs and /ready.
    name: str = "store"

    @abc.abstractmethod
    async def load(self, key: str) -> Record | None:
        """Return the record, or None when absent or already expired (``expires <= now``)."""

    @abc.abstractmethod
    async def create(self, key: str, record: Record) -> None:
        """Insert a new session (used for new and regenerated sessions)."""

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
    ) -> bool:
        """Apply only the given changes to an existing, unexpired session, atomically.

        ``user_id`` is written only when given (not :data:`KEEP`), so a request that did
        not change it cannot put back a stale value another request replaced.
        Keys not named stay as they are in the store, whatever this request loaded.
        Returns False (and writes nothing) when the session no longer exists, so a
        request racing a logout cannot bring the session back.
        """

    @abc.abstractmethod
    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        """Move the idle deadline of an existing session; False when it is gone."""

    @abc.abstractmethod
    async def destroy(self, key: str) -> None:
        """Delete one session (no error when absent)."""

    @abc.abstractmethod
    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        """Delete every session of a user (except ``keep``); returns how many."""

    @abc.abstractmethod
    async def list_user(self, user_id: str) -> list[tuple[str, Record]]:
        """The user's unexpired sessions as (key, record), newest first."""

    @abc.abstractmethod
    async def prune(self) -> int:
        """Delete expired sessions now; returns how many."""

    async def setup(self) -> None:
        """Prepare the backend (schema, indexes) at startup instead of on first use."""
        return None

    async def ping(self) -> None:
        """Raise StoreError when the backend cannot serve requests (for /ready)."""
        return None

    async def close(self) -> None:
        """Release connections, threads and timers."""
        return None

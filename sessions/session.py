"""The Session a handler sees: a JSON mapping, its user and metadata, and intents.

What the handler may use is here: the mapping, ``user_id``, ``meta``,
``regenerate()``, ``destroy()`` and ``flash()``. What the manager needs to commit it
(the store's copy, which keys changed, the encoded values) is kept apart in a
:class:`~sessions.tracking.SessionState` that only the manager reads.

Changes are tracked per key so that the manager writes only those keys: two
requests on one session that change different keys both persist. Values are
compared by their canonical JSON, so mutating a nested list in place
(``session["cart"].append(x)``) is noticed too.

Each flash message is a session key of its own (``_flash:<time><random>``), so two
requests that add messages at once both keep theirs; reading them is the manager's
atomic take (``await handler.pop_flashes()``): of parallel requests, only one gets
each message.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from .meta import SessionMeta
from .tracking import FLASH_PREFIX, IMMUTABLE, SessionState, dumps

__all__ = ["FLASH_PREFIX", "MAX_FLASHES", "Session", "dumps"]

#: Most flash messages queued in one session; queueing more drops the oldest.
MAX_FLASHES = 100


class Session(MutableMapping[str, Any]):
    """Session data for one request: a mapping of JSON values, plus who and how."""

    __slots__ = ("id", "key", "is_new", "created", "last_access", "expires", "meta", "_data", "_user_id", "_state")

    def __init__(
        self,
        session_id: str | None,
        key: str | None,
        *,
        stored: dict[str, str] | None = None,
        created: float,
        last_access: float,
        expires: float,
        user_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        self.id = session_id
        self.key = key
        self.is_new = stored is None
        self.created = created
        self.last_access = last_access
        self.expires = expires
        self._data: dict[str, Any] = {}
        self._user_id = user_id
        #: Text about the session itself (login time, client address, user agent):
        #: stored beside the data for "active sessions" pages, not part of the mapping.
        self.meta = SessionMeta(meta)
        self._state = SessionState(stored or {}, user_id, self.meta)
        self._data = self._state.decoded()

    # -- mapping -----------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        value = self._data[name]
        if not isinstance(value, IMMUTABLE):
            self._state.watched.add(name)  # may be mutated in place; compare at commit
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise TypeError("session keys are strings")
        text = dumps(value)  # fail here, in the handler's traceback, not at commit
        self._data[name] = value
        self._state.set(name, text if isinstance(value, IMMUTABLE) else None)

    def __delitem__(self, name: str) -> None:
        del self._data[name]
        self._state.set(name, None)

    def get(self, key: str, default: Any = None) -> Any:
        """``Mapping.get`` without its ``try``/``KeyError`` round trip: most requests call it."""
        return self[key] if key in self._data else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __repr__(self) -> str:
        return f"<Session new={self.is_new} keys={sorted(self._data)}>"

    # -- identity ----------------------------------------------------------------
    @property
    def user_id(self) -> str | None:
        """The signed-in user; indexed by the store for "log out everywhere"."""
        return self._user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError("user_id is a string or None")
        self._user_id = value

    # -- intents -----------------------------------------------------------------
    def regenerate(self, *, keep_data: bool = True) -> None:
        """Give the session a new ID at commit (call on login and privilege change)."""
        if not keep_data:
            self._data.clear()
            self._user_id = None
            self.meta.clear()
        self._state.regenerate = keep_data

    def destroy(self) -> None:
        """Delete the session from the store and clear its cookie at commit."""
        self._data.clear()
        self._user_id = None
        self.meta.clear()
        self._state.destroyed = True

    @property
    def destroyed(self) -> bool:
        return self._state.destroyed

    # -- flash -------------------------------------------------------------------
    def flash(self, message: str, category: str = "info") -> None:
        """Queue a message for the next page that reads flashes (shown exactly once).

        At most :data:`MAX_FLASHES` stay queued: a new one beyond drops the oldest.
        """
        if not isinstance(message, str) or not isinstance(category, str):
            raise TypeError("flash message and category are strings")
        # Time first so that names sort oldest first; the random tail keeps messages
        # queued in the same nanosecond (or by another process) apart.
        name = f"{FLASH_PREFIX}{time.time_ns():016x}{secrets.token_hex(4)}"
        queued = sorted(key for key in self._data if key.startswith(FLASH_PREFIX))
        for oldest in queued[: max(len(queued) - MAX_FLASHES + 1, 0)]:
            del self[oldest]
        self[name] = [category, message]

    def discard_flashes(self) -> None:
        """Drop every queued message (login: a message queued for the visitor is not the user's)."""
        for name in [key for key in self._data if key.startswith(FLASH_PREFIX)]:
            del self[name]


def state_of(session: Session) -> SessionState:
    """The manager's bookkeeping for ``session`` (for the manager and tests, not handlers)."""
    return session._state

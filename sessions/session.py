"""The Session a handler sees: a JSON mapping that knows what this request changed.

Changes are tracked per key so that the manager writes only those keys: two
requests on one session that change different keys both persist. Values are
compared by their canonical JSON, so mutating a nested list in place
(``session["cart"].append(x)``) is noticed too.

Regeneration and destruction are recorded as intents; the manager carries them out
when the response is committed.

Each flash message is a session key of its own (``_flash:<time><random>``), so two
requests that add messages at once both keep theirs, and taking a message is a
store-level "remove these keys and tell me what was there"
(:meth:`SessionManager.pop_flashes`): of parallel requests, only one gets each
message.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from .meta import SessionMeta

#: Session keys that start with this hold one flash message each: ``[category, text]``.
FLASH_PREFIX = "_flash:"
#: Most flash messages queued in one session; queueing more drops the oldest.
MAX_FLASHES = 100

_IMMUTABLE = (str, int, float, bool, type(None))


#: One encoder for every call: json.dumps() with options builds a new one each time,
#: which costs more than encoding a small value.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Canonical JSON for a session value; rejects what JSON can't hold (never pickle)."""
    return _ENCODER.encode(value)


class Session(MutableMapping[str, Any]):
    """Session data plus the state the manager needs to commit it."""

    __slots__ = (
        "id",
        "key",
        "is_new",
        "created",
        "last_access",
        "expires",
        "_data",
        "_stored",
        "_watched",
        "_fresh",
        "_user_id",
        "_stored_user_id",
        "meta",
        "_stored_meta",
        "_regenerate",
        "_destroyed",
        "resend_cookie",
    )

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
        self._stored: dict[str, str] = stored or {}
        self._data: dict[str, Any] = {k: json.loads(v) for k, v in self._stored.items()}
        self._watched: set[str] = set()
        #: JSON text of immutable values set in this request, encoded once by
        #: __setitem__ (its check that the value is JSON) and reused by changes().
        self._fresh: dict[str, str] = {}
        self._user_id = user_id
        self._stored_user_id = user_id
        #: Text about the session itself (login time, client address, user agent):
        #: stored beside the data for "active sessions" pages, not part of the mapping.
        self.meta = SessionMeta(meta)
        self._stored_meta: dict[str, str] = dict(self.meta)
        self._regenerate: bool | None = None  # None: no; True: keep data; False: clear
        self._destroyed = False
        #: Set by the manager when the cookie was sealed by an older key: the commit
        #: sends it again sealed by the primary key, so old keys retire sooner.
        self.resend_cookie = False

    # -- mapping -----------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        value = self._data[name]
        if not isinstance(value, _IMMUTABLE):
            self._watched.add(name)  # may be mutated in place; compare at commit
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise TypeError("session keys are strings")
        text = dumps(value)  # fail here, in the handler's traceback, not at commit
        self._data[name] = value
        self._watched.add(name)
        if isinstance(value, _IMMUTABLE):
            self._fresh[name] = text
        else:  # may be mutated in place before the commit: encode it then
            self._fresh.pop(name, None)

    def __delitem__(self, name: str) -> None:
        del self._data[name]
        self._watched.add(name)
        self._fresh.pop(name, None)

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
        self._regenerate = keep_data

    def destroy(self) -> None:
        """Delete the session from the store and clear its cookie at commit."""
        self._data.clear()
        self._user_id = None
        self.meta.clear()
        self._destroyed = True

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    @property
    def regenerating(self) -> bool:
        return self._regenerate is not None

    # -- flash -------------------------------------------------------------------
    def flash(self, message: str, category: str = "info") -> None:
        """Queue a message for the next page that reads flashes (shown exactly once)."""
        if not isinstance(message, str) or not isinstance(category, str):
            raise TypeError("flash message and category are strings")
        # Time first so that names sort oldest first; the random tail keeps messages
        # queued in the same nanosecond (or by another process) apart.
        name = f"{FLASH_PREFIX}{time.time_ns():016x}{secrets.token_hex(4)}"
        queued = sorted(key for key in self._data if key.startswith(FLASH_PREFIX))
        for oldest in queued[: max(len(queued) - MAX_FLASHES + 1, 0)]:
            del self[oldest]  # a bounded queue: nobody reads a hundred messages
        self[name] = [category, message]

    def discard_flashes(self) -> None:
        """Drop every queued message (login: a message queued for the visitor is not the user's)."""
        for name in [key for key in self._data if key.startswith(FLASH_PREFIX)]:
            del self[name]

    def flash_names(self, category: str | None = None) -> tuple[list[str], list[str]]:
        """Queued messages of ``category`` (all: None), oldest first, as (stored, unsaved) key names."""
        stored: list[str] = []
        unsaved: list[str] = []
        for name in sorted(self._data):
            if not name.startswith(FLASH_PREFIX):
                continue
            if category is not None and self._flash_category(name) != category:
                continue
            (stored if name in self._stored else unsaved).append(name)
        return stored, unsaved

    def _flash_category(self, name: str) -> str | None:
        value = self._data.get(name)
        return value[0] if isinstance(value, list) and len(value) == 2 else None

    def drop_flashes(self, names: list[str], taken: Mapping[str, str]) -> list[tuple[str, str]]:
        """Remove these flash keys here and return their messages, oldest first.

        ``taken`` holds what the store handed over for the stored ones; a stored name
        missing from it was taken by a parallel request and is not shown again. Once
        taken, a name is gone from the store too, so the commit writes nothing for it.
        """
        messages: list[tuple[str, str]] = []
        for name in sorted(names):
            if name in self._stored:
                text = taken.get(name)
                value = json.loads(text) if text is not None else None
                del self._stored[name]
            else:
                value = self._data.get(name)
            self._data.pop(name, None)
            self._watched.discard(name)
            self._fresh.pop(name, None)
            if isinstance(value, list) and len(value) == 2:
                messages.append((str(value[0]), str(value[1])))
        return messages

    def pop_flashes(self, category: str | None = None) -> list[tuple[str, str]]:
        """Return and remove queued messages (of one category, or all) from this copy.

        This takes them from this request's copy only: two parallel requests of one
        session could both show a stored message. Handlers should use the atomic
        ``await self.pop_flashes()`` of :class:`~sessions.tornado.SessionMixin`.
        """
        stored, unsaved = self.flash_names(category)
        messages = []
        for name in sorted(stored + unsaved):
            category_, text = self._data[name]
            messages.append((category_, text))
            del self[name]
        return messages

    # -- what the manager commits ------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return not self._data and self._user_id is None

    @property
    def user_changed(self) -> bool:
        return self._user_id != self._stored_user_id

    @property
    def meta_changed(self) -> bool:
        return self.meta != self._stored_meta

    def all_items(self) -> dict[str, str]:
        """Every key as JSON text (for a new or regenerated session), each encoded at most once."""
        fresh, stored, watched = self._fresh, self._stored, self._watched
        items: dict[str, str] = {}
        for name, value in self._data.items():
            text = fresh.get(name)
            if text is None:
                text = stored[name] if name in stored and name not in watched else dumps(value)
            items[name] = text
        return items

    def changes(self) -> tuple[dict[str, str], list[str]]:
        """(keys to set as JSON text, keys to unset) since the store's copy."""
        if not self._watched:
            return {}, []
        set_items: dict[str, str] = {}
        unset: list[str] = []
        fresh = self._fresh
        for name in self._watched:
            if name in self._data:
                text = fresh.get(name) or dumps(self._data[name])
                if self._stored.get(name) != text:
                    set_items[name] = text
            elif name in self._stored:
                unset.append(name)
        return set_items, unset

    def applied(self, set_items: dict[str, str], unset_keys: list[str]) -> dict[str, str]:
        """What the store holds after an update with these changes (no re-encoding)."""
        items = {**self._stored, **set_items}
        for name in unset_keys:
            items.pop(name, None)
        return items

    def mark_saved(self, session_id: str, key: str, items: dict[str, str] | None = None) -> None:
        """After a commit: what is stored now is what we hold."""
        self.id = session_id
        self.key = key
        self.is_new = False
        self._stored = items if items is not None else self.all_items()
        self._watched.clear()
        self._fresh.clear()
        self._stored_user_id = self._user_id
        self._stored_meta = dict(self.meta)
        self._regenerate = None

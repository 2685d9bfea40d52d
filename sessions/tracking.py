"""What the store holds of a session versus what this request changed (the manager's bookkeeping).

A :class:`SessionState` sits beside each :class:`~sessions.session.Session`; the
session's mapping methods tell it which keys were touched, and the manager asks it
what to write: every key as JSON text for a new session, only the changed keys for
an existing one, and whether the user or metadata moved. Handlers never see it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

#: Session keys that start with this hold one flash message each: ``[category, text]``.
FLASH_PREFIX = "_flash:"

#: Values that cannot change in place: encoded once when set.
IMMUTABLE = (str, int, float, bool, type(None))

#: One encoder for every call: json.dumps() with options builds a new one each time,
#: which costs more than encoding a small value.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Canonical JSON for a session value; rejects what JSON can't hold (never pickle)."""
    return _ENCODER.encode(value)


_DECODER = json.JSONDecoder()


def loads(text: str) -> Any:
    """A stored value's JSON text, decoded: what ``json.loads`` gives, for less.

    The stored texts are this module's canonical JSON (no surrounding whitespace), so
    the decoder's ``raw_decode`` reads them whole; ``json.loads`` spends more on its own
    checks than on a small value (2 µs against 0.4 for ``3``). Any other text goes to
    ``json.loads``, whose result and errors are the rule.
    """
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


class SessionState:
    """The store's copy of one session and the keys this request touched."""

    __slots__ = ("stored", "watched", "fresh", "stored_user_id", "stored_meta", "regenerate", "destroyed", "resend_cookie")

    def __init__(self, stored: dict[str, str], user_id: str | None, meta: Mapping[str, str]) -> None:
        self.stored = stored
        #: Keys set, deleted or read as mutable values in this request.
        self.watched: set[str] = set()
        #: JSON text of immutable values set in this request, encoded once when set.
        self.fresh: dict[str, str] = {}
        self.stored_user_id = user_id
        self.stored_meta = dict(meta)
        self.regenerate: bool | None = None  # None: no; True: keep data; False: clear
        self.destroyed = False
        #: The cookie was sealed by an older key: the commit sends it again, sealed by
        #: the primary key, so old keys retire sooner.
        self.resend_cookie = False

    def decoded(self) -> dict[str, Any]:
        return {name: loads(text) for name, text in self.stored.items()}

    def set(self, name: str, text: str | None) -> None:
        """``name`` was set (``text``: its JSON when immutable) or deleted (None)."""
        self.watched.add(name)
        if text is None:
            self.fresh.pop(name, None)
        else:
            self.fresh[name] = text

    # -- what the manager commits ------------------------------------------------
    @property
    def regenerating(self) -> bool:
        return self.regenerate is not None

    @staticmethod
    def is_empty(session: Session) -> bool:
        return len(session) == 0 and session.user_id is None

    def user_changed(self, session: Session) -> bool:
        return session.user_id != self.stored_user_id

    def meta_changed(self, session: Session) -> bool:
        return session.meta != self.stored_meta

    def all_items(self, session: Session) -> dict[str, str]:
        """Every key as JSON text (for a new or regenerated session), each encoded at most once."""
        fresh, stored, watched = self.fresh, self.stored, self.watched
        items: dict[str, str] = {}
        for name, value in _data(session).items():
            text = fresh.get(name)
            if text is None:
                text = stored[name] if name in stored and name not in watched else dumps(value)
            items[name] = text
        return items

    def changes(self, session: Session) -> tuple[dict[str, str], list[str]]:
        """(keys to set as JSON text, keys to unset) since the store's copy."""
        if not self.watched:
            return {}, []
        data = _data(session)
        set_items: dict[str, str] = {}
        unset: list[str] = []
        for name in self.watched:
            if name in data:
                text = self.fresh.get(name) or dumps(data[name])
                if self.stored.get(name) != text:
                    set_items[name] = text
            elif name in self.stored:
                unset.append(name)
        return set_items, unset

    def applied(self, set_items: dict[str, str], unset_keys: list[str]) -> dict[str, str]:
        """What the store holds after an update with these changes (no re-encoding)."""
        items = {**self.stored, **set_items}
        for name in unset_keys:
            items.pop(name, None)
        return items

    def mark_saved(self, session: Session, session_id: str, key: str, items: dict[str, str] | None = None) -> None:
        """After a commit: what is stored now is what the session holds."""
        session.id = session_id
        session.key = key
        session.is_new = False
        self.stored = items if items is not None else self.all_items(session)
        self.watched.clear()
        self.fresh.clear()
        self.stored_user_id = session.user_id
        self.stored_meta = dict(session.meta)
        self.regenerate = None

    # -- flash -------------------------------------------------------------------
    def flash_names(self, session: Session, category: str | None = None) -> tuple[list[str], list[str]]:
        """Queued messages of ``category`` (all: None), oldest first, as (stored, unsaved) key names."""
        data = _data(session)
        stored: list[str] = []
        unsaved: list[str] = []
        for name in sorted(data):
            if not name.startswith(FLASH_PREFIX):
                continue
            value = data[name]
            if category is not None and not (isinstance(value, list) and len(value) == 2 and value[0] == category):
                continue
            (stored if name in self.stored else unsaved).append(name)
        return stored, unsaved

    def drop_flashes(self, session: Session, names: list[str], taken: Mapping[str, str]) -> list[tuple[str, str]]:
        """Remove these flash keys from the session and return their messages, oldest first.

        ``taken`` holds what the store handed over for the stored ones; a stored name
        missing from it was taken by a parallel request and is not shown again. Once
        taken, a name is gone from the store too, so the commit writes nothing for it.
        """
        data = _data(session)
        messages: list[tuple[str, str]] = []
        for name in sorted(names):
            if name in self.stored:
                text = taken.get(name)
                value = loads(text) if text is not None else None
                del self.stored[name]
            else:
                value = data.get(name)
            data.pop(name, None)
            self.watched.discard(name)
            self.fresh.pop(name, None)
            if isinstance(value, list) and len(value) == 2:
                messages.append((str(value[0]), str(value[1])))
        return messages


def _data(session: Session) -> dict[str, Any]:
    """The session's own dict (read without marking keys as watched)."""
    return session._data

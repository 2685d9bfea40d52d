"""The Session a handler sees: a JSON mapping that knows what this request changed.

Changes are tracked per key so that the manager writes only those keys: two
requests on one session that change different keys both persist. Values are
compared by their canonical JSON, so mutating a nested list in place
(``session["cart"].append(x)``) is noticed too.

Regeneration and destruction are recorded as intents; the manager carries them out
when the response is committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

FLASH_KEY = "_flash"

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
        "_user_id",
        "_stored_user_id",
        "_regenerate",
        "_destroyed",
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
        self._user_id = user_id
        self._stored_user_id = user_id
        self._regenerate: bool | None = None  # None: no; True: keep data; False: clear
        self._destroyed = False

    # -- mapping -----------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        value = self._data[name]
        if not isinstance(value, _IMMUTABLE):
            self._watched.add(name)  # may be mutated in place; compare at commit
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise TypeError("session keys are strings")
        dumps(value)  # fail here, in the handler's traceback, not at commit
        self._data[name] = value
        self._watched.add(name)

    def __delitem__(self, name: str) -> None:
        del self._data[name]
        self._watched.add(name)

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
        self._regenerate = keep_data

    def destroy(self) -> None:
        """Delete the session from the store and clear its cookie at commit."""
        self._data.clear()
        self._user_id = None
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
        queue = list(self._data.get(FLASH_KEY, ()))
        queue.append([category, message])
        self[FLASH_KEY] = queue

    def pop_flashes(self, category: str | None = None) -> list[tuple[str, str]]:
        """Return and remove queued messages (of one category, or all)."""
        queue = self._data.get(FLASH_KEY)
        if not queue:
            return []
        taken = [(c, m) for c, m in queue if category is None or c == category]
        rest = [[c, m] for c, m in queue if category is not None and c != category]
        if rest:
            self[FLASH_KEY] = rest
        else:
            del self[FLASH_KEY]
        return taken

    # -- what the manager commits ------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return not self._data and self._user_id is None

    @property
    def user_changed(self) -> bool:
        return self._user_id != self._stored_user_id

    def all_items(self) -> dict[str, str]:
        """Every key as JSON text (for a new or regenerated session)."""
        return {k: dumps(v) for k, v in self._data.items()}

    def changes(self) -> tuple[dict[str, str], list[str]]:
        """(keys to set as JSON text, keys to unset) since the store's copy."""
        if not self._watched:
            return {}, []
        set_items: dict[str, str] = {}
        unset: list[str] = []
        for name in self._watched:
            if name in self._data:
                text = dumps(self._data[name])
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
        self._stored_user_id = self._user_id
        self._regenerate = None

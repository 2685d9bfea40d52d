"""In-process store for tests and development: nothing survives a restart.

Records are kept as plain tuples of strings and numbers, their items as tuples of
(name, JSON text) pairs. CPython's cyclic garbage collector stops tracking a tuple
that holds only such values (an exact tuple holding no dict: not a NamedTuple, not
a dict inside), so a process holding 100,000 sessions does not pay for scanning
them on every full collection. With a dataclass per record, login
latency grew with the number of stored sessions: a full collection walks every
tracked object, about 20 ms per 100,000 sessions. Records are copied in
and out, so a caller holding a Record cannot change what is stored, just as with a
real backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from .base import KEEP, Clock, Record, Store, window_bounds

_Items = tuple[tuple[str, str], ...]
#: data items, created, updated, expires, user_id, meta items, kind
_Row = tuple[_Items, float, float, float, str | None, _Items, str]


def _record(row: _Row) -> Record:
    data, created, updated, expires, user_id, meta, kind = row
    return Record(dict(data), created, updated, expires, user_id, dict(meta), kind)


def _items(mapping: Mapping[str, str]) -> _Items:
    return tuple(mapping.items())


class MemoryStore(Store):
    name = "memory"

    def __init__(self, *, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self._rows: dict[str, _Row] = {}
        #: user_id -> keys of that user's sessions, so "log out everywhere" is no scan.
        #: A dict used as a set: a dict of strings is not tracked by the GC, a set is.
        self._by_user: dict[str, dict[str, None]] = {}
        #: (name, window slot) -> (hits, window end); pruned with the sessions.
        self._hits: dict[tuple[str, str], tuple[int, float]] = {}

    @classmethod
    def from_url(cls, url: str, *, clock: Clock = time.time) -> MemoryStore:
        """``memory://`` (nothing after the scheme)."""
        if url.rstrip("/") != "memory:":
            raise ValueError(f"not a memory store URL: {url!r} (use memory://)")
        return cls(clock=clock)

    # -- internals ---------------------------------------------------------------
    def _live(self, key: str) -> _Row | None:
        row = self._rows.get(key)
        if row is None or row[3] <= self.clock():  # expires
            return None
        return row

    def _put(self, key: str, row: _Row) -> None:
        user_id = row[4]
        old = self._rows.get(key)
        if old is not None and old[4] != user_id:
            self._unindex(key, old[4])
        self._rows[key] = row
        if user_id is not None:
            self._by_user.setdefault(user_id, {})[key] = None

    def _unindex(self, key: str, user_id: str | None) -> None:
        if user_id is None:
            return
        keys = self._by_user.get(user_id)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._by_user[user_id]

    def _drop(self, key: str) -> bool:
        row = self._rows.pop(key, None)
        if row is None:
            return False
        self._unindex(key, row[4])
        return True

    # -- Store ---------------------------------------------------------------------
    async def load(self, key: str) -> Record | None:
        row = self._live(key)
        return None if row is None else _record(row)

    async def alive(self, keys: Iterable[str]) -> set[str]:
        """Dict lookups, no copies (the bus stays the default in-process one)."""
        return {key for key in keys if self._live(key) is not None}

    async def create(self, key: str, record: Record) -> None:
        self._put(key, (
            _items(record.data), record.created, record.updated, record.expires, record.user_id, _items(record.meta),
            record.kind,
        ))  # fmt: skip

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
        row = self._live(key)
        if row is None:
            return False
        items, created, _, _, stored_user, stored_meta, kind = row
        data = dict(items)
        data.update(set_items)
        for name in unset_keys:
            data.pop(name, None)
        self._put(
            key,
            (
                _items(data),
                created,
                updated,
                expires,
                stored_user if user_id is KEEP else user_id,
                stored_meta if meta is KEEP else _items(meta),
                kind,
            ),
        )
        return True

    async def take(self, key: str, names: Iterable[str]) -> dict[str, str] | None:
        row = self._live(key)
        if row is None:
            return None
        data = dict(row[0])
        taken = {name: data.pop(name) for name in names if name in data}
        if taken:
            self._rows[key] = (_items(data), *row[1:])
        return taken

    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        row = self._live(key)
        if row is None:
            return False
        items, created, _, _, user_id, meta, kind = row
        self._rows[key] = (items, created, updated, expires, user_id, meta, kind)
        return True

    async def destroy(self, key: str) -> None:
        self._drop(key)

    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        doomed = [k for k in self._by_user.get(user_id, {}) if k != keep]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def list_user(self, user_id: str, *, kind: str | None = None) -> list[tuple[str, Record]]:
        now = self.clock()
        found = [
            (key, _record(row))
            for key in self._by_user.get(user_id, {})
            if (row := self._rows[key])[3] > now and kind in (None, row[6])
        ]
        return sorted(found, key=lambda item: (item[1].created, item[0]), reverse=True)

    async def hit(self, name: str, window: float) -> tuple[int, float]:
        slot, end = window_bounds(self.clock(), window)
        count = self._hits.get((name, slot), (0, end))[0] + 1
        self._hits[(name, slot)] = (count, end)
        return count, end

    async def reset_hits(self, name: str, window: float) -> None:
        slot, _ = window_bounds(self.clock(), window)
        self._hits.pop((name, slot), None)

    async def prune(self) -> int:
        now = self.clock()
        doomed = [k for k, row in self._rows.items() if row[3] <= now]
        for key in doomed:
            self._drop(key)
        for counter in [c for c, (_, end) in self._hits.items() if end <= now]:
            del self._hits[counter]
        return len(doomed)

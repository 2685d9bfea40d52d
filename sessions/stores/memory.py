"""In-process store for tests and development: nothing survives a restart.

Records are copied in and out so a caller holding a Record cannot change what is
stored, just as with a real backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

from .base import KEEP, Record, Store


class MemoryStore(Store):
    name = "memory"

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    def _live(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is None or record.expires <= time.time():
            return None
        return record

    async def load(self, key: str) -> Record | None:
        record = self._live(key)
        if record is None:
            return None
        # Not dataclasses.replace(): it costs more than the rest of a session read.
        return Record(dict(record.data), record.created, record.updated, record.expires, record.user_id, record.meta)

    async def create(self, key: str, record: Record) -> None:
        self._records[key] = replace(record, data=dict(record.data))

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
        record = self._live(key)
        if record is None:
            return False
        record.data.update(set_items)
        for name in unset_keys:
            record.data.pop(name, None)
        record.expires, record.updated = expires, updated
        if user_id is not KEEP:
            record.user_id = user_id
        return True

    async def touch(self, key: str, *, expires: float, updated: float) -> bool:
        record = self._live(key)
        if record is None:
            return False
        record.expires, record.updated = expires, updated
        return True

    async def destroy(self, key: str) -> None:
        self._records.pop(key, None)

    async def destroy_user(self, user_id: str, *, keep: str | None = None) -> int:
        doomed = [k for k, r in self._records.items() if r.user_id == user_id and k != keep]
        for key in doomed:
            del self._records[key]
        return len(doomed)

    async def list_user(self, user_id: str) -> list[tuple[str, Record]]:
        now = time.time()
        found = [
            (k, replace(r, data=dict(r.data)))
            for k, r in self._records.items()
            if r.user_id == user_id and r.expires > now
        ]
        return sorted(found, key=lambda item: item[1].created, reverse=True)

    async def prune(self) -> int:
        now = time.time()
        doomed = [k for k, r in self._records.items() if r.expires <= now]
        for key in doomed:
            del self._records[key]
        return len(doomed)

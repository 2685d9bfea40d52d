"""Session backends behind one async interface; pick one by URL with :func:`open_store`."""

from __future__ import annotations

from .base import KEEP, Record, Store, StoreError

__all__ = ["KEEP", "Record", "Store", "StoreError", "open_store"]


def open_store(url: str, **options: object) -> Store:
    """``memory://``, ``sqlite:///path.db`` or ``mongodb://...`` (needs pymongo)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("mongodb", "mongodb+srv"):
        from .mongo import MongoStore

        return MongoStore(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown store URL {url!r}: use memory://, sqlite:///path or mongodb://")

"""tornado-sessions: encrypted cookies and server-side sessions for Tornado."""

from .cookies import CookieOptions, CookieTooLargeError
from .keys import KeyRing, MissingKeysError, generate_key, load_key_ring
from .manager import SessionManager, SessionOptions, hash_session_id
from .session import Session
from .stores import Record, Store, StoreError, open_store
from .tornado import SessionMixin

__all__ = [
    "CookieOptions",
    "CookieTooLargeError",
    "KeyRing",
    "MissingKeysError",
    "Record",
    "Session",
    "SessionManager",
    "SessionMixin",
    "SessionOptions",
    "Store",
    "StoreError",
    "generate_key",
    "hash_session_id",
    "load_key_ring",
    "open_store",
]

"""tornado-sessions: encrypted cookies and server-side sessions for Tornado."""

from .cookies import CookieOptions, CookieTooLargeError
from .keys import InvalidKeyError, KeyRing, MissingKeysError, Unsealed, generate_key, load_key_ring
from .manager import CommitPlan, SessionListener, SessionManager, SessionOptions, hash_session_id
from .remember import RememberMe, RememberOptions
from .session import Session
from .stores import Record, Store, StoreError, open_store, register_store
from .tornado import SessionMixin
from .websocket import SessionWebSocketMixin, SocketRegistry

__all__ = [
    "CommitPlan",
    "CookieOptions",
    "CookieTooLargeError",
    "InvalidKeyError",
    "KeyRing",
    "MissingKeysError",
    "Record",
    "RememberMe",
    "RememberOptions",
    "Session",
    "SessionListener",
    "SessionManager",
    "SessionMixin",
    "SessionOptions",
    "SessionWebSocketMixin",
    "SocketRegistry",
    "Store",
    "StoreError",
    "Unsealed",
    "generate_key",
    "hash_session_id",
    "load_key_ring",
    "open_store",
    "register_store",
]

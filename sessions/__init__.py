"""tornado-sessions: encrypted cookies and server-side sessions for Tornado."""

from .cookies import CookieOptions, CookieTooLargeError
from .keys import InvalidKeyError, KeyRing, MissingKeysError, Unsealed, generate_key, load_key_ring
from .manager import (
    CommitPlan,
    MisconfiguredError,
    SessionListener,
    SessionManager,
    SessionOptions,
    SessionTooLarge,
    hash_session_id,
)
from .meta import SessionMeta
from .remember import RememberMe, RememberOptions
from .session import Session
from .stores import Record, Store, StoreError, open_store, register_store
from .tornado import SessionMixin, check_application
from .websocket import SessionWebSocketMixin, SocketRegistry

__all__ = [
    "CommitPlan",
    "CookieOptions",
    "CookieTooLargeError",
    "InvalidKeyError",
    "KeyRing",
    "MisconfiguredError",
    "MissingKeysError",
    "Record",
    "RememberMe",
    "RememberOptions",
    "Session",
    "SessionListener",
    "SessionManager",
    "SessionMeta",
    "SessionMixin",
    "SessionOptions",
    "SessionTooLarge",
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
    "check_application",
]

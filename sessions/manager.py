"""Load and commit rules, written once above every store.

request cookie -> opened value -> session ID -> hash -> store record -> Session,
and back: Session changes -> store -> Set-Cookie. The manager owns expiry (idle and
absolute), touch throttling, save-uninitialized, resave, rolling, regeneration and
destruction; stores only move records.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tornado.web import RequestHandler

from .cookies import CookieOptions, clear_cookie, log_rejected_cookie, set_cookie
from .keys import KeyRing
from .session import Session
from .stores.base import KEEP, Record, Store

log = logging.getLogger("sessions")
audit_log = logging.getLogger("sessions.audit")

#: OWASP / NIST SP 800-63B AAL2: inactivity at most 1 h, overall at most 24 h.
DEFAULT_IDLE_TIMEOUT = 30 * 60
DEFAULT_ABSOLUTE_TIMEOUT = 12 * 60 * 60


def default_id_generator() -> str:
    """256 bits from the OS CSPRNG, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SessionOptions:
    """Everything express-session's options cover, plus idle/absolute timeouts.

    - ``resave``: write the session back even when this request changed nothing.
    - ``save_uninitialized``: store brand-new sessions that hold no data (off: bots
      and crawlers cost no store writes).
    - ``rolling``: send the cookie again on every response (refreshes its Max-Age).
    - ``touch_after``: write a moved idle deadline at most once per this many seconds
      on requests that change nothing.
    - ``trust_proxy``: believe ``X-Forwarded-Proto`` / ``X-Forwarded-For`` from the
      reverse proxy when deciding whether the request is HTTPS (Secure cookies are
      only sent over HTTPS, as in express-session) and who the client is.
    """

    cookie_name: str = "sid"
    cookie: CookieOptions = field(default_factory=CookieOptions)
    resave: bool = False
    save_uninitialized: bool = False
    rolling: bool = False
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    absolute_timeout: float = DEFAULT_ABSOLUTE_TIMEOUT
    touch_after: float = 60.0
    id_generator: Callable[[], str] = default_id_generator
    trust_proxy: bool = False

    def __post_init__(self) -> None:
        if self.idle_timeout <= 0 or self.absolute_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.touch_after < 0:
            raise ValueError("touch_after must be >= 0")


def hash_session_id(session_id: str) -> str:
    """The store key: SHA-256 of the ID, so a copy of the database holds no usable cookie."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class SessionManager:
    """Loads the session a request names and commits what the handler did to it."""

    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        options: SessionOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.options = options or SessionOptions()
        self.clock = clock
        self.cookie_full_name = self.options.cookie.full_name(self.options.cookie_name)

    # -- helpers -----------------------------------------------------------------
    def client_ip(self, handler: RequestHandler) -> str:
        if self.options.trust_proxy:
            forwarded = handler.request.headers.get("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return handler.request.remote_ip or ""

    def is_secure_request(self, handler: RequestHandler) -> bool:
        if handler.request.protocol == "https":
            return True
        if self.options.trust_proxy:
            proto = handler.request.headers.get("X-Forwarded-Proto", "")
            return proto.split(",")[0].strip().lower() == "https"
        return False

    def new_session(self, now: float) -> Session:
        return Session(
            None, None, created=now, last_access=now, expires=now + self.options.idle_timeout
        )

    # -- load --------------------------------------------------------------------
    async def load(self, handler: RequestHandler) -> Session:
        """The request's session; a fresh (unsaved) one when the cookie names none we hold.

        Raises StoreError when the store fails; the glue turns that into a 503.
        """
        now = self.clock()
        raw = handler.get_cookie(self.cookie_full_name)
        if raw is None:
            return self.new_session(now)
        payload = self.keys.open(raw, self.cookie_full_name)
        if payload is None:
            log_rejected_cookie(handler, self.cookie_full_name, raw)
            return self.new_session(now)
        session_id = payload.decode("utf-8", "replace")
        key = hash_session_id(session_id)
        record = await self.store.load(key)
        if record is None:
            # Never adopt an ID we do not hold (fixation): a fresh ID is made at commit.
            audit_log.info("event=session_unknown key=%s remote=%s", key[:12], self.client_ip(handler))
            return self.new_session(now)
        if record.expires <= now or record.created + self.options.absolute_timeout <= now:
            audit_log.info("event=session_expired key=%s", key[:12])
            await self.store.destroy(key)
            return self.new_session(now)
        return Session(
            session_id,
            key,
            stored=record.data,
            created=record.created,
            last_access=record.updated,
            expires=record.expires,
            user_id=record.user_id,
        )

    # -- commit ------------------------------------------------------------------
    def commit_needed(self, handler: RequestHandler, session: Session) -> bool:
        """False when :meth:`commit` would neither write nor set a cookie.

        Read-only requests (the common case) then finish without scheduling anything.
        """
        options = self.options
        if session.destroyed or session.regenerating or options.resave or options.rolling:
            return True
        if session.is_new:
            return (
                not session.is_empty
                or options.save_uninitialized
                or handler.get_cookie(self.cookie_full_name) is not None  # stale: clear it
            )
        if session.is_empty or session.user_changed:
            return True
        if self.clock() - session.last_access >= options.touch_after:
            return True
        set_items, unset_keys = session.changes()
        return bool(set_items or unset_keys)

    async def commit(self, handler: RequestHandler, session: Session) -> None:
        """Write what the handler changed, then set or clear the cookie. Before the response."""
        now = self.clock()
        had_cookie = handler.get_cookie(self.cookie_full_name) is not None
        if session.destroyed:
            if session.key:
                await self.store.destroy(session.key)
                audit_log.info("event=session_destroyed key=%s", session.key[:12])
            if had_cookie:
                clear_cookie(handler, self.options.cookie_name, self.options.cookie)
            return

        if session.regenerating or session.is_new:
            old_key = None if session.is_new else session.key
            if session.is_empty and not self.options.save_uninitialized:
                if old_key:
                    await self.store.destroy(old_key)
                if had_cookie:
                    clear_cookie(handler, self.options.cookie_name, self.options.cookie)
                return
            await self._create(handler, session, now)
            if old_key:
                await self.store.destroy(old_key)
                audit_log.info(
                    "event=session_regenerated old=%s new=%s", old_key[:12], session.key[:12]
                )
            return

        if session.is_empty:  # the handler removed everything: empty sessions are not kept
            await self.store.destroy(session.key)
            clear_cookie(handler, self.options.cookie_name, self.options.cookie)
            return

        set_items, unset_keys = session.changes()
        if set_items or unset_keys or session.user_changed or self.options.resave:
            expires = now + self.options.idle_timeout
            written = await self.store.update(
                session.key,
                set_items=set_items,
                unset_keys=unset_keys,
                expires=expires,
                updated=now,
                user_id=session.user_id if session.user_changed else KEEP,
            )
            if not written:
                # Ended elsewhere (logout, revoke, expiry) while this request ran: do not
                # bring it back from a partial copy.
                audit_log.info("event=session_gone_before_save key=%s", session.key[:12])
                clear_cookie(handler, self.options.cookie_name, self.options.cookie)
                return
            session.expires, session.last_access = expires, now
            session.mark_saved(session.id, session.key, session.applied(set_items, unset_keys))
        elif now - session.last_access >= self.options.touch_after:
            expires = now + self.options.idle_timeout
            if await self.store.touch(session.key, expires=expires, updated=now):
                session.expires, session.last_access = expires, now
        if self.options.rolling:
            self._set_cookie(handler, session, now)

    async def _create(self, handler: RequestHandler, session: Session, now: float) -> None:
        session_id = self.options.id_generator()
        key = hash_session_id(session_id)
        items = session.all_items()
        expires = now + self.options.idle_timeout
        record = Record(data=items, created=now, updated=now, expires=expires, user_id=session.user_id)
        await self.store.create(key, record)
        session.created, session.last_access, session.expires = now, now, expires
        session.mark_saved(session_id, key, items)
        self._set_cookie(handler, session, now)

    def _set_cookie(self, handler: RequestHandler, session: Session, now: float) -> None:
        options = self.options.cookie
        if options.effective_secure and not self.is_secure_request(handler):
            log.warning(
                "not sending the Secure session cookie over plain HTTP (behind a TLS proxy? "
                "set trust_proxy and X-Forwarded-Proto)"
            )
            return
        remaining = session.created + self.options.absolute_timeout - now
        sealed = self.keys.seal(
            session.id.encode("utf-8"), self.cookie_full_name, max_age=max(remaining, 1)
        )
        set_cookie(handler, self.options.cookie_name, sealed, options)

    # -- user-wide operations ----------------------------------------------------
    async def destroy_user_sessions(self, user_id: str, *, keep: Session | None = None) -> int:
        """End every session of a user ("log out everywhere", password change)."""
        count = await self.store.destroy_user(user_id, keep=keep.key if keep else None)
        audit_log.info("event=user_sessions_destroyed user=%s count=%d", user_id, count)
        return count

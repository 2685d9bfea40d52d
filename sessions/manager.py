"""Load and commit rules, written once above every store.

request cookie -> opened value -> session ID -> hash -> store record -> Session,
and back: Session changes -> :class:`CommitPlan` -> store -> Set-Cookie. The
manager owns expiry (idle and absolute), touch throttling, save-uninitialized,
resave, rolling, regeneration and destruction; stores only move records.

A request's commit is decided once, by :meth:`SessionManager.plan`, which encodes
the changed values once; :meth:`SessionManager.execute` carries the plan out. The
glue calls ``plan`` in ``finish()`` and skips the commit step entirely when there is
nothing to do (the common read-only request).

The client address and scheme are Tornado's ``request.remote_ip`` and
``request.protocol``: forwarded headers count only when the HTTP server was told to
trust the proxy that sent them (see :mod:`sessions.proxy`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tornado.web import RequestHandler

from .cookies import CookieOptions, clear_cookie, log_rejected_cookie, set_cookie
from .events import audit_log, log_event, security_log, short_key
from .keys import KeyRing
from .session import Session, state_of
from .stores.base import KEEP, Clock, Record, Store
from .stores.pruning import PruneLoop

log = logging.getLogger("sessions")

#: OWASP / NIST SP 800-63B AAL2: inactivity at most 1 h, overall at most 24 h.
DEFAULT_IDLE_TIMEOUT = 30 * 60
DEFAULT_ABSOLUTE_TIMEOUT = 12 * 60 * 60
#: Largest stored session (keys and JSON values, in UTF-8 bytes): well under the
#: 256 KiB where each load starts to cost milliseconds, far above any sane use.
DEFAULT_MAX_SESSION_BYTES = 64 * 1024
#: The session metadata key that holds the client address when sessions are bound to it.
ADDRESS_META_KEY = "ip"


class MisconfiguredError(TypeError):
    """The library was set up wrongly (a missing setting, a wrong type); the message says the fix."""


class SessionTooLarge(ValueError):
    """A request would store more than ``max_session_bytes``; nothing of it is stored (413)."""


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

    Secure cookies are only sent over HTTPS (``request.protocol``), as in
    express-session; behind a TLS proxy, list the proxy in the HTTP server's trusted
    proxies (:mod:`sessions.proxy`) so that ``X-Forwarded-Proto`` counts.
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
    #: Refuse (413, nothing stored) a commit that would make the stored session larger.
    max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES
    #: At most this many sessions per user (None: no cap). Enforced after every
    #: store write that creates a session with a user (login, regenerate, remember-me
    #: restore): the user's oldest sessions end first.
    max_user_sessions: int | None = None
    #: End a session when a request comes from another client address than the one
    #: that created it (``meta["ip"]``, recorded by the manager). Applies to every
    #: request that loads the session, websocket handshakes included.
    bind_address: bool = False
    #: For stores that do not expire records themselves (memory, SQLite): the first
    #: request that writes after every this many seconds starts one background prune
    #: (no timer, so nothing to stop; a server that writes nothing grows nothing to
    #: prune). None: the application prunes (``await store.prune()``) itself.
    prune_interval: float | None = 300.0

    def __post_init__(self) -> None:
        if self.idle_timeout <= 0 or self.absolute_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.touch_after < 0:
            raise ValueError("touch_after must be >= 0")
        if self.max_session_bytes <= 0 or (self.max_user_sessions is not None and self.max_user_sessions < 1):
            raise ValueError("max_session_bytes and max_user_sessions must be positive")
        if self.prune_interval is not None and self.prune_interval <= 0:
            raise ValueError("prune_interval must be positive (or None to prune yourself)")


def hash_session_id(session_id: str) -> str:
    """The store key: SHA-256 of the ID, so a copy of the database holds no usable cookie."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


Write = Literal["none", "create", "update", "touch", "destroy"]
CookieAction = Literal["keep", "set", "clear"]


@dataclass(slots=True)
class CommitPlan:
    """What one request's commit does, decided once (by :meth:`SessionManager.plan`).

    ``write`` is the store operation; ``items`` are the values to create the session
    with (``create``) or to set (``update``), already JSON text; ``drop_key`` is a
    store key to delete (the old key of a regenerated session, or the session
    destroyed); ``cookie`` says whether the response sets or clears the cookie.
    """

    write: Write
    now: float
    cookie: CookieAction = "keep"
    items: dict[str, str] = field(default_factory=dict)
    unset_keys: list[str] = field(default_factory=list)
    user_id: Any = KEEP
    meta: Any = KEEP
    drop_key: str | None = None


class SessionListener(Protocol):
    """Told when sessions end or change ID in this process (e.g. to close their websockets).

    Calls come after the store write, from the event loop; they must not block. Other
    processes are not told: they find out from the store (see
    :class:`sessions.websocket.SocketRegistry`'s re-check).
    """

    def session_ended(self, key: str) -> None: ...

    def session_renamed(self, old_key: str, new_key: str) -> None: ...

    def user_sessions_ended(self, user_id: str, keep: str | None) -> None: ...


class SessionManager:
    """Loads the session a request names and commits what the handler did to it."""

    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        options: SessionOptions | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(store, Store):
            raise MisconfiguredError(
                f"SessionManager needs a Store as its first argument, not {type(store).__name__}: "
                'e.g. open_store("sqlite:///sessions.db")'
            )
        if not isinstance(keys, KeyRing):
            raise MisconfiguredError(
                f"SessionManager needs a KeyRing, not {type(keys).__name__}: use "
                'KeyRing.from_text(os.environ["SESSION_KEYS"]); make a key with:  python -m sessions.keygen'
            )
        if options is not None and not isinstance(options, SessionOptions):
            raise MisconfiguredError(f"options must be a SessionOptions, not {type(options).__name__}")
        self.store = store
        self.keys = keys
        self.options = options or SessionOptions()
        #: One clock for the rules and the store (the store's unless given).
        self.clock: Clock = clock or store.clock
        self.cookie_full_name = self.options.cookie.full_name(self.options.cookie_name)
        self.listeners: list[SessionListener] = []
        #: Run after a session with a user is stored (login, regenerate, remember-me
        #: restore); one answering False ends it again at once and clears the cookie.
        #: What they are for: checking, *after* the write, that the user's credentials
        #: did not change while the session was being made. A "log out everywhere" or
        #: password change that bumps a version before deleting the user's sessions
        #: through the user index then leaves no window: a session stored before the
        #: deletion listed the index is deleted by it, and one stored after it sees the
        #: new version here. So requests need not read the user on every load.
        self.creation_checks: list[Callable[[Session], Awaitable[bool]]] = []
        interval = self.options.prune_interval
        #: Runs one prune at a time for stores that need it (see ``prune_interval``).
        self.pruner: PruneLoop | None = (
            PruneLoop(lambda: self.store.prune(), interval, name=f"{store.name}-prune")
            if interval is not None and not store.expires_natively
            else None
        )
        self._next_prune = 0.0
        self._pruning: asyncio.Task[int] | None = None

    def _maybe_prune(self) -> None:
        pruner = self.pruner
        if pruner is None or self._pruning is not None:
            return
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + pruner.interval
        self._pruning = asyncio.get_running_loop().create_task(pruner.run_once(), name=pruner.name)
        self._pruning.add_done_callback(self._pruned)

    def _pruned(self, task: asyncio.Task[int]) -> None:
        self._pruning = None

    async def close(self) -> None:
        """Wait for a prune in progress (the store is the application's to close)."""
        task = self._pruning
        if task is not None:
            await task

    def _notify(self, event: str, *args: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, event)(*args)
            except Exception:  # a listener's bug must not fail the request that ended a session
                log.exception("session listener %r failed on %s", listener, event)

    # -- helpers -----------------------------------------------------------------
    def can_send_cookie(self, handler: RequestHandler) -> bool:
        """False for a Secure cookie on a plain-HTTP request (the browser would drop it)."""
        return not self.options.cookie.effective_secure or handler.request.protocol == "https"

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
        opened = self.keys.unseal(raw, self.cookie_full_name)
        if opened.payload is None:
            log_rejected_cookie(handler, self.cookie_full_name, raw, reason=opened.failure or "malformed")
            return self.new_session(now)
        session_id = opened.payload.decode("utf-8", "replace")
        key = hash_session_id(session_id)
        record = await self.store.load(key)
        if record is None:
            # Never adopt an ID we do not hold (fixation): a fresh ID is made at commit.
            log_event(audit_log, logging.INFO, "session_unknown", key=short_key(key), remote=handler.request.remote_ip)
            return self.new_session(now)
        if record.expires <= now or record.created + self.options.absolute_timeout <= now:
            reason = "idle" if record.expires <= now else "absolute"
            log_event(audit_log, logging.INFO, "session_expired", key=short_key(key), timeout=reason)
            await self.store.destroy(key)
            self._notify("session_ended", key)
            return self.new_session(now)
        if self.options.bind_address and record.meta.get(ADDRESS_META_KEY, handler.request.remote_ip) != (
            handler.request.remote_ip
        ):
            log_event(
                security_log, logging.WARNING, "session_address_changed", key=short_key(key),
                user=record.user_id, remote=handler.request.remote_ip,
            )
            await self.store.destroy(key)
            self._notify("session_ended", key)
            return self.new_session(now)
        session = Session(
            session_id,
            key,
            stored=record.data,
            created=record.created,
            last_access=record.updated,
            expires=record.expires,
            user_id=record.user_id,
            meta=record.meta,
        )
        state_of(session).resend_cookie = opened.rotated
        return session

    # -- commit ------------------------------------------------------------------
    def plan(self, handler: RequestHandler, session: Session) -> CommitPlan | None:
        """Decide what committing this request does; None when nothing at all.

        Changed values are encoded here, once; :meth:`execute` only carries out.
        """
        options = self.options
        now = self.clock()
        had_cookie = handler.get_cookie(self.cookie_full_name) is not None
        stale_cookie: CookieAction = "clear" if had_cookie else "keep"

        state = state_of(session)
        if session.destroyed:
            if session.key is None and not had_cookie:
                return None
            return CommitPlan("destroy", now, stale_cookie, drop_key=session.key)

        if state.regenerating or session.is_new:
            old_key = None if session.is_new else session.key
            if state.is_empty(session) and not options.save_uninitialized:
                if old_key is None and not had_cookie:
                    return None  # a visitor who stored nothing costs nothing
                return CommitPlan("destroy", now, stale_cookie, drop_key=old_key)
            if not self.can_send_cookie(handler):
                # Storing a session whose cookie cannot reach the browser only leaves an
                # orphan record behind (one per request).
                log_event(
                    log, logging.WARNING, "secure_cookie_over_http", path=handler.request.path,
                    hint="behind a TLS proxy? list it as a trusted proxy so X-Forwarded-Proto counts",
                )
                return None
            items = state.all_items(session)
            self._check_size(items, session.meta)
            meta = dict(session.meta)
            if options.bind_address:
                meta[ADDRESS_META_KEY] = handler.request.remote_ip or ""
            return CommitPlan("create", now, "set", items=items, user_id=session.user_id, meta=meta, drop_key=old_key)

        if state.is_empty(session):  # the handler removed everything: empty sessions are not kept
            return CommitPlan("destroy", now, "clear", drop_key=session.key)

        resend = options.rolling or state.resend_cookie
        cookie: CookieAction = "set" if resend and self.can_send_cookie(handler) else "keep"
        set_items, unset_keys = state.changes(session)
        if set_items or state.meta_changed(session):
            self._check_size(state.applied(set_items, unset_keys), session.meta)
        if set_items or unset_keys or state.user_changed(session) or state.meta_changed(session) or options.resave:
            return CommitPlan(
                "update", now, cookie, items=set_items, unset_keys=unset_keys,
                user_id=session.user_id if state.user_changed(session) else KEEP,
                meta=dict(session.meta) if state.meta_changed(session) else KEEP,
            )
        if now - session.last_access >= options.touch_after:
            return CommitPlan("touch", now, cookie)
        if cookie == "set":
            return CommitPlan("none", now, cookie)
        return None

    def _check_size(self, items: Mapping[str, str], meta: Mapping[str, str]) -> None:
        limit = self.options.max_session_bytes
        pairs = [*items.items(), *meta.items()]
        size = sum(len(name) + len(text) for name, text in pairs)
        if size * 4 > limit:  # characters first: UTF-8 takes at most 4 bytes for each
            size = sum(len(name.encode()) + len(text.encode()) for name, text in pairs)
        if size > limit:
            raise SessionTooLarge(
                f"the session would hold {size} bytes; the limit is {limit}"
            )

    async def execute(self, handler: RequestHandler, session: Session, plan: CommitPlan) -> None:
        """Carry out a plan: the store write(s), then the cookie. Runs before the response."""
        now, cookie = plan.now, plan.cookie
        expires = now + self.options.idle_timeout
        if self.pruner is not None and plan.write != "none":
            self._maybe_prune()  # only requests that write anyway: a read never touches the store
        if plan.write == "create":
            if not await self._create(session, plan, expires):
                cookie = "clear"
        elif plan.write == "update":
            written = await self.store.update(
                session.key,  # type: ignore[arg-type]  # an update plan is for a stored session
                set_items=plan.items,
                unset_keys=plan.unset_keys,
                expires=expires,
                updated=now,
                user_id=plan.user_id,
                meta=plan.meta,
            )
            if written:
                session.expires, session.last_access = expires, now
                state = state_of(session)
                state.mark_saved(session, session.id, session.key, state.applied(plan.items, plan.unset_keys))  # type: ignore[arg-type]
            else:
                # Ended elsewhere (logout, revoke, expiry) while this request ran: do not
                # bring it back from a partial copy.
                log_event(audit_log, logging.INFO, "session_gone_before_save", key=short_key(session.key))
                cookie = "clear"
        elif plan.write == "touch":
            if await self.store.touch(session.key, expires=expires, updated=now):  # type: ignore[arg-type]
                session.expires, session.last_access = expires, now
        elif plan.write == "destroy" and plan.drop_key is not None:
            await self.store.destroy(plan.drop_key)
            log_event(audit_log, logging.INFO, "session_destroyed", key=short_key(plan.drop_key))
            self._notify("session_ended", plan.drop_key)

        if cookie == "set":
            self._set_cookie(handler, session, now)
        elif cookie == "clear":
            clear_cookie(handler, self.options.cookie_name, self.options.cookie)

    async def _create(self, session: Session, plan: CommitPlan, expires: float) -> bool:
        """Store a new (or regenerated) session; False when a creation check ended it again."""
        now = plan.now
        session_id = self.options.id_generator()
        key = hash_session_id(session_id)
        record = Record(plan.items, now, now, expires, plan.user_id, plan.meta)
        await self.store.create(key, record)
        session.created, session.last_access, session.expires = now, now, expires
        state_of(session).mark_saved(session, session_id, key, plan.items)
        if plan.drop_key is not None:
            await self.store.destroy(plan.drop_key)
            self._notify("session_renamed", plan.drop_key, key)
            log_event(audit_log, logging.INFO, "session_regenerated", old=short_key(plan.drop_key), new=short_key(key))
        if isinstance(plan.user_id, str):
            for check in self.creation_checks:
                if not await check(session):
                    await self.end_session(key)
                    log_event(audit_log, logging.INFO, "session_refused_after_create", key=short_key(key),
                              user=plan.user_id)
                    return False
            if self.options.max_user_sessions is not None:
                await self.enforce_user_cap(plan.user_id)
        return True

    async def enforce_user_cap(self, user_id: str) -> int:
        """End the user's oldest sessions beyond ``max_user_sessions``; returns how many.

        Runs after the new session is stored, and every racing creator orders the
        sessions the same way (newest first, then by key), so parallel logins and
        restores converge on the same survivors instead of each sparing itself.
        Remember-me tokens are not sessions and do not count.
        """
        cap = self.options.max_user_sessions
        return 0 if cap is None else await self.end_oldest(user_id, kind="session", keep=cap)

    async def end_oldest(self, user_id: str, *, kind: str, keep: int) -> int:
        """End the user's records of ``kind`` beyond the newest ``keep``; returns how many.

        Every caller orders them the same way (newest first, then by key), so callers
        racing each other converge on the same survivors instead of each sparing itself.
        """
        records = await self.store.list_user(user_id, kind=kind)
        if len(records) <= keep:
            return 0
        records.sort(key=lambda item: (item[1].created, item[0]), reverse=True)
        for key, _ in records[keep:]:
            await self.end_session(key)
            log_event(audit_log, logging.INFO, f"{kind}_cap", user=user_id, ended=short_key(key))
        return len(records) - keep

    def _set_cookie(self, handler: RequestHandler, session: Session, now: float) -> None:
        assert session.id is not None
        remaining = session.created + self.options.absolute_timeout - now
        sealed = self.keys.seal(
            session.id.encode("utf-8"), self.cookie_full_name, max_age=max(remaining, 1)
        )
        set_cookie(handler, self.options.cookie_name, sealed, self.options.cookie)
        state_of(session).resend_cookie = False

    # -- flash -------------------------------------------------------------------
    async def pop_flashes(self, session: Session, category: str | None = None) -> list[tuple[str, str]]:
        """Take the queued flash messages (of one category) so that each shows exactly once.

        Stored messages are taken with the store's atomic ``take``: of parallel requests
        of one session, each message goes to exactly one of them.
        """
        state = state_of(session)
        stored, unsaved = state.flash_names(session, category)
        taken: Mapping[str, str] = {}
        if stored and session.key is not None:
            taken = await self.store.take(session.key, stored) or {}
        return state.drop_flashes(session, stored + unsaved, taken)

    # -- user-wide operations ----------------------------------------------------
    async def destroy_user_sessions(self, user_id: str, *, keep: Session | None = None) -> int:
        """End every session of a user ("log out everywhere", password change)."""
        # "is not None": a Session is a mapping, and an empty one is falsy.
        keep_key = keep.key if keep is not None else None
        count = await self.store.destroy_user(user_id, keep=keep_key)
        log_event(audit_log, logging.INFO, "user_sessions_destroyed", user=user_id, count=count)
        self._notify("user_sessions_ended", user_id, keep_key)
        return count

    async def end_session(self, key: str) -> None:
        """End one stored session by its store key (revoke, session cap), telling the listeners."""
        await self.store.destroy(key)
        log_event(audit_log, logging.INFO, "session_destroyed", key=short_key(key))
        self._notify("session_ended", key)

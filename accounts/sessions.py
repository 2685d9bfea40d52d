"""What a login does to the session: the account service shared by pages, JSON API and websocket.

:class:`AccountSessions` holds every rule about logins, written once, over the
session library's public API (a :class:`~sessions.Session`, the
:class:`~sessions.SessionManager`, :class:`~sessions.RememberMe`):

* **log in**: regenerate the session (new ID; a visitor's data kept, another user's
  never), drop the flash messages queued for the visitor, bind the user, record the
  login time, client and credentials version in the session's metadata
  (:class:`sessions.SessionMeta`), optionally issue a remember-me token. The session
  cap per user is the manager's (``max_user_sessions``);
* **is this login still current** (:func:`login_is_current`): the user exists and the
  session was issued under the user's present credentials version, exactly. A
  session that is not is ended on sight (and the token that restored it forgotten);
  the websocket handshake refuses it;
* **restore from remember-me**: done by the library before the handler runs; the
  token carries the credentials version and the browser's device id, which come
  along into the restored session, so a token from before a password change is no
  login, and the session and its token show as one browser;
* **step-up**: sensitive actions need a password typed within ``reauth_after``
  seconds in this session, never in one restored from a token until the password is
  confirmed (:meth:`AccountSessions.is_fresh`, :meth:`AccountSessions.reauthenticate`);
* **log out**, **log out everywhere**, **password change** and **revoke**: the
  credentials version is bumped *before* records are deleted (log out everywhere,
  password change, theft), so a restore racing the change cannot keep its session.

Methods that set or clear the remember-me cookie take the request's handler as
``cookies`` (``RememberMe`` sets cookies on a handler); None skips the cookie, as
without remember-me.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tornado.web import RequestHandler

from sessions import RememberMe, Session, SessionManager, SessionMeta
from sessions.events import audit_log, log_event, short_key
from sessions.remember import is_token, token_key

from .ratelimit import Decision
from .service import AccountError, Accounts
from .users import User
from .wording import browser_label

#: The session-meta key naming the browser a login happened in: a session, the
#: remember-me token issued with it and the sessions that token restores share it.
DEVICE = "device"
#: The user's public profile, kept in the session's metadata at login so that a
#: logged-in request reads the session and nothing else (see :meth:`AccountSessions.user_of`).
PROFILE_EMAIL, PROFILE_NAME, PROFILE_CREATED = "email", "name", "user_created"
#: Users whose credentials version a process remembers at once (oldest dropped first).
MAX_CACHED_VERSIONS = 10_000


def cache_profile(meta: SessionMeta, user: User) -> None:
    """Keep what pages show about ``user`` in the session (and the credentials version)."""
    meta[PROFILE_EMAIL], meta[PROFILE_NAME] = user.email, user.name
    meta[PROFILE_CREATED] = repr(float(user.created))
    meta.credentials_version = user.credentials_version


def cached_user(session: Session) -> User | None:
    """The user as the session's metadata holds it (no password hash: re-read for that)."""
    meta = session.meta
    version = meta.credentials_version
    if session.user_id is None or version is None or not version.isdigit() or PROFILE_EMAIL not in meta:
        return None
    try:
        created = float(meta.get(PROFILE_CREATED, "0"))
    except ValueError:
        return None
    return User(session.user_id, meta[PROFILE_EMAIL], meta.get(PROFILE_NAME, ""), "", created, int(version))


@dataclass(frozen=True)
class AuthSettings:
    """Account options of the demo (server flags; see the README's table)."""

    #: Concurrent sessions per user; logging in beyond it ends the oldest.
    max_sessions: int = 10
    #: End a session when its client address changes (off: mobile networks change it).
    bind_ip: bool = False
    #: Sensitive actions (revoking other sessions, log out everywhere, password change)
    #: need a password typed within this many seconds, and never a session restored
    #: from a remember-me token until the password is confirmed.
    reauth_after: float = 900.0
    #: Each process remembers a user's credentials version this many seconds before
    #: reading it again. It bounds how long a session could outlive a version bump whose
    #: deletion of the user's sessions failed half-way (a store outage, a crash).
    version_cache_seconds: float = 30.0


@dataclass(frozen=True)
class Client:
    """Who sent the request: the trusted client address and the browser's description."""

    ip: str
    user_agent: str


class StepUpRequired(AccountError):
    """403 until the user confirms the password (POST /auth/reauthenticate)."""

    def __init__(self) -> None:
        super().__init__(403, "reauthentication required", code="reauthentication_required")


def login_is_current(session: Session, user: User | None) -> bool:
    """The user exists and the session was issued under their present credentials version.

    Exact match: a session or token from before a password change, log out
    everywhere or theft (an older version), or with no version at all, is no login.
    """
    return user is not None and session.meta.credentials_version == str(user.credentials_version)


def session_handle(key: str) -> str:
    """An opaque name for a session in lists and revoke URLs: neither its ID nor its store key."""
    return hashlib.sha256(f"handle|{key}".encode()).hexdigest()[:24]


def device_handle(device: str) -> str:
    """An opaque name for one browser (its sessions and remember-me token together)."""
    return hashlib.sha256(f"device|{device}".encode()).hexdigest()[:24]


@dataclass
class AccountSessions:
    accounts: Accounts
    manager: SessionManager
    remember: RememberMe | None
    settings: AuthSettings
    #: ``notify(user_id, payload, exclude_key=...)``: tell the user's open sockets (``/ws``).
    notify: Callable[..., object] | None = None
    #: user id -> (credentials version, when read): see :meth:`user_of`.
    _versions: dict[str, tuple[int, float]] = field(default_factory=dict, init=False, repr=False)

    @property
    def _version_ttl(self) -> float:
        return self.settings.version_cache_seconds

    def _notice(self, user_id: str, event: str, *, exclude_key: str | None = None, **fields: str) -> None:
        if self.notify is not None:
            self.notify(user_id, {"type": "notice", "event": event, **fields}, exclude_key=exclude_key)

    # -- who is logged in ------------------------------------------------------------
    async def user_of(self, session: Session, *, strict: bool = False) -> tuple[User | None, bool]:
        """(the session's user, whether the login is current: :func:`login_is_current`).

        One store round trip per logged-in request, the session's own: a stored session
        with the user's profile in its metadata is current without reading the user.
        Why that is safe: a session with a user is checked against the user record once
        more *after* it is stored (:meth:`still_current`, a manager creation check), and
        a password change, log out everywhere or theft bumps the credentials version
        *before* deleting the user's sessions through the user index. A session stored
        before that deletion listed the index is deleted by it; one stored after it saw
        the new version in its check and was ended at once. As a second line (a deletion
        that failed half-way), each process compares with the user's version as read at
        most ``version_cache_seconds`` ago. Sessions from before this rule (no profile),
        sessions restored in this request and ``strict`` callers (the websocket
        handshake) read the user.
        """
        if session.user_id is None:
            return None, False
        if not (strict or session.is_new):
            cached = cached_user(session)
            known = self._versions.get(session.user_id)
            if cached is not None and known is not None and self.manager.clock() - known[1] < self._version_ttl:
                return cached, known[0] == cached.credentials_version
        user = await self.accounts.users.by_id(session.user_id)
        self._remember_version(session.user_id, user)
        current = login_is_current(session, user)
        if current and user is not None:
            cache_profile(session.meta, user)
        return user, current

    def _remember_version(self, user_id: str, user: User | None) -> None:
        versions = self._versions
        if user is None:
            versions.pop(user_id, None)
            return
        if len(versions) >= MAX_CACHED_VERSIONS and user_id not in versions:
            del versions[next(iter(versions))]  # the oldest entry
        versions[user_id] = (user.credentials_version, self.manager.clock())

    async def still_current(self, session: Session) -> bool:
        """The manager's creation check: after the new session is stored, is its login still current?"""
        if session.user_id is None:
            return True
        user = await self.accounts.users.by_id(session.user_id)
        self._remember_version(session.user_id, user)
        return login_is_current(session, user)

    async def renamed(self, session: Session, user: User) -> None:
        """Show the new name in this session and the user's other sessions (best effort)."""
        session.meta[PROFILE_NAME] = user.name
        store = self.manager.store
        for key, record in await store.list_user(user.id, kind="session"):
            if key == session.key or record.meta.get(PROFILE_NAME) in (None, user.name):
                continue
            meta = {**record.meta, PROFILE_NAME: user.name}
            await store.update(key, set_items={}, unset_keys=(), expires=record.expires, updated=record.updated,
                               meta=meta)

    async def signed_in(
        self, session: Session, *, address: str | None = None, cookies: RequestHandler | None = None
    ) -> User | None:
        """The user whose current login ``session`` is; a stale login is ended here.

        (An address change under ``bind_address`` ends the session in the manager.)
        """
        if session.user_id is None:
            return None
        user, current = await self.user_of(session)
        if current:
            return user
        reason = "user_gone" if user is None else "credentials_changed"
        log_event(audit_log, logging.INFO, "session_ended", reason=reason, key=short_key(session.key), remote=address)
        restored = session.meta.restored
        session.destroy()
        if restored and self.remember is not None and cookies is not None:
            await self.remember.forget(cookies)  # the token that brought it back goes too
        return None

    # -- log in and out ----------------------------------------------------------------
    async def log_in(
        self, session: Session, user: User, client: Client, *, remember: bool = False,
        cookies: RequestHandler | None = None,
    ) -> str:  # fmt: skip
        """Make ``session`` a fresh login of ``user``; returns the browser's device id.

        With ``remember`` (and ``cookies``), also issue a remember-me token for this browser.
        """
        old_key = session.key
        # A visitor's data (the counter) comes along; another user's never does. Flash
        # messages queued before the login were for the visitor, not for this user.
        session.regenerate(keep_data=session.user_id in (None, user.id))
        session.discard_flashes()
        session.user_id = user.id
        session.meta.clear()
        device = secrets.token_hex(8)
        meta = session.meta
        meta.login_at = self.manager.clock()
        meta.client(client.ip, client.user_agent)
        cache_profile(meta, user)
        self._remember_version(user.id, user)
        meta[DEVICE] = device
        if remember and self.remember is not None and cookies is not None:
            token_meta = SessionMeta()
            token_meta.client(client.ip, client.user_agent)
            token_meta.credentials_version = user.credentials_version
            token_meta[DEVICE] = device
            await self.remember.issue(cookies, user.id, token_meta)
        self._notice(user.id, "login", exclude_key=old_key, ip=meta.ip or "", user_agent=meta.user_agent or "",
                     browser=browser_label(meta.user_agent or ""))
        log_event(audit_log, logging.INFO, "login_success", user=user.id, remote=client.ip)
        return device

    async def log_out(
        self, session: Session, *, address: str | None = None, cookies: RequestHandler | None = None
    ) -> None:
        """End this session and this browser's remember-me token."""
        user_id = session.user_id
        session.destroy()
        if self.remember is not None and cookies is not None:
            await self.remember.forget(cookies)
        if user_id:
            log_event(audit_log, logging.INFO, "logout", user=user_id, remote=address)

    async def log_out_everywhere(
        self, session: Session, user: User, *, address: str | None = None, cookies: RequestHandler | None = None
    ) -> int:
        """End every session and token of the user (step-up first: :meth:`require_fresh`)."""
        self._notice(user.id, "logout_everywhere")  # then their sockets close with 1008
        # First the version (a restore racing this creates its session under the old
        # one, which no longer counts), then the records themselves.
        await self.accounts.revoke_logins(user.id)
        ended = await self.manager.destroy_user_sessions(user.id)
        await self.log_out(session, address=address, cookies=cookies)
        log_event(audit_log, logging.INFO, "logout_everywhere", user=user.id, count=ended)
        return ended

    async def change_password(
        self, session: Session, user: User, current: str, new: str, address: str, *,
        cookies: RequestHandler | None = None,
    ) -> int:  # fmt: skip
        """Change the password (the current one checked and counted like a login); end the other logins.

        This session stays, under a new ID, and counts as confirmed (the current password
        was just typed). If this browser was remembered it stays so: its old token ends
        with every other one and a fresh token is issued under the new credentials.
        Returns how many *other browsers* were logged out (this browser's own records,
        its old token included, are not counted). Raises AccountError: 403 wrong
        password, 429 over the limit, 409 when another change won the race, 400 a bad
        new password.
        """
        own_token = self.own_token_key(cookies)
        this_device = session.meta.get(DEVICE)
        try:
            changed = await self.accounts.change_password(user, current, new, address)
        except AccountError as error:
            if error.status == 403:
                log_event(audit_log, logging.WARNING, "password_check_failure", user=user.id,
                          action="password_change", remote=address)
            elif error.status == 409:
                log_event(audit_log, logging.WARNING, "password_change_conflict", user=user.id, remote=address)
            raise
        # The other browsers, named before their records go (a session and its token are one).
        entries = await self._entries(user, session, own_token)
        others = {e["device"] for _, e in entries if not e["this_browser"]}
        ended = await self.manager.destroy_user_sessions(changed.id, keep=session)
        session.regenerate(keep_data=True)
        meta = session.meta
        cache_profile(meta, changed)
        meta.reauth_at = self.manager.clock()  # the current password was typed just now
        meta.restored = None
        if self.remember is not None and cookies is not None and cookies.get_cookie(self.remember.cookie_full_name):
            token_meta = SessionMeta()
            token_meta.client(meta.ip or address, meta.user_agent or "")
            token_meta.credentials_version = changed.credentials_version
            if this_device:
                token_meta[DEVICE] = this_device
            await self.remember.issue(cookies, changed.id, token_meta)  # the old token ended with the others
        log_event(audit_log, logging.INFO, "password_changed", user=changed.id, others_ended=ended,
                  other_browsers=len(others))
        return len(others)

    # -- step-up -------------------------------------------------------------------------
    def is_fresh(self, session: Session) -> bool:
        """A password typed recently in this session, which was not restored by a token."""
        meta = session.meta
        if meta.restored:
            return False
        confirmed = meta.reauth_at or meta.login_at or 0.0
        return self.manager.clock() - confirmed <= self.settings.reauth_after

    def require_fresh(self, session: Session) -> None:
        """Raise StepUpRequired unless the password was confirmed recently."""
        if not self.is_fresh(session):
            raise StepUpRequired()

    async def reauthenticate(self, session: Session, user: User, password: str, address: str) -> Decision:
        """Confirm the password for sensitive actions; counted like a login attempt.

        Raises AccountError 429 over the login limit, 401 for a wrong password.
        """
        try:
            decision = await self.accounts.check_password(user, password, address)
        except AccountError as error:
            if error.status == 429:
                raise
            log_event(audit_log, logging.WARNING, "reauth_failure", user=user.id, remote=address)
            raise AccountError(401, "the password is incorrect", field="password", limit=error.limit) from None
        session.meta.reauth_at = self.manager.clock()
        session.meta.restored = None
        log_event(audit_log, logging.INFO, "reauth_success", user=user.id, remote=address)
        return decision

    # -- active sessions -----------------------------------------------------------------
    def own_token_key(self, cookies: RequestHandler | None) -> str | None:
        """The store key of this browser's remember-me token, if it has one."""
        remember = self.remember
        raw = cookies.get_cookie(remember.cookie_full_name) if remember is not None and cookies is not None else None
        if remember is None or raw is None:
            return None
        opened = remember.manager.keys.open(raw, remember.cookie_full_name)
        return token_key(opened.decode("utf-8", "replace").partition(":")[0]) if opened else None

    async def _entries(
        self, user: User, session: Session, own_token: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        this_device = session.meta.get(DEVICE)
        listed = []
        for key, record in await self.manager.store.list_user(user.id):
            token = is_token(record)
            meta = SessionMeta(record.meta)
            device = meta.get(DEVICE)
            entry = {
                "handle": session_handle(key),
                "kind": "remembered_device" if token else "session",
                "current": key == (own_token if token else session.key),
                "created": record.created,
                "last_seen": record.updated,
                "ip": meta.ip or "",
                "user_agent": meta.user_agent or "",
                "device": device_handle(device) if device else session_handle(key),
                "this_browser": key in (session.key, own_token) or (device is not None and device == this_device),
                "signed_in_with": None if token else ("remember_me" if meta.restored else "password"),
                "login_at": None if token else meta.login_at,
            }
            listed.append((key, entry))
        return listed

    async def active(self, user: User, session: Session, *, own_token: str | None = None) -> list[dict[str, Any]]:
        """Every session and remember-me token of the user, one entry each (the JSON API's ``sessions``)."""
        return [entry for _, entry in await self._entries(user, session, own_token)]

    async def devices(self, user: User, session: Session, *, own_token: str | None = None) -> list[dict[str, Any]]:
        """One entry per browser (a session and the token that restores it are one), this one first."""
        return group_devices(await self.active(user, session, own_token=own_token))

    async def revoke(
        self, user: User, session: Session, handle: str, *, address: str | None = None,
        cookies: RequestHandler | None = None,
    ) -> bool:
        """End the session or token (a handle of ``sessions``), or the whole browser (a handle
        of ``devices``), named by ``handle``; False when there is none.

        This browser's own records need no step-up (ending this session is a log out);
        another browser's do (StepUpRequired).
        """
        own_token = self.own_token_key(cookies)
        entries = await self._entries(user, session, own_token)
        targets = [(key, e) for key, e in entries if e["handle"] == handle]
        mine = all(e["current"] for _, e in targets)
        if not targets:
            targets = [(key, e) for key, e in entries if e["device"] == handle]
            mine = all(e["this_browser"] for _, e in targets)
        if not targets:
            return False
        if not mine:
            self.require_fresh(session)  # ending another device's access is sensitive
        keys = [key for key, _ in targets]
        for key in keys:
            if key != session.key:
                await self.manager.end_session(key)
            log_event(audit_log, logging.INFO, "session_revoked", user=user.id, key=short_key(key))
        if session.key in keys:
            await self.log_out(session, address=address, cookies=cookies)
        elif own_token in keys and self.remember is not None and cookies is not None:
            self.remember.clear_cookie(cookies)
        self._notice(user.id, "revoked")
        return True


def group_devices(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:meth:`AccountSessions.active`'s entries as one per browser (the JSON API's ``devices``),
    this browser first, then the most recently used."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["device"], []).append(entry)
    devices = [_device(handle, group) for handle, group in groups.items()]
    devices.sort(key=lambda item: (not item["current"], -item["last_seen"]))
    return devices


def _device(handle: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One browser's row from its records: newest use first."""
    entries.sort(key=lambda e: -e["last_seen"])
    sessions = [e for e in entries if e["kind"] == "session"]
    newest = entries[0]
    newest_session = sessions[0] if sessions else None
    remembered = len(sessions) < len(entries)
    return {
        "handle": handle,
        "kind": "remembered_device" if remembered else "session",
        "remembered": remembered,
        "current": any(e["this_browser"] for e in entries),
        "created": min(e["created"] for e in entries),
        "last_seen": newest["last_seen"],
        "ip": newest["ip"],
        "user_agent": newest["user_agent"],
        "signed_in_with": newest_session["signed_in_with"] if newest_session else None,
        "sessions": len(sessions),
        "records": [e["handle"] for e in entries],
    }


def client_of(request: Any) -> Client:
    """The client of a Tornado request: ``remote_ip`` (proxy-aware) and the User-Agent header."""
    return Client(request.remote_ip or "", request.headers.get("User-Agent", ""))


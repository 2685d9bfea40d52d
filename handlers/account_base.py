"""What the account pages and the auth API share: who is logged in, login and logout.

The rules live here once (and in :mod:`accounts.service`), so the HTML pages and the
JSON API cannot drift apart:

* login regenerates the session (new ID, the visitor's data kept), binds the user,
  records login time, client address and browser in the session's metadata, and
  ends the oldest sessions beyond the per-user cap;
* a session whose user is gone, whose credentials changed, or (optionally) whose
  client address changed, is ended on sight;
* logout destroys the session and asks the browser to clear cookies and storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from tornado.web import HTTPError

from accounts.ratelimit import Decision
from accounts.service import AccountError, Accounts
from accounts.users import User
from sessions import RememberMe, Session
from sessions.events import audit_log, log_event, short_key
from sessions.remember import is_token, token_key
from sessions.websocket import SocketRegistry

from .base import http_error_message
from .preferences import PreferencesMixin

#: Longest user agent kept in a session's metadata.
MAX_USER_AGENT = 200
CLEAR_SITE_DATA = '"cookies", "storage"'


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


class ReauthenticationRequired(HTTPError):
    """403 until the user confirms the password (POST /auth/reauthenticate)."""

    def __init__(self) -> None:
        super().__init__(403, "reauthentication required")


def session_handle(key: str) -> str:
    """An opaque name for a session in lists and revoke URLs: neither its ID nor its store key."""
    return hashlib.sha256(f"handle|{key}".encode()).hexdigest()[:24]


class AccountHandler(PreferencesMixin):
    """A demo handler that knows about users."""

    _account: User | None = None
    _account_loaded = False

    @property
    def accounts(self) -> Accounts:
        accounts: Accounts = self.settings["accounts"]
        return accounts

    @property
    def auth(self) -> AuthSettings:
        auth: AuthSettings = self.settings.get("auth") or AuthSettings()
        return auth

    # -- who is logged in ------------------------------------------------------------
    async def current_account(self) -> User | None:
        """The logged-in user of this request's session, checked against the user store."""
        if self._account_loaded:
            return self._account
        self._account_loaded = True
        session = await self.get_session()
        user_id = session.user_id
        if user_id is None:
            return None
        # (An address change under --bind-ip ends the session in the manager, on every route.)
        reason = None
        user = await self.accounts.users.by_id(user_id)
        if user is None:
            reason = "user_gone"
        if user is not None and session.meta.get("cv") != str(user.credentials_version):
            # Issued under a password that has changed since (a login or a remember-me
            # token that raced the change), or with no credentials version at all.
            reason, user = "credentials_changed", None
        if user is None:
            log_event(
                audit_log, logging.INFO, "session_ended", reason=reason, key=short_key(session.key),
                remote=self.request.remote_ip,
            )
            restored = session.meta.get("restored")
            session.destroy()
            if restored and self.remember_me is not None:
                await self.remember_me.forget(self)  # the token that brought it back goes too
            return None
        self._account = user
        self.current_user = user
        return user

    # -- login and logout --------------------------------------------------------------
    @property
    def remember_me(self) -> RememberMe | None:
        remember: RememberMe | None = self.settings.get("remember_me")
        return remember

    def _client_meta(self) -> dict[str, str]:
        return {"ip": self.request.remote_ip or "", "ua": self.request.headers.get("User-Agent", "")[:MAX_USER_AGENT]}

    async def log_in(self, user: User, *, remember: bool = False) -> Session:
        """Regenerate the session for ``user`` (pre-login data kept) and record the login.

        With ``remember``, also issue a remember-me token (its own cookie).
        """
        session = await self.get_session()
        old_key = session.key
        # A visitor's data (the counter) comes along; another user's never does. Flash
        # messages queued before the login were for the visitor, not for this user.
        session.regenerate(keep_data=session.user_id in (None, user.id))
        session.discard_flashes()
        session.user_id = user.id
        session.meta.clear()
        session.meta.update(
            login=f"{self.session_manager.clock():.0f}",
            ip=self.request.remote_ip or "",
            ua=self.request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
            cv=str(user.credentials_version),
        )
        # The session cap (--max-sessions) is the manager's: it ends the oldest sessions
        # after this one is stored, whichever way a session is created.
        if remember and self.remember_me is not None:
            await self.remember_me.issue(self, user.id, {**self._client_meta(), "cv": str(user.credentials_version)})
        self._account, self._account_loaded, self.current_user = user, True, user
        self.live_notice(user.id, "login", exclude_key=old_key, ip=session.meta["ip"], user_agent=session.meta["ua"])
        log_event(audit_log, logging.INFO, "login_success", user=user.id, remote=self.request.remote_ip)
        return session

    async def log_out(self) -> None:
        session = await self.get_session()
        user_id = session.user_id
        session.destroy()
        if self.remember_me is not None:
            await self.remember_me.forget(self)  # this browser's token goes too
        self.set_header("Clear-Site-Data", CLEAR_SITE_DATA)
        self._account, self._account_loaded, self.current_user = None, True, None
        if user_id:
            log_event(audit_log, logging.INFO, "logout", user=user_id, remote=self.request.remote_ip)

    async def log_out_everywhere(self, user: User) -> int:
        self.live_notice(user.id, "logout_everywhere")  # then their sockets close with 1008
        # First the version (a restore racing this creates its session under the old
        # one, which no longer counts), then the records themselves.
        await self.accounts.revoke_logins(user.id)
        ended = await self.session_manager.destroy_user_sessions(user.id)
        await self.log_out()
        log_event(audit_log, logging.INFO, "logout_everywhere", user=user.id, count=ended)
        return ended

    async def change_password(self, user: User, current: str, new: str) -> int:
        """Change the password (current one checked and counted like a login), end the other sessions.

        Returns how many other sessions ended. Raises AccountError (403 wrong password,
        429 over the limit, 409 when another change won the race, 400 bad new password).
        """
        try:
            changed = await self.accounts.change_password(user, current, new, self.request.remote_ip or "")
        except AccountError as error:
            if error.status == 403:
                log_event(audit_log, logging.WARNING, "password_check_failure", user=user.id,
                          action="password_change", remote=self.request.remote_ip)
            elif error.status == 409:
                log_event(audit_log, logging.WARNING, "password_change_conflict", user=user.id,
                          remote=self.request.remote_ip)
            raise
        return await self.after_password_change(changed)

    async def after_password_change(self, user: User) -> int:
        """Keep this session (under a new ID) and end every other session of the user."""
        session = await self.get_session()
        ended = await self.session_manager.destroy_user_sessions(user.id, keep=session)
        session.regenerate(keep_data=True)
        session.meta["cv"] = str(user.credentials_version)
        if self.remember_me is not None and self.get_cookie(self.remember_me.cookie_full_name):
            self.remember_me.clear_cookie(self)  # its token ended with the others
        log_event(audit_log, logging.INFO, "password_changed", user=user.id, others_ended=ended)
        return ended

    # -- step-up -------------------------------------------------------------------------
    def is_fresh(self, session: Session) -> bool:
        """A password typed recently in this session, which was not restored by a token."""
        if session.meta.get("restored"):
            return False
        confirmed = session.meta.get("reauth") or session.meta.get("login") or "0"
        try:
            return self.session_manager.clock() - float(confirmed) <= self.auth.reauth_after
        except ValueError:
            return False

    async def require_fresh(self) -> None:
        """Raise ReauthenticationRequired unless the password was confirmed recently."""
        if not self.is_fresh(await self.get_session()):
            raise ReauthenticationRequired()

    async def reauthenticate(self, user: User, password: str) -> bool:
        """Confirm the password for sensitive actions; counted like a login attempt."""
        try:
            decision = await self.accounts.check_password(user, password, self.request.remote_ip or "")
        except AccountError as error:
            self.rate_limit_headers(error.limit)
            if error.status == 429:
                raise HTTPError(429, "too many attempts; try again later") from None
            log_event(audit_log, logging.WARNING, "reauth_failure", user=user.id, remote=self.request.remote_ip)
            return False
        self.rate_limit_headers(decision)
        session = await self.get_session()
        session.meta["reauth"] = f"{self.session_manager.clock():.0f}"
        session.meta.pop("restored", None)
        log_event(audit_log, logging.INFO, "reauth_success", user=user.id, remote=self.request.remote_ip)
        return True

    # -- active sessions -------------------------------------------------------------
    def _own_token_key(self) -> str | None:
        """The store key of this browser's remember-me token, if it has one."""
        remember = self.remember_me
        raw = self.get_cookie(remember.cookie_full_name) if remember is not None else None
        if remember is None or raw is None:
            return None
        opened = remember.manager.keys.open(raw, remember.cookie_full_name)
        return token_key(opened.decode("utf-8", "replace").partition(":")[0]) if opened else None

    async def active_sessions(self, user: User) -> list[dict[str, Any]]:
        """The user's sessions and remembered devices, newest first."""
        session = await self.get_session()
        own_token = self._own_token_key()
        listed = []
        for key, record in await self.session_manager.store.list_user(user.id):
            token = is_token(record)
            listed.append(
                {
                    "handle": session_handle(key),
                    "kind": "remembered_device" if token else "session",
                    "current": key == (own_token if token else session.key),
                    "created": record.created,
                    "last_seen": record.updated,
                    "ip": record.meta.get("ip", ""),
                    "user_agent": record.meta.get("ua", ""),
                }
            )
        return listed

    async def revoke(self, user: User, handle: str) -> bool:
        """End the user's session named by ``handle``; False when there is none."""
        session = await self.get_session()
        for key, _ in await self.session_manager.store.list_user(user.id):
            if session_handle(key) == handle:
                own_token = key == self._own_token_key()
                if key == session.key:
                    await self.log_out()
                else:
                    if not own_token:
                        await self.require_fresh()  # ending another device's access is sensitive
                    await self.session_manager.end_session(key)
                    if own_token and self.remember_me is not None:
                        self.remember_me.clear_cookie(self)
                self.live_notice(user.id, "revoked")
                log_event(audit_log, logging.INFO, "session_revoked", user=user.id, key=short_key(key))
                return True
        return False

    # -- helpers ------------------------------------------------------------------------
    def live_notice(self, user_id: str, event: str, *, exclude_key: str | None = None, **fields: str) -> None:
        """Tell the user's open sockets in this process (``/ws``) about a session event."""
        registry: SocketRegistry | None = self.settings.get("socket_registry")
        if registry is not None:
            registry.send_to_user(user_id, {"type": "notice", "event": event, **fields}, exclude_key=exclude_key)

    def log_login_failure(self, email: str) -> None:
        """One audit line per failed login: the account as a hash, never the typed text."""
        account = hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:16]
        log_event(audit_log, logging.WARNING, "login_failure", account=account, remote=self.request.remote_ip)

    def rate_limit_headers(self, decision: Decision | None) -> None:
        if decision is not None:
            for name, value in decision.headers().items():
                self.set_header(name, value)
            if not decision.allowed:
                log_event(
                    audit_log, logging.WARNING, "rate_limited", path=self.request.path, remote=self.request.remote_ip
                )


class JSONAccountHandler(AccountHandler):
    """The auth API: JSON in and out, JSON errors, the XSRF cookie handed out on GET."""

    def wants_json(self) -> bool:
        return True

    def prepare(self) -> None:
        self.depends_on_cookies()
        if self.request.method == "GET" and not self.get_cookie(self.settings.get("xsrf_cookie_name", "_xsrf")):
            _ = self.xsrf_token  # sets the cookie that unsafe calls echo in X-XSRFToken

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"error": <what went wrong>, "status": <code>}``, the shape of every refusal here."""
        message = http_error_message(kwargs.get("exc_info", (None, None, None))[1]) or self._reason
        if status_code >= 500:
            message = self._reason
        if status_code == 503:
            self.set_header("Retry-After", "5")
        self.set_header("Cache-Control", "no-store")
        self.finish({"error": message, "status": status_code})

    def json_body(self, *, flags: tuple[str, ...] = (), **fields: int) -> dict[str, Any]:
        """The body as a JSON object with these string fields (name=max length) and optional
        boolean ``flags`` (False when absent); anything else is a 400."""
        content_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise HTTPError(400, "send a JSON body with Content-Type: application/json")
        try:
            data = json.loads(self.request.body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise HTTPError(400, "the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
        unknown = sorted(set(data) - set(fields) - set(flags))
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(map(repr, unknown))[:200]}")
        clean: dict[str, Any] = {}
        for name in flags:
            value = data.get(name, False)
            if not isinstance(value, bool):
                raise HTTPError(400, f"{name} must be true or false")
            clean[name] = value
        for name, limit in fields.items():
            value = data.get(name)
            if not isinstance(value, str):
                raise HTTPError(400, f"{name} must be a string")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, not text
                raise HTTPError(400, f"{name} must be valid Unicode text") from None
            if len(value) > limit:
                raise HTTPError(400, f"{name} must be at most {limit} characters")
            clean[name] = value
        return clean

    async def require_account(self) -> User:
        user = await self.current_account()
        if user is None:
            raise HTTPError(401, "log in first")
        return user

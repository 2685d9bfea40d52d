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
import time
from dataclasses import dataclass
from typing import Any

from tornado.web import HTTPError

from accounts.ratelimit import Decision
from accounts.service import Accounts
from accounts.users import User
from sessions import Session
from sessions.events import audit_log, log_event, short_key

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
        reason = None
        if self.auth.bind_ip and session.meta.get("ip") not in (None, self.request.remote_ip):
            reason = "address_changed"
        user = None if reason else await self.accounts.users.by_id(user_id)
        if reason is None and user is None:
            reason = "user_gone"
        if user is not None and session.meta.get("cv") not in (None, str(user.credentials_version)):
            reason, user = "credentials_changed", None
        if user is None:
            log_event(
                audit_log, logging.INFO, "session_ended", reason=reason, key=short_key(session.key),
                remote=self.request.remote_ip,
            )
            session.destroy()
            return None
        self._account = user
        self.current_user = user
        return user

    # -- login and logout --------------------------------------------------------------
    async def log_in(self, user: User) -> Session:
        """Regenerate the session for ``user`` (pre-login data kept) and record the login."""
        session = await self.get_session()
        old_key = session.key
        # A visitor's data (counter, flashes) comes along; another user's never does.
        session.regenerate(keep_data=session.user_id in (None, user.id))
        session.user_id = user.id
        session.meta.clear()
        session.meta.update(
            login=f"{time.time():.0f}",
            ip=self.request.remote_ip or "",
            ua=self.request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
            cv=str(user.credentials_version),
        )
        await self._enforce_session_cap(user, keep=old_key)
        self._account, self._account_loaded, self.current_user = user, True, user
        log_event(audit_log, logging.INFO, "login_success", user=user.id, remote=self.request.remote_ip)
        return session

    async def _enforce_session_cap(self, user: User, *, keep: str | None) -> None:
        """End the user's oldest sessions so that, with the new one, there are at most max_sessions."""
        store = self.session_manager.store
        others = [(key, rec) for key, rec in await store.list_user(user.id) if key != keep]
        excess = len(others) - (self.auth.max_sessions - 1)
        if excess <= 0:
            return
        for key, _ in sorted(others, key=lambda item: item[1].created)[:excess]:
            await store.destroy(key)
            log_event(audit_log, logging.INFO, "session_cap", user=user.id, ended=short_key(key))

    async def log_out(self) -> None:
        session = await self.get_session()
        user_id = session.user_id
        session.destroy()
        self.set_header("Clear-Site-Data", CLEAR_SITE_DATA)
        self._account, self._account_loaded, self.current_user = None, True, None
        if user_id:
            log_event(audit_log, logging.INFO, "logout", user=user_id, remote=self.request.remote_ip)

    async def log_out_everywhere(self, user: User) -> int:
        ended = await self.session_manager.destroy_user_sessions(user.id)
        await self.log_out()
        log_event(audit_log, logging.INFO, "logout_everywhere", user=user.id, count=ended)
        return ended

    async def after_password_change(self, user: User) -> int:
        """Keep this session (under a new ID) and end every other session of the user."""
        session = await self.get_session()
        ended = await self.session_manager.destroy_user_sessions(user.id, keep=session)
        session.regenerate(keep_data=True)
        session.meta["cv"] = str(user.credentials_version)
        log_event(audit_log, logging.INFO, "password_changed", user=user.id, others_ended=ended)
        return ended

    # -- active sessions -------------------------------------------------------------
    async def active_sessions(self, user: User) -> list[dict[str, Any]]:
        session = await self.get_session()
        listed = []
        for key, record in await self.session_manager.store.list_user(user.id):
            listed.append(
                {
                    "handle": session_handle(key),
                    "current": key == session.key,
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
                if key == session.key:
                    await self.log_out()
                else:
                    await self.session_manager.store.destroy(key)
                log_event(audit_log, logging.INFO, "session_revoked", user=user.id, key=short_key(key))
                return True
        return False

    # -- helpers ------------------------------------------------------------------------
    def log_login_failure(self, email: str) -> None:
        """One audit line per failed login: the account as a hash, never the typed text."""
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]
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

    def json_body(self, **fields: int) -> dict[str, str]:
        """The body as a JSON object with exactly these string fields (name=max length)."""
        content_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise HTTPError(400, "send a JSON body with Content-Type: application/json")
        try:
            data = json.loads(self.request.body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise HTTPError(400, "the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(map(repr, unknown))[:200]}")
        clean: dict[str, str] = {}
        for name, limit in fields.items():
            value = data.get(name)
            if not isinstance(value, str):
                raise HTTPError(400, f"{name} must be a string")
            if len(value) > limit:
                raise HTTPError(400, f"{name} must be at most {limit} characters")
            clean[name] = value
        return clean

    async def require_account(self) -> User:
        user = await self.current_account()
        if user is None:
            raise HTTPError(401, "log in first")
        return user

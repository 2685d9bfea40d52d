"""The handler side of accounts, shared by the account pages and the auth API: thin glue.

Every rule (who is logged in, what a login, a logout or a password change does,
step-up, active sessions) is :class:`accounts.sessions.AccountSessions`, the one
service that pages, JSON API and websocket call; this module only hands it the
request's session, client and cookies, and remembers who is logged in for the rest
of the request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from accounts.service import Accounts
from accounts.sessions import (
    AccountSessions,
    AuthSettings,
    Client,
    StepUpRequired,
    client_of,
    session_handle,
)
from accounts.users import User
from sessions import Session, StoreError

from .base import BaseHandler

log = logging.getLogger("demo")

__all__ = ["AccountHandler", "AuthSettings", "ReauthenticationRequired", "session_handle"]

CLEAR_SITE_DATA = '"cookies", "storage"'
#: The old name of the step-up refusal (403 until the password is confirmed).
ReauthenticationRequired = StepUpRequired


class AccountHandler(BaseHandler):
    """A demo handler that knows about users (through the account service)."""

    _account: User | None = None
    _account_loaded = False

    @property
    def accounts(self) -> Accounts:
        accounts: Accounts = self.settings["accounts"]
        return accounts

    @property
    def account_sessions(self) -> AccountSessions:
        service: AccountSessions = self.settings["account_sessions"]
        return service

    @property
    def client(self) -> Client:
        return client_of(self.request)

    @property
    def address(self) -> str:
        return self.request.remote_ip or ""

    async def current_account(self) -> User | None:
        """The logged-in user of this request's session (a stale login is ended on sight)."""
        if not self._account_loaded:
            self._account_loaded = True
            session = await self.get_session()
            self._account = await self.account_sessions.signed_in(session, address=self.address, cookies=self)
            self.current_user = self._account
        return self._account

    # -- error pages in the visitor's own state -------------------------------------------
    def error_page_user(self) -> tuple[Any, bool]:
        return self._account, self._account_loaded

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """An HTML error page learns who is asking first (one session read), unless the
        store is what failed: its navigation is then that of any other page."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if (
            self._account_loaded or self._headers_written or self._finished or status_code >= 500
            or isinstance(error, StoreError) or self.wants_json() or self.request.connection is None
        ):
            super().send_error(status_code, **kwargs)
            return
        self._account_loaded = True  # whatever happens below, the page renders once
        self._error_page_task = asyncio.ensure_future(self._send_error_knowing_user(status_code, kwargs))

    async def _send_error_knowing_user(self, status_code: int, kwargs: dict[str, Any]) -> None:
        try:
            self._account_loaded = False
            await self.current_account()
        except Exception as exc:  # the store, a stale login...: the page renders without a user
            log.debug("error page without the visitor's login: %r", exc)
            self._account, self._account_loaded = None, False
        try:
            super().send_error(status_code, **kwargs)
        except Exception:
            log.exception("error page failed")

    def _now_logged_in(self, user: User | None) -> None:
        self._account, self._account_loaded, self.current_user = user, True, user

    async def log_in(self, user: User, *, remember: bool = False) -> Session:
        """A fresh login of ``user`` in this session (and a remember-me token with ``remember``)."""
        session = await self.get_session()
        await self.account_sessions.log_in(session, user, self.client, remember=remember, cookies=self)
        self._now_logged_in(user)
        return session

    async def log_out(self) -> None:
        await self.account_sessions.log_out(await self.get_session(), address=self.address, cookies=self)
        self.set_header("Clear-Site-Data", CLEAR_SITE_DATA)
        self._now_logged_in(None)

    async def log_out_everywhere(self, user: User) -> int:
        session = await self.get_session()
        ended = await self.account_sessions.log_out_everywhere(session, user, address=self.address, cookies=self)
        self.set_header("Clear-Site-Data", CLEAR_SITE_DATA)
        self._now_logged_in(None)
        return ended

    async def change_password(self, user: User, current: str, new: str) -> int:
        session = await self.get_session()
        return await self.account_sessions.change_password(session, user, current, new, self.address, cookies=self)

    def is_fresh(self, session: Session) -> bool:
        return self.account_sessions.is_fresh(session)

    async def revoke(self, user: User, handle: str) -> bool:
        session = await self.get_session()
        revoked = await self.account_sessions.revoke(user, session, handle, address=self.address, cookies=self)
        if revoked and session.destroyed:
            self.set_header("Clear-Site-Data", CLEAR_SITE_DATA)
            self._now_logged_in(None)
        return revoked

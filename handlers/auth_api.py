"""The auth JSON API: register, login, logout, logout everywhere, profile, password,
active sessions, flash messages.

JSON in and out; unsafe calls carry the XSRF token in ``X-XSRFToken`` (any GET here
hands out the cookie). Every error is ``{"error", "status", "message"}`` with a 4xx
status, never a traceback.
"""

from __future__ import annotations

from typing import Any

from tornado.web import HTTPError

from accounts.passwords import MAX_LENGTH as MAX_PASSWORD
from accounts.service import AccountError
from accounts.users import MAX_EMAIL, MAX_NAME

from .account_base import JSONAccountHandler


class AuthAPIHandler(JSONAccountHandler):
    def fail(self, error: AccountError) -> None:
        """Answer an AccountError: its status and message, with RateLimit headers when counted."""
        self.rate_limit_headers(error.limit)
        body: dict[str, Any] = {"error": error.message, "status": error.status}
        if error.field:
            body["field"] = error.field
        self.set_status(error.status)
        self.finish(body)


class RegisterAPI(AuthAPIHandler):
    async def post(self) -> None:
        data = self.json_body(email=MAX_EMAIL + 64, name=MAX_NAME + 64, password=MAX_PASSWORD)
        try:
            user = await self.accounts.register(data["email"], data["name"], data["password"], self.request.remote_ip or "")
        except AccountError as error:
            self.fail(error)
            return
        await self.log_in(user)
        self.set_status(201)
        self.write({"user": user.public()})


class LoginAPI(AuthAPIHandler):
    async def post(self) -> None:
        data = self.json_body(email=MAX_EMAIL + 64, password=MAX_PASSWORD, flags=("remember",))
        try:
            user, decision = await self.accounts.authenticate(data["email"], data["password"], self.request.remote_ip or "")
        except AccountError as error:
            if error.status == 401:
                self.log_login_failure(data["email"])
            self.fail(error)
            return
        self.rate_limit_headers(decision)
        await self.log_in(user, remember=data["remember"])
        self.write({"user": user.public()})


class LogoutAPI(AuthAPIHandler):
    async def post(self) -> None:
        await self.log_out()
        self.write({"ok": True})


class LogoutAllAPI(AuthAPIHandler):
    async def post(self) -> None:
        user = await self.require_account()
        await self.require_fresh()
        ended = await self.log_out_everywhere(user)
        self.write({"ok": True, "ended": ended})


class ProfileAPI(AuthAPIHandler):
    async def get(self) -> None:
        user = await self.require_account()
        self.write({"user": user.public()})

    async def put(self) -> None:
        user = await self.require_account()
        data = self.json_body(name=MAX_NAME + 64)
        try:
            user = await self.accounts.rename(user, data["name"])
        except AccountError as error:
            self.fail(error)
            return
        self.write({"user": user.public()})


class PasswordAPI(AuthAPIHandler):
    async def post(self) -> None:
        user = await self.require_account()
        await self.require_fresh()
        data = self.json_body(current=MAX_PASSWORD, new=MAX_PASSWORD)
        try:
            ended = await self.change_password(user, data["current"], data["new"])
        except AccountError as error:
            self.fail(error)
            return
        self.write({"ok": True, "other_sessions_ended": ended})


class ReauthenticateAPI(AuthAPIHandler):
    """Confirm the password before sensitive actions (step-up)."""

    async def post(self) -> None:
        user = await self.require_account()
        data = self.json_body(password=MAX_PASSWORD)
        if not await self.reauthenticate(user, data["password"]):
            raise HTTPError(401, "the password is incorrect")
        self.write({"ok": True})


class SessionsAPI(AuthAPIHandler):
    async def get(self) -> None:
        user = await self.require_account()
        self.write({"sessions": await self.active_sessions(user)})


class SessionAPI(AuthAPIHandler):
    async def delete(self, handle: str) -> None:
        user = await self.require_account()
        if not await self.revoke(user, handle):
            raise HTTPError(404, "no such session")
        self.write({"ok": True})


class FlashAPI(AuthAPIHandler):
    async def get(self) -> None:
        flashes = await self.pop_flashes()
        self.write({"flashes": [{"category": c, "message": m} for c, m in flashes]})

"""The auth JSON API: register, login, logout, logout everywhere, profile, password,
active sessions, flash messages.

JSON in and out; unsafe calls carry the XSRF token in ``X-XSRFToken`` (any GET here
hands out the cookie). Every error has the app's one JSON shape,
``{"error": <code>, "message": <text>, "status": <status>}`` plus ``field`` or
``retry_after`` where they apply (:func:`handlers.base.error_body`), with a 4xx
status (503 when the store is down), never a traceback. Refusals of the account
service (:class:`accounts.service.AccountError`) are answered by ``write_error``
with their status, message, code and RateLimit headers.
"""

from __future__ import annotations

import json
from typing import Any

from tornado.web import HTTPError

from accounts.passwords import MAX_LENGTH as MAX_PASSWORD
from accounts.sessions import group_devices
from accounts.users import MAX_EMAIL, MAX_NAME, User

from .account_base import AccountHandler
from .base import APIError


class AuthAPIHandler(AccountHandler):
    """The auth API: JSON in and out, JSON errors, the XSRF cookie handed out on GET."""

    def wants_json(self) -> bool:
        return True

    def prepare(self) -> None:
        self.depends_on_cookies()
        if self.request.method == "GET" and not self.get_cookie(self.settings.get("xsrf_cookie_name", "_xsrf")):
            _ = self.xsrf_token  # sets the cookie that unsafe calls echo in X-XSRFToken

    def json_body(self, *, flags: tuple[str, ...] = (), **fields: int) -> dict[str, Any]:
        """The body as a JSON object with these string fields (name=max length) and optional
        boolean ``flags`` (False when absent); anything else is a 400."""
        content_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise APIError(400, "send a JSON body with Content-Type: application/json")
        try:
            data = json.loads(self.request.body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise APIError(400, "the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object")
        unknown = sorted(set(data) - set(fields) - set(flags))
        if unknown:
            raise APIError(400, f"unknown field(s): {', '.join(map(repr, unknown))[:200]}")
        clean: dict[str, Any] = {}
        for name in flags:
            value = data.get(name, False)
            if not isinstance(value, bool):
                raise APIError(400, f"{name} must be true or false", field=name)
            clean[name] = value
        for name, limit in fields.items():
            value = data.get(name)
            if not isinstance(value, str):
                raise APIError(400, f"{name} must be a string", field=name)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, not text
                raise APIError(400, f"{name} must be valid Unicode text", field=name) from None
            if len(value) > limit:
                raise APIError(400, f"{name} must be at most {limit} characters", field=name)
            clean[name] = value
        return clean

    async def require_account(self) -> User:
        user = await self.current_account()
        if user is None:
            raise HTTPError(401, "log in first")
        return user


class RegisterAPI(AuthAPIHandler):
    async def post(self) -> None:
        data = self.json_body(email=MAX_EMAIL + 64, name=MAX_NAME + 64, password=MAX_PASSWORD)
        user = await self.accounts.register(data["email"], data["name"], data["password"], self.address)
        await self.log_in(user)
        self.set_status(201)
        self.write({"user": user.public()})


class LoginAPI(AuthAPIHandler):
    async def post(self) -> None:
        data = self.json_body(email=MAX_EMAIL + 64, password=MAX_PASSWORD, flags=("remember",))
        user, decision = await self.accounts.authenticate(data["email"], data["password"], self.address)
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
        self.account_sessions.require_fresh(self.session)
        ended = await self.log_out_everywhere(user)
        self.write({"ok": True, "ended": ended})


class ProfileAPI(AuthAPIHandler):
    async def get(self) -> None:
        user = await self.require_account()
        self.write({"user": user.public()})

    async def put(self) -> None:
        user = await self.require_account()
        data = self.json_body(name=MAX_NAME + 64)
        user = await self.accounts.rename(user, data["name"])
        await self.account_sessions.renamed(await self.get_session(), user)
        self.write({"user": user.public()})


class PasswordAPI(AuthAPIHandler):
    async def post(self) -> None:
        user = await self.require_account()
        self.account_sessions.require_fresh(self.session)
        data = self.json_body(current=MAX_PASSWORD, new=MAX_PASSWORD)
        ended = await self.change_password(user, data["current"], data["new"])
        self.write({"ok": True, "other_sessions_ended": ended})


class ReauthenticateAPI(AuthAPIHandler):
    """Confirm the password before sensitive actions (step-up)."""

    async def post(self) -> None:
        user = await self.require_account()
        data = self.json_body(password=MAX_PASSWORD)
        decision = await self.account_sessions.reauthenticate(self.session, user, data["password"], self.address)
        self.rate_limit_headers(decision)
        self.write({"ok": True})


class SessionsAPI(AuthAPIHandler):
    """Every session and token (``sessions``) and the same grouped one per browser (``devices``)."""

    async def get(self) -> None:
        user = await self.require_account()
        service = self.account_sessions
        listed = await service.active(user, self.session, own_token=service.own_token_key(self))
        self.write({"sessions": listed, "devices": group_devices(listed)})


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

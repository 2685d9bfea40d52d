"""The demo's home page (counter, theme switch, flash demo) and the preferences calls;
the account pages are in :mod:`handlers.account_pages`."""

from __future__ import annotations

import json

from tornado.web import HTTPError

from .account_base import AccountHandler
from .account_pages import AccountPage
from .base import APIError, BaseHandler
from .preferences import THEMES

FLASH_MAX = 200
CATEGORIES = ("info", "success", "warning")


class HomeHandler(AccountPage):
    async def get(self) -> None:
        session = await self.get_session()
        await self.render_page(
            "home.html",
            count=session.get("count", 0),
            preferences=self.preferences.get(),
            themes=THEMES,
            categories=CATEGORIES,
        )


class FlashForm(AccountHandler):
    """POST /flash: queue a message, redirect; the next page shows it once."""

    async def post(self) -> None:
        message = self.get_body_argument("message", "").strip()
        category = self.get_body_argument("category", "info")
        if not message or len(message) > FLASH_MAX or category not in CATEGORIES:
            raise HTTPError(400, f"message must be 1-{FLASH_MAX} characters, category one of {CATEGORIES}")
        session = await self.get_session()
        session.flash(message, category)
        self.redirect("/", status=303)


class PreferencesAPI(BaseHandler):
    """``GET`` / ``PUT /api/preferences``: the sealed preferences cookie as JSON."""

    def get(self) -> None:
        self.write(self.preferences.get())

    def put(self) -> None:
        try:
            update = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise APIError(400, "body must be JSON") from exc
        self.write(self.preferences.save(update))


class ThemeForm(AccountHandler):
    """POST /preferences/theme from the home page's switch."""

    def post(self) -> None:
        self.preferences.save({"theme": self.get_body_argument("theme", "")})
        self.redirect("/", status=303)

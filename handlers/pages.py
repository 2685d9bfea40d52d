"""The demo's HTML pages: home (counter, theme switch, flash demo); the account pages
are in :mod:`handlers.account_pages`."""

from __future__ import annotations

from tornado.web import HTTPError

from .account_pages import AccountPage
from .preferences import THEMES, PreferencesMixin

FLASH_MAX = 200
CATEGORIES = ("info", "success", "warning")


class HomeHandler(AccountPage):
    async def get(self) -> None:
        session = await self.get_session()
        await self.render_page(
            "home.html",
            count=session.get("count", 0),
            preferences=self.get_preferences(),
            themes=THEMES,
            categories=CATEGORIES,
        )


class FlashForm(PreferencesMixin):
    """POST /flash: queue a message, redirect; the next page shows it once."""

    async def post(self) -> None:
        message = self.get_body_argument("message", "").strip()
        category = self.get_body_argument("category", "info")
        if not message or len(message) > FLASH_MAX or category not in CATEGORIES:
            raise HTTPError(400, f"message must be 1-{FLASH_MAX} characters, category one of {CATEGORIES}")
        session = await self.get_session()
        session.flash(message, category)
        self.redirect("/", status=303)

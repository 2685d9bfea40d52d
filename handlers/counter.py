"""The per-session visit counter: the smallest useful session read and write."""

from __future__ import annotations

from .base import BaseHandler


class CounterAPI(BaseHandler):
    async def get(self) -> None:
        if not self.get_cookie(self.settings.get("xsrf_cookie_name", "_xsrf")):
            _ = self.xsrf_token  # sets the _xsrf cookie that POST/PUT calls echo back
        session = await self.get_session()
        self.write({"count": session.get("count", 0)})

    async def post(self) -> None:
        session = await self.get_session()
        session["count"] = session.get("count", 0) + 1
        self.write({"count": session["count"]})


class CounterForm(BaseHandler):
    """POST /counter from the home page: count, then back to the page (PRG)."""

    async def post(self) -> None:
        session = await self.get_session()
        session["count"] = session.get("count", 0) + 1
        self.redirect("/", status=303)

"""Small test utilities: a cookie jar for Tornado's client and an instrumented store."""

from __future__ import annotations

import collections
import email.utils
import time
from http.cookies import SimpleCookie
from typing import Any

from tornado.httpclient import HTTPResponse

from sessions.stores.base import StoreError
from sessions.stores.memory import MemoryStore


class CookieJar:
    """Keeps cookies between requests like a browser would (name -> value; no attributes)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def update(self, response: HTTPResponse) -> list[SimpleCookie]:
        parsed = []
        for header in response.headers.get_list("Set-Cookie"):
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if self.is_deletion(header):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
            parsed.append(cookie)
        return parsed

    @staticmethod
    def is_deletion(header: str) -> bool:
        """Max-Age=0 or an Expires date in the past: the browser drops the cookie."""
        cookie = SimpleCookie()
        cookie.load(header)
        for morsel in cookie.values():
            if morsel["max-age"] in ("0", 0):
                return True
            if morsel["expires"]:
                when = email.utils.parsedate_to_datetime(morsel["expires"])
                return when.timestamp() <= time.time()
        return False

    def header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}


def set_cookie_headers(response: HTTPResponse, name: str) -> list[str]:
    return [h for h in response.headers.get_list("Set-Cookie") if h.split("=", 1)[0].strip() == name]


class CountingStore(MemoryStore):
    """The real memory store, counting calls per method (to prove what did not happen)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in ("load", "create", "update", "touch", "destroy", "destroy_user", "list_user", "prune"):
            super().__getattribute__("calls")[name] += 1
        return attr

    @property
    def writes(self) -> int:
        return sum(self.calls[m] for m in ("create", "update", "touch", "destroy"))


class FlakyStore(CountingStore):
    """Fails every call while ``down`` is set, like a backend that went away."""

    down = False

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in ("load", "create", "update", "touch", "destroy", "ping") and super().__getattribute__("down"):
            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreError("backend is down (test)")

            return fail
        return attr



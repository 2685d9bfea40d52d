"""Test support shared by every test module: ports, a settable clock, cookies, HTTP clients.

One home for what several test modules (and ``bench/``) need, so that there is one
Set-Cookie parser, one cookie jar and one HTTP client wrapper to fix:

* :func:`free_port`, :class:`FakeClock`;
* :func:`parse_set_cookie`, :func:`set_cookie_headers`, :class:`CookieJar`;
* :class:`Client`, a browser-ish client over Tornado's ``AsyncHTTPClient``;
* :func:`serve_on`, for an ``http_server`` fixture with the real server class;
* :class:`CountingStore` / :class:`FlakyStore`, instrumented memory stores.
"""

from __future__ import annotations

import collections
import email.utils
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from tornado.httpclient import HTTPResponse

from sessions.stores.base import Record, StoreError
from sessions.stores.memory import MemoryStore


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class FakeClock:
    """A clock for the manager and the stores: starts at real time, moves only when told."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- cookies -----------------------------------------------------------------------------


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str | bool]]:
    """``name, value, {attribute (lower case): value, or True for a flag}`` of one Set-Cookie."""
    first, *attributes = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    parsed: dict[str, str | bool] = {}
    for attribute in attributes:
        if not attribute:
            continue
        key, sep, val = attribute.partition("=")
        parsed[key.strip().lower()] = val.strip() if sep else True
    return name.strip(), value.strip(), parsed


def _set_cookie_list(source: HTTPResponse | Iterable[Any]) -> list[str]:
    """Set-Cookie values from a Tornado response, (name, value) header pairs or plain strings."""
    if isinstance(source, HTTPResponse):
        return source.headers.get_list("Set-Cookie")
    found = []
    for item in source:
        if isinstance(item, tuple):
            if item[0].lower() == "set-cookie":
                found.append(item[1])
        else:
            found.append(item)
    return found


def set_cookie_headers(source: HTTPResponse | Iterable[Any], name: str) -> list[str]:
    """The Set-Cookie headers of ``source`` that set the cookie ``name``."""
    return [h for h in _set_cookie_list(source) if parse_set_cookie(h)[0] == name]


def is_deletion(header: str) -> bool:
    """Max-Age=0 or an Expires date in the past: the browser drops the cookie."""
    _, _, attrs = parse_set_cookie(header)
    max_age = attrs.get("max-age")
    if isinstance(max_age, str) and max_age.lstrip("-").isdigit():
        return int(max_age) <= 0
    expires = attrs.get("expires")
    if isinstance(expires, str):
        return email.utils.parsedate_to_datetime(expires).timestamp() <= time.time()
    return False


class CookieJar:
    """Keeps cookies between requests like a browser would (name -> value; no attributes)."""

    is_deletion = staticmethod(is_deletion)

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def update(self, source: HTTPResponse | Iterable[Any]) -> dict[str, str]:
        """Apply every Set-Cookie of ``source``; returns the cookies it set (name -> value)."""
        changed: dict[str, str] = {}
        for header in _set_cookie_list(source):
            name, value, _ = parse_set_cookie(header)
            if is_deletion(header):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = changed[name] = value
        return changed

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def header(self) -> dict[str, str]:
        return {"Cookie": self.cookie_header()} if self.cookies else {}


def cookies_from(source: HTTPResponse | Iterable[Any]) -> dict[str, str]:
    """name -> value of every cookie ``source`` sets (deletions included as set)."""
    return {name: value for name, value, _ in map(parse_set_cookie, _set_cookie_list(source))}


# -- an HTTP client ----------------------------------------------------------------------

XSRF_COOKIES = ("_xsrf", "__Host-xsrf")


class Client:
    """A browser-ish client: keeps cookies, echoes the XSRF token on unsafe calls.

    ``fetch`` never raises for an HTTP status; redirects (301/302/303) are followed
    with a GET, after the redirect's own cookies are taken, as a browser does.
    """

    def __init__(self, http_client: Any, base_url: str, *, headers: dict[str, str] | None = None,
                 jar: CookieJar | None = None) -> None:
        self.http, self.base = http_client, base_url
        self.jar = jar if jar is not None else CookieJar()
        self.extra = headers or {}

    def xsrf_token(self) -> str | None:
        return next((self.jar.cookies[n] for n in XSRF_COOKIES if n in self.jar.cookies), None)

    async def fetch(
        self,
        path: str,
        method: str = "GET",
        body: str | bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        xsrf: bool = True,
        follow: bool = True,
        cookies: bool = True,
    ) -> HTTPResponse:
        all_headers = {**self.extra, **(self.jar.header() if cookies else {}), **(headers or {})}
        token = self.xsrf_token()
        if xsrf and method not in ("GET", "HEAD") and token:
            all_headers.setdefault("X-XSRFToken", token)
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = ""
        response = await self.http.fetch(
            self.base + path,
            method=method,
            body=body,
            headers=all_headers,
            raise_error=False,
            follow_redirects=False,
            allow_nonstandard_methods=True,
        )
        self.jar.update(response)
        if follow and response.code in (301, 302, 303):
            return await self.fetch(response.headers["Location"], cookies=cookies)
        return response


# -- servers ----------------------------------------------------------------------------


def serve_on(request: Any, io_loop: Any, unused_port: tuple[socket.socket, int], server: Any) -> Any:
    """Serve with ``server`` (any HTTPServer) on pytest-tornado's port; stopped after the test.

    For an ``http_server`` fixture of a test module that needs the real server class
    (trusted proxies, body limits) instead of pytest-tornado's plain ``HTTPServer``.
    """
    server.add_socket(unused_port[0])

    def stop() -> None:
        server.stop()
        io_loop.run_sync(server.close_all_connections, timeout=10)

    request.addfinalizer(stop)
    return server


# -- instrumented stores -----------------------------------------------------------------

_COUNTED = ("load", "create", "update", "take", "touch", "destroy", "destroy_user", "list_user", "prune")


class CountingStore(MemoryStore):
    """The real memory store, counting calls per method (to prove what did not happen).

    It also remembers every key it was asked to create, so that a test can ask "what is
    stored now?" through the public ``load`` (:meth:`live_keys`) instead of reading the
    store's private fields.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: collections.Counter[str] = collections.Counter()
        self.created_keys: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in _COUNTED:
            super().__getattribute__("calls")[name] += 1
        return attr

    async def create(self, key: str, record: Record) -> None:
        await super().create(key, record)
        if key not in self.created_keys:
            self.created_keys.append(key)

    @property
    def writes(self) -> int:
        return sum(self.calls[m] for m in ("create", "update", "take", "touch", "destroy"))

    async def live_keys(self) -> list[str]:
        """The created keys that ``load`` still finds (not counted as calls)."""
        return [key for key in self.created_keys if await MemoryStore.load(self, key) is not None]


_FAILING = (
    "load", "create", "update", "take", "touch", "destroy", "destroy_user", "list_user", "ping", "hit", "reset_hits",
)


class FlakyStore(CountingStore):
    """Fails every call while ``down`` is set, like a backend that went away."""

    down = False

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in _FAILING and super().__getattribute__(
            "down"
        ):

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreError("backend is down (test)")

            return fail
        return attr


# -- store outages ----------------------------------------------------------------------

#: How soon a store must say "down" (its own timeouts are 2 s or less).
FAIL_WITHIN = 5.0


async def assert_fails_fast(call: Callable[[], Awaitable[Any]], within: float = FAIL_WITHIN) -> float:
    """Await ``call()``; it must raise StoreError within ``within`` seconds. Returns the time."""
    import pytest

    started = time.monotonic()
    with pytest.raises(StoreError):
        await call()
    elapsed = time.monotonic() - started
    assert elapsed < within, f"took {elapsed:.2f} s to report the store down"
    return elapsed

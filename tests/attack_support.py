"""Shared by the attack suite (tests/test_attack_fuzz.py, tests/test_attack_lifecycle.py).

The demo app (``server.make_app`` behind ``server.make_server``) served in-process on a
real loopback port, on an asyncio loop of the harness's own (Hypothesis drives examples
synchronously, so the tests do not use pytest-tornado's per-test loop), with a settable
clock, bcrypt at its cheapest cost, generous rate limits (the attacks log in a lot) and a
small session cap.

Which stores: ``ATTACK_STORES`` (default ``memory,sqlite``; ``all`` adds redis,
redis-cluster, postgres, mongo, through the session-scoped server fixtures of
tests/*_fixture.py). How many examples: ``ATTACK_EXAMPLES`` scales every test's
``max_examples`` and the state machine's steps (nightly: ``ATTACK_EXAMPLES=10``).
``ATTACK_RANDOM=1`` explores new examples instead of the fixed (derandomized) ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.web import Application

from accounts.ratelimit import Limit
from handlers.account_base import AuthSettings
from server import DemoConfig, make_app, make_server, session_options_for
from sessions import KeyRing, generate_key
from tests.support import Client, FakeClock

#: Values tried for the groups of a route pattern (handles, file names).
ROUTE_ARGUMENTS = ("0123456789abcdef01234567", "favicon.ico", "x", "1")
ALL_STORES = ["memory", "sqlite", "redis", "redis-cluster", "postgres", "mongo"]
DEFAULT_STORES = ["memory", "sqlite"]
#: The session cap of the test app (``--max-sessions``): small, so the attacks reach it.
MAX_SESSIONS = 3
PASSWORD = "correct horse battery"
#: Every rate limit of the test app: far beyond what an attack run sends.
GENEROUS = Limit(1_000_000, 300)
QUIET_LOGGERS = ("sessions", "tornado.access", "tornado.general", "demo")


def attack_stores() -> list[str]:
    chosen = os.environ.get("ATTACK_STORES", "").strip().lower()
    if not chosen:
        return list(DEFAULT_STORES)
    if chosen == "all":
        return list(ALL_STORES)
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ALL_STORES))
    if unknown:
        raise ValueError(f"ATTACK_STORES: unknown store(s) {unknown}; choose from {ALL_STORES} or 'all'")
    return names


def scale() -> float:
    """``ATTACK_EXAMPLES`` (default 1): multiplies max_examples and state machine steps."""
    try:
        return max(0.1, float(os.environ.get("ATTACK_EXAMPLES", "1")))
    except ValueError:
        return 1.0


def examples(base: int) -> int:
    return max(1, int(base * scale()))


def hypothesis_settings(base_examples: int, **extra: Any) -> Any:
    """Reproducible in CI: derandomized, no example database, no deadline."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=examples(base_examples),
        deadline=None,
        derandomize=os.environ.get("ATTACK_RANDOM", "") not in ("1", "true", "yes"),
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        **extra,
    )


# -- the app on a port ------------------------------------------------------------------


async def _open_store(kind: str, request: Any, tmp_path: Any, clock: FakeClock) -> Any:
    if kind == "memory":
        from sessions.stores.memory import MemoryStore

        return MemoryStore(clock=clock)
    if kind == "sqlite":
        from sessions.stores.sqlite import SQLiteStore

        return SQLiteStore(tmp_path / "attack.db", clock=clock)
    prefix = f"ts-attack-{uuid.uuid4().hex[:10]}:"
    if kind == "redis":
        from sessions.stores.redis import RedisStore

        return RedisStore(request.getfixturevalue("redis_url"), prefix=prefix, clock=clock)
    if kind == "redis-cluster":
        from sessions.stores.redis import RedisStore

        return RedisStore(request.getfixturevalue("redis_cluster_url"), prefix=prefix, clock=clock)
    if kind == "postgres":
        from sessions.stores.postgres import PostgresStore

        return PostgresStore(
            request.getfixturevalue("postgres_server_url"),
            schema=request.getfixturevalue("postgres_schema"),
            table=f"attack_{uuid.uuid4().hex[:10]}",
            clock=clock,
        )
    if kind == "mongo":
        from sessions.stores.mongo import MongoStore

        return MongoStore(request.getfixturevalue("mongo_url"), database=f"attack_{uuid.uuid4().hex[:10]}", clock=clock)
    raise ValueError(kind)


@dataclass
class Harness:
    """One demo app on one store, served on a loopback port, driven from synchronous tests."""

    kind: str
    production: bool
    loop: asyncio.AbstractEventLoop
    clock: FakeClock
    store: Any
    config: DemoConfig
    app: Application
    server: Any
    http: AsyncHTTPClient
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def keys(self) -> KeyRing:
        return self.config.keys

    @property
    def manager(self) -> Any:
        return self.app.settings["session_manager"]

    @property
    def remember(self) -> Any:
        return self.app.settings["remember_me"]

    @property
    def session_cookie(self) -> str:
        return self.manager.options.cookie.full_name(self.manager.options.cookie_name)

    @property
    def xsrf_cookie(self) -> str:
        return str(self.app.settings["xsrf_cookie_name"])

    @property
    def cookie_names(self) -> list[str]:
        """Every cookie the app reads, by the name it reads it under in this mode."""
        from handlers.preferences import COOKIE_NAME, cookie_options_for

        prefs = cookie_options_for(self.manager.options.cookie).full_name(COOKIE_NAME)
        return [self.session_cookie, self.remember.cookie_full_name, prefs, self.xsrf_cookie]

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def client(self, **kw: Any) -> Client:
        headers = dict(kw.pop("headers", None) or {})
        if self.production:  # the proxy in front says the browser spoke HTTPS
            headers.setdefault("X-Forwarded-Proto", "https")
        return Client(self.http, self.base_url, headers=headers, **kw)

    def routes(self) -> list[tuple[str, type]]:
        """(example path, handler class) of every route of the app, from its router."""
        found = []
        for rule in self.app.wildcard_router.rules:
            matcher, handler = rule.matcher, rule.target
            regex = getattr(matcher, "regex", None)
            if regex is None or not isinstance(handler, type):
                continue
            for combo in itertools.product(ROUTE_ARGUMENTS, repeat=regex.groups):
                try:
                    path = matcher.reverse(*combo)
                except Exception:
                    continue
                if path is not None and regex.fullmatch(path):
                    break
            else:
                continue
            if (path, handler) not in found:
                found.append((path, handler))
        return found

    def route_methods(self) -> list[tuple[str, str, type]]:
        """(method, example path, handler) for every HTTP method each route's handler defines."""
        from tornado.web import RequestHandler

        found = []
        for path, handler in self.routes():
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                own = getattr(handler, method.lower(), None)
                if own is not None and own is not getattr(RequestHandler, method.lower()):
                    found.append((method, path, handler))
        return found

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.stop()
            with contextlib.suppress(Exception):
                await self.app.settings["socket_registry"].close()
            await self.server.close_all_connections()
            self.http.close()
            accounts = self.config.accounts
            if accounts is not None:
                with contextlib.suppress(Exception):
                    accounts.hasher.close()
            await self.store.close()

        with contextlib.suppress(Exception):
            self.run(shutdown(), timeout=20)


def build_harness(kind: str, request: Any, tmp_path: Any, *, production: bool = False) -> Harness:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    clock = FakeClock()

    async def start() -> Harness:
        store = await _open_store(kind, request, tmp_path, clock)
        config = DemoConfig(
            keys=KeyRing.from_text(generate_key()),
            store=store,
            production=production,
            session_options=session_options_for(production),
            trusted_proxies=["127.0.0.1"] if production else [],
            auth=AuthSettings(max_sessions=MAX_SESSIONS),
            bcrypt_cost=4,
            login_limit_address=GENEROUS,
            login_limit_account=GENEROUS,
            register_limit_address=GENEROUS,
        )
        with contextlib.suppress(Exception):
            await store.setup()
        accounts = config.build_accounts()
        with contextlib.suppress(Exception):
            await accounts.users.setup()
        app = make_app(config)
        server = make_server(app, config)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        server.add_socket(sock)
        port = int(sock.getsockname()[1])
        http = AsyncHTTPClient(force_instance=True, max_clients=64)
        return Harness(kind, production, loop, clock, store, config, app, server, http, port)

    return loop.run_until_complete(start())


@contextlib.contextmanager
def harness_for(kind: str, request: Any, tmp_path: Any, *, production: bool = False) -> Any:
    # The suite sends thousands of refused cookies and bodies: one log line each (the
    # security and access logs at DEBUG/INFO/WARNING) would cost more than the requests.
    quiet = {name: logging.getLogger(name) for name in QUIET_LOGGERS}
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.ERROR)
    harness = build_harness(kind, request, tmp_path, production=production)
    try:
        yield harness
    finally:
        harness.close()
        harness.loop.close()
        asyncio.set_event_loop(None)
        for name, logger in quiet.items():
            logger.setLevel(levels[name])


def store_params() -> list[Any]:
    return [pytest.param(kind, id=kind) for kind in attack_stores()]


# -- small HTTP helpers -------------------------------------------------------------------


def body(response: HTTPResponse) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        return None


async def call(client: Client, method: str, path: str, data: Any = None, **kw: Any) -> HTTPResponse:
    """A JSON call; fetches the XSRF cookie first when the client has none."""
    if client.xsrf_token() is None:
        await client.fetch("/auth/profile")
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    payload = None if data is None else (data if isinstance(data, (str, bytes)) else json.dumps(data))
    return await client.fetch(path, method, payload, headers=headers, **kw)


async def register(client: Client, email: str, name: str = "Ana", password: str = PASSWORD) -> dict[str, Any]:
    response = await call(client, "POST", "/auth/register", {"email": email, "name": name, "password": password})
    assert response.code == 201, (response.code, response.body[:300])
    user: dict[str, Any] = body(response)["user"]
    return user


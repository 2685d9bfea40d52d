"""Fixtures for tests of the demo app through the real server class (a pytest plugin,
registered in tests/conftest.py).

A test module supplies ``demo_store`` and takes pytest-tornado's ``app`` and
``http_server`` from here with ``app, http_server = demo_app_fixtures()``;
``production``, ``trusted_proxies`` and ``app_settings`` are overridden per test with
``pytest.mark.parametrize``.
"""

from __future__ import annotations

from typing import Any

import pytest

from server import DemoConfig, make_app, make_server, session_options_for
from sessions import KeyRing, generate_key
from tests.support import Client, serve_on

STORE_KINDS = ["memory", "sqlite", "mongo", "redis", "postgres"]


def open_demo_store(kind: str, request: Any, tmp_path: Any) -> Any:
    """A fresh, empty store of this kind for one test (servers from the store fixtures)."""
    if kind == "memory":
        from sessions.stores.memory import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from sessions.stores.sqlite import SQLiteStore

        return SQLiteStore(tmp_path / "demo.db")
    if kind == "redis":
        from sessions.stores.redis import RedisStore

        return RedisStore(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))
    if kind == "postgres":
        from sessions.stores.postgres import PostgresStore

        return PostgresStore(
            request.getfixturevalue("postgres_url"),
            schema=request.getfixturevalue("postgres_schema"),
            table=request.getfixturevalue("postgres_table"),
        )
    if kind == "mongo":
        import uuid

        from sessions.stores.mongo import MongoStore

        return MongoStore(request.getfixturevalue("mongo_url"), database=f"demo_{uuid.uuid4().hex[:12]}")
    raise ValueError(kind)


@pytest.fixture
def demo_store(request: Any, tmp_path: Any, io_loop: Any) -> Any:
    """The store behind the demo app: memory unless a test parametrizes it (indirect)."""
    store = open_demo_store(getattr(request, "param", "memory"), request, tmp_path)
    yield store
    io_loop.run_sync(store.close)


@pytest.fixture
def new_client(http_client: Any, base_url: str, app: Any) -> Any:
    """Make browser-ish clients of the module's ``app`` (names app so its parameters apply)."""
    return lambda **kw: Client(http_client, base_url, **kw)


@pytest.fixture
def client(new_client: Any) -> Client:
    return new_client()  # type: ignore[no-any-return]


def demo_app_fixtures() -> tuple[Any, Any]:
    """pytest-tornado's ``app`` and ``http_server`` fixtures, as the demo app on its real server."""

    @pytest.fixture
    def app(demo_app):
        return demo_app

    @pytest.fixture
    def http_server(demo_server):
        return demo_server

    return app, http_server


@pytest.fixture
def production():
    return False


@pytest.fixture
def trusted_proxies():
    return []


@pytest.fixture
def app_settings():
    """Extra Application settings for make_app (e.g. serve_traceback)."""
    return {}


@pytest.fixture
def demo_config(demo_store, production, trusted_proxies):
    return DemoConfig(
        keys=KeyRing.from_text(generate_key()),
        store=demo_store,
        production=production,
        session_options=session_options_for(production),
        trusted_proxies=trusted_proxies,
        bcrypt_cost=4,  # the real algorithm, at its cheapest cost: tests stay fast
    )


@pytest.fixture
def demo_app(demo_config, app_settings):
    return make_app(demo_config, **app_settings)


@pytest.fixture
def demo_server(request, io_loop, _unused_port, demo_app, demo_config):
    """server.py's own server class (trusted proxies, body limit), not pytest-tornado's plain one."""
    return serve_on(request, io_loop, _unused_port, make_server(demo_app, demo_config))

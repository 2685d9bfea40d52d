"""The peers benchmark's aiohttp side: aiohttp-session on EncryptedCookieStorage or RedisStorage.

The same routes as tornado_server.py, the session ones under ``/s/`` (``/s/setup``,
``/s/read``, ``/s/login``): they are a sub-application, the only one with
aiohttp-session's middleware (installed the way its documentation shows), so that
``/bare`` on the main application runs no session code at all, as in the other peers.

    python bench/peers/aiohttp_server.py --storage cookie --port 8892
    python bench/peers/aiohttp_server.py --storage redis --redis-url redis://127.0.0.1:6379/0 --port 8893
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from aiohttp import web
from aiohttp_session import AbstractStorage, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from aiohttp_session.redis_storage import RedisStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import until_stopped  # noqa: E402

COOKIE = "sid"


async def bare(request: web.Request) -> web.Response:
    return web.json_response({"count": 0})


async def setup(request: web.Request) -> web.Response:
    session = await new_session(request)
    session["count"] = 1
    return web.json_response({"count": 1})


async def read(request: web.Request) -> web.Response:
    session = await get_session(request)
    return web.json_response({"count": session.get("count", 0)})


async def login(request: web.Request) -> web.Response:
    # new_session() is aiohttp-session's regenerate: a fresh identity, the old data gone.
    session = await new_session(request)
    session["user"] = "bench"
    return web.json_response({"user": "bench"})


async def serve(host: str, port: int, storage_name: str, redis_url: str | None) -> None:
    client = None
    storage: AbstractStorage
    if storage_name == "redis":
        import redis.asyncio

        assert redis_url, "--redis-url is required with --storage redis"
        client = redis.asyncio.from_url(redis_url)
        storage = RedisStorage(client, cookie_name=COOKIE, httponly=True)
    else:
        storage = EncryptedCookieStorage(os.urandom(32), cookie_name=COOKIE, httponly=True)
    sessions = web.Application(middlewares=[session_middleware(storage)])
    sessions.router.add_post("/setup", setup)
    sessions.router.add_get("/read", read)
    sessions.router.add_post("/login", login)
    app = web.Application()
    app.router.add_get("/bare", bare)
    app.router.add_post("/bare", bare)
    app.add_subapp("/s/", sessions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"aiohttp peer (aiohttp-session, {storage_name}) on http://{host}:{port}/", flush=True)
    await until_stopped()
    await runner.cleanup()
    if client is not None:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage", choices=("cookie", "redis"), required=True)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port, args.storage, args.redis_url))


if __name__ == "__main__":
    main()

"""The login shape on the library alone: no XSRF, no security headers, one process.

``POST /login`` regenerates the session and stores ``{"user": ...}`` (no cookie is
sent by the benchmark, so every login creates one new stored session, and the store
grows as the run goes on); ``GET /profile`` reads a logged-in session; ``GET /bare``
and ``POST /bare`` are plain handlers in the same process, the denominators.

    SESSION_KEYS=... python bench/login_server.py --store memory:// --port 8893
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

import tornado.web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessions import KeyRing, SessionManager, SessionMixin, open_store  # noqa: E402


class Bare(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"user": "bench"})

    def post(self) -> None:
        self.write({"user": "bench"})


class Login(SessionMixin, tornado.web.RequestHandler):
    async def post(self) -> None:
        session = await self.get_session()
        session.regenerate()
        session.user_id = "bench"
        session["user"] = "bench"
        self.write({"user": "bench"})


class Profile(SessionMixin, tornado.web.RequestHandler):
    async def get(self) -> None:
        session = await self.get_session()
        self.write({"user": session.get("user")})


class Stats(tornado.web.RequestHandler):
    """What the process holds now: for the report, not measured."""

    def get(self) -> None:
        self.write({"gc_counts": gc.get_count(), "gc_objects": len(gc.get_objects()), "gc_stats": gc.get_stats()})


async def serve(host: str, port: int, store_url: str) -> None:
    store = open_store(store_url)
    await store.setup()
    manager = SessionManager(store, KeyRing.from_text(os.environ["SESSION_KEYS"]))
    app = tornado.web.Application(
        [(r"/bare", Bare), (r"/login", Login), (r"/profile", Profile), (r"/stats", Stats)],
        session_manager=manager,
    )
    server = app.listen(port, host)
    print(f"login bench on http://{host}:{port}/ (store {store.describe()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", default="memory://")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port, args.store))


if __name__ == "__main__":
    main()

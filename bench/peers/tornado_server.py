"""The peers benchmark's Tornado side: this library on a store, or Tornado's own signed cookie.

Every peer server answers the same four routes (see bench/peers/README section in
bench/README.md):

- ``GET /bare``, ``POST /bare``: ``{"count": 0}``, no session machinery at all (the
  denominator, in the same process as the session routes);
- ``POST /setup``: makes a session holding ``{"count": 1}`` and sends its cookie (not
  measured: the runner calls it once to get a cookie for the reads);
- ``GET /read``: loads the session the cookie names and answers its counter (no write,
  no Set-Cookie);
- ``POST /login``: a new session (regenerated) storing the user id ``"bench"``, its
  cookie sent (no password check).

    SESSION_KEYS=... python bench/peers/tornado_server.py --session library --store memory:// --port 8890
    python bench/peers/tornado_server.py --session signed --port 8891
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import tornado.web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import until_stopped  # noqa: E402
from sessions import KeyRing, SessionManager, SessionMixin, open_store  # noqa: E402

COOKIE = "sid"


class Bare(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"count": 0})

    def post(self) -> None:
        self.write({"count": 0})


# -- this library ------------------------------------------------------------------
class LibrarySetup(SessionMixin, tornado.web.RequestHandler):
    async def post(self) -> None:
        session = await self.get_session()
        session["count"] = 1
        self.write({"count": 1})


class LibraryRead(SessionMixin, tornado.web.RequestHandler):
    async def get(self) -> None:
        session = await self.get_session()
        self.write({"count": session.get("count", 0)})


class LibraryLogin(SessionMixin, tornado.web.RequestHandler):
    """What bench/login_server.py does: regenerate, then the user id (indexed) and a key."""

    async def post(self) -> None:
        session = await self.get_session()
        session.regenerate()
        session.user_id = "bench"
        session["user"] = "bench"
        self.write({"user": "bench"})


# -- Tornado's signed cookie as the whole session ----------------------------------
class SignedSetup(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_signed_cookie(COOKIE, json.dumps({"count": 1}), httponly=True)
        self.write({"count": 1})


class SignedRead(tornado.web.RequestHandler):
    def get(self) -> None:
        raw = self.get_signed_cookie(COOKIE)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        self.write({"count": data.get("count", 0)})


class SignedLogin(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_signed_cookie(COOKIE, json.dumps({"user": "bench"}), httponly=True)
        self.write({"user": "bench"})


async def serve(host: str, port: int, mode: str, store_url: str) -> None:
    store = None
    if mode == "library":
        store = open_store(store_url)
        await store.setup()
        manager = SessionManager(store, KeyRing.from_text(os.environ["SESSION_KEYS"]))
        routes: list[Any] = [(r"/setup", LibrarySetup), (r"/read", LibraryRead), (r"/login", LibraryLogin)]
        settings: dict[str, Any] = {"session_manager": manager}
        what = f"this library, store {store.describe()}"
    else:
        routes = [(r"/setup", SignedSetup), (r"/read", SignedRead), (r"/login", SignedLogin)]
        settings = {"cookie_secret": os.urandom(32).hex()}
        what = "Tornado signed cookie"
    app = tornado.web.Application([(r"/bare", Bare), *routes], **settings)
    server = app.listen(port, host)
    print(f"tornado peer ({what}) on http://{host}:{port}/", flush=True)
    await until_stopped()
    server.stop()
    if store is not None:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--session", choices=("library", "signed"), required=True)
    parser.add_argument("--store", default="memory://", help="store URL (--session library)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # no access log line per request
    asyncio.run(serve(args.host, args.port, args.session, args.store))


if __name__ == "__main__":
    main()

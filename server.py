"""The tornado-sessions demo server.

    python server.py                      # embedded SQLite store in ./var, dev key generated
    python server.py --store memory://
    python server.py --store mongodb://127.0.0.1:27017/demo
    SESSION_KEYS=... python server.py --production

Every flag has an environment equivalent (see ``--help`` and the README).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.web

from handlers.counter import CounterAPI, CounterForm
from handlers.health import HealthHandler, ReadyHandler
from handlers.pages import FlashForm, HomeHandler
from handlers.preferences import PreferencesAPI, ThemeForm
from sessions import (
    CookieOptions,
    KeyRing,
    MissingKeysError,
    SessionManager,
    SessionOptions,
    Store,
    StoreError,
    load_key_ring,
    open_store,
)

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("demo")

#: Largest request body the demo accepts; larger is a 413 before any handler runs.
MAX_BODY_BYTES = 64 * 1024
PRUNE_EVERY_SECONDS = 300


@dataclass
class DemoConfig:
    """Everything ``make_app`` needs; built from flags and environment by ``parse_config``."""

    keys: KeyRing
    store: Store
    production: bool = False
    session_options: SessionOptions = field(default_factory=SessionOptions)
    debug: bool = False


def session_options_for(production: bool) -> SessionOptions:
    """Development: plain-HTTP friendly. Production: Secure ``__Host-`` cookies behind a TLS proxy."""
    if production:
        return SessionOptions(
            cookie_name="sid",
            cookie=CookieOptions(secure=True, host_prefix=True, samesite="Lax"),
            trust_proxy=True,
        )
    return SessionOptions(cookie_name="sid", cookie=CookieOptions(samesite="Lax"))


def make_app(config: DemoConfig, **settings: Any) -> tornado.web.Application:
    """The demo application (tests build it directly)."""
    manager = SessionManager(config.store, config.keys, config.session_options)
    cookie = config.session_options.cookie
    xsrf_kwargs: dict[str, Any] = {"samesite": "Lax", "path": "/", "secure": cookie.effective_secure}
    routes = [  # Tornado tries these in order: the hottest paths first
        (r"/api/counter", CounterAPI),
        (r"/api/preferences", PreferencesAPI),
        (r"/health", HealthHandler),
        (r"/", HomeHandler),
        (r"/counter", CounterForm),
        (r"/flash", FlashForm),
        (r"/preferences/theme", ThemeForm),
        (r"/ready", ReadyHandler),
    ]
    app_settings: dict[str, Any] = dict(
        session_manager=manager,
        production=config.production,
        template_path=str(ROOT / "templates"),
        static_path=str(ROOT / "static"),
        xsrf_cookies=True,
        xsrf_cookie_name="__Host-xsrf" if cookie.host_prefix else "_xsrf",
        xsrf_cookie_kwargs=xsrf_kwargs,
        debug=config.debug,
    )
    app_settings.update(settings)
    return tornado.web.Application(routes, **app_settings)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(description="tornado-sessions demo server")
    parser.add_argument("--host", default=env.get("HOST", "127.0.0.1"), help="listen address [HOST]")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8888")), help="listen port [PORT]")
    parser.add_argument(
        "--data-dir",
        default=env.get("DATA_DIR", str(ROOT / "var")),
        help="SQLite file and development key live here [DATA_DIR]",
    )
    parser.add_argument(
        "--store",
        default=env.get("SESSION_STORE") or env.get("MONGODB_URL"),
        help="sqlite:///path, memory:// or mongodb://... [SESSION_STORE or MONGODB_URL]; "
        "default: sqlite in the data directory",
    )
    parser.add_argument(
        "--production",
        action="store_true",
        default=_env_flag("PRODUCTION"),
        help="strict mode: SESSION_KEYS required, Secure __Host- cookies [PRODUCTION=1]",
    )
    parser.add_argument("--debug", action="store_true", default=_env_flag("DEBUG"), help="Tornado debug mode [DEBUG=1]")
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[argparse.Namespace, DemoConfig]:
    args = build_parser().parse_args(argv)
    if args.production and args.debug:
        raise SystemExit("--debug is not allowed with --production")
    data_dir = Path(args.data_dir)
    try:
        keys, source = load_key_ring(
            os.environ.get("SESSION_KEYS"), key_file=data_dir / "dev-keys", production=args.production
        )
    except (MissingKeysError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    store_url = args.store or f"sqlite:///{data_dir / 'sessions.sqlite3'}"
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:////"):
        store_url = "sqlite:///" + str(Path(store_url[len("sqlite:///") :]).resolve())
    try:
        store = open_store(store_url)
    except (ValueError, ImportError) as exc:
        raise SystemExit(f"error: {exc}") from None
    log.info("keys from %s (ids %s); store %s", source, ",".join(keys.key_ids), store.name)
    config = DemoConfig(
        keys=keys,
        store=store,
        production=args.production,
        session_options=session_options_for(args.production),
        debug=args.debug,
    )
    return args, config


async def serve(args: argparse.Namespace, config: DemoConfig) -> None:
    try:
        await config.store.setup()
    except StoreError as exc:  # serve anyway: requests answer 503 until the store is back
        log.error("session store %s is not available yet: %s", config.store.name, exc)
    mode = getattr(config.store, "expiry_mode_in_force", None)
    if mode:
        log.info("mongodb expiry mode in force: %s", mode)
    app = make_app(config)
    server = tornado.httpserver.HTTPServer(
        app, xheaders=config.session_options.trust_proxy, max_body_size=MAX_BODY_BYTES
    )
    server.listen(args.port, args.host)
    prune = tornado.ioloop.PeriodicCallback(lambda: _prune(config.store), PRUNE_EVERY_SECONDS * 1000)
    prune.start()
    print(f"tornado-sessions demo on http://{args.host}:{args.port}/ (store: {config.store.name})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    prune.stop()
    server.stop()
    await server.close_all_connections()
    await config.store.close()


async def _prune(store: Store) -> None:
    try:
        removed = await store.prune()
        if removed:
            log.info("pruned %d expired sessions", removed)
    except Exception as exc:  # a failed prune must not stop the server
        log.warning("prune failed: %s", exc)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    args, config = parse_config(argv)
    asyncio.run(serve(args, config))


if __name__ == "__main__":
    main()

"""The tornado-sessions demo server.

    python server.py                      # embedded SQLite store in ./var, dev key generated
    python server.py --store memory://
    python server.py --store mongodb://127.0.0.1:27017/demo
    python server.py --store redis://127.0.0.1:6379/0      (or redis+cluster://host:port)
    python server.py --store postgresql://user@127.0.0.1:5432/db
    SESSION_KEYS=... python server.py --production --trusted-proxy 127.0.0.1

Every flag has an environment equivalent (see ``--help`` and the README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import math
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.netutil
import tornado.process
import tornado.web

from accounts.passwords import DEFAULT_COST, PasswordHasher
from accounts.ratelimit import Limit, RateLimiter
from accounts.service import Accounts
from accounts.sessions import AccountSessions, AuthSettings
from accounts.users import UserRepository, open_user_repository, user_schemes
from handlers import account_pages, live, metrics
from handlers.auth_api import (
    FlashAPI,
    LoginAPI,
    LogoutAllAPI,
    LogoutAPI,
    PasswordAPI,
    ProfileAPI,
    ReauthenticateAPI,
    RegisterAPI,
    SessionAPI,
    SessionsAPI,
)
from handlers.counter import CounterAPI, CounterForm
from handlers.errors import BodyLimitApplication, NotFoundHandler
from handlers.health import HealthHandler, ReadyHandler
from handlers.pages import FlashForm, HomeHandler, PreferencesAPI, ThemeForm
from handlers.static import SecureStaticFileHandler
from sessions import (
    CookieOptions,
    KeyRing,
    MissingKeysError,
    RememberMe,
    RememberOptions,
    SessionManager,
    SessionOptions,
    Store,
    StoreError,
    load_key_ring,
    open_store,
)
from sessions.events import OneLineFormatter
from sessions.manager import DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT
from sessions.proxy import ProxyAwareHTTPServer, parse_trusted_proxies
from sessions.stores import store_schemes
from sessions.stores.sqlite import SQLiteStore
from sessions.websocket import DEFAULT_RECHECK_INTERVAL, SocketRegistry

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("demo")

#: Largest request body the demo accepts; a larger Content-Length is a 413 (the app's
#: error page) before the body is read. A chunked body that grows past it is cut off by
#: Tornado with a bare 400.
MAX_BODY_BYTES = 64 * 1024
#: Largest websocket message /ws accepts; a larger one closes the socket with 1009.
WS_MAX_MESSAGE_BYTES = 4096
#: /ws keep-alive: a ping every 20 s; a socket whose ping is 30 s without its (matching)
#: pong is closed, so a dead or non-reading client goes within about 50 s. The caps per
#: session / user / address (8 / 32 / 64) and the 1 MiB write bound are the library's defaults.
WS_PING_INTERVAL = 20
WS_PING_TIMEOUT = 30
#: Seconds before the idle deadline at which /ws announces it ("expiring"): the
#: ``websocket_expiry_warning`` application setting (``--expiry-warning``).
DEFAULT_EXPIRY_WARNING = 120
#: A read-only request (or a websocket "activity" message) writes the moved idle
#: deadline at most this often: the library's 60 s, or a tenth of a shorter idle
#: timeout (``--idle-timeout 60`` would otherwise never move its deadline).
MAX_TOUCH_AFTER = 60.0


@dataclass
class DemoConfig:
    """Everything ``make_app`` needs; built from flags and environment by ``parse_config``."""

    keys: KeyRing
    store: Store
    #: The session store's URL (``--store``); None when ``store`` was built in code.
    store_url: str | None = None
    #: Where the users live (``--users``); None: the session store's URL, sharing its connection.
    users_url: str | None = None
    production: bool = False
    session_options: SessionOptions = field(default_factory=SessionOptions)
    debug: bool = False
    #: TCP peers whose X-Forwarded-For / X-Forwarded-Proto count (none by default).
    trusted_proxies: list[str] = field(default_factory=list)
    auth: AuthSettings = field(default_factory=AuthSettings)
    #: bcrypt work factor: 12 takes about a quarter second per hash (tests use 4).
    bcrypt_cost: int = DEFAULT_COST
    login_limit_address: Limit = field(default_factory=lambda: Limit(20, 300))
    login_limit_account: Limit = field(default_factory=lambda: Limit(5, 900))
    register_limit_address: Limit = field(default_factory=lambda: Limit(5, 3600))
    #: Remember-me tokens: lifetime (30 days), grace window after a rotation (60 s).
    remember: RememberOptions = field(default_factory=RememberOptions)
    #: Seconds between re-checks of every open websocket's session in the store (how
    #: soon a logout in another process closes this process's sockets).
    ws_recheck_interval: float = DEFAULT_RECHECK_INTERVAL
    #: Seconds before the idle deadline at which /ws sends "expiring" (``websocket_expiry_warning``).
    expiry_warning: float = DEFAULT_EXPIRY_WARNING
    #: Built from the fields above by make_app unless given.
    accounts: Accounts | None = None

    def open_users(self) -> UserRepository:
        """The user repository: from ``users_url``, else beside the session store.

        Beside the store (the default: one database for the demo), the users share the
        store's connection through its public companion hooks (see
        :func:`accounts.users.open_user_repository`).
        """
        if self.users_url is not None and self.users_url != self.store_url:
            return open_user_repository(self.users_url)
        return open_user_repository(self.store_url or users_url_beside(self.store), share=self.store)

    def build_accounts(self) -> Accounts:
        if self.accounts is None:
            self.accounts = Accounts(
                self.open_users(),
                PasswordHasher(self.bcrypt_cost, observe=metrics.observe_hash),
                RateLimiter(
                    self.store, "login", per_address=self.login_limit_address, per_account=self.login_limit_account
                ),
                RateLimiter(self.store, "register", per_address=self.register_limit_address),
            )
        return self.accounts


def users_url_beside(store: Store) -> str:
    """A user storage URL for a session store built in code (tests), used with ``share=store``.

    The scheme is the store's public ``name``; SQLite needs the file, its public ``path``.
    """
    if isinstance(store, SQLiteStore):
        return f"sqlite:///{store.path}"
    return f"{store.name.removesuffix('-cluster')}://"


def check_timeouts(idle_timeout: float, absolute_timeout: float, expiry_warning: float) -> None:
    """Refuse (ValueError, naming the flags) timeouts that contradict each other.

    All positive; the idle timeout no longer than the absolute one (a longer one would
    never apply); the warning shorter than the idle timeout (else "expiring" would be
    due the moment a socket opens).
    """
    for flag, value in (("--idle-timeout", idle_timeout), ("--absolute-timeout", absolute_timeout),
                        ("--expiry-warning", expiry_warning)):
        if not (value > 0 and math.isfinite(value)):  # NaN fails the first test
            raise ValueError(f"{flag} must be a positive number of seconds, not {value:g}")
    if idle_timeout > absolute_timeout:
        raise ValueError(
            f"--idle-timeout ({idle_timeout:g} s) must not be longer than --absolute-timeout ({absolute_timeout:g} s)"
        )
    if expiry_warning >= idle_timeout:
        raise ValueError(
            f"--expiry-warning ({expiry_warning:g} s) must be shorter than --idle-timeout ({idle_timeout:g} s): "
            "it is how long before the idle deadline the live page warns"
        )


def session_options_for(
    production: bool,
    *,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    absolute_timeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
) -> SessionOptions:
    """Development: plain-HTTP friendly. Production: Secure ``__Host-`` cookies.

    Whether a request is HTTPS comes from ``request.protocol`` alone: behind a TLS
    proxy, list the proxy (``--trusted-proxy``), or every request looks like plain
    HTTP and no Secure cookie is set. The moved idle deadline is written at most every
    ``MAX_TOUCH_AFTER`` seconds, or every tenth of a shorter idle timeout.
    """
    timeouts: dict[str, Any] = dict(
        idle_timeout=idle_timeout, absolute_timeout=absolute_timeout,
        touch_after=min(MAX_TOUCH_AFTER, idle_timeout / 10),
    )
    if production:
        return SessionOptions(
            cookie_name="sid", cookie=CookieOptions(secure=True, host_prefix=True, samesite="Lax"), **timeouts
        )
    return SessionOptions(cookie_name="sid", cookie=CookieOptions(samesite="Lax"), **timeouts)


def make_app(config: DemoConfig, **settings: Any) -> tornado.web.Application:
    """The demo application (tests build it directly)."""
    # The per-user session cap and the address binding are the manager's, so that
    # every way a session is created or used (pages, API, restores, websockets) obeys them.
    options = dataclasses.replace(
        config.session_options, max_user_sessions=config.auth.max_sessions, bind_address=config.auth.bind_ip
    )
    manager = SessionManager(config.store, config.keys, options)
    accounts = config.build_accounts()
    cookie = config.session_options.cookie
    xsrf_kwargs: dict[str, Any] = {"samesite": "Lax", "path": "/", "secure": cookie.effective_secure}
    routes = [  # Tornado tries these in order: the hottest paths first
        (r"/api/counter", CounterAPI),
        (r"/api/preferences", PreferencesAPI),
        (r"/health", HealthHandler),
        (r"/auth/login", LoginAPI),
        (r"/auth/profile", ProfileAPI),
        (r"/auth/register", RegisterAPI),
        (r"/auth/logout", LogoutAPI),
        (r"/auth/logout-all", LogoutAllAPI),
        (r"/auth/password", PasswordAPI),
        (r"/auth/sessions", SessionsAPI),
        (r"/auth/reauthenticate", ReauthenticateAPI),
        (r"/auth/sessions/([0-9a-f]{24})", SessionAPI),
        (r"/api/flash", FlashAPI),
        *account_pages.ROUTES,  # /register, /login, /logout, /account...
        (r"/metrics", metrics.MetricsHandler),
        (r"/", HomeHandler),
        (r"/counter", CounterForm),
        (r"/flash", FlashForm),
        (r"/preferences/theme", ThemeForm),
        (r"/ready", ReadyHandler),
        (r"/ws", live.LiveSocket),
        (r"/live", live.LivePage),
        (r"/(favicon\.ico)", SecureStaticFileHandler, {"path": str(ROOT / "static")}),
    ]
    registry = SocketRegistry.attach(manager, recheck_interval=config.ws_recheck_interval)
    # Theft ends every login of the user through the credentials version first, so
    # that a restore racing the detection cannot keep its session.
    remember = RememberMe(manager, config.remember, on_theft=accounts.revoke_logins)
    account_sessions = AccountSessions(accounts, manager, remember, config.auth, notify=registry.send_to_user)
    # A session with a user is checked against the user record once, after it is stored:
    # then logged-in requests read the session alone (accounts/sessions.py, user_of).
    manager.creation_checks.append(account_sessions.still_current)
    app_settings: dict[str, Any] = dict(
        session_manager=manager,
        socket_registry=registry,
        websocket_max_message_size=WS_MAX_MESSAGE_BYTES,
        websocket_ping_interval=WS_PING_INTERVAL,
        websocket_ping_timeout=WS_PING_TIMEOUT,
        websocket_expiry_warning=config.expiry_warning,
        accounts=accounts,
        # Logins, logouts, step-up, active sessions: one service for pages, API and websocket.
        account_sessions=account_sessions,
        remember_me=remember,
        auth=config.auth,
        log_function=metrics.observe_request,
        production=config.production,
        template_path=str(ROOT / "templates"),
        static_path=str(ROOT / "static"),
        static_handler_class=SecureStaticFileHandler,
        default_handler_class=NotFoundHandler,
        max_body_bytes=MAX_BODY_BYTES,
        xsrf_cookies=True,
        xsrf_cookie_name="__Host-xsrf" if cookie.host_prefix else "_xsrf",
        xsrf_cookie_kwargs=xsrf_kwargs,
        debug=config.debug,
    )
    app_settings.update(settings)
    return BodyLimitApplication(routes, **app_settings)


def make_server(app: tornado.web.Application, config: DemoConfig) -> ProxyAwareHTTPServer:
    """The HTTP server for ``app``: forwarded headers only from the trusted proxies.

    Tornado's own ``max_body_size`` stays as a backstop for chunked bodies; the app
    answers 413 for a too-large Content-Length before Tornado would see it.
    """
    return ProxyAwareHTTPServer(app, trusted_proxies=config.trusted_proxies, max_body_size=MAX_BODY_BYTES)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` for its owner only (0700); refuse one that others can use or that we do not own.

    Whoever can write the directory can plant the key file (and so choose the cookie
    key) or swap the database; whoever can read it can copy both.
    """
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
        path.chmod(0o700)
        return
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SystemExit(f"error: the data directory {path} is not a directory (a symbolic link or a file)")
    if os.name == "posix" and info.st_uid != os.geteuid():
        raise SystemExit(
            f"error: the data directory {path} belongs to user id {info.st_uid}, not to the user running "
            f"the server ({os.geteuid()}); use a directory of your own (--data-dir) or: chown {os.geteuid()} {path}"
        )
    mode = info.st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise SystemExit(
            f"error: the data directory {path} is open to other users (mode {mode:o}); they could read or "
            f"replace the key and the database. Run:  chmod 700 {path}"
        )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` names every option's default (the environment's value when one is set)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or action.dest == "help":
            return text
        if action.default is None:
            return f"{text}; default: none"
        if action.default is False and action.nargs == 0:
            return f"{text}; default: off"
        return f"{text}; default: %(default)s"


HELP_EPILOG = (
    "A name in brackets, such as [PORT], is the environment variable that sets the option "
    "when the flag is not given (the flag wins); the defaults shown include any such variable "
    "already set. Switches take 1, true, yes or on, e.g. PRODUCTION=1. A limit is HITS/SECONDS: "
    "at most HITS attempts in each window of SECONDS."
)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        description="tornado-sessions demo server", epilog=HELP_EPILOG, formatter_class=DefaultsHelpFormatter
    )
    _add_deployment_options(parser, env)
    _add_account_options(parser, env)
    _add_timing_options(parser, env)
    return parser


def _add_deployment_options(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Where it listens, where its data lives, behind what, and how many processes."""
    parser.add_argument("--host", default=env.get("HOST", "127.0.0.1"), help="listen address [HOST]")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8888")), help="listen port [PORT]")
    parser.add_argument(
        "--data-dir",
        default=env.get("DATA_DIR", str(ROOT / "var")),
        help="the SQLite file (sessions and users) and the development key live here [DATA_DIR]",
    )
    parser.add_argument(
        "--store",
        default=env.get("SESSION_STORE") or env.get("MONGODB_URL"),
        help=f"store URL, scheme one of {', '.join(s + '://' for s in store_schemes())} "
        "[SESSION_STORE or MONGODB_URL]; default: sqlite in the data directory",
    )
    parser.add_argument(
        "--users",
        default=env.get("USERS_URL"),
        metavar="URL",
        help=f"where the demo's users live, scheme one of {', '.join(s + '://' for s in user_schemes())} "
        "[USERS_URL]; default: the session store's URL (one database, the store's connection shared)",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDR",
        dest="trusted_proxies",
        help="IP address of a reverse proxy whose X-Forwarded-For / X-Forwarded-Proto are "
        "believed; repeat it or give a comma list [TRUSTED_PROXIES]; default: none. Behind a "
        "TLS proxy, production mode needs it: requests otherwise look like plain HTTP and "
        "get no Secure cookies",
    )
    parser.add_argument(
        "--production",
        action="store_true",
        default=_env_flag("PRODUCTION"),
        help="strict mode: SESSION_KEYS required, Secure __Host- cookies [PRODUCTION=1]",
    )
    parser.add_argument("--debug", action="store_true", default=_env_flag("DEBUG"), help="Tornado debug mode [DEBUG=1]")
    parser.add_argument(
        "--processes",
        type=int,
        default=int(env.get("PROCESSES", "1")),
        help="worker processes on one port (0: one per core); state is shared through the store [PROCESSES]",
    )


def _add_account_options(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Passwords, the session cap, address binding, rate limits, remember-me and step-up."""
    parser.add_argument(
        "--bcrypt-cost", type=int, default=int(env.get("BCRYPT_COST", str(DEFAULT_COST))),
        help="bcrypt work factor: 12 takes about a quarter second per hash [BCRYPT_COST]",
    )
    parser.add_argument(
        "--max-sessions", type=int, default=int(env.get("MAX_SESSIONS", "10")),
        help="concurrent sessions per user; a login beyond it ends the oldest [MAX_SESSIONS]",
    )
    parser.add_argument(
        "--bind-ip", action="store_true", default=_env_flag("BIND_IP"),
        help="end a session when its client address changes (breaks on mobile networks) [BIND_IP=1]",
    )
    parser.add_argument(
        "--login-limit", default=env.get("LOGIN_LIMIT", "20/300"), metavar="HITS/SECONDS",
        help="login attempts per client address; one more waits for the window to end [LOGIN_LIMIT]",
    )
    parser.add_argument(
        "--login-account-limit", default=env.get("LOGIN_ACCOUNT_LIMIT", "5/900"), metavar="HITS/SECONDS",
        help="login attempts per account, the right password included once over it (a correct "
        "login clears the count) [LOGIN_ACCOUNT_LIMIT]",
    )
    parser.add_argument(
        "--register-limit", default=env.get("REGISTER_LIMIT", "5/3600"), metavar="HITS/SECONDS",
        help="sign-ups per client address (forms with mistakes do not count) [REGISTER_LIMIT]",
    )
    parser.add_argument(
        "--remember-days", type=float, default=float(env.get("REMEMBER_DAYS", "30")),
        help="lifetime of a remember-me token, in days [REMEMBER_DAYS]",
    )
    parser.add_argument(
        "--remember-grace", type=float, default=float(env.get("REMEMBER_GRACE", "60")),
        help="seconds the previous remember-me validator stays valid after a rotation [REMEMBER_GRACE]",
    )
    parser.add_argument(
        "--reauth-after", type=float, default=float(env.get("REAUTH_AFTER", "900")),
        help="sensitive actions need the password typed within this many seconds [REAUTH_AFTER]",
    )


def _add_timing_options(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Session timeouts and the websocket re-check and warning."""
    parser.add_argument(
        "--ws-recheck", type=float, default=float(env.get("WS_RECHECK", str(DEFAULT_RECHECK_INTERVAL))),
        metavar="SECONDS",
        help="re-check every open websocket's session in the store this often: how soon a logout "
        f"through another process closes it [WS_RECHECK]; default: {DEFAULT_RECHECK_INTERVAL:g}",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=env.get("IDLE_TIMEOUT", str(DEFAULT_IDLE_TIMEOUT)),
        metavar="SECONDS",
        help=f"a session unused this long ends [IDLE_TIMEOUT]; default: {DEFAULT_IDLE_TIMEOUT:g} (30 minutes)",
    )
    parser.add_argument(
        "--absolute-timeout", type=float, default=env.get("ABSOLUTE_TIMEOUT", str(DEFAULT_ABSOLUTE_TIMEOUT)),
        metavar="SECONDS",
        help=f"a session ends this long after its login, used or not [ABSOLUTE_TIMEOUT]; "
        f"default: {DEFAULT_ABSOLUTE_TIMEOUT:g} (12 hours)",
    )
    parser.add_argument(
        "--expiry-warning", type=float, default=env.get("EXPIRY_WARNING", str(DEFAULT_EXPIRY_WARNING)),
        metavar="SECONDS",
        help="the live page warns this long before the idle deadline, with a button that extends the "
        f"session [EXPIRY_WARNING]; default: {DEFAULT_EXPIRY_WARNING:g}",
    )


def parse_config(argv: list[str] | None = None) -> tuple[argparse.Namespace, DemoConfig]:
    args = build_parser().parse_args(argv)
    if args.production and args.debug:
        raise SystemExit("--debug is not allowed with --production")
    if args.processes < 0:
        raise SystemExit("error: --processes must be 0 (one per core) or more")
    if not 4 <= args.bcrypt_cost <= 31:
        raise SystemExit("error: --bcrypt-cost must be between 4 and 31")
    if args.max_sessions < 1:
        raise SystemExit("error: --max-sessions must be at least 1")
    if not args.remember_days > 0:
        raise SystemExit("error: --remember-days must be a positive number of days")
    if args.remember_grace < 0 or args.reauth_after < 0:
        raise SystemExit("error: --remember-grace and --reauth-after must not be negative")
    if not args.ws_recheck > 0:
        raise SystemExit("error: --ws-recheck must be a positive number of seconds")
    try:
        check_timeouts(args.idle_timeout, args.absolute_timeout, args.expiry_warning)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        limits = [Limit.parse(text) for text in (args.login_limit, args.login_account_limit, args.register_limit)]
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        trusted_proxies = parse_trusted_proxies(args.trusted_proxies or os.environ.get("TRUSTED_PROXIES"))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    data_dir = Path(args.data_dir)
    env_keys = os.environ.get("SESSION_KEYS")
    if not args.store or not (env_keys and env_keys.strip()) and not args.production:
        ensure_private_dir(data_dir)  # the SQLite file or the development key lives there
    try:
        keys, source = load_key_ring(env_keys, key_file=data_dir / "dev-keys", production=args.production)
    except (MissingKeysError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    args.key_source = f"development key in {source}" if source != "SESSION_KEYS" else source
    store_url = args.store or f"sqlite:///{data_dir / 'sessions.sqlite3'}"
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:////"):
        store_url = "sqlite:///" + str(Path(store_url[len("sqlite:///") :]).resolve())
    try:
        store = open_store(store_url)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    except ImportError as exc:  # a database driver the demo did not install (it installs only SQLite's needs)
        raise SystemExit(f"error: {exc} (./scripts/run-demo.sh installs it when --store names such a URL)") from None
    users_scheme = (args.users or "").partition("://")[0].lower()
    if args.users and users_scheme not in user_schemes():
        known = ", ".join(f"{s}://" for s in user_schemes())
        raise SystemExit(f"error: unknown user storage URL {args.users!r}: use one of {known}")
    log.info("keys from %s (ids %s); store %s", source, ",".join(keys.key_ids), store.describe())
    if trusted_proxies:
        log.info("trusting X-Forwarded-For/-Proto from %s", ", ".join(trusted_proxies))
    elif args.production:
        log.warning(
            "production mode with no --trusted-proxy: forwarded headers are ignored, so behind a "
            "TLS proxy every request looks like plain HTTP and gets no Secure cookie"
        )
    config = DemoConfig(
        keys=keys,
        store=store,
        store_url=store_url,
        users_url=args.users,
        production=args.production,
        session_options=session_options_for(
            args.production, idle_timeout=args.idle_timeout, absolute_timeout=args.absolute_timeout
        ),
        debug=args.debug,
        trusted_proxies=trusted_proxies,
        auth=AuthSettings(max_sessions=args.max_sessions, bind_ip=args.bind_ip, reauth_after=args.reauth_after),
        remember=RememberOptions(max_age=int(args.remember_days * 86400), grace=args.remember_grace),
        bcrypt_cost=args.bcrypt_cost,
        login_limit_address=limits[0],
        login_limit_account=limits[1],
        register_limit_address=limits[2],
        ws_recheck_interval=args.ws_recheck,
        expiry_warning=args.expiry_warning,
    )
    return args, config


async def serve(
    args: argparse.Namespace,
    config: DemoConfig,
    sockets: list[socket.socket] | None = None,
    lifeline: int | None = None,
) -> None:
    """Serve until SIGINT / SIGTERM, or (a worker) until the parent closes ``lifeline``."""
    accounts = config.build_accounts()
    try:
        await config.store.setup()
        await accounts.users.setup()
    except StoreError as exc:  # serve anyway: requests answer 503 until the store is back
        log.error("session store %s is not available yet: %s", config.store.name, exc)
    log.info("session store: %s", config.store.describe())
    app = make_app(config)
    server = make_server(app, config)
    if sockets is None:
        try:
            server.listen(args.port, args.host)
        except OSError as exc:
            accounts.hasher.close()
            await accounts.users.close()
            await config.store.close()
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(port_in_use_message(args.host, args.port)) from None
            raise SystemExit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        for line in start_lines(args, config):
            print(line, flush=True)
    else:
        server.add_sockets(sockets)
        if tornado.process.task_id() == 0:
            for line in start_lines(args, config):
                print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if lifeline is not None:  # readable only at end of file: the parent is stopping or gone
        loop.add_reader(lifeline, stop.set)
    await stop.wait()
    if lifeline is not None:
        loop.remove_reader(lifeline)
    server.stop()
    await app.settings["socket_registry"].close()  # open websockets get 1001 "going away"
    await app.settings["session_manager"].close()  # its prune task
    await server.close_all_connections()
    accounts.hasher.close()
    await accounts.users.close()
    await config.store.close()


def port_in_use_message(host: str, port: int) -> str:
    """One line for a port that is taken (instead of a traceback)."""
    return (f"error: port {port} on {host} is in use (is the demo already running?); "
            f"stop that server or choose another port with --port, e.g. --port {port + 1}")


def start_lines(args: argparse.Namespace, config: DemoConfig) -> list[str]:
    """What the demo prints once it listens: its address, where the data and the key are."""
    store = config.store
    lines = [f"tornado-sessions demo on http://{args.host}:{args.port}/ (store: {store.name})"]
    if isinstance(store, SQLiteStore):
        where = f"sessions and users in {store.path}"
        if config.users_url and config.users_url != config.store_url:
            where = f"sessions in {store.path}; users at {redact_url(config.users_url)}"
        lines.append(f"  data: {where}")
    else:
        lines.append(f"  data: {store.describe()}")
    source = getattr(args, "key_source", None)
    if source:
        lines.append(f"  keys: {source}" if source != "SESSION_KEYS" else "  keys: from SESSION_KEYS")
    lines.append("  stop with Ctrl+C; every option: python server.py --help")
    return lines


def redact_url(url: str) -> str:
    """A URL without its password, for a start line."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"


def main(argv: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # One record, one line: client bytes in any message (Tornado's included) are escaped.
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args = build_parser().parse_args(argv)
    processes = args.processes if args.processes != 0 else (os.cpu_count() or 1)
    if processes == 1:
        metrics.configure()
        args, config = parse_config(argv)
        asyncio.run(serve(args, config))
        return
    schemes = {(url or "sqlite:").partition(":")[0].lower() for url in (args.store, args.users)}
    if "memory" in schemes:
        raise SystemExit(
            "error: the memory store keeps sessions (and memory:// users) inside one process; with --processes "
            f"{args.processes} each worker would have its own. Use sqlite:// (the default) or a server store."
        )
    parse_config(argv)  # refuse bad flags and keys in the parent (stores connect lazily: nothing to fork)
    # Workers share one listening socket (bound before the fork) and the store; metrics
    # go through files that every worker writes and /metrics adds up.
    metrics_dir = tempfile.mkdtemp(prefix="tornado-sessions-metrics-")
    metrics.configure(metrics_dir)
    try:
        sockets = tornado.netutil.bind_sockets(args.port, args.host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SystemExit(port_in_use_message(args.host, args.port)) from None
        raise
    lifeline = WorkerLifeline()
    parent = os.getpid()
    try:
        tornado.process.fork_processes(processes)  # the parent stays in here until every worker has exited
    finally:
        if os.getpid() == parent:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    # In a worker: open the store (its connections and threads) only now, after the fork.
    lifeline.in_worker()
    args, config = parse_config(argv)
    log.info("worker %d of %d (pid %d)", tornado.process.task_id(), processes, os.getpid())
    asyncio.run(serve(args, config, sockets, lifeline.read_fd))


class WorkerLifeline:
    """Stops the workers when their parent stops, or dies.

    Tornado's ``fork_processes`` parent only waits for its children (and restarts
    crashed ones): a SIGTERM would kill it and leave the workers running, orphaned. So
    the parent holds the write end of a pipe that nobody writes to, and every worker
    watches the read end. On SIGTERM or SIGINT the parent closes its end; if the parent
    is killed outright (SIGKILL, a crash) the kernel closes it. Either way each worker
    sees end of file, shuts down gracefully (as on its own SIGTERM) and exits 0; the
    parent, which does not restart workers that exit 0, exits 0 once all have. A second
    signal to the parent ends it at once (the workers still stop by themselves).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._write_fd: int | None
        self.read_fd, self._write_fd = os.pipe()
        for sig in self.SIGNALS:  # inherited by the workers until in_worker() resets them
            signal.signal(sig, self._release)

    def _release(self, signum: int, frame: object) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        log.info("stopping the workers (signal %d)", signum)
        self._close_write_end()

    def _close_write_end(self) -> None:
        if self._write_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._write_fd)
            self._write_fd = None

    def in_worker(self) -> None:
        """In a worker just forked: its own signal handling, and only the read end kept."""
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # serve() installs the loop's handlers
        self._close_write_end()  # or the worker's own copy would keep the pipe open


if __name__ == "__main__":
    main()

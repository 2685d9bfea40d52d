#!/usr/bin/env python
"""Soak test: the demo server under mixed HTTP load and 1,000 open websockets (not in CI).

    .venv/bin/python bench/soak.py                                # 10 min on SQLite, then 10 min on Redis
    .venv/bin/python bench/soak.py --store redis --duration 300
    .venv/bin/python bench/soak.py --duration 60 --sockets 200    # a quick check of the script

For each store it starts ``server.py`` (one process) as a subprocess in a private 0700
temporary folder (and, for Redis, a private ``redis-server`` on a free loopback port
with no persistence), registers a pool of users through the JSON API (bcrypt cost 4,
rate limits raised so the soak is not throttled), opens the websockets to ``/ws`` with
each user's session cookie and the server's own ``Origin``, then runs for
``--duration`` seconds:

* HTTP, ``--concurrency`` requests in flight on keep-alive connections (each
  reconnects now and then): anonymous ``GET``/``POST /api/counter`` and ``GET /``,
  logged-in ``GET /auth/profile`` (half of them with a websocket user's session, which
  keeps those sessions used), log out + log in, a flash message set (``POST /flash``)
  and read back (``GET /api/flash``), and 404s;
* websockets: each socket sends ``{"type": "ping"}`` about every 30 s and one socket
  says something in the chat every 10 s (a broadcast to every socket); the server's own
  keep-alive pings are answered by Tornado's client.

The sockets come from several loopback source addresses (127.0.0.2, .3, ...; at most
50 each, 4 per session): the demo keeps the library's caps of 64 sockets per client
address, 32 per user and 8 per session, and 1,000 clients behind one address is not
what the soak is about.

Every ``--sample-every`` seconds it reads the server's RSS (``VmRSS`` of
``/proc/PID/status``) and its open file descriptors (``/proc/PID/fd``). The baseline
is the first sample after the warm-up (all sockets open, then 10 % of the duration,
at most 60 s). Criteria: RSS growth from the baseline to the end < 10 %, descriptors
flat (end <= baseline + 10), no 5xx answer, server alive. Prints a table (``--json``:
a JSON summary on stdout, the table on stderr) and exits 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tornado.httpclient import HTTPClientError, HTTPRequest  # noqa: E402
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect  # noqa: E402

from sessions.keys import generate_key  # noqa: E402
from tests.fixtures.support import CookieJar, free_port  # noqa: E402

#: Environment that would change which store, mode or port server.py picks.
SERVER_ENV_DROP = (
    "SESSION_STORE", "MONGODB_URL", "PRODUCTION", "DEBUG", "HOST", "PORT", "DATA_DIR", "PROCESSES",
    "BIND_IP", "MAX_SESSIONS", "TRUSTED_PROXIES", "WS_RECHECK",
)  # fmt: skip
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PASSWORD = "soak-password-0123"
SOCKETS_PER_SESSION = 4  # library cap: 8 per session, 32 per user
SOCKETS_PER_ADDRESS = 50  # library cap: 64 per client address
WS_PING_EVERY = 30.0  # seconds between a socket's own {"type": "ping"}
CHAT_EVERY = 10.0  # seconds between chat messages (each one reaches every socket)
REQUEST_TIMEOUT = 30.0
RECONNECT_EVERY = 200  # HTTP requests per keep-alive connection before a new one
VISITOR_REQUESTS = 40  # requests of one anonymous visitor before a new one comes
FD_SLACK = 10
RSS_LIMIT_PCT = 10.0

#: op -> weight (per request chosen by a worker).
OPS = {
    "counter_get": 25,
    "counter_post": 20,
    "home": 5,
    "profile": 25,
    "relogin": 5,  # POST /auth/logout then POST /auth/login
    "flash": 5,  # POST /flash then GET /api/flash
    "not_found": 5,
}
#: request kind -> the statuses that are expected (any other is counted as unexpected).
EXPECTED = {
    "GET /api/counter": {200},
    "POST /api/counter": {200},
    "GET /": {200},
    "GET /auth/profile": {200},
    "POST /auth/logout": {200},
    "POST /auth/login": {200},
    "POST /flash": {303},
    "GET /api/flash": {200},
    "GET /missing": {404},
    "POST /auth/register": {201},
    "GET /ws": {101},
}


def die_with_parent() -> None:
    """In the server's child process: SIGTERM when the soak dies, however it dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# -- a small keep-alive HTTP/1.1 client --------------------------------------------------
class StaleConnection(ConnectionError):
    """The server closed a kept-alive connection before answering (retry once on a new one)."""


class KeepAliveConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in range(2):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20), REQUEST_TIMEOUT
                )
                self.used = 0
            try:
                result = await asyncio.wait_for(
                    self._exchange(method, path, headers or {}, body), REQUEST_TIMEOUT
                )
            except StaleConnection:
                await self.close()
                if attempt == 0 and reused:
                    continue
                raise
            except BaseException:
                await self.close()
                raise
            self.used += 1
            if self.used >= RECONNECT_EVERY:
                await self.close()
            return result
        raise AssertionError("unreachable")

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise StaleConnection("closed before the status line")
        status = int(status_line.split(b" ", 2)[1])
        response_headers: list[tuple[str, str]] = []
        for _ in range(200):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            response_headers.append((name.strip(), value.strip()))
        lower = {name.lower(): value for name, value in response_headers}
        data = b""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "content-length" in lower:
            data = await reader.readexactly(int(lower["content-length"]))
        elif lower.get("transfer-encoding", "").lower() == "chunked":
            for _ in range(100_000):
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers up to the blank line
                        if (await reader.readline()) in (b"\r\n", b"\n", b""):
                            break
                    break
                data += await reader.readexactly(size)
                await reader.readexactly(2)
        else:
            data = await reader.read(1 << 20)
            lower["connection"] = "close"
        if lower.get("connection", "").lower() == "close":
            await self.close()
        return status, response_headers, data


# -- the run's state -------------------------------------------------------------------
@dataclass
class Stats:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    by_kind: dict[str, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    client_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    flash_missing: int = 0
    requests: int = 0
    #: websockets
    ws_opened: int = 0
    ws_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    ws_disconnects: list[dict[str, Any]] = field(default_factory=list)
    ws_received: collections.Counter[str] = field(default_factory=collections.Counter)
    ws_pings_sent: int = 0
    ws_chats_sent: int = 0
    ws_send_errors: int = 0
    first_5xx: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int, body: bytes = b"") -> None:
        self.requests += 1
        self.statuses[status] += 1
        self.by_kind[kind][status] += 1
        if status >= 500 and len(self.first_5xx) < 10:
            self.first_5xx.append(f"{kind} -> {status} {body[:200]!r}")


@dataclass
class Socket:
    index: int
    conn: WebSocketClientConnection
    closing: bool = False
    reader: asyncio.Task[None] | None = None


class Soak:
    def __init__(self, store: str, opts: argparse.Namespace, tmp: Path) -> None:
        self.store, self.opts, self.tmp = store, opts, tmp
        self.stats = Stats()
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis: Any = None
        self.log_path = tmp / "server.log"
        self.sockets: list[Socket] = []
        self.ws_sessions: list[str] = []  # sid cookie values of the websocket users' logins
        self.samples: list[dict[str, Any]] = []
        self.load_started = 0.0
        self.stopping = False
        self.xsrf = ""
        self.requests_before = 0  # requests of the setup (registrations, logins)

    # -- processes ---------------------------------------------------------------
    def start(self) -> None:
        data_dir = self.tmp / "data"
        data_dir.mkdir(mode=0o700)
        if self.store == "redis":
            from tests.fixtures.redis_fixture import RedisServerProcess

            self.redis = RedisServerProcess(self.tmp / "redis").start()
            url = self.redis.url
        else:
            url = f"sqlite:///{data_dir / 's.db'}"
        env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
        env["SESSION_KEYS"] = generate_key()  # fresh for this run, never written to disk
        env["PYTHONUNBUFFERED"] = "1"
        big = "1000000000"
        cmd = [
            sys.executable, str(ROOT / "server.py"), "--port", str(self.port), "--data-dir", str(data_dir),
            "--store", url, "--bcrypt-cost", "4", "--login-limit", f"{big}/300",
            "--login-account-limit", f"{big}/900", "--register-limit", f"{big}/3600",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()
            self.redis = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def sample(self) -> dict[str, Any]:
        assert self.proc is not None
        pid = self.proc.pid
        rss_kb = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return {
            "t": round(time.monotonic() - self.load_started, 1) if self.load_started else None,
            "rss_kb": rss_kb,
            "fds": fds,
            "cpu_s": cpu,
            "requests": self.stats.requests - self.requests_before,
            "open_sockets": sum(1 for s in self.sockets if s.reader is not None and not s.reader.done()),
        }

    # -- HTTP helpers ------------------------------------------------------------------
    async def wait_ready(self, timeout: float = 30.0) -> None:
        conn = KeepAliveConnection(self.port)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"server.py exited early:\n{self.log_tail()}")
                with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError, IndexError):
                    if (await conn.request("GET", "/health"))[0] == 200:
                        return
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        raise RuntimeError(f"server.py not ready after {timeout}s:\n{self.log_tail()}")

    async def call(
        self,
        conn: KeepAliveConnection,
        jar: CookieJar,
        kind: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        headers = dict(jar.header())
        body = b""
        if method != "GET":
            headers["X-XSRFToken"] = jar.cookies.get("_xsrf", "")
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(json_body).encode()
        elif form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(form).encode()
        try:
            status, response_headers, data = await conn.request(method, path, headers, body)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            self.stats.client_errors[f"{kind}: {type(exc).__name__}"] += 1
            return 0, b""
        jar.update([v for k, v in response_headers if k.lower() == "set-cookie"])
        self.stats.record(kind, status, data)
        return status, data

    async def get_xsrf(self) -> str:
        conn, jar = KeepAliveConnection(self.port), CookieJar()
        try:
            await self.call(conn, jar, "GET /api/counter", "GET", "/api/counter")
        finally:
            await conn.close()
        if "_xsrf" not in jar.cookies:
            raise RuntimeError("GET /api/counter set no _xsrf cookie")
        return jar.cookies["_xsrf"]

    def new_jar(self) -> CookieJar:
        jar = CookieJar()
        jar.cookies["_xsrf"] = self.xsrf
        return jar

    async def login(self, conn: KeepAliveConnection, jar: CookieJar, email: str) -> tuple[int, bytes]:
        return await self.call(
            conn, jar, "POST /auth/login", "POST", "/auth/login", json_body={"email": email, "password": PASSWORD}
        )

    async def make_user(self, conn: KeepAliveConnection, name: str) -> CookieJar:
        """Register, then log in (a fresh jar): the jar holds the login's session."""
        email = f"{name}@soak.example"
        status, body = await self.call(
            conn,
            self.new_jar(),
            "POST /auth/register",
            "POST",
            "/auth/register",
            json_body={"email": email, "name": name, "password": PASSWORD},
        )
        if status != 201:
            raise RuntimeError(f"register {name}: {status} {body[:200]!r}")
        jar = self.new_jar()
        status, body = await self.login(conn, jar, email)
        if status != 200 or "sid" not in jar.cookies:
            raise RuntimeError(f"login {name}: {status} {body[:200]!r}")
        return jar

    # -- setup -------------------------------------------------------------------------
    async def register_users(self, count: int, prefix: str) -> list[CookieJar]:
        jars: list[CookieJar | None] = [None] * count
        queue = list(range(count))

        async def worker() -> None:
            conn = KeepAliveConnection(self.port)
            try:
                while queue:
                    i = queue.pop()
                    jars[i] = await self.make_user(conn, f"{prefix}{i}")
            finally:
                await conn.close()

        await asyncio.gather(*(worker() for _ in range(min(self.opts.concurrency, count))))
        return [j for j in jars if j is not None]

    async def open_sockets(self) -> None:
        count = self.opts.sockets
        jars = await self.register_users(math.ceil(count / SOCKETS_PER_SESSION), "wsuser")
        self.ws_sessions = [j.cookies["sid"] for j in jars]
        sem = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            sid = self.ws_sessions[i // SOCKETS_PER_SESSION]
            source = f"127.0.0.{2 + i // SOCKETS_PER_ADDRESS}"
            request = HTTPRequest(
                f"ws://127.0.0.1:{self.port}/ws",
                headers={"Cookie": f"sid={sid}", "Origin": self.origin},
                network_interface=source,
                connect_timeout=30,
                request_timeout=30,
            )
            async with sem:
                try:
                    conn = await websocket_connect(request)
                except HTTPClientError as exc:
                    self.stats.ws_refused[f"HTTP {exc.code}"] += 1
                    self.stats.record("GET /ws", exc.code)
                    return
                except (TimeoutError, OSError) as exc:
                    self.stats.ws_refused[type(exc).__name__] += 1
                    return
                welcome = await asyncio.wait_for(conn.read_message(), 30)
            if welcome is None or json.loads(welcome).get("type") != "welcome":
                self.stats.ws_refused[f"no welcome: {welcome!r:.80}"] += 1
                conn.close()
                return
            self.stats.ws_opened += 1
            self.stats.record("GET /ws", 101)
            self.stats.ws_received["welcome"] += 1
            sock = Socket(i, conn)
            sock.reader = asyncio.create_task(self.read_socket(sock))
            self.sockets.append(sock)

        if 2 + (count - 1) // SOCKETS_PER_ADDRESS > 254:
            raise RuntimeError("too many sockets for the 127.0.0.x source addresses")
        await asyncio.gather(*(one(i) for i in range(count)))

    async def read_socket(self, sock: Socket) -> None:
        while True:
            message = await sock.conn.read_message()
            if message is None:
                break
            if isinstance(message, str):
                with contextlib.suppress(ValueError, AttributeError):
                    self.stats.ws_received[str(json.loads(message).get("type"))] += 1
        if not sock.closing:
            self.stats.ws_disconnects.append({
                "socket": sock.index,
                "t": round(time.monotonic() - self.load_started, 1) if self.load_started else None,
                "code": sock.conn.close_code,
                "reason": sock.conn.close_reason,
            })  # fmt: skip

    # -- load ------------------------------------------------------------------------
    async def http_worker(self, n: int, jar: CookieJar, deadline: float) -> None:
        rng = random.Random(n)
        conn = KeepAliveConnection(self.port)
        visitor, visitor_requests, logged_in = self.new_jar(), 0, True
        email = f"httpuser{n}@soak.example"
        names, weights = list(OPS), list(OPS.values())
        serial = 0
        try:
            while time.monotonic() < deadline and not self.stopping:
                serial += 1
                op = rng.choices(names, weights)[0]
                visitor_requests += 1
                if visitor_requests > VISITOR_REQUESTS:  # a new anonymous visitor
                    visitor, visitor_requests = self.new_jar(), 0
                if op == "counter_get":
                    await self.call(conn, visitor, "GET /api/counter", "GET", "/api/counter")
                elif op == "counter_post":
                    await self.call(conn, visitor, "POST /api/counter", "POST", "/api/counter")
                elif op == "home":
                    await self.call(conn, visitor, "GET /", "GET", "/")
                elif op == "profile":
                    if rng.random() < 0.5 and self.ws_sessions:  # a websocket user's session
                        other = self.new_jar()
                        other.cookies["sid"] = rng.choice(self.ws_sessions)
                        await self.call(conn, other, "GET /auth/profile", "GET", "/auth/profile")
                    elif logged_in:
                        await self.call(conn, jar, "GET /auth/profile", "GET", "/auth/profile")
                elif op == "relogin":
                    await self.call(conn, jar, "POST /auth/logout", "POST", "/auth/logout")
                    logged_in = False
                    status, _ = await self.login(conn, jar, email)
                    logged_in = status == 200
                elif op == "flash":
                    message = f"soak flash {n}-{serial}"
                    status, _ = await self.call(
                        conn,
                        visitor,
                        "POST /flash",
                        "POST",
                        "/flash",
                        form={"message": message, "category": "info"},
                    )
                    if status == 303:
                        status, body = await self.call(conn, visitor, "GET /api/flash", "GET", "/api/flash")
                        if status == 200 and message not in body.decode("utf-8", "replace"):
                            self.stats.flash_missing += 1
                elif op == "not_found":
                    await self.call(conn, visitor, "GET /missing", "GET", f"/no-such-page/{serial}")
        finally:
            await conn.close()

    async def ws_traffic(self, deadline: float) -> None:
        """Each socket pings about every WS_PING_EVERY s; a chat every CHAT_EVERY s."""
        rng = random.Random(7)
        per_tick = max(1, math.ceil(len(self.sockets) / WS_PING_EVERY))
        cursor, ticks = 0, 0
        while time.monotonic() < deadline and not self.stopping:
            ticks += 1
            live = [s for s in self.sockets if s.reader is not None and not s.reader.done()]
            for _ in range(min(per_tick, len(live))):
                sock = live[cursor % len(live)]
                cursor += 1
                try:
                    await sock.conn.write_message(json.dumps({"type": "ping", "id": cursor}))
                    self.stats.ws_pings_sent += 1
                except WebSocketClosedError:
                    self.stats.ws_send_errors += 1
            if live and ticks % int(CHAT_EVERY) == 0:
                try:
                    await rng.choice(live).conn.write_message(
                        json.dumps({"type": "chat", "text": f"soak {ticks}"})
                    )
                    self.stats.ws_chats_sent += 1
                except WebSocketClosedError:
                    self.stats.ws_send_errors += 1
            await asyncio.sleep(max(0.0, min(1.0, deadline - time.monotonic())))

    async def sampler(self, deadline: float) -> None:
        last_print = 0.0
        while time.monotonic() < deadline and not self.stopping:
            if not self.alive():
                return
            s = self.sample()
            self.samples.append(s)
            if s["t"] - last_print >= 30 or last_print == 0:
                last_print = s["t"] or 0.001
                rate = s["requests"] / s["t"] if s["t"] else 0
                print(
                    f"  [{self.store}] t={s['t']:>5.0f}s  requests {s['requests']:>7,} ({rate:,.0f}/s)  "
                    f"RSS {s['rss_kb'] / 1024:6.1f} MiB  fds {s['fds']:>5}  open sockets {s['open_sockets']:>5}  "
                    f"5xx {sum(n for c, n in self.stats.statuses.items() if c >= 500)}",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(max(0.0, min(self.opts.sample_every, deadline - time.monotonic())))

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.start()
        await self.wait_ready()
        self.xsrf = await self.get_xsrf()
        print(
            f"  [{self.store}] server pid {self.proc.pid if self.proc else '?'} on {self.origin}; "
            f"registering users, opening {self.opts.sockets} websockets",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.wait_for(self.open_sockets(), timeout=300)
        if self.stats.ws_opened < self.opts.sockets:
            errors = [ln for ln in self.log_tail(10_000).splitlines() if " ERROR " in ln]
            raise RuntimeError(
                f"only {self.stats.ws_opened} of {self.opts.sockets} websockets opened "
                f"(refused: {dict(self.stats.ws_refused)}); first server error: {errors[0][:1500] if errors else None}"
            )
        http_jars = await asyncio.wait_for(
            self.register_users(self.opts.concurrency, "httpuser"), timeout=120
        )
        setup_s = time.monotonic() - started
        print(
            f"  [{self.store}] {self.stats.ws_opened} websockets open (refused: {dict(self.stats.ws_refused)}), "
            f"setup {setup_s:.0f} s; load for {self.opts.duration} s",
            file=sys.stderr,
            flush=True,
        )
        requests_before = self.requests_before = self.stats.requests
        self.load_started = time.monotonic()
        deadline = self.load_started + self.opts.duration
        cpu_before = self.sample()["cpu_s"]
        tasks = [asyncio.create_task(self.sampler(deadline)), asyncio.create_task(self.ws_traffic(deadline))]
        tasks += [asyncio.create_task(self.http_worker(n, jar, deadline)) for n, jar in enumerate(http_jars)]
        try:
            await asyncio.wait(tasks, timeout=self.opts.duration + 120)
        finally:
            self.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        failed = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
        if failed:  # a bug in the load generator, not a server failure
            raise RuntimeError(f"load task failed: {failed[0]!r}")
        elapsed = time.monotonic() - self.load_started
        alive = self.alive()
        final = self.sample() if alive else None
        if final is not None:
            self.samples.append(final)
        # Our own closes from here on.
        for sock in self.sockets:
            sock.closing = True
            sock.conn.close(1000, "soak over")
        readers = [s.reader for s in self.sockets if s.reader is not None]
        if readers:
            await asyncio.wait(readers, timeout=30)
        for task in readers:
            task.cancel()
        open_at_end = final["open_sockets"] if final else 0
        return self.summary(elapsed, setup_s, alive, open_at_end, requests_before, cpu_before)

    def summary(
        self,
        elapsed: float,
        setup_s: float,
        alive: bool,
        open_at_end: int,
        requests_before: int,
        cpu_before: float,
    ) -> dict[str, Any]:
        warmup = min(60.0, 0.1 * self.opts.duration)
        timed = [s for s in self.samples if s["t"] is not None]
        base = next((s for s in timed if s["t"] >= warmup), timed[0] if timed else None)
        end = timed[-1] if timed else None
        after = [s for s in timed if base is not None and s["t"] >= base["t"]]
        st = self.stats
        fivexx = sum(n for code, n in st.statuses.items() if code >= 500)
        unexpected = {
            kind: {str(c): n for c, n in counts.items() if c not in EXPECTED.get(kind, set())}
            for kind, counts in st.by_kind.items()
        }
        unexpected = {k: v for k, v in unexpected.items() if v}
        load_requests = st.requests - requests_before
        result: dict[str, Any] = {
            "store": self.store,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "duration_s": round(elapsed, 1),
            "setup_s": round(setup_s, 1),
            "warmup_s": warmup,
            "sockets_requested": self.opts.sockets,
            "sockets_opened": st.ws_opened,
            "sockets_refused": dict(st.ws_refused),
            "sockets_open_at_end": open_at_end,
            "ws_disconnects": len(st.ws_disconnects),
            "ws_disconnect_sample": st.ws_disconnects[:10],
            "ws_pings_sent": st.ws_pings_sent,
            "ws_chats_sent": st.ws_chats_sent,
            "ws_received": dict(st.ws_received),
            "ws_send_errors": st.ws_send_errors,
            "requests": load_requests,
            "requests_per_s": round(load_requests / elapsed, 1) if elapsed else 0,
            "statuses": {str(c): n for c, n in sorted(st.statuses.items())},
            "status_by_request": {
                k: {str(c): n for c, n in sorted(v.items())} for k, v in sorted(st.by_kind.items())
            },
            "unexpected_statuses": unexpected,
            "client_errors": dict(st.client_errors),
            "flash_missing": st.flash_missing,
            "5xx": fivexx,
            "first_5xx": st.first_5xx,
            "server_alive": alive,
            "server_cpu_cores": round((end["cpu_s"] - cpu_before) / elapsed, 2) if end and elapsed else None,
            "samples": len(self.samples),
        }
        if base and end:
            rss_growth = 100.0 * (end["rss_kb"] - base["rss_kb"]) / base["rss_kb"]
            result.update(
                rss_mib={
                    "start": round(self.samples[0]["rss_kb"] / 1024, 1),
                    "baseline": round(base["rss_kb"] / 1024, 1),
                    "end": round(end["rss_kb"] / 1024, 1),
                    "max": round(max(s["rss_kb"] for s in after) / 1024, 1),
                    "baseline_t": base["t"],
                },
                rss_growth_pct=round(rss_growth, 2),
                fds={
                    "baseline": base["fds"],
                    "end": end["fds"],
                    "max": max(s["fds"] for s in after),
                    "min": min(s["fds"] for s in after),
                },  # fmt: skip
            )
            checks = {
                f"RSS growth < {RSS_LIMIT_PCT:g} %": rss_growth < RSS_LIMIT_PCT,
                f"fds flat (end <= baseline + {FD_SLACK})": end["fds"] <= base["fds"] + FD_SLACK,
                "0 5xx": fivexx == 0,
                "server alive": alive,
            }
        else:
            checks = {"samples taken": False, "0 5xx": fivexx == 0, "server alive": alive}
        result["checks"] = checks
        result["pass"] = all(checks.values())
        result["rss_series_mib"] = [[s["t"], round(s["rss_kb"] / 1024, 1), s["fds"]] for s in timed]
        logged = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        errors = [ln for ln in logged if " ERROR " in ln or "Traceback" in ln]
        result["server_error_lines"] = len(errors)
        result["server_error_sample"] = errors[:5]
        if not result["pass"] or errors:
            keep = Path(tempfile.gettempdir()) / f"tornado-sessions-soak-{self.store}-{os.getpid()}.log"
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log_path, keep)
                result["server_log"] = str(keep)
        return result


# -- report ----------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("store", lambda r: r["store"]),
        ("duration (load)", lambda r: f"{r['duration_s']:.0f} s (+{r['setup_s']:.0f} s setup)"),
        ("websockets open / asked", lambda r: f"{r['sockets_opened']} / {r['sockets_requested']}"),
        ("websocket disconnects (server side)", lambda r: str(r["ws_disconnects"])),
        ("requests", lambda r: f"{r['requests']:,}"),
        ("requests/s", lambda r: f"{r['requests_per_s']:,.0f}"),
        ("status codes", lambda r: " ".join(f"{c}:{n}" for c, n in r["statuses"].items())),
        ("5xx", lambda r: str(r["5xx"])),
        ("unexpected statuses", lambda r: json.dumps(r["unexpected_statuses"]) if r["unexpected_statuses"] else "none"),
        ("client errors", lambda r: json.dumps(r["client_errors"]) if r["client_errors"] else "none"),
        ("RSS baseline / end / max", lambda r: "{baseline} / {end} / {max} MiB".format(**r["rss_mib"]) if "rss_mib" in r else "-"),
        ("RSS growth", lambda r: f"{r['rss_growth_pct']:+.1f} %" if "rss_growth_pct" in r else "-"),
        ("fds baseline / end / max", lambda r: "{baseline} / {end} / {max}".format(**r["fds"]) if "fds" in r else "-"),
        ("server CPU (cores)", lambda r: str(r["server_cpu_cores"])),
        ("server ERROR lines", lambda r: str(r["server_error_lines"])),
        ("result", lambda r: "PASS" if r["pass"] else "FAIL: " + ", ".join(k for k, ok in r["checks"].items() if not ok)),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, get in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{get(r):<34}" for r in results).rstrip())
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="tornado-sessions soak test (not in CI; see README, Benchmarks)"
    )
    parser.add_argument("--store", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--duration", type=int, default=600, help="seconds of load per store (after setup)")
    parser.add_argument("--sockets", type=int, default=1000, help="websockets held open")
    parser.add_argument("--concurrency", type=int, default=20, help="HTTP requests in flight")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument(
        "--json", action="store_true", help="JSON summary on stdout (the table goes to stderr)"
    )
    opts = parser.parse_args()
    if not 10 <= opts.duration <= 24 * 3600:
        parser.error("--duration must be 10 s to 24 h")
    if not 1 <= opts.sockets <= 10_000:
        parser.error("--sockets must be 1 to 10,000")
    if not 1 <= opts.concurrency <= 500:
        parser.error("--concurrency must be 1 to 500")
    return opts


async def run_all(opts: argparse.Namespace) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    current: list[Soak] = []

    def interrupt() -> None:
        # The flag too: on Python < 3.12 asyncio.wait_for can swallow a cancellation that
        # races its inner call finishing, and every load loop checks the flag.
        for soak in current:
            soak.stopping = True
        main_task.cancel()  # type: ignore[union-attr]

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    results = []
    for store in ("sqlite", "redis") if opts.store == "both" else (opts.store,):
        if current and current[0].stopping:  # interrupted
            break
        tmp = Path(tempfile.mkdtemp(prefix=f"tornado-sessions-soak-{store}-"))  # 0700
        soak = Soak(store, opts, tmp)
        current[:] = [soak]
        try:
            results.append(await soak.run())
        except (TimeoutError, RuntimeError, OSError) as exc:
            results.append(
                {
                    "store": store,
                    "pass": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "server_log_tail": soak.log_tail(),
                }
            )
        finally:
            soak.stopping = True
            for sock in soak.sockets:
                sock.closing = True
                sock.conn.close()
            soak.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    opts = parse_args()
    import tornado

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < opts.sockets + 200:
        print(
            f"error: open-file limit {nofile} is too low for {opts.sockets} sockets (ulimit -n)",
            file=sys.stderr,
        )
        return 2
    meta = {
        "cpus": os.cpu_count(), "python": platform.python_version(), "tornado": tornado.version,
        "loadavg_before": os.getloadavg()[0], "duration_s": opts.duration, "sockets": opts.sockets,
        "concurrency": opts.concurrency,
    }  # fmt: skip
    print(
        f"soak: {opts.store}, {opts.duration} s of load, {opts.sockets} websockets, "
        f"{opts.concurrency} HTTP requests in flight; load average {meta['loadavg_before']:.2f}",
        file=sys.stderr,
    )
    try:
        results = asyncio.run(run_all(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    meta["loadavg_after"] = os.getloadavg()[0]
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"error ({r['store']}): {r['error']}\n{r.get('server_log_tail', '')}", file=sys.stderr)
    done = [r for r in results if "error" not in r]
    text = table(done) if done else "no store finished"
    if opts.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        print(text, file=sys.stderr)
    else:
        print(text)
    for r in done:
        if r.get("server_log"):
            print(f"server log ({r['store']}): {r['server_log']}", file=sys.stderr)
        if r["first_5xx"]:
            print(f"first 5xx ({r['store']}): {r['first_5xx']}", file=sys.stderr)
        if r["ws_disconnect_sample"]:
            print(f"websocket disconnects ({r['store']}): {r['ws_disconnect_sample']}", file=sys.stderr)
    return 0 if results and all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

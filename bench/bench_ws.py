#!/usr/bin/env python
"""Websocket benchmarks (issue 14 §5): idle sockets, notices across hosts, revocation.

    .venv/bin/python bench/bench_ws.py                     # all three, ~15 min
    .venv/bin/python bench/bench_ws.py --only idle --sockets 2000
    .venv/bin/python bench/bench_ws.py --only notice --notice-stores redis,postgres --json
    .venv/bin/python bench/bench_ws.py --only revoke --revoke-stores sqlite

Sub-benchmarks (``--only``, repeatable or a comma list; default all):

``idle``
    One ``server.py`` process (``--idle-store``, SQLite by default, or memory) and
    ``--sockets`` authenticated, idle websockets (default 10,000). Users x sessions
    stay inside the library's caps: 8 sockets per session, 4 sessions per user (32
    sockets per user), at most ``--per-address`` (40) sockets per loopback source
    address (127.0.0.10 ... 127.0.0.254, then 127.0.1.x, ...; cap 64). Handshakes are
    opened with ``--concurrency`` (200) in flight. Reports memory per socket = (server
    RSS with N sockets open - RSS before the first one) / N (target <= 30 KB), the RSS
    sampled twice (``--settle`` seconds after the last handshake, after the first
    round of keep-alive pings), handshakes per second and handshake latency.

``notice``
    The deployment fixture (nginx + two app hosts, each ``server.py --processes 2``, on
    127.0.0.2 and 127.0.0.3) over a private Redis (and PostgreSQL with
    ``--notice-stores redis,postgres``). Users log in through nginx; ``--notice-sockets``
    (1,000) sockets connect directly to the hosts' workers (alternating hosts; the
    welcome's ``worker`` field and the host give the spread). One socket sends
    ``--messages`` chat messages (one every 0.6 s, under the chat rate of 2/s); every
    socket records when each arrives. Latency = receipt - send, one client clock (one
    machine). Target p99 <= 50 ms on Redis.

``revoke``
    ``server.py --processes 2`` (layout ``workers``) and, for contrast, two ``server.py``
    processes on two ports sharing the store and keys (layout ``processes``;
    ``--revoke-layouts``), on SQLite and on a private Redis (``--revoke-stores``),
    ``--sockets`` sockets over both. The quiet window runs in the first layout only. First a quiet window of ``--quiet``
    seconds (nothing but the server's own keep-alive pings and the registry's
    re-check): the store reads of the safety re-check are counted (Redis: ``INFO
    commandstats`` before and after, ``HGET`` calls = sessions read; SQLite has no
    counter: computed from the sessions each worker holds, the batch size and the
    interval, and said so). Then ``--revocations`` users, one at a time, are logged out
    everywhere (``POST /auth/logout-all``, served by one of the workers) and the time
    from sending the request to each of the user's 32 sockets receiving its close
    frame is recorded. Target p99 <= 1 s.

Everything runs on loopback in private 0700 temporary folders; the processes started
here are stopped by their own pids (server.py also gets SIGTERM when this script
dies). Every loop is bounded in count and every wait in time. The client side is a
minimal websocket client on asyncio's Protocol (a few microseconds per frame, so the
server, not Tornado's client, is what is measured); it answers the server's pings.

Prints a table (``--json``: JSON on stdout, the table on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tornado.httpclient import AsyncHTTPClient  # noqa: E402
from tornado.netutil import DefaultLoopResolver, OverrideResolver  # noqa: E402

from sessions.keys import generate_key  # noqa: E402
from tests.fixtures.support import Client, CookieJar, free_port, stop_process  # noqa: E402

PASSWORD = "bench-ws-password-0123"
SOCKETS_PER_SESSION = 8  # library cap: 8 per session
SESSIONS_PER_USER = 4  # 4 x 8 = 32: library cap per user
BIG = "1000000000"
#: Environment that would change which store, mode or port server.py picks.
SERVER_ENV_DROP = (
    "SESSION_STORE", "MONGODB_URL", "USERS_URL", "PRODUCTION", "DEBUG", "HOST", "PORT", "DATA_DIR", "PROCESSES",
    "BIND_IP", "MAX_SESSIONS", "TRUSTED_PROXIES", "WS_RECHECK", "PROMETHEUS_MULTIPROC_DIR",
)  # fmt: skip
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RETRIES_503 = 3  # handshakes answered 503 are tried again this many times, 0.5 s apart
RECHECK_BATCH = 500  # sessions.websocket.RECHECK_BATCH (one store round trip per batch)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def source_addresses(count: int) -> list[str]:
    """Loopback source addresses: 127.0.0.10-254, 127.0.1.1-254, 127.0.2.1-254, ...

    127.0.0.1-9 are left alone (127.0.0.1: the servers and nginx; .2/.3: the
    deployment's hosts; .5: the deployment tests' client)."""
    found: list[str] = []
    for third in range(0, 64):
        for fourth in range(10 if third == 0 else 1, 255):
            found.append(f"127.0.{third}.{fourth}")
            if len(found) == count:
                return found
    raise ValueError(f"{count} source addresses asked, {len(found)} available")


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (here and, inherited, in every child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_preexec() -> None:
    """In server.py's child: the open-file limit raised (``ulimit -n``), SIGTERM when we die."""
    raise_nofile()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# -- /proc --------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def proc_sample(pid: int) -> dict[str, Any]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return {
        "pid": pid,
        "rss_kb": rss_kb,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
    }


# -- a minimal websocket client ----------------------------------------------------------


class HandshakeRefused(ConnectionError):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class WSClient(asyncio.Protocol):
    """RFC 6455 client on asyncio's Protocol: text frames in, pings answered, close recorded.

    ``opened`` resolves with the server's first message (the demo's ``welcome``);
    ``on_text(client, payload, received_at)`` gets every later text frame;
    ``closed_at`` (``time.perf_counter()``) and ``close_code`` are set by the server's
    close frame (or the connection dropping).
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.on_text: Callable[[WSClient, bytes, float], None] | None = None
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.welcome: dict[str, Any] = {}
        self.tag: Any = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._fail(ConnectionError("response head over 64 KiB"))
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            try:
                status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                status = 0
            if status != 101:
                self._fail(HandshakeRefused(status))
                return
            self.upgraded = True
        for _ in range(100_000):  # frames in this chunk
            n = len(buf)
            if n < 2:
                return
            b0, b1 = buf[0], buf[1]
            length, pos = b1 & 0x7F, 2
            if length == 126:
                if n < 4:
                    return
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if n < 10:
                    return
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            if b1 & 0x80:
                self._fail(ConnectionError("masked frame from the server"))
                return
            if n < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            opcode = b0 & 0x0F
            if opcode == 0x1:
                if not self.opened.done():
                    try:
                        self.welcome = json.loads(payload)
                    except ValueError:
                        self.welcome = {"type": "?"}
                    self.opened.set_result(self.welcome)
                elif self.on_text is not None:
                    self.on_text(self, payload, now)
            elif opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode == 0x8:
                self.closed_at = now
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
                with contextlib.suppress(Exception):
                    self.send_frame(0x8, payload[:2])
                if self.transport is not None:
                    self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed_at is None:
            self.closed_at = time.perf_counter()
            self.close_code = 1006
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the welcome ({exc})"))

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # sending
    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("socket closed")
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        else:
            header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
        body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.transport.write(header + mask + body)

    def send_json(self, data: dict[str, Any]) -> None:
        self.send_frame(0x1, json.dumps(data, separators=(",", ":")).encode())

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def is_open(self) -> bool:
        return self.closed_at is None and self.transport is not None and not self.transport.is_closing()


async def open_ws(
    host: str, port: int, source: str, cookie: str, *, origin: str | None = None, timeout: float = 30.0
) -> WSClient:
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"Cookie: {cookie}",
    ]  # fmt: skip
    if origin:
        lines.append(f"Origin: {origin}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WSClient(request), host, port, local_addr=(source, 0)), timeout
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.opened), timeout)
    except BaseException:
        client.close()
        raise
    return client


@dataclass
class OpenResult:
    clients: list[WSClient]
    elapsed: float
    latencies: list[float]
    refused: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)


async def open_many(
    targets: list[tuple[str, int, str, str, str | None]], concurrency: int, *, timeout: float = 600.0
) -> OpenResult:
    """Open ``(host, port, source, cookie, origin)`` sockets, ``concurrency`` in flight."""
    sem = asyncio.Semaphore(concurrency)
    clients: list[WSClient | None] = [None] * len(targets)
    latencies: list[float] = []
    refused: Counter[str] = Counter()
    retried: Counter[str] = Counter()
    progress = {"done": 0, "last": time.monotonic()}

    async def one(i: int) -> None:
        host, port, source, cookie, origin = targets[i]
        async with sem:
            for attempt in range(RETRIES_503 + 1):
                began = time.perf_counter()
                try:
                    client = await open_ws(host, port, source, cookie, origin=origin)
                    break
                except HandshakeRefused as exc:
                    # 503: the store was unavailable for this handshake (say, its connection
                    # pool was exhausted by the burst); a client tries again later.
                    if exc.status == 503 and attempt < RETRIES_503:
                        retried[f"HTTP {exc.status}"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    refused[f"HTTP {exc.status}"] += 1
                    return
                except (OSError, TimeoutError) as exc:
                    refused[type(exc).__name__] += 1
                    return
            else:
                return
            latencies.append(time.perf_counter() - began)
            client.tag = i
            clients[i] = client
            progress["done"] += 1
            if time.monotonic() - progress["last"] > 5:
                progress["last"] = time.monotonic()
                log(f"  {progress['done']:,} / {len(targets):,} sockets open")

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(len(targets)))), timeout)
    elapsed = time.perf_counter() - began
    return OpenResult([c for c in clients if c is not None], elapsed, latencies, refused, retried)


def close_all(clients: Iterable[WSClient]) -> None:
    for client in clients:
        client.close()


# -- the server and its users -------------------------------------------------------------


class DemoServer:
    """``server.py`` (``--processes N``) on 127.0.0.1, in a private folder, stopped by pid."""

    def __init__(
        self, tmp: Path, store_url: str, *, processes: int = 1, extra: Iterable[str] = (), keys: str | None = None
    ) -> None:
        self.tmp, self.store_url, self.processes = tmp, store_url, processes
        self.keys = keys or generate_key()  # fresh for this run, never written to disk
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path = tmp / "server.log"
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.args = [
            sys.executable, str(ROOT / "server.py"), "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--store", store_url, "--processes", str(processes),
            "--bcrypt-cost", "4", "--login-limit", f"{BIG}/300", "--login-account-limit", f"{BIG}/900",
            "--register-limit", f"{BIG}/3600", "--max-sessions", "20", "--reauth-after", "7200", *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DemoServer:
        env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
        env["SESSION_KEYS"] = self.keys
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=server_preexec,
            )  # fmt: skip
        return self

    async def wait_ready(self, http: AsyncHTTPClient, timeout: float = 60.0) -> None:
        """``/ready`` answers, from every worker (``/health`` names the worker)."""
        seen: set[Any] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"server.py exited:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                ready = await http.fetch(self.base + "/ready", raise_error=False, request_timeout=5)
                if ready.code == 200:
                    health = await http.fetch(self.base + "/health", raise_error=False, request_timeout=5)
                    seen.add(json.loads(health.body).get("worker"))
                    if len(seen) >= self.processes:
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"server.py not ready after {timeout} s (workers seen: {seen}):\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """The processes that serve: the one process, or the workers under --processes N."""
        if self.proc is None:
            return []
        return children(self.proc.pid) if self.processes > 1 else [self.proc.pid]

    def samples(self) -> list[dict[str, Any]]:
        return [proc_sample(pid) for pid in self.pids()]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, grace=30)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def error_lines(self) -> list[str]:
        with contextlib.suppress(OSError):
            return [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                    if " ERROR " in ln or "Traceback" in ln or '"level": "error"' in ln.lower()]
        return []


@dataclass
class Login:
    user: int
    email: str
    jar: CookieJar


async def make_logins(
    http: AsyncHTTPClient, base: str, users: int, sessions_per_user: int, *, prefix: str,
    concurrency: int = 8, timeout: float = 600.0,
) -> list[Login]:
    """Register ``users`` users and log each in ``sessions_per_user`` times (a jar each).

    Sorted by user, then session."""
    probe = Client(http, base)
    await probe.fetch("/api/counter")
    xsrf_name = next((n for n in ("_xsrf", "__Host-xsrf") if n in probe.jar.cookies), None)
    if xsrf_name is None:
        raise RuntimeError(f"no XSRF cookie from GET /api/counter: {probe.jar.cookies}")
    xsrf = probe.jar.cookies[xsrf_name]

    def jar() -> CookieJar:
        made = CookieJar()
        made.cookies[xsrf_name] = xsrf
        return made

    out: list[Login] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(u: int) -> None:
        email = f"{prefix}{u}@bench.example"
        async with sem:
            reg = await Client(http, base, jar=jar()).fetch(
                "/auth/register", "POST",
                json.dumps({"email": email, "name": f"{prefix}{u}", "password": PASSWORD}),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            if reg.code != 201:
                raise RuntimeError(f"register {email}: {reg.code} {reg.body[:200]!r}")
            for _ in range(sessions_per_user):
                client = Client(http, base, jar=jar())
                response = await client.fetch(
                    "/auth/login", "POST", json.dumps({"email": email, "password": PASSWORD}),
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
                if response.code != 200 or not sid_cookie(client.jar):
                    raise RuntimeError(f"login {email}: {response.code} {response.body[:200]!r}")
                out.append(Login(u, email, client.jar))

    await asyncio.wait_for(asyncio.gather(*(one(u) for u in range(users))), timeout)
    out.sort(key=lambda login: login.user)
    return out


def sid_cookie(jar: CookieJar) -> str | None:
    for name in ("sid", "__Host-sid"):
        if name in jar.cookies:
            return f"{name}={jar.cookies[name]}"
    return None


def plan_logins(sockets: int) -> tuple[int, int]:
    """(users, sessions per user) for ``sockets`` sockets at 8 per session, 32 per user."""
    sessions = math.ceil(sockets / SOCKETS_PER_SESSION)
    return math.ceil(sessions / SESSIONS_PER_USER), SESSIONS_PER_USER


def socket_targets(
    logins: list[Login], sockets: int, per_address: int, hosts: list[tuple[str, int]], *, origin: bool = True
) -> list[tuple[str, int, str, str, str | None]]:
    """Socket i: session i // 8, host i % len(hosts), source address i // per_address."""
    addresses = source_addresses(math.ceil(sockets / per_address))
    targets = []
    for i in range(sockets):
        host, port = hosts[i % len(hosts)]
        cookie = sid_cookie(logins[i // SOCKETS_PER_SESSION].jar)
        assert cookie is not None
        targets.append((host, port, addresses[i // per_address], cookie, f"http://{host}:{port}" if origin else None))
    return targets


def http_client(**defaults: Any) -> AsyncHTTPClient:
    return AsyncHTTPClient(force_instance=True, max_clients=16, defaults={"request_timeout": 60, **defaults})


def redis_info_commandstats(port: int) -> dict[str, int]:
    """command -> calls, from ``INFO commandstats`` of the private Redis."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


# -- 1. idle sockets on one worker --------------------------------------------------------


async def bench_idle(opts: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ts-bench-ws-idle-"))
    store_url = "memory://" if opts.idle_store == "memory" else f"sqlite:///{tmp / 'data' / 's.db'}"
    server = DemoServer(tmp, store_url)
    http = http_client()
    clients: list[WSClient] = []
    try:
        server.start()
        await server.wait_ready(http)
        users, per_user = plan_logins(opts.sockets)
        log(f"idle ({opts.idle_store}): server pid {server.proc.pid if server.proc else '?'}; "
            f"{users} users x {per_user} sessions for {opts.sockets:,} sockets")
        began = time.monotonic()
        logins = await make_logins(http, server.base, users, per_user, prefix="idle")
        setup_s = time.monotonic() - began
        await asyncio.sleep(2.0)
        before = server.samples()[0]
        log(f"  logins done in {setup_s:.0f} s; RSS before {before['rss_kb'] / 1024:.1f} MiB, fds {before['fds']}")
        targets = socket_targets(logins, opts.sockets, opts.per_address, [("127.0.0.1", server.port)])
        cpu0 = server.samples()[0]["cpu_s"]
        opened = await open_many(targets, opts.concurrency)
        clients = opened.clients
        cpu1 = server.samples()[0]["cpu_s"]
        n = len(clients)
        log(f"  {n:,} open in {opened.elapsed:.1f} s ({n / opened.elapsed:,.0f}/s); refused {dict(opened.refused)}, "
            f"retried {dict(opened.retried)}")
        await asyncio.sleep(opts.settle)
        first = server.samples()[0]
        # After the first round of the server's keep-alive pings (20 s interval): idle
        # sockets carry their ping bookkeeping from then on.
        await asyncio.sleep(max(0.0, 22.0 - opts.settle))
        second = server.samples()[0]
        still_open = sum(1 for c in clients if c.is_open)
        result = {
            "bench": "idle",
            "store": opts.idle_store,
            "sockets_asked": opts.sockets,
            "sockets_open": n,
            "still_open_at_end": still_open,
            "refused": dict(opened.refused),
            "retried": dict(opened.retried),
            "users": users,
            "sessions": len(logins),
            "source_addresses": math.ceil(opts.sockets / opts.per_address),
            "concurrency": opts.concurrency,
            "login_setup_s": round(setup_s, 1),
            "handshake_s": round(opened.elapsed, 2),
            "handshakes_per_s": round(n / opened.elapsed, 1) if opened.elapsed else None,
            "handshake_latency_ms": {
                "p50": round(pct(opened.latencies, 50) * 1000, 1),
                "p99": round(pct(opened.latencies, 99) * 1000, 1),
                "max": round(max(opened.latencies, default=math.nan) * 1000, 1),
            },
            "server_cpu_s_per_handshake_ms": round((cpu1 - cpu0) / n * 1000, 3) if n else None,
            "rss_kb": {"before": before["rss_kb"], "settled": first["rss_kb"], "after_pings": second["rss_kb"]},
            "fds": {"before": before["fds"], "after": second["fds"]},
            "kb_per_socket": round((max(first["rss_kb"], second["rss_kb"]) - before["rss_kb"]) / n, 2) if n else None,
            "kb_per_socket_settled": round((first["rss_kb"] - before["rss_kb"]) / n, 2) if n else None,
            "server_errors": server.error_lines()[:5],
        }
        if n < opts.sockets:
            result["why_short"] = (
                f"{opts.sockets - n} handshakes failed: {dict(opened.refused)} "
                f"(open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
            )
        return result
    finally:
        close_all(clients)
        await asyncio.sleep(0.5)
        http.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- 2. a notice to 1,000 sockets over 2 hosts x 2 workers ---------------------------------


async def bench_notice(opts: argparse.Namespace, store: str) -> dict[str, Any]:
    from tests.fixtures import deployment as deploy

    backing: Any = None
    topology: Any = None
    clients: list[WSClient] = []
    http: AsyncHTTPClient | None = None
    try:
        if store == "redis":
            from tests.fixtures.redis_fixture import RedisServerProcess

            backing = RedisServerProcess(Path(tempfile.mkdtemp(prefix="ts-bench-ws-redis-"))).start()
            store_url = backing.url
        else:
            from tests.fixtures.postgres_fixture import PostgresServer

            backing = PostgresServer().start()
            store_url = backing.url
        topology = deploy.Deployment(
            store_url, "--bcrypt-cost", "4", "--login-limit", f"{BIG}/300",
            "--login-account-limit", f"{BIG}/900", "--register-limit", f"{BIG}/3600", "--max-sessions", "20",
        ).start()  # fmt: skip
        resolver = OverrideResolver(DefaultLoopResolver(), {deploy.SERVER_NAME: deploy.PROXY_ADDRESS})
        http = AsyncHTTPClient(
            force_instance=True, max_clients=16, resolver=resolver,
            defaults={"ssl_options": topology.ssl_context, "request_timeout": 60},
        )  # fmt: skip
        users, per_user = plan_logins(opts.notice_sockets)
        log(f"notice ({store}): deployment up (hosts {topology.upstreams}); {users} users x {per_user} sessions "
            "logging in through nginx")
        logins = await make_logins(http, topology.base_url, users, per_user, prefix=f"notice{store}")
        hosts = [(h.address, h.port) for h in topology.hosts]
        targets = socket_targets(logins, opts.notice_sockets, opts.per_address, hosts)
        opened = await open_many(targets, min(opts.concurrency, 100))
        clients = opened.clients
        spread = Counter(f"{targets[c.tag][0]}/w{c.welcome.get('worker')}" for c in clients)
        log(f"  {len(clients)} sockets open, spread {dict(sorted(spread.items()))}; refused {dict(opened.refused)}")
        if len(clients) < opts.notice_sockets:
            raise RuntimeError(f"only {len(clients)} sockets of {opts.notice_sockets}: {dict(opened.refused)}")

        sent: dict[str, float] = {}
        received: dict[str, list[tuple[WSClient, float]]] = defaultdict(list)

        def on_text(client: WSClient, payload: bytes, at: float) -> None:
            if b'"chat"' not in payload:
                return
            with contextlib.suppress(ValueError):
                text = json.loads(payload).get("text")
                if text in sent:
                    received[text].append((client, at))

        for client in clients:
            client.on_text = on_text
        sender = clients[0]
        sender_where = f"{targets[sender.tag][0]}/w{sender.welcome.get('worker')}"
        await asyncio.sleep(1.0)
        for m in range(opts.messages):
            text = f"bench {store} {m}"
            sent[text] = time.perf_counter()
            sender.send_json({"type": "chat", "text": text})
            # Until every socket has it, or 1 s after the last receipt, or 5 s.
            deadline, heard, last = time.monotonic() + 5.0, 0, time.monotonic()
            while len(received[text]) < len(clients) and time.monotonic() < min(deadline, last + 1.0):
                await asyncio.sleep(0.01)
                if len(received[text]) != heard:
                    heard, last = len(received[text]), time.monotonic()
            await asyncio.sleep(max(0.0, 0.6 - (time.perf_counter() - sent[text])))  # chat rate: 2/s per user
        latencies: list[float] = []
        by_place: dict[str, list[float]] = defaultdict(list)
        missing = 0
        missing_by_place: Counter[str] = Counter()
        per_message_p99 = []
        sender_host = targets[sender.tag][0]

        def relation(client: WSClient) -> str:
            where = f"{targets[client.tag][0]}/w{client.welcome.get('worker')}"
            if where == sender_where:
                return "sender's worker"
            return "sender's host, other worker" if targets[client.tag][0] == sender_host else "other host"

        for text, at in sent.items():
            got = received[text]
            missing += len(clients) - len(got)
            lat = [(when - at) * 1000 for _, when in got]
            latencies += lat
            if lat:
                per_message_p99.append(pct(lat, 99))
            got_ids = set()
            for client, when in got:
                got_ids.add(id(client))
                by_place[relation(client)].append((when - at) * 1000)
            for client in clients:
                if id(client) not in got_ids:
                    missing_by_place[relation(client)] += 1
        return {
            "bench": "notice",
            "store": store,
            "sockets": len(clients),
            "spread": dict(sorted(spread.items())),
            "sender": sender_where,
            "messages": opts.messages,
            "receipts": len(latencies),
            "missing": missing,
            "latency_ms": {"p50": round(pct(latencies, 50), 2), "p99": round(pct(latencies, 99), 2),
                           "max": round(max(latencies, default=math.nan), 2)},
            "latency_ms_by_place": {
                k: {"n": len(v), "p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for k, v in by_place.items()
            },
            "missing_by_place": dict(missing_by_place),
            "p99_of_messages_median_ms": round(statistics.median(per_message_p99), 2) if per_message_p99 else None,
            "server_errors": [ln for h in topology.hosts for ln in h.log(None).splitlines() if " ERROR " in ln][:5],
        }
    finally:
        close_all(clients)
        await asyncio.sleep(0.5)
        if http is not None:
            http.close()
        if topology is not None:
            topology.stop()
            topology.remove()
        if backing is not None:
            if store == "redis":
                backing.stop()
                shutil.rmtree(backing.folder, ignore_errors=True)
            else:
                backing.destroy()


# -- 3. revoking one user among N sockets on 2 workers -------------------------------------


async def bench_revoke(opts: argparse.Namespace, store: str, layout: str) -> dict[str, Any]:
    """``layout`` "workers": one ``server.py --processes 2`` (the brief's shape); "processes":
    two ``server.py`` processes on two ports sharing the store and keys, which is what two
    workers are to the event bus when each has an origin of its own."""
    tmp = Path(tempfile.mkdtemp(prefix=f"ts-bench-ws-revoke-{store}-"))
    redis: Any = None
    servers: list[DemoServer] = []
    http = http_client()
    clients: list[WSClient] = []
    try:
        if store == "redis":
            from tests.fixtures.redis_fixture import RedisServerProcess

            redis = RedisServerProcess(tmp / "redis").start()
            store_url = redis.url
        else:
            (tmp / "shared").mkdir(mode=0o700)
            store_url = f"sqlite:///{tmp / 'shared' / 's.db'}"
        extra = ("--ws-recheck", str(opts.recheck))
        if layout == "workers":
            servers = [DemoServer(tmp / "server", store_url, processes=2, extra=extra)]
        else:
            keys = generate_key()
            servers = [DemoServer(tmp / f"server{i}", store_url, extra=extra, keys=keys) for i in range(2)]
        for server in servers:
            server.start()
        for server in servers:
            await server.wait_ready(http)
        main = servers[0]
        users, per_user = plan_logins(opts.sockets)
        log(f"revoke ({store}, {layout}): processes {[p for s in servers for p in s.pids()]}; {users} users x "
            f"{per_user} sessions for {opts.sockets:,} sockets")
        logins = await make_logins(http, main.base, users, per_user, prefix=f"revoke{store}{layout}")
        hosts = [("127.0.0.1", s.port) for s in servers]
        targets = socket_targets(logins, opts.sockets, opts.per_address, hosts)
        opened = await open_many(targets, opts.concurrency)
        clients = opened.clients
        n = len(clients)

        def place(c: WSClient) -> str:
            if layout == "workers":
                return f"worker {c.welcome.get('worker')}"
            return f"process {hosts.index(targets[c.tag][:2])}"

        spread = Counter(place(c) for c in clients)
        log(f"  {n:,} open in {opened.elapsed:.1f} s ({n / opened.elapsed:,.0f}/s), {dict(spread)}; "
            f"refused {dict(opened.refused)}, retried {dict(opened.retried)}")
        # Sessions each process holds (the re-check reads one key per distinct session).
        sessions_by_place: dict[str, set[int]] = defaultdict(set)
        for c in clients:
            sessions_by_place[place(c)].add(c.tag // SOCKETS_PER_SESSION)

        def samples() -> list[dict[str, Any]]:
            return [x for s in servers for x in s.samples()]

        recheck: dict[str, Any] = {}
        if opts.quiet > 0:
            # Quiet window: only the server's keep-alive pings and the re-check run.
            await asyncio.sleep(2.0)
            stats0 = redis_info_commandstats(redis.port) if redis else None
            cpu0 = {x["pid"]: x["cpu_s"] for x in samples()}
            q0 = time.monotonic()
            await asyncio.sleep(opts.quiet)
            quiet_s = time.monotonic() - q0
            stats1 = redis_info_commandstats(redis.port) if redis else None
            cpu_quiet = sum(x["cpu_s"] - cpu0.get(x["pid"], x["cpu_s"]) for x in samples()) / quiet_s
            recheck = {
                "interval_s": opts.recheck,
                "quiet_window_s": round(quiet_s, 1),
                "sessions_per_process": {k: len(v) for k, v in sessions_by_place.items()},
                "computed_session_reads_per_s": round(sum(len(v) for v in sessions_by_place.values()) / opts.recheck, 1),
                "computed_round_trips_per_s": round(
                    sum(math.ceil(len(v) / RECHECK_BATCH) for v in sessions_by_place.values()) / opts.recheck, 3),
                "server_cpu_cores_quiet": round(cpu_quiet, 3),
            }  # fmt: skip
            if stats0 is not None and stats1 is not None:
                delta = {k: stats1.get(k, 0) - stats0.get(k, 0) for k in stats1}
                delta = {k: v for k, v in delta.items() if v}
                recheck["redis_calls_in_window"] = delta
                recheck["measured_session_reads_per_s"] = round(delta.get("hget", 0) / quiet_s, 1)
                recheck["measured_redis_commands_per_s"] = round(sum(delta.values()) / quiet_s, 1)
            else:
                recheck["note"] = ("SQLite: no read counter in the server; computed as sessions held by each "
                                   "process / interval (one SELECT ... WHERE key IN (...) per 500 sessions)")
            log(f"  quiet {quiet_s:.0f} s: {recheck}")

        # Revocations: users whose sockets are on both processes.
        by_user: dict[int, list[WSClient]] = defaultdict(list)
        for c in clients:
            by_user[logins[c.tag // SOCKETS_PER_SESSION].user].append(c)
        both = [u for u, cs in by_user.items() if len({place(c) for c in cs}) > 1]
        chosen = (both or list(by_user))[: opts.revocations]
        latencies: list[float] = []
        by_role: dict[str, list[float]] = defaultdict(list)
        rounds = []
        for u in chosen:
            login = next(lg for lg in logins if lg.user == u)
            mine = [c for c in by_user[u] if c.is_open]
            others_open_before = sum(1 for c in clients if c.is_open) - len(mine)
            t0 = time.perf_counter()
            response = await Client(http, main.base, jar=login.jar).fetch("/auth/logout-all", "POST", "")
            t_resp = time.perf_counter()
            deadline = time.monotonic() + opts.recheck + 10.0
            while any(c.closed_at is None for c in mine) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            lat = [(c.closed_at - t0) * 1000 for c in mine if c.closed_at is not None]
            latencies += lat
            per_place: dict[str, list[float]] = defaultdict(list)
            for c in mine:
                if c.closed_at is not None:
                    per_place[place(c)].append((c.closed_at - t0) * 1000)
            if layout == "workers":  # the worker that served the request closes its own first
                serving = min(per_place, key=lambda k: min(per_place[k])) if per_place else None
            else:
                serving = "process 0"
            for k, v in per_place.items():
                by_role["serving process" if k == serving else "other process"] += v
            mine_set = set(map(id, mine))
            others_open_after = sum(1 for c in clients if c.is_open and id(c) not in mine_set)
            rounds.append({
                "user": u, "status": response.code, "sockets": len(mine), "closed": len(lat),
                "close_codes": dict(Counter(c.close_code for c in mine)),
                "response_ms": round((t_resp - t0) * 1000, 1),
                "max_ms": round(max(lat, default=math.nan), 1),
                "by_place_max_ms": {k: round(max(v), 1) for k, v in per_place.items()},
                "other_sockets_closed": others_open_before - others_open_after,
            })  # fmt: skip
            log(f"  revoke user {u}: {rounds[-1]}")
            await asyncio.sleep(0.5)
        return {
            "bench": "revoke",
            "store": store,
            "layout": layout,
            "sockets_asked": opts.sockets,
            "sockets_open": n,
            "refused": dict(opened.refused),
            "retried": dict(opened.retried),
            "spread": dict(spread),
            "handshakes_per_s": round(n / opened.elapsed, 1) if opened.elapsed else None,
            "revocations": len(rounds),
            "close_latency_ms": {"n": len(latencies), "p50": round(pct(latencies, 50), 1),
                                 "p99": round(pct(latencies, 99), 1), "max": round(max(latencies, default=math.nan), 1)},
            "close_latency_ms_by_role": {
                k: {"n": len(v), "p50": round(pct(v, 50), 1), "p99": round(pct(v, 99), 1)} for k, v in by_role.items()
            },
            "rounds": rounds,
            "recheck": recheck,
            "rss_mib_per_process": [round(x["rss_kb"] / 1024, 1) for x in samples()],
            "server_errors": [ln for s in servers for ln in s.error_lines()][:5],
        }
    finally:
        close_all(clients)
        await asyncio.sleep(0.5)
        http.close()
        for server in servers:
            server.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- report ------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for r in results:
        if "error" in r:
            rows.append((f"{r['bench']} ({r.get('store')})", "error", r["error"][:120], ""))
            continue
        if r["bench"] == "idle":
            kb = r["kb_per_socket"]
            rows += [
                (f"idle sockets, one worker ({r['store']})", f"{r['sockets_open']:,} of {r['sockets_asked']:,}",
                 "10,000", "yes" if r["sockets_open"] >= 10_000 else "no"),
                ("  memory per socket", f"{kb} KB (RSS {r['rss_kb']['before'] / 1024:.0f} -> "
                 f"{r['rss_kb']['after_pings'] / 1024:.0f} MiB)", "<= 30 KB", "yes" if kb is not None and kb <= 30 else "no"),
                ("  handshakes per second", f"{r['handshakes_per_s']:,} ({r['concurrency']} in flight; "
                 f"p50 {r['handshake_latency_ms']['p50']} ms, p99 {r['handshake_latency_ms']['p99']} ms)", "", ""),
            ]  # fmt: skip
        elif r["bench"] == "notice":
            lat = r["latency_ms"]
            target = "<= 50 ms" if r["store"] == "redis" else ""
            met = ("yes" if lat["p99"] <= 50 else "no") if target else ""
            rows += [
                (f"chat to {r['sockets']:,} sockets, 2 hosts x 2 workers ({r['store']})",
                 f"p50 {lat['p50']} ms, p99 {lat['p99']} ms ({r['receipts']:,} receipts, {r['missing']} missing)",
                 f"p99 {target}" if target else "", met),
            ]  # fmt: skip
            for place, v in r["latency_ms_by_place"].items():
                rows.append((f"  {place}", f"p50 {v['p50']} ms, p99 {v['p99']} ms (n={v['n']:,})", "", ""))
            for place, count in r["missing_by_place"].items():
                rows.append((f"  {place}", f"{count:,} receipts missing", "", "no"))
        elif r["bench"] == "revoke":
            lat = r["close_latency_ms"]
            rows += [
                (f"revoke 1 user among {r['sockets_open']:,} sockets, "
                 f"{'2 workers' if r['layout'] == 'workers' else '2 processes'} ({r['store']})",
                 f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms (n={lat['n']})"
                 + (f"; handshakes retried after 503: {sum(r['retried'].values())}" if r.get("retried") else ""),
                 "p99 <= 1 s",
                 "yes" if lat["p99"] <= 1000 else "no"),
            ]  # fmt: skip
            for place, v in r["close_latency_ms_by_role"].items():
                rows.append((f"  {place}", f"p50 {v['p50']} ms, p99 {v['p99']} ms (n={v['n']})", "", ""))
            rc = r["recheck"]
            if not rc:
                continue
            measured = rc.get("measured_session_reads_per_s")
            rows.append((
                f"  re-check reads (every {rc['interval_s']:g} s)",
                (f"{measured} session reads/s measured (HGET), {rc['computed_round_trips_per_s']} round trips/s"
                 if measured is not None else
                 f"{rc['computed_session_reads_per_s']} session reads/s computed, "
                 f"{rc['computed_round_trips_per_s']} statements/s"),
                "", "",
            ))  # fmt: skip
            rows.append(("  server CPU while idle", f"{rc['server_cpu_cores_quiet']} cores (both workers)", "", ""))
    widths = [max(len(row[i]) for row in rows + [("measure", "result", "target", "met")]) for i in range(4)]
    header = ("measure", "result", "target", "met")
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


BENCHES = ("idle", "notice", "revoke")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tornado-sessions websocket benchmarks (bench/README.md)")
    parser.add_argument("--only", action="append", help=f"comma list of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--sockets", type=int, default=10_000, help="sockets for idle and revoke")
    parser.add_argument("--per-address", type=int, default=40, help="sockets per loopback source address (cap 64)")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--idle-store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the last handshake before RSS")
    parser.add_argument("--notice-sockets", type=int, default=1000)
    parser.add_argument("--notice-stores", default="redis", help="comma list of redis, postgres")
    parser.add_argument("--messages", type=int, default=20, help="chat messages sent in the notice bench")
    parser.add_argument("--revoke-stores", default="sqlite,redis", help="comma list of sqlite, redis")
    parser.add_argument(
        "--revoke-layouts", default="workers,processes",
        help="comma list: workers (server.py --processes 2), processes (two server.py on two ports)",
    )
    parser.add_argument("--revocations", type=int, default=5, help="users logged out everywhere, one at a time")
    parser.add_argument("--recheck", type=float, default=30.0, help="server.py --ws-recheck for revoke (seconds)")
    parser.add_argument("--quiet", type=float, default=60.0, help="seconds of quiet to count re-check reads")
    parser.add_argument("--json", action="store_true", help="JSON on stdout (the table on stderr)")
    opts = parser.parse_args(argv)
    only = {part.strip() for item in (opts.only or list(BENCHES)) for part in item.split(",") if part.strip()}
    if not only <= set(BENCHES):
        parser.error(f"--only: one of {', '.join(BENCHES)}")
    opts.benches = [b for b in BENCHES if b in only]
    opts.notice_store_list = [s.strip() for s in opts.notice_stores.split(",") if s.strip()]
    opts.revoke_store_list = [s.strip() for s in opts.revoke_stores.split(",") if s.strip()]
    opts.revoke_layout_list = [s.strip() for s in opts.revoke_layouts.split(",") if s.strip()]
    if not set(opts.revoke_layout_list) <= {"workers", "processes"}:
        parser.error("--revoke-layouts: workers, processes")
    if not set(opts.notice_store_list) <= {"redis", "postgres"}:
        parser.error("--notice-stores: redis, postgres")
    if not set(opts.revoke_store_list) <= {"sqlite", "redis"}:
        parser.error("--revoke-stores: sqlite, redis")
    if not 1 <= opts.sockets <= 20_000 or not 1 <= opts.notice_sockets <= 5_000:
        parser.error("--sockets 1-20,000, --notice-sockets 1-5,000")
    if not 1 <= opts.per_address <= 64 or not 1 <= opts.concurrency <= 1000:
        parser.error("--per-address 1-64, --concurrency 1-1,000")
    if not 1 <= opts.messages <= 200 or not 1 <= opts.revocations <= 50:
        parser.error("--messages 1-200, --revocations 1-50")
    if not 0 <= opts.quiet <= 600 or not 0 <= opts.settle <= 120 or not 0.5 <= opts.recheck <= 600:
        parser.error("--quiet 1-600, --settle 0-120, --recheck 0.5-600")
    return opts


async def run_all(opts: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    jobs: list[tuple[str, str | None, str]] = []
    if "idle" in opts.benches:
        jobs.append(("idle", opts.idle_store, ""))
    if "notice" in opts.benches:
        jobs += [("notice", s, "") for s in opts.notice_store_list]
    if "revoke" in opts.benches:
        jobs += [("revoke", s, lay) for s in opts.revoke_store_list for lay in opts.revoke_layout_list]
    for bench, store, layout in jobs:
        began = time.monotonic()
        try:
            if bench == "idle":
                coro = bench_idle(opts)
            elif bench == "notice":
                coro = bench_notice(opts, store or "redis")
            else:
                quiet = opts.quiet if layout == opts.revoke_layout_list[0] else 0.0
                coro = bench_revoke(argparse.Namespace(**{**vars(opts), "quiet": quiet}), store or "sqlite", layout)
            result = await asyncio.wait_for(coro, 1800)
        except (RuntimeError, OSError, TimeoutError, AssertionError, ImportError) as exc:
            result = {"bench": bench, "store": store, "error": f"{type(exc).__name__}: {exc}"}
            log(f"{bench} ({store}) failed: {result['error']}")
        result["wall_s"] = round(time.monotonic() - began, 1)
        results.append(result)
        log(f"{bench} ({store}) done in {result['wall_s']:.0f} s")
    return results


def main() -> int:
    opts = parse_args()
    import tornado

    nofile = raise_nofile()
    needed = max(opts.sockets if {"idle", "revoke"} & set(opts.benches) else 0, opts.notice_sockets) + 500
    if nofile < needed:
        log(f"open-file limit {nofile} < {needed}: the run will stop short of {opts.sockets:,} sockets")
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpus": os.cpu_count(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), platform.processor()),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "nofile": nofile,
        "loadavg_before": os.getloadavg(),
        "options": {k: v for k, v in vars(opts).items()},
    }
    log(f"bench_ws: {', '.join(opts.benches)}; {meta['cpus']} CPUs, load average {meta['loadavg_before'][0]:.2f}, "
        f"open-file limit {nofile}")
    try:
        results = asyncio.run(run_all(opts))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    meta["loadavg_after"] = os.getloadavg()
    text = table(results)
    if opts.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
        print(text, file=sys.stderr)
    else:
        print(text)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

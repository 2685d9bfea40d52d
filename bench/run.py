#!/usr/bin/env python
"""Session read/write throughput as ratios to a bare Tornado handler, measured in one run.

    .venv/bin/python bench/run.py            # about 2.5 minutes on 2 cores

Three servers on loopback (a bare handler, the demo app on the memory store, the
demo app on SQLite), driven by wrk with the server on one core and wrk on another.
Each round starts the servers afresh, makes one session per app through the public
API, checks and warms up every workload, then runs each once, in turn (so drift on
a shared machine hits all of them alike); the table reports the median per
workload. Prints a Markdown table and writes the raw figures to
bench/results/latest.json. Every server it starts is stopped on the way out,
Ctrl-C and errors included. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from sessions.keys import KeyRing, generate_key  # noqa: E402
from tests.fixtures.support import cookies_from, free_port  # noqa: E402

RESULTS = BENCH / "results" / "latest.json"
WRK_SCRIPT = BENCH / "wrk.lua"
COOKIE_TARGET_BYTES = 200
#: Environment that would change which store or mode server.py picks.
SERVER_ENV_DROP = ("SESSION_STORE", "MONGODB_URL", "PRODUCTION", "DEBUG", "HOST", "PORT", "DATA_DIR")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- what we measure ---------------------------------------------------------------
@dataclass
class Workload:
    name: str  # key in the JSON results
    label: str  # row in the table
    server: str  # which server process answers: bare, memory or sqlite
    method: str
    path: str
    baseline: str  # the bare workload its ratio is taken against
    #: Whose session cookie and XSRF header the requests carry (None: no cookies). The
    #: bare handler gets the same bytes as the session requests, so a ratio measures
    #: the session work, not the parsing of a longer request.
    headers_from: str | None = None
    session: bool = False  # the handler must find the session (checked before the run)
    expect: str = '"count"'  # the sanity check wants this in the body
    target: float | None = None
    #: Seconds of unrecorded load before the measured run (grows a store first).
    prefill: int = 0
    #: p99 target: at most this many times the p99 of that workload (name, factor).
    p99_target: tuple[str, float] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


def workloads() -> list[Workload]:
    api = "/api/counter"

    def bare(name: str, label: str, method: str, baseline: str, headers_from: str | None) -> Workload:
        return Workload(name, label, "bare", method, "/", baseline, headers_from)

    def app(name: str, label: str, server: str, method: str, baseline: str, **kw: Any) -> Workload:
        return Workload(name, label, server, method, api, baseline, server, session=True, **kw)

    return [
        bare("bare_read", "Bare Tornado handler, GET", "GET", "bare_read", "memory"),
        bare("bare_write", "Bare Tornado handler, POST", "POST", "bare_write", "memory"),
        bare(
            "bare_read_no_cookies",
            "Bare Tornado handler, GET without the cookie headers",
            "GET",
            "bare_read",
            None,
        ),
        Workload(
            "app_health",
            "Demo app, no session (GET /health)",
            "memory",
            "GET",
            "/health",
            "bare_read",
            "memory",
            expect='"ok"',
        ),
        app(
            "memory_read",
            f"Memory store, session read (GET {api})",
            "memory",
            "GET",
            "bare_read",
            target=0.90,
        ),
        app(
            "memory_write",
            f"Memory store, session write (POST {api})",
            "memory",
            "POST",
            "bare_write",
            target=0.80,
        ),
        app(
            "sqlite_read",
            f"SQLite store, session read (GET {api})",
            "sqlite",
            "GET",
            "bare_read",
            target=0.75,
        ),
        app("sqlite_write", f"SQLite store, session write (POST {api})", "sqlite", "POST", "bare_write"),
        *login_workloads(),
        *[
            app(f"{server}_{kind}", f"{label} store, session {kind} ({method} {api})", server, method, f"bare_{kind}")
            for server, label in SERVER_STORES.items()
            for kind, method in (("read", "GET"), ("write", "POST"))
        ],
    ]


#: Demo app servers on stores with a server of their own (started by this script on
#: loopback, pinned to the load generator's core so the app keeps core 0 to itself).
SERVER_STORES = {"redis": "Redis", "redis_cluster": "Redis Cluster", "postgres": "PostgreSQL"}


def login_workloads() -> list[Workload]:
    """The login shape on the library alone (bench/login_server.py, no XSRF, no headers).

    ``POST /login`` carries no cookie, so every request creates and stores one new
    logged-in session and the store grows through the run; ``GET /profile`` reads one
    logged-in session; ``GET /bare`` in the same process is the denominator of both.
    """
    rows = []
    for store, label, login_target in (("login_memory", "Memory", 0.70), ("login_sqlite", "SQLite", 0.55)):
        bare = f"{store}_bare"
        rows += [
            Workload(bare, f"Login app ({label}), bare GET /bare", store, "GET", "/bare", bare, expect='"user"'),
            Workload(
                f"{store}_login", f"{label} store, login (POST /login: regenerate + store user)", store, "POST",
                "/login", bare, expect='"user"', target=login_target,
            ),
            Workload(
                f"{store}_profile", f"{label} store, logged-in read (GET /profile)", store, "GET", "/profile", bare,
                headers_from=store, expect='"bench"',
            ),
        ]
    rows.append(
        Workload(
            "login_memory_grown", "Memory store, login after 30 s more of logins (store ≈ 10⁵ sessions)",
            "login_memory", "POST", "/login", "login_memory_bare", expect='"user"', prefill=30,
            p99_target=("login_memory_profile", 2.0),
        )
    )
    return rows


# -- servers -----------------------------------------------------------------------
@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def pinned(cmd: list[str], core: int | None) -> list[str]:
    return cmd if core is None else ["taskset", "-c", str(core), *cmd]


def server_commands(
    tmp: Path, app_root: Path, backends: dict[str, str] | None = None
) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after the interpreter, readiness path)."""
    app = [str(BENCH / "app_server.py"), "--app-root", str(app_root)]
    extra = {
        name: ([*app, "--store", url, "--data-dir", str(tmp / name)], "/health")
        for name, url in (backends or {}).items()
    }
    sqlite_dir = tmp / "sqlite"
    login = [str(BENCH / "login_server.py")]
    return {
        "login_memory": ([*login, "--store", "memory://"], "/bare"),
        "login_sqlite": ([*login, "--store", f"sqlite:///{tmp / 'login' / 'sessions.sqlite3'}"], "/bare"),
        "bare": ([str(BENCH / "bare_server.py")], "/"),
        "memory": ([*app, "--store", "memory://", "--data-dir", str(tmp / "memory")], "/health"),
        "sqlite": (
            [*app, "--store", f"sqlite:///{sqlite_dir / 'sessions.sqlite3'}", "--data-dir", str(sqlite_dir)],
            "/health",
        ),
        **extra,
    }


def start_server(name: str, args: list[str], tmp: Path, core: int | None, env: dict[str, str]) -> Server:
    """Start one server in its own process group (Ctrl-C reaches only us; we stop it)."""
    port = free_port()
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            pinned([sys.executable, *args, "--port", str(port)], core),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, proc, log_path)


def wait_ready(server: Server, path: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} server exited early:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(server.port, "GET", path)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} server not ready after {timeout}s:\n{server.log_tail()}")


def logged_errors(server: Server) -> dict[str, Any]:
    """ERROR lines a server logged: counted and shown, not fatal.

    wrk cuts its connections mid-request when a run ends; a server that does not
    expect a client to go away may log errors then, which do not touch the figures.
    """
    with contextlib.suppress(OSError):
        lines = server.log_path.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if " ERROR " in ln]
        return {"count": len(errors), "sample": "\n".join(lines[-8:]) if errors else None}
    return {"count": 0, "sample": None}


def stop_servers(servers: list[Server]) -> None:
    """SIGTERM (server.py shuts down cleanly and closes its store), then SIGKILL."""
    for server in servers:
        if server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                server.proc.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)


# -- one session per app, through the public API -----------------------------------
def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, body, resp.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


def make_session(port: int) -> dict[str, str]:
    """GET for the _xsrf cookie, POST with it for the sid cookie: what a browser does."""
    status, _, set_cookie = request(port, "GET", "/api/counter")
    xsrf = cookies_from(set_cookie).get("_xsrf")
    if status != 200 or not xsrf:
        raise RuntimeError(f"GET /api/counter gave {status} and no _xsrf cookie")
    status, body, set_cookie = request(
        port, "POST", "/api/counter", {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf}
    )
    sid = cookies_from(set_cookie).get("sid")
    if status != 200 or not sid or json.loads(body) != {"count": 1}:
        raise RuntimeError(f"POST /api/counter gave {status} {body!r} and sid={sid!r}")
    return {"Cookie": f"sid={sid}; _xsrf={xsrf}", "X-XSRFToken": xsrf}


def make_login_session(port: int) -> dict[str, str]:
    status, body, set_cookie = request(port, "POST", "/login")
    sid = cookies_from(set_cookie).get("sid")
    if status != 200 or not sid:
        raise RuntimeError(f"POST /login gave {status} {body!r} and sid={sid!r}")
    return {"Cookie": f"sid={sid}"}


def check_workload(w: Workload, port: int, headers: dict[str, str]) -> None:
    """One request by hand first: a benchmark of 403s or of fresh sessions would look fast."""
    status, body, set_cookie = request(port, w.method, w.path, headers)
    if status != 200 or w.expect not in body:
        raise RuntimeError(f"{w.name}: {w.method} {w.path} gave {status} {body[:200]!r}")
    if w.session and json.loads(body).get("count", 0) < 1:
        raise RuntimeError(f"{w.name}: the session cookie was not honoured: {body!r}")
    if w.session and any(c.startswith("sid=") for c in set_cookie):
        raise RuntimeError(f"{w.name}: the server issued a new session instead of using ours")


# -- measuring ---------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far, from /proc/PID/stat.

    CPU time per request is the cross-check on throughput on a shared machine: when
    other work takes the server's core, requests/s drops but CPU per request moves less.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (all cores, steal included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS  # minus idle, iowait


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    w: Workload, server: Server, headers: dict[str, str], seconds: int, connections: int, core: int | None
) -> dict[str, Any]:
    """One wrk run; refuses results with any non-2xx answer or socket error."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://127.0.0.1:{server.port}{w.path}")
    env = {**os.environ, "BENCH_METHOD": w.method}
    cpu0, busy0, wrk0 = cpu_seconds(server.proc.pid), busy_cpu_seconds(), children_cpu_seconds()
    proc = subprocess.run(pinned(cmd, core), env=env, capture_output=True, text=True, timeout=seconds + 30)
    cpu_used = cpu_seconds(server.proc.pid) - cpu0
    # What the machine did besides this server and this wrk: someone else's work.
    foreign = busy_cpu_seconds() - busy0 - cpu_used - (children_cpu_seconds() - wrk0)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{proc.stdout}")
    raw = json.loads(line[len("BENCH_JSON ") :])
    if any(raw["errors"].values()):
        raise RuntimeError(f"{w.name}: wrk saw errors {raw['errors']} (non-2xx or socket); figures invalid")
    elapsed = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / elapsed,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "server_cpu_us_per_request": 1e6 * cpu_used / max(raw["requests"], 1),
        "server_cpu_share": cpu_used / elapsed,
        "foreign_cpu_cores": max(foreign, 0.0) / elapsed,
    }


def sealed_cookie_size() -> dict[str, Any]:
    """Size of a 100-byte JSON preferences value sealed as the cookie "prefs"."""
    value = {"theme": "dark", "lang": "en-GB", "tz": "Europe/Berlin", "pad": ""}
    value["pad"] = "x" * (100 - len(json.dumps(value, separators=(",", ":"))))
    payload = json.dumps(value, separators=(",", ":")).encode()
    assert len(payload) == 100, len(payload)
    ring = KeyRing.from_text(generate_key())
    sealed = ring.seal(payload, "prefs", max_age=365 * 24 * 3600)
    assert ring.open(sealed, "prefs") == payload
    return {
        "payload_bytes": len(payload),
        "value_bytes": len(sealed),
        "name_plus_value_bytes": len("prefs") + len(sealed),
        "target_bytes": COOKIE_TARGET_BYTES,
        "met": len(sealed) <= COOKIE_TARGET_BYTES,
    }


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM both unwind as KeyboardInterrupt, so the servers get stopped.

    (SIGINT too: a shell starts background jobs with SIGINT ignored.)
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def backend_servers(names: set[str], tmp: Path, core: int | None) -> Iterator[dict[str, str]]:
    """Start the database servers the workloads need (the test fixtures' classes); yield URLs.

    Pinned to the load generator's core: the app under test keeps core 0 to itself, as
    it would with the database on another host.
    """
    from tests.fixtures.postgres_fixture import PostgresServer
    from tests.fixtures.redis_fixture import RedisCluster, RedisServerProcess

    started: list[Any] = []
    urls: dict[str, str] = {}
    try:
        if "redis" in names:
            started.append(RedisServerProcess(tmp / "redis").start())
            urls["redis"] = started[-1].url
        if "redis_cluster" in names:
            started.append(RedisCluster(tmp / "redis-cluster").start())
            urls["redis_cluster"] = started[-1].url
        if "postgres" in names:
            started.append(PostgresServer().start())
            urls["postgres"] = started[-1].url
        if core is not None:
            subprocess.run(
                f"for p in $(pgrep -f 'redis-server 127.0.0.1:' ; pgrep -x postgres); do taskset -apc {core} $p; done",
                shell=True, capture_output=True, check=False,
            )
        yield urls
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                (server.destroy if hasattr(server, "destroy") else server.stop)()


def measure(ws: list[Workload], opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the rounds; each round starts fresh servers, checks and warms up every workload.

    Fresh processes per round: the same code can run a few per cent faster or slower
    in one process than in the next (memory layout), so a median over rounds is also
    a median over processes.
    """
    cores = sorted(os.sched_getaffinity(0))
    pin = len(cores) >= 2 and shutil.which("taskset") is not None
    server_core, wrk_core = (cores[0], cores[1]) if pin else (None, None)
    if not pin:
        print("warning: fewer than 2 cores or no taskset: server and wrk share the CPU", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
    env["SESSION_KEYS"] = generate_key()  # fresh for this run, never written to disk
    env["PYTHONUNBUFFERED"] = "1"
    planned = opts.runs * len(ws) * (opts.warmup + opts.duration)
    print(f"{len(ws)} workloads x {opts.runs} rounds, about {planned:.0f} s of load", file=sys.stderr)
    needed = {w.server for w in ws if w.server in SERVER_STORES}
    with backend_servers(needed, tmp, wrk_core) as backends:
        return _measure_rounds(ws, opts, tmp, env, backends, server_core, wrk_core, pin)


def _measure_rounds(
    ws: list[Workload],
    opts: argparse.Namespace,
    tmp: Path,
    env: dict[str, str],
    backends: dict[str, str],
    server_core: int | None,
    wrk_core: int | None,
    pin: bool,
) -> dict[str, Any]:
    errors: dict[str, int] = {}
    samples: dict[str, str] = {}
    for round_no in range(1, opts.runs + 1):
        commands = server_commands(tmp / f"round{round_no}", opts.app_root, backends)
        (tmp / f"round{round_no}").mkdir()
        servers: dict[str, Server] = {}
        try:
            for name, (args, _) in commands.items():
                servers[name] = start_server(name, args, tmp / f"round{round_no}", server_core, env)
            for name, server in servers.items():
                wait_ready(server, commands[name][1])
            sessions = {name: make_session(servers[name].port) for name in ("memory", "sqlite", *backends)}
            sessions.update({name: make_login_session(servers[name].port) for name in ("login_memory", "login_sqlite")})
            headers = {w.name: sessions[w.headers_from] if w.headers_from else {} for w in ws}
            for w in ws:
                check_workload(w, servers[w.server].port, headers[w.name])
                run_wrk(w, servers[w.server], headers[w.name], opts.warmup, opts.connections, wrk_core)
            # Alternate the order so that no workload always follows the same neighbour.
            for w in ws if round_no % 2 else reversed(ws):
                if w.prefill:
                    run_wrk(w, servers[w.server], headers[w.name], w.prefill, opts.connections, wrk_core)
                r = run_wrk(w, servers[w.server], headers[w.name], opts.duration, opts.connections, wrk_core)
                w.runs.append(r)
                print(
                    f"round {round_no} {w.name:<20} {r['rps']:>7,.0f} req/s  p99 {r['p99_ms']:6.2f} ms"
                    f"  server CPU {r['server_cpu_us_per_request']:4.0f} µs/req"
                    f"  other load {r['foreign_cpu_cores']:.2f} cores",
                    file=sys.stderr,
                )
            for name, server in servers.items():
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{name} server died during the run:\n{server.log_tail()}")
                logged = logged_errors(server)
                errors[name] = errors.get(name, 0) + logged["count"]
                if logged["sample"]:
                    samples[name] = logged["sample"]
        finally:
            stop_servers(list(servers.values()))
    return {
        "pinned": pin,
        "server_core": server_core,
        "wrk_core": wrk_core,
        "server_errors": {name: {"count": n, "sample": samples.get(name)} for name, n in errors.items()},
    }


# -- report ------------------------------------------------------------------------
def summarize(ws: list[Workload]) -> dict[str, dict[str, Any]]:
    def median(w: Workload, key: str) -> float:
        return statistics.median(r[key] for r in w.runs)

    by_name = {w.name: w for w in ws}
    out: dict[str, dict[str, Any]] = {}
    for w in ws:
        base = by_name[w.baseline]
        ratio = median(w, "rps") / median(base, "rps")
        out[w.name] = {
            "label": w.label,
            "method": w.method,
            "path": w.path,
            "median_rps": median(w, "rps"),
            "median_p99_ms": median(w, "p99_ms"),
            "ratio_to_bare": ratio,
            "median_server_cpu_us_per_request": median(w, "server_cpu_us_per_request"),
            "cpu_ratio_to_bare": median(base, "server_cpu_us_per_request")
            / median(w, "server_cpu_us_per_request"),
            "compared_with": base.name,
            "median_foreign_cpu_cores": median(w, "foreign_cpu_cores"),
            "target": w.target,
            "met": None if w.target is None else ratio >= w.target,
            "runs": w.runs,
        }
        if w.p99_target is not None:
            other, factor = w.p99_target
            p99_ratio = median(w, "p99_ms") / median(by_name[other], "p99_ms")
            out[w.name].update(
                p99_target={"of": other, "factor": factor}, p99_ratio=p99_ratio, p99_met=p99_ratio <= factor
            )
    return out


def markdown(summary: dict[str, dict[str, Any]], cookie: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [
        "| Configuration | Requests/s | p99 latency | vs bare | Target | Met | Server CPU/request | vs bare (CPU) |",
        "|---|--:|--:|--:|--:|:-:|--:|--:|",
    ]
    for s in summary.values():
        target = f"≥ {s['target']:.2f}" if s["target"] is not None else ""
        met = "" if s["met"] is None else ("yes" if s["met"] else "**no**")
        if "p99_target" in s:
            other = summary[s["p99_target"]["of"]]["label"]
            target = f"p99 ≤ {s['p99_target']['factor']:g}× {other}"
            met = f"{'yes' if s['p99_met'] else '**no**'} ({s['p99_ratio']:.2f}×)"
        rows.append(
            f"| {s['label']} | {s['median_rps']:,.0f} | {s['median_p99_ms']:.1f} ms | {s['ratio_to_bare']:.2f} "
            f"| {target} | {met} | {s['median_server_cpu_us_per_request']:.0f} µs | {s['cpu_ratio_to_bare']:.2f} |"
        )
    rows.append(
        f"| Sealed preferences cookie, {cookie['payload_bytes']}-byte JSON value | {cookie['value_bytes']} bytes "
        f"| | | ≤ {cookie['target_bytes']} bytes | {'yes' if cookie['met'] else '**no**'} | | |"
    )
    pin = (
        "server on core {server_core}, wrk on core {wrk_core}".format(**meta)
        if meta["pinned"]
        else "not pinned"
    )
    rows += [
        "",
        f"Median of {meta['runs']} runs of {meta['duration_s']} s per row; each run on freshly started servers, "
        f"after a {meta['warmup_s']} s warm-up, rows taken in turn; wrk -t1 -c{meta['connections']}, {pin}; "
        "one session per app, shared by all connections. Reads compare with the bare GET, writes with the "
        "bare POST, and the bare handler gets the same Cookie and X-XSRFToken headers as the session requests. "
        "Targets apply to requests/s; the CPU columns (server CPU time per request) are the same comparison, "
        "less sensitive to other load. "
        f"{meta['cpu']}, {meta['cpus']} vCPUs, Python {meta['python']}, Tornado {meta['tornado']}, {meta['wrk']}. "
        "Reproduce: `.venv/bin/python bench/run.py`.",
    ]
    return "\n".join(rows)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tornado-sessions benchmark (see bench/README.md)")
    parser.add_argument(
        "--runs", type=int, default=3, help="measured runs per workload; the median is reported"
    )
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per measured run (wrk takes whole seconds)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of warm-up per workload on each fresh server"
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these workloads (bare ones always run)"
    )
    parser.add_argument(
        "--app-root",
        type=Path,
        default=ROOT,
        help="checkout whose server.py and sessions/ the app servers run (compare a change against this tree)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON results go")
    return parser.parse_args()


def main() -> int:
    opts = parse_args()
    opts.app_root = opts.app_root.resolve()
    if opts.runs < 3:
        print("note: fewer than 3 runs; the issue asks for the median of at least 3", file=sys.stderr)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    ws = workloads()
    if opts.only:
        wanted = set(opts.only) | {w.baseline for w in ws if w.name in opts.only}
        wanted |= {w.p99_target[0] for w in ws if w.name in opts.only and w.p99_target}
        ws = [w for w in ws if w.name in ("bare_read", "bare_write") or w.name in wanted]
    load_start = os.getloadavg()[0]
    if load_start > 1.0:
        print(f"warning: load average {load_start:.2f}: other work will skew the figures", file=sys.stderr)

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="tornado-sessions-bench-"))
    try:
        with interruptible():
            run_meta = measure(ws, opts, tmp)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}\nservers stopped", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import tornado

    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "app_root": str(opts.app_root),
        "runs": opts.runs,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "connections": opts.connections,
        **run_meta,
        "loadavg_before": load_start,
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
    }
    summary = summarize(ws)
    cookie = sealed_cookie_size()
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(
        json.dumps({"meta": meta, "results": summary, "sealed_cookie": cookie}, indent=2) + "\n"
    )
    print(markdown(summary, cookie, meta))
    print(f"\nraw results: {opts.output}", file=sys.stderr)
    for name, errs in meta["server_errors"].items():
        if errs["count"]:
            print(
                f"warning: {name} server logged {errs['count']} ERROR lines, last:\n{errs['sample']}",
                file=sys.stderr,
            )
    busy = [s["label"] for s in summary.values() if s["median_foreign_cpu_cores"] > 0.25]
    if busy:
        print(f"warning: other processes used over 0.25 core during: {'; '.join(busy)}", file=sys.stderr)
    missed = [s["label"] for s in summary.values() if s["met"] is False or s.get("p99_met") is False] + (
        [] if cookie["met"] else ["cookie size"]
    )
    if missed:
        print("targets missed: " + "; ".join(missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

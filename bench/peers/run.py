#!/usr/bin/env python
"""Sessions in other frameworks beside this library: each as a ratio to its own bare handler.

    (cd bench/peers && npm ci)                 # once: Express, express-session, connect-redis
    .venv/bin/pip install -e '.[bench]'        # once: aiohttp, aiohttp-session
    .venv/bin/python bench/peers/run.py        # about 12 minutes on 2 cores

One command, one run: starts a Redis, a three-node Redis Cluster and PostgreSQL (the
test fixtures' classes), then one server per configuration, each answering the same
routes (``/bare``, ``/setup``, ``/read``, ``/login``; see tornado_server.py):

- Express 5 + express-session on its MemoryStore, on connect-redis (default: touch on
  every read) and on connect-redis with ``disableTouch``;
- aiohttp + aiohttp-session on EncryptedCookieStorage and on RedisStorage (redis.asyncio);
- Tornado's own signed cookie (set_signed_cookie/get_signed_cookie) as the session;
- this library (the bench/login_server.py shape, no demo) on memory, SQLite, Redis,
  Redis Cluster and PostgreSQL.

Workloads, alike everywhere: **read** = ``GET /read`` with the cookie of a session
holding ``{"count": 1}``, answering the counter (no change); **login** = ``POST /login``
without a cookie, making a new (regenerated) session that stores the user id; each is
compared with ``GET /bare`` (same Cookie header) or ``POST /bare`` of the same server
program, which answers ``{"count": 0}`` with no session code.

Method: every figure is the median of ``--pairs`` (default 5) ratios. Each server program
runs as two identical processes; in a pair one answers the bare route and the other the
session route *at the same time*, both on the first core, each under its own wrk, and
the ratio is bare CPU per request over session CPU per request
(:func:`bench.harness.run_together`: the host's speed changes hit both alike). Rounds go
through all figures, forwards then backwards. The spread (min–max of the pair ratios) is printed beside it, and a target
is "undecided" when the spread is wider than the gap between the median and the target.
Servers on the first core, wrk (-t1 -c16) and the databases on the second. Prints a
Markdown table on stdout, progress on stderr, raw figures to bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEERS = Path(__file__).resolve().parent
ROOT = PEERS.parents[1]
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    cores,
    cpu_model,
    databases,
    pair,
    pinned,
    request,
    run_measured,
    stop_servers,
    verdict,
)
from tests.fixtures.support import cookies_from, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "peers.json"
SERVER_ENV_DROP = (
    "SESSION_STORE",
    "MONGODB_URL",
    "PRODUCTION",
    "DEBUG",
    "HOST",
    "PORT",
    "DATA_DIR",
    "NODE_OPTIONS",
)


# -- what runs ---------------------------------------------------------------------
@dataclass
class ServerSpec:
    name: str
    framework: str  # Express, aiohttp, Tornado
    session: str  # what keeps the session, for the table
    args: list[str]  # command; {redis}, {redis_cluster}, {postgres}, {tmp} filled in at start
    prefix: str = ""  # where the session routes are mounted (aiohttp: /s)
    needs: tuple[str, ...] = ()  # database servers it needs


@dataclass
class Figure:
    server: str
    kind: str  # read or login
    target: float | None = None
    target_note: str = ""
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.server}_{self.kind}"


def server_specs() -> list[ServerSpec]:
    py = [sys.executable]
    node = ["node", str(PEERS / "express_server.js")]
    tornado = [*py, str(PEERS / "tornado_server.py")]
    aio = [*py, str(PEERS / "aiohttp_server.py")]
    lib = [*tornado, "--session", "library", "--store"]
    return [
        ServerSpec("express_memory", "Express", "express-session, MemoryStore", [*node, "--store", "memory"]),
        ServerSpec(
            "express_redis",
            "Express",
            "express-session, connect-redis (touch on read: default)",
            [*node, "--store", "redis", "--redis-url", "{redis}"],
            needs=("redis",),
        ),
        ServerSpec(
            "express_redis_notouch",
            "Express",
            "express-session, connect-redis, disableTouch",
            [*node, "--store", "redis-notouch", "--redis-url", "{redis}"],
            needs=("redis",),
        ),
        ServerSpec(
            "aiohttp_cookie",
            "aiohttp",
            "aiohttp-session, EncryptedCookieStorage",
            [*aio, "--storage", "cookie"],
            prefix="/s",
        ),
        ServerSpec(
            "aiohttp_redis",
            "aiohttp",
            "aiohttp-session, RedisStorage",
            [*aio, "--storage", "redis", "--redis-url", "{redis}"],
            prefix="/s",
            needs=("redis",),
        ),
        ServerSpec("tornado_signed", "Tornado", "Tornado signed cookie", [*tornado, "--session", "signed"]),
        ServerSpec("library_memory", "Tornado", "this library, memory", [*lib, "memory://"]),
        ServerSpec(
            "library_sqlite", "Tornado", "this library, SQLite", [*lib, "sqlite:///{tmp}/library.sqlite3"]
        ),
        ServerSpec("library_redis", "Tornado", "this library, Redis", [*lib, "{redis}"], needs=("redis",)),
        ServerSpec(
            "library_redis_cluster",
            "Tornado",
            "this library, Redis Cluster",
            [*lib, "{redis_cluster}"],
            needs=("redis_cluster",),
        ),
        ServerSpec(
            "library_postgres",
            "Tornado",
            "this library, PostgreSQL",
            [*lib, "{postgres}"],
            needs=("postgres",),
        ),
    ]


#: Issue 15's targets for this library, ratio to bare Tornado. Login: the library alone
#: (no bcrypt), which is what this measures. Read: memory has a library-alone target
#: (0.92); the others are the demo app's anonymous-read targets, which the library
#: alone (less work per request) must meet too.
LIBRARY_TARGETS = {
    "memory": ((0.92, ""), (0.75, "")),
    "sqlite": ((0.80, "demo's"), (0.60, "")),
    "redis": ((0.65, "demo's"), (0.50, "")),
    "redis_cluster": ((0.62, "demo's"), (0.48, "")),
    "postgres": ((0.55, "demo's"), (0.40, "")),
}


def figures(specs: list[ServerSpec]) -> list[Figure]:
    out = []
    for spec in specs:
        for i, kind in enumerate(("read", "login")):
            if spec.name == "express_redis_notouch" and kind == "login":
                continue  # touch only changes reads
            target, note = (None, "")
            store = spec.name.removeprefix("library_")
            if spec.name.startswith("library_") and store in LIBRARY_TARGETS:
                target, note = LIBRARY_TARGETS[store][i]
            out.append(Figure(spec.name, kind, target, note))
    return out


# -- servers -----------------------------------------------------------------------
@dataclass
class Server:
    spec: ServerSpec
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    cookie: str = ""  # the Cookie header of its /setup session

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start_server(
    spec: ServerSpec, urls: dict[str, str], tmp: Path, core: int | None, env: dict[str, str], suffix: str = ""
) -> Server:
    port = free_port()
    args = [a.format(tmp=tmp, **urls).replace(".sqlite3", f"{suffix}.sqlite3") for a in spec.args]
    log_path = tmp / f"{spec.name}{suffix}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            pinned([*args, "--port", str(port)], core),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return Server(spec, port, proc, log_path)


def wait_ready(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.spec.name} exited early:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(server.port, "GET", "/bare")[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.spec.name} not ready after {timeout}s:\n{server.log_tail()}")


def prepare(server: Server) -> None:
    """Make the session the reads use, and check every route by hand first.

    A benchmark of 404s, of fresh sessions or of reads that write a cookie would look
    fast or slow for the wrong reason.
    """
    p, name = server.spec.prefix, server.spec.name
    for method in ("GET", "POST"):
        status, body, _ = request(server.port, method, "/bare")
        if status != 200 or json.loads(body) != {"count": 0}:
            raise RuntimeError(f"{name}: {method} /bare gave {status} {body[:200]!r}")
    status, body, set_cookie = request(server.port, "POST", f"{p}/setup")
    jar = cookies_from(set_cookie)
    if status != 200 or "sid" not in jar:
        raise RuntimeError(f"{name}: POST {p}/setup gave {status} {body[:200]!r}, cookies {set_cookie}")
    server.cookie = f"sid={jar['sid']}"
    status, body, set_cookie = request(server.port, "GET", f"{p}/read", {"Cookie": server.cookie})
    if status != 200 or json.loads(body) != {"count": 1}:
        raise RuntimeError(f"{name}: GET {p}/read did not find the session: {status} {body[:200]!r}")
    if set_cookie:
        raise RuntimeError(f"{name}: GET {p}/read sent Set-Cookie {set_cookie}: not a pure read")
    status, body, set_cookie = request(server.port, "POST", f"{p}/login")
    if status != 200 or json.loads(body) != {"user": "bench"} or "sid" not in cookies_from(set_cookie):
        raise RuntimeError(f"{name}: POST {p}/login gave {status} {body[:200]!r}, cookies {set_cookie}")


# -- measuring ---------------------------------------------------------------------


def load(server: Server, method: str, path: str, cookie: str | None) -> harness.Load:
    return harness.Load(
        f"http://127.0.0.1:{server.port}{path}", server.proc.pid, method,
        {"Cookie": cookie} if cookie else {}, f"{server.spec.name} {path}",
    )  # fmt: skip


def workload(fig: Figure, server: Server) -> tuple[tuple[str, str, bool], tuple[str, str, bool]]:
    """(bare, app) as (method, path, send the session cookie)."""
    p = server.spec.prefix
    if fig.kind == "read":
        return ("GET", "/bare", True), ("GET", f"{p}/read", True)
    return ("POST", "/bare", False), ("POST", f"{p}/login", False)


def measure(
    figs: list[Figure], specs: list[ServerSpec], opts: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    pin, server_core, wrk_core = cores()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
    from sessions.keys import generate_key

    env["SESSION_KEYS"] = generate_key()  # fresh for this run, never written to disk
    env["PYTHONUNBUFFERED"] = "1"
    env["NODE_ENV"] = "production"
    needed = {n for s in specs for n in s.needs}
    planned = len(figs) * (opts.warmup + opts.pairs * opts.duration)
    print(f"{len(figs)} figures x {opts.pairs} pairs, about {planned / 60:.1f} min of load", file=sys.stderr)
    servers: dict[str, Server] = {}
    with databases(needed, tmp, wrk_core) as urls:
        try:
            for spec in specs:
                # Two identical processes: one answers the bare route, the other the session
                # route, at the same time on one core (bench.harness.run_together).
                servers[spec.name] = start_server(spec, urls, tmp, server_core, env)
                servers[f"{spec.name} bare"] = start_server(spec, urls, tmp, server_core, env, suffix="-bare")
            for server in servers.values():
                wait_ready(server)
                prepare(server)

            def together(fig: Figure, seconds: int) -> list[dict[str, Any]]:
                app_server, bare_server = servers[fig.server], servers[f"{fig.server} bare"]
                (bm, bp, bc), (am, ap, ac) = workload(fig, app_server)
                cookie = app_server.cookie  # the same header on both, whatever the route reads
                loads = [load(bare_server, bm, bp, cookie if bc else None), load(app_server, am, ap, cookie if ac else None)]
                return harness.run_together(loads, seconds=seconds, connections=opts.connections, core=wrk_core)

            for fig in figs:  # warm-up (V8's JIT and CPython's caches), not recorded
                together(fig, opts.warmup)
            for round_no in range(1, opts.pairs + 1):
                for fig in figs if round_no % 2 else list(reversed(figs)):
                    bare, app = together(fig, opts.duration)
                    fig.pairs.append(pair(round_no, fig.name, bare, app, together=True))
            errors = {}
            for name, server in servers.items():
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{name} died during the run:\n{server.log_tail()}")
                lines = server.log_path.read_text(errors="replace").splitlines()
                bad = [ln for ln in lines if "error" in ln.lower() or "traceback" in ln.lower()]
                if bad:
                    errors[name] = {"count": len(bad), "sample": "\n".join(bad[-5:])}
        finally:
            stop_servers(list(servers.values()))
    return {"pinned": pin, "server_core": server_core, "wrk_core": wrk_core, "server_log_errors": errors}


# -- report ------------------------------------------------------------------------


def summarize(figs: list[Figure], specs: dict[str, ServerSpec]) -> list[dict[str, Any]]:
    out = []
    for fig in figs:
        ratios = [p["ratio"] for p in fig.pairs]
        med, low, high = statistics.median(ratios), min(ratios), max(ratios)
        spec = specs[fig.server]
        out.append({
            "name": fig.name,
            "framework": spec.framework,
            "session": spec.session,
            "workload": fig.kind,
            "bare_median_rps": statistics.median(p["bare"]["rps"] for p in fig.pairs),
            "app_median_rps": statistics.median(p["app"]["rps"] for p in fig.pairs),
            "app_median_p99_ms": statistics.median(p["app"]["p99_ms"] for p in fig.pairs),
            "ratio_median": med,
            "ratio_min": low,
            "ratio_max": high,
            "cpu_ratio_median": statistics.median(p["cpu_ratio"] for p in fig.pairs),
            "app_cpu_us_per_request": statistics.median(p["app"]["server_cpu_us_per_request"] for p in fig.pairs),
            "max_foreign_cpu_cores": max(
                max(p["bare"]["foreign_cpu_cores"], p["app"]["foreign_cpu_cores"]) for p in fig.pairs
            ),
            "target": fig.target,
            "target_note": fig.target_note,
            "verdict": verdict(med, low, high, fig.target),
            "pairs": fig.pairs,
        })  # fmt: skip
    return out


WORKLOAD_LABEL = {"read": "read (GET, session cookie)", "login": "login (POST, new session)"}


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "| Framework | Session | Workload | Bare req/s | Session req/s | Ratio to bare (median) | Spread (min–max) "
        "| CPU ratio | Target | Verdict |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in rows:
        target = (
            ""
            if r["target"] is None
            else f"≥ {r['target']:.2f}" + (f" ({r['target_note']})" if r["target_note"] else "")
        )
        v = r["verdict"] or ""
        if v == "missed":
            v = "**missed**"
        lines.append(
            f"| {r['framework']} | {r['session']} | {WORKLOAD_LABEL[r['workload']]} | {r['bare_median_rps']:,.0f} "
            f"| {r['app_median_rps']:,.0f} | **{r['ratio_median']:.2f}** | {r['ratio_min']:.2f}–{r['ratio_max']:.2f} "
            f"| {r['cpu_ratio_median']:.2f} | {target} | {v} |"
        )
    v = meta["versions"]
    pin = harness.placement(meta)
    lines += [
        "",
        f"Each ratio is the median of {meta['pairs']} pairs: two processes of the same server program, one "
        f"answering the bare route and one the session route at the same time for {meta['duration_s']} s on one "
        "core, each under its own wrk; ratio = bare CPU per request / session CPU per request (with the core "
        "saturated, the throughput ratio without the host's drift); req/s columns are each process's while sharing "
        f"the core. Pairs interleaved across all rows, after {meta['warmup_s']} s of warm-up per workload; spread = "
        "lowest–highest pair ratio. Read = GET with a session "
        "cookie, compared with GET /bare carrying the same cookie; login = POST without cookie, compared with "
        f"POST /bare. wrk -t1 -c{meta['connections']}, {pin}. Undecided: the spread is wider than the gap to the "
        f"target. {meta['cpu']}, {meta['cpus']} vCPUs; Node {v['node']}, Express {v['express']}, express-session "
        f"{v['express-session']}, connect-redis {v['connect-redis']}, node-redis {v['redis (node)']}; Python "
        f"{v['python']}, aiohttp {v['aiohttp']}, aiohttp-session {v['aiohttp-session']}, redis-py {v['redis-py']}, "
        f"Tornado {v['tornado']}; {v['redis-server']}, PostgreSQL {v['postgresql']}; {v['wrk']}. "
        f"Run took {meta['elapsed_s'] / 60:.1f} min. Reproduce: `.venv/bin/python bench/peers/run.py`.",
    ]
    return "\n".join(lines)


def versions() -> dict[str, str]:
    def py(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def npm(pkg: str) -> str:
        with contextlib.suppress(OSError, ValueError):
            return str(json.loads((PEERS / "node_modules" / pkg / "package.json").read_text())["version"])
        return "not installed"

    def out(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        return "unknown"

    from tests.fixtures.postgres_fixture import find_bin_dir

    pg = "unknown"
    with contextlib.suppress(Exception):
        pg = out([str(find_bin_dir() / "postgres"), "--version"]).split(") ", 1)[-1].split()[0]
    return {
        "node": out(["node", "--version"]),
        "express": npm("express"),
        "express-session": npm("express-session"),
        "connect-redis": npm("connect-redis"),
        "redis (node)": npm("redis"),
        "python": platform.python_version(),
        "aiohttp": py("aiohttp"),
        "aiohttp-session": py("aiohttp-session"),
        "redis-py": py("redis"),
        "tornado": py("tornado"),
        "cryptography": py("cryptography"),
        "psycopg": py("psycopg"),
        "redis-server": "Redis " + out(["redis-server", "--version"]).split("v=", 1)[-1].split()[0],
        "postgresql": pg,
        "wrk": out(["wrk", "-v"]).split(" [")[0].strip(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="sessions in other frameworks, ratio to their own bare handler"
    )
    parser.add_argument(
        "--pairs", type=int, default=5, help="interleaved bare/app pairs per figure (at least 5)"
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (whole seconds)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per workload")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--only", nargs="+", metavar="SERVER", help="only these servers, e.g. express_memory library_memory"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON results go")
    return parser.parse_args()


def main() -> int:
    opts = parse_args()
    if opts.pairs < 5:
        print("note: fewer than 5 pairs; issue 15 asks for at least 5", file=sys.stderr)
    missing = [tool for tool in ("wrk", "node") if shutil.which(tool) is None]
    if missing:
        print(
            f"not found: {', '.join(missing)} (apt-get install -y wrk; Node from the machine)",
            file=sys.stderr,
        )
        return 2
    if not (PEERS / "node_modules" / "express-session").is_dir():
        print("Node packages missing: (cd bench/peers && npm ci)", file=sys.stderr)
        return 2
    try:
        import aiohttp_session  # noqa: F401
    except ImportError:
        print("aiohttp-session missing: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    specs = server_specs()
    if opts.only:
        unknown = set(opts.only) - {s.name for s in specs}
        if unknown:
            print(f"unknown servers {sorted(unknown)}; known: {[s.name for s in specs]}", file=sys.stderr)
            return 2
        specs = [s for s in specs if s.name in opts.only]
    figs = figures(specs)
    load_start = os.getloadavg()[0]
    if load_start > 1.0:
        print(
            f"warning: load average {load_start:.2f}: other work will make the pairs noisier", file=sys.stderr
        )
    started = time.monotonic()
    run_meta = run_measured("tornado-sessions-peers-", lambda tmp: measure(figs, specs, opts, tmp))
    if isinstance(run_meta, int):
        return run_meta
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "pairs": opts.pairs,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "connections": opts.connections,
        **run_meta,
        "loadavg_before": load_start,
        "loadavg_after": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "versions": versions(),
    }
    rows = summarize(figs, {s.name: s for s in specs})
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(markdown(rows, meta))
    print(f"\nraw results: {opts.output}", file=sys.stderr)
    for name, errs in meta["server_log_errors"].items():
        print(f"warning: {name} logged {errs['count']} error lines, last:\n{errs['sample']}", file=sys.stderr)
    busy = [r["name"] for r in rows if r["max_foreign_cpu_cores"] > 0.25]
    if busy:
        print(
            f"warning: other processes used over 0.25 core during some runs of: {', '.join(busy)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

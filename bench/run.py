#!/usr/bin/env python
"""Issue 15's target table in one run: every figure a median of interleaved bare/app pairs.

    .venv/bin/python bench/run.py            # about 7 minutes on 2 cores (5 pairs of 3 s per figure)

Starts a Redis, a three-node Redis Cluster and PostgreSQL (the test fixtures' classes,
pinned by process id to the load generator's core), then on the first core: the bare
Tornado handler (bare_server.py), the demo app (app_server.py) on each store (memory,
SQLite, Redis, Redis Cluster, PostgreSQL) and the library alone (login_server.py) on
each store. Per store it measures, as ratios to a bare handler:

- anonymous read: ``GET /api/counter`` with an anonymous session's cookie (demo app);
- logged-in read: ``GET /auth/profile`` with the cookie of a user registered once
  through the API (demo app, bcrypt cost 4, sign-up/login limits raised);
- update: ``POST /api/counter`` with the cookie and ``X-XSRFToken`` (demo app);
- login: ``POST /login`` on login_server.py (regenerate + store the user, no bcrypt);

plus the library alone reading a session from memory (login_server.py ``GET /profile``)
and the demo's ``GET /health`` (no session; no target). Every bare run goes to
bare_server.py with the same Cookie and X-XSRFToken headers as its app run, so a ratio
measures the session work and not Tornado parsing a longer request.

Method (issue 15 §5): every figure is the median of ``--pairs`` ratios. In a pair the
bare server and the app server run *at the same time*, both on the first core, each
under its own wrk on the second (:func:`bench.harness.run_together`), and the ratio is
bare CPU time per request over app CPU time per request. This machine's core speed
moves by up to ×1.7 within seconds; runs taken one after the other gave pair ratios of
0.47–1.04 for one figure, runs taken together 0.73–0.80 under the same conditions.
With the core saturated (16 connections keep it so, on every store) requests/s is one
over CPU per request, so this is the throughput ratio the issue asks for. Rounds go
through all figures, forwards then backwards. The spread is the lowest–highest pair
ratio; a figure is "undecided" when the spread is wider than the gap between its median
and its target, otherwise "met" or "missed". Markdown table on stdout, progress on
stderr, every pair to bench/results/latest.json. Every server it starts is stopped on
the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    Server,
    cpu_model,
    logged_errors,
    make_login_session,
    request,
    start_server,
    stop_servers,
    wait_ready,
)
from sessions.keys import KeyRing, generate_key  # noqa: E402
from tests.fixtures.support import cookies_from  # noqa: E402

RESULTS = BENCH / "results" / "latest.json"
COOKIE_TARGET_BYTES = 200
#: Environment that would change which store or mode server.py picks.
SERVER_ENV_DROP = ("SESSION_STORE", "MONGODB_URL", "PRODUCTION", "DEBUG", "HOST", "PORT", "DATA_DIR")
#: Demo flags for setup speed: one sign-up per app, bcrypt at its cheapest, no limit in the way.
DEMO_FLAGS = [
    "--bcrypt-cost", "4", "--register-limit", "1000000/60", "--login-limit", "1000000/60",
    "--login-account-limit", "1000000/60",
]  # fmt: skip
BENCH_USER = {"email": "bench@example.com", "name": "Bench", "password": "a bench password, long enough 42"}

STORES = {
    "memory": "memory",
    "sqlite": "SQLite",
    "redis": "Redis",
    "redis_cluster": "Redis Cluster",
    "postgres": "PostgreSQL",
}
#: Issue 15 §2: workload -> store -> target ratio to bare Tornado.
TARGETS = {
    "anon_read": {"memory": 0.88, "sqlite": 0.80, "redis": 0.65, "redis_cluster": 0.62, "postgres": 0.55},
    "user_read": {"memory": 0.85, "sqlite": 0.75, "redis": 0.60, "redis_cluster": 0.58, "postgres": 0.50},
    "update": {"memory": 0.80, "sqlite": 0.70, "redis": 0.50, "redis_cluster": 0.48, "postgres": 0.40},
    "login": {"memory": 0.75, "sqlite": 0.60, "redis": 0.50, "redis_cluster": 0.48, "postgres": 0.40},
}
WORKLOAD_LABEL = {
    "anon_read": "anonymous read (`GET /api/counter`)",
    "user_read": "logged-in read (`GET /auth/profile`)",
    "update": "update (`POST /api/counter`)",
    "login": "login (library alone, no bcrypt)",
    "library_read": "library alone, session read (`GET /profile`)",
    "health": "demo app, no session (`GET /health`)",
}


# -- what we measure ---------------------------------------------------------------
@dataclass
class Run:
    server: str  # which server process answers
    method: str
    path: str
    headers: str | None  # which header set the requests carry (None: no cookies)


@dataclass
class Figure:
    workload: str  # key of WORKLOAD_LABEL
    store: str  # key of STORES
    bare: Run
    app: Run
    target: float | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.workload}_{self.store}"


def figures(stores: list[str]) -> list[Figure]:
    out = []
    for store in stores:
        app, lib, anon, user = f"app_{store}", f"lib_{store}", f"anon_{store}", f"user_{store}"
        out += [
            Figure("anon_read", store, Run("bare", "GET", "/", anon), Run(app, "GET", "/api/counter", anon)),
            Figure("user_read", store, Run("bare", "GET", "/", user), Run(app, "GET", "/auth/profile", user)),
            Figure("update", store, Run("bare", "POST", "/", anon), Run(app, "POST", "/api/counter", anon)),
            Figure("login", store, Run("bare", "POST", "/", None), Run(lib, "POST", "/login", None)),
        ]
        if store == "memory":
            out += [
                Figure(
                    "library_read", store, Run("bare", "GET", "/", "lib_memory"),
                    Run(lib, "GET", "/profile", "lib_memory"), target=0.92,
                ),
                Figure("health", store, Run("bare", "GET", "/", None), Run(app, "GET", "/health", None)),
            ]  # fmt: skip
    for fig in out:
        fig.target = TARGETS.get(fig.workload, {}).get(fig.store, fig.target)
    return out


# -- servers -----------------------------------------------------------------------
def server_commands(tmp: Path, app_root: Path, urls: dict[str, str]) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after the interpreter, readiness path); urls: store -> URL."""
    out: dict[str, tuple[list[str], str]] = {"bare": ([str(BENCH / "bare_server.py")], "/")}
    for store, url in urls.items():
        out[f"app_{store}"] = (
            [str(BENCH / "app_server.py"), "--app-root", str(app_root), "--store", url.format(tmp=tmp / "app"),
             "--data-dir", str(tmp / f"app_{store}"), *DEMO_FLAGS],
            "/health",
        )  # fmt: skip
        out[f"lib_{store}"] = (
            # The library alone from the same checkout (login_server.py puts its own tree first).
            [str(app_root / "bench" / "login_server.py"), "--store", url.format(tmp=tmp / "lib")],
            "/bare",
        )
    (tmp / "app").mkdir(parents=True, exist_ok=True)
    (tmp / "lib").mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def databases(names: set[str], tmp: Path, core: int | None) -> Iterator[dict[str, str]]:
    """Every store's URL in ``names``: the servers from :func:`bench.harness.databases`
    (pinned to the load generator's core), plus memory and SQLite."""
    with harness.databases(names, tmp, core) as servers:
        # "{tmp}" is filled in per server (server_commands): the app and the library apart.
        urls = {"memory": "memory://", "sqlite": "sqlite:///{tmp}/sessions.sqlite3", **servers}
        yield {store: url for store, url in urls.items() if store in names}


# -- sessions made through the public API ------------------------------------------
def xsrf_cookie(port: int) -> str:
    status, _, set_cookie = request(port, "GET", "/api/counter")
    xsrf = cookies_from(set_cookie).get("_xsrf")
    if status != 200 or not xsrf:
        raise RuntimeError(f"GET /api/counter gave {status} and no _xsrf cookie")
    return xsrf


def make_session(port: int) -> dict[str, str]:
    """An anonymous session: GET for the _xsrf cookie, POST with it for the sid cookie."""
    xsrf = xsrf_cookie(port)
    status, body, set_cookie = request(
        port, "POST", "/api/counter", {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf}
    )
    sid = cookies_from(set_cookie).get("sid")
    if status != 200 or not sid or json.loads(body) != {"count": 1}:
        raise RuntimeError(f"POST /api/counter gave {status} {body!r} and sid={sid!r}")
    return {"Cookie": f"sid={sid}; _xsrf={xsrf}", "X-XSRFToken": xsrf}


def register_user(port: int) -> dict[str, str]:
    """A logged-in session: sign up once through the JSON API (which logs the user in)."""
    xsrf = xsrf_cookie(port)
    status, body, set_cookie = request(
        port, "POST", "/auth/register",
        {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf, "Content-Type": "application/json"},
        json.dumps(BENCH_USER).encode(),
    )  # fmt: skip
    sid = cookies_from(set_cookie).get("sid")
    if status != 201 or not sid:
        raise RuntimeError(f"POST /auth/register gave {status} {body[:200]!r} and sid={sid!r}")
    return {"Cookie": f"sid={sid}; _xsrf={xsrf}", "X-XSRFToken": xsrf}


def check_run(fig: Figure, run: Run, port: int, headers: dict[str, str]) -> None:
    """One request by hand first: a benchmark of 403s, 401s or fresh sessions would look fast."""
    status, body, set_cookie = request(port, run.method, run.path, headers)
    what = f"{fig.name}: {run.method} {run.path}"
    if status != 200:
        raise RuntimeError(f"{what} gave {status} {body[:200]!r}")
    new_sid = any(c.startswith("sid=") for c in set_cookie)
    if run is fig.bare:
        return
    if fig.workload in ("anon_read", "update") and json.loads(body).get("count", 0) < 1:
        raise RuntimeError(f"{what}: the session cookie was not honoured: {body!r}")
    if fig.workload == "user_read" and json.loads(body).get("user", {}).get("email") != BENCH_USER["email"]:
        raise RuntimeError(f"{what}: not logged in: {body[:200]!r}")
    if fig.workload == "library_read" and json.loads(body) != {"user": "bench"}:
        raise RuntimeError(f"{what}: the session was not found: {body!r}")
    if fig.workload == "login":
        if not new_sid:
            raise RuntimeError(f"{what}: no session cookie set")
    elif new_sid:
        raise RuntimeError(f"{what}: the server issued a new session instead of using ours")


# -- measuring ---------------------------------------------------------------------


def load_of(run: Run, server: Server, headers: dict[str, str]) -> harness.Load:
    return harness.Load(
        f"http://127.0.0.1:{server.port}{run.path}", server.proc.pid, run.method, headers,
        f"{server.name} {run.path}",
    )  # fmt: skip


def sealed_cookie_size() -> dict[str, Any]:
    """Size of a 100-byte JSON preferences value sealed as the cookie "prefs"."""
    value = {"theme": "dark", "lang": "en-GB", "tz": "Europe/Berlin", "pad": ""}
    value["pad"] = "x" * (100 - len(json.dumps(value, separators=(",", ":"))))
    payload = json.dumps(value, separators=(",", ":")).encode()
    assert len(payload) == 100, len(payload)
    ring = KeyRing.from_text(generate_key())
    sealed = ring.seal(payload, "prefs", max_age=365 * 24 * 3600)
    assert ring.open(sealed, "prefs") == payload
    return {"payload_bytes": len(payload), "value_bytes": len(sealed), "target_bytes": COOKIE_TARGET_BYTES,
            "met": len(sealed) <= COOKIE_TARGET_BYTES}  # fmt: skip


def measure(figs: list[Figure], stores: list[str], opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pin, server_core, wrk_core = harness.cores()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
    env["SESSION_KEYS"] = generate_key()  # fresh for this run, never written to disk
    env["PYTHONUNBUFFERED"] = "1"
    planned = len(figs) * (opts.warmup + opts.pairs * opts.duration)
    print(f"{len(figs)} figures x {opts.pairs} pairs, about {planned / 60:.1f} min of load", file=sys.stderr)
    servers: dict[str, Server] = {}
    with databases(set(stores), tmp, wrk_core) as urls:
        try:
            commands = server_commands(tmp, opts.app_root, urls)
            for name, (args, _) in commands.items():
                servers[name] = start_server(name, args, tmp, server_core, env)
            for name, server in servers.items():
                wait_ready(server, commands[name][1])
            headers: dict[str | None, dict[str, str]] = {None: {}}
            for store in stores:
                headers[f"anon_{store}"] = make_session(servers[f"app_{store}"].port)
                headers[f"user_{store}"] = register_user(servers[f"app_{store}"].port)
                headers[f"lib_{store}"] = make_login_session(servers[f"lib_{store}"].port)

            def together(fig: Figure, seconds: int) -> list[dict[str, Any]]:
                loads = [load_of(r, servers[r.server], headers[r.headers]) for r in (fig.bare, fig.app)]
                return harness.run_together(loads, seconds=seconds, connections=opts.connections, core=wrk_core)

            for fig in figs:  # checked by hand, then warmed up (not recorded)
                for run in (fig.bare, fig.app):
                    check_run(fig, run, servers[run.server].port, headers[run.headers])
                if not opts.check:
                    together(fig, opts.warmup)
            for round_no in range(1, 0 if opts.check else opts.pairs + 1):
                for fig in figs if round_no % 2 else list(reversed(figs)):
                    bare, app = together(fig, opts.duration)
                    fig.pairs.append(harness.pair(round_no, fig.name, bare, app, together=True))
            errors = {}
            for name, server in servers.items():
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{name} server died during the run:\n{server.log_tail()}")
                errors[name] = logged_errors(server)
        finally:
            stop_servers(list(servers.values()))
    return {"pinned": pin, "server_core": server_core, "wrk_core": wrk_core, "server_errors": errors}


# -- report ------------------------------------------------------------------------
def summarize(figs: list[Figure]) -> list[dict[str, Any]]:
    out = []
    for fig in figs:
        ratios = [p["ratio"] for p in fig.pairs]
        med, low, high = statistics.median(ratios), min(ratios), max(ratios)

        def median(side: str, key: str) -> float:
            return statistics.median(p[side][key] for p in fig.pairs)  # noqa: B023

        out.append({
            "name": fig.name,
            "workload": fig.workload,
            "store": fig.store,
            "bare": f"{fig.bare.server} {fig.bare.method} {fig.bare.path}",
            "app": f"{fig.app.server} {fig.app.method} {fig.app.path}",
            "bare_median_rps": median("bare", "rps"),
            "app_median_rps": median("app", "rps"),
            "app_median_p99_ms": median("app", "p99_ms"),
            "app_cpu_us_per_request": median("app", "server_cpu_us_per_request"),
            "bare_cpu_us_per_request": median("bare", "server_cpu_us_per_request"),
            "ratio_median": med,
            "ratio_min": low,
            "ratio_max": high,
            "cpu_ratio_median": statistics.median(p["cpu_ratio"] for p in fig.pairs),
            "max_foreign_cpu_cores": max(
                max(p["bare"]["foreign_cpu_cores"], p["app"]["foreign_cpu_cores"]) for p in fig.pairs
            ),
            "target": fig.target,
            "verdict": harness.verdict(med, low, high, fig.target),
            "pairs": fig.pairs,
        })  # fmt: skip
    return out


def markdown(rows: list[dict[str, Any]], cookie: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "| Workload | Store | Target | Ratio (median) | Spread (min–max) | Verdict | Bare CPU/request "
        "| App CPU/request | App req/s (half a core) | App p99 |",
        "|---|---|--:|--:|--:|:-:|--:|--:|--:|--:|",
    ]
    for r in rows:
        target = "" if r["target"] is None else f"≥ {r['target']:.2f}"
        v = r["verdict"] or ""
        if v == "missed":
            v = "**missed**"
        lines.append(
            f"| {WORKLOAD_LABEL[r['workload']]} | {STORES[r['store']]} | {target} | **{r['ratio_median']:.2f}** "
            f"| {r['ratio_min']:.2f}–{r['ratio_max']:.2f} | {v} | {r['bare_cpu_us_per_request']:.0f} µs "
            f"| {r['app_cpu_us_per_request']:.0f} µs | {r['app_median_rps']:,.0f} | {r['app_median_p99_ms']:.1f} ms |"
        )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("met", "missed", "undecided")}
    pin = harness.placement(meta)
    lines += [
        "",
        f"{counts['met']} met, {counts['missed']} missed, {counts['undecided']} undecided. Each ratio is the median "
        f"of {meta['pairs']} pairs; in each pair the bare server and the app server run at the same time for "
        f"{meta['duration_s']} s, on the same core, each under its own wrk, and the ratio is the bare server's CPU "
        "time per request over the app server's (with the core saturated, requests/s is one over CPU per request; "
        "sharing the core over the same seconds cancels the host's speed changes). Pairs go through all rows "
        f"forwards, then backwards, after {meta['warmup_s']} s of warm-up each; spread = lowest–highest pair ratio; "
        "undecided = the spread is wider than the gap between median and target. Every bare run is "
        "bare_server.py carrying the same Cookie and X-XSRFToken headers as the app run. "
        f"wrk -t1 -c{meta['connections']} per server, {pin}. Sealed 100-byte preferences cookie: "
        f"{cookie['value_bytes']} bytes (target ≤ {cookie['target_bytes']}). {meta['cpu']}, {meta['cpus']} vCPUs, "
        f"Python {meta['python']}, Tornado {meta['tornado']}, {meta['wrk']}; run took "
        f"{meta['elapsed_s'] / 60:.1f} min. Reproduce: `.venv/bin/python bench/run.py`.",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tornado-sessions benchmark (see bench/README.md)")
    parser.add_argument(
        "--pairs", type=int, default=5, help="interleaved bare/app pairs per figure (at least 5)"
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (whole seconds)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run, once")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--stores", nargs="+", choices=list(STORES), default=list(STORES), help="only these stores"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="WORKLOAD", choices=list(WORKLOAD_LABEL), help="only these workloads"
    )
    parser.add_argument(
        "--app-root",
        type=Path,
        default=ROOT,
        help="checkout whose server.py, bench/login_server.py and sessions/ the app servers run "
        "(compare a change against this tree; the bare server and the method stay this tree's)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="start, set up and check every workload by hand; no load, no table",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON results go")
    return parser.parse_args()


def main() -> int:
    opts = parse_args()
    opts.app_root = opts.app_root.resolve()
    if opts.pairs < 5:
        print("note: fewer than 5 pairs; issue 15 asks for at least 5", file=sys.stderr)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    stores = [s for s in STORES if s in opts.stores]
    figs = [f for f in figures(stores) if not opts.only or f.workload in opts.only]
    load_start = os.getloadavg()[0]
    if load_start > 1.0:
        print(
            f"warning: load average {load_start:.2f}: other work will make the pairs noisier", file=sys.stderr
        )

    started = time.monotonic()
    outcome = harness.run_measured("tornado-sessions-bench-", lambda tmp: measure(figs, stores, opts, tmp))
    if isinstance(outcome, int):
        return outcome
    run_meta = outcome
    if opts.check:
        print(f"checked {len(figs)} figures by hand: servers answer, sessions found", file=sys.stderr)
        return 0

    import tornado

    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "app_root": str(opts.app_root),
        "pairs": opts.pairs,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "connections": opts.connections,
        **run_meta,
        "loadavg_before": load_start,
        "loadavg_after": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
    }
    rows = summarize(figs)
    cookie = sealed_cookie_size()
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(
        json.dumps({"meta": meta, "results": rows, "sealed_cookie": cookie}, indent=2) + "\n"
    )
    print(markdown(rows, cookie, meta))
    print(f"\nraw results: {opts.output}", file=sys.stderr)
    for name, errs in meta["server_errors"].items():
        if errs["count"]:
            print(
                f"warning: {name} logged {errs['count']} error lines, last:\n{errs['sample']}",
                file=sys.stderr,
            )
    busy = [r["name"] for r in rows if r["max_foreign_cpu_cores"] > 0.25]
    if busy:
        print(
            f"warning: other processes used over 0.25 core during some runs of: {', '.join(busy)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

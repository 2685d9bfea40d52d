#!/usr/bin/env python
"""Issue 15 §3, cost flat in store size: 1,000,000 stored sessions against 1,000.

    .venv/bin/python bench/store_size.py            # SQLite, Redis, PostgreSQL; 1,000,000 vs 1,000
    .venv/bin/python bench/store_size.py --stores redis --big 20000 --pairs 5 --duration 2   # a quick look

For each store, one after the other: starts its database server (Redis, PostgreSQL:
the test fixtures' classes through :func:`bench.harness.databases`, pinned to the load
generator's core), makes two stores of the same kind (SQLite: two files; Redis: two
database numbers of one server; PostgreSQL: two databases of one cluster), fills the
"small" one with ``--small`` sessions and the "big" one with ``--big`` through the
driver (:mod:`bench.fill`: bulk writes in the store's own layout, then a sample read
back through the store's ``load`` and ``list_user``), and serves each with its own
``login_server.py`` on the first core, beside bare_server.py (wrk on the second). Then,
as pairs in which the three servers run the same workload at the same time:

- **logged-in read**: ``GET /profile`` with the cookie of a session made by
  ``POST /login`` on that server;
- **login**: ``POST /login`` without a cookie, one new stored session per request.

Each figure is the median over ``--pairs`` of the small store's server CPU per request
÷ the big store's (the same as big req/s ÷ small req/s with the core saturated, without
the host's drift: :func:`bench.harness.run_together`), with its spread (lowest–highest
pair ratio); target 0.90 (the big store within 10 % of the small one), "undecided" when
the spread is wider than the gap between median and target. bare_server.py runs the
same method and cookie in every pair, so each server's ratio to bare is reported for
context. Markdown table on stdout,
progress on stderr, every pair to bench/results/store_size.json. Every server and
database it starts is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.fill import FILLERS, Plan, stored_size, verify  # noqa: E402
from bench.harness import (  # noqa: E402
    Server,
    cores,
    cpu_model,
    logged_errors,
    make_login_session,
    request,
    run_measured,
    start_server,
    stop_servers,
    wait_ready,
)
from tests.fixtures.support import cookies_from  # noqa: E402

RESULTS = BENCH / "results" / "store_size.json"
STORES = {"sqlite": "SQLite", "redis": "Redis", "postgres": "PostgreSQL"}
WORKLOADS = {
    "read": "logged-in read (`GET /profile`)",
    "login": "login (`POST /login`, one new session each)",
}
#: Issue 15 §3: the big store's requests/s at least 90 % of the small store's.
TARGET = 0.90
SIZES = ("small", "big")


@dataclass
class Figure:
    store: str
    workload: str  # key of WORKLOADS
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.workload}_{self.store}"


def runs(workload: str) -> tuple[tuple[str, str, bool], tuple[str, str, bool]]:
    """(bare_server.py, session) runs as (method, path, send the logged-in cookie)."""
    if workload == "read":
        return ("GET", "/", True), ("GET", "/profile", True)
    return ("POST", "/", False), ("POST", "/login", False)


# -- the two stores of one kind -----------------------------------------------------------
def store_urls(store: str, servers: dict[str, str], tmp: Path) -> dict[str, str]:
    """size -> URL: two SQLite files, two Redis database numbers, two PostgreSQL databases."""
    if store == "sqlite":
        return {size: f"sqlite:///{tmp}/{size}.sqlite3" for size in SIZES}
    if store == "redis":
        base = servers["redis"].rsplit("/", 1)[0]
        return {"small": f"{base}/1", "big": f"{base}/2"}
    import psycopg

    base = servers["postgres"].rsplit("/", 1)[0]
    with psycopg.connect(servers["postgres"], autocommit=True) as conn:
        for size in SIZES:
            conn.execute(f"CREATE DATABASE ts_{size}")
    return {size: f"{base}/ts_{size}" for size in SIZES}


def database_version(store: str, url: str) -> str:
    """For the report: which database the figures are of."""
    if store == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    if store == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            return f"Redis {client.info('server')['redis_version']}"
        finally:
            client.close()
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def fill_stores(store: str, urls: dict[str, str], opts: argparse.Namespace) -> dict[str, Any]:
    """Fill both stores, read a sample of each back through the store; size -> what was written."""
    out: dict[str, Any] = {}
    for size in SIZES:
        count = opts.small if size == "small" else opts.big
        log(f"{store} {size}: filling {count:,} sessions through the driver")
        filled = asyncio.run(FILLERS[store](urls[size], Plan(count), progress=log))
        try:
            checked = asyncio.run(verify(urls[size], filled))
        except AssertionError as exc:
            raise RuntimeError(
                f"the {store} {size} fill does not read back through the store: {exc}"
            ) from None
        out[size] = {
            "url": urls[size], "sessions": count, "fill_s": round(filled.seconds, 2), "checked_records": checked,
            "checked_users": len(filled.users),
        }  # fmt: skip
        log(
            f"{store} {size}: {count:,} sessions in {filled.seconds:.1f} s; {checked} records read back as written"
        )
    return out


def sizes(urls: dict[str, str]) -> dict[str, Any]:
    return {size: asyncio.run(stored_size(url)) for size, url in urls.items()}


# -- the servers ------------------------------------------------------------------------
def check(server: Server, cookie: dict[str, str]) -> None:
    """Every route by hand once: a benchmark of 404s, or of reads that miss the session, would look fast."""
    for method in ("GET", "POST"):
        status, body, _ = request(server.port, method, "/bare", cookie)
        if status != 200 or json.loads(body) != {"user": "bench"}:
            raise RuntimeError(f"{server.name}: {method} /bare gave {status} {body[:200]!r}")
    status, body, set_cookie = request(server.port, "GET", "/profile", cookie)
    if status != 200 or json.loads(body) != {"user": "bench"}:
        raise RuntimeError(f"{server.name}: GET /profile did not find the session: {status} {body[:200]!r}")
    if "sid" in cookies_from(set_cookie):
        raise RuntimeError(f"{server.name}: GET /profile issued a new session instead of reading ours")
    status, body, set_cookie = request(server.port, "POST", "/login")
    if status != 200 or "sid" not in cookies_from(set_cookie):
        raise RuntimeError(f"{server.name}: POST /login gave {status} {body[:200]!r} and no session cookie")


def load(server: Server, run: tuple[str, str, bool], cookie: dict[str, str]) -> harness.Load:
    method, path, with_cookie = run
    return harness.Load(
        f"http://127.0.0.1:{server.port}{path}", server.proc.pid, method, cookie if with_cookie else {},
        f"{server.name} {path}",
    )  # fmt: skip


def measure_store(
    store: str, opts: argparse.Namespace, tmp: Path, env: dict[str, str], core: tuple[int | None, int | None]
) -> dict[str, Any]:
    """One store kind: its database, two fills, two servers, every pair of its figures."""
    server_core, wrk_core = core
    needed = {store} - {"sqlite"}
    folder = tmp / store
    folder.mkdir()
    figs = [Figure(store, workload) for workload in WORKLOADS]
    with harness.databases(needed, folder, wrk_core) as servers:
        urls = store_urls(store, servers, folder)
        version = database_version(store, urls["big"])
        fills = fill_stores(store, urls, opts)
        after_fill = sizes(urls)
        running: dict[str, Server] = {}
        try:
            running["bare"] = start_server(f"{store}_bare", [str(BENCH / "bare_server.py")], folder, server_core, env)
            for size in SIZES:
                args = [str(BENCH / "login_server.py"), "--store", urls[size]]
                running[size] = start_server(f"{store}_{size}", args, folder, server_core, env)
            wait_ready(running["bare"], "/")
            for size in SIZES:
                wait_ready(running[size], "/bare")
            cookies = {size: make_login_session(running[size].port) for size in SIZES}
            for size in SIZES:
                check(running[size], cookies[size])

            def together(fig: Figure, seconds: int) -> dict[str, dict[str, Any]]:
                # The bare server, the small and the big store's servers, all at once on one core.
                bare_run, app_run = runs(fig.workload)
                loads = [load(running["bare"], bare_run, cookies["small"])]
                loads += [load(running[size], app_run, cookies[size]) for size in SIZES]
                results = harness.run_together(
                    loads, seconds=seconds, connections=opts.connections, core=wrk_core
                )
                return dict(zip(("bare", *SIZES), results, strict=True))

            for fig in figs:  # warm-up, not recorded
                together(fig, opts.warmup)
            for round_no in range(1, opts.pairs + 1):
                for fig in figs if round_no % 2 else list(reversed(figs)):
                    fig.pairs.append(pair(round_no, fig, together(fig, opts.duration)))
            errors = {}
            for size, server in running.items():
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
                errors[size] = logged_errors(server)
        finally:
            stop_servers(list(running.values()))
        after_run = sizes(urls)
    return {
        "store": store, "version": version, "fills": fills, "size_after_fill": after_fill,
        "size_after_run": after_run, "server_errors": errors, "figures": figs,
    }  # fmt: skip


def pair(round_no: int, fig: Figure, result: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Three runs taken together: CPU per request decides (see bench.harness.run_together)."""
    bare, small, big = (result[name]["server_cpu_us_per_request"] for name in ("bare", *SIZES))
    out = {
        "round": round_no, **result, "ratio": small / big, "small_to_bare": bare / small, "big_to_bare": bare / big,
    }  # fmt: skip
    other = max(run["foreign_cpu_cores"] for run in result.values())
    log(
        f"round {round_no} {fig.name:<16} CPU per request: bare {bare:.0f}, small {small:.0f}, big {big:.0f} µs"
        f"  big/small {out['ratio']:.3f}  (to bare: small {out['small_to_bare']:.2f}, big {out['big_to_bare']:.2f})"
        f"  other load {other:.2f} cores"
    )
    return out


# -- report -----------------------------------------------------------------------------
def summarize(fig: Figure) -> dict[str, Any]:
    ratios = [p["ratio"] for p in fig.pairs]
    med, low, high = statistics.median(ratios), min(ratios), max(ratios)
    decided = harness.verdict(med, low, high, TARGET)

    def median(*path: str) -> float:
        values = []
        for p in fig.pairs:
            value: Any = p
            for part in path:
                value = value[part]
            values.append(value)
        return statistics.median(values)

    return {
        "name": fig.name, "store": fig.store, "workload": fig.workload, "target": TARGET,
        "ratio_median": med, "ratio_min": low, "ratio_max": high,
        "verdict": decided,
        "small_rps": median("small", "rps"), "big_rps": median("big", "rps"), "bare_rps": median("bare", "rps"),
        "small_to_bare": median("small_to_bare"), "big_to_bare": median("big_to_bare"),
        "bare_cpu_us": median("bare", "server_cpu_us_per_request"),
        "small_cpu_us": median("small", "server_cpu_us_per_request"),
        "big_cpu_us": median("big", "server_cpu_us_per_request"),
        "small_p99_ms": median("small", "p99_ms"), "big_p99_ms": median("big", "p99_ms"),
        "max_foreign_cpu_cores": max(p[name]["foreign_cpu_cores"] for p in fig.pairs for name in ("bare", *SIZES)),
        "pairs": fig.pairs,
    }  # fmt: skip


def markdown(rows: list[dict[str, Any]], stores: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "| Store | Workload | Target | Big ÷ small (median) | Spread (min–max) | Verdict | CPU/request small → big "
        "| Small ÷ bare | Big ÷ bare | req/s small, big (a third of a core each) |",
        "|---|---|--:|--:|--:|:-:|--:|--:|--:|--:|",
    ]
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] == "missed" else r["verdict"]
        lines.append(
            f"| {STORES[r['store']]} | {WORKLOADS[r['workload']]} | ≥ {r['target']:.2f} | **{r['ratio_median']:.2f}** "
            f"| {r['ratio_min']:.2f}–{r['ratio_max']:.2f} | {verdict} | {r['small_cpu_us']:.0f} → {r['big_cpu_us']:.0f} µs "
            f"| {r['small_to_bare']:.2f} | {r['big_to_bare']:.2f} | {r['small_rps']:,.0f}, {r['big_rps']:,.0f} |"
        )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("met", "missed", "undecided")}
    pin = harness.placement(meta)
    lines += [
        "",
        f"{counts['met']} met, {counts['missed']} missed, {counts['undecided']} undecided. Each ratio is the median "
        f"of {meta['pairs']} pairs. In a pair, bare_server.py and the small and the big store's login_server.py "
        f"run the workload at the same time for {meta['duration_s']} s, all three on one core, each under its "
        "own wrk; big ÷ small is the small store's server CPU per request over the big store's (with the core "
        "saturated, requests/s is one over CPU per request, and sharing the core over the same seconds cancels "
        "the host's speed changes). Spread = lowest–highest pair ratio, undecided = the spread is wider than the "
        'gap between median and target. "÷ bare" = bare_server.py\'s CPU per request over that server\'s (median). '
        f"wrk -t1 -c{meta['connections']} per server, {pin}, {meta['warmup_s']} s warm-up per figure.",
        "",
    ]
    for s in stores:
        small, big = s["fills"]["small"], s["fills"]["big"]
        sf, bf = s["size_after_fill"]["small"], s["size_after_fill"]["big"]
        sr, br = s["size_after_run"]["small"], s["size_after_run"]["big"]
        if s["store"] == "redis":
            held = (
                f"used_memory {bf['human']} after both fills ({sf['keys']:,} and {bf['keys']:,} keys, sessions + "
                f"user indexes); after the run {br['human']} ({sr['keys']:,} and {br['keys']:,} keys)"
            )
        else:
            what = "file + WAL" if s["store"] == "sqlite" else "table + indexes"
            held = (
                f"{what}: small {sf['human']}, big {bf['human']}; after the run small {sr['human']} "
                f"({sr['sessions']:,} sessions), big {br['human']} ({br['sessions']:,} sessions)"
            )
        lines.append(
            f"- **{STORES[s['store']]}** ({s['version']}): filled small {small['sessions']:,} sessions in "
            f"{small['fill_s']:.1f} s, big {big['sessions']:,} in {big['fill_s']:.1f} s; {held}."
        )
    lines += [
        "",
        f"{meta['cpu']}, {meta['cpus']} vCPUs, Python {meta['python']}, Tornado {meta['tornado']}, {meta['wrk']}; "
        f"load average {meta['loadavg_before']:.2f} before, {meta['loadavg_after']:.2f} after; run took "
        f"{meta['elapsed_s'] / 60:.1f} min. Reproduce: `.venv/bin/python bench/store_size.py`.",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="issue 15 §3: cost flat in store size (see bench/README.md)")
    parser.add_argument(
        "--stores", nargs="+", choices=list(STORES), default=list(STORES), help="only these stores"
    )
    parser.add_argument("--big", type=int, default=1_000_000, help="sessions in the big store")
    parser.add_argument("--small", type=int, default=1_000, help="sessions in the small store")
    parser.add_argument(
        "--pairs", type=int, default=5, help="pairs per figure (issue 15 asks for at least 5)"
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (whole seconds)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run, once")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON results go")
    return parser.parse_args()


def main() -> int:
    opts = parse_args()
    if opts.pairs < 5:
        log("note: fewer than 5 pairs; issue 15 asks for at least 5")
    if shutil.which("wrk") is None:
        log("wrk not found: apt-get install -y wrk")
        return 2
    stores = [s for s in STORES if s in opts.stores]
    load_start = os.getloadavg()[0]
    if load_start > 1.0:
        log(f"warning: load average {load_start:.2f}: other work will make the pairs noisier")
    load_s = len(stores) * len(WORKLOADS) * (opts.warmup + opts.pairs * opts.duration)
    log(
        f"{len(stores)} stores x {len(WORKLOADS)} figures x {opts.pairs} pairs: about {load_s / 60:.1f} min of load"
    )
    started = time.monotonic()

    def measure(tmp: Path) -> dict[str, Any]:
        pin, server_core, wrk_core = cores()
        from sessions.keys import generate_key

        env = {**os.environ, "SESSION_KEYS": generate_key(), "PYTHONUNBUFFERED": "1"}
        done = [measure_store(store, opts, tmp, env, (server_core, wrk_core)) for store in stores]
        return {"pinned": pin, "server_core": server_core, "wrk_core": wrk_core, "stores": done}

    outcome = run_measured("tornado-sessions-store-size-", measure)
    if isinstance(outcome, int):
        return outcome
    import tornado

    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "small": opts.small, "big": opts.big, "pairs": opts.pairs, "duration_s": opts.duration,
        "warmup_s": opts.warmup, "connections": opts.connections, "target": TARGET,
        "pinned": outcome["pinned"], "server_core": outcome["server_core"], "wrk_core": outcome["wrk_core"],
        "loadavg_before": load_start, "loadavg_after": os.getloadavg()[0],
        "cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
        "tornado": tornado.version,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
    }  # fmt: skip
    rows = [summarize(fig) for s in outcome["stores"] for fig in s["figures"]]
    stores_out = [{k: v for k, v in s.items() if k != "figures"} for s in outcome["stores"]]
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps({"meta": meta, "stores": stores_out, "results": rows}, indent=2) + "\n")
    print(markdown(rows, stores_out, meta))
    log(f"\nraw results: {opts.output}")
    for s in stores_out:
        for size, errs in s["server_errors"].items():
            if errs["count"]:
                log(
                    f"warning: {s['store']} {size} server logged {errs['count']} error lines, last:\n{errs['sample']}"
                )
    busy = [r["name"] for r in rows if r["max_foreign_cpu_cores"] > 0.25]
    if busy:
        log(f"warning: other processes used over 0.25 core during some runs of: {', '.join(busy)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Accounts under load: bcrypt logins beside session reads, and "log out everywhere" as the store grows.

    .venv/bin/python bench/bench_accounts.py            # about 4 minutes on 2 cores
    .venv/bin/python bench/bench_accounts.py --only logins --rounds 5
    .venv/bin/python bench/bench_accounts.py --only logout --backends sqlite

1. **Logins beside reads.** The demo server (``bench/app_server.py``: server.py's own
   config and serve loop, logging at WARNING) on SQLite with bcrypt at the default cost
   12 and login limits high enough never to refuse, pinned to the first CPU. wrk reads
   one session (``GET /api/counter`` with its cookie) from the second CPU; each round
   measures the readers' p99 alone, then again while ``--logins`` clients log in back to
   back (``POST /auth/login`` with the right password, each a full bcrypt check).
   Reported: the ratio of the medians of the two p99s (target <= 3x). The same is then
   measured once on a server whose hasher runs bcrypt on the event loop (this script
   with ``--serve-on-loop``, which patches :class:`accounts.passwords.PasswordHasher`),
   to show what the thread pool buys.
2. **Log out everywhere.** ``SessionManager.destroy_user_sessions`` timed directly
   against the store for a user with 10 sessions among 1,000 and among 100,000 other
   sessions (two per other user, filled with ``store.create`` in batches), on SQLite
   and on MongoDB (FerretDB, built and started as the tests do; or ``MONGODB_URL``);
   the median of ``--logout-runs`` runs, the user's 10 sessions made anew before each.
   Target: the larger store costs at most 2x the smaller.

Prints Markdown tables on stdout (progress on stderr); bench/README.md explains them.
Every server it starts is stopped on the way out, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from run import (  # noqa: E402
    SERVER_ENV_DROP,
    Workload,
    interruptible,
    make_session,
    run_wrk,
    start_server,
    stop_servers,
    wait_ready,
)

from sessions.keys import KeyRing, generate_key  # noqa: E402
from tests.fixtures.support import cookies_from  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench password 12345"
UNLIMITED = "1000000/60"
USER_SESSIONS = 10


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- 1. logins beside reads -----------------------------------------------------------
def server_args(tmp: Path, variant: str | None, cost: int) -> list[str]:
    data = tmp / (variant or "pool")
    data.mkdir(parents=True, exist_ok=True)
    entry = [str(Path(__file__).resolve()), "--serve-variant", variant] if variant else [str(BENCH / "app_server.py")]
    return [
        *entry, "--store", f"sqlite:///{data / 'sessions.sqlite3'}", "--data-dir", str(data),
        "--bcrypt-cost", str(cost), "--login-limit", UNLIMITED, "--login-account-limit", UNLIMITED,
        "--register-limit", UNLIMITED,
    ]  # fmt: skip


def json_call(port: int, method: str, path: str, xsrf: str, data: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf, "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(data), headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def xsrf_token(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/auth/profile")
        response = conn.getresponse()
        response.read()
        return cookies_from(response.getheaders())["_xsrf"]
    finally:
        conn.close()


class LoginLoop:
    """``clients`` threads logging in back to back until stopped; counts what they did."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.xsrf = xsrf_token(port)
        self.stop_flag = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            try:
                status, body = json_call(self.port, "POST", "/auth/login", self.xsrf, {"email": EMAIL, "password": PASSWORD})
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200:
                self.failures.append(f"{status} {body[:200]}")
                self.stop_flag.set()
            self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> LoginLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(60)


def prepare(port: int) -> dict[str, str]:
    """Register the user (one bcrypt hash) and make the readers' session."""
    status, body = json_call(port, "POST", "/auth/register", xsrf_token(port), {"email": EMAIL, "name": "Bench", "password": PASSWORD})
    if status != 201:
        raise RuntimeError(f"register gave {status} {body[:200]}")
    return make_session(port)


async def fixed_rate_reads(port: int, headers: dict[str, str], rate: float, seconds: float) -> dict[str, Any]:
    """``GET /api/counter`` at a fixed rate (open loop) on up to 64 keep-alive connections.

    Each request's latency runs from the moment it was *due*, so a server that stalls
    is charged for every request that should have gone out meanwhile (no coordinated
    omission: a closed-loop client such as wrk stops sending while the server stalls).
    """
    loop = asyncio.get_running_loop()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = f"GET /api/counter HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}\r\n".encode()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened: list[asyncio.StreamWriter] = []
    latencies: list[float] = []
    errors: list[str] = []

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if idle.empty() and len(opened) < 64:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
            return reader, writer
        return await idle.get()

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - loop.time()))
        reader, writer = await connection()
        writer.write(raw)
        header = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in header.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
        latencies.append(loop.time() - due)
        if not header.startswith(b"HTTP/1.1 200") or b'"count"' not in body or b"Set-Cookie: sid" in header:
            errors.append(header.decode("latin-1")[:200])
        idle.put_nowait((reader, writer))

    start = loop.time() + 0.05
    count = int(rate * seconds)
    try:
        await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    finally:
        for writer in opened:
            writer.close()
    if errors:
        raise RuntimeError(f"fixed-rate reads failed: {errors[:2]}")
    latencies.sort()
    return {"p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "rps": count / seconds, "max_ms": 1000 * latencies[-1]}  # fmt: skip


READERS = ("rate", "wrk")


def measure_logins(opts: argparse.Namespace, tmp: Path, variant: str | None, rounds: int) -> dict[str, Any]:
    """Per round and per kind of reader: the readers' figures alone, then during logins."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP}
    env["SESSION_KEYS"] = generate_key()
    name = variant or "thread_pool"
    server = start_server(name, server_args(tmp, variant, opts.cost), tmp, 0, env)
    reads = Workload("session_read", "reads", name, "GET", "/api/counter", "session_read", session=True)
    runs: dict[str, list[dict[str, Any]]] = {f"{r}_{when}": [] for r in READERS for when in ("alone", "busy")}
    logins: dict[str, list[float]] = {"rate": [], "wrk": []}

    def read(kind: str) -> dict[str, Any]:
        if kind == "rate":
            return asyncio.run(fixed_rate_reads(server.port, headers, opts.rate, opts.duration))
        return run_wrk(reads, server, headers, opts.duration, opts.connections, 1)

    affinity = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {1})  # the load generators share the second CPU with wrk
        wait_ready(server, "/health")
        headers = prepare(server.port)
        run_wrk(reads, server, headers, 1, opts.connections, 1)  # warm up
        for i in range(rounds):
            say(f"  {name} round {i + 1}/{rounds} (load {load_average()})")
            for kind in READERS if i % 2 == 0 else READERS[::-1]:
                runs[f"{kind}_alone"].append(read(kind))
                with LoginLoop(server.port, opts.logins) as loop:
                    time.sleep(1.0)  # the logins are under way
                    done_before, t0 = len(loop.latencies), time.perf_counter()
                    runs[f"{kind}_busy"].append(read(kind))
                    logins[kind].append((len(loop.latencies) - done_before) / (time.perf_counter() - t0))
                if loop.failures:
                    raise RuntimeError(f"logins failed: {loop.failures[:3]}")
    finally:
        os.sched_setaffinity(0, affinity)
        stop_servers([server])
    result: dict[str, Any] = {"rounds": rounds, "runs": runs, "logins_per_s": logins}
    for kind in READERS:
        alone = statistics.median(r["p99_ms"] for r in runs[f"{kind}_alone"])
        busy = statistics.median(r["p99_ms"] for r in runs[f"{kind}_busy"])
        result[kind] = {
            "alone_p99": alone, "busy_p99": busy, "ratio": busy / alone,
            "alone_rps": statistics.median(r["rps"] for r in runs[f"{kind}_alone"]),
            "busy_rps": statistics.median(r["rps"] for r in runs[f"{kind}_busy"]),
            "logins_per_s": statistics.median(logins[kind]),
        }  # fmt: skip
    return result


def serve_variant(variant: str, argv: list[str]) -> None:
    """server.py with its password hasher patched, for contrast with the demo as it is.

    ``on_loop``: bcrypt on the event loop (what the thread pool is there to avoid).
    """

    import server
    from accounts.passwords import MAX_LENGTH, PasswordHasher

    if variant == "on_loop":

        async def hash_on_loop(self: PasswordHasher, password: str) -> str:
            return self._hash_sync(password)

        async def verify_on_loop(self: PasswordHasher, password: str, stored: str | None) -> bool:
            if len(password) > MAX_LENGTH:
                return False
            return self._verify_sync(password, stored if stored is not None else self._dummy) and stored is not None

        PasswordHasher.hash = hash_on_loop  # type: ignore[method-assign]
        PasswordHasher.verify = verify_on_loop  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args, config = server.parse_config(argv)
    asyncio.run(server.serve(args, config))


def logins_table(results: dict[str, dict[str, Any]], opts: argparse.Namespace) -> str:
    lines = [
        f"Readers: `GET /api/counter` with a session, {opts.duration} s per run, either at a fixed {opts.rate:g}/s "
        f"(open loop, latency from the time each request was due) or as fast as wrk -t1 -c{opts.connections} goes "
        f"(saturating the server's core); logins: {opts.logins} clients back to back, bcrypt cost {opts.cost}; "
        "SQLite store; server on CPU 0, clients on CPU 1; medians of the rounds.",
        "",
        "| bcrypt runs | readers | rounds | p99 alone | p99 during logins | ratio | reads/s during | logins/s | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    labels = {
        "thread_pool": "in the thread pool, one thread per usable CPU, at nice 10 (the demo as it is)",
        "on_loop": "on the event loop (patched: what the pool avoids)",
    }
    for name, r in results.items():
        for kind in READERS:
            k = r[kind]
            target = "≤ 3×: " + ("met" if k["ratio"] <= 3 else "missed") if name != "on_loop" else "(contrast)"
            readers = f"{opts.rate:g}/s fixed" if kind == "rate" else "wrk, saturating"
            lines.append(
                f"| {labels[name]} | {readers} | {r['rounds']} | {k['alone_p99']:.2f} ms | {k['busy_p99']:.2f} ms "
                f"| {k['ratio']:.1f}× | {k['busy_rps']:.0f} | {k['logins_per_s']:.1f} | {target} |"
            )
    return "\n".join(lines)


# -- 2. log out everywhere ------------------------------------------------------------
def other_record(i: int, now: float) -> Any:
    from sessions.stores.base import Record

    return Record({"counter": "3", "theme": '"dark"'}, now, now, now + 3600, f"other-{i // 2}", {"ip": "127.0.0.1", "ua": "bench"})


async def fill(store: Any, count: int, batch: int) -> None:
    """``count`` sessions of other users (two each), ``batch`` concurrent ``store.create`` calls at a time."""
    now = time.time()
    for start in range(0, count, batch):
        await asyncio.gather(*(store.create(secrets.token_hex(32), other_record(i, now)) for i in range(start, min(start + batch, count))))


async def fill_mongo(store: Any, count: int, batch: int) -> None:
    """As :func:`fill`, but with ``insert_many`` of the documents ``store.create`` writes.

    FerretDB v1 upserts about 300 sessions a second one by one (100,000 would take
    minutes); the documents are checked to have the shape of the store's own.
    """
    now = time.time()
    probe = secrets.token_hex(32)
    await store.create(probe, other_record(0, now))
    template = await store.collection.find_one({"_id": probe})
    for start in range(0, count, 1000):
        docs = []
        for i in range(start, min(start + 1000, count)):
            doc = {**template, "_id": secrets.token_hex(32), "user_id": f"other-{i // 2}"}
            docs.append(doc)
        await store.collection.insert_many(docs, ordered=False)
    await store.destroy(probe)
    sample = await store.collection.find_one({"user_id": "other-1"})
    if sample is None or set(sample) != set(template) or (await store.load(sample["_id"])) is None:
        raise RuntimeError("the bulk-filled documents are not the store's own shape")


async def time_logout_everywhere(store: Any, others: int, runs: int, batch: int) -> dict[str, Any]:
    from sessions import SessionManager
    from sessions.stores.base import Record

    await store.setup()
    t0 = time.perf_counter()
    from sessions.stores.mongo import MongoStore

    await (fill_mongo if isinstance(store, MongoStore) else fill)(store, others, batch)
    fill_s = time.perf_counter() - t0
    manager = SessionManager(store, KeyRing.from_text(generate_key()))
    timings = []
    for run in range(runs + 1):  # the first run warms up (caches, connections) and is not counted
        now = time.time()
        user = f"target-{run}"
        await asyncio.gather(*(
            store.create(secrets.token_hex(32), Record({"counter": "1"}, now, now, now + 3600, user, {"ip": "127.0.0.1"}))
            for _ in range(USER_SESSIONS)
        ))  # fmt: skip
        started = time.perf_counter()
        ended = await manager.destroy_user_sessions(user)
        elapsed = time.perf_counter() - started
        if ended != USER_SESSIONS or await store.list_user(user):
            raise RuntimeError(f"destroy_user_sessions ended {ended} of {USER_SESSIONS} sessions")
        if run:
            timings.append(elapsed)
    if len(await store.list_user("other-0")) != 2:
        raise RuntimeError("another user's sessions were touched")
    return {"median_ms": 1000 * statistics.median(timings), "min_ms": 1000 * min(timings),
            "max_ms": 1000 * max(timings), "runs": len(timings), "fill_s": fill_s}  # fmt: skip


async def logout_backend(name: str, opts: argparse.Namespace, tmp: Path, mongo_url: str | None) -> dict[int, Any]:
    results = {}
    for others in opts.sizes:
        say(f"  {name}: {others:,} other sessions (load {load_average()})")
        store: Any
        if name == "sqlite":
            from sessions.stores.sqlite import SQLiteStore

            store = SQLiteStore(tmp / f"logout-{others}-{uuid.uuid4().hex[:6]}.sqlite3")
        else:
            from sessions.stores.mongo import MongoStore

            assert mongo_url is not None
            # FerretDB v1 scans the collection for every query: at 100,000 sessions one call
            # takes seconds, past the store's default 2 s timeout.
            store = MongoStore(mongo_url, database=f"bench_logout_{uuid.uuid4().hex[:8]}", socket_timeout=600)
        try:
            results[others] = await time_logout_everywhere(store, others, opts.logout_runs, opts.batch)
            if name == "mongo":
                plan = await store.collection.find({"user_id": "other-1"}).explain()
                results[others]["plan"] = {k: plan.get(k) for k in ("queryPlanner", "filterPushdown") if k in plan}
                await store.collection.database.client.drop_database(store.collection.database.name)
        finally:
            await store.close()
        say(f"    median {results[others]['median_ms']:.2f} ms (fill {results[others]['fill_s']:.1f} s)")
    return results


@contextlib.contextmanager
def mongo_server(tmp: Path) -> Any:
    if os.environ.get("MONGODB_URL"):
        yield os.environ["MONGODB_URL"]
        return
    from tests.fixtures.mongo_fixture import MongoServerProcess, build_mongo_server

    say("  building/starting the FerretDB test server")
    server = MongoServerProcess(build_mongo_server(), tmp / "mongo-data").start()
    try:
        yield server.url
    finally:
        server.stop()


def logout_table(results: dict[str, dict[int, Any]], sizes: list[int]) -> str:
    small, large = sizes[0], sizes[-1]
    lines = [
        f"`SessionManager.destroy_user_sessions(user)` for a user with {USER_SESSIONS} sessions; median of the runs.",
        "",
        f"| store | among {small:,} others | among {large:,} others | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        ratio = r[large]["median_ms"] / r[small]["median_ms"]
        label = {"sqlite": "SQLite", "mongo": "MongoDB (FerretDB v1)"}.get(name, name)
        lines.append(
            f"| {label} | {r[small]['median_ms']:.2f} ms | {r[large]['median_ms']:.2f} ms | {ratio:.2f}× "
            f"| ≤ 2×: {'met' if ratio <= 2 else 'missed'} |"
        )
    for name, r in results.items():
        if "plan" in r[large]:
            lines += ["", f"{name} query plan of the user filter: `{json.dumps(r[large]['plan'], default=str)}`"]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("logins", "logout"), help="run one part only")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alone/during-logins reads (default 3)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per reader run (default 8)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--rate", type=float, default=300, help="fixed-rate readers: requests/s (default 300)")
    parser.add_argument("--logins", type=int, default=2, help="concurrent login clients (default 2)")
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost (default 12, the demo's default)")
    parser.add_argument("--no-variants", action="store_true", help="only the demo as it is (no patched servers)")
    parser.add_argument("--backends", default="sqlite,mongo", help="logout stores (default sqlite,mongo)")
    parser.add_argument("--sizes", default="1000,100000", help="other sessions in the store (default 1000,100000)")
    parser.add_argument("--logout-runs", type=int, default=9, help="timed runs per store size (default 9)")
    parser.add_argument("--batch", type=int, default=500, help="concurrent store.create calls when filling")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "accounts.json", help="raw figures (JSON)")
    opts = parser.parse_args(argv)
    opts.sizes = sorted(int(s) for s in opts.sizes.split(","))
    return opts


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve-variant"]:
        serve_variant(argv[1], argv[2:])
        return 0
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("sessions").setLevel(logging.WARNING)
    say(f"load average at start: {load_average()}")
    raw: dict[str, Any] = {"load_at_start": load_average(), "cpus": os.cpu_count(), "options": vars(opts)}

    def emit(*lines: str) -> None:  # each table as soon as it is measured; the raw figures too
        print("\n".join(lines), flush=True)
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.write_text(json.dumps(raw, indent=1, default=str))

    emit(f"Load average (1, 5, 15 min) at start: {raw['load_at_start']}; {os.cpu_count()} CPUs.")
    with interruptible(), tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp_name:
        tmp = Path(tmp_name)
        if opts.only in (None, "logins"):
            say("logins beside reads")
            results = {"thread_pool": measure_logins(opts, tmp, None, opts.rounds)}
            if not opts.no_variants:
                results["on_loop"] = measure_logins(opts, tmp, "on_loop", 1)
            raw["logins"] = results
            emit("", "### Logins (bcrypt) beside session reads", "", logins_table(results, opts),
                 "", f"Load average after this part: {load_average()}.")  # fmt: skip
        if opts.only in (None, "logout"):
            say("log out everywhere")
            logout: dict[str, dict[int, Any]] = raw.setdefault("logout", {})
            for backend in opts.backends.split(","):
                if backend == "mongo":
                    with mongo_server(tmp) as url:
                        logout["mongo"] = asyncio.run(logout_backend("mongo", opts, tmp, url))
                else:
                    logout[backend] = asyncio.run(logout_backend(backend, opts, tmp, None))
            emit("", "### Log out everywhere", "", logout_table(logout, opts.sizes),
                 "", f"Load average after this part: {load_average()}.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


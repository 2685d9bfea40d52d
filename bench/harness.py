"""What the HTTP benchmarks share: pinning, servers, CPU accounting, databases, wrk runs, signals.

bench/run.py, bench/store_size.py and bench/peers/run.py measure with it, and the
peers' servers (bench/peers/*_server.py) wait for SIGINT/SIGTERM with it. Every figure
is a ratio of runs on the same machine, so what else used the CPU during a run
(``foreign_cpu_cores``) is measured, not guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = ROOT / "bench" / "wrk.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: Process ids of the database servers this run started (PostgreSQL: the postmaster,
#: whose backends are counted when each run starts and ends), so that their CPU is not
#: reported as other people's load.
DATABASE_PIDS: list[int] = []
POSTMASTERS: list[int] = []


# -- processes and cores ------------------------------------------------------------
def pinned(cmd: list[str], core: int | None) -> list[str]:
    return cmd if core is None else ["taskset", "-c", str(core), *cmd]


def cores() -> tuple[bool, int | None, int | None]:
    """(pinned, the servers' core, wrk's and the databases' core): the first two cores when taskset exists."""
    available = sorted(os.sched_getaffinity(0))
    pin = len(available) >= 2 and shutil.which("taskset") is not None
    if not pin:
        print("warning: fewer than 2 cores or no taskset: servers and wrk share the CPU", file=sys.stderr)
        return False, None, None
    return True, available[0], available[1]


@dataclass
class Server:
    """A benchmark server process on a free loopback port, its output in ``log_path``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start_server(name: str, args: list[str], tmp: Path, core: int | None, env: dict[str, str]) -> Server:
    """Start ``python ARGS --port N`` in its own process group (Ctrl-C reaches only us; we stop it)."""
    from tests.fixtures.support import free_port

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


def wait_ready(server: Server, path: str, timeout: float = 20.0) -> None:
    """Until ``GET path`` answers 200; raises with the server's log when it exits or never does."""
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
        errors = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln]
        return {"count": len(errors), "sample": "\n".join(lines[-8:]) if errors else None}
    return {"count": 0, "sample": None}


def make_login_session(port: int) -> dict[str, str]:
    """A logged-in session on login_server.py (``POST /login``): the headers that carry its cookie."""
    from tests.fixtures.support import cookies_from

    status, body, set_cookie = request(port, "POST", "/login")
    sid = cookies_from(set_cookie).get("sid")
    if status != 200 or not sid:
        raise RuntimeError(f"POST /login gave {status} {body!r} and sid={sid!r}")
    return {"Cookie": f"sid={sid}"}


def stop_servers(servers: list[Any]) -> None:
    """SIGTERM (the servers shut down cleanly and close their stores), then SIGKILL."""
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


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, str, list[str]]:
    """One request by hand: (status, body text, Set-Cookie values). A POST without a body sends an empty one."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if body is None and method == "POST":
            body = b""
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), resp.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


async def until_stopped() -> None:
    """Return on SIGINT or SIGTERM (a benchmark server's whole life after listening)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


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


def run_measured(prefix: str, measure: Callable[[Path], dict[str, Any]]) -> dict[str, Any] | int:
    """``measure(tmp)`` in a fresh temporary folder, interruptible; an exit code when it did not finish."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with interruptible():
            return measure(tmp)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"error: {exc}\nservers stopped", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- databases -----------------------------------------------------------------------
@contextlib.contextmanager
def databases(names: set[str], tmp: Path, core: int | None) -> Iterator[dict[str, str]]:
    """Redis, a three-node Redis Cluster and PostgreSQL as needed (the test fixtures'
    classes), pinned to wrk's core by their own process ids (never by name: other
    people's servers may run). Yields name -> URL."""
    from tests.fixtures.postgres_fixture import PostgresServer
    from tests.fixtures.redis_fixture import RedisCluster, RedisServerProcess

    started: list[Any] = []
    urls: dict[str, str] = {}
    pids: list[str] = []
    try:
        if "redis" in names:
            redis = RedisServerProcess(tmp / "redis").start()
            started.append(redis)
            urls["redis"] = redis.url
            pids += _pids(f"redis-server 127.0.0.1:{redis.port}")
        if "redis_cluster" in names:
            cluster = RedisCluster(tmp / "redis-cluster").start()
            started.append(cluster)
            urls["redis_cluster"] = cluster.url
            for node in cluster.servers:
                pids += _pids(f"redis-server 127.0.0.1:{node.port}")
        if "postgres" in names:
            pg = PostgresServer()
            started.append(pg)
            pg.start()
            urls["postgres"] = pg.url
            postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
            POSTMASTERS[:] = [postmaster]
            pids += [str(postmaster), *_children(postmaster)]
        DATABASE_PIDS[:] = [int(p) for p in pids]
        if core is not None:
            for pid in pids:
                subprocess.run(["taskset", "-apc", str(core), pid], capture_output=True, check=False)
        yield urls
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                (server.destroy if hasattr(server, "destroy") else server.stop)()


def _pids(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


# -- CPU -----------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """CPU time of a process (all its threads) so far: nanoseconds from each thread's
    /proc/PID/task/TID/schedstat, or clock ticks from /proc/PID/stat without schedstats.

    CPU time per request is what the benchmarks compare (see :func:`run_together`): with
    a server sharing a core for a few seconds, 10 ms ticks would cost a percent of
    precision. A thread that exits between two readings takes its time with it; the
    servers measured keep theirs (event loop, SQLite's worker thread).
    """
    with contextlib.suppress(OSError, ValueError):
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just exited
                total += int((task / "schedstat").read_text().split()[0])
        if total:
            return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (all cores, steal included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def database_cpu_seconds() -> float:
    pids = set(DATABASE_PIDS)
    for postmaster in POSTMASTERS:
        pids.update(int(p) for p in _children(postmaster))
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(pid)
    return total


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# -- wrk -----------------------------------------------------------------------------
@dataclass
class Load:
    """One wrk load: which server process it measures, and what it asks."""

    url: str
    pid: int
    method: str
    headers: dict[str, str]
    label: str


def run_wrk(
    url: str, *, pid: int, method: str, headers: dict[str, str], label: str, seconds: int, connections: int,
    core: int | None,
) -> dict[str, Any]:  # fmt: skip
    """One wrk run against the server ``pid``; refuses results with any non-2xx answer or socket error."""
    return run_together([Load(url, pid, method, headers, label)], seconds=seconds, connections=connections,
                        core=core)[0]  # fmt: skip


def run_together(loads: list[Load], *, seconds: int, connections: int, core: int | None) -> list[dict[str, Any]]:
    """One wrk per load, all at the same time for ``seconds``; each load's figures, in order.

    Servers pinned to one core and loaded over the same seconds share whatever the host
    does to that core: on this kind of machine its speed moves by up to ×1.7 within
    seconds (a bare handler alone: 1,850 to 3,400 req/s in consecutive 1 s runs), and
    it moves both alike. Their CPU time per request then keeps its true ratio, which runs
    taken one after the other cannot promise. ``foreign_cpu_cores`` is what the rest of
    the machine (not these servers, not wrk, not the databases) used meanwhile.
    """
    cpu0 = [cpu_seconds(load.pid) for load in loads]
    busy0, wrk0, db0 = busy_cpu_seconds(), children_cpu_seconds(), database_cpu_seconds()
    procs = []
    for load in loads:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT)]
        for name, value in load.headers.items():
            cmd += ["-H", f"{name}: {value}"]
        procs.append(subprocess.Popen(
            pinned([*cmd, load.url], core), env={**os.environ, "BENCH_METHOD": load.method},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    outputs = [proc.communicate(timeout=seconds + 30) for proc in procs]
    cpu_used = [cpu_seconds(load.pid) - before for load, before in zip(loads, cpu0, strict=True)]
    db_used = database_cpu_seconds() - db0  # backends that exited in between are missed: small
    # What the machine did besides these servers, wrk and the databases: someone else's work.
    foreign = busy_cpu_seconds() - busy0 - sum(cpu_used) - (children_cpu_seconds() - wrk0) - db_used
    results = []
    for load, proc, (stdout, stderr), used in zip(loads, procs, outputs, cpu_used, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr or stdout}")
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{stdout}")
        raw = json.loads(line[len("BENCH_JSON ") :])
        if any(raw["errors"].values()):
            raise RuntimeError(
                f"{load.label} {load.method}: wrk saw errors {raw['errors']} (non-2xx or socket); figures invalid"
            )
        elapsed = raw["duration_us"] / 1e6
        requests = max(raw["requests"], 1)
        results.append({
            "rps": raw["requests"] / elapsed,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "requests": raw["requests"],
            "server_cpu_us_per_request": 1e6 * used / requests,
            "database_cpu_us_per_request": 1e6 * db_used / requests,
            "foreign_cpu_cores": max(foreign, 0.0) / elapsed,
        })  # fmt: skip
    return results


def pair(
    round_no: int, name: str, bare: dict[str, Any], app: dict[str, Any], *, together: bool = False
) -> dict[str, Any]:
    """A bare run and an app run as one ratio (printed to stderr).

    Runs taken back to back compare requests/s; runs taken together (on one core, see
    :func:`run_together`) compare CPU per request, bare over app: with the server's core
    saturated, as it is under wrk's 16 connections, requests/s alone is one over CPU per
    request, so the two ratios are the same quantity, the second without the host's drift.
    """
    cost_ratio = bare["server_cpu_us_per_request"] / app["server_cpu_us_per_request"]
    result = {
        "bare": bare, "app": app, "ratio": cost_ratio if together else app["rps"] / bare["rps"],
        "cpu_ratio": cost_ratio, "together": together,
    }  # fmt: skip
    print(
        f"round {round_no} {name:<28} bare {bare['rps']:>7,.0f}  app {app['rps']:>7,.0f} req/s"
        f"  ({bare['server_cpu_us_per_request']:.0f} / {app['server_cpu_us_per_request']:.0f} µs CPU per request)"
        f"  ratio {result['ratio']:.3f}  other load {max(bare['foreign_cpu_cores'], app['foreign_cpu_cores']):.2f} cores",
        file=sys.stderr,
    )
    return result


def verdict(median: float, low: float, high: float, target: float | None) -> str | None:
    """met / missed, or undecided when the spread is wider than the gap to the target."""
    if target is None:
        return None
    if high - low > abs(median - target):
        return "undecided"
    return "met" if median >= target else "missed"


def placement(meta: dict[str, Any]) -> str:
    """Where the servers and the load ran, for a table's note."""
    if not meta["pinned"]:
        return "not pinned"
    return f"servers on core {meta['server_core']}, wrk and the databases on core {meta['wrk_core']}"

"""Faults under load, every store: the demo server keeps its promises while its database fails.

Each test starts ``server.py`` as a real process on one store, runs a small load
(a few clients, each with its own session, doing ``POST /api/counter`` and reads in
a loop), applies one fault, holds it, removes it, and checks:

* every response is 2xx or 503, and every 503 carries Retry-After (no 500);
* no request takes longer than the store's timeout (2 s) plus a margin (no hang);
* ``/ready`` answers 503 during the fault and 200 after it;
* the load succeeds again after the fault, without restarting the app;
* every write a client saw acknowledged (the counter value of a 2xx) is still there;
* the app's log has no "Traceback".

Faults: Redis killed (SIGKILL), stopped (SIGSTOP), slowed and cut (Toxiproxy); a
Redis Cluster node killed; PostgreSQL stopped, SIGSTOPped and cut; FerretDB cut and
SIGSTOPped; SQLite made read-only (the immutable attribute: refused even to root,
even on an open file), full (a size-limited tmpfs in a private mount namespace) and
deleted (moved off its path and back; unlinked); and the app itself SIGKILLed during
writes, then restarted on the same SQLite file / Redis with every acknowledged
session intact. The Redis servers here run with AOF ``appendfsync always``:
"acknowledged" means "durable" only on a Redis configured that way (without
persistence a killed Redis forgets everything, as documented).

Backends are gated like the other fault tests (REQUIRE_REDIS, REQUIRE_POSTGRES,
REQUIRE_MONGO, REQUIRE_TOXIPROXY turn a skip into a failure). The numbers (time
to the first 503, to /ready 503, to recovery) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.redis_fixture import (
    RedisCluster,
    RedisServerProcess,
    _check_binaries,
)
from tests.fixtures.support import cookies_from, free_port, stop_process
from tests.fixtures.toxiproxy_fixture import Toxiproxy

ROOT = Path(__file__).resolve().parents[2]

#: The stores' own timeouts (Redis, PostgreSQL, MongoDB: 2 s).
STORE_TIMEOUT = 2.0
#: No request may take longer than this: the store's timeout, a retry's connect, slack
#: for a 2-core machine shared with other test runs.
HANG_LIMIT = STORE_TIMEOUT + 3.0
#: How long each fault is held.
HOLD = 3.0
#: Recovery must come within this after the fault is removed.
RECOVER_WITHIN = 15.0
CLIENTS = 4


# -- the demo server as a process -------------------------------------------------------------


def _request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
             timeout: float = HANG_LIMIT + 5) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body="" if method == "POST" else None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()} | {
            "set-cookie-list": json.dumps([v for k, v in response.getheaders() if k.lower() == "set-cookie"])
        }, response.read()
    finally:
        conn.close()


class App:
    """server.py on one store; its output (stdout + stderr) goes to a log file."""

    def __init__(self, data_dir: Path, store: str | None, *, wrap: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-app.log"
        self.args = [*(wrap or []), sys.executable, str(ROOT / "server.py"), "--port", str(self.port),
                     "--data-dir", str(data_dir), *(["--store", store] if store else [])]  # fmt: skip
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("SESSION_KEYS", "SESSION_STORE", "MONGODB_URL", "PRODUCTION")}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> App:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if _request(self.port, "GET", "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"server did not start:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self) -> int:
        return _request(self.port, "GET", "/ready")[0]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused, reset, client timeout)
    retry_after: bool
    count: int | None


@dataclass
class Client:
    """One browser: its own session cookie, increments its counter, reads it back."""

    app: App
    cookies: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    acked: int = 0  # the last counter value a 2xx POST returned
    attempts: int = 0  # POSTs sent after the last acknowledged one... and before (all of them)

    def _call(self, method: str) -> Call:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if method == "POST" and "_xsrf" in self.cookies:
            headers["X-XSRFToken"] = self.cookies["_xsrf"]
        started = time.monotonic()
        try:
            status, headers_in, body = _request(self.app.port, method, "/api/counter", headers)
        except OSError:
            call = Call(method, started, time.monotonic(), 0, False, None)
        else:
            for header in json.loads(headers_in["set-cookie-list"]):
                self.cookies.update(cookies_from([header]))
            count = json.loads(body)["count"] if status == 200 else None
            call = Call(method, started, time.monotonic(), status, "retry-after" in headers_in, count)
        self.calls.append(call)
        return call

    def step(self) -> None:
        if "_xsrf" not in self.cookies:
            self._call("GET")
            return
        self.attempts += 1
        call = self._call("POST")
        if call.status == 200 and call.count is not None:
            assert call.count > self.acked, f"counter went back: {call.count} after {self.acked}"
            self.acked = call.count
        self._call("GET")

    def stored_count(self) -> int:
        call = self._call("GET")
        assert call.status == 200, f"GET /api/counter answered {call.status} after recovery"
        assert call.count is not None
        return call.count


class Load:
    def __init__(self, app: App, clients: int = CLIENTS, pause: float = 0.02) -> None:
        self.clients = [Client(app) for _ in range(clients)]
        self.pause = pause
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self, client: Client) -> None:
        while not self._stop.is_set():
            client.step()
            self._stop.wait(self.pause)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self.clients]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(HANG_LIMIT + 10)
        assert not any(t.is_alive() for t in self._threads), "a load client is stuck"

    @property
    def calls(self) -> list[Call]:
        return [call for client in self.clients for call in client.calls]

    def wait_acked(self, since: float, timeout: float) -> float | None:
        """When every client has had a POST started after ``since`` acknowledged, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [max((c.ended for c in cl.calls if c.method == "POST" and c.status == 200 and c.started >= since),
                        default=None) for cl in self.clients]  # fmt: skip
            if all(t is not None for t in done):
                return max(t for t in done if t is not None)
            time.sleep(0.05)
        return None


# -- one fault, start to finish ----------------------------------------------------------------


@dataclass
class Outcome:
    first_503: float | None  # seconds from the fault to the first 503 of the load
    ready_503: float | None  # ... to the first /ready 503
    ready_back: float  # seconds from removing the fault to /ready 200
    load_back: float  # ... to every client's write acknowledged again
    slowest: float
    counts: dict[int, int]


def run_fault(app: App, name: str, apply: Callable[[], None], remove: Callable[[], None], *,
              hold: float = HOLD, expect_503: bool = True, clients: int = CLIENTS) -> Outcome:  # fmt: skip
    load = Load(app, clients=clients).start()
    try:
        assert load.wait_acked(0, 15) is not None, f"the load never succeeded before the fault:\n{app.log()[-3000:]}"
        time.sleep(0.3)
        applied = time.monotonic()
        apply()
        ready_during: list[int] = []
        ready_503: float | None = None
        while time.monotonic() - applied < hold:
            started = time.monotonic()
            status = app.ready()
            assert time.monotonic() - started < HANG_LIMIT, "/ready hung"
            ready_during.append(status)
            if status == 503 and ready_503 is None:
                ready_503 = time.monotonic() - applied
            time.sleep(0.1)
        removed = time.monotonic()
        remove()
        while True:
            status = app.ready()
            if status == 200:
                ready_back = time.monotonic() - removed
                break
            assert time.monotonic() - removed < RECOVER_WITHIN, f"/ready still {status} after the fault ended"
            time.sleep(0.1)
        back = load.wait_acked(time.monotonic(), RECOVER_WITHIN)
        assert back is not None, f"the load did not recover without a restart:\n{app.log()[-3000:]}"
        load_back = back - removed
    finally:
        load.stop()

    calls = load.calls
    during = [c for c in calls if applied <= c.ended and c.started <= removed]
    statuses = sorted({c.status for c in calls})
    first_503 = min((c.ended - applied for c in during if c.status == 503), default=None)
    slowest = max(c.ended - c.started for c in calls)
    assert set(statuses) <= {200, 503}, f"{name}: statuses {statuses} (want only 200 and 503)"
    assert all(c.retry_after for c in calls if c.status == 503), f"{name}: a 503 without Retry-After"
    assert slowest < HANG_LIMIT, f"{name}: a request took {slowest:.2f} s"
    if expect_503:
        assert first_503 is not None, f"{name}: no 503 during the fault (statuses {statuses})"
        assert first_503 < HANG_LIMIT, f"{name}: first 503 after {first_503:.2f} s"
        assert ready_503 is not None, f"{name}: /ready never said 503 during the fault: {ready_during}"
        assert ready_503 < HANG_LIMIT
    counts = {}
    for i, client in enumerate(load.clients):
        stored = client.stored_count()
        assert client.acked <= stored <= client.attempts, (
            f"{name}: client {i} was acknowledged {client.acked}, the store has {stored}"
            f" after {client.attempts} attempts"
        )
        counts[i] = stored
    assert "Traceback" not in app.log(), f"{name}: a traceback in the app's log:\n{app.log()[-5000:]}"
    outcome = Outcome(first_503, ready_503, ready_back, load_back, slowest, counts)
    n503 = sum(c.status == 503 for c in calls)
    fmt = lambda v: "-" if v is None else f"{v:.2f}s"  # noqa: E731
    print(f"\n[fault] {name}: first 503 {fmt(first_503)}, /ready 503 {fmt(ready_503)}, "
          f"/ready 200 again {fmt(ready_back)}, load back {fmt(load_back)}, slowest {fmt(slowest)}, "
          f"{len(calls)} calls, {n503} 503s, counts {counts}")  # fmt: skip
    return outcome


def kill_app_during_writes(app: App, name: str) -> None:
    """SIGKILL the app mid-load; the restarted app must show every acknowledged count."""
    load = Load(app, pause=0.0).start()
    assert load.wait_acked(0, 15) is not None
    time.sleep(1.0)
    app.kill()
    load.stop()
    acked = [c.acked for c in load.clients]
    assert all(acked), f"no write acknowledged before the kill: {acked}"
    app.start()
    for client in load.clients:
        client.app = app
    stored = [c.stored_count() for c in load.clients]
    print(f"\n[fault] {name}: acknowledged {acked}, after SIGKILL + restart {stored}")
    for client, value in zip(load.clients, stored, strict=True):
        assert client.acked <= value <= client.attempts, (client.acked, value, client.attempts)
    assert "Traceback" not in app.log()


# -- Redis with AOF (an acknowledged write survives SIGKILL) -----------------------------------


class DurableRedis(RedisServerProcess):
    """redis-server with ``appendonly yes``, ``appendfsync always``: nothing acknowledged is lost."""

    persistence = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    _check_binaries()
    server = DurableRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def start(store: str | None, *, data_dir: Path | None = None, wrap: list[str] | None = None) -> App:
        app = App(data_dir or tmp_path / f"app{len(apps)}", store, wrap=wrap)
        apps.append(app)
        return app.start()

    yield start
    for app in apps:
        app.stop()


def _sigstop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.1)


# -- Redis -----------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_killed(durable_redis: DurableRedis, app_factory: Callable[..., App]) -> None:
    app = app_factory(durable_redis.url)
    run_fault(app, "redis SIGKILL", lambda: durable_redis.stop(kill=True), durable_redis.start)


@pytest.mark.redis
def test_redis_sigstop(durable_redis: DurableRedis, app_factory: Callable[..., App]) -> None:
    app = app_factory(durable_redis.url)
    run_fault(app, "redis SIGSTOP", durable_redis.pause, durable_redis.resume)


@pytest.mark.redis
@pytest.mark.parametrize("how", ["slow", "cut"])
def test_redis_through_toxiproxy(how: str, durable_redis: DurableRedis, toxiproxy: Toxiproxy,
                                 app_factory: Callable[..., App]) -> None:  # fmt: skip
    name = f"redis_{how}_{durable_redis.port}"
    port = toxiproxy.proxy(name, f"127.0.0.1:{durable_redis.port}")
    app = app_factory(f"redis://127.0.0.1:{port}/0")
    toxics: list[str] = []
    if how == "slow":  # every reply 3 s late: past the 2 s timeout
        apply = lambda: toxics.append(toxiproxy.add_toxic(name, "latency", latency=3000))  # noqa: E731
        remove = lambda: toxiproxy.remove_toxic(name, toxics.pop())  # noqa: E731
    else:
        apply = lambda: toxiproxy.set_enabled(name, False)  # noqa: E731
        remove = lambda: toxiproxy.set_enabled(name, True)  # noqa: E731
    try:
        run_fault(app, f"redis {how} (toxiproxy)", apply, remove)
    finally:
        toxiproxy.delete(name)


@pytest.mark.redis
def test_redis_cluster_node_killed(tmp_path: Path, app_factory: Callable[..., App]) -> None:
    _check_binaries()
    cluster = RedisCluster(tmp_path / "cluster")
    cluster.servers = [DurableRedis(tmp_path / "cluster" / f"node{i}", cluster=True) for i in range(3)]
    cluster.start()
    try:
        app = app_factory(cluster.url)
        victim = cluster.servers[1]
        # One node holds a third of the slots: with 4 sessions, all of them miss it one
        # run in five. With 16, about one run in 650.
        run_fault(app, "redis cluster node SIGKILL", lambda: victim.stop(kill=True), victim.start, clients=16)
    finally:
        cluster.stop()


@pytest.mark.redis
def test_app_killed_during_writes_redis(durable_redis: DurableRedis, app_factory: Callable[..., App]) -> None:
    kill_app_during_writes(app_factory(durable_redis.url), "app SIGKILL (redis)")


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Any]:
    from tests.fixtures.postgres_fixture import PostgresServer, PostgresUnavailable, _unavailable

    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def run_cut(request: pytest.FixtureRequest, app_factory: Callable[..., App], kind: str, server_port: int,
            url: str) -> None:  # fmt: skip
    """run_fault with the app reaching its database through Toxiproxy, which cuts and restores the link."""
    proxy: Toxiproxy = request.getfixturevalue("toxiproxy")
    name = f"{kind}_{server_port}"
    app = app_factory(url.format(port=proxy.proxy(name, f"127.0.0.1:{server_port}")))
    try:
        run_fault(app, f"{kind} cut (toxiproxy)", lambda: proxy.set_enabled(name, False),
                  lambda: proxy.set_enabled(name, True))  # fmt: skip
    finally:
        proxy.delete(name)


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["stop", "sigstop", "cut"])
def test_postgres(how: str, pg_server: Any, app_factory: Callable[..., App], request: pytest.FixtureRequest) -> None:
    if how == "cut":
        run_cut(request, app_factory, "postgres", pg_server.port, "postgresql://postgres@127.0.0.1:{port}/postgres")
        return
    app = app_factory(pg_server.url)
    if how == "stop":
        run_fault(app, "postgres stopped (pg_ctl -m fast)", pg_server.stop, pg_server.start)
    else:
        run_fault(app, "postgres SIGSTOP", pg_server.pause, pg_server.resume)


# -- MongoDB (FerretDB) ------------------------------------------------------------------------


@pytest.mark.mongo
@pytest.mark.parametrize("how", ["cut", "sigstop"])
def test_mongo(how: str, mongo_server_factory: Callable[[], Any], app_factory: Callable[..., App],
               request: pytest.FixtureRequest) -> None:  # fmt: skip
    server = mongo_server_factory()
    if how == "cut":
        run_cut(request, app_factory, "mongo", server.port, "mongodb://127.0.0.1:{port}/faults")
    else:
        app = app_factory(f"{server.url}faults")
        run_fault(app, "mongo SIGSTOP", server.pause, server.resume)


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite_files(data_dir: Path) -> list[Path]:
    """The database and its WAL, not the ``-shm`` index: SQLite maps that file into memory,
    and an immutable flag on a mapped file turns the next write fault into SIGBUS, which
    kills the process before any code can answer 503 (seen in CI). A disk that refuses
    writes refuses them to the database and the WAL; that is the fault tested."""
    db = data_dir / "sessions.sqlite3"
    return [p for p in (db, Path(f"{db}-wal")) if p.exists()]


def test_sqlite_read_only(tmp_path: Path, app_factory: Callable[..., App]) -> None:
    """The immutable attribute: writes fail with EPERM even for root, even through open files."""
    chattr = shutil.which("chattr")
    probe = tmp_path / "probe"
    probe.write_text("x")
    if chattr is None or subprocess.run([chattr, "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and ext4/tmpfs/xfs)")
    subprocess.run([chattr, "-i", str(probe)], check=True)
    app = app_factory(None)
    files: list[Path] = []

    def apply() -> None:
        files[:] = _sqlite_files(app.data_dir)
        subprocess.run([chattr, "+i", *map(str, files)], check=True)

    try:
        run_fault(app, "sqlite read-only (chattr +i)", apply,
                  lambda: subprocess.run([chattr, "-i", *map(str, files)], check=True))  # fmt: skip
    finally:
        subprocess.run([chattr, "-i", *map(str, files)], capture_output=True)


def test_sqlite_full(tmp_path: Path, app_factory: Callable[..., App]) -> None:
    """The data directory is a 4 MB tmpfs (in the app's own mount namespace), filled up."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run(
        [unshare, "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
        capture_output=True,
    ).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (needs CAP_SYS_ADMIN)")
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    wrap = [unshare, "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=4m,mode=0700 tmpfs "$0" && exec "$@"', str(data_dir)]  # fmt: skip
    app = app_factory(None, data_dir=data_dir, wrap=wrap)
    filler = Path(f"/proc/{app.pid}/root{data_dir}/filler")

    def fill() -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 16, 512):  # big blocks, then the last partial ones
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    run_fault(app, "sqlite full (tmpfs ENOSPC)", fill, filler.unlink)


def test_sqlite_moved_away_and_back(app_factory: Callable[..., App]) -> None:
    app = app_factory(None)
    db = app.data_dir / "sessions.sqlite3"
    away = app.data_dir / "moved-away"
    run_fault(app, "sqlite file moved off its path", lambda: db.rename(away), lambda: away.rename(db))


def test_sqlite_deleted(app_factory: Callable[..., App]) -> None:
    """Unlinked while open: no write may be acknowledged any more, /ready says 503 until a restart."""
    app = app_factory(None)
    load = Load(app).start()
    try:
        assert load.wait_acked(0, 15) is not None
        (app.data_dir / "sessions.sqlite3").unlink()
        deleted = time.monotonic()
        time.sleep(HOLD)
        ready = app.ready()
    finally:
        load.stop()
    late = [c for c in load.calls if c.method == "POST" and c.started > deleted]
    assert late and all(c.status == 503 and c.retry_after for c in late), sorted({c.status for c in late})
    assert ready == 503
    assert "Traceback" not in app.log()
    print(f"\n[fault] sqlite unlinked: {len(late)} POSTs after the unlink, all 503; /ready {ready}")


def test_app_killed_during_writes_sqlite(app_factory: Callable[..., App]) -> None:
    kill_app_during_writes(app_factory(None), "app SIGKILL (sqlite)")

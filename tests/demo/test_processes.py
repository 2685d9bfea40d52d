"""``server.py --processes 2`` as a real process: every feature works across the workers.

The workers share one listening socket, so which worker accepts a connection is up to
the kernel. The tests make it explicit instead of hoping: :meth:`Workers.connect` opens
fresh TCP connections until one is accepted by the wanted worker (``GET /health`` on the
connection says which: ``"worker"`` is Tornado's task id), then sends the request on that
same connection. Each request gets a new connection, and http.client is told not to
reconnect silently, so a request can only be answered by the worker it was meant for.

Also: the memory store refuses several processes, ``/metrics`` adds up the workers'
counters, and stopping the parent (SIGTERM, or killing it outright) leaves no worker
running.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions import generate_key
from tests.fixtures.support import CookieJar, free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
WORKERS = (0, 1)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir() or sys.platform != "linux", reason="needs fork and Linux /proc"
)


def worker_pids(parent: int) -> list[int]:
    """The parent's child processes (its workers), from /proc."""
    pids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return pids


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a dead process nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def metrics_dir(pid: int) -> Path | None:
    """The prometheus multiprocess directory ``pid`` has files of mapped (server.py makes one per run)."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = Path(line.split(maxsplit=5)[-1])
        if path.parent.name.startswith("tornado-sessions-metrics-"):
            return path.parent
    return None


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Workers:
    """server.py with ``--processes N`` on SQLite, and requests to a chosen worker."""

    def __init__(self, data_dir: Path, *args: str, processes: int = 2) -> None:
        self.port = free_port()
        self.processes = processes
        self.args = [
            sys.executable, str(ROOT / "server.py"), "--processes", str(processes), "--bcrypt-cost", "4",
            "--port", str(self.port), "--data-dir", str(data_dir), *args,
        ]  # fmt: skip
        drop = ("SESSION_STORE", "MONGODB_URL", "PRODUCTION", "PROCESSES", "PROMETHEUS_MULTIPROC_DIR")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env["SESSION_KEYS"] = generate_key()
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def start(self) -> Workers:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for worker in range(self.processes):  # every worker answers
                self.connect(worker, timeout=20).close()
            assert wait_until(lambda: len(worker_pids(self.proc.pid)) == self.processes, 5), self.log()
            self.pids = worker_pids(self.proc.pid)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        """SIGTERM to the parent; its exit status (SIGKILL to everything left after 10 s)."""
        if self.proc is None:
            return None
        pids = self.pids or worker_pids(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        for pid in pids:  # never leave a worker behind, whatever the test said
            if not wait_until(lambda pid=pid: not running(pid), 5):
                os.kill(pid, signal.SIGKILL)
        return status

    # -- requests to a chosen worker ------------------------------------------------------
    def connect(self, worker: int, timeout: float = 10.0) -> http.client.HTTPConnection:
        """A new connection that ``worker`` accepted (others are closed and tried again)."""
        deadline = time.monotonic() + timeout
        seen = set()
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                status, _, body = send(conn, "GET", "/health")
            except OSError:
                conn.close()
                if self.proc is not None and self.proc.poll() is not None:
                    break
                time.sleep(0.05)
                continue
            answered = json.loads(body)["worker"] if status == 200 else None
            seen.add(answered)
            if answered == worker:
                conn.auto_open = 0  # reuse this connection or fail: never a silent reconnect
                return conn
            conn.close()
        raise AssertionError(f"worker {worker} accepted no connection (saw {seen}):\n{self.log()}")

    def call(
        self, worker: int, jar: CookieJar, method: str, path: str, data: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection to ``worker``, with the jar's cookies and XSRF token."""
        if method not in ("GET", "HEAD") and "_xsrf" not in jar.cookies:
            self.call(worker, jar, "GET", "/auth/profile")  # hands out the XSRF cookie
        headers = {**jar.header()}
        if method not in ("GET", "HEAD"):
            headers["X-XSRFToken"] = jar.cookies["_xsrf"]
        body = None
        if data is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(data)
        conn = self.connect(worker)
        try:
            status, header_list, payload = send(conn, method, path, body, headers)
            jar.update(header_list)
            # still the same worker's connection (belt and braces: auto_open is off)
            assert json.loads(send(conn, "GET", "/health")[2])["worker"] == worker
        finally:
            conn.close()
        return status, {k.lower(): v for k, v in header_list}, payload


def send(
    conn: http.client.HTTPConnection, method: str, path: str, body: str | None = None, headers: dict | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.getheaders(), response.read()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    # Per-address limits out of the way, so that the per-account limit (default 5/900) is what is tested.
    server = Workers(
        tmp_path_factory.mktemp("workers") / "data", "--login-limit", "1000/300", "--register-limit", "1000/3600"
    ).start()
    yield server
    assert server.stop() == 0, server.log()
    assert not [pid for pid in server.pids if running(pid)]


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def register(workers: Workers, worker: int, jar: CookieJar, email: str) -> dict[str, Any]:
    status, _, body = workers.call(
        worker, jar, "POST", "/auth/register", {"email": email, "name": "Ana", "password": PASSWORD}
    )
    assert status == 201, body
    user: dict[str, Any] = json.loads(body)["user"]
    return user


def login(workers: Workers, worker: int, jar: CookieJar, email: str, password: str = PASSWORD) -> int:
    return workers.call(worker, jar, "POST", "/auth/login", {"email": email, "password": password})[0]


def profile_status(workers: Workers, worker: int, jar: CookieJar) -> int:
    return workers.call(worker, jar, "GET", "/auth/profile")[0]


# -- the tests --------------------------------------------------------------------------


def test_a_session_works_in_both_workers(workers):
    jar = CookieJar()
    user = register(workers, 0, jar, new_email())
    sid = jar.cookies["sid"]
    for worker in WORKERS:
        status, headers, body = workers.call(worker, jar, "GET", "/auth/profile")
        assert status == 200 and json.loads(body)["user"]["id"] == user["id"], (worker, body)
        assert "set-cookie" not in headers  # the same session, not a fresh one
    # writes made by one worker are seen by the other: the counter goes 1, 2, 3, 4
    counts = [json.loads(workers.call(w, jar, "POST", "/api/counter")[2])["count"] for w in (1, 0, 1, 0)]
    assert counts == [1, 2, 3, 4]
    assert jar.cookies["sid"] == sid


def test_the_login_rate_limit_is_shared_by_the_workers(workers):
    email = new_email()
    register(workers, 0, CookieJar(), email)
    attacker = CookieJar()
    # 5 wrong passwords (the default per-account limit), 3 on worker 0 and 2 on worker 1:
    # a per-process counter would still allow 2 more on worker 0 and 3 on worker 1.
    codes = [login(workers, worker, attacker, email, "wrong password!!") for worker in (0, 1, 0, 1, 0)]
    assert codes == [401] * 5
    status, headers, _ = workers.call(
        1, attacker, "POST", "/auth/login", {"email": email, "password": "wrong password!!"}
    )
    assert status == 429 and int(headers["retry-after"]) > 0 and headers["ratelimit-remaining"] == "0"
    # locked on the other worker too, even with the right password, and for a fresh client
    assert login(workers, 0, CookieJar(), email) == 429
    assert login(workers, 1, CookieJar(), email) == 429


def test_logout_everywhere_on_one_worker_ends_sessions_the_other_served(workers):
    email = new_email()
    first = CookieJar()
    register(workers, 0, first, email)
    others = [CookieJar(), CookieJar()]
    assert login(workers, 1, others[0], email) == 200  # logged in (and served) by worker 1
    assert login(workers, 0, others[1], email) == 200
    for jar in (first, *others):
        assert [profile_status(workers, w, jar) for w in WORKERS] == [200, 200]

    status, _, body = workers.call(0, first, "POST", "/auth/logout-all")
    assert status == 200 and json.loads(body)["ended"] == 3

    for jar in (first, *others):
        assert [profile_status(workers, w, jar) for w in WORKERS] == [401, 401]


def test_metrics_add_up_every_workers_counters(workers):
    from prometheus_client.parser import text_string_to_metric_families

    def ready_requests(worker: int) -> float:
        status, headers, body = workers.call(worker, CookieJar(), "GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == "http_requests_total" and sample.labels.get("handler") == "ReadyHandler":
                    total += sample.value
        return total

    before = ready_requests(0)
    sent = {0: 3, 1: 4}
    for worker, count in sent.items():
        for _ in range(count):
            assert workers.call(worker, CookieJar(), "GET", "/ready")[0] == 200
    # either worker's /metrics reports every worker's requests: 7, not 3 or 4
    assert ready_requests(0) - before == ready_requests(1) - before == sum(sent.values())


def test_the_memory_store_refuses_several_processes(tmp_path):
    server = Workers(tmp_path / "data", "--store", "memory://")
    proc = subprocess.run(server.args, cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "memory store" in proc.stderr and "--processes 2" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_to_the_parent_stops_every_worker(tmp_path):
    server = Workers(tmp_path / "data").start()
    try:
        assert len(server.pids) == 2 and all(running(pid) for pid in server.pids)
        shared = metrics_dir(server.proc.pid)
        assert shared is not None and shared.is_dir()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0, server.log()  # the parent waits for its workers, then exits 0
        assert not [pid for pid in server.pids if running(pid)]
        assert "restarting" not in server.log()  # workers that were told to stop are not restarted
        assert not shared.exists()  # and the parent removed the metrics files
    finally:
        server.stop()


def test_workers_stop_when_the_parent_is_killed(tmp_path):
    server = Workers(tmp_path / "data").start()
    shared = metrics_dir(server.proc.pid)
    try:
        server.proc.kill()  # no chance to tell anyone (nor to remove its metrics files)
        server.proc.wait(10)
        assert wait_until(lambda: not any(running(pid) for pid in server.pids), 10), server.log()
    finally:
        server.stop()
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)

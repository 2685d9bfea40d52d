"""Real Redis servers for the tests: a standalone server and a three-master Redis Cluster.

The fixtures start private ``redis-server`` processes (Debian's ``redis-server``
package, which also brings ``redis-cli``) on free loopback ports in temporary
folders, with persistence off (``--save '' --appendonly no``), once per test run,
and stop them at the end. Tests isolate themselves by key prefix (``redis_prefix``),
so one server serves the whole run. It is both a pytest plugin (registered from
tests/conftest.py) and a plain library for bench/ (``RedisServerProcess``,
``start_redis_cluster``).

Environment:

* ``REDIS_URL`` / ``REDIS_CLUSTER_URL``: use those servers instead (``redis://...``
  and ``redis+cluster://host:port`` of any node). The fault tests, which stop a
  server, still start their own.
* ``REQUIRE_REDIS=1``: missing binaries fail the Redis tests instead of skipping
  them (``.ci/run`` sets it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import free_port

START_TIMEOUT = 20.0
#: Where Debian and source builds put the binaries, besides PATH.
SEARCH_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin")


class RedisUnavailable(RuntimeError):
    """redis-server or redis-cli is not installed."""


def require_redis() -> bool:
    """True when Redis tests must run (``REQUIRE_REDIS=1``) rather than skip."""
    return os.environ.get("REQUIRE_REDIS", "").strip().lower() in ("1", "true", "yes")


def find_binary(name: str) -> str:
    """The path of ``name`` on PATH or in the usual folders, else RedisUnavailable."""
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in SEARCH_DIRS if os.access(Path(d) / name, os.X_OK)), None
    )
    if found is None:
        raise RedisUnavailable(
            f"{name} not found (apt-get install redis-server, or set REDIS_URL / REDIS_CLUSTER_URL)"
        )
    return found


def _command(port: int, *args: str, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """Send one command over a raw socket and return the raw reply (no client library needed)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n") or reply.startswith(b"$") and reply.count(b"\r\n") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


class RedisServerProcess:
    """One redis-server on a fixed port and folder; ``stop()`` then ``start()`` brings it back.

    Without persistence a restarted server is empty, which is what Redis
    configured this way does in production too.
    """

    def __init__(self, folder: Path, *, port: int | None = None, cluster: bool = False) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.cluster = cluster
        self.bus_port = free_port() if cluster else 0
        self.log_path = self.folder / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> RedisServerProcess:
        if self.running:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            find_binary("redis-server"),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.folder),
            "--logfile", str(self.log_path), "--daemonize", "no",
        ]  # fmt: skip
        if self.cluster:
            # The bus port defaults to port + 10000, which may be taken or past 65535.
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000", "--cluster-port", str(self.bus_port)]  # fmt: skip
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if _command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"redis-server did not answer on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.kill() if kill else proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the socket stays open but nothing answers (a hung host)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        time.sleep(0.1)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""


class RedisCluster:
    """Three masters, no replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, folder: Path, nodes: int = 3) -> None:
        self.servers = [RedisServerProcess(Path(folder) / f"node{i}", cluster=True) for i in range(nodes)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self, timeout: float = START_TIMEOUT) -> RedisCluster:
        try:
            for server in self.servers:
                server.start()
            addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
            result = subprocess.run(
                [find_binary("redis-cli"), "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],  # fmt: skip
                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if result.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        """Every node must agree the cluster is up before a client connects."""
        deadline = time.monotonic() + timeout
        for server in self.servers:
            while b"cluster_state:ok" not in _command(server.port, "CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster on port {server.port} never reached cluster_state:ok")
                time.sleep(0.05)

    def stop(self) -> None:
        for server in self.servers:
            server.stop(kill=True)


# -- pytest fixtures ---------------------------------------------------------------

SERVER_FIXTURES = frozenset({"redis_url", "redis_cluster_url", "redis_server_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that need a Redis server ``redis``, so ``-m "not redis"`` deselects them."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


def _unavailable(reason: str) -> NoReturn:
    if require_redis():
        pytest.fail(f"REQUIRE_REDIS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _check_binaries() -> None:
    try:
        find_binary("redis-server")
        find_binary("redis-cli")
    except RedisUnavailable as exc:
        reason = str(exc)
    else:
        return
    _unavailable(reason)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A standalone Redis for the whole run: ``REDIS_URL`` or a private server."""
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        yield url
        return
    _check_binaries()
    server = RedisServerProcess(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster for the whole run: ``REDIS_CLUSTER_URL`` or three private masters."""
    url = os.environ.get("REDIS_CLUSTER_URL", "").strip()
    if url:
        yield url
        return
    _check_binaries()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests sharing a server never see each other's keys."""
    return f"ts-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServerProcess]]:
    """Dedicated standalone servers a test may stop, pause and restart; all stopped at teardown."""
    _check_binaries()
    servers: list[RedisServerProcess] = []

    def start() -> RedisServerProcess:
        server = RedisServerProcess(tmp_path / f"redis-{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(kill=True)

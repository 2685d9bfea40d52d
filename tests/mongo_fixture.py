"""A real MongoDB-compatible server for the tests: FerretDB, built from tests/mongo_server.

No MongoDB server package is available here, so tests/mongo_server/main.go embeds
FerretDB v1 (SQLite backend) in a tiny Go program. This module builds it once per
source change into ``.cache/mongo_server/``, starts it on a free loopback port and
stops it again. It is both a pytest plugin (the fixtures below; registered from
tests/conftest.py) and a plain library for bench/ (``build_mongo_server``,
``MongoServerProcess``), so the build/start logic lives in one place.

Environment:

* ``MONGODB_URL``: use that server instead of building one (e.g. a real MongoDB).
  Tests that must stop and restart the server (the fault test) still need Go.
* ``REQUIRE_MONGO=1``: a missing Go toolchain or a failed build fails the Mongo
  tests instead of skipping them (``.ci/run`` sets it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_SOURCE = REPO_ROOT / "tests" / "mongo_server"
CACHE_DIR = REPO_ROOT / ".cache" / "mongo_server"
#: The files whose change means a rebuild.
SOURCE_FILES = ("main.go", "go.mod", "go.sum")
#: A cold build downloads FerretDB and its dependencies (about 1.5 min here).
BUILD_TIMEOUT = 1200.0
START_TIMEOUT = 60.0


class MongoServerUnavailable(RuntimeError):
    """No Go toolchain, or the build failed: the test server cannot be had."""


def require_mongo() -> bool:
    """True when Mongo tests must run (``REQUIRE_MONGO=1``) rather than skip."""
    return os.environ.get("REQUIRE_MONGO", "").strip().lower() in ("1", "true", "yes")


def source_digest() -> str:
    """Hash of the Go sources, naming the cached binary so that edits rebuild it."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        path = SERVER_SOURCE / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_mongo_server(*, go: str | None = None, cache_dir: Path | None = None) -> Path:
    """Return the path of the built server, building it first when the sources changed.

    The binary is written under a temporary name and renamed into place, so
    concurrent test runs never execute a half-written file.
    """
    cache_dir = cache_dir or CACHE_DIR
    suffix = ".exe" if os.name == "nt" else ""
    binary = cache_dir / f"mongo_server-{source_digest()}{suffix}"
    if binary.exists():
        return binary
    go = go or shutil.which("go")
    if go is None:
        raise MongoServerUnavailable(
            "Go toolchain not found on PATH: cannot build the FerretDB test server "
            "(install Go >= 1.24, or set MONGODB_URL to an existing MongoDB-compatible server)"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".build-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        proc = subprocess.run(
            [go, "build", "-trimpath", "-o", str(partial), "."],
            cwd=SERVER_SOURCE,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise MongoServerUnavailable(f"building {SERVER_SOURCE} timed out after {BUILD_TIMEOUT:g} s") from exc
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        output = (proc.stdout + proc.stderr).strip()[-3000:]
        raise MongoServerUnavailable(f"`go build` in {SERVER_SOURCE} failed:\n{output}")
    os.replace(partial, binary)
    for stale in cache_dir.glob("mongo_server-*"):
        if stale != binary:
            stale.unlink(missing_ok=True)
    return binary


class MongoServerProcess:
    """One FerretDB process on a fixed port and data directory.

    ``stop()`` then ``start()`` brings the same server back (same URL, same data),
    which is what the fault tests need. Output goes to ``log_path``.
    """

    def __init__(
        self, binary: Path, data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = START_TIMEOUT) -> MongoServerProcess:
        """Start the server and return once it answers ``ping``."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), "-listen", f"{self.host}:{self.port}", "-data", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the process: SIGTERM (graceful) or SIGKILL (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if hasattr(signal, "SIGCONT"):  # a paused process must run to handle SIGTERM
            proc.send_signal(signal.SIGCONT)
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP: the server keeps its sockets open but never answers (a hung host).

        Returns once every thread of the process is stopped (on Linux), so that no
        request sent afterwards can still be answered by a thread not yet halted.
        """
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self._proc.pid}/task")
        if not tasks.is_dir():
            time.sleep(0.2)
            return
        deadline = time.monotonic() + timeout
        while not all(_thread_state(task) in ("T", "t") for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise RuntimeError("mongo_server did not stop on SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def _wait_ready(self, timeout: float) -> None:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        deadline = time.monotonic() + timeout
        client: MongoClient = MongoClient(
            self.url, serverSelectionTimeoutMS=250, connectTimeoutMS=250, directConnection=True
        )
        try:
            while True:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"mongo_server exited with {self._proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"mongo_server did not answer ping on {self.url} within {timeout:g} s:\n"
                            f"{self.log_tail()}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> MongoServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _thread_state(task: Path) -> str:
    """The state letter of a Linux thread ("T" when stopped); "T" when it has exited."""
    try:
        return (task / "stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "T"


def start_mongo_server(data_dir: Path, *, attempts: int = 3) -> MongoServerProcess:
    """Build if needed and start a server on a free port (retrying if the port got taken)."""
    binary = build_mongo_server()
    for attempt in range(attempts):
        server = MongoServerProcess(binary, data_dir)
        try:
            return server.start()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("not reached")


# -- pytest fixtures ---------------------------------------------------------------

#: Fixtures that mean "this test needs a MongoDB-compatible server".
SERVER_FIXTURES = frozenset({"mongo_url", "mongo_server_binary", "mongo_db_name", "mongo_server_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture ``mongo``, so ``-m "not mongo"`` deselects exactly those."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mongo)


def _unavailable(reason: str) -> NoReturn:
    if require_mongo():
        pytest.fail(f"REQUIRE_MONGO=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mongo_server_binary() -> Path:
    """The built FerretDB server (skips, or fails under REQUIRE_MONGO=1, without Go)."""
    try:
        return build_mongo_server()
    except MongoServerUnavailable as exc:
        reason = str(exc)
    _unavailable(reason)  # outside the except block: a clean message, no chained traceback


@pytest.fixture(scope="session")
def mongo_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a MongoDB-compatible server for the whole run: ``MONGODB_URL`` or our FerretDB."""
    url = os.environ.get("MONGODB_URL", "").strip()
    if url:
        yield url
        return
    request.getfixturevalue("mongo_server_binary")
    server = start_mongo_server(tmp_path_factory.mktemp("ferretdb") / "data")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def mongo_db_name(mongo_url: str) -> Iterator[str]:
    """A fresh database name per test, dropped afterwards, so tests stay independent."""
    name = f"ts_test_{uuid.uuid4().hex[:16]}"
    yield name
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient = MongoClient(mongo_url, serverSelectionTimeoutMS=2000)
    try:
        client.drop_database(name)
    except PyMongoError:
        pass  # best effort: a fault test may have left the server down
    finally:
        client.close()


@pytest.fixture
def mongo_server_factory(
    mongo_server_binary: Path, tmp_path: Path
) -> Iterator[Callable[[], MongoServerProcess]]:
    """Start dedicated servers that a test may stop and restart; all stopped at teardown."""
    servers: list[MongoServerProcess] = []

    def start() -> MongoServerProcess:
        server = MongoServerProcess(mongo_server_binary, tmp_path / f"ferretdb-{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(kill=True)

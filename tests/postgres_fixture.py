"""A real PostgreSQL server for the tests, made with ``initdb`` and run with ``pg_ctl``.

The fixture makes a throw-away cluster in a temporary folder, listening on a free
loopback port (its unix socket in that folder too), once per test run, and stops it
at the end. PostgreSQL refuses to run as root, so when the tests run as root (CI
does) initdb and pg_ctl run as an unprivileged user through ``runuser``: the
``postgres`` user the Debian package creates, else a system user made for it. Tests
isolate themselves by table name inside one schema of their own. It is both a
pytest plugin (registered from tests/conftest.py) and a library for bench/
(``PostgresServer``).

The binaries are found on PATH, in ``$PG_BIN``, or in Debian's
``/usr/lib/postgresql/<version>/bin`` (newest first).

Environment:

* ``POSTGRES_URL``: use that server instead (``postgresql://user@host:port/db``).
  The fault tests, which stop a server, still start their own.
* ``REQUIRE_POSTGRES=1``: missing binaries fail the PostgreSQL tests instead of
  skipping them (``.ci/run`` sets it).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import free_port

START_TIMEOUT = 60.0
#: The user that runs the server when the tests run as root.
SERVICE_USERS = ("postgres", "tornado-sessions-pg")


class PostgresUnavailable(RuntimeError):
    """initdb / pg_ctl not installed."""


def require_postgres() -> bool:
    """True when PostgreSQL tests must run (``REQUIRE_POSTGRES=1``) rather than skip."""
    return os.environ.get("REQUIRE_POSTGRES", "").strip().lower() in ("1", "true", "yes")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # Debian's /usr/local/bin links resolve here
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable(
        "initdb/pg_ctl not found (apt-get install postgresql, set PG_BIN, or set POSTGRES_URL)"
    )


def service_user() -> str | None:
    """None when not root; else an unprivileged user to run the server as (made if needed)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    name = SERVICE_USERS[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    return name


class PostgresServer:
    """One throw-away PostgreSQL cluster; ``stop()`` then ``start()`` keeps its data."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bin_dir = find_bin_dir()
        self.user = service_user()
        # Not under pytest's tmp_path: that is private to root, and the server user
        # must reach its folder.
        self.folder = Path(tempfile.mkdtemp(prefix="ts-postgres-"))
        self.data_dir = self.folder / "data"
        self.log_path = self.folder / "server.log"
        self.port = port or free_port()
        if self.user is not None:
            record = pwd.getpwnam(self.user)
            os.chown(self.folder, record.pw_uid, record.pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.folder, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}\n{self.log_tail()}")
        return result

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip

    def start(self) -> PostgresServer:
        # fsync off: a test server's speed matters, and only an OS crash loses data
        # then; a server crash (pg_ctl -m immediate, the fault test) loses nothing.
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
            "-c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w",
                  "-t", str(int(START_TIMEOUT)), "start")  # fmt: skip
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """``fast``: disconnect clients and shut down cleanly; ``immediate``: like a crash."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def pause(self) -> None:
        """SIGSTOP the postmaster and its backends: connections stay open, nothing answers."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        for pid in [postmaster, *map(int, children)]:
            os.kill(pid, sig)
        time.sleep(0.1)

    def destroy(self) -> None:
        try:
            try:
                self.resume()  # a paused server cannot stop
            except (OSError, ValueError, IndexError):
                pass
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""


# -- pytest fixtures ---------------------------------------------------------------

SERVER_FIXTURES = frozenset({"postgres_url", "postgres_server_factory", "postgres_test_schema"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that need PostgreSQL ``postgres``, so ``-m "not postgres"`` deselects them."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def _unavailable(reason: str) -> NoReturn:
    if require_postgres():
        pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _server() -> PostgresServer:
    try:
        return PostgresServer()
    except PostgresUnavailable as exc:
        reason = str(exc)
    _unavailable(reason)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server for the whole run: ``POSTGRES_URL`` or a private one."""
    url = os.environ.get("POSTGRES_URL", "").strip()
    if url:
        yield url
        return
    server = _server().start()
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_schema(postgres_server_url: str) -> Iterator[str]:
    """A schema of this test run's own, dropped at the end (so a shared server stays clean)."""
    import psycopg

    name = f"ts_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    try:
        with psycopg.connect(postgres_server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    except psycopg.Error:
        pass  # best effort


@pytest.fixture
def postgres_url(postgres_server_url: str, postgres_schema: str) -> str:
    """The server's URL; pair it with ``postgres_table`` and ``schema=postgres_schema``."""
    return postgres_server_url


@pytest.fixture
def postgres_table() -> str:
    """A table name of this test's own."""
    return f"sessions_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_test_schema(postgres_server_url: str) -> Iterator[str]:
    """A schema name of this test's own (the store creates it), dropped after the test.

    For tests that use the default table names (``sessions``, ``counters``, ``users``).
    """
    import psycopg

    name = f"ts_t_{uuid.uuid4().hex[:12]}"
    yield name
    try:
        with psycopg.connect(postgres_server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    except psycopg.Error:
        pass  # best effort; the server is thrown away at the end of the run anyway


@pytest.fixture
def postgres_server_factory() -> Iterator[Callable[[], PostgresServer]]:
    """Dedicated servers a test may stop, pause and restart; all removed at teardown."""
    servers: list[PostgresServer] = []

    def start() -> PostgresServer:
        server = _server()
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.destroy()

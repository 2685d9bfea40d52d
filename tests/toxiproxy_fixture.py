"""Toxiproxy for the fault tests: a real TCP proxy that slows, stalls and cuts connections.

tests/toxiproxy/main.go runs the API server of github.com/Shopify/toxiproxy/v2
(fetched from the Go module proxy, pinned in tests/toxiproxy/go.mod and go.sum).
This module builds it once per source change into ``.cache/toxiproxy/`` (git-ignored),
the way tests/mongo_fixture.py builds FerretDB, starts it on a free loopback port
and drives its HTTP API (``/proxies``, ``/proxies/{name}/toxics``). Import the
``toxiproxy`` fixture into a test module to use it.

Environment:

* ``REQUIRE_TOXIPROXY=1``: a missing Go toolchain or a failed build fails the
  tests that need the proxy instead of skipping them (``.ci/run`` sets it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT / "tests" / "toxiproxy"
CACHE_DIR = REPO_ROOT / ".cache" / "toxiproxy"
SOURCE_FILES = ("main.go", "go.mod", "go.sum")
#: A cold build downloads Toxiproxy and its few dependencies (about 15 s here).
BUILD_TIMEOUT = 600.0
START_TIMEOUT = 20.0


class ToxiproxyUnavailable(RuntimeError):
    """No Go toolchain, or the build failed."""


def require_toxiproxy() -> bool:
    return os.environ.get("REQUIRE_TOXIPROXY", "").strip().lower() in ("1", "true", "yes")


def _digest() -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        path = SOURCE / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"") + b"\0")
    return digest.hexdigest()[:16]


def build_toxiproxy(*, go: str | None = None) -> Path:
    """The built server, built first when the sources changed (atomically renamed into place)."""
    binary = CACHE_DIR / f"toxiproxy-{_digest()}"
    if binary.exists():
        return binary
    go = go or shutil.which("go")
    if go is None:
        raise ToxiproxyUnavailable("Go toolchain not found on PATH: cannot build Toxiproxy (tests/toxiproxy)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = CACHE_DIR / f".build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(
            [go, "build", "-trimpath", "-o", str(partial), "."],
            cwd=SOURCE, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ToxiproxyUnavailable(f"building {SOURCE} timed out after {BUILD_TIMEOUT:g} s") from exc
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ToxiproxyUnavailable(f"`go build` in {SOURCE} failed:\n{(proc.stdout + proc.stderr).strip()[-3000:]}")
    os.replace(partial, binary)
    for stale in CACHE_DIR.glob("toxiproxy-*"):
        if stale != binary:
            stale.unlink(missing_ok=True)
    return binary


class Toxiproxy:
    """One Toxiproxy server and a thin client of its HTTP API."""

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Toxiproxy:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self._call("GET", "/version")
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"toxiproxy did not start:\n{self.log_path.read_text(errors='replace')}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"toxiproxy {method} {path}: {exc.code} {exc.read()[:500]!r}") from None
        try:
            return json.loads(text)
        except ValueError:  # /version is plain text; DELETE answers nothing
            return text.decode(errors="replace")

    # -- the API -------------------------------------------------------------------
    def proxy(self, name: str, upstream: str) -> int:
        """Create a proxy to ``upstream`` ("host:port"); returns the loopback port it listens on."""
        listen = free_port()
        self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{listen}", "upstream": upstream,
                                        "enabled": True})  # fmt: skip
        return listen

    def set_enabled(self, name: str, enabled: bool) -> None:
        """False cuts the link: open connections are closed and new ones refused."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, kind: str, *, stream: str = "downstream", **attributes: Any) -> str:
        """Add a toxic (``latency``, ``timeout``, ``reset_peer``, ``bandwidth``, ...); returns its name."""
        toxic = f"{kind}_{stream}_{uuid.uuid4().hex[:6]}"
        self._call("POST", f"/proxies/{proxy}/toxics",
                   {"name": toxic, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes})  # fmt: skip
        return toxic

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")


def _unavailable(reason: str) -> NoReturn:
    if require_toxiproxy():
        pytest.fail(f"REQUIRE_TOXIPROXY=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toxiproxy]:
    """A Toxiproxy server for the run (skips, or fails under REQUIRE_TOXIPROXY=1, without Go)."""
    try:
        binary = build_toxiproxy()
    except ToxiproxyUnavailable as exc:
        reason = str(exc)
    else:
        server = Toxiproxy(binary, tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log").start()
        try:
            yield server
        finally:
            server.stop()
        return
    _unavailable(reason)

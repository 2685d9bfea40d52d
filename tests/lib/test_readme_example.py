"""The README's library example runs as written.

The first ```python block of "## Using the library" (``app.py``) is written to a
temporary directory and run there as a process, with ``SESSION_KEYS`` from
``python -m sessions.keygen`` and ``PORT`` a free port: two POSTs to ``/count`` count
to 2 in one session, and a GET then reads 2.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

from tests.fixtures.readme import ROOT, readme_block
from tests.fixtures.support import cookies_from, free_port

START_TIMEOUT = 20.0


def request(port: int, method: str, path: str, cookies: dict[str, str]) -> tuple[int, dict]:
    """One request with the cookies so far; the cookies it sets are added to ``cookies``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        cookies.update(cookies_from(response.getheaders()))
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wait_until_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited with {proc.returncode}: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"app.py did not listen on {port} within {START_TIMEOUT} s")


def test_the_using_the_library_example_counts_in_its_session(tmp_path):
    (tmp_path / "app.py").write_text(readme_block("## Using the library"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # sessions from this checkout, installed or not
    key = subprocess.run(
        [sys.executable, "-m", "sessions.keygen"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    env.update(SESSION_KEYS=key, PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until_listening(proc, port)
        cookies: dict[str, str] = {}
        assert request(port, "POST", "/count", cookies) == (200, {"count": 1})
        assert cookies, "no session cookie set"
        assert request(port, "POST", "/count", cookies) == (200, {"count": 2})
        assert request(port, "GET", "/count", cookies) == (200, {"count": 2})
        assert (tmp_path / "sessions.db").exists()  # the README's sqlite:///sessions.db, in the working directory
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()

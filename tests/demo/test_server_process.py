"""server.py as a real process: persistence across restarts, production key checks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import pytest

from tests.fixtures.server_process import ROOT, Server
from tests.fixtures.support import cookies_from


@pytest.fixture(params=["sqlite", "mongo"])
def store_args(request, tmp_path):
    if request.param == "sqlite":
        return []
    url = request.getfixturevalue("mongo_url")
    base, _, query = url.partition("?")
    database = f"server_{uuid.uuid4().hex[:12]}"
    return ["--store", f"{base.rstrip('/')}/{database}" + (f"?{query}" if query else "")]


def test_sessions_survive_a_restart(tmp_path, store_args):
    server = Server(tmp_path, *store_args).start()
    try:
        status, headers, _ = server.request("GET", "/api/counter")
        cookies = cookies_from(headers)
        cookie_header = lambda: "; ".join(f"{k}={v}" for k, v in cookies.items())  # noqa: E731
        for _ in range(3):
            status, headers, body = server.request(
                "POST", "/api/counter", {"Cookie": cookie_header(), "X-XSRFToken": cookies["_xsrf"]}
            )
            assert status == 200
            cookies.update(cookies_from(headers))
        assert json.loads(body) == {"count": 3}
    finally:
        server.stop()
    assert (tmp_path / "sessions.sqlite3").exists() == (not store_args)
    assert (tmp_path / "dev-keys").stat().st_mode & 0o077 == 0

    restarted = Server(tmp_path, *store_args).start()
    try:
        status, _, body = restarted.request("GET", "/api/counter", {"Cookie": cookie_header()})
        assert status == 200 and json.loads(body) == {"count": 3}
    finally:
        restarted.stop()


def test_production_refuses_to_start_without_keys(tmp_path):
    server = Server(tmp_path, "--production")
    proc = subprocess.run(server.args, cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "SESSION_KEYS" in proc.stderr and "python -m sessions.keygen" in proc.stderr
    assert not (tmp_path / "dev-keys").exists()


def test_production_starts_with_keys_and_oversized_body_is_413(tmp_path):
    key = subprocess.run([sys.executable, "-m", "sessions.keygen"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    server = Server(tmp_path, "--production", "--store", "memory://", env={"SESSION_KEYS": key}).start()
    try:
        status, headers, _ = server.request("GET", "/health")
        assert status == 200
        assert not any(name.lower() == "server" for name, _ in headers)
        # Tornado refuses a body over max_body_size from its headers alone: a 4xx, not a read.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"PUT /api/preferences HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
            reply = sock.recv(200)
        assert reply.startswith(b"HTTP/1.1 4"), reply
    finally:
        server.stop()


def test_bad_store_url_is_a_clear_error(tmp_path):
    server = Server(tmp_path, "--store", "ftp://nowhere")
    proc = subprocess.run(server.args, cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "unknown store URL" in proc.stderr


def test_a_nel_in_a_malformed_request_cannot_forge_a_log_line(tmp_path):
    """Tornado quotes a malformed start line in its own log message; the line stays one line."""
    server = Server(tmp_path, "--store", "memory://").start()
    forged = b'{"event":"login_success","user":"admin"}'
    try:
        for breaker in (b"\x85", b"\xe2\x80\xa8", b"\x1e"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad" + breaker + forged + b"\r\n\r\n")
                sock.recv(200)
    finally:
        server.stop()
    output = server.proc.stdout.read().decode("utf-8", "replace")
    # The start lines (the address, then indented: where the data and the keys are) are not log lines.
    lines = [line for line in output.splitlines() if not line.startswith(("tornado-sessions demo on", "  "))]
    assert lines and any("Malformed" in line for line in lines), output[-2000:]
    assert not [line for line in lines if line.startswith('{"event":"login_success"')]
    assert all(line[:4].isdigit() for line in lines), [line for line in lines if not line[:4].isdigit()]

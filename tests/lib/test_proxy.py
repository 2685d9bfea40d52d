"""One client address and scheme: forwarded headers count only from trusted proxies.

Real HTTP through :class:`sessions.proxy.ProxyAwareHTTPServer` on loopback; the test
client's address, 127.0.0.1, plays the proxy when it is listed as trusted.
"""

from __future__ import annotations

import json
import socket

import pytest
from tornado.web import Application, RequestHandler

from sessions.proxy import ProxyAwareHTTPServer, parse_trusted_proxies
from tests.fixtures.support import serve_on

FORGED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Real-Ip": "7.7.7.7",
    "X-Scheme": "https",
}


class Echo(RequestHandler):
    def get(self) -> None:
        self.write({"ip": self.request.remote_ip, "protocol": self.request.protocol})


@pytest.fixture
def app():
    return Application([(r"/", Echo)])


@pytest.fixture
def trusted_proxies():
    return []


@pytest.fixture
def http_server(request, io_loop, _unused_port, app, trusted_proxies):
    return serve_on(request, io_loop, _unused_port, ProxyAwareHTTPServer(app, trusted_proxies=trusted_proxies))


async def seen(http_client, base_url, headers) -> dict:
    response = await http_client.fetch(base_url + "/", headers=headers)
    return json.loads(response.body)


# -- untrusted peers: headers change nothing ----------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [[], ["10.1.2.3"], ["::1"]])
@pytest.mark.parametrize(
    "headers",
    [
        FORGED,
        {"X-Forwarded-For": "6.6.6.6"},
        {"X-Forwarded-Proto": "https"},
        {"X-Real-Ip": "7.7.7.7"},
        {"X-Scheme": "https"},
        {"X-Forwarded-For": "6.6.6.6, 127.0.0.1", "X-Forwarded-Proto": "http, https"},
    ],
)
async def test_forged_headers_from_untrusted_peer_change_nothing(http_client, base_url, headers, trusted_proxies):
    assert await seen(http_client, base_url, headers) == {"ip": "127.0.0.1", "protocol": "http"}


# -- a trusted proxy -------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])
async def test_trusted_proxy_gives_rightmost_untrusted_hop_and_scheme(http_client, base_url, trusted_proxies):
    # The client wrote 6.6.6.6 itself; the proxy appended the address it saw.
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https"}
    assert await seen(http_client, base_url, headers) == {"ip": "203.0.113.7", "protocol": "https"}


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])
async def test_trusted_proxy_x_real_ip_and_x_scheme_are_ignored(http_client, base_url, trusted_proxies):
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Real-Ip": "7.7.7.7", "X-Scheme": "https"}
    assert await seen(http_client, base_url, headers) == {"ip": "203.0.113.7", "protocol": "http"}
    headers = {"X-Real-Ip": "7.7.7.7", "X-Scheme": "https"}
    assert await seen(http_client, base_url, headers) == {"ip": "127.0.0.1", "protocol": "http"}


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1", "10.0.0.2", "10.0.0.3"]])
async def test_chain_of_trusted_hops_is_skipped(http_client, base_url, trusted_proxies):
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.0.0.2, 10.0.0.3", "X-Forwarded-Proto": "https"}
    assert await seen(http_client, base_url, headers) == {"ip": "203.0.113.7", "protocol": "https"}
    # every hop trusted: the leftmost entry is all there is
    headers = {"X-Forwarded-For": "10.0.0.2, 10.0.0.3"}
    assert (await seen(http_client, base_url, headers))["ip"] == "10.0.0.2"


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "not-an-ip", "X-Forwarded-Proto": "ftp"},
        {"X-Forwarded-For": "", "X-Forwarded-Proto": ""},
        {"X-Forwarded-For": "1.2.3.4:80", "X-Forwarded-Proto": "javascript"},
    ],
)
async def test_trusted_proxy_garbage_keeps_the_peer(http_client, base_url, headers, trusted_proxies):
    assert await seen(http_client, base_url, headers) == {"ip": "127.0.0.1", "protocol": "http"}


@pytest.mark.gen_test
@pytest.mark.parametrize("trusted_proxies", [["127.0.0.1"]])
async def test_forwarded_values_do_not_leak_to_the_next_request_on_a_connection(
    http_server, io_loop, trusted_proxies
):
    port = http_server._sockets[next(iter(http_server._sockets))].getsockname()[1]

    def exchange() -> list[dict]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n"
                b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return [json.loads(part.split(b"}", 1)[0] + b"}") for part in data.split(b"\r\n\r\n")[1:]]

    first, second = await io_loop.run_in_executor(None, exchange)
    assert first == {"ip": "6.6.6.6", "protocol": "https"}  # the two headers are one list
    assert second == {"ip": "127.0.0.1", "protocol": "http"}


# -- configuration -------------------------------------------------------------------------


def test_parse_trusted_proxies():
    assert parse_trusted_proxies(None) == []
    assert parse_trusted_proxies("") == []
    assert parse_trusted_proxies(" 127.0.0.1, ::0001 ,10.0.0.1,127.0.0.1") == ["127.0.0.1", "::1", "10.0.0.1"]
    assert parse_trusted_proxies(["10.0.0.1", "10.0.0.2,10.0.0.3"]) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    for bad in ("proxy.example", "10.0.0.0/8", "1.2.3.4.5", "*"):
        with pytest.raises(ValueError, match="not an IP address"):
            parse_trusted_proxies(bad)


def test_server_refuses_xheaders_and_trusts_nothing_by_default(app):
    with pytest.raises(TypeError, match="trusted_proxies"):
        ProxyAwareHTTPServer(app, xheaders=True)
    with pytest.raises(TypeError, match="trusted_proxies"):
        ProxyAwareHTTPServer(app, trusted_downstream=["127.0.0.1"])
    server = ProxyAwareHTTPServer(app)
    assert server.trusted_proxies == frozenset()
    assert not server.is_trusted_peer("127.0.0.1")
    server = ProxyAwareHTTPServer(app, trusted_proxies="127.0.0.1, ::1")
    assert server.is_trusted_peer("127.0.0.1") and server.is_trusted_peer("::ffff:127.0.0.1")
    assert server.is_trusted_peer("0:0:0:0:0:0:0:1")
    assert not server.is_trusted_peer("127.0.0.2") and not server.is_trusted_peer(None)
    assert not server.is_trusted_peer("garbage")

"""Pins the behaviour of the Tornado private names the library uses (sessions/tornado_internals.py).

If a Tornado release renames or changes one of them, these fail here, not in a request.
"""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders
from tornado.web import Application, RequestHandler

from sessions import tornado_internals


def test_proxy_adapter_is_tornados_xheaders_adapter():
    from tornado.httputil import HTTPMessageDelegate

    assert issubclass(tornado_internals.ProxyAdapter, HTTPMessageDelegate)
    for name in ("headers_received", "data_received", "finish", "on_connection_close"):
        assert callable(getattr(tornado_internals.ProxyAdapter, name))


def test_apply_forwarded_headers_sets_the_address_and_scheme():
    import socket

    from tornado.httpserver import _HTTPRequestContext

    peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stream = type("Stream", (), {"socket": peer})()  # what the context reads: the socket's family
    context = _HTTPRequestContext(stream, ("10.0.0.1", 1234), "http")
    peer.close()
    assert context.remote_ip == "10.0.0.1" and context.protocol == "http"
    headers = HTTPHeaders({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    tornado_internals.apply_forwarded_headers(context, headers)
    assert context.remote_ip == "203.0.113.7" and context.protocol == "https"


class _Probe(RequestHandler):
    def get(self) -> None:
        seen = {"finished_before": tornado_internals.is_finished(self)}
        if self.get_argument("vary", None):
            self.set_header("Vary", self.get_argument("vary"))
        tornado_internals.mark_private(self)
        tornado_internals.mark_private(self)  # twice: still one Cookie
        self.finish(seen)
        assert tornado_internals.is_finished(self)


@pytest.fixture
def app():
    return Application([(r"/", _Probe)])


@pytest.mark.gen_test
async def test_mark_private_and_is_finished_act_on_the_handler(http_client, base_url):
    import json

    response = await http_client.fetch(base_url + "/")
    assert json.loads(response.body) == {"finished_before": False}
    assert response.headers.get_list("Vary") == ["Cookie"]
    assert response.headers["Cache-Control"] == "no-store"
    response = await http_client.fetch(base_url + "/?vary=Accept")
    assert response.headers.get_list("Vary") == ["Accept, Cookie"]
    response = await http_client.fetch(base_url + "/?vary=cookie")
    assert response.headers.get_list("Vary") == ["cookie"]

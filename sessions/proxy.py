"""One client address and scheme: Tornado's proxy handling, for trusted proxies only.

Behind a reverse proxy (nginx, a load balancer, a TLS terminator) every connection
comes from the proxy, and the client's address and scheme arrive in headers the
proxy adds. Tornado reads them with ``HTTPServer(xheaders=True)``, but it reads them
from *any* peer, and it also believes ``X-Real-Ip`` and ``X-Scheme``, which many
proxies pass through untouched, so a client can write its own.

:class:`ProxyAwareHTTPServer` keeps Tornado's own handling and narrows it:

* forwarded headers count only on connections whose TCP peer is one of
  ``trusted_proxies``; from anyone else they are ignored;
* only ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are read (``X-Real-Ip`` and
  ``X-Scheme`` never);
* the client address is the rightmost ``X-Forwarded-For`` entry that is not itself a
  trusted proxy (each proxy appends the address it saw; entries to the left of the
  first untrusted one were written by the client and prove nothing);
* the scheme is the last ``X-Forwarded-Proto`` entry, ``http`` or ``https`` only.

Nothing is trusted by default. The result is ``request.remote_ip`` and
``request.protocol``, the one source for sessions, the audit log and rate limiting::

    server = ProxyAwareHTTPServer(app, trusted_proxies=["127.0.0.1"], max_body_size=...)
    server.listen(8888)

Behind a TLS proxy, list it: otherwise requests look like plain HTTP, and Secure
cookies (``__Host-`` ones included) are not set on them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Iterable
from typing import Any

from tornado import httputil
from tornado.httpserver import HTTPServer

from .tornado_internals import ProxyAdapter, apply_forwarded_headers

__all__ = ["FORWARDED_HEADERS", "ProxyAwareHTTPServer", "parse_trusted_proxies"]

#: The only forwarded headers read from a trusted proxy.
FORWARDED_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto")


def parse_trusted_proxies(values: str | Iterable[str] | None) -> list[str]:
    """Normalised IP addresses from ``"a, b"`` text or a list of such texts.

    Raises ValueError naming any entry that is not a single IP address (host names
    and networks are refused: the peer check compares addresses exactly).
    """
    if values is None:
        return []
    texts = [values] if isinstance(values, str) else list(values)
    found: list[str] = []
    for text in texts:
        for entry in text.split(","):
            entry = entry.strip()
            if not entry:
                continue
            try:
                address = str(ipaddress.ip_address(entry))
            except ValueError:
                raise ValueError(
                    f"trusted proxy {entry!r} is not an IP address (give each proxy's address, "
                    "e.g. 127.0.0.1 or ::1; host names and networks are not accepted)"
                ) from None
            if address not in found:
                found.append(address)
    return found


class _TrustedProxyAdapter(ProxyAdapter):
    """Tornado's proxy adapter, shown only the forwarded headers we accept."""

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        forwarded = httputil.HTTPHeaders()
        for name in FORWARDED_HEADERS:
            for value in headers.get_list(name):
                forwarded.add(name, value)
        context: Any = getattr(self.connection, "context", None)
        apply_forwarded_headers(context, forwarded)
        return self.delegate.headers_received(start_line, headers)


class ProxyAwareHTTPServer(HTTPServer):
    """An ``HTTPServer`` that applies forwarded headers only from ``trusted_proxies``.

    Takes every ``HTTPServer`` argument except ``xheaders`` and
    ``trusted_downstream``, which it sets from ``trusted_proxies`` (addresses, or
    comma-separated text of them; see :func:`parse_trusted_proxies`).
    """

    trusted_proxies: frozenset[str]

    def initialize(  # type: ignore[override]  # keyword-only; xheaders is ours to set
        self,
        request_callback: Any,
        *,
        trusted_proxies: str | Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        for name in ("xheaders", "trusted_downstream"):
            if name in kwargs:
                raise TypeError(f"ProxyAwareHTTPServer sets {name} itself; pass trusted_proxies")
        trusted = parse_trusted_proxies(trusted_proxies)
        self.trusted_proxies = frozenset(trusted)
        # xheaders stays off in Tornado itself: start_request decides per connection.
        kwargs.update(xheaders=False, trusted_downstream=trusted)
        super().initialize(request_callback, **kwargs)

    def is_trusted_peer(self, address: str | None) -> bool:
        """True when ``address`` (a TCP peer) is one of the trusted proxies."""
        if not address or not self.trusted_proxies:
            return False
        if address in self.trusted_proxies:
            return True
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        mapped = getattr(parsed, "ipv4_mapped", None)  # ::ffff:a.b.c.d on dual-stack sockets
        return str(parsed) in self.trusted_proxies or (mapped is not None and str(mapped) in self.trusted_proxies)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        context: Any = getattr(request_conn, "context", None)
        # Between requests Tornado restores the connection's own address, so this is
        # the TCP peer, not a value from a previous request's headers.
        if self.trusted_proxies and self.is_trusted_peer(getattr(context, "remote_ip", None)):
            return _TrustedProxyAdapter(delegate, request_conn)
        return delegate

"""Prometheus metrics for the demo: request counts and latencies, security events.

``GET /metrics`` serves the Prometheus text format. Security and audit events are
counted from the library's own event lines (``sessions.audit`` and
``sessions.security`` loggers), so there is one source for "what happened": the log
line and the counter cannot disagree.

With several worker processes (``server.py --processes N``) every process writes its
samples to files in a shared directory and ``/metrics`` adds them up
(prometheus_client's multiprocess mode). That mode is chosen by the
``PROMETHEUS_MULTIPROC_DIR`` environment variable *when prometheus_client is first
imported*, so :func:`configure` must run before anything imports it; this module
imports it only inside functions for that reason.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from tornado.log import access_log
from tornado.web import RequestHandler

from sessions.events import log_event

from .base import SecureHeadersMixin

_METRICS: dict[str, Any] = {}
#: (handler, method, status) -> that request counter's and latency histogram's children:
#: ``labels()`` costs about 4 µs a call, on every request. Bounded: handler classes and
#: methods are a fixed set, statuses are three digits.
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def configure(multiprocess_dir: str | None = None) -> None:
    """Create the metrics once per process; call before forking workers."""
    if _METRICS:
        return
    if multiprocess_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    from prometheus_client import Counter, Histogram

    _METRICS["requests"] = Counter(
        "http_requests_total", "HTTP requests answered", ["handler", "method", "status"]
    )
    _METRICS["latency"] = Histogram(
        "http_request_duration_seconds", "Time to answer an HTTP request", ["handler", "method"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    )
    _METRICS["events"] = Counter(
        "session_security_events_total", "Audit and security events (login, logout, tamper, rate limit, ...)",
        ["event"],
    )
    _METRICS["hash"] = Histogram(
        "password_hash_seconds", "bcrypt time per hash or check (in the thread pool)",
        buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
    )
    handler = _EventCounter()
    for name in ("sessions.audit", "sessions.security"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # events are counted even when not printed


class _EventCounter(logging.Handler):
    """Counts each JSON event line by its ``event`` name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = json.loads(record.getMessage()).get("event")
        except (ValueError, AttributeError):
            return
        if isinstance(event, str):
            _METRICS["events"].labels(event=event[:64]).inc()


def observe_request(handler: RequestHandler) -> None:
    """Tornado's ``log_function``: count and time the request, and write the access log line.

    The line is a JSON event, like every other log line of the demo: the path is the
    client's text, and JSON keeps any control character in it from reaching a terminal
    or forging a line.
    """
    request = handler.request
    status = handler.get_status()
    seconds = request.request_time()
    if _METRICS:
        name = type(handler).__name__
        method = request.method or "?"
        if method not in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            method = "other"  # bounded label values: a client cannot invent metrics
        children = _CHILDREN.get((name, method, status))
        if children is None:
            children = _CHILDREN[(name, method, status)] = (
                _METRICS["requests"].labels(handler=name, method=method, status=str(status)),
                _METRICS["latency"].labels(handler=name, method=method),
            )
        children[0].inc()
        children[1].observe(seconds)
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    log_event(
        access_log, level, "request", status=status, method=request.method, path=request.uri,
        remote=request.remote_ip, ms=round(1000 * seconds, 2),
    )


def observe_hash(seconds: float) -> None:
    if _METRICS:
        _METRICS["hash"].observe(seconds)


class MetricsHandler(SecureHeadersMixin):
    """``GET /metrics`` in the Prometheus text format (all processes in multiprocess mode)."""

    def get(self) -> None:
        from prometheus_client import REGISTRY, CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry: Any = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        # The text format 0.0.4 that every Prometheus reads, unless the scraper's Accept
        # asks for OpenMetrics (prometheus_client's own negotiation; its CONTENT_TYPE_LATEST
        # names a newer text format that older scrapers refuse).
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Vary", "Accept")
        self.write(encode(registry))

"""``GET /metrics`` of the demo app in one process: Prometheus text, request counts and
latencies, security events counted from the audit and security log lines.

The counters live in prometheus_client's process-wide registry, so every check
compares a scrape before with one after (other tests in the process count too).
Several processes adding up their counters: tests/demo/test_processes.py.
"""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from handlers import metrics
from handlers.base import SECURITY_HEADERS
from tests.fixtures.demo_fixtures import demo_app_fixtures
from tests.fixtures.support import Client

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", autouse=True)
def configured():
    metrics.configure()  # what server.py does in one process; once per process, so calling again is harmless
    metrics.configure()


app, http_server = demo_app_fixtures()


Samples = list[tuple[str, dict[str, str], float]]


async def scrape(client: Client) -> Samples:
    response = await client.fetch("/metrics")
    assert response.code == 200
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for n, ls, value in samples if n == name and labels.items() <= ls.items())


async def call(client: Client, method: str, path: str, data: dict | None = None):
    if client.xsrf_token() is None:
        await client.fetch("/auth/profile")
    return await client.fetch(path, method, json.dumps(data) if data is not None else None,
                              headers={"Content-Type": "application/json"})  # fmt: skip


@pytest.mark.gen_test
async def test_metrics_is_prometheus_text_with_the_security_headers(client):
    await client.fetch("/health")
    response = await client.fetch("/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "Server" not in response.headers and "Set-Cookie" not in response.headers
    text = response.body.decode()
    for line in (
        "# TYPE http_requests_total counter",
        "# TYPE http_request_duration_seconds histogram",
        "# TYPE session_security_events_total counter",
    ):
        assert line in text.splitlines(), line
    assert "http_request_duration_seconds_bucket{" in text and "http_requests_total{" in text


@pytest.mark.gen_test
async def test_a_scraper_asking_for_openmetrics_gets_it(client):
    response = await client.fetch("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.body.rstrip().endswith(b"# EOF")
    assert "Accept" in response.headers["Vary"]


@pytest.mark.gen_test
async def test_requests_are_counted_and_timed(client):
    before = await scrape(client)
    for _ in range(3):
        assert (await client.fetch("/health")).code == 200
    assert (await client.fetch("/no/such/page")).code == 404
    after = await scrape(client)

    health = {"handler": "HealthHandler", "method": "GET"}
    assert total(after, "http_requests_total", status="200", **health) - total(
        before, "http_requests_total", status="200", **health
    ) == 3
    assert total(after, "http_requests_total", handler="NotFoundHandler", status="404") - total(
        before, "http_requests_total", handler="NotFoundHandler", status="404"
    ) == 1
    count = total(after, "http_request_duration_seconds_count", **health)
    assert count - total(before, "http_request_duration_seconds_count", **health) == 3
    assert total(after, "http_request_duration_seconds_bucket", le="+Inf", **health) == count
    buckets = sorted(
        (float(ls["le"]), v) for n, ls, v in after
        if n == "http_request_duration_seconds_bucket" and health.items() <= ls.items()
    )  # fmt: skip
    assert len(buckets) > 5 and [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative


@pytest.mark.gen_test
async def test_method_labels_are_bounded(client):
    before = await scrape(client)
    response = await client.fetch("/health", "PROPFIND")
    assert response.code == 405
    after = await scrape(client)
    assert total(after, "http_requests_total", method="other") - total(before, "http_requests_total", method="other") == 1
    assert all(ls.get("method") != "PROPFIND" for _, ls, _ in after)


@pytest.mark.gen_test
async def test_a_failed_login_is_counted_and_still_logged(client, http_client, base_url, caplog):
    caplog.set_level(logging.INFO, logger="sessions.audit")
    response = await call(client, "POST", "/auth/register", {"email": "ana@example.com", "name": "Ana", "password": PASSWORD})
    assert response.code == 201
    before = await scrape(client)
    attacker = Client(http_client, base_url)
    response = await call(attacker, "POST", "/auth/login", {"email": "ana@example.com", "password": "wrong password!!"})
    assert response.code == 401
    after = await scrape(client)

    event = "session_security_events_total"
    assert total(after, event, event="login_failure") - total(before, event, event="login_failure") == 1
    assert total(after, event, event="login_success") == total(before, event, event="login_success")
    # the audit line reached its logger (and so every handler on it, not only the counter)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sessions.audit"]
    assert [e["event"] for e in lines].count("login_failure") == 1
    assert total(after, "http_requests_total", handler="LoginAPI", method="POST", status="401") >= 1


@pytest.mark.gen_test
async def test_a_tampered_cookie_is_counted_and_still_logged(client, caplog):
    caplog.set_level(logging.WARNING, logger="sessions.security")
    await client.fetch("/api/counter")
    assert (await client.fetch("/api/counter", "POST")).code == 200
    sid = client.jar.cookies["sid"]
    middle = len(sid) // 2
    client.jar.cookies["sid"] = sid[:middle] + ("A" if sid[middle] != "A" else "B") + sid[middle + 1 :]
    before = await scrape(client)
    response = await client.fetch("/api/counter")
    assert response.code == 200 and json.loads(response.body)["count"] == 0  # treated as absent
    after = await scrape(client)

    event = "session_security_events_total"
    assert total(after, event, event="cookie_rejected") - total(before, event, event="cookie_rejected") == 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sessions.security"]
    assert [(e["event"], e["cookie"]) for e in lines] == [("cookie_rejected", "sid")]


def test_configure_is_idempotent():
    metrics.configure()
    for name in ("sessions.audit", "sessions.security"):
        counters = [h for h in logging.getLogger(name).handlers if isinstance(h, metrics._EventCounter)]
        assert len(counters) == 1, name  # one counting handler: each event counted once


@pytest.mark.gen_test
async def test_password_hashing_time_is_observed(client):
    from tests.fixtures.api import register

    before = total(await scrape(client), "password_hash_seconds_count")
    await register(client)
    after = total(await scrape(client), "password_hash_seconds_count")
    assert after >= before + 1

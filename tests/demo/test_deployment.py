"""The deployment an operator builds from README "Deploying behind a proxy": Debian's
nginx running deploy/nginx.conf (TLS with a certificate made here, round-robin, no
stickiness) in front of two app hosts, ``server.py --processes 2 --production
--trusted-proxy 127.0.0.1`` on 127.0.0.2 and 127.0.0.3 with the same SESSION_KEYS,
over one shared store: Redis, then PostgreSQL (tests/fixtures/deployment.py).

Every request goes through nginx over HTTPS, from a client bound to a loopback source
address of its own (127.0.0.5 and others), so that the client's address, nginx's
(127.0.0.1) and a forged one (6.6.6.6) are told apart. Which host answered comes from
the test config's ``X-Upstream`` header (``$upstream_addr``; /health names the worker
process only, and the two hosts both have a worker 0 and 1). nginx's round-robin is
strict here (one client, the balancer's state shared by its workers through the
upstream ``zone``), so :meth:`Edge.aim` makes the next request land on a chosen host
by spending a /health on the other one, and every response checks where it landed.

Skipped when nginx is not installed, unless ``REQUIRE_MULTIHOST=1`` (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.netutil import DefaultLoopResolver, OverrideResolver
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.fixtures import deployment as deploy
from tests.fixtures.support import Client, parse_set_cookie

PASSWORD = "correct horse battery"
#: Login attempts per client address per 300 s on both hosts (low, to reach it quickly).
LOGIN_LIMIT = 6
HSTS = "max-age=31536000; includeSubDomains"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux (127.0.0.0/8 on lo, fork)")


# -- the deployment, once per store ------------------------------------------------------


def _nginx_or_skip() -> None:
    try:
        deploy.find_nginx()
    except deploy.NginxUnavailable as exc:
        if deploy.require_multihost():
            pytest.fail(f"REQUIRE_MULTIHOST=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))


def _redis_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server: its pub/sub channels are server-wide, so no other test shares it."""
    from tests.fixtures import redis_fixture

    redis_fixture._check_binaries()
    server = redis_fixture.RedisServerProcess(tmp_path_factory.mktemp("deploy-redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


def _postgres_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own on the run's PostgreSQL server (LISTEN/NOTIFY is per database)."""
    import psycopg

    server_url: str = request.getfixturevalue("postgres_server_url")
    name = f"ts_deploy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        try:
            with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass  # best effort: the server is thrown away at the end of the run


STORES = {"redis": _redis_url, "postgres": _postgres_url}


@pytest.fixture(scope="module", params=list(STORES), ids=list(STORES))
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[deploy.Deployment]:
    _nginx_or_skip()
    store_urls = STORES[request.param](request, tmp_path_factory)
    store_url = next(store_urls)
    started = time.monotonic()
    topology = deploy.Deployment(
        store_url,
        "--bcrypt-cost", "4",
        "--login-limit", f"{LOGIN_LIMIT}/300",
        "--register-limit", "1000/3600",
        # The safety-net re-check stays slow, so that a socket closed within a second on
        # the other host was closed by the store's event bus, not by the re-check.
        "--ws-recheck", "30",
    ).start()  # fmt: skip
    print(f"\n[{request.param}] deployment up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        yield topology
    finally:
        topology.stop()
        print(f"[{request.param}] deployment used for {time.monotonic() - started:.1f} s", file=sys.stderr)
        topology.remove()
        next(store_urls, None)  # its cleanup


# -- a client that goes through nginx -----------------------------------------------------


class Edge:
    """Tornado's HTTP client to nginx over HTTPS (trusting the test certificate only), from
    the loopback source address ``source``; remembers which host answered last."""

    last_upstream: dict[int, str | None] = {}  # id(deployment) -> the host that answered last

    def __init__(self, topology: deploy.Deployment, source: str = "127.0.0.5") -> None:
        self.topology, self.source = topology, source
        self.resolver = OverrideResolver(DefaultLoopResolver(), {deploy.SERVER_NAME: deploy.PROXY_ADDRESS})
        self.http = AsyncHTTPClient(
            force_instance=True,
            resolver=self.resolver,
            defaults={
                "ssl_options": topology.ssl_context,
                "network_interface": source,
                "request_timeout": 20,
            },
        )

    @property
    def base(self) -> str:
        return self.topology.base_url

    def record(self, upstream: str | None) -> None:
        Edge.last_upstream[id(self.topology)] = upstream

    async def fetch(self, url: str, **kwargs: Any) -> HTTPResponse:
        response = await self.http.fetch(url, **kwargs)
        if response.code != 599:
            self.record(response.headers.get("X-Upstream"))
        return response

    async def aim(self, upstream: str) -> None:
        """Make the next request (from anyone) land on ``upstream``: round-robin alternates.

        After a response nginx made itself (no X-Upstream), a /health learns where the
        round-robin stands first.
        """
        if Edge.last_upstream.get(id(self.topology)) is None:
            await self.fetch(self.base + "/health")
        if Edge.last_upstream.get(id(self.topology)) == upstream:
            await self.fetch(self.base + "/health")
        assert Edge.last_upstream.get(id(self.topology)) not in (None, upstream), Edge.last_upstream

    def client(self, **kwargs: Any) -> Client:
        return Client(self, self.base, **kwargs)

    async def websocket(self, client: Client, *, origin: str | None = None) -> WebSocketClientConnection:
        headers = {**client.jar.header(), "Origin": origin or self.base}
        request = HTTPRequest(
            self.base.replace("https", "wss", 1) + "/ws", headers=headers,
            ssl_options=self.topology.ssl_context, network_interface=self.source, connect_timeout=10,
        )  # fmt: skip
        try:
            conn = await websocket_connect(request, resolver=self.resolver)
        except HTTPClientError as exc:  # refused by a host (or nginx)
            self.record(exc.response.headers.get("X-Upstream") if exc.response is not None else None)
            raise
        self.record(conn.headers.get("X-Upstream"))
        return conn

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def edge(deployment: deploy.Deployment, io_loop: Any) -> Iterator[Edge]:
    made = Edge(deployment)
    yield made
    made.close()


def body(response: HTTPResponse) -> Any:
    return json.loads(response.body)


def upstream(response: HTTPResponse) -> str | None:
    return response.headers.get("X-Upstream")


async def call(client: Client, method: str, path: str, data: Any = None, **kw: Any) -> HTTPResponse:
    """A JSON call; fetches the XSRF cookie first when the client has none."""
    if client.xsrf_token() is None:
        await client.fetch("/auth/profile")
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    payload = None if data is None else json.dumps(data)
    return await client.fetch(path, method, payload, headers=headers, **kw)


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def register(client: Client, email: str, **kw: Any) -> dict[str, Any]:
    response = await call(
        client, "POST", "/auth/register", {"email": email, "name": "Ana", "password": PASSWORD}, **kw
    )
    assert response.code == 201, (response.code, response.body)
    return body(response)["user"]  # type: ignore[no-any-return]


def other_host(topology: deploy.Deployment, host: str | None) -> str:
    (other,) = [u for u in topology.upstreams if u != host]
    return other


# -- sessions across hosts ---------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_a_login_on_one_host_is_logged_in_on_the_other(deployment, edge):
    email = new_email()
    await register(edge.client(), email)
    ana = edge.client()
    a, b = deployment.upstreams
    await call(ana, "GET", "/auth/profile")  # the XSRF cookie
    await edge.aim(a)
    response = await call(ana, "POST", "/auth/login", {"email": email, "password": PASSWORD})
    assert response.code == 200 and upstream(response) == a, (response.code, upstream(response))
    assert "__Host-sid" in ana.jar.cookies
    # No stickiness: the next requests alternate between the hosts, each one logged in.
    served = []
    for _ in range(4):
        response = await call(ana, "GET", "/auth/profile")
        assert response.code == 200 and body(response)["user"]["email"] == email, response.body
        served.append(upstream(response))
    assert served == [b, a, b, a], served
    # the session made on one host shows up, with the client's address, on the other
    await edge.aim(b)
    listed = body(await call(ana, "GET", "/auth/sessions"))["sessions"]
    assert [s["ip"] for s in listed if s["current"]] == ["127.0.0.5"], listed


@pytest.mark.gen_test(timeout=60)
async def test_a_remember_me_restore_served_by_the_other_host(deployment, edge):
    email = new_email()
    await register(edge.client(), email)
    ana = edge.client()
    a, b = deployment.upstreams
    await call(ana, "GET", "/auth/profile")
    await edge.aim(a)
    response = await call(
        ana, "POST", "/auth/login", {"email": email, "password": PASSWORD, "remember": True}
    )
    assert response.code == 200 and upstream(response) == a
    token = ana.jar.cookies["__Host-remember"]
    del ana.jar.cookies["__Host-sid"]  # the browser was closed: its session cookie is gone
    await edge.aim(b)
    response = await call(ana, "GET", "/auth/profile")
    assert response.code == 200 and upstream(response) == b, (response.code, response.body)
    assert body(response)["user"]["email"] == email
    assert "__Host-sid" in ana.jar.cookies and ana.jar.cookies["__Host-remember"] != token  # rotated
    response = await call(ana, "GET", "/auth/sessions")  # back on host a, with what b issued
    assert response.code == 200 and upstream(response) == a
    current = [s for s in body(response)["sessions"] if s["current"] and s["kind"] == "session"]
    assert [s["signed_in_with"] for s in current] == ["remember_me"], current


# -- the client's address: audit log, rate limiter -----------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_the_login_rate_limit_is_shared_by_both_hosts(deployment, edge):
    source = "127.0.0.20"
    mallory_edge, other_edge = Edge(deployment, source), Edge(deployment, "127.0.0.21")
    mallory = mallory_edge.client()
    a, b = deployment.upstreams

    async def attempt(client: Client, **kw: Any) -> HTTPResponse:
        # an unknown account each time: only the per-address limit applies
        return await call(client, "POST", "/auth/login", {"email": new_email(), "password": PASSWORD}, **kw)

    served = []
    for _ in range(LOGIN_LIMIT):
        response = await attempt(mallory)
        assert response.code == 401, (response.code, response.body)
        served.append(upstream(response))
    assert set(served) == {a, b}  # each host saw only half of them
    refused = {}
    for host in (a, b, a, b):
        await mallory_edge.aim(host)
        response = await attempt(mallory)
        assert upstream(response) == host
        assert response.code == 429, (host, response.code, response.body)
        assert int(response.headers["Retry-After"]) > 0
        refused[host] = response.code
    assert set(refused) == {a, b}
    # A forged X-Forwarded-For is replaced by nginx: the limit still finds the real client.
    for forged in ("6.6.6.6", "127.0.0.21", f"6.6.6.6, {source}"):
        response = await attempt(mallory, headers={"X-Forwarded-For": forged, "X-Real-IP": "6.6.6.6"})
        assert response.code == 429, (forged, response.code)
    # Counted per client address, not per nginx (every connection comes from 127.0.0.1):
    # another client is not limited, even when it claims to be the limited one.
    other = other_edge.client()
    for _ in range(2):
        response = await attempt(other, headers={"X-Forwarded-For": source})
        assert response.code == 401, response.code
    mallory_edge.close()
    other_edge.close()


def audit_lines(topology: deploy.Deployment) -> list[dict[str, Any]]:
    """Every JSON event line both hosts' processes wrote (audit, security, access log)."""
    found = []
    for host in topology.hosts:
        for line in host.log(size=None).splitlines():
            start = line.find('{"event":')
            if start >= 0:
                try:
                    found.append({**json.loads(line[start:]), "_host": host.address})
                except ValueError:
                    continue
    return found


@pytest.mark.gen_test(timeout=60)
async def test_the_audit_log_sees_the_client_address_not_nginx_or_a_forged_one(deployment, edge):
    forged = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.7", "Forwarded": "for=6.6.6.8"}
    ana = edge.client(headers=forged)
    email = new_email()
    user = await register(ana, email)
    marker = uuid.uuid4().hex
    paths = []
    for host in deployment.upstreams:  # one request on each host, marked
        await edge.aim(host)
        paths.append(f"/health?probe={marker}-{host}")
        assert upstream(await ana.fetch(paths[-1])) == host
    await edge.aim(deployment.upstreams[1])
    wrong = await call(ana, "POST", "/auth/login", {"email": email, "password": "not the password!!"})
    assert wrong.code == 401
    right = await call(ana, "POST", "/auth/login", {"email": email, "password": PASSWORD})
    assert right.code == 200 and upstream(wrong) != upstream(right)
    listed = body(await call(ana, "GET", "/auth/sessions"))["sessions"]
    assert {s["ip"] for s in listed} == {"127.0.0.5"}, listed

    deadline = time.monotonic() + 5
    while True:  # the log lines are written as the responses go out
        lines = audit_lines(deployment)
        probes = [line for line in lines if line.get("path") in paths]
        logins = [
            line for line in lines if line.get("user") == user["id"] and line["event"] == "login_success"
        ]
        failures = [
            line for line in lines if line["event"] == "login_failure" and line.get("remote") == "127.0.0.5"
        ]
        if len(probes) == 2 and logins and failures or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert {p["_host"] for p in probes} == set(deploy.HOST_ADDRESSES), probes
    assert {p["remote"] for p in probes} == {"127.0.0.5"}, probes
    assert logins and {line["remote"] for line in logins} == {"127.0.0.5"}, logins
    assert failures, "no login_failure line with the client's address"
    everything = "\n".join(host.log(size=None) for host in deployment.hosts)
    assert "6.6.6." not in everything  # no forged address reached a log line


# -- production mode over HTTPS ------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_production_cookies_are_host_prefixed_and_secure_with_hsts_on_every_response(deployment, edge):
    ana = edge.client()
    email = new_email()
    responses = [await ana.fetch("/"), await ana.fetch("/login")]
    await register(ana, email)
    responses.append(
        await call(ana, "POST", "/auth/login", {"email": email, "password": PASSWORD, "remember": True})
    )
    responses += [
        await call(ana, "POST", "/auth/login", {"email": email, "password": "wrong wrong wrong"}),
        await ana.fetch("/no/such/page"),
        await call(ana, "POST", "/preferences/theme", {"theme": "dark"}),
        await ana.fetch("/api/counter"),
        await call(ana, "POST", "/api/counter"),
        await ana.fetch("/favicon.ico"),
        await call(ana, "POST", "/auth/logout"),
    ]
    set_cookies = []
    for response in responses:
        assert upstream(response) in deployment.upstreams, (response.effective_url, response.code)
        assert response.headers.get_list("Strict-Transport-Security") == [HSTS], response.effective_url
        server = response.headers.get("Server")
        assert server in (None, "nginx"), server  # no version (server_tokens off), no app banner
        set_cookies += response.headers.get_list("Set-Cookie")
    names = set()
    for header in set_cookies:
        name, _, attrs = parse_set_cookie(header)
        names.add(name)
        assert name.startswith("__Host-"), header
        assert attrs.get("secure") is True and attrs.get("path") == "/" and "domain" not in attrs, header
    assert {"__Host-sid", "__Host-remember", "__Host-xsrf"} <= names, names
    # Plain HTTP on port 80 only redirects to HTTPS (nothing reaches the app).
    plain = AsyncHTTPClient(force_instance=True)
    try:
        response = await plain.fetch(
            f"http://{deploy.PROXY_ADDRESS}:{deployment.http_port}/login?x=1", headers={"Host": "localhost"},
            follow_redirects=False, raise_error=False,
        )  # fmt: skip
    finally:
        plain.close()
    assert response.code == 301 and response.headers["Location"] == "https://localhost/login?x=1"
    assert "X-Upstream" not in response.headers


@pytest.mark.gen_test(timeout=60)
async def test_nginx_refuses_bodies_over_the_apps_limit_and_unknown_host_names(deployment, edge):
    client = edge.client()
    await client.fetch("/auth/profile")  # the XSRF cookie
    headers = {"Content-Type": "application/json"}
    at_limit = await client.fetch("/auth/login", "POST", b" " * 65536, headers=headers)
    assert at_limit.code == 400 and upstream(at_limit) in deployment.upstreams  # the app read it (not JSON)
    over = await client.fetch("/auth/login", "POST", b" " * 65537, headers=headers)
    assert over.code == 413 and "X-Upstream" not in over.headers  # nginx answered, the app saw nothing
    # TLS for any other name (here: none, a bare IP address sends no SNI) is refused.
    raw = AsyncHTTPClient(force_instance=True)
    try:
        with pytest.raises((ssl.SSLError, OSError, HTTPClientError)):
            await raw.fetch(
                f"https://{deploy.PROXY_ADDRESS}:{deployment.https_port}/health",
                ssl_options=ssl.create_default_context(cafile=str(deployment.cert)),
            )
    finally:
        raw.close()
    # A Host header naming another site, over a valid handshake: closed, no answer.
    with pytest.raises(HTTPClientError) as closed:  # nginx's 444: the connection closed unanswered
        await client.fetch("/health", headers={"Host": "evil.example"})
    assert closed.value.code == 599, closed.value


# -- websockets through nginx (the store's event bus carries events between hosts) --------------


async def next_message(conn: WebSocketClientConnection, kind: str, within: float) -> dict[str, Any]:
    """The next message of type ``kind`` (others skipped); AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        try:
            raw = await asyncio.wait_for(conn.read_message(), max(remaining, 0.001))
        except TimeoutError:
            raise AssertionError(f"no {kind!r} message within {within} s") from None
        assert raw is not None, f"closed ({conn.close_code} {conn.close_reason}) before a {kind!r} message"
        message = json.loads(raw)
        if message.get("type") == kind:
            return message  # type: ignore[no-any-return]


async def closed_within(conn: WebSocketClientConnection, seconds: float) -> tuple[int | None, float]:
    started = time.monotonic()
    while True:
        remaining = seconds - (time.monotonic() - started)
        try:
            raw = await asyncio.wait_for(conn.read_message(), max(remaining, 0.001))
        except TimeoutError:
            raise AssertionError(f"socket still open after {seconds} s") from None
        if raw is None:
            return conn.close_code, time.monotonic() - started


async def logged_in(edge: Edge) -> Client:
    client = edge.client()
    await register(client, new_email())
    return client


@pytest.mark.gen_test(timeout=60)
async def test_websockets_pass_through_nginx_with_the_origin_check_intact(deployment, edge):
    ana = await logged_in(edge)
    conn = await edge.websocket(ana)
    try:
        welcome = await next_message(conn, "welcome", 5)
        assert welcome["worker"] in (0, 1) and conn.headers["X-Upstream"] in deployment.upstreams
        conn.write_message(json.dumps({"type": "ping", "id": 7}))
        assert (await next_message(conn, "pong", 5))["id"] == 7
    finally:
        conn.close()
    with pytest.raises(HTTPClientError) as refused:
        await edge.websocket(ana, origin="https://evil.example")
    assert refused.value.code == 403
    with pytest.raises(HTTPClientError) as refused:
        await edge.websocket(edge.client())  # no session
    assert refused.value.code == 403


@pytest.mark.gen_test(timeout=60)
async def test_logout_everywhere_through_host_a_closes_a_socket_on_host_b_within_a_second(deployment, edge):
    a, b = deployment.upstreams
    ana = await logged_in(edge)
    await edge.aim(b)
    conn = await edge.websocket(ana)
    try:
        assert conn.headers["X-Upstream"] == b
        await next_message(conn, "welcome", 5)
        await edge.aim(a)
        started = time.monotonic()
        response = await call(ana, "POST", "/auth/logout-all")
        assert response.code == 200 and upstream(response) == a, (response.code, response.body)
        code, _ = await closed_within(conn, 5)
        took = time.monotonic() - started  # from sending the logout on host a
        assert code == 1008, (code, conn.close_reason)
        assert took <= 1.0, f"closed {took:.2f} s after the logout was sent"
    finally:
        conn.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_chat_message_from_a_socket_on_host_a_reaches_a_socket_on_host_b(deployment, edge):
    a, b = deployment.upstreams
    ana, bob = await logged_in(edge), await logged_in(edge)
    ana_id = body(await call(ana, "GET", "/auth/profile"))["user"]["id"]
    await edge.aim(a)
    on_a = await edge.websocket(ana)
    await edge.aim(b)
    on_b = await edge.websocket(bob)
    try:
        assert (on_a.headers["X-Upstream"], on_b.headers["X-Upstream"]) == (a, b)
        await next_message(on_a, "welcome", 5)
        await next_message(on_b, "welcome", 5)
        text = f"hello from {a} {uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        on_a.write_message(json.dumps({"type": "chat", "text": text}))
        assert (await next_message(on_a, "chat", 5))["text"] == text  # the sender's own host
        received = await next_message(on_b, "chat", 5)
        took = time.monotonic() - started
        assert received["text"] == text and received["from"]["id"] == ana_id, received
        assert took <= 1.0, f"reached host b {took:.2f} s after it was sent"
    finally:
        on_a.close()
        on_b.close()


def test_the_shipped_config_is_what_runs(deployment):
    """deploy/nginx.conf with only addresses, ports, paths, certificate and X-Upstream changed."""
    shipped = deploy.SHIPPED_CONF.read_text()
    running = deployment.nginx.conf_path.read_text()
    for directive in (
        "proxy_set_header X-Forwarded-For   $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "client_max_body_size 64k;",
        "server_tokens off;",
        "proxy_set_header Connection        $connection_upgrade;",
        "ssl_reject_handshake on;",
    ):
        assert directive in shipped and running.count(directive) == shipped.count(directive), directive
    directives = "\n".join(line.partition("#")[0] for line in running.splitlines())  # comments dropped
    assert "ip_hash" not in directives and "sticky" not in directives
    assert "proxy_add_x_forwarded_for" not in directives
    assert os.stat(deployment.hosts[0].data_dir).st_mode & 0o777 == 0o700

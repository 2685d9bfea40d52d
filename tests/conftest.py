import logging

import pytest

# The public contract suite's asserts get pytest's detailed messages (before anything imports it).
pytest.register_assert_rewrite("sessions.testing")

# The fixture plugins (tests/fixtures/): the demo app on its real server class; the real
# servers the tests start (FerretDB, Redis, PostgreSQL, Toxiproxy); Chromium for the
# browser tests; the demo's /ws.
pytest_plugins = [
    "tests.fixtures.demo_fixtures",
    "tests.fixtures.websocket",
    "tests.fixtures.mongo_fixture",
    "tests.fixtures.redis_fixture",
    "tests.fixtures.postgres_fixture",
    "tests.fixtures.toxiproxy_fixture",
    "tests.fixtures.browser",
]

logging.getLogger("sessions").setLevel(logging.DEBUG)


from sessions.testing import FakeClock  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    """A clock for the manager and the stores that moves only when a test says so."""
    return FakeClock()

import logging

# FerretDB/MongoDB fixtures: mongo_url, mongo_db_name, mongo_server_factory.
pytest_plugins = ["tests.demo_fixtures", "tests.mongo_fixture", "tests.redis_fixture", "tests.postgres_fixture"]

logging.getLogger("sessions").setLevel(logging.DEBUG)


import pytest  # noqa: E402

from tests.support import FakeClock  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    """A clock for the manager and the stores that moves only when a test says so."""
    return FakeClock()

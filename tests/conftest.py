import logging

# FerretDB/MongoDB fixtures: mongo_url, mongo_db_name, mongo_server_factory.
pytest_plugins = ["tests.mongo_fixture"]

logging.getLogger("sessions").setLevel(logging.DEBUG)

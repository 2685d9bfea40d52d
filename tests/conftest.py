import importlib.util
import logging

pytest_plugins = ["tests.mongo_fixture"] if importlib.util.find_spec("tests.mongo_fixture") else []

logging.getLogger("sessions").setLevel(logging.DEBUG)

"""Session backends behind one async interface; pick one by URL with :func:`open_store`.

The registry maps a URL scheme to a factory named as ``"module:callable"`` so that a
backend's driver (pymongo, redis, psycopg) is imported only when that backend is
used. A factory takes the URL and keyword options (a store class whose constructor
takes a URL is its own factory); :func:`open_store` checks the
options against the factory's signature first, so a misspelt option is a clear
``ValueError`` instead of being dropped.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .base import KEEP, Clock, Record, Store, StoreError

__all__ = ["KEEP", "Clock", "Record", "Store", "StoreError", "open_store", "register_store", "store_schemes"]

StoreFactory = Callable[..., Store]

_REGISTRY: dict[str, str | StoreFactory] = {}


def register_store(schemes: str | Iterable[str], factory: str | StoreFactory) -> None:
    """Make ``open_store`` build ``factory(url, **options)`` for URLs of these schemes.

    ``factory`` is a callable or a ``"module:attribute"`` path imported on first use.
    """
    for scheme in [schemes] if isinstance(schemes, str) else schemes:
        _REGISTRY[scheme.lower()] = factory


def store_schemes() -> list[str]:
    """The URL schemes ``open_store`` knows, for help texts."""
    return sorted(_REGISTRY)


def _resolve(factory: str | StoreFactory) -> StoreFactory:
    if not isinstance(factory, str):
        return factory
    module_name, _, attribute = factory.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


def _check_options(scheme: str, factory: StoreFactory, options: dict[str, object]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    params = list(signature.parameters.values())[1:]  # the first one takes the URL
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"the {scheme}:// store takes no option {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'none'}"
        )


def open_store(url: str, **options: object) -> Store:
    """Build the store a URL names, e.g. ``sqlite:///var/sessions.db`` or ``mongodb://host/db``.

    Raises ValueError for an unknown scheme or option, ImportError when the backend's
    driver is not installed.
    """
    scheme, sep, _ = url.partition("://")
    factory = _REGISTRY.get(scheme.lower()) if sep else None
    if factory is None:
        known = ", ".join(f"{s}://" for s in store_schemes())
        raise ValueError(f"unknown store URL {url!r}: use one of {known}")
    try:
        resolved = _resolve(factory)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get(scheme.lower())
        hint = f'pip install "tornado-sessions[{extra}]"' if extra else f"install the {exc.name} package"
        raise ImportError(
            f"the {scheme}:// store needs the {exc.name!r} driver, which is not installed: {hint}", name=exc.name
        ) from exc
    _check_options(scheme.lower(), resolved, options)
    return resolved(url, **options)


#: The extra of setup.cfg that installs each built-in scheme's driver.
_EXTRAS = {
    "mongodb": "mongo", "mongodb+srv": "mongo",
    "redis": "redis", "rediss": "redis", "redis+cluster": "redis", "rediss+cluster": "redis",
    "postgresql": "postgres", "postgres": "postgres",
}


register_store("memory", "sessions.stores.memory:MemoryStore.from_url")
register_store("sqlite", "sessions.stores.sqlite:SQLiteStore.from_url")
register_store(("mongodb", "mongodb+srv"), "sessions.stores.mongo:MongoStore")
register_store(("redis", "rediss", "redis+cluster", "rediss+cluster"), "sessions.stores.redis:RedisStore")
register_store(("postgresql", "postgres"), "sessions.stores.postgres:PostgresStore")

"""What the stores that talk to a server share: driver errors, readiness, closing.

* :class:`DriverErrors` turns a driver's exceptions into :class:`StoreError`, so that
  callers answer 503 the same way whatever the backend.
* :class:`Lifecycle` prepares a store once, on first use (indexes, schema, cluster
  discovery), race-free, and refuses work once the store is closed.
* :func:`split_legacy_kind` reads the kind of a record written before records had one.

The background prune task is :class:`sessions.stores.pruning.PruneLoop`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from .base import DEFAULT_KIND, StoreError

__all__ = ["DriverErrors", "Lifecycle", "split_legacy_kind"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _HasLifecycle(Protocol):
    _lifecycle: Lifecycle


_S = TypeVar("_S", bound=_HasLifecycle)


class DriverErrors:
    """The exceptions one store's driver raises, turned into :class:`StoreError`.

    Decorate a store's async methods with the instance::

        _errors = DriverErrors("postgresql", (psycopg.Error, OSError))

        @_errors
        async def load(self, key): ...

    The StoreError's message is one line, ``"postgresql load failed: OperationalError:
    <the driver's text>"``: the store, the operation, the exception's type and text, with
    no traceback and no line breaks. The driver's exception stays attached as
    ``__cause__`` for whoever logs it with its traceback. Other exceptions pass through.
    """

    def __init__(
        self,
        store: str,
        errors: tuple[type[BaseException], ...],
        *,
        driver_bugs: tuple[type[BaseException], ...] = (),
        driver_package: str | None = None,
    ) -> None:
        """``driver_bugs``: exception types that count as a driver failure too, but only when
        raised inside ``driver_package`` (a driver's own bug under a failing server, such
        as redis-py's cluster client touching a connection another task just closed)."""
        self.store = store
        self.errors = errors
        self.driver_bugs = driver_bugs
        self._package_marker = f"/{driver_package}/" if driver_package else None

    def is_failure(self, exc: BaseException) -> bool:
        """True when ``exc`` is the driver failing (its errors, or one of ``driver_bugs`` raised inside it)."""
        return isinstance(exc, self.errors) or (isinstance(exc, self.driver_bugs) and self.raised_in_driver(exc))

    def raised_in_driver(self, exc: BaseException) -> bool:
        """True when the innermost frame of ``exc``'s traceback is in the driver's package."""
        marker = self._package_marker
        tb = exc.__traceback__
        if marker is None or tb is None:
            return False
        while tb.tb_next is not None:
            tb = tb.tb_next
        return marker in tb.tb_frame.f_code.co_filename.replace("\\", "/")

    def translate(self, op: str, exc: BaseException) -> StoreError:
        """The StoreError for ``exc`` raised during ``op`` (raise it ``from exc``)."""
        text = " ".join(str(exc).split())
        return StoreError(f"{self.store} {op} failed: {type(exc).__name__}" + (f": {text}" if text else ""))

    def __call__(self, method: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        op = method.__name__

        @functools.wraps(method)
        async def translated(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            try:
                return await method(*args, **kwargs)
            except Exception as exc:
                if not self.is_failure(exc):
                    raise
                raise self.translate(op, exc) from exc

        return translated

    def ready_first(
        self, method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]
    ) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
        """Like the plain decorator, after the store's :class:`Lifecycle` is ready (``store._lifecycle``)."""

        @functools.wraps(method)
        async def ready(store: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            await store._lifecycle.ensure_ready()
            return await method(store, *args, **kwargs)

        return self(ready)


class Lifecycle:
    """Prepare a store once before its first use; refuse every call once it is closed.

    ``prepare`` (creating indexes or a schema, discovering a cluster) runs under a lock,
    so concurrent first calls run it once; when it fails, the next call tries again.
    After :meth:`close`, :meth:`ensure_ready` and :meth:`check_open` raise
    ``StoreError("<store> store is closed")``.
    """

    def __init__(self, store: str, prepare: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self._prepare = prepare
        self._lock = asyncio.Lock()
        self.ready = prepare is None
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise StoreError(f"{self.store} store is closed")

    async def ensure_ready(self) -> None:
        if self.ready:
            return
        self.check_open()
        async with self._lock:
            self.check_open()
            if not self.ready and self._prepare is not None:
                await self._prepare()
            self.ready = True

    def close(self) -> None:
        """Refuse every later call (stopping tasks and connections is the store's part)."""
        self.closed = True
        self.ready = False


def split_legacy_kind(stored: str | None, meta: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The kind and meta of a record as read back, also one written before records had a kind.

    Such a record (``stored`` is None) marked its kind in ``meta["kind"]`` (remember-me
    tokens did); that mark becomes the kind and leaves the meta. Records without either
    are sessions.
    """
    if stored is not None:
        return stored, dict(meta)
    rest = dict(meta)
    return rest.pop("kind", DEFAULT_KIND), rest

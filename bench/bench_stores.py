"""What the Redis, Redis Cluster and PostgreSQL session stores cost over their bare drivers, in one run.

For each backend it starts a private server (as the tests do: redis-server, a
three-master cluster, initdb/pg_ctl), seeds sessions, and times the store's load
and save against the raw driver calls an app would write by hand, on the same
client, interleaved call by call (method and figures as in bench_mongo_store.py):

* Redis load: ``store.load`` vs ``HGETALL``; save: ``store.update`` (a conditional
  Lua script) vs an unconditional ``MULTI HSET PEXPIREAT EXEC``.
* PostgreSQL load: ``store.load`` vs the same ``SELECT``; save: ``store.update`` vs a
  hand-written ``UPDATE ... SET data = data || $1 ... WHERE key = $2 AND expires > now()``.

Target: the store adds at most 15% at p50.

    .venv/bin/python bench/bench_stores.py [--runs 5] [--ops 400] [--only redis,cluster,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_mongo_store import paired_rounds, seed  # noqa: E402

from sessions.stores.base import Store  # noqa: E402
from sessions.stores.postgres import PostgresStore  # noqa: E402
from sessions.stores.redis import RedisStore  # noqa: E402
from tests.fixtures.postgres_fixture import PostgresServer  # noqa: E402
from tests.fixtures.redis_fixture import RedisCluster, RedisServerProcess  # noqa: E402

Op = Callable[[str], Awaitable[Any]]
TTL = 600.0


def redis_ops(store: RedisStore) -> dict[tuple[str, str], Op]:
    client = store.client

    async def raw_load(key: str) -> Any:
        return await client.hgetall(store.session_key(key))

    async def raw_save(key: str) -> Any:
        now = time.time()
        name = store.session_key(key)
        pipe = client.pipeline(transaction=True)
        pipe.hset(name, mapping={"d:counter": "1", "expires": repr(now + TTL), "updated": repr(now)})
        pipe.pexpireat(name, math.ceil((now + TTL) * 1000))
        return await pipe.execute()

    return _with_store_ops(store, raw_load, raw_save)


def postgres_ops(store: PostgresStore) -> dict[tuple[str, str], Op]:
    table = store.qualified_name
    load_sql = (
        "SELECT data, extract(epoch FROM created)::float8, extract(epoch FROM updated)::float8, "
        f"extract(epoch FROM expires)::float8, user_id, meta FROM {table} WHERE key = %s AND expires > now()"
    )
    save_sql = (
        f"UPDATE {table} SET data = data || %s::jsonb, expires = to_timestamp(%s), updated = to_timestamp(%s) "
        "WHERE key = %s AND expires > now()"
    )

    async def raw_load(key: str) -> Any:
        async with store.pool.connection() as conn:
            return await (await conn.execute(load_sql, (key,))).fetchone()

    async def raw_save(key: str) -> Any:
        now = time.time()
        async with store.pool.connection() as conn:
            return (await conn.execute(save_sql, ('{"counter": "1"}', now + TTL, now, key))).rowcount

    return _with_store_ops(store, raw_load, raw_save)


def _with_store_ops(store: Store, raw_load: Op, raw_save: Op) -> dict[tuple[str, str], Op]:
    async def store_load(key: str) -> Any:
        return await store.load(key)

    async def store_save(key: str) -> Any:
        now = time.time()
        return await store.update(key, set_items={"counter": "1"}, unset_keys=(), expires=now + TTL, updated=now)

    return {("load", "raw"): raw_load, ("load", "store"): store_load,
            ("save", "raw"): raw_save, ("save", "store"): store_save}  # fmt: skip


async def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    store: Store
    if name == "postgres":
        pg = PostgresStore(url, table=f"bench_{uuid.uuid4().hex[:8]}", prune_interval=None)
        store, ops = pg, postgres_ops(pg)
    else:
        rs = RedisStore(url, prefix=f"bench-{uuid.uuid4().hex[:8]}:")
        store, ops = rs, redis_ops(rs)
    try:
        await store.setup()
        return await paired_rounds(ops, await seed(store, args.sessions), args)
    finally:
        await store.close()


def report(name: str, results: dict[str, Any]) -> str:
    lines = [f"\n{name}", f"{'operation':<10}{'impl':<8}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}{'client CPU µs':>15}"]
    for key, figures in results.items():
        op, impl = key.split("/")
        lines.append(f"{op:<10}{impl:<8}{figures['p50'] * 1e6:>10.0f}{figures['p99'] * 1e6:>10.0f}"
                     f"{figures['ops']:>10.0f}{figures['cpu'] * 1e6:>15.1f}")  # fmt: skip
    for op in ("load", "save"):
        store, raw = results[f"{op}/store"], results[f"{op}/raw"]
        lines.append(f"  {op}: store/raw p50 x{store['p50'] / raw['p50']:.3f}, throughput x{raw['ops'] / store['ops']:.3f}"
                     f" (target p50 <= 1.15)")  # fmt: skip
    return "\n".join(lines)


@contextlib.contextmanager
def running(server: Any, stop: str = "stop") -> Iterator[str]:
    """A started server's URL; the server is stopped (``stop`` names the method) after."""
    try:
        yield server.url
    finally:
        getattr(server, stop)()


#: Each backend's private server for the run, yielding its URL.
SERVERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[str]]] = {
    "redis": lambda folder: running(RedisServerProcess(folder).start()),
    "cluster": lambda folder: running(RedisCluster(folder).start()),
    "postgres": lambda folder: running(PostgresServer().start(), stop="destroy"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="redis,cluster,postgres")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--ops", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp:
        for name in args.only.split(","):
            if name not in SERVERS:
                parser.error(f"unknown backend {name!r}")
            with SERVERS[name](Path(tmp) / name) as url:
                summary[name] = asyncio.run(run_backend(name, url, args))
            print(report(name, summary[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

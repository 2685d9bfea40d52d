"""What the Mongo session store costs over the bare driver, measured in one run.

Loads and saves through :class:`sessions.stores.mongo.MongoStore` against the raw
PyMongo calls they stand for, on the same server, client, collection and
documents, interleaved run by run:

* load: ``store.load(key)`` vs ``find_one({"_id": key})``
* save: ``store.update(key, set_items={...})`` vs the same ``update_one``
  (``{_id, expires > now}`` filter, ``$set`` of one ``data.<key>`` field plus
  ``expires`` and ``updated``)

Latency is timed one call at a time; throughput with ``--concurrency`` tasks.
Each figure is the median over ``--runs`` runs after a warm-up. The store's
target is at most 15% over the raw calls.

By default it builds and starts its own FerretDB (tests/fixtures/mongo_server, as the
tests do, needs Go); ``--url`` or ``MONGODB_URL`` measures an existing server.

    .venv/bin/python bench/bench_mongo_store.py [--runs 5] [--ops 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pymongo import AsyncMongoClient  # noqa: E402

from sessions.stores.base import Record, Store  # noqa: E402
from sessions.stores.mongo import MongoStore  # noqa: E402
from tests.fixtures.mongo_fixture import start_mongo_server  # noqa: E402

Op = Callable[[str], Awaitable[Any]]
UTC = UTC
TTL = 600.0


def make_ops(store: MongoStore, client: AsyncMongoClient, database: str) -> dict[tuple[str, str], Op]:
    """The four measured calls, keyed by (operation, implementation)."""
    raw = client[database]["sessions"]  # the driver's defaults, as an app would use it

    async def store_load(key: str) -> Any:
        return await store.load(key)

    async def raw_load(key: str) -> Any:
        return await raw.find_one({"_id": key})

    async def store_save(key: str) -> Any:
        now = time.time()
        return await store.update(
            key, set_items={"counter": "1"}, unset_keys=(), expires=now + TTL, updated=now
        )

    async def raw_save(key: str) -> Any:
        now = datetime.now(UTC)
        return await raw.update_one(
            {"_id": key, "expires": {"$gt": now}},
            {"$set": {"data.counter": "1", "expires": now + timedelta(seconds=TTL), "updated": now}},
        )

    return {
        ("load", "raw"): raw_load,
        ("load", "store"): store_load,
        ("save", "raw"): raw_save,
        ("save", "store"): store_save,
    }


async def paired_latency(raw: Op, store: Op, keys: list[str]) -> dict[str, dict[str, list[float]]]:
    """Wall and client-CPU seconds per call, one call at a time, raw and store alternating.

    Pairing the calls puts both under the same server conditions (its GC, other
    load on the machine), which batch-by-batch timing would not. The CPU time of
    this thread per call is what the client side costs whatever the server's
    speed, so it shows what the store would add on a faster server too.
    """
    times: dict[str, dict[str, list[float]]] = {
        "raw": {"wall": [], "cpu": []},
        "store": {"wall": [], "cpu": []},
    }
    wall, cpu = time.perf_counter, time.thread_time
    for i, key in enumerate(keys):
        pair = (("raw", raw), ("store", store))
        for impl, op in pair if i % 2 == 0 else reversed(pair):
            wall_started, cpu_started = wall(), cpu()
            await op(key)
            times[impl]["cpu"].append(cpu() - cpu_started)
            times[impl]["wall"].append(wall() - wall_started)
    return times


async def paired_throughput(
    raw: Op, store: Op, keys: list[str], concurrency: int, rounds: int = 4
) -> dict[str, float]:
    """Calls per second with ``concurrency`` tasks, raw and store in alternating rounds.

    The keys are split into ``rounds`` batches and each batch runs through both
    sides in turn (order alternating), so slow spells on a shared machine fall on
    both sides rather than on whichever ran second.
    """

    async def batch(op: Op, batch_keys: list[str]) -> float:
        async def worker(chunk: list[str]) -> None:
            for key in chunk:
                await op(key)

        started = time.perf_counter()
        await asyncio.gather(*(worker(batch_keys[i::concurrency]) for i in range(concurrency)))
        return time.perf_counter() - started

    spent = {"raw": 0.0, "store": 0.0}
    for r in range(rounds):
        batch_keys = keys[r::rounds]
        pair = (("raw", raw), ("store", store))
        for impl, op in pair if r % 2 == 0 else reversed(pair):
            spent[impl] += await batch(op, batch_keys)
    return {impl: len(keys) / seconds for impl, seconds in spent.items()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed(store: Store, count: int) -> list[str]:
    keys = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(count)]
    now = time.time()
    for i, key in enumerate(keys):
        data = {"user": f'"user{i}"', "csrf": f'"{uuid.uuid4().hex}"', "cart": "[1, 2, 3]", "flash": "[]"}
        await store.create(
            key, Record(data=data, created=now, updated=now, expires=now + 3600, user_id=f"user{i}")
        )
    return keys


async def paired_rounds(
    ops: dict[tuple[str, str], Op], keys: list[str], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Load and save, raw against store: a warm-up, then ``args.runs`` rounds of latency and
    throughput on a sample of ``args.ops`` keys; the median of each figure over the rounds."""
    rng = random.Random(1)
    sample = [rng.choice(keys) for _ in range(args.ops)]
    for op in ("load", "save"):
        await paired_latency(ops[op, "raw"], ops[op, "store"], sample[: args.warmup])
    results: dict[tuple[str, str], dict[str, list[float]]] = {
        name: {"p50": [], "p99": [], "cpu": [], "ops": []} for name in ops
    }
    for _ in range(args.runs):
        for op in ("load", "save"):
            paired = await paired_latency(ops[op, "raw"], ops[op, "store"], sample)
            for impl, timings in paired.items():
                results[op, impl]["p50"].append(statistics.median(timings["wall"]))
                results[op, impl]["p99"].append(percentile(timings["wall"], 0.99))
                results[op, impl]["cpu"].append(statistics.mean(timings["cpu"]))
            rates = await paired_throughput(ops[op, "raw"], ops[op, "store"], sample, args.concurrency)
            for impl, rate in rates.items():
                results[op, impl]["ops"].append(rate)
    return {
        f"{op}/{impl}": {metric: statistics.median(values) for metric, values in figures.items()}
        for (op, impl), figures in results.items()
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    database = f"bench_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
    # Pruning is background work, not part of a call: keep it out of the timings.
    store = MongoStore(client, database=database, prune_interval=3600)
    try:
        await store.setup()
        keys = await seed(store, args.sessions)
        results = await paired_rounds(make_ops(store, client, database), keys, args)
        return {
            "server": (await client.admin.command("buildInfo")).get("version"),
            "ferretdb": "ferretdbVersion" in (await client.admin.command("buildInfo")),
            "sessions": args.sessions,
            "ops_per_run": args.ops,
            "runs": args.runs,
            "concurrency": args.concurrency,
            "results": results,
        }
    finally:
        await store.close()
        await client.drop_database(database)
        await client.close()


def report(summary: dict[str, Any]) -> str:
    results = summary["results"]
    lines = [
        f"Mongo store vs raw PyMongo ({'FerretDB' if summary['ferretdb'] else 'MongoDB'} "
        f"{summary['server']}, {summary['sessions']} sessions, {summary['ops_per_run']} calls x "
        f"median of {summary['runs']} runs, throughput at concurrency {summary['concurrency']})",
        "",
        f"{'operation':<10}{'impl':<8}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}{'client CPU µs':>15}",
    ]
    for name, figures in results.items():
        op, impl = name.split("/")
        lines.append(
            f"{op:<10}{impl:<8}{figures['p50'] * 1e6:>10.0f}{figures['p99'] * 1e6:>10.0f}"
            f"{figures['ops']:>10.0f}{figures['cpu'] * 1e6:>15.1f}"
        )
    lines.append("")
    lines.append(
        f"{'store vs raw':<14}{'p50 latency':>12}{'throughput':>12}{'added CPU µs':>14}   (target: latency <= 1.15)"
    )
    for op in ("load", "save"):
        store, raw = results[f"{op}/store"], results[f"{op}/raw"]
        lines.append(
            f"{op:<14}{store['p50'] / raw['p50']:>12.3f}{raw['ops'] / store['ops']:>12.3f}"
            f"{(store['cpu'] - raw['cpu']) * 1e6:>14.1f}"
        )
    lines.append("(throughput column: raw calls/s over store calls/s, so above 1 means the store is slower)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("MONGODB_URL"), help="existing server (default: start FerretDB)"
    )
    parser.add_argument("--sessions", type=int, default=200, help="sessions in the collection")
    parser.add_argument("--ops", type=int, default=400, help="calls per measurement")
    parser.add_argument("--warmup", type=int, default=100, help="calls per implementation before measuring")
    parser.add_argument("--runs", type=int, default=5, help="runs; figures are medians over runs (>= 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks for the throughput figure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3")

    server = None
    url = args.url
    with tempfile.TemporaryDirectory(prefix="bench-ferretdb-") as tmp:
        if not url:
            server = start_mongo_server(Path(tmp) / "data")
            url = server.url
        try:
            summary = asyncio.run(measure(url, args))
        finally:
            if server is not None:
                server.stop()
    print(report(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

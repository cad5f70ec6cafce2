#!/usr/bin/env python3
"""pgqueuer as a peer of hodei's Postgres queue (benches/benches/queue.rs).

Pre-fills N no-op jobs (1,000 per enqueue call), then K QueueManagers, each
on its own asyncpg connection and fetching `--batch` jobs per dequeue, drain
the queue; jobs/s is N over the time until the last job is done and the
queue table is empty. Prints one JSON line:
{"n":..,"k":..,"enqueue_per_s":..,"jobs_per_s":..,"dead":..,"version":..}

    pip install pgqueuer asyncpg
    python3 benches/peers/pgqueuer_bench.py --dsn postgres://... --n 100000 --k 8

All K managers run in this one Python process (one core for the Python side).
"""

import argparse
import asyncio
import json
import time
from datetime import timedelta

import asyncpg
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.core.qm import QueueManager
from pgqueuer.domain.types import QueueExecutionMode
from pgqueuer import __version__ as PGQ_VERSION

ENQUEUE_BATCH = 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10)
    a = ap.parse_args()

    admin = await asyncpg.connect(a.dsn)
    q = Queries(AsyncpgDriver(admin))
    installed = await admin.fetchval("SELECT to_regclass('pgqueuer') IS NOT NULL")
    if not installed:
        await q.install()
    await admin.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
    await admin.execute("VACUUM pgqueuer")

    t = time.perf_counter()
    left = a.n
    while left > 0:
        m = min(left, ENQUEUE_BATCH)
        await q.enqueue(["noop"] * m, [None] * m, [0] * m)
        left -= m
    enqueue_per_s = a.n / (time.perf_counter() - t)

    done = 0

    conns = [await asyncpg.connect(a.dsn) for _ in range(a.k)]
    managers = []
    for c in conns:
        qm = QueueManager(Queries(AsyncpgDriver(c)))

        @qm.entrypoint("noop")
        async def noop(job) -> None:  # noqa: ARG001
            nonlocal done
            done += 1

        managers.append(qm)

    t = time.perf_counter()
    await asyncio.gather(
        *(
            m.run(
                batch_size=a.batch,
                mode=QueueExecutionMode.drain,
                dequeue_timeout=timedelta(milliseconds=100),
                log_aggregation_interval=timedelta(0),
            )
            for m in managers
        )
    )
    # Completions are buffered: the run ends when the table is empty too.
    while await admin.fetchval("SELECT count(*) FROM pgqueuer") > 0:
        await asyncio.sleep(0.005)
    secs = time.perf_counter() - t
    await asyncio.sleep(1.5)  # statistics are flushed at most once a second
    dead = await admin.fetchval(
        "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relname = 'pgqueuer'"
    )
    for c in conns:
        await c.close()
    await admin.close()
    print(
        json.dumps(
            {
                "n": a.n,
                "k": a.k,
                "done": done,
                "enqueue_per_s": enqueue_per_s,
                "jobs_per_s": a.n / secs,
                "dead": dead,
                "version": PGQ_VERSION,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())

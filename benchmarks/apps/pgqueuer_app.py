"""pgqueuer side: ``python -m benchmarks.apps.pgqueuer_app``.

An async entrypoint (pgqueuer's native kind: it runs on the event loop, no thread hop) with
the shared body, on the asyncpg driver. The DSN is ``$PGQUEUER_BENCH_DSN``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import AsyncpgDriver, Job, PgQueuer
from psycopg.conninfo import conninfo_to_dict

from benchmarks import body


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    # asyncpg: pgqueuer's documentation recommends it for throughput (about twice the
    # jobs/s of its psycopg driver in their own benchmark).
    params = conninfo_to_dict(os.environ["PGQUEUER_BENCH_DSN"])
    conn = await asyncpg.connect(
        host=params.get("host"), port=int(params.get("port") or 5432),
        user=params.get("user"), password=params.get("password"),
        database=params.get("dbname"))
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("record")
    async def record(job: Job) -> None:
        body.record(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await conn.close()


if __name__ == "__main__":
    # ``pgq run`` of this pgqueuer release fails in its log set-up with the installed
    # typer; ``pgqueuer.run`` is the documented programmatic twin with the same defaults.
    import asyncio

    import pgqueuer

    asyncio.run(pgqueuer.run(create_pgqueuer))

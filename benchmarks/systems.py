"""Each queue system under test behind one small interface: reset, enqueue, start workers.

Every system runs the same body (``benchmarks.body.record``) and is configured with its
documented defaults plus the throughput settings its documentation recommends; ``settings``
says which, and the results print it. Nothing here weakens a peer to make pgtaskq look
better: when a peer's shape differs (pgqueuer is asyncio, RQ has no threads), the note says
how it was matched to "one worker process, concurrency 8".
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from benchmarks.common import BenchError, Proc, database, script

PY = sys.executable
CHUNK = 10_000
"""Jobs per bulk enqueue call (keeps each statement's arrays a few hundred kB)."""


class System:
    """A queue system under test."""

    name = ""
    package = ""
    settings = ""
    postgres = True
    """Whether jobs live in PostgreSQL (then ``remaining()`` says when the drain is done)."""

    def reset(self) -> None:
        """An empty queue, schema installed."""

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        """Enqueue one job per number with the library's bulk API, ``chunk`` per call."""
        raise NotImplementedError

    def enqueue_one(self, n: int) -> None:
        raise NotImplementedError

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        raise NotImplementedError

    def remaining(self) -> int:
        """Jobs not yet acknowledged (0 when the drain is over)."""
        return 0

    def close(self) -> None:
        """Release connections the harness holds."""


class Pgtaskq(System):
    name = "pgtaskq"
    package = "pgtaskq"
    settings = "defaults: `pgtaskq worker --concurrency 8`"
    schema = "bench"

    def __init__(self, server: str, *, worker_args: Sequence[str] = ()) -> None:
        from pgtaskq import TaskQueue

        self.dsn = database(server, "bench_pgtaskq")
        self.tq = TaskQueue(self.dsn, schema=self.schema, pool_max_size=2)
        self.worker_args = list(worker_args)
        if worker_args:
            self.settings = f"`pgtaskq worker --concurrency 8 {' '.join(worker_args)}`"

    def reset(self) -> None:
        self.tq.close()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.tq.install()

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        for i in range(0, len(numbers), chunk):
            self.tq.enqueue_many("bench.record",
                                 [{"args": [n]} for n in numbers[i:i + chunk]])

    def enqueue_one(self, n: int) -> None:
        self.tq.enqueue("bench.record", args=[n])

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        env = {**env, "PGTASKQ_DSN": self.dsn, "PGTASKQ_SCHEMA": self.schema}
        return [Proc(f"pgtaskq-{i}", [PY, "-m", "pgtaskq", "worker",
                                      "benchmarks.apps.pgtaskq_app:tq",
                                      "--concurrency", str(concurrency), *self.worker_args],
                     env) for i in range(processes)]

    def remaining(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(f'SELECT count(*) FROM "{self.schema}".jobs').fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.tq.close()


class Pgqueuer(System):
    name = "pgqueuer"
    package = "pgqueuer"
    settings = ("`pgqueuer.run(factory)`, the API twin of `pgq run`, with its defaults "
                "(asyncio, batch_size 10, no per-process task cap), an async entrypoint and "
                "the asyncpg driver its docs recommend for throughput")

    def __init__(self, server: str) -> None:
        import asyncpg  # noqa: F401 - the worker app needs it: fail here, not in the worker

        self.dsn = database(server, "bench_pgqueuer")
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None
        self._queries: Any = None

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def _connect(self) -> Any:
        if self._queries is None:
            from pgqueuer import PsycopgDriver, Queries

            self._conn = self._run(psycopg.AsyncConnection.connect(self.dsn, autocommit=True))
            self._queries = Queries(PsycopgDriver(self._conn))
        return self._queries

    def reset(self) -> None:
        queries = self._connect()
        if self._run(queries.schema_is_installed()):
            self._run(queries.uninstall())
        self._run(queries.install())

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        queries = self._connect()
        for i in range(0, len(numbers), chunk):
            part = numbers[i:i + chunk]
            self._run(queries.enqueue(["record"] * len(part), [str(n).encode() for n in part],
                                      [0] * len(part)))

    def enqueue_one(self, n: int) -> None:
        self._run(self._connect().enqueue("record", str(n).encode()))

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        env = {**env, "PGQUEUER_BENCH_DSN": self.dsn}
        return [Proc(f"pgqueuer-{i}", [PY, "-m", "benchmarks.apps.pgqueuer_app"], env)
                for i in range(processes)]

    def remaining(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pgqueuer "
                               "WHERE status IN ('queued', 'picked')").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._conn is not None:
            self._run(self._conn.close())
        self._loop.close()


class Procrastinate(System):
    name = "procrastinate"
    package = "procrastinate"
    settings = "defaults: `procrastinate worker --concurrency 8` (LISTEN/NOTIFY on), sync task"

    def __init__(self, server: str) -> None:
        self.dsn = database(server, "bench_procrastinate")
        os.environ["PROCRASTINATE_BENCH_DSN"] = self.dsn
        from benchmarks.apps import procrastinate_app

        self.app = procrastinate_app.app
        self.task = procrastinate_app.record
        self._open = False

    def _ensure_open(self) -> None:
        if not self._open:
            self.app.open()
            self._open = True

    def reset(self) -> None:
        # Empty the tables rather than dropping the schema: procrastinate's connector
        # caches the OIDs of its enum types, and a dropped schema would leave them stale.
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename LIKE 'procrastinate%'").fetchall()]
            if tables:
                conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                             + " RESTART IDENTITY CASCADE")
        self._ensure_open()
        if not tables:
            self.app.schema_manager.apply_schema()

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        self._ensure_open()
        for i in range(0, len(numbers), chunk):
            self.task.batch_defer(*({"n": n} for n in numbers[i:i + chunk]))

    def enqueue_one(self, n: int) -> None:
        self.task.defer(n=n)

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        env = {**env, "PROCRASTINATE_BENCH_DSN": self.dsn}
        return [Proc(f"procrastinate-{i}", [
            script("procrastinate"), "--app", "benchmarks.apps.procrastinate_app.app",
            "--log-level", "warning", "worker", "--concurrency", str(concurrency)], env)
            for i in range(processes)]

    def remaining(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM procrastinate_jobs "
                               "WHERE status IN ('todo', 'doing')").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._open:
            self.app.close()
            self._open = False


# -- Redis peers --------------------------------------------------------------------------

class RedisSystem(System):
    postgres = False

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.redis = redis.Redis.from_url(url)

    def reset(self) -> None:
        self.redis.flushdb()

    def close(self) -> None:
        self.redis.close()


class Celery(RedisSystem):
    name = "celery"
    package = "celery"
    settings = ("`celery worker --pool threads --concurrency 8` (one process, 8 threads); "
                "defaults otherwise: prefetch multiplier 4, early ack, no result backend")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        os.environ["REDIS_URL"] = url
        from benchmarks.apps import celery_app

        self.task = celery_app.record

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        # Celery has no bulk send; one apply_async per job over one connection.
        for n in numbers:
            self.task.delay(n)

    def enqueue_one(self, n: int) -> None:
        self.task.delay(n)

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        env = {**env, "REDIS_URL": self.url}
        return [Proc(f"celery-{i}", [script("celery"), "-A", "benchmarks.apps.celery_app",
                                     "worker", "--pool", "threads", "--concurrency",
                                     str(concurrency), "-Q", "bench", "--loglevel", "WARNING",
                                     "-n", f"bench{i}@%h"], env)
                for i in range(processes)]


class Rq(RedisSystem):
    name = "rq"
    package = "rq"
    settings = ("`rq worker-pool -n 8 --worker-class rq.worker.SimpleWorker` (RQ has no "
                "threads: 8 processes; SimpleWorker skips the fork per job, as its docs "
                "suggest for speed)")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from rq import Queue

        from benchmarks.apps import rq_app

        self.queue = Queue("bench", connection=self.redis)
        self.func = rq_app.record

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        from rq import Queue

        for i in range(0, len(numbers), 1000):
            self.queue.enqueue_many([Queue.prepare_data(self.func, (n,))
                                     for n in numbers[i:i + 1000]])

    def enqueue_one(self, n: int) -> None:
        self.queue.enqueue(self.func, n)

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        return [Proc(f"rq-{i}", [script("rq"), "worker-pool", "-n", str(concurrency),
                                 "--worker-class", "rq.worker.SimpleWorker", "--url", self.url,
                                 "-l", "WARNING", "bench"], env)
                for i in range(processes)]


class Dramatiq(RedisSystem):
    name = "dramatiq"
    package = "dramatiq"
    settings = "`dramatiq --processes 1 --threads 8`, Redis broker, default middleware"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        os.environ["REDIS_URL"] = url
        from benchmarks.apps import dramatiq_app

        self.actor = dramatiq_app.record

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        for n in numbers:
            self.actor.send(n)

    def enqueue_one(self, n: int) -> None:
        self.actor.send(n)

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        env = {**env, "REDIS_URL": self.url}
        return [Proc(f"dramatiq-{i}", [script("dramatiq"), "benchmarks.apps.dramatiq_app",
                                       "--processes", "1", "--threads", str(concurrency),
                                       "--queues", "bench"], env)
                for i in range(processes)]


class Huey(RedisSystem):
    name = "huey"
    package = "huey"
    settings = "`huey_consumer -w 8 -k thread`, RedisHuey defaults (blocking pop)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        os.environ["REDIS_URL"] = url
        from benchmarks.apps import huey_app

        self.task = huey_app.record

    def enqueue_bulk(self, numbers: Sequence[int], chunk: int = CHUNK) -> None:
        for n in numbers:
            self.task(n)

    def enqueue_one(self, n: int) -> None:
        self.task(n)

    def start_workers(self, env: dict[str, str], processes: int = 1,
                      concurrency: int = 8) -> list[Proc]:
        env = {**env, "REDIS_URL": self.url}
        return [Proc(f"huey-{i}", [script("huey_consumer"), "benchmarks.apps.huey_app.huey",
                                   "-w", str(concurrency), "-k", "thread", "-q"], env)
                for i in range(processes)]


def make(name: str, server: str, redis_url: str | None) -> System:
    """The system called ``name``; BenchError when it cannot run here."""
    pg: dict[str, type[System]] = {"pgtaskq": Pgtaskq, "pgqueuer": Pgqueuer,
                                   "procrastinate": Procrastinate}
    red: dict[str, type[RedisSystem]] = {"celery": Celery, "rq": Rq, "dramatiq": Dramatiq,
                                         "huey": Huey}
    try:
        if name in pg:
            return pg[name](server)  # type: ignore[call-arg]
        if redis_url is None:
            raise BenchError("no Redis (set REDIS_URL)")
        return red[name](redis_url)
    except ImportError as exc:
        raise BenchError(f"{name} is not installed ({exc.name}): "
                         "pip install -r benchmarks/requirements.txt") from exc

"""What every benchmark shares: servers, subprocesses, the run log, statistics, reporting.

Kept apart from the scenarios so that each ``bench_*.py`` reads as the experiment it runs:
set up, enqueue, start workers, wait, check the log, report.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_JSON = BENCH_DIR / "results.json"
"""Raw figures of the last run of each scenario (the chart and the tables are made from it)."""

T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark could not run (a worker died, a deadline passed): its section says so."""


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- servers ------------------------------------------------------------------------------

def server_dsn() -> str:
    """The PostgreSQL the benchmarks use: ``$PGTASKQ_BENCH_DSN``, else an embedded one."""
    dsn = os.environ.get("PGTASKQ_BENCH_DSN")
    if dsn:
        return dsn
    from pgtaskq import embedded

    path = ROOT / ".pgtaskq-bench"
    log(f"PGTASKQ_BENCH_DSN is not set: starting an embedded PostgreSQL in {path}")
    return embedded.start(f"embedded:{path}")


def database(dsn: str, name: str, *, fresh: bool = False) -> str:
    """DSN of database ``name`` on the server of ``dsn``, created if missing (or anew)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (name,)).fetchone()
        if exists and fresh:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return pg_conninfo.make_conninfo(dsn, dbname=name)


def redis_url() -> str | None:
    """``$REDIS_URL`` (default the local one) when a Redis answers there, else None."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:
        return None
    return url


# -- subprocesses -------------------------------------------------------------------------

class Proc:
    """A worker (or any) subprocess whose output goes to a file, never to a full pipe."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
                 ) -> None:
        self.name = name
        fd, path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.process = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=full_env, cwd=ROOT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.process.returncode}:\n"
                             + self.output()[-3000:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM to the whole process group (pool workers too), then SIGKILL."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.wait(10.0)

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait(10)
        self._log.close()
        return code


def script(name: str) -> str:
    """Path of a console script installed beside this interpreter (celery, rq, ...)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise BenchError(f"{name} is not installed: pip install -r benchmarks/requirements.txt")
    return str(path)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (pool workers fork)."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


# -- the run log --------------------------------------------------------------------------

@dataclass
class Run:
    """One line of the run log: job number, start time, and what the app added."""

    n: int
    start: float
    extra: tuple[str, ...]


class RunLog:
    """The file the job body appends to; counts lines incrementally while workers write."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.runs"
        self.path.unlink(missing_ok=True)
        self.path.touch()
        self._offset = 0
        self._lines = 0

    @property
    def env(self) -> dict[str, str]:
        return {"PGTASKQ_BENCH_OUT": str(self.path)}

    def count(self) -> int:
        """Lines written so far (reads only what was appended since the last call)."""
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._lines += chunk.count(b"\n", 0, end)
        self._offset += end
        return self._lines

    def runs(self) -> list[Run]:
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out.append(Run(int(parts[0]), float(parts[1]), tuple(parts[2:])))
        return out


@dataclass
class Delivery:
    """Exactly-once check of a run log against the job numbers that were enqueued."""

    expected: int
    runs: int
    missing: int
    duplicated: int
    """Job numbers that appear more than once."""

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.duplicated == 0

    def __str__(self) -> str:
        if self.exactly_once:
            return f"all {self.expected} exactly once"
        return (f"{self.runs} runs of {self.expected} jobs: {self.missing} missing, "
                f"{self.duplicated} ran more than once")


def delivery(runs: Iterable[Run], expected: Iterable[int]) -> Delivery:
    wanted = set(expected)
    counts = Counter(r.n for r in runs)
    return Delivery(
        expected=len(wanted),
        runs=sum(counts.values()),
        missing=len(wanted - counts.keys()),
        duplicated=sum(1 for n, c in counts.items() if c > 1),
    )


# -- statistics ---------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- reporting ----------------------------------------------------------------------------

@dataclass
class Table:
    """One scenario's result: rows of (system, figures...) and what to know about them."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    appendix: str = ""
    """Markdown after the notes (a query plan, say); not printed by ``text()``."""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        if self.appendix:
            lines.extend(["", self.appendix.rstrip()])
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [max(len(str(h)), *(len(_cell(r[i])) for r in self.rows)) if self.rows
                  else len(str(h)) for i, h in enumerate(self.headers)]
        out = [self.title,
               "  ".join(str(h).ljust(w) for h, w in zip(self.headers, widths, strict=True))]
        for row in self.rows:
            out.append("  ".join(_cell(v).ljust(w) for v, w in zip(row, widths, strict=True)))
        out.extend(f"  * {note}" for note in self.notes)
        return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(value: float, reference: float) -> str:
    if not reference or reference != reference or value != value:
        return "-"
    return f"{value / reference:.2f}x"


def write_section(key: str, markdown: str, path: Path = RESULTS_MD) -> None:
    """Replace the text between this key's markers in RESULTS.md (append it if absent).

    Other sections (written by other benchmarks, or by hand) are left exactly as they are.
    """
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    last = "<!-- BEGIN bench:machine -->"
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif last in text and key != "bench:machine":  # the machine section stays last
        at = text.index(last)
        text = text[:at] + block + "\n\n" + text[at:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n")


def save_raw(key: str, data: dict[str, Any], path: Path = RESULTS_JSON) -> None:
    raw = json.loads(path.read_text()) if path.exists() else {}
    raw[key] = data
    path.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")


def load_raw(path: Path = RESULTS_JSON) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def versions(packages: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info(dsn: str) -> dict[str, Any]:
    """What a reader needs to reproduce or discount the figures."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        pg = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
              for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers",
                           "max_connections", "autovacuum")}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "postgresql": pg,
    }


# -- helpers several scenarios share ---------------------------------------------------

def without_rollup(statement: str) -> str:
    """COMPLETE minus the ``rolled_up`` CTE: the acknowledgement as it was before rollups."""
    head, _, rest = statement.partition("), rolled_up AS (")
    assert rest, "COMPLETE has no rolled_up CTE"
    _, _, tail = rest.partition("\n)\nSELECT")
    return head + ")\nSELECT" + tail


def fill_stats_tables(conn: psycopg.Connection, schema: str, jobs: int) -> None:
    """A realistic mix for the stats and dashboard reads: ``jobs`` live jobs over four queues
    and twenty tasks (a thousand running), 100,000 finished ones, two hours of rollups."""
    s = f'"{schema}"'
    conn.execute(f"""
        INSERT INTO {s}.jobs (queue, task, args, priority, run_at, max_attempts, created_at)
        SELECT 'queue' || (g %% 4), 'app.tasks.task_' || (g %% 20), jsonb_build_array(g),
               (g %% 3) - 1,
               CASE WHEN g %% 100 < 9 THEN now() + make_interval(secs => g %% 3600)
                    ELSE now() - make_interval(secs => (g %% 600)) END,
               5, now() - interval '10 minutes'
        FROM generate_series(1, %s) g""", (jobs,))
    conn.execute(f"""
        UPDATE {s}.jobs SET status = 'running', worker_id = 1 + id % 4, attempts = 1,
               started_at = now(), lease_expires_at = now() + interval '1 minute'
        WHERE id <= 1000""")
    conn.execute(f"""
        INSERT INTO {s}.job_history (id, queue, task, args, kwargs, status, priority, run_at,
                                     attempts, max_attempts, created_at, started_at,
                                     finished_at, last_error)
        SELECT {jobs} + g, 'queue' || (g % 4), 'app.tasks.task_' || (g % 20), '[]', '{{}}',
               CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 0, now(), 1, 5,
               now(), now(), now() - make_interval(secs => g % 86400),
               CASE WHEN g % 50 = 0 THEN E'Traceback (most recent call last):\\n'
                    || E'  File "app/tasks.py", line 7\\nValueError: bad input ' || g END
        FROM generate_series(1, 100000) g""")
    conn.execute(f"""
        INSERT INTO {s}.stats_minute (minute, queue, task, worker_id, succeeded, failed,
                                      retried, wait_ms_histogram, run_ms_histogram)
        SELECT date_trunc('minute', now()) - make_interval(mins => m), 'queue' || (t % 4),
               'app.tasks.task_' || t, w, 500 + m, m % 3, m % 5,
               array_fill(7, ARRAY[64]), array_fill(9, ARRAY[64])
        FROM generate_series(0, 120) m, generate_series(0, 19) t, generate_series(1, 4) w""")
    conn.execute(f"""
        INSERT INTO {s}.workers (host, pid, queues, concurrency, busy_slots, pgtaskq_version)
        SELECT 'host' || g, 1000 + g, NULL, 250, 250, 'bench'
        FROM generate_series(1, 4) g""")


def ceiling_table(schema: str) -> str:
    """DDL of the ceiling's table in ``schema`` (dropped and made again): the columns a job
    needs and one partial index on runnable rows, as a queue must have. Inserting into it
    is the least a job queue can write per job; the enqueue benchmarks measure against it."""
    return f"""
DROP SCHEMA IF EXISTS {schema} CASCADE;
CREATE SCHEMA {schema};
CREATE TABLE {schema}.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    args jsonb NOT NULL,
    kwargs jsonb NOT NULL DEFAULT '{{}}',
    status text NOT NULL DEFAULT 'queued',
    priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {schema}.jobs (priority DESC, run_at, id) WHERE status = 'queued';
"""

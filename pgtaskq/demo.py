"""``make demo`` (``python -m pgtaskq.demo``): pgtaskq end to end on a fresh machine.

Runs on the embedded PostgreSQL in ``./.pgtaskq`` (or on ``$PGTASKQ_DSN`` if set), so it
needs nothing but Python. It installs the schema, enqueues jobs every way the API offers
(one at a time, in bulk, delayed, deduplicated, one that fails once and is retried), prints
them as ``pgtaskq jobs`` does, then starts a real ``pgtaskq worker`` process, waits for it to
run them, shows the jobs again and ``pgtaskq stats``, and stops the worker with SIGTERM.

The demo owns its schema, ``pgtaskq_demo`` (``$PGTASKQ_DEMO_SCHEMA`` for tests), and empties
it at each run so the output is the same every time; it never reads ``$PGTASKQ_SCHEMA``, so
pointing ``$PGTASKQ_DSN`` at a real database cannot drop an application's jobs. The tasks
are defined at module level so a worker can load them: ``pgtaskq worker pgtaskq.demo:tq``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pgtaskq import TaskQueue, current_job, defaults
from pgtaskq.cli.jobs import jobs_table

DSN = os.environ.get("PGTASKQ_DSN") or f"embedded:{defaults.EMBEDDED_PATH}"
SCHEMA = os.environ.get("PGTASKQ_DEMO_SCHEMA") or "pgtaskq_demo"

DELAY = 3.0
FINISHED = ("succeeded", "failed", "cancelled")

tq = TaskQueue(DSN, schema=SCHEMA)


@tq.task(queue="mail")
def send_welcome_email(user_id: int, address: str) -> str:
    """Pretend to send an email; the return value is kept as the job's result."""
    return f"sent welcome email to {address} (user {user_id})"


@tq.task(name="demo.resize_image", queue="images", priority=5, timeout=60)
def resize_image(path: str, width: int = 800) -> dict[str, object]:
    """Pretend to resize an image."""
    return {"path": path, "width": width}


@tq.task(name="demo.flaky", max_attempts=3)
def flaky() -> str:
    """Fail the first attempt: the worker retries it after a short backoff."""
    if current_job().attempt == 1:
        raise ConnectionError("pretend the mail server hung up (attempt 1)")
    return "worked on attempt 2"


def enqueue_demo_jobs() -> list[int]:
    """Enqueue one job of each kind; return their ids in the order they were made."""
    ids = [send_welcome_email.enqueue(1, "ada@example.com")]
    print(f"enqueued one welcome email: job {ids[0]}")

    bulk = tq.enqueue_many(
        resize_image.name,
        [{"args": [f"photos/{n}.jpg"], "kwargs": {"width": 200 * n}} for n in range(1, 6)],
    )
    print(f"enqueued {len(bulk)} image resizes in one statement: jobs {bulk}")
    ids += bulk

    later = send_welcome_email.using(delay=DELAY).enqueue(3, "grace@example.com")
    print(f"enqueued a welcome email to run in {DELAY:.0f} s: job {later}")
    ids.append(later)

    first = send_welcome_email.using(dedupe_key="welcome:2").enqueue(2, "alan@example.com")
    again = send_welcome_email.using(dedupe_key="welcome:2").enqueue(2, "alan@example.com")
    print(f"enqueued with dedupe_key 'welcome:2' twice: job {first}, then job {again} again")
    ids.append(first)

    ids.append(flaky.enqueue())
    print(f"enqueued a job that fails once and is retried: job {ids[-1]}")
    return ids


def start_worker() -> subprocess.Popen[bytes]:
    """Start ``pgtaskq worker pgtaskq.demo:tq`` as a real process."""
    command = [sys.executable, "-m", "pgtaskq", "--schema", SCHEMA, "worker",
               "pgtaskq.demo:tq", "--concurrency", "4", "--backoff-base", "1"]
    print("\n$ pgtaskq worker pgtaskq.demo:tq --concurrency 4   (its log follows)")
    sys.stdout.flush()
    return subprocess.Popen(command, env=_child_env())


def _child_env() -> dict[str, str]:
    """The DSN goes to child commands in their environment, never on a command line that
    ``ps`` shows to every user of the machine."""
    return {**os.environ, "PGTASKQ_DSN": DSN}


def wait_until_finished(worker: subprocess.Popen[bytes], ids: list[int],
                        timeout: float = 60.0) -> None:
    """Poll the jobs' statuses until every one has finished (or the worker died)."""
    deadline = time.monotonic() + timeout
    while not all(
        (job := tq.get_job(job_id)) is not None and job.status in FINISHED for job_id in ids
    ):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("demo: the worker did not finish the jobs")
        time.sleep(0.2)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd does: the worker finishes what it runs and exits 0."""
    if worker.poll() is None:
        print("\n$ kill -TERM <worker>")
        sys.stdout.flush()
        worker.send_signal(signal.SIGTERM)
    print(f"worker exited with status {worker.wait(60)}")


def show_stats() -> None:
    """What an operator sees: ``pgtaskq stats``."""
    print("\n$ pgtaskq stats")
    sys.stdout.flush()
    subprocess.run([sys.executable, "-m", "pgtaskq", "--schema", SCHEMA, "stats"],
                   check=False, env=_child_env())


def main() -> None:
    where = "the embedded PostgreSQL in " + DSN.partition(":")[2] if DSN.startswith(
        "embedded") else "$PGTASKQ_DSN"
    print(f"pgtaskq demo on {where}, schema {SCHEMA!r}\n")
    try:
        tq.uninstall()  # start from an empty demo schema
        before, after = tq.install()
        print(f"installed the pgtaskq schema (version {before} -> {after})")
        ids = enqueue_demo_jobs()
        print()
        print(jobs_table(tq.list_jobs(limit=20)))
        worker = start_worker()
        try:
            wait_until_finished(worker, ids)
            print()
            print(jobs_table(tq.list_jobs(limit=20)))
            show_stats()
        finally:
            stop_worker(worker)
    finally:
        tq.close()
    # With $PGTASKQ_DSN set the commands need no --dsn (and must not show its password).
    dsn_option = "" if os.environ.get("PGTASKQ_DSN") else f"--dsn {DSN} "
    print(
        "\nTry it yourself, in two terminals:\n"
        f"  pgtaskq {dsn_option}--schema {SCHEMA} worker pgtaskq.demo:tq\n"
        f"  pgtaskq {dsn_option}--schema {SCHEMA} enqueue demo.flaky"
    )


if __name__ == "__main__":
    main()

"""``make demo`` (``python -m pgtaskq.demo``): pgtaskq end to end on a fresh machine.

Runs on the embedded PostgreSQL in ``./.pgtaskq`` (or on ``$PGTASKQ_DSN`` if set), so it
needs nothing but Python. It installs the schema, enqueues jobs every way the API offers
(one at a time, in bulk, delayed, deduplicated) and prints them as ``pgtaskq jobs`` does.

The demo owns its schema, ``pgtaskq_demo`` (``$PGTASKQ_DEMO_SCHEMA`` for tests), and empties
it at each run so the output is the same every time; it never reads ``$PGTASKQ_SCHEMA``, so
pointing ``$PGTASKQ_DSN`` at a real database cannot drop an application's jobs. The tasks
are defined at module level so a worker can load them: ``pgtaskq worker pgtaskq.demo:tq``.
"""

from __future__ import annotations

import os

from pgtaskq import TaskQueue, defaults
from pgtaskq.cli.jobs import jobs_table

DSN = os.environ.get("PGTASKQ_DSN") or f"embedded:{defaults.EMBEDDED_PATH}"
SCHEMA = os.environ.get("PGTASKQ_DEMO_SCHEMA") or "pgtaskq_demo"

tq = TaskQueue(DSN, schema=SCHEMA)


@tq.task(queue="mail")
def send_welcome_email(user_id: int, address: str) -> str:
    """Pretend to send an email; the return value is kept as the job's result."""
    return f"sent welcome email to {address} (user {user_id})"


@tq.task(name="demo.resize_image", queue="images", priority=5, timeout=60)
def resize_image(path: str, width: int = 800) -> dict[str, object]:
    """Pretend to resize an image."""
    return {"path": path, "width": width}


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

    later = send_welcome_email.using(delay=60).enqueue(3, "grace@example.com")
    print(f"enqueued a welcome email to run in 60 s: job {later}")
    ids.append(later)

    first = send_welcome_email.using(dedupe_key="welcome:2").enqueue(2, "alan@example.com")
    again = send_welcome_email.using(dedupe_key="welcome:2").enqueue(2, "alan@example.com")
    print(f"enqueued with dedupe_key 'welcome:2' twice: job {first}, then job {again} again")
    ids.append(first)
    return ids


def main() -> None:
    where = "the embedded PostgreSQL in " + DSN.partition(":")[2] if DSN.startswith(
        "embedded") else "$PGTASKQ_DSN"
    print(f"pgtaskq demo on {where}, schema {SCHEMA!r}\n")
    try:
        tq.uninstall()  # start from an empty demo schema
        before, after = tq.install()
        print(f"installed the pgtaskq schema (version {before} -> {after})")
        enqueue_demo_jobs()
        print()
        print(jobs_table(tq.list_jobs(limit=20)))
    finally:
        tq.close()
    print(
        "\nThe jobs stay queued until a worker runs them:\n"
        f"  pgtaskq --dsn {DSN} --schema {SCHEMA} worker pgtaskq.demo:tq"
    )


if __name__ == "__main__":
    main()

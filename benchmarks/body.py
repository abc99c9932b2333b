"""The job body every system runs: one ``O_APPEND`` write of the job's number per run.

It is cheap enough that the queue, not the job, is what a benchmark measures, and it leaves
a log that proves exactly-once delivery: each line is ``<n> <start time> <extra>``, so a
missing ``n`` is a lost job and a repeated ``n`` a job that ran twice. ``O_APPEND`` writes of
less than a page are atomic on Linux, so threads and processes can share the file.

The file is named by ``$PGTASKQ_BENCH_OUT``, opened when this module is imported (once per
worker process, before any slot thread exists).
"""

from __future__ import annotations

import os
import time

_path = os.environ.get("PGTASKQ_BENCH_OUT")
_fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _path else -1


def record(n: int, extra: str = "") -> None:
    """Append ``n``, the start time (epoch seconds) and ``extra`` as one line."""
    os.write(_fd, f"{n} {time.time():.6f} {extra}\n".encode())

"""Tasks for tests/test_poison.py: outcomes PostgreSQL refuses, tasks that fork."""

from __future__ import annotations

import os
import time

from pgtaskq import TaskQueue

tq = TaskQueue()

NON_UTF8_NAME = os.fsdecode(b"caf\xe9.txt")  # what os.listdir() gives: a lone surrogate


@tq.task(name="plain")
def plain(value=None):
    return value


@tq.task(name="surrogate_error", max_attempts=1)
def surrogate_error():
    raise ValueError(f"cannot open {NON_UTF8_NAME}")


@tq.task(name="surrogate_result", max_attempts=3)
def surrogate_result():
    return NON_UTF8_NAME


@tq.task(name="huge_error", max_attempts=1)
def huge_error():
    raise ValueError("x" * 5_000_000)


@tq.task(name="fork_and_wait", max_attempts=1)
def fork_and_wait(pid_file):
    """Forks and lets the child fall back into whatever called the task (no ``_exit``)."""
    pid = os.fork()
    if pid == 0:
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        return "from the child"
    os.waitpid(pid, 0)
    return "from the parent"


@tq.task(name="fork_and_linger", max_attempts=1)
def fork_and_linger(pid_file, seconds):
    """Forks a child that outlives the worker's grace period, and waits for it."""
    pid = os.fork()
    if pid == 0:
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        time.sleep(float(seconds))
        os._exit(0)
    os.waitpid(pid, 0)

"""A TaskQueue used before ``fork()`` (gunicorn ``--preload``) works in parent and child."""

from __future__ import annotations

import os


def test_child_opens_its_own_pool_and_parent_keeps_working(tq, db):
    before = tq.enqueue("t", args=["parent before fork"])  # opens the parent's pool
    parent_pool = tq.pool
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what happened through the pipe, never raise
        try:
            child_id = tq.enqueue("t", args=["child"])
            fresh = tq.pool is not parent_pool
            os.write(write_fd, f"{child_id} {fresh}".encode())
        except BaseException as exc:  # pragma: no cover - reported to the parent
            os.write(write_fd, f"error {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    reply = os.read(read_fd, 4096).decode()
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 0
    child_id, fresh = reply.split()
    assert fresh == "True", reply
    # The parent's pooled connections were not touched by the child: they still work.
    after = [tq.enqueue("t", args=["parent after fork"]) for _ in range(5)]
    assert tq.pool is parent_pool
    ids = {before, int(child_id), *after}
    rows = db.execute(f'SELECT id FROM "{tq.schema}".jobs').fetchall()
    assert {row[0] for row in rows} == ids

"""``pgtaskq stats --watch`` in a real terminal: tmux at 80x24 and 100x30.

The dashboard must fit the screen it is drawn on: the queue table's header stays on the
first lines, no row wraps, rows that do not fit are summed up in a "more rows" line, and
each frame is drawn over the previous one (the screen never scrolls).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from pgtaskq.testing import wait_until

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None,
                                reason="needs tmux in PATH: apt-get install -y tmux")


class Terminal:
    """A detached tmux session on a server of its own, running one command."""

    def __init__(self, command: list[str], columns: int, lines: int, env: dict) -> None:
        self.socket = f"pgtaskq-test-{uuid.uuid4().hex[:8]}"
        assert TMUX is not None
        self.tmux = [TMUX, "-L", self.socket, "-f", "/dev/null"]
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "stats", "-x", str(columns),
                        "-y", str(lines), "env", *(f"{k}={v}" for k, v in env.items()),
                        *command], check=True, timeout=10)
        subprocess.run([*self.tmux, "set-option", "-t", "stats", "remain-on-exit", "on"],
                       check=True, timeout=10)

    def screen(self) -> list[str]:
        out = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "stats"],
                             capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.rstrip("\n").split("\n")

    def history_size(self) -> int:
        out = subprocess.run([*self.tmux, "display-message", "-p", "-t", "stats",
                              "#{history_size}"], capture_output=True, text=True,
                             check=True, timeout=10)
        return int(out.stdout.strip())

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=10)


@pytest.mark.parametrize("columns, lines", [(80, 24), (100, 30)])
def test_watch_fits_the_terminal(tq, pgtaskq_dsn, columns, lines) -> None:
    for n in range(30):  # more tasks than lines, with names longer than the column
        tq.enqueue_many(f"app.reports.build_quarterly_summary_{n:02d}",
                        [{"queue": f"queue{n % 3}"}] * (n + 1))
    terminal = Terminal(
        [sys.executable, "-m", "pgtaskq", "stats", "--watch", "0.2"], columns, lines,
        env={"PGTASKQ_DSN": pgtaskq_dsn, "PGTASKQ_SCHEMA": tq.schema, "TERM": "xterm",
             "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        def frames_drawn() -> list[str]:
            screen = terminal.screen()
            return screen if any(line.startswith("TOTAL") for line in screen) else []

        first = wait_until(frames_drawn, 20, interval=0.1, what="a frame with TOTAL")
        # a later frame (the clock in the title moved), drawn over the first one
        screen = wait_until(lambda: (s := frames_drawn()) and s[0] != first[0] and s, 10,
                            interval=0.1, what="a later frame")
        text = "\n".join(screen)
        assert len(screen) <= lines, text
        assert screen[0].startswith(f"pgtaskq stats {tq.schema} "), text
        assert screen[1].split()[:4] == ["queue", "task", "ready", "running"], text
        assert screen[0].endswith("NO LIVE WORKER"), text
        assert any("more rows" in line for line in screen), text
        total = next(line for line in screen if line.startswith("TOTAL"))
        assert total.split()[1] == f"{sum(range(1, 31)):,}", text  # ready, all tasks
        assert all(len(line) <= columns for line in screen)
        # frames are drawn in place: nothing has scrolled into the history
        assert terminal.history_size() == 0, text
    finally:
        terminal.close()

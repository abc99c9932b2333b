"""``pgtaskq worker --reload``: restart the worker when its code changes (development).

A thread looks at the modification times of every loaded module's source file outside
the Python installation and its site-packages, once a second (no dependency on an
inotify library; a few hundred ``stat`` calls a second cost nothing next to a developer's
edit). On a change it stops the worker gracefully, the way SIGTERM does, and the command
then replaces the process with a fresh one started with the same command line, so every
module is imported anew.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import threading
from collections.abc import Callable

log = logging.getLogger("pgtaskq.worker")

INTERVAL = 1.0


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.realpath(root) for root in roots if root)


def watched_files() -> dict[str, float]:
    """Source files of the loaded modules that are the user's, with their mtimes."""
    roots = _library_roots()
    files: dict[str, float] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        path = os.path.realpath(path)
        if path.startswith(roots):
            continue
        try:
            files[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return files


class CodeWatcher:
    """Calls ``on_change()`` once, from its thread, when a watched file changes."""

    def __init__(self, on_change: Callable[[], None], interval: float = INTERVAL) -> None:
        self._on_change = on_change
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgtaskq-reloader",
                                        daemon=True)
        self.changed: str | None = None
        """The first file seen changed, once one was."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        known = watched_files()
        while not self._stopped.wait(self._interval):
            current = watched_files()
            for path, mtime in current.items():
                if known.get(path, mtime) != mtime:
                    self.changed = path
                    log.info("%s changed: restarting the worker", path)
                    self._on_change()
                    return
            known.update(current)


def restart_process(changed: str) -> None:
    """Replace this process by the same command line (``sys.orig_argv``)."""
    argv = [sys.executable, *sys.orig_argv[1:]]
    log.info("reloading after a change in %s", changed)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)

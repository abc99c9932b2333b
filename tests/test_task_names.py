"""Default task names: ``module.qualname``, the same in the enqueuing and working process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pgtaskq import TaskQueue

MODULE = """
from pgtaskq import TaskQueue

tq = TaskQueue("postgresql://nobody@127.0.0.1:1/x", schema="names")

@tq.task
def hello():
    pass

class Mailer:
    @staticmethod
    def send():
        pass

print(hello.name, tq.task(Mailer.send).name)
"""


def test_default_name_is_module_and_qualname() -> None:
    tq = TaskQueue("postgresql://nobody@127.0.0.1:1/x", schema="names")

    @tq.task
    def local() -> None: ...

    assert local.name == f"{__name__}.test_default_name_is_module_and_qualname.<locals>.local"
    assert tq.tasks[local.name] is local


def test_module_run_with_python_m_names_tasks_as_when_imported(tmp_path: Path) -> None:
    (tmp_path / "names_app.py").write_text(MODULE)

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    imported = run("-c", "import names_app")
    assert imported == "names_app.hello names_app.Mailer.send"
    # a worker importing names_app must find the jobs the module enqueued as __main__
    assert run("-m", "names_app") == imported

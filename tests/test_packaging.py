"""The sdist and the wheel carry what a newcomer needs besides the code: the licence, the
changelog, the docs and the systemd unit; the README's install lines work from a checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """sdist and wheel built from a copy of the checkout (the tree stays clean)."""
    pytest.importorskip("build", reason="pip install build wheel (in the dev extra)")
    pytest.importorskip("wheel", reason="pip install build wheel (in the dev extra)")
    tree = tmp_path_factory.mktemp("tree")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
        capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the build test copies the files git knows")
    files = listed.stdout.splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                    "--outdir", str(dist), str(tree)], check=True, capture_output=True,
                   timeout=300)
    return dist


def test_the_wheel_installs_the_unit_the_docs_and_the_licence(built):
    [wheel] = built.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n) + "/data/"
    for expected in ("share/pgtaskq/systemd/pgtaskq-worker@.service",
                     "share/doc/pgtaskq/README.rst", "share/doc/pgtaskq/CHANGELOG.rst",
                     "share/doc/pgtaskq/LICENSE", "share/doc/pgtaskq/operations.rst"):
        assert data + expected in names
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)
    migrations = REPO / "pgtaskq" / "contrib" / "django" / "migrations"
    shipped = {f"pgtaskq/contrib/django/migrations/{p.name}" for p in migrations.glob("0*.py")}
    assert shipped, "no Django migrations found in the checkout"
    assert shipped <= set(names), sorted(shipped - set(names))
    for asset in ("dashboard.css", "dashboard.js"):  # the web dashboard needs no CDN
        assert f"pgtaskq/contrib/dashboard/static/{asset}" in names


def test_the_sdist_carries_docs_unit_examples_and_licence(built):
    [sdist] = built.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for expected in ("LICENSE", "CHANGELOG.rst", "README.rst", "docs/operations.rst",
                     "contrib/systemd/pgtaskq-worker@.service", "contrib/systemd/README.rst",
                     "examples/django_project/README.rst", "examples/flask_app/app.py"):
        assert expected in names


def test_the_licence_is_the_one_setup_cfg_names():
    assert "license = MIT" in (REPO / "setup.cfg").read_text()
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_install_lines_in_the_docs_work_from_a_checkout():
    """pgtaskq is on no package index: 'pip install pgtaskq' fails as written."""
    docs = [REPO / "README.rst", *REPO.glob("examples/*/README.rst")]
    for path in docs:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:\$ )?pip install (\S+)", line)
            if match:
                target = match.group(1).strip("'\"")
                from_checkout = target.startswith((".", "/", "git+")) or "@ git+" in line
                assert from_checkout, (path.name, line)

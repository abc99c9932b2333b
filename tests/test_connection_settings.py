"""Connection settings of a TaskQueue: prepared statements on or off, psycopg keyword
arguments, and the README's advice for poolers (the pooler itself: test_pgbouncer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgtaskq import TaskQueue
from pgtaskq.sql import migrations

README = Path(__file__).resolve().parent.parent / "README.rst"


def test_prepare_setting_rejects_nonsense(monkeypatch):
    from pgtaskq.connections import prepare_setting

    monkeypatch.setenv("PGTASKQ_PREPARE", "maybe")
    with pytest.raises(ValueError, match="PGTASKQ_PREPARE"):
        prepare_setting(None)
    monkeypatch.setenv("PGTASKQ_PREPARE", "off")
    assert prepare_setting(None) is False
    assert prepare_setting(True) is True


def test_connect_kwargs_reach_every_connection(tq, db):
    """``connect_kwargs`` are psycopg.connect keyword arguments for the queue's pool and
    its own connections (here an application_name and a server option)."""
    producer = TaskQueue(tq.conninfo, schema=tq.schema, connect_kwargs={
        "application_name": "web-42", "options": "-c statement_timeout=12345"})
    try:
        producer.enqueue("noop")
        with producer.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "12345ms"
        assert producer.check_installed() == migrations.LATEST_VERSION
        names = [row[0] for row in db.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name = 'web-42'")]
        assert names
    finally:
        producer.close()


def test_readme_pgbouncer_section_is_what_these_tests_run():
    """The README's advice used to be 'add prepare_threshold=0 to the DSN', which libpq
    rejects as an invalid DSN."""
    text = README.read_text()
    section = text.split("PgBouncer and other poolers", 1)[1].split("\nTuning\n", 1)[0]
    for advice in ("PGTASKQ_PREPARE=0", "--no-prepare", "prepare=False", "--listen-dsn",
                   "--poll-only", "pool_mode = transaction"):
        assert advice in section, advice
    assert "prepare_threshold=0" not in section

"""Schema management: idempotent install, concurrent installers, upgrades, uninstall.

The upgrade test is written over ``MIGRATIONS`` so that every new migration is checked
automatically: from every earlier version, upgrading must give exactly the catalog that
a fresh install gives.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from pgtaskq import SchemaNotInstalledError, TaskQueue, migrate
from pgtaskq.errors import DatabaseUnavailableError, PgtaskqError, SchemaVersionError
from pgtaskq.sql.migrations import LATEST_VERSION, MIGRATIONS
from pgtaskq.testing import wait_until

NewSchema = Callable[[], str]


@pytest.fixture
def new_schema(db: psycopg.Connection) -> Iterator[NewSchema]:
    """Factory of fresh schema names; every schema is dropped (CASCADE) at teardown."""
    names: list[str] = []

    def make() -> str:
        names.append(f"s_{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    for name in names:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def conn(pgtaskq_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as connection:
        yield connection


def schema_exists(db: psycopg.Connection, name: str) -> bool:
    row = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [name]).fetchone()
    return row == (1,)


def version_rows(db: psycopg.Connection, name: str) -> list[int]:
    query = sql.SQL("SELECT version FROM {}.schema_version ORDER BY version")
    return [r[0] for r in db.execute(query.format(sql.Identifier(name))).fetchall()]


def objects_in(db: psycopg.Connection, name: str) -> set[str]:
    """Every relation, function and type that lives in schema ``name``."""
    rows = db.execute(
        """
        SELECT 'relation ' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s
        UNION ALL
        SELECT 'function ' || p.proname FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s
        UNION ALL
        SELECT 'type ' || t.typname FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %(s)s
        """,
        {"s": name},
    ).fetchall()
    return {r[0] for r in rows}


def catalog(db: psycopg.Connection, name: str) -> dict[str, Any]:
    """What an installed schema looks like, with the schema name taken out."""

    def rows(query: str) -> list[tuple]:
        found = db.execute(query, {"s": name}).fetchall()
        return sorted(tuple(str(v).replace(name, "<schema>") for v in r) for r in found)

    return {
        "columns": rows("""
            SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
                   column_default, is_identity
            FROM information_schema.columns WHERE table_schema = %(s)s"""),
        "indexes": rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %(s)s"),
        "constraints": rows("""
            SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE n.nspname = %(s)s"""),
        "functions": rows("""
            SELECT p.oid::regprocedure::text, p.prokind,
                   CASE WHEN p.prokind = 'a'
                        THEN concat_ws(' ', a.aggtransfn::regproc, a.aggfinalfn::regproc,
                                       a.aggtranstype::regtype, a.agginitval)
                        ELSE pg_get_functiondef(p.oid) END
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
            WHERE n.nspname = %(s)s"""),
        "options": rows("""
            SELECT c.relname, c.relkind, coalesce(c.reloptions::text, '') FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(s)s AND c.relname <> 'schema_version'
              AND c.relname <> 'schema_version_pkey'"""),
    }


# -- install ----------------------------------------------------------------------------


def test_install_twice_is_idempotent(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    tq = TaskQueue(pgtaskq_dsn, schema=new_schema())
    assert tq.install() == (0, LATEST_VERSION)
    job_id = tq.enqueue("t")
    before = catalog(db, tq.schema)
    assert tq.install() == (LATEST_VERSION, LATEST_VERSION)
    assert tq.upgrade() == (LATEST_VERSION, LATEST_VERSION)
    assert catalog(db, tq.schema) == before
    assert version_rows(db, tq.schema) == list(range(1, LATEST_VERSION + 1))
    assert tq.get_job(job_id) is not None
    assert tq.check_installed() == LATEST_VERSION
    tq.close()


INSTALLER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pgtaskq import TaskQueue
    from pgtaskq import migrate

    dsn, name, ready, go = sys.argv[1:]
    conn = TaskQueue(dsn, schema=name).connect()  # connect first: the race is in install
    Path(ready).touch()
    deadline = time.monotonic() + 30
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.002)
    before, after = migrate.upgrade(conn, name)
    print(before, after)
""")


def test_concurrent_install_from_four_processes(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection, tmp_path: Path
) -> None:
    name = new_schema()
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", INSTALLER, pgtaskq_dsn, name, str(tmp_path / f"r{i}"),
             str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(4)
    ]
    try:
        wait_until(lambda: all((tmp_path / f"r{i}").exists() for i in range(4)), 30,
                   what="four installers connected")
        go.touch()
        outputs = [p.communicate(timeout=60) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in outputs]
    results = sorted(tuple(map(int, out.split())) for out, _ in outputs)
    # exactly one applied the migrations; the others waited on the lock, found them done
    assert results == [(0, LATEST_VERSION)] + [(LATEST_VERSION, LATEST_VERSION)] * 3
    assert version_rows(db, name) == list(range(1, LATEST_VERSION + 1))


FROZEN_INSTALLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import psycopg
    from pgtaskq import migrate

    dsn, name, locked, idle_timeout = sys.argv[1:]
    migrate.MIGRATION_IDLE_TIMEOUT = float(idle_timeout)

    class FreezesHoldingTheLock(psycopg.Connection):
        def execute(self, query, params=None, **kwargs):
            cursor = super().execute(query, params, **kwargs)
            if "pg_advisory_xact_lock" in str(query):
                Path(locked).touch()
                os.kill(os.getpid(), signal.SIGSTOP)  # a stopped process, say
            return cursor

    with FreezesHoldingTheLock.connect(dsn, autocommit=True) as conn:
        migrate.upgrade(conn, name)
""")


def test_an_installer_frozen_holding_the_lock_does_not_block_the_others(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection, tmp_path: Path
) -> None:
    """An installer that stopped talking while it held the install lock (a stopped
    process, a frozen pooler) kept every other install waiting for ever: its session sat
    'idle in transaction' with the lock. The server now ends that transaction after
    MIGRATION_IDLE_TIMEOUT of silence and the next installer goes on."""
    name = new_schema()
    locked = tmp_path / "locked"
    frozen = subprocess.Popen(
        [sys.executable, "-c", FROZEN_INSTALLER, pgtaskq_dsn, name, str(locked), "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(locked.exists, 30, what="the frozen installer took the lock")
        with psycopg.connect(pgtaskq_dsn, autocommit=True,
                             options="-c lock_timeout=10s") as other:
            assert migrate.upgrade(other, name) == (0, LATEST_VERSION)
        assert version_rows(db, name) == list(range(1, LATEST_VERSION + 1))
    finally:
        frozen.kill()
        frozen.communicate(timeout=30)


def test_an_upgrade_behind_a_long_transaction_gives_way_to_the_queue(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection, conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 11's CREATE TRIGGER on ``workers`` waits behind any transaction that wrote
    to it, and PostgreSQL queues every later heartbeat behind that waiting DDL: one long
    transaction during ``pgtaskq upgrade`` stalled every worker's heartbeat (and, for DDL
    on ``jobs``, every enqueue and claim) until it ended. Each try now gives way after
    MIGRATION_LOCK_TIMEOUT, and the upgrade goes through once the transaction ends."""
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_TIMEOUT", 0.3)
    name = new_schema()
    migrate.upgrade(conn, name, target=10)
    workers = sql.SQL("{}.workers").format(sql.Identifier(name))
    db.execute(sql.SQL("INSERT INTO {} (host, pid, concurrency, pgtaskq_version) "
                       "VALUES ('w', 1, 1, 'x')").format(workers))
    outcome: list[object] = []
    upgrader = psycopg.connect(pgtaskq_dsn, autocommit=True,
                               options="-c statement_timeout=20s")  # fails, never hangs
    with upgrader, psycopg.connect(pgtaskq_dsn) as long_transaction:
        long_transaction.execute(sql.SQL("UPDATE {} SET busy_slots = 1").format(workers))
        upgrading = threading.Thread(
            target=lambda: outcome.append(migrate.upgrade(upgrader, name)), daemon=True)
        upgrading.start()
        wait_until(lambda: "giving way" in caplog.text, 10, what="the upgrade gave way")
        with psycopg.connect(pgtaskq_dsn, autocommit=True,
                             options="-c statement_timeout=5s") as heartbeat:
            for _ in range(5):  # whenever it beats, never stuck behind the DDL for long
                started = time.monotonic()
                heartbeat.execute(sql.SQL(
                    "UPDATE {} SET last_heartbeat_at = now() WHERE pid = 2").format(workers))
                assert time.monotonic() - started < 2.0
                time.sleep(0.2)
        assert outcome == []  # still waiting for the long transaction
        long_transaction.rollback()
        upgrading.join(30)
    assert outcome == [(10, LATEST_VERSION)]
    assert version_rows(db, name) == list(range(1, LATEST_VERSION + 1))


def test_an_upgrade_gives_up_with_a_clear_error_when_the_lock_never_frees(
    pgtaskq_dsn: str, new_schema: NewSchema, conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_TIMEOUT", 0.1)
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_PATIENCE", 1.0)
    name = new_schema()
    migrate.upgrade(conn, name, target=10)
    with psycopg.connect(pgtaskq_dsn) as long_transaction, psycopg.connect(
            pgtaskq_dsn, autocommit=True, options="-c statement_timeout=20s") as upgrader:
        long_transaction.execute(sql.SQL("LOCK TABLE {}.workers IN ROW EXCLUSIVE MODE").format(
            sql.Identifier(name)))
        with pytest.raises(PgtaskqError, match=r"could not upgrade schema .*held by another "
                                               r"transaction.*pg_locks"):
            migrate.upgrade(upgrader, name)
    assert migrate.installed_version(conn, name) == 10  # nothing half-done


def test_install_into_a_schema_with_user_tables(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    name = new_schema()
    db.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.jobs_of_mine (id int)").format(
        s=sql.Identifier(name)))
    tq = TaskQueue(pgtaskq_dsn, schema=name)
    assert tq.install() == (0, LATEST_VERSION)
    assert tq.get_job(tq.enqueue("t")) is not None
    tq.close()


def test_check_installed_on_a_bare_schema(pgtaskq_dsn: str, new_schema: NewSchema) -> None:
    name = new_schema()
    with pytest.raises(SchemaNotInstalledError, match=r"run 'pgtaskq --schema \S+ install'"):
        TaskQueue(pgtaskq_dsn, schema=name).check_installed()


def test_schema_newer_than_the_code(tq: TaskQueue, db: psycopg.Connection) -> None:
    db.execute(
        sql.SQL("INSERT INTO {}.schema_version (version, pgtaskq_version) VALUES (%s, '9')")
        .format(sql.Identifier(tq.schema)),
        [LATEST_VERSION + 1],
    )
    for action in (tq.install, tq.upgrade, tq.check_installed):
        with pytest.raises(SchemaVersionError, match=r"newer than this pgtaskq.*upgrade pgtaskq"):
            action()
    assert version_rows(db, tq.schema)[-1] == LATEST_VERSION + 1  # left alone


# -- upgrade ----------------------------------------------------------------------------


@pytest.mark.parametrize("start", range(LATEST_VERSION))
def test_upgrade_from_every_earlier_version(
    conn: psycopg.Connection, db: psycopg.Connection, new_schema: NewSchema, start: int
) -> None:
    fresh, old = new_schema(), new_schema()
    assert migrate.upgrade(conn, fresh) == (0, LATEST_VERSION)

    assert migrate.upgrade(conn, old, target=start) == (0, start)
    assert migrate.installed_version(conn, old) == start
    if start > 0:
        with pytest.raises(SchemaVersionError, match=f"run 'pgtaskq --schema {old} upgrade'"):
            migrate.require_installed(conn, old)
    assert migrate.upgrade(conn, old) == (start, LATEST_VERSION)

    assert catalog(db, old) == catalog(db, fresh)
    assert version_rows(db, old) == list(range(1, LATEST_VERSION + 1))


@pytest.mark.parametrize("start", range(1, LATEST_VERSION))
def test_upgrade_of_an_install_whose_record_predates_created_schema(
    conn: psycopg.Connection, db: psycopg.Connection, new_schema: NewSchema, start: int
) -> None:
    """Installs made before the record had ``created_schema`` (pgtaskq <= schema version 2)
    must still upgrade: recording the new versions used to name the missing column."""
    old = new_schema()
    migrate.upgrade(conn, old, target=start)
    db.execute(
        sql.SQL("ALTER TABLE {}.schema_version DROP COLUMN created_schema").format(
            sql.Identifier(old)
        )
    )
    assert migrate.upgrade(conn, old) == (start, LATEST_VERSION)
    assert version_rows(db, old) == list(range(1, LATEST_VERSION + 1))
    # The upgrade did not create the schema: uninstall keeps it (now empty).
    assert migrate.uninstall(conn, old)
    assert schema_exists(db, old)


def test_every_migration_is_a_step(
    conn: psycopg.Connection, new_schema: NewSchema
) -> None:
    name = new_schema()
    for version in range(1, len(MIGRATIONS) + 1):
        assert migrate.upgrade(conn, name, target=version) == (version - 1, version)
        assert migrate.upgrade(conn, name, target=version) == (version, version)


def test_upgrade_to_an_unknown_version(conn: psycopg.Connection, new_schema: NewSchema) -> None:
    with pytest.raises(ValueError, match="unknown schema version"):
        migrate.upgrade(conn, new_schema(), target=LATEST_VERSION + 1)


def test_upgrade_never_downgrades(tq: TaskQueue, conn: psycopg.Connection) -> None:
    assert migrate.upgrade(conn, tq.schema, target=0) == (LATEST_VERSION, LATEST_VERSION)
    assert tq.check_installed() == LATEST_VERSION


# -- uninstall --------------------------------------------------------------------------


def test_uninstall_drops_everything(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    tq = TaskQueue(pgtaskq_dsn, schema=new_schema())
    tq.install()
    tq.enqueue("t")
    tq.close()
    assert tq.uninstall() is True
    assert not schema_exists(db, tq.schema)
    assert tq.uninstall() is False
    with pytest.raises(SchemaNotInstalledError):
        tq.get_job(1)
    tq.close()


def test_uninstall_keeps_the_users_tables_and_schema(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    name = new_schema()
    ident = sql.Identifier(name)
    db.execute(sql.SQL("CREATE SCHEMA {s}").format(s=ident))
    db.execute(sql.SQL("CREATE TABLE {s}.orders (id serial PRIMARY KEY, note text)").format(
        s=ident))
    db.execute(sql.SQL("INSERT INTO {s}.orders (note) VALUES ('keep me')").format(s=ident))
    users_objects = objects_in(db, name)

    tq = TaskQueue(pgtaskq_dsn, schema=name)
    tq.install()
    tq.enqueue("t")
    tq.close()
    assert objects_in(db, name) > users_objects
    assert tq.uninstall() is True

    assert schema_exists(db, name)
    # nothing of pgtaskq's is left, whatever later migrations add
    assert objects_in(db, name) == users_objects
    rows = db.execute(sql.SQL("SELECT note FROM {s}.orders").format(s=ident)).fetchall()
    assert rows == [("keep me",)]


def test_uninstall_of_a_schema_that_never_existed(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    name = new_schema()
    assert TaskQueue(pgtaskq_dsn, schema=name).uninstall() is False
    assert not schema_exists(db, name)


def test_install_by_a_role_that_owns_only_its_schema(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    """Least privilege: a DBA made the schema for the app's role, which may not CREATE in
    the database (``CREATE SCHEMA IF NOT EXISTS`` would fail for it)."""
    name, role = new_schema(), f"r_{uuid.uuid4().hex[:12]}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(name), sql.Identifier(role)))
        app_dsn = psycopg.conninfo.make_conninfo(pgtaskq_dsn, user=role)
        row = db.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE')",
                         [role]).fetchone()
        assert row == (False,)
        tq = TaskQueue(app_dsn, schema=name)
        try:
            tq.install()
        except DatabaseUnavailableError as exc:  # a server that refuses the new role
            pytest.skip(f"cannot log in as a new role here: {exc}")
        assert tq.install() == (LATEST_VERSION, LATEST_VERSION)
        assert tq.get_job(tq.enqueue("t")) is not None
        tq.close()
        assert tq.uninstall() is True
    finally:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_uninstall_keeps_a_schema_holding_only_user_types(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    name = new_schema()
    db.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TYPE {s}.mood AS ENUM ('ok')").format(
        s=sql.Identifier(name)))
    users_objects = objects_in(db, name)
    tq = TaskQueue(pgtaskq_dsn, schema=name)
    tq.install()
    assert tq.uninstall() is True
    assert schema_exists(db, name)
    assert objects_in(db, name) == users_objects


def _users_tables_named_like_pgtaskqs(db: psycopg.Connection, name: str) -> set[str]:
    ident = sql.Identifier(name)
    db.execute(sql.SQL("CREATE SCHEMA {s}").format(s=ident))
    db.execute(sql.SQL("CREATE TABLE {s}.jobs (id int, what text)").format(s=ident))
    db.execute(sql.SQL("CREATE TABLE {s}.workers (name text)").format(s=ident))
    db.execute(sql.SQL("INSERT INTO {s}.jobs VALUES (1, 'payroll')").format(s=ident))
    db.execute(sql.SQL("INSERT INTO {s}.workers VALUES ('ada')").format(s=ident))
    return objects_in(db, name)


def test_uninstall_where_pgtaskq_was_never_installed_drops_nothing(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    """The user's own ``jobs`` and ``workers`` tables are not pgtaskq's to drop."""
    name = new_schema()
    users_objects = _users_tables_named_like_pgtaskqs(db, name)
    assert TaskQueue(pgtaskq_dsn, schema=name).uninstall() is False
    assert objects_in(db, name) == users_objects
    rows = db.execute(sql.SQL("SELECT what FROM {}.jobs").format(sql.Identifier(name)))
    assert rows.fetchall() == [("payroll",)]


def test_cli_uninstall_where_pgtaskq_was_never_installed(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    name = new_schema()
    users_objects = _users_tables_named_like_pgtaskqs(db, name)
    done = subprocess.run(
        [sys.executable, "-m", "pgtaskq", "--dsn", pgtaskq_dsn, "--schema", name,
         "uninstall", "--yes"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "was not installed" in done.stdout and "nothing was dropped" in done.stdout
    assert schema_exists(db, name)
    assert objects_in(db, name) == users_objects


def test_uninstall_keeps_a_schema_pgtaskq_did_not_create_even_when_empty(
    pgtaskq_dsn: str, new_schema: NewSchema, db: psycopg.Connection
) -> None:
    name = new_schema()
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    tq = TaskQueue(pgtaskq_dsn, schema=name)
    tq.install()
    assert tq.uninstall() is True
    assert schema_exists(db, name)
    assert objects_in(db, name) == set()


def test_uninstall_of_a_schema_newer_than_the_code_drops_nothing(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    db.execute(
        sql.SQL("INSERT INTO {}.schema_version (version, pgtaskq_version) VALUES (%s, '9')")
        .format(sql.Identifier(tq.schema)),
        [LATEST_VERSION + 1],
    )
    before = objects_in(db, tq.schema)
    with pytest.raises(SchemaVersionError, match="newer than this pgtaskq"):
        tq.uninstall()
    assert objects_in(db, tq.schema) == before

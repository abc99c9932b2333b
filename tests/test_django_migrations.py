# ruff: noqa: F811 - pytest fixtures imported from djangotest_settings are parameters
"""Every pgtaskq schema version ships as a Django migration, so ``migrate`` upgrades it."""

from __future__ import annotations

import uuid

import pytest
from djangotest_settings import django_configured  # noqa: F401
from test_django_example import manage

from pgtaskq.sql import migrations


def test_every_schema_version_has_a_django_migration(django_configured):
    """Adding a schema version (pgtaskq.sql.migrations) without its Django migration
    (pgtaskq/contrib/django/migrations/NNNN_schema_vN.py) fails here."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    leaves = loader.graph.leaf_nodes("pgtaskq")
    assert len(leaves) == 1, f"pgtaskq's Django migrations must form one chain: {leaves}"
    from pgtaskq.contrib.django.schema_migration import SchemaMigration

    chain = [loader.graph.nodes[key] for key in loader.graph.forwards_plan(leaves[0])
             if key[0] == "pgtaskq"]
    versions = [m.version for m in chain if isinstance(m, SchemaMigration)]
    assert versions == list(range(1, migrations.LATEST_VERSION + 1))


@pytest.fixture
def project_env(pgtaskq_dsn, db):
    """The example project on a schema of its own for Django's tables and for pgtaskq's."""
    app_schema, jobs_schema = (f"{p}_{uuid.uuid4().hex[:12]}" for p in ("dj", "mig"))
    db.execute(f"CREATE SCHEMA {app_schema}")
    yield {"PGTASKQ_DSN": pgtaskq_dsn, "PGTASKQ_SCHEMA": jobs_schema,
           "APP_DB_SCHEMA": app_schema, "DJANGO_SETTINGS_MODULE": "project.settings"}
    db.execute(f"DROP SCHEMA {app_schema} CASCADE")
    db.execute(f"DROP SCHEMA IF EXISTS {jobs_schema} CASCADE")


def installed_version(db, schema):
    return db.execute(f"SELECT max(version) FROM {schema}.schema_version").fetchone()[0]


def test_migrate_upgrades_an_old_schema_and_the_worker_says_so_meanwhile(project_env, db):
    schema = project_env["PGTASKQ_SCHEMA"]
    old = manage(project_env, "migrate", "pgtaskq", "0001", "--noinput")
    assert old.returncode == 0, old.stderr
    assert installed_version(db, schema) == 1  # as a project migrated by release 1 has it

    refused = manage(project_env, "pgtaskq", "worker")
    assert refused.returncode != 0
    assert "python manage.py migrate" in refused.stderr
    assert "python manage.py pgtaskq upgrade" in refused.stderr

    upgraded = manage(project_env, "migrate", "--noinput")
    assert upgraded.returncode == 0, upgraded.stderr
    assert installed_version(db, schema) == migrations.LATEST_VERSION
    again = manage(project_env, "migrate", "--noinput")  # nothing left to do
    assert again.returncode == 0 and "No migrations to apply" in again.stdout

"""One Django migration per pgtaskq schema version, so ``migrate`` keeps the schema current.

pgtaskq's tables are its own versioned schema (``pgtaskq.sql.migrations``), not Django
models. Django's deploy routine is ``migrate`` then restart: if ``migrate`` only installed
the schema once, a package upgrade that brings a new schema version would leave it old, the
new workers would refuse to start, and web processes would go on enqueueing. So every
schema version has a migration file in ``pgtaskq/contrib/django/migrations``, named
``NNNN_schema_vV.py`` (NNNN the next free migration number, V the schema version; version
1's is ``0001_install_schema.py``) and containing only::

    from pgtaskq.contrib.django.schema_migration import SchemaMigration


    class Migration(SchemaMigration):
        version = V

Its dependencies (every migration numbered NNNN - 1) and its operation (bring the schema
to version V, under pgtaskq's advisory lock, idempotent) are derived here.
``tests/test_django_migrations.py`` fails when a schema version has no such file.
"""

from __future__ import annotations

import pkgutil
from typing import Any

from django.db import migrations

APP_LABEL = "pgtaskq"
MIGRATIONS_PACKAGE = "pgtaskq.contrib.django.migrations"


def migration_names() -> list[str]:
    """The app's migration module names, in order (``0001_install_schema``, ...)."""
    from pgtaskq.contrib.django import migrations as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name[:4].isdigit())


def upgrade_schema_to(version: int) -> migrations.RunPython:
    """The operation that brings pgtaskq's schema to ``version`` (never down)."""

    def forwards(apps: Any, schema_editor: Any) -> None:
        from pgtaskq import migrate
        from pgtaskq.contrib.django.conf import get_queue

        queue = get_queue()
        # Only when migrating the database the jobs live in (not every alias of a multi-db).
        if queue.database is not None and queue.database != schema_editor.connection.alias:
            return
        with queue.connect() as conn:
            before = migrate.installed_version(conn, queue.schema)
            if before < version:
                migrate.upgrade(conn, queue.schema, target=version)

    # Reversing does nothing: dropping the jobs is 'manage.py pgtaskq uninstall'.
    return migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False)


class SchemaMigration(migrations.Migration):
    """A migration that brings pgtaskq's schema to ``version``.

    It depends on every migration of the app numbered one below it: the previous schema
    version's, and any model migration of the same number (the admin's unmanaged models),
    so the app's migrations stay one chain with one leaf.
    """

    version: int = 0

    def __init__(self, name: str, app_label: str) -> None:
        super().__init__(name, app_label)
        if self.version != schema_version_of(name):
            raise ValueError(f"migration {name} must set version = {schema_version_of(name)}")
        number = int(name[:4])
        self.dependencies = [(APP_LABEL, other) for other in migration_names()
                             if int(other[:4]) == number - 1]
        self.initial = number == 1
        self.operations = [upgrade_schema_to(self.version)]


def schema_version_of(name: str) -> int | None:
    """The schema version a migration module's name says it ships, if any."""
    if name == "0001_install_schema":
        return 1
    _, sep, tail = name.rpartition("_schema_v")
    return int(tail) if sep and tail.isdigit() else None

"""Install pgtaskq's tables on ``migrate``.

The tables are pgtaskq's own versioned schema, not Django models: this migration only
calls ``install()`` (idempotent, under an advisory lock), on pgtaskq's own connection to
the configured database. After upgrading pgtaskq, run ``manage.py pgtaskq upgrade``.
Reversing it does nothing: dropping the jobs is ``manage.py pgtaskq uninstall``.
"""

from django.db import migrations


def install(apps, schema_editor):
    from pgtaskq.contrib.django.conf import get_queue

    queue = get_queue()
    # Only when migrating the database the jobs live in (not every alias of a multi-db).
    if queue.database is None or queue.database == schema_editor.connection.alias:
        queue.install()


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [migrations.RunPython(install, migrations.RunPython.noop, elidable=True)]

"""pgtaskq schema version 3: paused queues (pgtaskq.contrib.django.schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 3

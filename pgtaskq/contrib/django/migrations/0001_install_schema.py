"""pgtaskq schema version 1: its tables (pgtaskq.contrib.django.schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 1

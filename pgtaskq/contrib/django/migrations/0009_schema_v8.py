"""pgtaskq schema version 8: failed_attempts (pgtaskq.contrib.django.schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 8

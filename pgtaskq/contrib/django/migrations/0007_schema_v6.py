"""pgtaskq schema version 6: parked jobs (pgtaskq.contrib.django.schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 6

"""pgtaskq schema version 9: wake-ups only for waiting workers (schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 9

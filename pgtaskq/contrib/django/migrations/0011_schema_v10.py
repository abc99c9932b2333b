"""pgtaskq schema version 10: an index of live workers (schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 10

"""pgtaskq schema version 7: functions' fixed search_path (contrib.django.schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 7

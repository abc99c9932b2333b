"""pgtaskq schema version 2: claim_jobs() (pgtaskq.contrib.django.schema_migration)."""

from pgtaskq.contrib.django.schema_migration import SchemaMigration


class Migration(SchemaMigration):
    version = 2

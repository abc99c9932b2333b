"""Unmanaged models of pgtaskq's job tables, for the admin: no table is created."""

from django.db import migrations, models

from pgtaskq.contrib.django.models import table

FIELDS = [
    ("id", models.BigIntegerField(primary_key=True, serialize=False)),
    ("task", models.TextField()),
    ("queue", models.TextField()),
    ("status", models.TextField()),
    ("args", models.JSONField()),
    ("kwargs", models.JSONField()),
    ("priority", models.IntegerField()),
    ("attempts", models.IntegerField()),
    ("max_attempts", models.IntegerField()),
    ("run_at", models.DateTimeField()),
    ("created_at", models.DateTimeField()),
    ("started_at", models.DateTimeField(null=True)),
    ("last_error", models.TextField(null=True)),
    ("worker_id", models.BigIntegerField(null=True)),
    ("dedupe_key", models.TextField(null=True)),
]


class Migration(migrations.Migration):
    dependencies = [("pgtaskq", "0001_install_schema")]
    operations = [
        migrations.CreateModel(
            name="Job",
            fields=[*FIELDS, ("cancel_requested", models.BooleanField())],
            options={"verbose_name": "live job", "db_table": table("jobs"),
                     "ordering": ("-id",), "managed": False},
        ),
        migrations.CreateModel(
            name="FinishedJob",
            fields=[*FIELDS, ("finished_at", models.DateTimeField()),
                    ("result", models.JSONField(null=True))],
            options={"verbose_name": "finished job", "db_table": table("job_history"),
                     "ordering": ("-id",), "managed": False},
        ),
    ]

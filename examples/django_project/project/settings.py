"""Settings of the example project: one PostgreSQL database for the app and its jobs.

Everything comes from the environment so the same project runs on a laptop and in the
tests: ``DATABASE_URL`` (default ``$PGTASKQ_DSN``), ``APP_DB_SCHEMA`` (schema of the
app's tables, default ``public``), ``PGTASKQ_SCHEMA`` (schema of pgtaskq's tables).
"""

import os

from psycopg.conninfo import conninfo_to_dict

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"

try:  # Django >= 6 has django.tasks built in; older versions use the backport
    import django.tasks  # noqa: F401

    TASKS_APP = []
except ImportError:
    TASKS_APP = ["django_tasks"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    *TASKS_APP,
    "pgtaskq.contrib.django",
    "accounts",
]
# The admin (pgtaskq's job pages) and the dashboard's include() sign staff in; the admin's
# views protect their forms themselves, and the example's JSON API is CSRF-exempt.
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
LOGIN_URL = "/admin/login/"  # where the dashboard sends anonymous users
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

_db = conninfo_to_dict(os.environ.get("DATABASE_URL") or os.environ["PGTASKQ_DSN"])
_app_schema = os.environ.get("APP_DB_SCHEMA")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        "OPTIONS": {"options": f"-c search_path={_app_schema}"} if _app_schema else {},
        # manage.py test creates this database (default test_<NAME>); pgtaskq's test
        # suite gives each run its own, so runs side by side do not collide
        "TEST": {"NAME": os.environ.get("DJANGO_TEST_DATABASE") or None},
    }
}

# Jobs are written on the "default" connection: inside transaction.atomic() they commit
# or roll back with the view. The schema comes from $PGTASKQ_SCHEMA (else "pgtaskq").
PGTASKQ = {"DATABASE": "default"}

TASKS = {
    "default": {
        "BACKEND": "pgtaskq.contrib.django.PgtaskqBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"MAX_ATTEMPTS": 5},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job": {"()": "pgtaskq.logs.JobContextFilter"}},
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s%(job_suffix)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["job"],
                             "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    # The worker prints its lines through this configuration, at these levels.
    "loggers": {"pgtaskq": {"level": "INFO"}},
}

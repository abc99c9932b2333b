"""pgtaskq for Django: settings, transactional enqueue, ``manage.py pgtaskq``, django.tasks.

Add ``"pgtaskq.contrib.django"`` to ``INSTALLED_APPS`` and (optionally) a ``PGTASKQ`` dict
to the settings. ``get_queue()`` returns the project's TaskQueue: its ``enqueue`` writes on
``django.db.connections[alias]``, so a job enqueued inside ``transaction.atomic()`` commits
or rolls back with the view. ``PgtaskqBackend`` is the ``django.tasks`` backend (Django 6,
or the ``django-tasks`` backport).

Names are loaded lazily: importing this package must not import Django's task framework
(an optional dependency) nor read settings before Django is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgtaskq.contrib.django.backend import PgtaskqBackend as PgtaskqBackend
    from pgtaskq.contrib.django.conf import DjangoTaskQueue as DjangoTaskQueue
    from pgtaskq.contrib.django.conf import get_queue as get_queue

__all__ = ["DjangoTaskQueue", "PgtaskqBackend", "get_queue"]


def __getattr__(name: str) -> Any:
    if name in ("get_queue", "DjangoTaskQueue"):
        from pgtaskq.contrib.django import conf

        return getattr(conf, name)
    if name == "PgtaskqBackend":
        from pgtaskq.contrib.django.backend import PgtaskqBackend

        return PgtaskqBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

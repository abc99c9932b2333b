"""Dramatiq side: ``dramatiq benchmarks.apps.dramatiq_app --processes 1 --threads 8``.

Redis broker from ``$REDIS_URL`` with Dramatiq's default middleware.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import body

broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def record(n: int) -> None:
    body.record(n)

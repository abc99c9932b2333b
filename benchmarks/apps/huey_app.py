"""Huey side: ``huey_consumer benchmarks.apps.huey_app.huey -w 8 -k thread``.

``RedisHuey`` from ``$REDIS_URL`` with its defaults (blocking pop from Redis).
"""

from __future__ import annotations

import os

from huey import RedisHuey

from benchmarks import body

huey = RedisHuey("bench", url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@huey.task()
def record(n: int) -> None:
    body.record(n)

"""Statements on ``paused_queues``: pause and resume a queue, list the paused ones.

The claim (``claim_jobs``, schema version 3) reads this table at every claim, so these
statements need to tell no worker anything, except that resuming wakes the workers of the
queue (its ``q:`` notification), which may sleep until their next poll otherwise.
"""

from __future__ import annotations

PAUSE = """
INSERT INTO {schema}.paused_queues (queue) VALUES (%(queue)s)
ON CONFLICT (queue) DO NOTHING
RETURNING queue
"""
"""A row back when the queue was running until now; none when it was already paused."""

RESUME = """
WITH resumed AS (
    DELETE FROM {schema}.paused_queues WHERE queue = %(queue)s RETURNING queue
)
SELECT queue, pg_notify(%(channel)s, 'q:' || queue) FROM resumed
"""
"""A row back when the queue was paused until now; none when it was not paused."""

LIST_PAUSED = """
SELECT queue, paused_at FROM {schema}.paused_queues ORDER BY queue
"""

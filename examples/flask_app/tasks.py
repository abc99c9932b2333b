"""The example's background jobs, on the app's PgTaskQ.

``connection=`` makes every enqueue during a request join the SQLAlchemy session's
transaction, so a job exists only if the request commits.
"""

from __future__ import annotations

from models import WelcomeEmail, db_session

from pgtaskq import current_job
from pgtaskq.contrib.flask import PgTaskQ, sqlalchemy_connection

pgtq = PgTaskQ(connection=sqlalchemy_connection(db_session))


@pgtq.task(queue="emails", max_attempts=5)
def send_welcome(user_id: int) -> str:
    """Pretend to send the email; record it (the worker runs this in an app context)."""
    db_session.add(WelcomeEmail(user_id=user_id, job_id=current_job().id))
    db_session.commit()
    return f"welcome sent to user {user_id}"

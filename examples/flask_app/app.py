"""A small Flask app whose signup writes a user and enqueues its welcome job atomically.

``POST /signup`` with ``{"email": ...}`` inserts the user, enqueues ``send_welcome`` on
the same transaction and commits. ``POST /signup?fail=1`` does the same and then fails
before the commit: the user and the job both vanish with the rollback.

Run it::

    export PGTASKQ_DSN=postgresql://localhost/mydb
    flask --app app:create_app init-db          # app tables + pgtaskq schema
    gunicorn -w 2 --threads 8 'app:create_app()'
    flask --app app:create_app pgtaskq worker   # in another terminal
"""

from __future__ import annotations

import click
from flask import Flask, g, jsonify, request
from models import Base, User, db_session, make_engine
from tasks import pgtq, send_welcome


class SignupFailed(Exception):
    """Raised by the failing variant after the enqueue, before the commit."""


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_PGTASKQ_SCHEMA=... and friends
    engine = make_engine()
    db_session.configure(bind=engine)
    pgtq.init_app(app)

    @app.teardown_appcontext
    def remove_session(exc: BaseException | None) -> None:
        db_session.remove()  # rolls back whatever was not committed

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/signup")
    def signup():
        email = (request.get_json(silent=True) or request.form).get("email")
        if not email:
            return jsonify(error="email is required"), 400
        user = User(email=email)
        db_session.add(user)
        db_session.flush()  # assigns user.id inside the transaction
        job_id = send_welcome.enqueue(user.id)  # same transaction as the INSERT
        if request.args.get("fail"):
            g.job_id = job_id
            raise SignupFailed(f"signup of {email} failed after the enqueue")
        db_session.commit()
        return jsonify(user_id=user.id, job_id=job_id)

    @app.errorhandler(SignupFailed)
    def signup_failed(exc: SignupFailed):
        db_session.rollback()
        return jsonify(error=str(exc), job_id=g.get("job_id")), 500

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the app's tables and install pgtaskq's schema."""
        Base.metadata.create_all(engine)
        pgtq.install()
        click.echo("tables created, pgtaskq installed")

    return app

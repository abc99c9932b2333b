"""The Flask extension: configuration, enqueue on the request's connection, CLI, app context."""

from __future__ import annotations

import threading

import psycopg
import psycopg2
import pytest
from flask import Flask, current_app
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from pgtaskq import Worker
from pgtaskq.contrib.flask import PgTaskQ, get_queue, sqlalchemy_connection
from pgtaskq.testing import wait_until


@pytest.fixture
def make_app(pgtaskq_dsn, tq):
    """Build a Flask app whose PgTaskQ points at the test's schema."""

    def make(pgtq: PgTaskQ) -> Flask:
        app = Flask("flask_test_app")
        app.config.update(PGTASKQ_DSN=pgtaskq_dsn, PGTASKQ_SCHEMA=tq.schema,
                          PGTASKQ_POOL_MAX_SIZE=2)
        pgtq.init_app(app)
        return app

    created: list[PgTaskQ] = []
    yield lambda pgtq: (created.append(pgtq), make(pgtq))[1]
    for pgtq in created:
        pgtq.close()


def test_config_comes_from_the_app(make_app, tq, pgtaskq_dsn):
    pgtq = PgTaskQ()
    app = make_app(pgtq)
    assert (pgtq.schema, pgtq.dsn) == (tq.schema, pgtaskq_dsn)
    assert get_queue(app) is pgtq
    with app.app_context():
        assert get_queue() is pgtq


def test_tasks_registered_before_init_app_survive_it(make_app):
    pgtq = PgTaskQ()

    @pgtq.task
    def early(x):
        return x

    make_app(pgtq)
    make_app(pgtq)  # app factories call init_app once per app
    assert pgtq.tasks[early.name] is early


def test_get_queue_without_extension_says_what_to_do():
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="PgTaskQ"):
        get_queue()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_enqueue_in_a_request_joins_the_request_connection(make_app, tq, pgtaskq_dsn, driver):
    connect = psycopg.connect if driver == "psycopg" else psycopg2.connect
    conn = connect(pgtaskq_dsn)
    pgtq = PgTaskQ(connection=lambda: conn)
    app = make_app(pgtq)

    @pgtq.task
    def welcome(user_id):
        return user_id

    try:
        with app.test_request_context():
            rolled_back = welcome.enqueue(1)
            assert tq.get_job(rolled_back) is None  # not committed yet
            conn.rollback()
            committed = welcome.enqueue(2)
            conn.commit()
        assert tq.get_job(rolled_back) is None
        assert tq.get_job(committed).args == [2]
    finally:
        conn.close()


def test_enqueue_outside_a_request_commits_on_its_own(make_app, tq):
    pgtq = PgTaskQ(connection=lambda: pytest.fail("no request: must not be asked"))
    make_app(pgtq)
    job_id = pgtq.enqueue("some.task", args=[1])
    assert tq.get_job(job_id).status == "queued"


def test_sqlalchemy_session_connection(make_app, tq, pgtaskq_dsn):
    engine = create_engine("postgresql+psycopg://" + pgtaskq_dsn.split("://", 1)[1])
    session = Session(engine)
    pgtq = PgTaskQ(connection=sqlalchemy_connection(session))
    app = make_app(pgtq)
    try:
        with app.test_request_context():
            session.execute(text("SELECT 1"))
            gone = pgtq.enqueue("welcome", args=[1])
            session.rollback()
            kept = pgtq.enqueue("welcome", args=[2])
            session.commit()
        assert tq.get_job(gone) is None
        assert tq.get_job(kept).args == [2]
    finally:
        session.close()
        engine.dispose()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_worker_runs_jobs_inside_an_app_context(make_app, tq, pool):
    pgtq = PgTaskQ()
    app = make_app(pgtq)
    seen: list[str] = []

    @pgtq.task
    def whoami():
        seen.append(current_app.name)
        return current_app.name

    job_id = whoami.enqueue()
    worker = Worker(pgtq, concurrency=1, poll_interval=0.2, pool=pool)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: tq.get_job(job_id).status == "succeeded", 15, what="job done")
    finally:
        worker.stop()
        thread.join(30)
    if pool == "thread":
        assert seen == [app.name]
    else:  # it ran in a child process, in the app context the worker's app made
        assert seen == []
    assert tq.get_job(job_id).result == app.name


def test_flask_cli_commands(make_app, tq):
    pgtq = PgTaskQ()
    app = make_app(pgtq)
    runner = app.test_cli_runner()

    result = runner.invoke(args=["pgtaskq", "install"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output

    result = runner.invoke(args=["pgtaskq", "enqueue", "reports.build", "--args", "[7]"])
    assert result.exit_code == 0, result.output
    job_id = int(result.output.strip())
    assert tq.get_job(job_id).args == [7]

    result = runner.invoke(args=["pgtaskq", "jobs", "--json"])
    assert result.exit_code == 0 and f'"id": {job_id}' in result.output

    result = runner.invoke(args=["pgtaskq", "--schema", tq.schema, "jobs", "--json"])
    assert result.exit_code == 0 and f'"id": {job_id}' in result.output

    result = runner.invoke(args=["pgtaskq", "show", "999999999"])
    assert result.exit_code != 0 and "no job with id 999999999" in result.output

    result = runner.invoke(args=["pgtaskq", "--help"])
    assert result.exit_code == 0 and "worker" in result.output

    result = runner.invoke(args=["pgtaskq", "worker", "some.module:tq"])
    assert result.exit_code != 0 and "drop the APP argument" in result.output

    result = runner.invoke(args=["pgtaskq", "worker", "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: flask pgtaskq worker [OPTIONS]\n" in result.output
    assert "APP" not in result.output and "--concurrency" in result.output


@pytest.fixture
def session_app(make_app, pgtaskq_dsn):
    """An app whose PgTaskQ joins a scoped SQLAlchemy session removed at teardown (as
    Flask-SQLAlchemy does), with views that enqueue and forget to commit, or not."""
    from sqlalchemy.orm import scoped_session, sessionmaker

    engine = create_engine("postgresql+psycopg://" + pgtaskq_dsn.split("://", 1)[1])
    session = scoped_session(sessionmaker(bind=engine))
    pgtq = PgTaskQ(connection=sqlalchemy_connection(session))
    app = make_app(pgtq)

    @app.teardown_appcontext
    def remove_session(exc):
        session.remove()  # rolls back whatever was not committed

    @app.post("/forgets")
    def forgets():
        return {"job_id": pgtq.enqueue("welcome", args=[1])}

    @app.post("/own-pool")
    def own_pool():
        return {"job_id": pgtq.enqueue("welcome", args=[2], conn=None)}

    @app.post("/commits-then-reads")
    def commits_then_reads():
        job_id = pgtq.enqueue("welcome", args=[3])
        session.commit()
        session.execute(text("SELECT 1"))  # a new transaction, left open
        return {"job_id": job_id}

    yield app
    session.remove()
    engine.dispose()


def test_a_request_that_never_commits_its_jobs_is_warned_about(session_app, tq, caplog):
    with caplog.at_level("WARNING", logger="pgtaskq.flask"):
        job_id = session_app.test_client().post("/forgets").json["job_id"]
    assert tq.get_job(job_id) is None  # rolled back at teardown: the job never existed
    warnings = [r.getMessage() for r in caplog.records if r.name == "pgtaskq.flask"]
    assert len(warnings) == 1
    assert "POST /forgets" in warnings[0] and f"({job_id})" in warnings[0]
    assert "using(conn=None)" in warnings[0]


def test_conn_none_commits_on_pgtaskqs_pool_and_committed_jobs_are_not_warned_about(
    session_app, tq, caplog
):
    client = session_app.test_client()
    with caplog.at_level("WARNING", logger="pgtaskq.flask"):
        own = client.post("/own-pool").json["job_id"]
        committed = client.post("/commits-then-reads").json["job_id"]
    assert tq.get_job(own).args == [2]
    assert tq.get_job(committed).args == [3]
    assert [r for r in caplog.records if r.name == "pgtaskq.flask"] == []


def test_the_dsn_comes_from_sqlalchemys_url_when_none_is_set(tq, pgtaskq_dsn, monkeypatch):
    """One database, one setting: Flask-SQLAlchemy's URL names the driver, pgtaskq's DSN
    must not (libpq cannot parse 'postgresql+psycopg2://')."""
    monkeypatch.delenv("PGTASKQ_DSN", raising=False)
    app = Flask("sqlalchemy_url_app")
    app.config.update(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://" + pgtaskq_dsn.split("://", 1)[1],
        PGTASKQ_SCHEMA=tq.schema, PGTASKQ_POOL_MAX_SIZE=2)
    pgtq = PgTaskQ(app)
    try:
        assert pgtq.dsn == pgtaskq_dsn
        job_id = pgtq.enqueue("welcome", args=[1])
        assert tq.get_job(job_id).args == [1]
    finally:
        pgtq.close()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_flask_pgtaskq_worker_burst_drains_and_returns(make_app, tq, pool):
    pgtq = PgTaskQ()
    app = make_app(pgtq)

    @pgtq.task(name="flask_burst")
    def flask_burst(x):
        return current_app.name, x

    ids = [flask_burst.enqueue(n) for n in range(3)]
    result = app.test_cli_runner().invoke(
        args=["pgtaskq", "worker", "--burst", "--poll-interval", "0.5", "--pool", pool])
    assert result.exit_code == 0, result.output
    assert [tq.get_job(i).result for i in ids] == [[app.name, n] for n in range(3)]

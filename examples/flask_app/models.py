"""The example's tables and its SQLAlchemy session (one per thread, removed per request).

``DATABASE_URL`` picks the database (default: ``$PGTASKQ_DSN`` with the psycopg 3
driver) and ``APP_DB_SCHEMA`` the schema the tables live in (the tests give each run
its own).
"""

from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, create_engine, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WelcomeEmail(Base):
    """One row per welcome email sent; the primary key makes a second send fail loudly."""

    __tablename__ = "welcome_emails"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def database_url() -> str:
    url = os.environ.get("DATABASE_URL") or os.environ.get("PGTASKQ_DSN", "")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine():
    schema = os.environ.get("APP_DB_SCHEMA")
    connect_args = {"options": f"-c search_path={schema}"} if schema else {}
    return create_engine(database_url(), connect_args=connect_args, pool_pre_ping=True)


db_session = scoped_session(sessionmaker())
"""Bound to an engine by ``create_app`` (in each gunicorn worker, after the fork)."""

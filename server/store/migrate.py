"""Applies the Alembic migrations in ``migrations/`` to a database."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from server.store.database import sqlalchemy_url

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Brings the schema to ``revision``; safe to run from several processes
    at once (an advisory lock serialises them)."""
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7428113)")
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()

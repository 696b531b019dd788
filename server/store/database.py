"""Where the database is: a ``DATABASE_URL``, or an embedded PostgreSQL.

With no URL the service runs its own PostgreSQL (the ``pgserver`` package) in
a local data folder, so a fresh checkout runs with nothing to install.
"""

import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "campaign_analytics"

# Failures to reach PostgreSQL (as opposed to bugs): the caller should retry.
DATABASE_UNREACHABLE = (
    psycopg.OperationalError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    OSError,
)
_embedded_servers: list[Any] = []  # kept alive for the process's lifetime


def unreachable_cause(exc: BaseException) -> str:
    """Why PostgreSQL could not be reached, in short and without its address
    ("Connection refused (OperationalError)"): for a status any key may read.
    The log has the whole message."""
    lines = str(exc).strip().splitlines()
    # libpq says where it tried, then why: "connection to server at ... failed: <why>".
    detail = lines[0].rsplit(": ", 1)[-1].strip() if lines else ""
    name = type(exc).__name__
    return f"{detail[:200]} ({name})" if detail else name


def start_embedded(data_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Starts (or joins) the embedded PostgreSQL in ``data_dir``; returns its URL.

    The server stops when the last process using it exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback is fine.
        warnings.simplefilter("ignore")
        import pgserver

        data_dir = data_dir.expanduser().resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", data_dir)
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    _embedded_servers.append(server)
    url = str(server.get_uri())
    create_database(url, database)
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_database(url: str, database: str) -> None:
    """Creates ``database`` on the server of ``url`` unless it exists."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg) reads it: no SQLAlchemy driver suffix."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str) -> str:
    """The URL with SQLAlchemy's psycopg 3 driver."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def resolve_url(database_url: str | None, data_dir: Path) -> str:
    return database_url if database_url else start_embedded(data_dir)

"""A connection to the PostgreSQL server's maintenance database, for creating and
dropping the throwaway databases of the tests and the benchmarks."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy.engine import make_url


def admin_connection(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to the database `url` names (a SQLAlchemy URL)."""
    parts = make_url(url)
    return psycopg.connect(
        host=parts.host,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=parts.database,
        autocommit=True,
        connect_timeout=3,
    )

"""Alembic environment: the URL comes from the Alembic config or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import notifier.store.models  # noqa: F401 - registers the tables on SQLModel.metadata
from notifier.settings import Settings
from notifier.store.db import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def run_migrations() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()

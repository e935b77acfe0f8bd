"""Alembic environment: runs against an open connection (tests) or the configured URL."""

import os

from alembic import context

from app import import_models
from core import db
from core.settings import Settings

config = context.config
target_metadata = import_models().metadata


def run_migrations(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or Settings.from_env(os.environ).database_url
    engine = db.create_db_engine(url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:  # a migration that refuses (0009's downgrade, say) leaves no pooled connection
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline migrations are not supported; run them against a database.")
run()

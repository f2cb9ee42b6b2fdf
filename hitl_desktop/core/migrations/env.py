"""Alembic environment: runs migrations on the connection the project store hands over."""
from __future__ import annotations

from alembic import context

from hitl_desktop.core.db import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # pragma: no cover - developer use: `alembic -c hitl_desktop/core/alembic.ini revision`
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()

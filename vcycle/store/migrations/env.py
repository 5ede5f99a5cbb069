"""Alembic environment: runs the migrations on the connection vcycle hands in."""

from __future__ import annotations

from alembic import context

from vcycle.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - vcycle always hands one in
    raise RuntimeError("vcycle's migrations run only through vcycle.store")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""The control store: SQLAlchemy models, engine and Alembic migrations (SQLite by default, PostgreSQL too)."""

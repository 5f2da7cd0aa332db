"""Alembic revisions of the relational schema, oldest first (``v0001_...``)."""

"""The registry store: SQLAlchemy models, Alembic migrations, sessions and queries.

May import ``kerma.records``, ``kerma.errors`` and ``kerma.config``; never ``kerma.ingest``,
``kerma.dicom`` or any interface package.
"""

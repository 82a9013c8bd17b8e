"""Declarative base of the registry tables, with a naming convention for constraints.

The naming convention gives every index and constraint a stable name, so Alembic
migrations (batch mode on SQLite) can refer to them on every database.

This module must not import anything else from Kerma.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every Kerma table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

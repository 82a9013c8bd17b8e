"""Reads and writes of the pseudonym key's state: fingerprint and keyed-hash columns.

:data:`KEYED_HASH_COLUMNS` lists every column that holds a keyed hash made with the
pseudonym key (``kerma.ingest.pseudonym.KeyChain.digest``); :func:`rekey_columns`
moves all of them to a new key in the caller's transaction, so ``kerma key rotate``
re-keys the registry in one transaction. A new keyed-hash column (e.g. a keyed hash of
the accession number) is one more line in :data:`KEYED_HASH_COLUMNS`. None of these
functions commits.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from kerma.db.base import Base
from kerma.db.summary import get_setting, set_setting

#: ``registry_setting`` key of the pseudonym key's fingerprint (HMAC of a fixed label).
KEY_FINGERPRINT_SETTING = "pseudonym_key_fingerprint"

#: Every column holding a keyed hash made with the pseudonym key, as (table, column).
#: ``kerma key rotate`` re-keys each of them; add a line for a new keyed-hash column.
KEYED_HASH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("patient", "pseudonym"),
    ("report_version", "patient_pseudonym"),
    ("study", "accession_pseudonym"),
    ("ris_order", "accession_pseudonym"),
    ("ris_order", "patient_pseudonym"),
)

#: Rows re-keyed per UPDATE statement.
REKEY_BATCH = 1000


def get_key_fingerprint(session: Session) -> str | None:
    """Return the fingerprint of the key the registry's keyed hashes were made with."""
    return get_setting(session, key=KEY_FINGERPRINT_SETTING)


def set_key_fingerprint(session: Session, *, fingerprint: str) -> None:
    """Record the fingerprint of the registry's key."""
    set_setting(session, key=KEY_FINGERPRINT_SETTING, value=fingerprint)


def _table(name: str) -> Table:
    """Return a registry table by name."""
    return Base.metadata.tables[name]


def has_keyed_hashes(session: Session) -> bool:
    """Return whether any keyed-hash column of the registry holds a value."""
    for table_name, column_name in KEYED_HASH_COLUMNS:
        column = _table(table_name).c[column_name]
        if session.scalar(select(exists().where(column.is_not(None)))):
            return True
    return False


def count_keyed_hashes(session: Session) -> dict[str, int]:
    """Return how many values each keyed-hash column holds, by ``table.column``."""
    out: dict[str, int] = {}
    for table_name, column_name in KEYED_HASH_COLUMNS:
        column = _table(table_name).c[column_name]
        out[f"{table_name}.{column_name}"] = (
            session.scalar(select(func.count()).where(column.is_not(None))) or 0
        )
    return out


def rekey_columns(session: Session, transform: Callable[[str], str]) -> dict[str, int]:
    """Replace every value of every keyed-hash column by ``transform(value)``.

    Runs in the caller's transaction (never commits): all columns change together or
    not at all.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        A writing session.
    transform : callable
        Old keyed hash (hex) to new keyed hash (hex).

    Returns
    -------
    dict of str to int
        Values re-keyed, by ``table.column``.
    """
    done: dict[str, int] = {}
    for table_name, column_name in KEYED_HASH_COLUMNS:
        table = _table(table_name)
        column = table.c[column_name]
        (pk,) = table.primary_key.columns
        stmt = (
            update(table)
            .where(pk == bindparam("_pk"))
            .values({column_name: bindparam("_value")})
            .execution_options(synchronize_session=False)
        )
        count, last = 0, None
        while True:  # keyset paging: memory does not grow with the number of rows
            page = select(pk, column).where(column.is_not(None)).order_by(pk).limit(REKEY_BATCH)
            if last is not None:
                page = page.where(pk > last)
            rows = session.execute(page).all()
            if not rows:
                break
            batch = [{"_pk": key, "_value": transform(value)} for key, value in rows]
            session.connection().execute(stmt, batch)
            count += len(batch)
            last = rows[-1][0]
        done[f"{table_name}.{column_name}"] = count
    return done

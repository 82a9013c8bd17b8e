"""Reads and writes about patients and accession numbers (keyed hashes only).

The keyed hashes themselves are computed in :mod:`kerma.ingest.pseudonym`; this
module stores and finds them. None of these functions commits.

May import ``kerma.db``, ``kerma.records`` and ``kerma.errors`` only.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from kerma.db.models import DoseReport, Patient, Study
from kerma.db.summary import get_setting, set_setting

#: ``registry_setting`` key that says how accession numbers are stored: ``hashed``
#: (keyed hash only) or ``clear`` (clear number and keyed hash).
ACCESSION_STORAGE_KEY = "accession_storage"

#: Studies handled per flush by :func:`protect_accession_numbers`.
BATCH_SIZE = 500


def get_patient_id(session: Session, *, pseudonym: str) -> int | None:
    """Return the ``patient.id`` of a pseudonym, ``None`` when no study has it."""
    return session.scalar(select(Patient.id).where(Patient.pseudonym == pseudonym))


def accession_storage(session: Session) -> str | None:
    """Return how the registry's accession numbers are stored (``hashed``/``clear``/None)."""
    return get_setting(session, key=ACCESSION_STORAGE_KEY)


def has_clear_accession_numbers(session: Session) -> bool:
    """Return whether any study holds a clear accession number."""
    stmt = select(Study.id).where(Study.accession_number.is_not(None)).limit(1)
    return session.scalar(stmt) is not None


def set_accession_storage(session: Session, *, keep_clear: bool) -> None:
    """Record how accession numbers are stored (:data:`ACCESSION_STORAGE_KEY`)."""
    set_setting(session, key=ACCESSION_STORAGE_KEY, value="clear" if keep_clear else "hashed")


def protect_accession_numbers(
    session: Session, *, hasher: Callable[[str], str | None], keep_clear: bool
) -> int:
    """Hash the clear accession numbers stored; clear them unless ``keep_clear``.

    Every study with a clear ``accession_number`` gets ``accession_pseudonym =
    hasher(number)``; without ``keep_clear`` the clear number is removed from the study
    and from its reports' ``content`` (``study.accession_number``). Records the storage
    mode in ``registry_setting`` (:data:`ACCESSION_STORAGE_KEY`).

    Parameters
    ----------
    hasher : callable
        :meth:`kerma.ingest.pseudonym.Pseudonymizer.accession_pseudonym`.
    keep_clear : bool
        ``KERMA_ACCESSION_IN_CLEAR``.

    Returns
    -------
    int
        Number of studies changed.
    """
    changed = 0
    last = 0
    while True:
        rows = session.execute(
            select(Study.id, Study.accession_number)
            .where(Study.accession_number.is_not(None), Study.id > last)
            .order_by(Study.id)
            .limit(BATCH_SIZE)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        for row in rows:
            values: dict[str, object] = {"accession_pseudonym": hasher(row.accession_number)}
            if not keep_clear:
                values["accession_number"] = None
            session.execute(update(Study).where(Study.id == row.id).values(**values))
            changed += 1
        if not keep_clear:
            ids = [row.id for row in rows]
            for report in session.scalars(select(DoseReport).where(DoseReport.study_id.in_(ids))):
                content = dict(report.content or {})
                study = dict(content.get("study") or {})
                if study.get("accession_number") is not None:
                    study["accession_number"] = None
                    content["study"] = study
                    report.content = content
                    flag_modified(report, "content")
        session.flush()
    set_accession_storage(session, keep_clear=keep_clear)
    return changed

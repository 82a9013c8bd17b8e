"""Following up a patient: find a patient's studies and cumulative dose from a typed ID.

Kerma stores no patient identity: a patient is known by the keyed pseudonym of issuer +
Patient ID, an accession number by its keyed hash (:mod:`kerma.ingest.pseudonym`).
An authorised user who knows a Patient ID or an Accession Number types it; the same
keyed hash is computed with the registry's key and the studies are looked up by it.

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest``, ``kerma.records``,
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from kerma.config import Settings
from kerma.db import patients as store
from kerma.db.filters import StudyFilter
from kerma.db.session import session_scope
from kerma.errors import NotFoundError
from kerma.ingest.pseudonym import Pseudonymizer
from kerma.records import display_pseudonym

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def make_pseudonymizer(settings: Settings, session_factory: sessionmaker[Session]) -> Pseudonymizer:
    """Return the :class:`Pseudonymizer` of the registry's key, checked against the registry.

    The key is the one import uses (:func:`kerma.services.keys.open_key`: the key file
    ``KERMA_KEY_FILE`` or ``KERMA_PSEUDONYM_KEY``, its fingerprint checked), so a typed
    Patient ID gives the pseudonym that import stored.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the key is missing, too short or not the registry's key.
    """
    from kerma.services.keys import open_key

    return Pseudonymizer(open_key(settings, session_factory), settings.non_patient_patterns)


def protect_accession_numbers(session_factory: sessionmaker[Session], settings: Settings) -> int:
    """Store the registry's accession numbers as ``KERMA_ACCESSION_IN_CLEAR`` says, once.

    A registry made before accession numbers were hashed (or whose setting changed)
    gets the keyed hash of every clear number, and loses the clear numbers unless the
    setting keeps them. Cheap when nothing is to do (one ``registry_setting`` read).

    Returns
    -------
    int
        Number of studies changed (0 when up to date).
    """
    wanted = "clear" if settings.accession_in_clear else "hashed"
    with session_scope(session_factory) as session:
        if store.accession_storage(session) == wanted:
            return 0
        if not store.has_clear_accession_numbers(session):
            store.set_accession_storage(session, keep_clear=settings.accession_in_clear)
            return 0
    pseudonymizer = make_pseudonymizer(settings, session_factory)
    with session_scope(session_factory) as session:
        changed = store.protect_accession_numbers(
            session,
            hasher=pseudonymizer.accession_pseudonym,
            keep_clear=settings.accession_in_clear,
        )
    if changed:
        logger.warning("stored the keyed hash of %d studies' accession numbers", changed)
    return changed


@dataclass(frozen=True)
class PatientRecord:
    """One patient's studies and cumulative dose, found from a typed ID.

    Attributes
    ----------
    patient_pseudonyms : tuple of str
        The pseudonyms (64 hex characters) of the patient(s) found; one for a Patient
        ID, the patient(s) of the studies for an accession number.
    studies : pandas.DataFrame
        The studies (:data:`kerma.db.studies.STUDY_COLUMNS`, oldest first), QA studies
        included, with ``patient`` (:func:`kerma.records.display_pseudonym`).
    cumulative : pandas.DataFrame
        :data:`kerma.analysis.cumulative.CUMULATIVE_COLUMNS` per patient over the
        window ending at the patient's latest study, with ``patient``.
    window_days : int
        The cumulative window in days.
    """

    patient_pseudonyms: tuple[str, ...]
    studies: pd.DataFrame = field(repr=False)
    cumulative: pd.DataFrame = field(repr=False)
    window_days: int = 365

    @property
    def display_names(self) -> tuple[str, ...]:
        """The display forms of :attr:`patient_pseudonyms` (``P-…``)."""
        return tuple(display_pseudonym(p) or "" for p in self.patient_pseudonyms)


def find_patient(
    session: Session,
    *,
    pseudonymizer: Pseudonymizer,
    patient_id: str | None = None,
    issuer: str | None = None,
    accession_number: str | None = None,
    window_days: int = 365,
) -> PatientRecord:
    """Return the studies and cumulative dose of a typed Patient ID or Accession Number.

    Parameters
    ----------
    pseudonymizer : Pseudonymizer
        The registry's key (:func:`make_pseudonymizer`).
    patient_id : str, optional
        (0010,0020) Patient ID as the images carry it.
    issuer : str, optional
        (0010,0021) Issuer of Patient ID, when the images carry one (it is part of the
        pseudonym).
    accession_number : str, optional
        (0008,0050) Accession Number; with ``patient_id`` both must match.
    window_days : int, optional
        Cumulative dose window in days (``Settings.cumulative_window_days``).

    Returns
    -------
    PatientRecord

    Raises
    ------
    ValueError
        When neither a Patient ID nor an Accession Number is given.
    kerma.errors.NotFoundError
        When no study matches (the message says what to check).
    """
    from kerma.services.analytics import cumulative_dose
    from kerma.services.studies import studies_frame

    patient = pseudonymizer.patient_pseudonym(patient_id, issuer)
    accession = pseudonymizer.accession_pseudonym(accession_number)
    if patient is None and accession is None:
        raise ValueError("Unable to find a patient: give a Patient ID or an Accession Number.")
    flt = StudyFilter(
        patient_pseudonyms=(patient,) if patient else (),
        accession_pseudonyms=(accession,) if accession else (),
        include_non_patient=True,
    )
    studies = studies_frame(session, flt=flt)
    if studies.empty:
        raise NotFoundError(_not_found_message(patient_id, issuer, accession_number))
    pseudonyms = tuple(sorted({str(p) for p in studies["patient_pseudonym"].dropna()}))
    studies.insert(
        studies.columns.get_loc("patient_pseudonym") + 1,
        "patient",
        studies["patient_pseudonym"].map(display_pseudonym),
    )
    cumulative = cumulative_dose(
        session,
        flt=StudyFilter(patient_pseudonyms=pseudonyms, include_non_patient=True),
        window_days=window_days,
    )
    cumulative.insert(1, "patient", cumulative["patient_pseudonym"].map(display_pseudonym))
    return PatientRecord(pseudonyms, studies, cumulative, window_days)


def _not_found_message(
    patient_id: str | None, issuer: str | None, accession_number: str | None
) -> str:
    """Return why no study matched and what to check (no identifier repeated)."""
    what = []
    if patient_id:
        what.append("this Patient ID" + (" and issuer" if issuer else ""))
    if accession_number:
        what.append("this Accession Number")
    hints = [
        "the ID is compared exactly as the images carry it (case, leading zeros)",
        "the pseudonym key must be the one the studies were imported with "
        "(KERMA_PSEUDONYM_KEY or KERMA_KEY_FILE, default kerma-key/kerma.key; `kerma key status`)",
    ]
    if patient_id and not issuer:
        hints.insert(1, "if the images carry an Issuer of Patient ID, give it with --issuer")
    return f"No study in the registry has {' and '.join(what)}. Check: " + "; ".join(hints) + "."

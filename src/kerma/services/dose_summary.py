"""A study's dose summary for the HL7 FHIR Radiation Dose Summary export (issue #14).

What :mod:`kerma.export.fhir` needs of one study, read in a few narrow queries: the
study's listing row (totals in canonical units), its device, its dose objects (SOP
Instance UIDs, how they arrived: the calling AE title of a C-STORE) and the start of its
first irradiation event.

May import ``kerma.db``, ``kerma.records`` and ``kerma.errors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from kerma.db import dose_objects
from kerma.db import studies as store
from kerma.errors import NotFoundError

__all__ = ["StudyDoseSummary", "calling_ae_title", "dose_summaries"]

#: The origin the Storage SCP records for an object it received (kerma.net.handlers).
_CSTORE_ORIGIN = re.compile(r"^C-(?:STORE|GET|MOVE) from (?P<ae>.+?) at ")


@dataclass(frozen=True)
class StudyDoseSummary:
    """One study (one device) and what its FHIR Radiation Dose Summary reports.

    Attributes
    ----------
    study : dict
        :data:`kerma.services.studies.STUDY_COLUMNS` values (canonical units:
        ``ct_dlp_total_mgycm``, ``dap_total_gym2``, ``dose_rp_total_gy``, ...).
    device : dict
        :data:`kerma.db.dose_objects.DEVICE_COLUMNS` values.
    reports : list of dict
        The study's current dose objects (:data:`kerma.db.dose_objects.REPORT_COLUMNS`).
    first_event_start : str or None
        The earliest 'DateTime Started' of its events, as stored (ISO 8601).
    ae_title : str or None
        The calling AE title of the C-STORE that brought its newest object, when Kerma
        received it over the network (``None`` for file imports).
    events : list of dict
        The current events (:data:`kerma.services.studies.EVENT_COLUMNS`) of a nuclear
        medicine study (the administration); empty for the others.
    """

    study: dict[str, Any]
    device: dict[str, Any]
    reports: list[dict[str, Any]]
    first_event_start: str | None
    ae_title: str | None
    events: list[dict[str, Any]]


def calling_ae_title(source: str | None) -> str | None:
    """Return the calling AE title recorded in a dose object's ``source``, or ``None``."""
    match = _CSTORE_ORIGIN.match(source or "")
    if match is None or match.group("ae") == "?":
        return None
    return match.group("ae").strip() or None


def dose_summaries(session: Session, *, study_instance_uid: str) -> list[StudyDoseSummary]:
    """Return the dose summary of each study (one per device) with this Study Instance UID.

    Raises
    ------
    kerma.errors.NotFoundError
        When the registry holds no study with that UID.
    """
    ids = dose_objects.study_ids_by_uid(session, study_instance_uids=[study_instance_uid])
    if not ids:
        raise NotFoundError(f"No study with Study Instance UID {study_instance_uid}.")
    out = []
    reports = dose_objects.study_dose_reports(session, study_ids=ids, current_only=True)
    for study_id in ids:
        row = store.get_study(session, study_id=study_id)
        if row is None:  # deleted between the two reads
            continue
        study = dict(zip(store.STUDY_COLUMNS, row, strict=True))
        own = [r for r in reports if r["study_id"] == study_id]
        ae = next((a for a in (calling_ae_title(r["source"]) for r in reversed(own)) if a), None)
        out.append(
            StudyDoseSummary(
                study=study,
                device=dose_objects.device_of_study(session, study_id=study_id) or {},
                reports=own,
                first_event_start=dose_objects.first_event_start(session, study_id=study_id),
                ae_title=ae,
                events=[
                    dict(zip(store.EVENT_COLUMNS, r, strict=True))
                    for r in store.study_event_rows(session, study_id=study_id)
                ]
                if study.get("modality_family") == "NM"
                else [],
            )
        )
    return out

"""Build small registries row by row for the service tests (synthetic, no PHI).

:func:`add_study` writes a device, patient, study, one dose report and its irradiation
events through the ORM models (the real tables), then derives the study summary with
:func:`kerma.services.derive.refresh_studies`, as the ingest pipeline does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kerma.db.models import Device, DoseReport, IrradiationEvent, Patient, Study
from kerma.db.partitions import study_month
from kerma.services.derive import refresh_studies

_counter = itertools.count(1)


def _uid() -> str:
    """Return a unique synthetic UID."""
    return f"2.25.{next(_counter)}{dt.datetime.now().timestamp():.0f}"


def device(session: Session, name: str, *, station: str | None = None, model: str = "M") -> Device:
    """Return the device of display ``name`` (created when new)."""
    found = session.scalars(select(Device).where(Device.device_name == name)).first()
    if found is not None:
        return found
    row = Device(
        device_key=hashlib.sha256(name.encode()).hexdigest(),
        manufacturer="ACME",
        manufacturer_model_name=model,
        station_name=station,
        device_name=name,
    )
    session.add(row)
    session.flush()
    return row


def patient(session: Session, pseudonym: str) -> Patient:
    """Return the patient of a pseudonym (created when new)."""
    key = hashlib.sha256(pseudonym.encode()).hexdigest()
    found = session.scalars(select(Patient).where(Patient.pseudonym == key)).first()
    if found is not None:
        return found
    row = Patient(pseudonym=key)
    session.add(row)
    session.flush()
    return row


def add_study(
    session: Session,
    *,
    device_name: str,
    modality: str,
    study_date: str,
    events: Sequence[Mapping[str, Any]],
    description: str | None = None,
    age: float | None = 50.0,
    sex: str | None = "F",
    weight: float | None = 70.0,
    patient_name: str = "P1",
    non_patient: bool = False,
    kind: str | None = None,
    accumulated: Mapping[str, Any] | None = None,
    ct_dlp_total_mgycm: float | None = None,
    station: str | None = None,
    model: str = "M",
) -> int:
    """Add one study with one dose report holding ``events``; derive it; return its id."""
    dev = device(session, device_name, station=station, model=model)
    pat = patient(session, patient_name)
    study = Study(
        study_instance_uid=_uid(),
        device_id=dev.id,
        patient_id=pat.id,
        study_date=dt.date.fromisoformat(study_date),
        study_time="10:00:00",
        study_description=description,
        modality=modality,
        modalities=",".join(sorted({e.get("modality", modality) for e in events} or {modality})),
        patient_age_years=age,
        patient_sex=sex,
        patient_weight_kg=weight,
        is_non_patient=non_patient,
    )
    session.add(study)
    session.flush()
    report_kind = kind or ("rdsr-ct" if modality == "CT" else "rdsr-projection")
    report = DoseReport(
        sop_instance_uid=_uid(),
        kind=report_kind,
        study_id=study.id,
        archive_sha256=hashlib.sha256(_uid().encode()).hexdigest(),
        archive_path="none",
        received_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        extractor_version="test",
        warnings=[],
        content={"accumulated": dict(accumulated or {})},
        number_of_events=len(events),
        ct_dlp_total_mgycm=ct_dlp_total_mgycm,
    )
    session.add(report)
    session.flush()
    for index, event in enumerate(events):
        values = {"modality": modality, **event}
        session.add(
            IrradiationEvent(
                dose_report_id=report.id,
                study_id=study.id,
                study_month=study_month(study.study_date),
                event_index=index,
                event_key=_uid(),
                is_current=True,
                **values,
            )
        )
    session.flush()
    refresh_studies(session, [study.id])
    return study.id

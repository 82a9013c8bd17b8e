"""Build studies for the alert tests through the store (synthetic, no PHI).

:func:`make_study` adds a study with :func:`tests.services.builders.add_study` (real
tables, summary derived as at ingest) and then pins the columns the rules read (the
study's standard exam, modality family and summary values, the events' exams, a
skin dose estimate), so every case sits exactly at, just below or just above its
threshold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from kerma.db.models import IrradiationEvent, SkinDoseEstimate, Study
from tests.services.builders import add_study

#: Modality family -> modality written on the study.
MODALITY_OF = {"CT": "CT", "RF/XA": "XA", "DX": "DX", "MG": "MG", "NM": "NM"}


def make_study(
    session: Session,
    *,
    family: str,
    device: str,
    patient: str,
    date: str,
    exam: str | None,
    age: float | None = 50.0,
    events: Sequence[Mapping[str, Any]] = (),
    values: Mapping[str, Any] | None = None,
    event_exam: str | None = None,
    peak_skin_dose_mgy: float | None = None,
    time: str = "10:00:00",
) -> int:
    """Add one study and pin its rule inputs; return its id."""
    modality = MODALITY_OF[family]
    study_id = add_study(
        session,
        device_name=device,
        modality=modality,
        study_date=date,
        events=list(events) or [{"acquisition_protocol": "test"}],
        age=age,
        patient_name=patient,
        kind="rdsr-ct" if family == "CT" else "rdsr-projection",
    )
    pinned: dict[str, Any] = {
        "standard_exam": exam,
        "modality_family": family,
        "study_time": time,
        **dict(values or {}),
    }
    session.execute(update(Study).where(Study.id == study_id).values(**pinned))
    if event_exam is not None:
        session.execute(
            update(IrradiationEvent)
            .where(IrradiationEvent.study_id == study_id)
            .values(standard_exam=event_exam)
        )
    if peak_skin_dose_mgy is not None:
        session.add(
            SkinDoseEstimate(
                study_id=study_id,
                method="pyskindose",
                peak_skin_dose_mgy=peak_skin_dose_mgy,
                computed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            )
        )
    session.flush()
    return study_id

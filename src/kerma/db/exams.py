"""Keyword-only reads and writes of the stored standard-exam mapping; none commits.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from kerma.db.models import EventGroup, IrradiationEvent, Study

#: Study fields the exam rules read, then the joined event texts (study columns).
STUDY_RULE_COLUMNS: tuple[str, ...] = (
    "modality",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "requested_procedure_code",
    "acquisition_protocols",
    "target_regions",
    "anatomical_structures",
    "image_views",
    "lateralities",
)

#: Event fields the event-level exam rules read.
EVENT_RULE_COLUMNS: tuple[str, ...] = (
    "modality",
    "acquisition_protocol",
    "target_region",
    "anatomical_structure",
    "image_view",
    "laterality",
)


def study_rule_rows(session: Session, *, study_ids: Sequence[int]) -> list[Row[Any]]:
    """Return ``id``, :data:`STUDY_RULE_COLUMNS`, ``standard_exam``, ``standard_exam_rule``
    and ``modality_family`` of some studies."""
    s = Study
    stmt = select(
        s.id,
        *(getattr(s, c) for c in STUDY_RULE_COLUMNS),
        s.standard_exam,
        s.standard_exam_rule,
        s.modality_family,
    ).where(s.id.in_(list(study_ids)))
    return list(session.execute(stmt).all())


def event_rule_rows(
    session: Session, *, study_ids: Sequence[int], modalities: Sequence[str]
) -> list[Row[Any]]:
    """Return ``id``, ``study_id``, :data:`EVENT_RULE_COLUMNS` and ``standard_exam`` of the
    current events of these studies whose group has one of ``modalities``."""
    e = IrradiationEvent
    groups = select(EventGroup.id).where(
        func.upper(EventGroup.modality).in_([m.upper() for m in modalities])
    )
    stmt = select(
        e.id,
        e.study_id,
        *(getattr(e, c) for c in EVENT_RULE_COLUMNS),
        e.standard_exam,
    ).where(e.study_id.in_(list(study_ids)), e.event_group_id.in_(groups))
    return list(session.execute(stmt).all())


def set_rules_fingerprint(session: Session, *, study_ids: Sequence[int], fingerprint: str) -> None:
    """Record that these studies are mapped with the rules of ``fingerprint``."""
    session.execute(
        update(Study)
        .where(Study.id.in_(list(study_ids)))
        .values(exam_rules_fingerprint=fingerprint)
        .execution_options(synchronize_session=False)
    )


def exam_count_rows(session: Session, *, include_non_patient: bool = True) -> list[Row[Any]]:
    """Return (standard exam, number of studies) of the mapped studies."""
    s = Study
    stmt = (
        select(s.standard_exam, func.count(s.id))
        .where(s.standard_exam.is_not(None))
        .group_by(s.standard_exam)
    )
    if not include_non_patient:
        stmt = stmt.where(s.is_non_patient.is_(False))
    return list(session.execute(stmt).all())


def unmapped_rows(session: Session, *, include_non_patient: bool = True) -> list[Row[Any]]:
    """Return (modality, study description, number of studies) of the unmapped studies."""
    s = Study
    modality = func.coalesce(s.modality, "")
    description = func.coalesce(s.study_description, "")
    stmt = (
        select(modality, description, func.count(s.id))
        .where(s.standard_exam.is_(None))
        .group_by(modality, description)
    )
    if not include_non_patient:
        stmt = stmt.where(s.is_non_patient.is_(False))
    return list(session.execute(stmt).all())


def iter_study_exams(session: Session, *, batch_size: int = 5000) -> Iterator[Row[Any]]:
    """Yield ``study_id``, ``standard_exam``, ``standard_exam_rule`` of every study, by id."""
    stmt = (
        select(Study.id.label("study_id"), Study.standard_exam, Study.standard_exam_rule)
        .order_by(Study.id)
        .execution_options(yield_per=batch_size)
    )
    yield from session.execute(stmt)

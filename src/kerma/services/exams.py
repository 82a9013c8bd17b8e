"""The standard-exam workflow: keep the stored mapping current, report it, apply it.

Each study stores its standard exam, the rule that gave it and the fingerprint of the
rules used (``study.exam_rules_fingerprint``); DX and MG events store their own
per-projection / per-view exam. New objects are mapped at ingest. When the rules in
force (``KERMA_EXAM_RULES_PATH`` or the packaged defaults) have another fingerprint
than a study's, :func:`ensure_exams_current` maps those studies again: the rules run
once per distinct tuple of the fields they read (modality, descriptions, the joined
event texts), the studies are written in batches, and the CT values that depend on the
exam (SSDE phantom, effective dose) are derived again for the studies whose exam
changed.

Functions that run many transactions take a session factory; the others a session.

May import ``kerma.db``, ``kerma.analysis``, ``kerma.records`` and ``kerma.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker

from kerma.analysis.exams import EVENT_TEXT_FIELDS, ExamRuleSet
from kerma.analysis.summary import (
    EVENT_EXAM_FAMILIES,
    STUDY_RULE_FIELDS,
    UNMAPPED,
    SummaryContext,
)
from kerma.db import exams as exam_store
from kerma.db import summary as store
from kerma.db.analytics import EVENT_SAMPLE_MODALITIES
from kerma.db.session import session_scope
from kerma.services.derive import refresh_all, refresh_studies

logger = logging.getLogger(__name__)

#: Studies re-mapped per transaction.
REMAP_BATCH = 2000


@dataclass
class RemapResult:
    """What :func:`ensure_exams_current` did.

    Attributes
    ----------
    fingerprint : str
        Fingerprint of the rules in force.
    studies_remapped : int
        Studies mapped again (their stored mapping was made with other rules).
    studies_changed : int
        Of those, studies whose standard exam or rule changed.
    events_changed : int
        DX/MG events whose per-projection exam changed.
    distinct_tuples : int
        Distinct study field tuples the rules were evaluated on.
    """

    fingerprint: str
    studies_remapped: int = 0
    studies_changed: int = 0
    events_changed: int = 0
    distinct_tuples: int = 0


def has_stale_mapping(session: Session, *, rules: ExamRuleSet) -> bool:
    """Return whether any study was mapped with other rules than ``rules``."""
    return store.has_stale_studies(session, fingerprint=rules.fingerprint)


def ensure_exams_current(
    session_factory: sessionmaker[Session],
    *,
    context: SummaryContext,
    force: bool = False,
    batch_size: int = REMAP_BATCH,
) -> RemapResult:
    """Map again every study whose stored mapping was made with other exam rules.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions; one transaction per batch.
    context : SummaryContext
        The rules in force (and the derive context for CT values).
    force : bool, optional
        Map every study again, whatever its fingerprint (``kerma exams --apply``).
    batch_size : int, optional
        Studies per transaction.

    Returns
    -------
    RemapResult
        Counts; nothing is written when every study is current.
    """
    fingerprint = context.fingerprint
    result = RemapResult(fingerprint=fingerprint)
    seen_tuples: set[tuple[Any, ...]] = set()
    last = 0
    while True:
        with session_scope(session_factory) as session:
            if force:
                ids = store.study_id_page(session, after_id=last, limit=batch_size)
            else:
                ids = store.stale_study_ids(
                    session, fingerprint=fingerprint, after_id=last, limit=batch_size
                )
            if not ids:
                break
            changed_ct = _remap_batch(session, ids, context, result, seen_tuples)
            if changed_ct:
                refresh_studies(session, changed_ct, context=context)
        last = ids[-1]
        result.studies_remapped += len(ids)
    result.distinct_tuples = len(seen_tuples)
    if result.studies_remapped:
        logger.info(
            "re-mapped %d studies with exam rules %s (%d changed)",
            result.studies_remapped,
            fingerprint,
            result.studies_changed,
        )
    return result


def _remap_batch(
    session: Session,
    ids: list[int],
    context: SummaryContext,
    result: RemapResult,
    seen: set[tuple[Any, ...]],
) -> list[int]:
    """Map one batch of studies and their DX/MG events; return the CT studies changed."""
    study_rows = []
    new_exam: dict[int, str | None] = {}
    descriptions: dict[int, dict[str, Any]] = {}
    changed_ct = []
    names = (*STUDY_RULE_FIELDS, *EVENT_TEXT_FIELDS)
    for row in exam_store.study_rule_rows(session, study_ids=ids):
        fields = tuple(row[1 : 1 + len(names)])
        record = dict(zip(names, fields, strict=True))
        descriptions[row.id] = record
        seen.add(fields)
        exam, rule = context.exam(record, "study")
        new_exam[row.id] = exam
        if (exam, rule) != (row.standard_exam, row.standard_exam_rule):
            study_rows.append({"id": row.id, "standard_exam": exam, "standard_exam_rule": rule})
            result.studies_changed += 1
            if row.modality_family == "CT":
                changed_ct.append(row.id)
    store.write_summaries(session, rows=study_rows)
    exam_store.set_rules_fingerprint(session, study_ids=ids, fingerprint=context.fingerprint)
    modalities = [m for f in sorted(EVENT_EXAM_FAMILIES) for m in EVENT_SAMPLE_MODALITIES[f]]
    event_rows = []
    for event in exam_store.event_rule_rows(session, study_ids=ids, modalities=modalities):
        study = descriptions[event.study_id]
        record = {name: study.get(name) for name in STUDY_RULE_FIELDS[1:]}
        record |= {f: getattr(event, f) for f in EVENT_TEXT_FIELDS}
        record["modality"] = event.modality
        record["study_modality"] = study.get("modality")
        exam, _ = context.exam(record, "event")
        exam = exam if exam is not None else new_exam.get(event.study_id)
        exam = exam if exam is not None else UNMAPPED
        if exam != event.standard_exam:
            event_rows.append({"id": event.id, "standard_exam": exam})
    store.write_event_values(session, rows=event_rows)
    result.events_changed += len(event_rows)
    return changed_ct


def apply_exams(
    session_factory: sessionmaker[Session],
    *,
    context: SummaryContext,
    progress: Callable[[int, int], None] | None = None,
    derive: bool = True,
) -> RemapResult:
    """Map every study again with ``context``'s rules and refresh every derived value.

    ``kerma exams --apply``: the mapping is written whatever the stored fingerprints,
    then every study's summary is derived again in batches. ``derive=False`` leaves
    the second step to the job queue (``kerma exams --apply --queue``,
    :func:`kerma.services.jobs.enqueue_derive`).
    """
    result = ensure_exams_current(session_factory, context=context, force=True)
    if derive:
        refresh_all(session_factory, context=context, progress=progress)
    return result


def exam_counts(session: Session, *, include_non_patient: bool = True) -> pd.DataFrame:
    """Return the stored mapping's exam → number of studies (descending, then by name)."""
    frame = pd.DataFrame.from_records(
        exam_store.exam_count_rows(session, include_non_patient=include_non_patient),
        columns=["standard_exam", "n_studies"],
    )
    return frame.sort_values(
        ["n_studies", "standard_exam"], ascending=[False, True], ignore_index=True
    )


def unmapped_descriptions(session: Session, *, include_non_patient: bool = True) -> pd.DataFrame:
    """Return (modality, study description) of unmapped studies with counts, descending."""
    frame = pd.DataFrame.from_records(
        exam_store.unmapped_rows(session, include_non_patient=include_non_patient),
        columns=["modality", "study_description", "n_studies"],
    )
    return frame.sort_values(
        ["n_studies", "modality", "study_description"],
        ascending=[False, True, True],
        ignore_index=True,
    )


def iter_study_exams(session: Session, *, batch_size: int = 5000) -> Iterator[Row[Any]]:
    """Yield ``study_id``, ``standard_exam``, ``standard_exam_rule`` of every study, by id."""
    yield from exam_store.iter_study_exams(session, batch_size=batch_size)


def study_exams_frame(session: Session) -> pd.DataFrame:
    """Return the standard exam of every study, by id (``kerma exams --out``).

    Returns
    -------
    pandas.DataFrame
        One row per study: ``study_id`` (int), ``standard_exam`` and
        ``standard_exam_rule`` (str, ``None`` when unmapped).
    """
    return pd.DataFrame.from_records(
        list(iter_study_exams(session)),
        columns=["study_id", "standard_exam", "standard_exam_rule"],
    )

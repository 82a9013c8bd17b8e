"""Export use cases (issue #14): the rows and tables the writers of :mod:`kerma.export` need.

Everything here streams or aggregates in the database (:mod:`kerma.db.exports`):

- :func:`iter_study_batches`: the selected studies with their current events, a batch
  of studies at a time (keyed by study id: never a whole table in memory);
- :func:`count_summary`: studies and events per modality family, exam, protocol and
  device (one GROUP BY);
- :func:`survey_statistics`: n, median and mean per standard exam and room of each
  DRL quantity, and the patients' median weight, from the DRL sample frame (narrow
  columns, :func:`kerma.services.analytics.dose_samples`) through
  :func:`kerma.analysis.stats.dose_statistics` — the numbers ``kerma stats`` gives;
- the month fingerprints and month reads of the incremental Parquet export.

Values are in canonical units (``dap_total_gym2`` in Gy·m²); writers convert for display.

May import ``kerma.db``, ``kerma.analysis`` and the plain layers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
from sqlalchemy.orm import Session

from kerma.analysis.stats import dose_statistics
from kerma.db import exports as store
from kerma.db.filters import StudyFilter
from kerma.db.studies import EVENT_COLUMNS
from kerma.services.analytics import dose_samples

#: Columns of the study rows (:func:`iter_study_batches`, Parquet).
STUDY_EXPORT_COLUMNS: Final[tuple[str, ...]] = store.EXPORT_STUDY_COLUMNS
#: Columns of the event rows.
EVENT_EXPORT_COLUMNS: Final[tuple[str, ...]] = EVENT_COLUMNS
#: Partition name of the studies without a study date.
UNKNOWN_MONTH: Final = store.UNKNOWN_MONTH

#: Studies per batch of :func:`iter_study_batches` (their events are read per batch).
STUDY_BATCH_SIZE: Final = 500


@dataclass(frozen=True)
class StudyWithEvents:
    """One exported study: its row and its current events (dicts, canonical units)."""

    study: dict[str, Any]
    events: list[dict[str, Any]]


def count_studies(session: Session, *, flt: StudyFilter | None = None) -> int:
    """Return how many studies ``flt`` selects (for a progress bar)."""
    from kerma.db.studies import count_studies as count

    return count(session, flt=flt)


def max_events_per_family(session: Session, *, flt: StudyFilter | None = None) -> dict[str, int]:
    """Return the most events of one selected study per modality family (``""``: none)."""
    return store.max_events_per_family(session, flt=flt)


def iter_study_batches(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    batch_size: int = STUDY_BATCH_SIZE,
    month: str | None = None,
) -> Iterator[list[StudyWithEvents]]:
    """Yield the selected studies with their events, ``batch_size`` studies at a time.

    Studies stream from the database (``yield_per``); the events of each batch are read
    with one query on the batch's study ids. Memory is bounded by one batch.

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies (default: every patient study). Ignored when ``month`` is given.
    batch_size : int, optional
        Studies per batch.
    month : str, optional
        ``YYYY-MM`` (or :data:`UNKNOWN_MONTH`): every study of that month, QA included.

    Yields
    ------
    list of StudyWithEvents
        Oldest first (study date, time, id); events in report and event order.
    """
    if month is not None:
        rows = store.iter_month_studies(session, month=month, batch_size=batch_size)
    else:
        rows = store.iter_export_studies(session, flt=flt, batch_size=batch_size)
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(row._mapping))
        if len(batch) >= batch_size:
            yield _with_events(session, batch)
            batch = []
    if batch:
        yield _with_events(session, batch)


def _with_events(session: Session, studies: list[dict[str, Any]]) -> list[StudyWithEvents]:
    """Return the studies of one batch with their current events attached."""
    events: dict[int, list[dict[str, Any]]] = {int(s["study_id"]): [] for s in studies}
    ids = list(events)
    for row in store.iter_events_of(session, study_ids=ids):
        values = dict(zip(EVENT_COLUMNS, row, strict=True))
        events[int(values["study_id"])].append(values)
    return [StudyWithEvents(study=s, events=events[int(s["study_id"])]) for s in studies]


#: Columns of :func:`count_summary` rows.
SUMMARY_COLUMNS: Final[tuple[str, ...]] = (
    "modality_family",
    "standard_exam",
    "acquisition_protocol",
    "device_name",
    "number_of_studies",
    "number_of_events",
)


def count_summary(session: Session, *, flt: StudyFilter | None = None) -> list[dict[str, Any]]:
    """Return studies and events per modality family, exam, protocol and device.

    One GROUP BY in the database (:func:`kerma.db.exports.count_by_exam_protocol_device`):
    a study with two protocols counts once under each.
    """
    return [
        dict(zip(SUMMARY_COLUMNS, row, strict=True))
        for row in store.count_by_exam_protocol_device(session, flt=flt)
    ]


#: DRL quantities of the survey statistics per modality family (canonical units):
#: CT per study (DLP total, mean CTDIvol over the study's acquisitions), DX per
#: projection (KAP), MG per view (AGD), RF/XA per study (KAP, Ka,r, fluoroscopy time)
#: — the quantities of the DRL tables in ``kerma/reference`` (drl_*.md).
SURVEY_QUANTITIES: Final[dict[str, tuple[str, ...]]] = {
    "CT": ("ctdivol_mean_mgy", "ct_dlp_total_mgycm"),
    "DX": ("dap_gym2",),
    "MG": ("agd_mgy",),
    "RF/XA": ("dap_total_gym2", "dose_rp_total_gy", "fluoro_time_total_s"),
}

#: Grouping of the survey statistics: one row per standard exam and room.
SURVEY_GROUPS: Final[tuple[str, ...]] = (
    "modality_family",
    "standard_exam",
    "device_name",
    "station_name",
)


def survey_statistics(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    families: Sequence[str] = ("CT", "DX", "MG", "RF/XA"),
) -> pd.DataFrame:
    """Return n, median and mean of each DRL quantity per standard exam and room.

    The samples are those of the DRL comparison and ``kerma stats`` (patient studies,
    mapped to a standard exam; DX/MG per projection/view), described by
    :func:`kerma.analysis.stats.dose_statistics` (linear-interpolation median). The
    patients' weight is described as the quantity ``patient_weight_kg`` (n = samples
    with a known weight).

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies (default: every patient study).
    families : sequence of str, optional
        Modality families (keys of :data:`SURVEY_QUANTITIES`).

    Returns
    -------
    pandas.DataFrame
        Long format: :data:`SURVEY_GROUPS`, ``quantity``, ``unit`` (canonical), ``n``,
        ``median``, ``mean``, ``min``, ``max``, plus ``first_study_date`` and
        ``last_study_date`` of the group. Empty when nothing matches.

    Raises
    ------
    ValueError
        When a family is not one of :data:`SURVEY_QUANTITIES`.
    """
    unknown = [f for f in families if f not in SURVEY_QUANTITIES]
    if unknown:
        raise ValueError(
            f"Unable to build a survey of {unknown}: use {', '.join(SURVEY_QUANTITIES)}."
        )
    context = ["study_id", "device_id", "patient_age_years", "patient_weight_kg", "study_date"]
    samples = dose_samples(
        session, flt=flt, families=list(families), context=context, mapped_only=True
    )
    columns = [*SURVEY_GROUPS, "quantity", "unit", "n", "median", "mean", "min", "max"]
    if samples.empty:
        return pd.DataFrame(columns=[*columns, "first_study_date", "last_study_date"])
    samples = samples[samples["standard_exam"].notna()]
    parts = []
    for family in families:
        part = samples[samples["modality_family"] == family]
        if part.empty:
            continue
        quantities = [q for q in (*SURVEY_QUANTITIES[family], "patient_weight_kg") if q in part]
        stats = dose_statistics(part, list(SURVEY_GROUPS), quantities)
        parts.append(stats[columns])
        dates = part.groupby(list(SURVEY_GROUPS), dropna=False)["study_date"].agg(["min", "max"])
        dates.columns = ["first_study_date", "last_study_date"]
        parts[-1] = parts[-1].join(dates, on=list(SURVEY_GROUPS))
    if not parts:
        return pd.DataFrame(columns=[*columns, "first_study_date", "last_study_date"])
    return pd.concat(parts, ignore_index=True)


# -- incremental Parquet export ----------------------------------------------------------------


def month_fingerprints(session: Session) -> dict[str, tuple[int, int, str]]:
    """Return each month's change fingerprint (:func:`kerma.db.exports.month_fingerprints`)."""
    return store.month_fingerprints(session)


def latest_update(session: Session) -> dt.datetime | None:
    """Return the latest ``study.updated_at`` of the registry (the high-water mark)."""
    return store.latest_update(session)


def study_column_kinds() -> dict[str, str]:
    """Return the kind (int, float, bool, date, datetime, json, text) of each study column."""
    return store.study_column_kinds()


def event_column_kinds() -> dict[str, str]:
    """Return the kind (int, float, bool, date, datetime, json, text) of each event column."""
    return store.event_column_kinds()

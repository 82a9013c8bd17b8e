"""Analytics over the registry: dose samples, DRL comparison, statistics, summary, cumulative.

Each function takes a session and a :class:`~kerma.db.filters.StudyFilter` and reads
only what it needs: study-level samples (CT, RF/XA) from the study summary columns,
event-level samples (DX projections, MG views) through the event groups' index, the
per-protocol summary from the database's indexes (counts and percentiles computed by
the database), the cumulative dose as a GROUP BY. Computation is
:mod:`kerma.analysis` on the narrow frames; nothing loads a whole table.

Exams: these functions use the stored standard exams; callers that want the mapping
of the rules in force first call :func:`kerma.services.exams.ensure_exams_current`
(the facade and the CLI do).

May import ``kerma.db``, ``kerma.analysis``, ``kerma.records``, ``kerma.units``,
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from kerma.analysis.cumulative import CUMULATIVE_COLUMNS
from kerma.analysis.drl import (
    ADULT_AGE_YEARS,
    STATUS_ABOVE,
    STATUS_BELOW,
    STATUS_INSUFFICIENT,
    STATUS_NEEDS_INDICATION,
    STATUS_NO_DRL,
    STATUS_NO_EDITION,
    RoomCell,
    assemble_comparison,
    assemble_local_drls,
    check_unknown_age,
    compare_by_period,
    compare_with_drls,
    local_drls,
    plan_comparison,
    plan_local_drls,
    summarise_periods,
)
from kerma.analysis.effective_dose import NO_COEFFICIENT_NOTE
from kerma.analysis.frames import CONTEXT_COLUMNS, SAMPLE_QUANTITIES, normalise_view
from kerma.analysis.reference import drl_coverage, list_drl_sets, load_drls, select_drls
from kerma.analysis.stats import (
    PERCENTILES,
    PERIODS,
    STAT_COLUMNS,
    add_period,
    dose_statistics,
    filter_samples,
)
from kerma.config import Settings
from kerma.db import analytics as store
from kerma.db import sample_aggregates as aggregates
from kerma.db.filters import StudyFilter, as_date
from kerma.errors import NotFoundError
from kerma.units import QUANTITIES

#: Modality families of the sample frame.
MODALITY_FAMILIES: Final[tuple[str, ...]] = ("CT", "DX", "MG", "RF/XA")

#: Columns of the study-level samples per family (besides the context).
STUDY_SAMPLE_QUANTITIES: Final[dict[str, tuple[str, ...]]] = {
    "CT": (
        "ct_dlp_total_mgycm",
        "ctdivol_mean_mgy",
        "ctdivol_max_mgy",
        "ssde_mgy",
        "ssde_size_mm",
        "ssde_size_source",
        "kvp_kv",
        "effective_dose_msv",
        "number_of_events",
    ),
    "RF/XA": ("dap_total_gym2", "dose_rp_total_gy", "fluoro_time_total_s", "number_of_events"),
}

#: Event columns of the event-level samples per family.
EVENT_SAMPLE_QUANTITIES: Final[dict[str, tuple[str, ...]]] = {
    "DX": ("dap_gym2", "dose_rp_gy", "entrance_dose_mgy", "image_view"),
    "MG": ("agd_mgy", "compression_thickness_mm", "laterality", "image_view"),
}

#: Context columns a DRL comparison needs (``study_date`` too for periods).
DRL_CONTEXT: Final[tuple[str, ...]] = (
    "study_id",
    "device_id",
    "patient_age_years",
    "patient_weight_kg",
    "study_date",
)

#: Main quantities of :func:`dose_summary` per event modality: CT, MG, NM/PT; every
#: other modality is projection X-ray (:data:`PROJECTION_QUANTITIES`).
SUMMARY_QUANTITIES: Final[dict[str, tuple[str, ...]]] = {
    "CT": ("ctdivol_mgy", "dlp_mgycm"),
    "MG": ("agd_mgy",),
    "NM": ("administered_activity_mbq",),
    "PT": ("administered_activity_mbq",),
}
PROJECTION_QUANTITIES: Final[tuple[str, ...]] = ("dap_gym2", "dose_rp_gy")

#: Columns of :func:`dose_summary`.
SUMMARY_COLUMNS: Final[tuple[str, ...]] = (
    "modality",
    "device_name",
    "acquisition_protocol",
    "quantity",
    "label",
    "unit",
    "number_of_studies",
    "number_of_events",
    "number_of_values",
    "median",
    "p25",
    "p75",
)

#: Percentiles of :func:`dose_summary` (fractions, linear interpolation).
SUMMARY_FRACTIONS: Final[dict[str, float]] = {"median": 0.5, "p25": 0.25, "p75": 0.75}


# -- samples ----------------------------------------------------------------------------------


def _device_columns(session: Session, frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``device_name`` and ``station_name`` from the device table (small) by id."""
    names = store.device_names(session)
    ids = pd.to_numeric(frame["device_id"]).astype("int64")
    frame["device_id"] = ids
    frame["device_name"] = ids.map(pd.Series({i: n for i, (n, _) in names.items()}, dtype=object))
    frame["station_name"] = ids.map(
        pd.Series({i: st for i, (_, st) in names.items()}, dtype=object)
    )
    return frame


def dose_samples(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    families: Sequence[str] = MODALITY_FAMILIES,
    context: Sequence[str] | None = None,
    mapped_only: bool = False,
) -> pd.DataFrame:
    """Return the DRL sample frame of the registry: one row per sample, narrow columns.

    The frame of :func:`kerma.analysis.frames.build_dose_samples` (same column names
    and units), read from the registry: CT and RF/XA studies from the study summary
    columns, DX projections and MG views from their events (with each event's own
    standard exam, per projection / view; read from a covering index) joined with
    their studies' context.

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies (default: every patient study).
    families : sequence of str, optional
        Sample families to read (``CT``, ``DX``, ``MG``, ``RF/XA``).
    context : sequence of str, optional
        Study context columns to carry (default: all of
        :data:`kerma.analysis.frames.CONTEXT_COLUMNS` available). Fewer columns read
        faster; ``study_id``, ``device_id``, ``device_name`` and ``standard_exam`` are
        always there.
    mapped_only : bool, optional
        Leave out DX and MG projections without a standard exam (a DRL comparison
        ignores them).

    Returns
    -------
    pandas.DataFrame
        ``modality_family``, ``sample_level``, the context columns, ``event_id`` (event
        samples) and the families' dose columns in canonical units.
    """
    flt = flt or StudyFilter()
    wanted_context = list(context) if context is not None else list(CONTEXT_COLUMNS)
    study_context = [
        c
        for c in dict.fromkeys(("study_id", "device_id", "standard_exam", *wanted_context))
        if c in store.STUDY_SAMPLE_COLUMNS
    ]
    parts: list[pd.DataFrame] = []
    for family in ("CT", "RF/XA"):  # one row per study, from the summary columns
        if family not in families:
            continue
        columns = list(dict.fromkeys([*study_context, *STUDY_SAMPLE_QUANTITIES[family]]))
        rows = store.study_sample_rows(session, flt=flt, families=[family], columns=columns)
        frame = pd.DataFrame.from_records(rows, columns=columns)
        frame.insert(0, "sample_level", "study")
        frame.insert(0, "modality_family", family)
        parts.append(frame)
    event_families = [f for f in ("DX", "MG") if f in families]
    if event_families:  # one row per projection / view, joined with its study's context
        event_context = [
            c
            for c in dict.fromkeys(("study_id", "device_id", *wanted_context))
            if c in store.EVENT_CONTEXT_COLUMNS
        ]
        by_study = pd.DataFrame.from_records(
            store.study_context_rows(session, flt=flt, columns=event_context[1:]),
            columns=event_context,
        ).set_index("study_id")
        for family in event_families:
            names = ["event_id", "study_id", "standard_exam", *EVENT_SAMPLE_QUANTITIES[family]]
            rows = store.event_sample_rows(session, flt=flt, family=family, columns=names[3:])
            events = pd.DataFrame.from_records(rows, columns=names)
            unmapped = events["standard_exam"] == ""  # no rule maps the projection
            if mapped_only:
                events = events[~unmapped]
            else:
                events["standard_exam"] = events["standard_exam"].where(~unmapped, None)
            frame = events.join(by_study, on="study_id", how="inner")  # the study filter
            frame["view"] = normalise_view(frame.pop("image_view"))
            frame.insert(0, "sample_level", "event")
            frame.insert(0, "modality_family", family)
            parts.append(frame)
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=["modality_family", "sample_level", *wanted_context])
    samples = pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True)
    samples = _device_columns(session, samples)
    if "study_date" in samples.columns:
        samples["study_date"] = pd.to_datetime(samples["study_date"])
    if "is_non_patient" in samples.columns:
        samples["is_non_patient"] = samples["is_non_patient"].astype(bool)
    for name in samples.columns:
        if name in QUANTITIES and not pd.api.types.is_float_dtype(samples[name]):
            samples[name] = pd.to_numeric(samples[name], errors="coerce").astype(float)
    return samples


def check_device_filter(session: Session, flt: StudyFilter) -> None:
    """Raise when the filter's device text names no device (the message lists the rooms).

    Raises
    ------
    kerma.errors.NotFoundError
        When ``flt.device_name`` matches no device name, station or model.
    """
    if not flt.device_name or store.matching_device_ids(session, text=flt.device_name):
        return
    names = sorted({name for name, _ in store.device_names(session).values()})
    raise NotFoundError(
        f"no device name contains {flt.device_name!r}; devices present: "
        f"{', '.join(names) if names else '(none)'}."
    )


def select_exam(
    samples: pd.DataFrame, exam: str | None, *, family: str | None = None
) -> pd.DataFrame:
    """Return the samples of one standard exam (the sample's own: per projection for DX).

    Raises
    ------
    kerma.errors.NotFoundError
        When no sample of the selection is mapped to ``exam``; the message lists the
        exams present.
    """
    if exam is None:
        return samples
    if samples.empty or not samples["standard_exam"].eq(exam).any():
        present = (
            sorted(samples["standard_exam"].dropna().astype(str).unique()) if len(samples) else []
        )
        raise _exam_not_found(exam, present, family)
    return samples[samples["standard_exam"] == exam]


def _exam_not_found(exam: str, present: Sequence[str], family: str | None) -> NotFoundError:
    """Return the error of an exam no sample is mapped to (listing the exams present)."""
    scope = f" of modality {family}" if family else ""
    return NotFoundError(
        f"no study{scope} is mapped to the exam {exam!r}; exams present: "
        f"{', '.join(present) if present else '(none)'} (`kerma exams` shows the mapping "
        "rules)."
    )


# -- DRL comparison ------------------------------------------------------------------------------


@dataclass
class DrlResult:
    """What :func:`compare_drls` returns.

    Attributes
    ----------
    comparison : pandas.DataFrame
        :func:`kerma.analysis.drl.compare_with_drls` columns (canonical units).
    local : pandas.DataFrame or None
        Local DRLs (75th percentile of room medians) when asked for.
    per_period, period_summary : pandas.DataFrame or None
        :func:`kerma.analysis.drl.compare_by_period` when asked for.
    drl_set : str
        The DRL set compared with.
    n_samples : int
        Samples compared.
    empty_reason : str or None
        Why ``comparison`` has no row (no study in the filter, or none mapped to a
        standard exam); ``None`` when it has rows.
    """

    comparison: pd.DataFrame
    drl_set: str
    n_samples: int
    empty_reason: str | None = None
    local: pd.DataFrame | None = None
    per_period: pd.DataFrame | None = None
    period_summary: pd.DataFrame | None = None


def compare_drls(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    drl_set: str = "EU",
    families: Sequence[str] = MODALITY_FAMILIES,
    exam: str | None = None,
    drl_extra_paths: Sequence[Any] = (),
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    unknown_age: str = "adult",
    local: bool = False,
    periods: bool = False,
    period: str = "quarter",
    consecutive: int = 2,
) -> DrlResult:
    """Compare each room's typical value with the national DRLs (ICRP 135).

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies.
    drl_set : str, optional
        DRL set(s) in priority order, e.g. ``"EU"`` or ``"UK,EU"``.
    families : sequence of str, optional
        Modality families compared.
    exam : str, optional
        Only this standard exam (the sample's own).
    drl_extra_paths : sequence of path, optional
        Site DRL tables (``Settings.drl_extra_paths``).
    min_sample, min_sample_mammography, unknown_age : optional
        As :func:`kerma.analysis.drl.compare_with_drls` (``Settings.drl_*``).
    local : bool, optional
        Also compute local DRLs.
    periods : bool, optional
        Also compare per ``period`` and flag rooms ``consecutive`` periods above.

    Returns
    -------
    DrlResult
        Comparison (and local DRLs, periods when asked).

    Raises
    ------
    kerma.errors.NotFoundError
        When ``exam`` is not the exam of any sample, or the device filter names no device.
    kerma.errors.ConfigurationError
        When the DRL set or the unknown-age policy is unknown.
    """
    flt = flt or StudyFilter()
    drls = select_drls(load_drls(extra_paths=drl_extra_paths), drl_set)
    check_device_filter(session, flt)
    if _is_postgres(session):  # one row per room from the database
        check_unknown_age(unknown_age)
        result = _compare_drls_in_database(
            session,
            flt=flt,
            drls=drls,
            drl_set=drl_set,
            families=families,
            exam=exam,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            unknown_age=unknown_age,
            local=local,
        )
        if result.comparison.empty:
            result.empty_reason = _why_no_comparison(session, flt, families, exam)
        elif periods:
            result.per_period, result.period_summary = _periods_in_database(
                session,
                flt=flt,
                drls=drls,
                families=families,
                exam=exam,
                min_sample=min_sample,
                min_sample_mammography=min_sample_mammography,
                unknown_age=unknown_age,
                period=period,
                consecutive=consecutive,
            )
        return result
    # study_date: each study is compared with the DRL edition in force on its date.
    samples = dose_samples(
        session, flt=flt, families=families, context=DRL_CONTEXT, mapped_only=True
    )
    family = families[0] if len(families) == 1 else None
    samples = select_exam(samples, exam, family=family)
    result = DrlResult(
        comparison=compare_with_drls(
            samples,
            drls,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            unknown_age=unknown_age,
        ),
        drl_set=drl_set,
        n_samples=len(samples),
    )
    if result.comparison.empty:
        result.empty_reason = _why_no_comparison(session, flt, families, exam)
        return result
    if local:
        result.local = local_drls(
            samples, min_sample=min_sample, min_sample_mammography=min_sample_mammography
        )
    if periods:
        result.per_period, result.period_summary = compare_by_period(
            samples,
            drls,
            period=period,
            consecutive=consecutive,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            unknown_age=unknown_age,
        )
    return result


def drl_sets(*, settings: Settings) -> pd.DataFrame:
    """Return the DRL sets Kerma knows: the packaged tables and the site's own.

    Parameters
    ----------
    settings : Settings
        ``drl_extra_paths``: the site's DRL tables (CSV), read besides the packaged ones.

    Returns
    -------
    pandas.DataFrame
        One row per set (:func:`kerma.analysis.reference.list_drl_sets`): region, source,
        year, number of rows, modalities, statuses and verification.
    """
    return list_drl_sets(load_drls(extra_paths=settings.drl_extra_paths))


def drl_sets_coverage(*, settings: Settings) -> pd.DataFrame:
    """Return per DRL set (region) its modalities, exams, editions and grade shares.

    Parameters
    ----------
    settings : Settings
        ``drl_extra_paths``: the site's DRL tables (CSV), read besides the packaged ones.

    Returns
    -------
    pandas.DataFrame
        :func:`kerma.analysis.reference.drl_coverage`: one row per region with
        ``modalities``, ``n_exams``, ``exams``, ``editions``, ``n_rows`` and the share
        of rows at each verification grade (``share_primary`` ... ``share_site``).
    """
    return drl_coverage(load_drls(extra_paths=settings.drl_extra_paths))


def _why_no_comparison(
    session: Session, flt: StudyFilter, families: Sequence[str], exam: str | None
) -> str:
    """Return why a DRL comparison has no row: no study in the filter, or none mapped."""
    names = "/".join(families)
    wanted = [f for f in dict.fromkeys(families) if f in MODALITY_FAMILIES]
    n = aggregates.sample_study_count(session, flt=flt, families=wanted)  # one COUNT
    if not n:
        what = "no study in the filter" if flt.has_study_conditions else "no study"
        return (
            f"{what} has {names} dose values to compare (check --from/--to, --device and "
            "--modality, or import studies first)."
        )
    return (
        f"{n} {names} studies match the filter, but none is mapped to a standard exam"
        + (f" {exam!r}" if exam else "")
        + " that a DRL table covers: 'kerma exams' lists the unmapped study descriptions; "
        "add site exam rules (KERMA_EXAM_RULES_PATH, docs/analysis.md)."
    )


# -- statistics ----------------------------------------------------------------------------------


@dataclass
class StatisticsResult:
    """What :func:`statistics` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`kerma.analysis.stats.dose_statistics` (long format, canonical units).
    n_samples : int
        Samples described.
    families : set of str
        Modality families among them.
    """

    table: pd.DataFrame
    n_samples: int
    families: set[str] = field(default_factory=set)


def statistics(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    by: Sequence[str] = ("standard_exam", "device_name"),
    period: str = "month",
    families: Sequence[str] = MODALITY_FAMILIES,
    exam: str | None = None,
    quantities: Sequence[str] | None = None,
) -> StatisticsResult:
    """Return n, mean, std, min, p25, median, p75, p95 and max per group and quantity.

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies (age, weight and sex bands included).
    by : sequence of str, optional
        Grouping columns of the sample frame (``standard_exam``, ``device_name``,
        ``station_name``, ``period``, ``modality_family``, ``patient_sex``, ``view``,
        ``laterality``, ``study_description``, ``device_id``, ``sample_level``,
        ``ssde_size_source``).
    period : {"month", "quarter", "year", "week"}, optional
        Length of the ``period`` grouping.
    families : sequence of str, optional
        Modality families described.
    exam : str, optional
        Only this standard exam.
    quantities : sequence of str, optional
        Sample columns to describe (default: every dose quantity with a value).

    Returns
    -------
    StatisticsResult
        The table and what it describes.

    Raises
    ------
    kerma.errors.NotFoundError
        When ``exam`` is not the exam of any sample, or the device filter names no device.
    ValueError
        When ``period`` is unknown.
    """
    flt = flt or StudyFilter()
    if period not in PERIODS:
        raise ValueError(f"Unable to group by period {period!r}: use {', '.join(PERIODS)}.")
    groups = list(by)
    context = ["study_id", "device_id", "patient_age_years"]
    context += [g for g in groups if g in CONTEXT_COLUMNS]
    if "period" in groups:
        context.append("study_date")
    check_device_filter(session, flt)
    if _is_postgres(session) and _statistics_in_database_supported(groups, families, quantities):
        return _statistics_in_database(
            session,
            flt=flt,
            groups=groups,
            period=period,
            families=families,
            exam=exam,
            quantities=quantities,
        )
    samples = dose_samples(session, flt=flt, families=families, context=context)
    family = families[0] if len(families) == 1 else None
    samples = select_exam(samples, exam, family=family)
    if "period" in groups:
        samples = add_period(samples, period)
    for group in groups:
        if group not in samples.columns:
            samples[group] = pd.Series(pd.NA, index=samples.index, dtype=object)
    present = None if quantities is None else [q for q in quantities if q in samples.columns]
    table = _text_keys(dose_statistics(samples, groups, present), groups)
    found = set(samples["modality_family"].dropna().astype(str)) if len(samples) else set()
    return StatisticsResult(table=table, n_samples=len(samples), families=found)


def _text_keys(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Return ``table`` with its text grouping columns as pandas strings (whatever their source)."""
    for key in keys:
        if key in table.columns and not pd.api.types.is_numeric_dtype(table[key]):
            table[key] = table[key].astype(str)
    return table


# -- summary per modality, device and protocol ---------------------------------------------------


def dose_summary(session: Session, *, flt: StudyFilter | None = None) -> pd.DataFrame:
    """Return event dose statistics per (event modality, device, acquisition protocol).

    The main quantities in canonical units (:data:`SUMMARY_QUANTITIES`): CT CTDIvol
    (mGy) and DLP (mGy·cm) per event; projection X-ray KAP (Gy·m²) and Ka,r (Gy) per
    event; MG AGD (mGy); NM/PT administered activity (MBq). Without a study condition
    in ``flt`` (dates, exams, patient bands ...) the database counts and ranks each
    group's values through its indexes (:func:`kerma.db.analytics.group_percentiles`
    on SQLite, ``percentile_cont`` per quantity on PostgreSQL); with one, or when the
    patient and non-patient groups of a key merge, SQLite's filtered events' values are
    read (narrow) and ranked here, and PostgreSQL counts and ranks them all in one
    statement (:func:`kerma.db.analytics.postgres_summary_rows`, only the filter's
    months' partitions). Both back ends give the same frame
    (tests/services/test_sample_aggregates.py).

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`: one row per (modality, device, protocol, quantity) with
        ``label`` and ``unit`` (canonical, :data:`kerma.units.QUANTITIES`),
        ``number_of_studies``, ``number_of_events`` (of the group),
        ``number_of_values`` (events holding the quantity), ``median``, ``p25`` and
        ``p75`` (linear interpolation). Groups without a value of a quantity are left
        out; rows sorted by modality, device name and protocol.
    """
    flt = flt or StudyFilter()
    groups = store.summary_groups(session, flt=flt)
    if not groups:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    keys = {
        g.group_id: (str(g.modality), int(g.device_id), str(g.acquisition_protocol)) for g in groups
    }
    names = {g.group_id: str(g.device_name) for g in groups}
    merged = len(set(keys.values())) < len(keys)  # patient and non-patient groups of a key
    by_study = flt.has_study_conditions or merged
    if by_study and session.get_bind().dialect.name == "postgresql":
        stats = _summary_postgres(session, flt, keys)
    elif by_study:
        stats = _summary_by_reading(session, flt, keys)
    else:
        stats = _summary_in_database(session, keys)
    rows = []
    for (modality, device_id, protocol), per_quantity in stats.items():
        device_name = next(
            names[g] for g, k in keys.items() if k == (modality, device_id, protocol)
        )
        for quantity, values in per_quantity.items():
            known = QUANTITIES[quantity]
            rows.append(
                {
                    "modality": modality,
                    "device_name": device_name,
                    "acquisition_protocol": protocol,
                    "quantity": quantity,
                    "label": known.canonical_label,
                    "unit": known.unit,
                    **values,
                }
            )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    if frame.empty:
        return frame
    order = {q: i for i, q in enumerate((*SUMMARY_QUANTITIES["CT"], *PROJECTION_QUANTITIES))}
    frame["_order"] = frame["quantity"].map(order).fillna(9)
    frame = frame.sort_values(
        ["modality", "device_name", "acquisition_protocol", "_order"], kind="stable"
    )
    return frame.drop(columns="_order").reset_index(drop=True)


def _quantities_of(modality: str) -> tuple[str, ...]:
    """Return the summary quantities of an event modality."""
    return SUMMARY_QUANTITIES.get(modality.upper(), PROJECTION_QUANTITIES)


def _summary_in_database(
    session: Session, keys: dict[int, tuple[str, int, str]]
) -> dict[tuple[str, int, str], dict[str, dict[str, Any]]]:
    """Return summary statistics per group computed by the database (indexes only)."""
    ids = list(keys)
    counts = store.group_counts(session, group_ids=ids)
    is_postgres = session.get_bind().dialect.name == "postgresql"
    out: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    by_quantity: dict[str, list[int]] = {}
    for gid, (modality, _, _) in keys.items():
        for quantity in _quantities_of(modality):
            by_quantity.setdefault(quantity, []).append(gid)
    fractions = list(SUMMARY_FRACTIONS.values())
    for quantity, gids in by_quantity.items():
        if is_postgres:  # counts and percentiles in one statement
            ranked = store.postgres_group_percentiles(
                session, quantity=quantity, group_ids=gids, fractions=fractions
            )
            n_values = {g: n for g, (n, _) in ranked.items()}
            percentiles = {g: p for g, (_, p) in ranked.items()}
        else:
            n_values = store.group_value_counts(session, quantity=quantity, group_ids=gids)
            percentiles = {
                g: store.group_percentiles(
                    session, quantity=quantity, group_id=g, n=n_values[g], fractions=fractions
                )
                for g in gids
                if n_values.get(g)
            }
        with_values = [g for g in gids if n_values.get(g)]
        for gid in with_values:
            n_events, n_studies = counts.get(gid, (0, 0))
            out.setdefault(keys[gid], {})[quantity] = {
                "number_of_studies": n_studies,
                "number_of_events": n_events,
                "number_of_values": n_values[gid],
                **dict(zip(SUMMARY_FRACTIONS, percentiles[gid], strict=True)),
            }
    return out


def _summary_by_reading(
    session: Session, flt: StudyFilter, keys: dict[int, tuple[str, int, str]]
) -> dict[tuple[str, int, str], dict[str, dict[str, Any]]]:
    """Return summary statistics per (modality, device, protocol) from the filtered values.

    The values of the events whose studies ``flt`` selects are read (narrow: group,
    study and the quantities) and ranked with pandas' grouped quantiles (linear
    interpolation, as numpy); groups of one key (patient and non-patient) merge.
    """
    out: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    quantities = sorted({q for m, _, _ in keys.values() for q in _quantities_of(m)})
    columns = ["group_id", "study_id", *quantities]
    frame = pd.DataFrame.from_records(
        store.group_value_rows(session, flt=flt, group_ids=list(keys), quantities=quantities),
        columns=columns,
    )
    if frame.empty:
        return out
    key_list = sorted(set(keys.values()))
    code_of = {gid: key_list.index(key) for gid, key in keys.items()}
    frame["code"] = frame["group_id"].map(code_of)
    grouped = frame.groupby("code", sort=False)
    n_events = grouped.size()
    n_studies = grouped["study_id"].nunique()
    for quantity in quantities:
        values = frame[["code", quantity]].dropna()
        if values.empty:
            continue
        by_code = values.groupby("code", sort=False)[quantity]
        counts = by_code.size()
        ranks = by_code.quantile(list(SUMMARY_FRACTIONS.values())).unstack()
        for code, n in counts.items():
            key = key_list[int(code)]
            if quantity not in _quantities_of(key[0]):
                continue
            out.setdefault(key, {})[quantity] = {
                "number_of_studies": int(n_studies[code]),
                "number_of_events": int(n_events[code]),
                "number_of_values": int(n),
                **{
                    name: float(ranks.loc[code, fraction])
                    for name, fraction in SUMMARY_FRACTIONS.items()
                },
            }
    return out


def _summary_postgres(
    session: Session, flt: StudyFilter, keys: dict[int, tuple[str, int, str]]
) -> dict[tuple[str, int, str], dict[str, dict[str, Any]]]:
    """Return the summary of the events whose studies ``flt`` selects, by PostgreSQL.

    The statistics of :func:`_summary_by_reading` (groups of one key merged), computed
    in one aggregate statement (:func:`kerma.db.analytics.postgres_summary_rows`:
    counts and ``percentile_cont`` of every quantity per key) instead of read.
    """
    key_list = sorted(set(keys.values()))
    code_of = {key: code for code, key in enumerate(key_list)}
    quantities = sorted({q for m, _, _ in key_list for q in _quantities_of(m)})
    fractions = list(SUMMARY_FRACTIONS.values())
    rows = store.postgres_summary_rows(
        session,
        flt=flt,
        group_codes={gid: code_of[key] for gid, key in keys.items()},
        quantities=quantities,
        fractions=fractions,
    )
    out: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    width = 1 + len(fractions)
    for code, n_events, n_studies, *measures in rows:
        key = key_list[int(code)]
        for i, quantity in enumerate(quantities):
            n_values, *percentiles = measures[i * width : (i + 1) * width]
            if not n_values or quantity not in _quantities_of(key[0]):
                continue
            out.setdefault(key, {})[quantity] = {
                "number_of_studies": int(n_studies),
                "number_of_events": int(n_events),
                "number_of_values": int(n_values),
                **{n: float(v) for n, v in zip(SUMMARY_FRACTIONS, percentiles, strict=True)},
            }
    return out


# -- computed by PostgreSQL ----------------------------------------------------------------------
#
# On PostgreSQL the DRL comparison (and local DRLs) and the statistics are computed by
# the database (kerma.db.sample_aggregates: GROUP BY and percentile_cont) and read as
# one row per room or group; the frames are those of the sample-frame path above,
# which SQLite keeps (it has no percentile function).


def _is_postgres(session: Session) -> bool:
    """Return whether the session's database is PostgreSQL."""
    return session.get_bind().dialect.name == "postgresql"


def _sample_columns(family: str) -> tuple[str, ...]:
    """Return the sample columns of a family's samples, as :func:`dose_samples` reads them."""
    if family in STUDY_SAMPLE_QUANTITIES:
        return STUDY_SAMPLE_QUANTITIES[family]
    return EVENT_SAMPLE_QUANTITIES[family]


def _view_mapping(session: Session, family: str) -> dict[str, str]:
    """Return the stored image views of an event family that normalise to another name."""
    stored = aggregates.image_views(session, family=family)
    normal = normalise_view(pd.Series(stored, dtype=object))
    return {raw: str(view) for raw, view in zip(stored, normal, strict=True) if view != raw}


def _exam_counts(
    session: Session, flt: StudyFilter, families: Sequence[str], *, mapped_only: bool
) -> dict[str, list[tuple[Any, ...]]]:
    """Return per family its samples per standard exam and age class (database counts)."""
    return {
        family: aggregates.sample_exam_counts(
            session,
            flt=flt,
            family=family,
            adult_age_years=ADULT_AGE_YEARS,
            mapped_only=mapped_only,
        )
        for family in dict.fromkeys(families)
        if family in MODALITY_FAMILIES
    }


def _selected_count(
    counts: dict[str, list[tuple[Any, ...]]], exam: str | None, families: Sequence[str]
) -> int:
    """Return the samples of ``exam`` (all without it); raise as :func:`select_exam` does.

    Raises
    ------
    kerma.errors.NotFoundError
        When no sample is mapped to ``exam``.
    """
    if exam is not None:
        present = sorted({str(row[0]) for rows in counts.values() for row in rows if row[0]})
        if exam not in present:
            raise _exam_not_found(exam, present, families[0] if len(families) == 1 else None)
    return sum(
        int(row[1]) for rows in counts.values() for row in rows if exam is None or row[0] == exam
    )


def _compare_drls_in_database(
    session: Session,
    *,
    flt: StudyFilter,
    drls: pd.DataFrame,
    drl_set: str,
    families: Sequence[str],
    exam: str | None,
    min_sample: int,
    min_sample_mammography: int,
    unknown_age: str,
    local: bool,
) -> DrlResult:
    """Return :func:`compare_drls`'s comparison (and local DRLs) computed by PostgreSQL.

    The plan of :func:`kerma.analysis.drl.plan_comparison` from the samples per exam
    and age class the database counts; each cell's room medians from one grouped
    statement per family (:func:`kerma.db.sample_aggregates.room_medians`).
    """
    counts = _exam_counts(session, flt, families, mapped_only=True)
    n_samples = _selected_count(counts, exam, families)
    present: set[tuple[str, str, str]] = set()
    for family, rows in counts.items():
        for name, _, n_paediatric, n_adult in rows:
            if name is None or (exam is not None and name != exam):
                continue
            if n_adult:
                present.add((family, str(name), "adult"))
            if n_paediatric:
                present.add((family, str(name), "paediatric"))
    cells = plan_comparison(
        present, drls, min_sample=min_sample, min_sample_mammography=min_sample_mammography
    )
    comparison = assemble_comparison(
        cells, _cell_rooms(session, flt, cells, unknown_age=unknown_age), unknown_age=unknown_age
    )
    result = DrlResult(comparison=comparison, drl_set=drl_set, n_samples=n_samples)
    if local and not comparison.empty:
        quantities = {f: [q for q in SAMPLE_QUANTITIES if q in _sample_columns(f)] for f in counts}
        local_cells = plan_local_drls(
            {(family, name) for family, name, _ in present},
            quantities,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
        )
        result.local = assemble_local_drls(
            local_cells, _cell_rooms(session, flt, local_cells, unknown_age=unknown_age)
        )
    return result


def _periods_in_database(
    session: Session,
    *,
    flt: StudyFilter,
    drls: pd.DataFrame,
    families: Sequence[str],
    exam: str | None,
    min_sample: int,
    min_sample_mammography: int,
    unknown_age: str,
    period: str,
    consecutive: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return :func:`kerma.analysis.drl.compare_by_period` computed by PostgreSQL.

    Per period (its label as :func:`kerma.analysis.stats.add_period` writes it), the
    cells of the comparison without the no-DRL rows, their room medians in one grouped
    statement per family (joined on exam and period). Samples without a study date
    (pandas' ``NaT`` period) or a period pandas names otherwise are compared from the
    sample frame instead.
    """
    counts = {
        family: aggregates.sample_period_exam_counts(
            session, flt=flt, family=family, adult_age_years=ADULT_AGE_YEARS, period=period
        )
        for family in dict.fromkeys(families)
        if family in MODALITY_FAMILIES
    }
    selected = [
        (family, row)
        for family, rows in counts.items()
        for row in rows
        if exam is None or row[1] == exam
    ]
    if period not in ("month", "quarter", "year") or any(row[0] is None for _, row in selected):
        samples = dose_samples(
            session, flt=flt, families=families, context=DRL_CONTEXT, mapped_only=True
        )
        return compare_by_period(
            select_exam(samples, exam),
            drls,
            period=period,
            consecutive=consecutive,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            unknown_age=unknown_age,
        )
    starts = sorted({row[0] for _, row in selected})
    labels = dict(
        zip(
            starts,
            pd.Series(pd.to_datetime(starts)).dt.to_period(PERIODS[period]).astype(str),
            strict=True,
        )
    )
    present: dict[str, set[tuple[str, str, str]]] = {labels[s]: set() for s in starts}
    start_of = {label: start for start, label in labels.items()}
    for family, (start, name, _, n_paediatric, n_adult) in selected:
        if name is None:
            continue
        if n_adult:
            present[labels[start]].add((family, str(name), "adult"))
        if n_paediatric:
            present[labels[start]].add((family, str(name), "paediatric"))
    plans = {
        label: plan_comparison(
            groups,
            drls,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            include_no_drl=False,
        )
        for label, groups in present.items()
    }
    cells = [cell for label in sorted(plans) for cell in plans[label]]
    cell_starts = [start_of[label] for label in sorted(plans) for _ in plans[label]]
    rooms = _cell_rooms(
        session, flt, cells, unknown_age=unknown_age, period=period, starts=cell_starts
    )
    parts, done = [], 0
    for label in sorted(plans):
        size = len(plans[label])
        compared = assemble_comparison(
            plans[label], rooms[done : done + size], unknown_age=unknown_age
        )
        done += size
        compared.insert(0, "period", label)
        parts.append(compared)
    return summarise_periods(parts, period=period, consecutive=consecutive)


#: Columns of a cell's room medians (:func:`kerma.analysis.drl.assemble_comparison`).
_ROOM_COLUMNS: Final[tuple[str, ...]] = (
    "device_id",
    "device_name",
    "n",
    "n_studies",
    "n_unknown_age",
    "typical_value",
    "sample_median",
)


def _cell_rooms(
    session: Session,
    flt: StudyFilter,
    cells: Sequence[RoomCell],
    *,
    unknown_age: str,
    period: str | None = None,
    starts: Sequence[dt.date] | None = None,
) -> list[pd.DataFrame]:
    """Return each cell's room medians, one statement per family (in ``device_id`` order).

    With ``period``, cell ``i`` takes the samples of the period starting ``starts[i]``.
    """
    units: dict[str, list[aggregates.RoomUnit]] = {}
    for i, cell in enumerate(cells):
        unit = _room_unit(i, cell)
        if unit is not None and starts is not None:
            unit = dataclasses.replace(unit, period_start=starts[i])
        if unit is not None:
            units.setdefault(cell.family, []).append(unit)
    found: dict[int, list[tuple[Any, ...]]] = {}
    for family, family_units in units.items():
        with_view = family in aggregates.EVENT_FAMILIES and any(u.view for u in family_units)
        for row in aggregates.room_medians(
            session,
            flt=flt,
            family=family,
            units=family_units,
            adult_age_years=ADULT_AGE_YEARS,
            unknown_as_adult=unknown_age == "adult",
            views=_view_mapping(session, family) if with_view else None,
            period=period,
        ):
            found.setdefault(int(row[0]), []).append(tuple(row[1:]))
    names = store.device_names(session)
    frames = []
    for i, cell in enumerate(cells):
        rows = found.get(i, [])
        if not rows:
            frames.append(pd.DataFrame(columns=list(_ROOM_COLUMNS)))
            continue
        device, n, n_studies, n_unknown, median = (list(c) for c in zip(*rows, strict=True))
        medians = np.array([np.nan if m is None else float(m) for m in median])
        studies = np.asarray(n_studies, dtype=int)
        frames.append(
            pd.DataFrame(
                {
                    "device_id": np.asarray(device, dtype=np.int64),
                    "device_name": np.array([names[int(d)][0] for d in device], dtype=object),
                    "n": np.asarray(n, dtype=int),
                    "n_studies": studies,
                    "n_unknown_age": np.asarray(n_unknown, dtype=int),
                    "typical_value": np.where(studies < cell.min_sample, np.nan, medians),
                    "sample_median": medians,
                }
            )
        )
    return frames


def _day(value: Any) -> dt.date | None:
    """Return a DRL validity bound as a date (``None`` when open)."""
    return None if value is None or pd.isna(value) else pd.Timestamp(value).date()


def _bound(value: Any) -> float | None:
    """Return a DRL band bound as a float (``None`` when open)."""
    return None if value is None or pd.isna(value) else float(value)


def _room_unit(unit_id: int, cell: RoomCell) -> aggregates.RoomUnit | None:
    """Return a cell as the database's plain unit; ``None`` when it selects no sample.

    The band, view and validity of the cell's DRL row as
    :func:`kerma.analysis.drl._band_mask` and ``_in_force`` read them: an age or weight
    band only for paediatric rows; a thickness band with a missing bound selects
    nothing (pandas' ``between`` of a NaN bound).
    """
    band = view = None
    band_min = band_max = None
    valid_from = valid_to = None
    drl = cell.drl
    if drl is not None:
        grouping = drl.get("band_grouping")
        by_patient = {"age": "age", "weight": "weight"}.get(str(grouping))
        low, high = _bound(drl.get("band_min")), _bound(drl.get("band_max"))
        if drl["patient_group"] == "paediatric" and by_patient is not None:
            band, band_min, band_max = by_patient, low, high
        if grouping == "compressed breast thickness":
            if low is None or high is None:
                return None
            band, band_min, band_max = "thickness", low, high
        named = drl.get("view")
        view = named if isinstance(named, str) and named else None
        valid_from, valid_to = _day(drl.get("valid_from")), _day(drl.get("valid_to"))
    return aggregates.RoomUnit(
        unit_id=unit_id,
        exam=cell.exam,
        patient_group=cell.patient_group,
        column=cell.column,
        band=band,
        band_min=band_min,
        band_max=band_max,
        view=view,
        valid_from=valid_from,
        valid_to=valid_to,
        outside=tuple((_day(r.get("valid_from")), _day(r.get("valid_to"))) for r in cell.outside),
    )


def _statistics_in_database_supported(
    groups: Sequence[str], families: Sequence[str], quantities: Sequence[str] | None
) -> bool:
    """Return whether the database computes these statistics (keys and dose columns it has)."""
    if any(g not in aggregates.STATISTIC_KEYS for g in groups) or len(set(groups)) < len(groups):
        return False
    if quantities is None:
        return True
    columns = {q for f in families if f in MODALITY_FAMILIES for q in _sample_columns(f)}
    return all(q in columns and q in SAMPLE_QUANTITIES for q in quantities)


def _statistics_in_database(
    session: Session,
    *,
    flt: StudyFilter,
    groups: Sequence[str],
    period: str,
    families: Sequence[str],
    exam: str | None,
    quantities: Sequence[str] | None,
) -> StatisticsResult:
    """Return :func:`statistics` computed by PostgreSQL (one row per group and quantity).

    The frame of :func:`kerma.analysis.stats.dose_statistics` on the sample frame: a
    missing key is ``"(not mapped)"`` (exam) or ``"(unknown)"``, periods are pandas'
    labels, rows sorted by the keys within each quantity.
    """
    counts = _exam_counts(session, flt, families, mapped_only=False)
    n_samples = _selected_count(counts, exam, families)
    found = {
        family
        for family, rows in counts.items()
        if any(row[1] for row in rows if exam is None or row[0] == exam)
    }
    order = list(SAMPLE_QUANTITIES) if quantities is None else list(dict.fromkeys(quantities))
    per_family = {f: [q for q in order if q in _sample_columns(f)] for f in counts if f in found}
    views = None
    if "view" in groups:
        views = {f: _view_mapping(session, f) for f in per_family if f in aggregates.EVENT_FAMILIES}
    described, rows = aggregates.sample_statistics(
        session,
        flt=flt,
        families={f: q for f, q in per_family.items() if q},
        keys=groups,
        exam=exam,
        period=period,
        views=views,
    )
    table = _text_keys(_statistics_table(rows, groups, described, order, period), groups)
    return StatisticsResult(table=table, n_samples=n_samples, families=found)


def _statistics_table(
    rows: Sequence[tuple[Any, ...]],
    keys: Sequence[str],
    described: Sequence[str],
    order: Sequence[str],
    period: str,
) -> pd.DataFrame:
    """Return the :func:`kerma.analysis.stats.dose_statistics` frame of the database's rows."""
    keys = list(keys)
    names = ["n", "mean", "std", "min", "max", *PERCENTILES]
    width = len(names)
    parts = []
    for quantity in order:
        if quantity not in described:
            continue
        start = len(keys) + described.index(quantity) * width
        records = [(*row[: len(keys)], *row[start : start + width]) for row in rows if row[start]]
        if not records:
            continue
        table = pd.DataFrame.from_records(records, columns=[*keys, *names])
        for key in keys:
            if key == "period":
                days = pd.to_datetime(table[key])
                table[key] = days.dt.to_period(PERIODS[period]).astype(str)
            elif key == "device_id":
                table[key] = table[key].astype("int64")
            else:
                label = "(not mapped)" if key == "standard_exam" else "(unknown)"
                table[key] = table[key].astype(object).where(table[key].notna(), label)
        for name in names[1:]:
            table[name] = pd.to_numeric(table[name], errors="coerce").astype(float)
        if keys:
            table = table.sort_values(keys, kind="stable", ignore_index=True)
        table.insert(len(keys), "quantity", quantity)
        known = QUANTITIES.get(quantity)
        table.insert(len(keys) + 1, "unit", known.unit if known else "")
        parts.append(table[[*keys, "quantity", "unit", *STAT_COLUMNS]])
    if not parts:
        return pd.DataFrame(columns=[*keys, "quantity", "unit", *STAT_COLUMNS])
    out = pd.concat(parts, ignore_index=True)
    out["n"] = out["n"].astype(int)
    return out


# -- cumulative dose -----------------------------------------------------------------------------


def cumulative_dose(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    window_days: int = 365,
    as_of: dt.date | str | None = None,
) -> pd.DataFrame:
    """Return each patient's cumulative dose over the window ending at ``as_of``.

    The sums of :func:`kerma.analysis.cumulative.cumulative_dose`, computed by the
    database from the study summary columns (one GROUP BY over the window's studies).

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies.
    window_days : int, optional
        Window length in days (default 365; ``Settings.cumulative_window_days``).
    as_of : date or ISO string, optional
        Last day of the window (inclusive); default the latest study date.

    Returns
    -------
    pandas.DataFrame
        :data:`kerma.analysis.cumulative.CUMULATIVE_COLUMNS`, one row per patient with
        a study in the window, sorted by effective dose then Ka,r (descending).
    """
    flt = flt or StudyFilter()
    end = as_date(as_of) if as_of is not None else store.latest_study_date(session, flt=flt)
    if end is None:
        return pd.DataFrame(columns=list(CUMULATIVE_COLUMNS))
    start = end - dt.timedelta(days=window_days - 1)
    rows = store.cumulative_rows(session, flt=flt, start=start, end=end)
    columns = [c for c in CUMULATIVE_COLUMNS if c not in ("window_start", "window_end")]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame.insert(1, "window_start", start)
    frame.insert(2, "window_end", end)
    for name in ("number_of_studies", "number_of_ct_exams", "number_of_fluoro_studies"):
        frame[name] = frame[name].astype("int64")
    for name in (
        "ct_dlp_total_mgycm",
        "ct_effective_dose_msv",
        "fluoro_studies_dose_rp_total_gy",
        "fluoro_studies_dap_total_gym2",
    ):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame[list(CUMULATIVE_COLUMNS)]


__all__ = [
    "MODALITY_FAMILIES",
    "NO_COEFFICIENT_NOTE",
    "PERIODS",
    "SAMPLE_QUANTITIES",
    "STATUS_ABOVE",
    "STATUS_BELOW",
    "STATUS_INSUFFICIENT",
    "STATUS_NEEDS_INDICATION",
    "STATUS_NO_DRL",
    "STATUS_NO_EDITION",
    "DrlResult",
    "StatisticsResult",
    "compare_drls",
    "cumulative_dose",
    "dose_samples",
    "dose_summary",
    "drl_sets",
    "drl_sets_coverage",
    "filter_samples",
    "select_exam",
    "statistics",
]

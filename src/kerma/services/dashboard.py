"""The web dashboard's use cases: overview, DRL status, analysis of one exam, rule trial, originals.

Pages, the JSON API and (where it applies) the CLI call these functions; each reads
through :mod:`kerma.db` (aggregates in the database: :mod:`kerma.db.dashboard`) and
computes through :mod:`kerma.analysis`. Nothing here loads a whole table: the overview
is GROUP BYs, the analysis reads the samples of one standard exam only (narrow
columns, through the exam's index), and the registry-wide DRL status (one comparison
over every sample, about 1 s at 10⁶ events, ``docs/performance.md``) and the other
registry-wide aggregates are cached per registry state (:class:`AggregateCache`).

May import ``kerma.db``, ``kerma.analysis``, ``kerma.records``, ``kerma.units``,
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from kerma.analysis.drl import compare_with_drls
from kerma.analysis.exams import ExamRule, _parse_rules, match_exam
from kerma.analysis.frames import DRL_QUANTITY_COLUMNS
from kerma.analysis.reference import load_drls, select_drls
from kerma.config import Settings
from kerma.db import dashboard as store
from kerma.db.alerts import AlertFilter
from kerma.db.filters import StudyFilter
from kerma.errors import ConfigurationError, NotFoundError
from kerma.units import QUANTITIES

__all__ = [
    "ANALYSIS_QUANTITIES",
    "CHARTS",
    "AggregateCache",
    "AlertFilter",
    "ExamAnalysis",
    "Original",
    "RuleTrial",
    "analyse_exam",
    "chart_frame",
    "device_contacts",
    "read_original",
    "studies_per_month",
    "study_originals",
    "try_exam_rule",
    "workload",
]

#: Quantities the analysis page offers per modality family (canonical units in the names);
#: the first is the default (the DRL quantity of the family: DLP, KAP, AGD).
ANALYSIS_QUANTITIES: Final[dict[str, tuple[str, ...]]] = {
    "CT": ("ct_dlp_total_mgycm", "ctdivol_mean_mgy", "ssde_mgy", "effective_dose_msv"),
    "RF/XA": ("dap_total_gym2", "dose_rp_total_gy", "fluoro_time_total_s"),
    "DX": ("dap_gym2", "entrance_dose_mgy", "dose_rp_gy"),
    "MG": ("agd_mgy",),
}

#: Charts of the analysis page whose data can be downloaded (CSV), by name.
CHARTS: Final[tuple[str, ...]] = ("boxes", "histogram", "monthly", "scatter", "workload")

#: Number of histogram bins (equal width on a log10 axis: doses are log-normal).
HISTOGRAM_BINS: Final = 30


def alert_counts(session: Session, *, site_ids: tuple[int, ...] | None = None) -> dict[str, int]:
    """Return the number of alerts per review state (``open``, ``under_review``, ``closed``).

    ``site_ids``: only the alerts of these sites (issue #15; ``None``: every alert).
    """
    from kerma.services.alerts import AlertState, count_alerts

    return {
        state.value: count_alerts(session, flt=AlertFilter(state=state.value, site_ids=site_ids))
        for state in AlertState
    }


def studies_per_month(session: Session, *, flt: StudyFilter | None = None) -> pd.DataFrame:
    """Return studies per month and modality: columns ``month`` (``YYYY-MM``), ``modality``,
    ``n_studies`` (one GROUP BY in the database)."""
    return pd.DataFrame.from_records(
        store.studies_per_month(session, flt=flt), columns=["month", "modality", "n_studies"]
    )


def device_contacts(
    session: Session, *, now: dt.datetime | None = None, site_ids: tuple[int, ...] | None = None
) -> pd.DataFrame:
    """Return each device's last contact: the newest stored object and how long ago.

    Parameters
    ----------
    site_ids : tuple of int or None, optional
        Only the devices of these sites, with their studies of these sites (issue #15);
        ``None``: every device.

    Returns
    -------
    pandas.DataFrame
        One row per device: ``device_id``, ``device_name``, ``station_name``, ``modality``,
        ``last_received_at`` (UTC, NaT when the device never sent anything),
        ``n_studies``, ``days_since`` (float days, NaN when never). Silent devices
        (longest silence) first.
    """
    now = now or dt.datetime.now(dt.UTC)
    frame = pd.DataFrame.from_records(
        store.last_received_per_device(session, site_ids=site_ids),
        columns=[
            "device_id",
            "device_name",
            "station_name",
            "modality",
            "last_received_at",
            "n_studies",
        ],
    )
    frame["last_received_at"] = pd.to_datetime(frame["last_received_at"], utc=True)
    frame["days_since"] = (pd.Timestamp(now) - frame["last_received_at"]).dt.total_seconds() / 86400
    return frame.sort_values("days_since", ascending=False, na_position="first", ignore_index=True)


def workload(session: Session, *, flt: StudyFilter | None = None) -> pd.DataFrame:
    """Return studies per weekday (0 = Monday) and hour of day: ``weekday``, ``hour``,
    ``n_studies`` (every cell of the 7 × 24 grid, zeros included)."""
    counts = np.zeros((7, 24), dtype=np.int64)
    for weekday, hour, n in store.workload(session, flt=flt):
        if 0 <= weekday < 7 and 0 <= hour < 24:
            counts[weekday, hour] += n
    days, hours = np.meshgrid(np.arange(7), np.arange(24), indexing="ij")
    return pd.DataFrame(
        {"weekday": days.ravel(), "hour": hours.ravel(), "n_studies": counts.ravel()}
    )


# -- DRL status of the whole registry (cached) -------------------------------------------------


#: Columns of :func:`drl_status`.
DRL_STATUS_COLUMNS: Final[tuple[str, ...]] = (
    "device_name",
    "standard_exam",
    "patient_group",
    "quantity",
    "n",
    "typical_value",
    "drl_value",
    "ratio_to_drl",
    "status",
    "drl_source",
)

#: Seconds a cached aggregate lives at most (changes that do not add a dose report,
#: study or alert — a re-mapping, a merge of devices — show after this).
CACHE_SECONDS: Final = 300.0


@dataclass
class AggregateCache:
    """Registry-wide aggregates computed once per registry state, for the pages.

    A value is keyed by its name and parameters plus :func:`kerma.db.dashboard.data_version`
    (highest dose report, study and alert ids: a new import or alert shows at once) and
    lives at most :data:`CACHE_SECONDS`. The overview's aggregates read every study
    (a GROUP BY over 10⁵ rows, or the DRL comparison over every sample: 0.2–1.5 s at
    10⁶ events, ``docs/web.md``); the cache lets every later request answer in a few
    milliseconds. Thread-safe: one computation at a time per cache.
    """

    seconds: float = CACHE_SECONDS
    _values: dict[Any, tuple[float, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, session: Session, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """Return the cached value of ``key`` for the registry's state, computing it when due."""
        full = (key, store.data_version(session))
        with self._lock:
            hit = self._values.get(full)
            now = time.monotonic()
            if hit is not None and now - hit[0] < self.seconds:
                return hit[1]
            value = compute()
            self._values = {k: v for k, v in self._values.items() if k[0] != key}
            self._values[full] = (time.monotonic(), value)
            return value

    def clear(self) -> None:
        """Forget every value (after a configuration change)."""
        with self._lock:
            self._values.clear()


def drl_status(
    session: Session,
    *,
    settings: Settings,
    rules_fingerprint: str = "",
    flt: StudyFilter | None = None,
) -> pd.DataFrame:
    """Return every room's typical value against the DRLs (:data:`DRL_STATUS_COLUMNS`).

    :func:`kerma.services.analytics.compare_drls` over the whole registry (or the
    studies of ``flt``: a site-restricted user's sites, issue #15) with the configured
    set, rows with a DRL only, highest ratio first.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the configured DRL set is unknown.
    """
    from kerma.services.analytics import compare_drls

    result = compare_drls(
        session,
        flt=flt,
        drl_set=settings.drl_set,
        drl_extra_paths=settings.drl_extra_paths,
        min_sample=settings.drl_min_sample,
        min_sample_mammography=settings.drl_min_sample_mammography,
        unknown_age=settings.drl_unknown_age,
    )
    frame = result.comparison
    frame = frame[frame["drl_value"].notna()] if len(frame) else frame
    frame = frame.reindex(columns=list(DRL_STATUS_COLUMNS))
    return frame.sort_values("ratio_to_drl", ascending=False, na_position="last", ignore_index=True)


@functools.lru_cache(maxsize=8)
def _drl_table(extra_paths: tuple[str, ...], drl_set: str) -> pd.DataFrame:
    """Return the selected DRL rows (packaged and site tables read once per process)."""
    return select_drls(load_drls(extra_paths=extra_paths), drl_set)


def selected_drls(settings: Settings) -> pd.DataFrame:
    """Return the DRL rows of the configured set (``Settings.drl_set``, site tables too).

    Read once per process and set (a copy is returned; the tables are packaged data or
    site files that change only with a restart).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the set is unknown or a site table unreadable.
    """
    paths = tuple(str(p) for p in settings.drl_extra_paths)
    return _drl_table(paths, settings.drl_set).copy()


# -- analysis of one standard exam -------------------------------------------------------------


@dataclass
class ExamAnalysis:
    """What the analysis page shows for one standard exam and quantity.

    Attributes
    ----------
    exam : str
        The standard exam.
    family : str
        Its modality family (``CT``, ``DX``, ``MG``, ``RF/XA``).
    quantity : str
        The quantity analysed (canonical unit in the name; :data:`kerma.units.QUANTITIES`).
    quantities : tuple of str
        The quantities offered for this family.
    n_samples : int
        Samples with a value of ``quantity`` (studies; projections for DX, views for MG).
    boxes : pandas.DataFrame
        Per room: ``device_name``, ``n``, ``min``, ``q1``, ``median``, ``q3``, ``max``,
        ``lower_fence``, ``upper_fence`` (Tukey's 1.5 IQR, clipped to the data), in the
        canonical unit.
    typical_value : float or None
        The local typical value: median of the room medians (ICRP 135 §2.6.1 compares
        the median of each room's distribution).
    drl_value, drl_source : float or None, str
        The national DRL of the exam for adults in the configured set, when one applies.
    comparison : pandas.DataFrame
        :func:`kerma.analysis.drl.compare_with_drls` rows of the exam and quantity.
    histogram : pandas.DataFrame
        ``bin_from``, ``bin_to``, ``n`` (log-spaced bins).
    monthly : pandas.DataFrame
        ``month``, ``n``, ``median`` per month of study date.
    scatter : pandas.DataFrame
        ``study_id``, ``device_name``, ``x`` (patient weight kg, or water-equivalent
        diameter mm for CT when ``x_axis`` says so), ``y`` (the quantity).
    x_axis : str
        ``patient_weight_kg`` or ``ssde_size_mm``.
    workload : pandas.DataFrame
        :func:`workload` of the exam's studies.
    """

    exam: str
    family: str
    quantity: str
    quantities: tuple[str, ...]
    n_samples: int
    boxes: pd.DataFrame
    typical_value: float | None
    drl_value: float | None
    drl_source: str
    comparison: pd.DataFrame
    histogram: pd.DataFrame
    monthly: pd.DataFrame
    scatter: pd.DataFrame
    x_axis: str
    workload: pd.DataFrame


def _boxes(samples: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Return the box statistics of ``quantity`` per room."""
    rows = []
    for room, values in samples.groupby("device_name", sort=True)[quantity]:
        v = values.dropna().to_numpy(dtype=float)
        if not len(v):
            continue
        q1, median, q3 = np.percentile(v, [25, 50, 75])
        iqr = q3 - q1
        rows.append(
            {
                "device_name": room,
                "n": len(v),
                "min": float(v.min()),
                "q1": float(q1),
                "median": float(median),
                "q3": float(q3),
                "max": float(v.max()),
                "lower_fence": float(v[v >= q1 - 1.5 * iqr].min()),
                "upper_fence": float(v[v <= q3 + 1.5 * iqr].max()),
            }
        )
    columns = ["device_name", "n", "min", "q1", "median", "q3", "max", "lower_fence", "upper_fence"]
    return pd.DataFrame(rows, columns=columns)


def _histogram(values: np.ndarray) -> pd.DataFrame:
    """Return log-spaced histogram bins of positive ``values`` (linear when a value ≤ 0)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return pd.DataFrame(columns=["bin_from", "bin_to", "n"])
    low, high = float(values.min()), float(values.max())
    if low > 0 and high > low:
        edges = np.logspace(np.log10(low), np.log10(high), HISTOGRAM_BINS + 1)
    else:
        edges = np.linspace(low, high if high > low else low + 1, HISTOGRAM_BINS + 1)
    counts, edges = np.histogram(values, bins=edges)
    return pd.DataFrame({"bin_from": edges[:-1], "bin_to": edges[1:], "n": counts})


def _family_of(samples: pd.DataFrame, exam: str) -> str:
    """Return the modality family most samples of ``exam`` have."""
    return str(samples["modality_family"].mode().iloc[0])


def analyse_exam(
    session: Session,
    *,
    exam: str,
    settings: Settings,
    quantity: str | None = None,
    flt: StudyFilter | None = None,
    scatter_limit: int | None = 2000,
) -> ExamAnalysis:
    """Return everything the analysis page shows for one standard exam.

    Parameters
    ----------
    exam : str
        Standard exam name (the sample's own; per projection for DX).
    settings : Settings
        DRL set, site DRL tables, minimum samples and unknown-age policy.
    quantity : str, optional
        One of :data:`ANALYSIS_QUANTITIES` of the exam's family (default: the first).
    flt : StudyFilter, optional
        Further study conditions (dates, rooms ...); ``standard_exams`` is set to ``exam``.
    scatter_limit : int, optional
        At most this many points in :attr:`ExamAnalysis.scatter` (a seeded random
        subset; the CSV of :func:`chart_frame` with ``scatter_limit=None`` has all).

    Returns
    -------
    ExamAnalysis

    Raises
    ------
    kerma.errors.NotFoundError
        When no sample is mapped to ``exam``.
    ValueError
        When ``quantity`` is not offered for the exam's family.
    """
    from kerma.services.analytics import MODALITY_FAMILIES, dose_samples

    flt = (flt or StudyFilter()).replace(standard_exams=(exam,))
    context = ("study_id", "device_id", "study_date", "patient_age_years", "patient_weight_kg")
    stored_family = store.exam_family(session, exam=exam)  # read one family's samples only
    families = (stored_family,) if stored_family in MODALITY_FAMILIES else MODALITY_FAMILIES
    samples = dose_samples(session, flt=flt, families=families, context=context)
    samples = samples[samples["standard_exam"] == exam] if len(samples) else samples
    if samples.empty:
        raise NotFoundError(f"No study is mapped to the standard exam {exam!r}.")
    family = _family_of(samples, exam)
    samples = samples[samples["modality_family"] == family]
    offered = ANALYSIS_QUANTITIES.get(family, ())
    quantity = quantity or offered[0]
    if quantity not in offered:
        raise ValueError(
            f"Unable to analyse {exam!r}: {quantity!r} is not a quantity of {family} exams; "
            f"use one of {', '.join(offered)}."
        )
    valued = samples[samples[quantity].notna()] if quantity in samples.columns else samples[:0]
    boxes = _boxes(valued, quantity)
    typical = float(boxes["median"].median()) if len(boxes) else None
    drls = selected_drls(settings)
    comparison = compare_with_drls(
        samples,
        drls,
        min_sample=settings.drl_min_sample,
        min_sample_mammography=settings.drl_min_sample_mammography,
        unknown_age=settings.drl_unknown_age,
    )
    if len(comparison):
        # the comparison names the DRL's quantity (dlp_mgycm, dap_gym2 ...); the page the
        # sample's column (ct_dlp_total_mgycm, dap_total_gym2 ...)
        drl_quantities = {
            drl_quantity
            for (drl_family, drl_quantity), column in DRL_QUANTITY_COLUMNS.items()
            if drl_family == family and column == quantity
        }
        comparison = comparison[comparison["quantity"].isin(drl_quantities)]
    adult = (
        comparison[
            (comparison.get("patient_group", pd.Series(dtype=object)) == "adult")
            & comparison["drl_value"].notna()
        ]
        if len(comparison)
        else comparison
    )
    drl_value = float(adult["drl_value"].iloc[0]) if len(adult) else None
    drl_source = str(adult["drl_source"].iloc[0]) if len(adult) else ""
    dates = pd.to_datetime(valued["study_date"])
    monthly = (
        valued.assign(month=dates.dt.strftime("%Y-%m"))
        .groupby("month")[quantity]
        .agg(n="count", median="median")
        .reset_index()
    )
    x_axis = "ssde_size_mm" if family == "CT" and "ssde_size_mm" in valued.columns else ""
    if not x_axis or valued[x_axis].notna().sum() == 0:
        x_axis = "patient_weight_kg"
    points = valued[valued[x_axis].notna()] if x_axis in valued.columns else valued[:0]
    if scatter_limit is not None and len(points) > scatter_limit:
        points = points.sample(scatter_limit, random_state=1)
    scatter = pd.DataFrame(
        {
            "study_id": points["study_id"].to_numpy(),
            "device_name": points["device_name"].to_numpy(),
            "x": pd.to_numeric(points[x_axis], errors="coerce").to_numpy(dtype=float)
            if len(points)
            else [],
            "y": points[quantity].to_numpy(dtype=float) if len(points) else [],
        }
    )
    return ExamAnalysis(
        exam=exam,
        family=family,
        quantity=quantity,
        quantities=offered,
        n_samples=len(valued),
        boxes=boxes,
        typical_value=typical,
        drl_value=drl_value,
        drl_source=drl_source,
        comparison=comparison.reset_index(drop=True),
        histogram=_histogram(valued[quantity].to_numpy(dtype=float)),
        monthly=monthly,
        scatter=scatter,
        x_axis=x_axis,
        workload=workload(session, flt=flt),
    )


def chart_frame(analysis: ExamAnalysis, chart: str) -> pd.DataFrame:
    """Return the data of one chart of the analysis page (:data:`CHARTS`) for a CSV.

    Raises
    ------
    kerma.errors.NotFoundError
        When ``chart`` is not one of :data:`CHARTS`.
    """
    if chart not in CHARTS:
        raise NotFoundError(f"No chart {chart!r}; charts are {', '.join(CHARTS)}.")
    frame: pd.DataFrame = getattr(analysis, chart)
    frame = frame.copy()
    frame.insert(0, "standard_exam", analysis.exam)
    if chart != "workload":
        frame.insert(1, "quantity", analysis.quantity)
    return frame


# -- standard-exam rule trial ------------------------------------------------------------------


@dataclass
class RuleTrial:
    """What a trial exam rule would map among the stored study descriptions.

    Attributes
    ----------
    rule : ExamRule
        The rule tried.
    matches : pandas.DataFrame
        Matching combinations: ``modality``, ``study_description``,
        ``requested_procedure_description``, ``procedure_reported``, ``standard_exam``
        (the stored mapping now), ``n_studies``; most frequent first.
    n_studies : int
        Studies the rule would match (among the combinations read).
    n_changed : int
        Of those, studies whose stored exam differs from the rule's.
    """

    rule: ExamRule
    matches: pd.DataFrame
    n_studies: int
    n_changed: int


def try_exam_rule(
    session: Session,
    *,
    exam: str,
    pattern: str,
    modality: str = "",
    field_name: str = "text",
    limit: int = 2000,
) -> RuleTrial:
    """Try a standard-exam rule against the stored study descriptions, saving nothing.

    The rule is built as a site rules file would hold it (``[[rule]]`` with ``exam``,
    ``modality`` and ``any = {field = pattern}``; ``docs/analysis.md``), so the result is
    what the rule would map at study level.

    Parameters
    ----------
    exam : str
        Standard exam the rule assigns.
    pattern : str
        Regular expression (case-insensitive, searched) on ``field_name``.
    modality : str, optional
        Regular expression the modality must fully match (default: any).
    field_name : str, optional
        A rule field (:data:`kerma.analysis.exams.RULE_FIELDS`; default ``text``: the
        study's descriptive fields joined).
    limit : int, optional
        The most frequent combinations read (one GROUP BY).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the pattern is not a regular expression, the field is unknown or the
        exam is empty.
    """
    if not exam.strip() or not pattern.strip():
        raise ConfigurationError("Unable to try the rule: give an exam name and a pattern.")
    raw: dict[str, Any] = {"name": "trial", "exam": exam.strip(), "level": "study"}
    raw["any"] = {field_name: pattern}
    if modality.strip():
        raw["modality"] = modality.strip()
    rule = _parse_rules({"rule": [raw]}, source="the trial form")[0]
    columns = [
        "modality",
        "study_description",
        "requested_procedure_description",
        "procedure_reported",
        "standard_exam",
        "n_studies",
    ]
    groups = pd.DataFrame.from_records(
        store.description_groups(session, limit=limit), columns=columns
    )
    hit = [
        match_exam(row, [rule], level="study")[0] is not None for row in groups.to_dict("records")
    ]
    matches = groups[pd.Series(hit, index=groups.index, dtype=bool)].reset_index(drop=True)
    changed = matches[matches["standard_exam"].fillna("") != rule.exam]
    return RuleTrial(
        rule=rule,
        matches=matches,
        n_studies=int(matches["n_studies"].sum()),
        n_changed=int(changed["n_studies"].sum()),
    )


# -- originals in the archive -------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """One dose report of a study as received (the archived original)."""

    dose_report_id: int
    sop_instance_uid: str
    kind: str
    received_at: dt.datetime | None
    source: str | None
    is_superseded: bool


def study_originals(session: Session, *, study_id: int) -> list[Original]:
    """Return the dose reports of a study, oldest first (their originals are archived)."""
    return [
        Original(int(r[0]), str(r[1]), str(r[2]), r[3], r[4], bool(r[5]))
        for r in store.study_reports(session, study_id=study_id)
    ]


def read_original(
    session: Session, *, settings: Settings, study_id: int, dose_report_id: int
) -> tuple[str, bytes]:
    """Return ``(file name, bytes)`` of a dose report's original, decrypted when encrypted.

    Raises
    ------
    kerma.errors.NotFoundError
        When the study has no such report, or its archive file is missing.
    kerma.errors.ConfigurationError, kerma.errors.ArchiveDecryptionError
        From :func:`kerma.services.keys.read_archived_file`.
    """
    from kerma.services.keys import read_archived_file

    for row in store.study_reports(session, study_id=study_id):
        if int(row[0]) == dose_report_id:
            path = Path(settings.archive_dir) / str(row[6])
            try:
                data = read_archived_file(settings, path)
            except FileNotFoundError as exc:
                raise NotFoundError(
                    f"The original of dose report {dose_report_id} is missing from the archive."
                ) from exc
            return f"{row[1]}.dcm", data
    raise NotFoundError(f"Study {study_id} has no dose report {dose_report_id}.")


def quantity_label(name: str) -> str:
    """Return the label with canonical unit of a quantity (``"DLP total (mGy·cm)"``)."""
    quantity = QUANTITIES.get(name)
    return f"{quantity.label} ({quantity.unit})" if quantity is not None else name


def exam_choices(
    session: Session, *, site_ids: tuple[int, ...] | None = None
) -> list[tuple[str, int]]:
    """Return the stored standard exams with their study counts (QA studies included),
    most frequent first (an index-only GROUP BY); ``site_ids``: of these sites only."""
    return store.exam_names(session, site_ids=site_ids)


def device_choices(
    session: Session, *, site_ids: tuple[int, ...] | None = None
) -> list[tuple[int, str]]:
    """Return ``(device id, display name)`` of every device (room), by name;
    ``site_ids``: the devices of these sites only (issue #15)."""
    return store.device_names(session, site_ids=site_ids)


def describe_sequence(values: Sequence[str]) -> str:
    """Return ``values`` joined with commas (for labels)."""
    return ", ".join(values)


# -- study detail --------------------------------------------------------------------------------


#: Columns of :func:`study_drl_comparison`.
STUDY_DRL_COLUMNS: Final[tuple[str, ...]] = (
    "standard_exam",
    "view",
    "patient_group",
    "quantity",
    "n",
    "typical_value",
    "drl_value",
    "ratio_to_drl",
    "status",
    "drl_exam",
    "drl_source",
)


def study_drl_comparison(session: Session, *, study_id: int, settings: Settings) -> pd.DataFrame:
    """Return one study's values against the DRLs of its exam (the configured set).

    The study's samples (:func:`kerma.analysis.frames.build_dose_samples` of its current
    events and summary) compared one by one (``min_sample=1``): ``typical_value`` is
    the study's own value (the median of its projections/views for DX and MG), so
    ``ratio_to_drl`` says how far this study lies from the national DRL. Columns
    :data:`STUDY_DRL_COLUMNS`; empty when the study is not mapped or no DRL applies.
    """
    from kerma.analysis.frames import build_dose_samples

    events = events_frame_for(session, study_id=study_id)
    if events.empty:
        return pd.DataFrame(columns=list(STUDY_DRL_COLUMNS))
    samples = build_dose_samples(events, include_non_patient=True)
    if samples.empty:
        return pd.DataFrame(columns=list(STUDY_DRL_COLUMNS))
    drls = selected_drls(settings)
    drls = drls[drls["modality_family"].isin(set(samples["modality_family"]))]
    comparison = compare_with_drls(
        samples, drls, min_sample=1, min_sample_mammography=1,
        unknown_age=settings.drl_unknown_age,
    )  # fmt: skip
    if comparison.empty:
        return pd.DataFrame(columns=list(STUDY_DRL_COLUMNS))
    comparison = comparison[comparison["drl_value"].notna()]
    return comparison.reindex(columns=list(STUDY_DRL_COLUMNS)).reset_index(drop=True)


def events_frame_for(session: Session, *, study_id: int) -> pd.DataFrame:
    """Return the current events of one study as the ``Registry.events()`` frame."""
    from kerma.services.studies import EVENT_COLUMNS, _typed, iter_events

    flt = StudyFilter(include_non_patient=True)
    rows = list(iter_events(session, flt=flt, study_ids=[study_id]))
    frame = pd.DataFrame.from_records(rows, columns=list(EVENT_COLUMNS))
    return _typed(frame)


def study_alerts(session: Session, *, study_id: int) -> pd.DataFrame:
    """Return the alerts of one study (:func:`kerma.services.alerts.list_alerts` columns)."""
    from kerma.services.alerts import list_alerts

    return list_alerts(session, flt=AlertFilter(study_id=study_id), limit=1000)


def study_skin_dose(session: Session, *, study_id: int) -> dict[str, Any] | None:
    """Return the stored skin dose estimate of a study (``kerma skin``), or ``None``.

    Keys :data:`kerma.db.skin.ESTIMATE_COLUMNS`: ``method``, ``peak_skin_dose_mgy``
    (mGy), ``dose_rp_total_gy`` (Gy), ``reason``, ``map_path`` (the skin-dose map,
    relative to the archive folder, when one was computed) ...
    """
    from kerma.db.skin import ESTIMATE_COLUMNS, estimate_rows

    rows = estimate_rows(session, study_ids=[study_id])
    return dict(zip(ESTIMATE_COLUMNS, rows[0], strict=True)) if rows else None


def read_skin_map(session: Session, *, settings: Settings, study_id: int) -> tuple[str, bytes]:
    """Return ``(file name, bytes)`` of a study's stored skin-dose map.

    Raises
    ------
    kerma.errors.NotFoundError
        When the study has no stored map, or its file is missing.
    """
    estimate = study_skin_dose(session, study_id=study_id)
    if not estimate or not estimate.get("map_path"):
        raise NotFoundError(f"Study {study_id} has no stored skin-dose map.")
    path = Path(settings.archive_dir) / str(estimate["map_path"])
    if not path.is_file():
        raise NotFoundError(f"The skin-dose map of study {study_id} is missing from the archive.")
    return path.name, path.read_bytes()


def event_columns(events: Sequence[dict[str, Any]]) -> list[str]:
    """Return the event fields that hold a value in at least one of ``events`` (in order).

    Context columns shown elsewhere on the study page are left out.
    """
    from kerma.services.studies import EVENT_CONTEXT_COLUMNS

    skip = set(EVENT_CONTEXT_COLUMNS) - {"event_id"}
    skip.add("xray_sources")
    if not events:
        return []
    return [
        name
        for name in events[0]
        if name not in skip and any(e.get(name) not in (None, "") for e in events)
    ]

"""Descriptive dose statistics for any grouping and filter.

Percentiles are linear-interpolation percentiles, ``numpy.percentile(x, q,
method="linear")`` (numpy's default, Hyndman & Fan definition 7); pandas
``Series.quantile`` uses the same definition by default and is what this module calls
(the tests check the two agree). Non-patient (QA/phantom) studies are excluded unless
asked for.

This module works on DataFrames only. May import ``kerma.records``, ``kerma.units``,
``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Final

import numpy as np
import pandas as pd

from kerma.analysis.frames import SAMPLE_QUANTITIES
from kerma.units import QUANTITIES

logger = logging.getLogger(__name__)

#: Statistic columns of :func:`dose_statistics`, in order.
STAT_COLUMNS: Final[tuple[str, ...]] = (
    "n",
    "mean",
    "std",
    "min",
    "p25",
    "median",
    "p75",
    "p95",
    "max",
)

#: Percentiles reported (as fractions).
PERCENTILES: Final[dict[str, float]] = {"p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95}

#: Period codes accepted for grouping by time (pandas period aliases).
PERIODS: Final[dict[str, str]] = {"month": "M", "quarter": "Q", "year": "Y", "week": "W"}


def filter_samples(
    frame: pd.DataFrame,
    *,
    date_from: date | datetime | str | None = None,
    date_to: date | datetime | str | None = None,
    modality_family: str | Sequence[str] | None = None,
    device: str | Sequence[str] | None = None,
    standard_exam: str | Sequence[str] | None = None,
    age_years: tuple[float | None, float | None] | None = None,
    weight_kg: tuple[float | None, float | None] | None = None,
    sex: str | None = None,
    include_non_patient: bool = False,
) -> pd.DataFrame:
    """Return the rows of a sample (or events/studies) frame that pass every filter.

    Parameters
    ----------
    frame : pandas.DataFrame
        Any Kerma frame with the filtered columns (``study_date`` datetime64,
        ``modality_family``, ``device_id``/``device_name``, ``standard_exam``,
        ``patient_age_years``, ``patient_weight_kg``, ``patient_sex``,
        ``is_non_patient``).
    date_from, date_to : date or str, optional
        Inclusive study-date range.
    modality_family : str or sequence of str, optional
        ``CT``, ``DX``, ``MG``, ``RF/XA``.
    device : str or sequence of str, optional
        Device id or device name.
    standard_exam : str or sequence of str, optional
        Standard exam name(s).
    age_years, weight_kg : tuple of (float or None, float or None), optional
        Band ``(min, max)``, lower-inclusive, upper-exclusive (the convention of the
        paediatric DRL tables); ``None`` leaves that side open. Rows with an unknown
        age/weight are dropped when the band is given.
    sex : str, optional
        ``M``, ``F`` or ``O``.
    include_non_patient : bool, optional
        Keep rows flagged ``is_non_patient`` (default: drop them).

    Returns
    -------
    pandas.DataFrame
        The filtered rows (a copy), same columns.
    """
    mask = pd.Series(True, index=frame.index)
    if not include_non_patient and "is_non_patient" in frame.columns:
        mask &= ~frame["is_non_patient"].fillna(False).astype(bool)
    if date_from is not None:
        mask &= frame["study_date"] >= pd.Timestamp(date_from)
    if date_to is not None:
        mask &= frame["study_date"] <= pd.Timestamp(date_to)

    def isin(column: str, values: str | Sequence[str]) -> pd.Series:
        wanted = [values] if isinstance(values, str) else list(values)
        return frame[column].astype(str).isin(wanted)

    if modality_family is not None:
        mask &= isin("modality_family", modality_family)
    if device is not None:
        by_name = isin("device_name", device) if "device_name" in frame.columns else False
        mask &= isin("device_id", device) | by_name
    if standard_exam is not None:
        mask &= isin("standard_exam", standard_exam)
    for column, band in (("patient_age_years", age_years), ("patient_weight_kg", weight_kg)):
        if band is None:
            continue
        low, high = band
        values = pd.to_numeric(frame[column], errors="coerce")
        mask &= values.notna()
        if low is not None:
            mask &= values >= low
        if high is not None:
            mask &= values < high
    if sex is not None:
        mask &= frame["patient_sex"].astype(str).str.upper() == sex.upper()
    return frame[mask].copy()


def add_period(
    frame: pd.DataFrame, period: str = "month", *, column: str = "period"
) -> pd.DataFrame:
    """Return ``frame`` with a ``period`` column (e.g. ``2026-03``, ``2026Q1``) from ``study_date``.

    Parameters
    ----------
    period : {"month", "quarter", "year", "week"} or pandas period alias, optional
    column : str, optional
        Name of the new column.
    """
    out = frame.copy()
    freq = PERIODS.get(period, period)
    out[column] = pd.to_datetime(out["study_date"]).dt.to_period(freq).astype(str)
    return out


def dose_statistics(
    frame: pd.DataFrame,
    by: Sequence[str],
    quantities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return n, mean, std, min, p25, median, p75, p95 and max per group and quantity.

    Parameters
    ----------
    frame : pandas.DataFrame
        A sample frame (:func:`kerma.analysis.frames.build_dose_samples`) or any frame
        with the grouping and quantity columns; filter it first with
        :func:`filter_samples`. Use :func:`add_period` to group by month/quarter.
    by : sequence of str
        Grouping columns, e.g. ``["standard_exam", "device_name"]``, ``["period"]``,
        ``["acquisition_protocol"]``; empty for one overall group.
    quantities : sequence of str, optional
        Numeric columns to describe; default: every column of
        ``frames.SAMPLE_QUANTITIES`` present with at least one value.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (group, quantity): the ``by`` columns, ``quantity``,
        ``unit`` (the quantity's canonical unit, :data:`kerma.units.QUANTITIES`), ``n``
        (non-missing values), ``mean``, ``std`` (sample, ddof=1), ``min``, ``p25``,
        ``median``, ``p75``, ``p95``, ``max``, all in that unit. Groups where a quantity
        has no value are left out.
    """
    by = list(by)
    if quantities is None:
        quantities = [q for q in SAMPLE_QUANTITIES if q in frame.columns and frame[q].notna().any()]
    parts = []
    for quantity in quantities:
        data = frame[[*by, quantity]].copy()
        data[quantity] = pd.to_numeric(data[quantity], errors="coerce")
        data = data.dropna(subset=[quantity])
        if data.empty:
            continue
        for column in by:
            # a missing group key (an unmapped exam) is a group of its own: pandas joins
            # of NaN keys would lose its percentiles
            if data[column].isna().any() and not pd.api.types.is_numeric_dtype(data[column]):
                label = "(not mapped)" if column == "standard_exam" else "(unknown)"
                data[column] = data[column].astype(object).where(data[column].notna(), label)
        if by:
            grouped = data.groupby(by, dropna=False, sort=True)[quantity]
        else:
            grouped = data.assign(_all=0).groupby("_all")[quantity]
        table = grouped.agg(["count", "mean", "std", "min", "max"]).rename(columns={"count": "n"})
        quantiles = grouped.quantile(list(PERCENTILES.values())).unstack()
        quantiles.columns = list(PERCENTILES)
        table = table.join(quantiles).reset_index()
        if not by:
            table = table.drop(columns="_all")
        table.insert(len(by), "quantity", quantity)
        known = QUANTITIES.get(quantity)
        table.insert(len(by) + 1, "unit", known.unit if known else "")
        parts.append(table[[*by, "quantity", "unit", *STAT_COLUMNS]])
    if not parts:
        return pd.DataFrame(columns=[*by, "quantity", "unit", *STAT_COLUMNS])
    out = pd.concat(parts, ignore_index=True)
    out["n"] = out["n"].astype(int)
    return out


def percentile(values: pd.Series | np.ndarray, q: float) -> float:
    """Return the linear-interpolation percentile ``q`` (0–100) of ``values``, NaN ignored."""
    array = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    if array.size == 0:
        return float("nan")
    return float(np.percentile(array, q, method="linear"))

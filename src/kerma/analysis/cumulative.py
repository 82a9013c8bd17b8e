"""Cumulative dose per pseudonymous patient over a rolling window.

For each patient pseudonym, the studies whose date lies in the window
``(as_of − window_days, as_of]`` are summed: number of CT exams, CT DLP (mGy·cm), CT
effective dose (mSv; k × DLP, a population-level estimate, see
:mod:`kerma.analysis.effective_dose`), fluoroscopy/interventional Ka,r (Gy; each
study's larger plane) and KAP (Gy·m²), canonical units as everywhere. ``as_of``
defaults to the latest study date in the data; the window length defaults to 365 days
(``Settings.cumulative_window_days``). The per-study trailing
window sums are also available (:func:`rolling_cumulative_dose`), so the highest
365-day total of each patient can be found.

This module works on DataFrames only. May import ``kerma.records``, ``kerma.units``,
``kerma.errors`` and ``kerma.analysis``. At scale the same sums run in SQL
(:func:`kerma.services.analytics.cumulative_dose`); this is the reference on frames.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Final

import pandas as pd

logger = logging.getLogger(__name__)

#: Per-study columns summed over the window.
_SUMMED: Final[dict[str, str]] = {
    "ct_dlp_total_mgycm": "ct_dlp_total_mgycm",
    "effective_dose_msv": "ct_effective_dose_msv",
    "dose_rp_total_gy": "fluoro_studies_dose_rp_total_gy",
    "dap_total_gym2": "fluoro_studies_dap_total_gym2",
}

#: Families whose studies contribute each summed column.
_FAMILY_OF_SUM: Final[dict[str, str]] = {
    "ct_dlp_total_mgycm": "CT",
    "effective_dose_msv": "CT",
    "dose_rp_total_gy": "RF/XA",
    "dap_total_gym2": "RF/XA",
}

CUMULATIVE_COLUMNS: Final[tuple[str, ...]] = (
    "patient_pseudonym",
    "window_start",
    "window_end",
    "number_of_studies",
    "number_of_ct_exams",
    "ct_dlp_total_mgycm",
    "ct_effective_dose_msv",
    "number_of_fluoro_studies",
    "fluoro_studies_dose_rp_total_gy",
    "fluoro_studies_dap_total_gym2",
)


def _per_study(samples: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (patient, study) with CT and fluoroscopy totals."""
    data = samples[samples["patient_pseudonym"].notna()].copy()
    for column in _SUMMED:
        if column not in data.columns:
            data[column] = float("nan")
        data[column] = pd.to_numeric(data[column], errors="coerce").where(
            data["modality_family"] == _FAMILY_OF_SUM[column]
        )
    data["is_ct"] = data["modality_family"] == "CT"
    data["is_fluoro"] = data["modality_family"] == "RF/XA"
    grouped = data.groupby(["patient_pseudonym", "study_id"], sort=False)
    per_study = grouped.agg(
        study_date=("study_date", "first"),
        is_ct=("is_ct", "any"),
        is_fluoro=("is_fluoro", "any"),
        **{column: (column, lambda s: s.sum(min_count=1)) for column in _SUMMED},
    ).reset_index()
    per_study["study_date"] = pd.to_datetime(per_study["study_date"])
    return per_study


def cumulative_dose(
    samples: pd.DataFrame,
    *,
    window_days: int = 365,
    as_of: date | datetime | str | None = None,
) -> pd.DataFrame:
    """Return each patient's cumulative dose over the window ending at ``as_of``.

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame with effective dose
        (:func:`kerma.analysis.frames.build_dose_samples` then
        :func:`kerma.analysis.effective_dose.ct_effective_dose`): ``patient_pseudonym``,
        ``study_id``, ``study_date`` (datetime64), ``modality_family``,
        ``ct_dlp_total_mgycm``, ``effective_dose_msv``, ``dose_rp_total_gy``,
        ``dap_total_gym2``. Non-patient studies should already be excluded.
    window_days : int, optional
        Window length in days (default 365).
    as_of : date or str, optional
        Last day of the window (inclusive); default the latest study date.

    Returns
    -------
    pandas.DataFrame
        One row per patient with at least one study in the window:
        ``patient_pseudonym``, ``window_start`` and ``window_end`` (dates, inclusive),
        ``number_of_studies``, ``number_of_ct_exams``, ``ct_dlp_total_mgycm``
        (mGy·cm), ``ct_effective_dose_msv`` (mSv), ``number_of_fluoro_studies``,
        ``fluoro_studies_dose_rp_total_gy`` (Gy), ``fluoro_studies_dap_total_gym2``
        (Gy·m²); sorted by effective dose, then Ka,r, descending, then pseudonym.
    """
    per_study = _per_study(samples)
    if per_study.empty:
        return pd.DataFrame(columns=list(CUMULATIVE_COLUMNS))
    end = pd.Timestamp(as_of) if as_of is not None else per_study["study_date"].max()
    start = end - pd.Timedelta(days=window_days - 1)
    window = per_study[(per_study["study_date"] >= start) & (per_study["study_date"] <= end)]
    grouped = window.groupby("patient_pseudonym")
    out = grouped.agg(
        number_of_studies=("study_id", "nunique"),
        number_of_ct_exams=("is_ct", "sum"),
        number_of_fluoro_studies=("is_fluoro", "sum"),
        **{name: (column, lambda s: s.sum(min_count=1)) for column, name in _SUMMED.items()},
    ).reset_index()
    out["window_start"] = start.date()
    out["window_end"] = end.date()
    out = out[list(CUMULATIVE_COLUMNS)]
    return out.sort_values(
        ["ct_effective_dose_msv", "fluoro_studies_dose_rp_total_gy", "patient_pseudonym"],
        ascending=[False, False, True],
        na_position="last",
        ignore_index=True,
    )


def rolling_cumulative_dose(samples: pd.DataFrame, *, window_days: int = 365) -> pd.DataFrame:
    """Return, for every study, the patient's totals over the trailing window ending that day.

    Parameters
    ----------
    samples : pandas.DataFrame
        As for :func:`cumulative_dose`.
    window_days : int, optional
        Window length in days (default 365), ending at (and including) the study date.

    Returns
    -------
    pandas.DataFrame
        One row per (patient, study), in date order: ``patient_pseudonym``,
        ``study_id``, ``study_date``, ``number_of_ct_exams``, ``ct_dlp_total_mgycm``,
        ``ct_effective_dose_msv``, ``fluoro_studies_dose_rp_total_gy``,
        ``fluoro_studies_dap_total_gym2`` (sums over the trailing window, same units as
        :func:`cumulative_dose`).
    """
    per_study = _per_study(samples).sort_values(["patient_pseudonym", "study_date"])
    if per_study.empty:
        return pd.DataFrame(columns=["patient_pseudonym", "study_id", "study_date"])
    per_study["n_ct"] = per_study["is_ct"].astype(float)
    columns = ["n_ct", *_SUMMED]
    rolled = (
        per_study.set_index("study_date")
        .groupby("patient_pseudonym")[columns]
        .rolling(f"{window_days}D")
        .sum()
        .reset_index()
    )
    out = per_study[["patient_pseudonym", "study_id", "study_date"]].reset_index(drop=True)
    rolled = rolled.reset_index(drop=True)
    out["number_of_ct_exams"] = rolled["n_ct"].astype(int)
    for column, name in _SUMMED.items():
        out[name] = rolled[column]
    return out

"""Comparison with diagnostic reference levels by the method of ICRP Publication 135.

ICRP Publication 135 (Diagnostic Reference Levels in Medical Imaging, 2017):

* the **typical value** of a room (X-ray device) for an examination is the **median**
  of the DRL quantity over a sample of patients, computed only when the sample is
  large enough (Kerma: ``Settings.drl_min_sample``, 20 by default, and
  ``Settings.drl_min_sample_mammography``, 50, following ICRP 135's recommendation
  of at least 20 patients, 50 for mammography);
* the typical value is compared with the **national DRL** for that examination, in
  the DRL table's quantity and unit (CTDIvol in mGy, DLP in mGy·cm, KAP in Gy·cm²,
  AGD in mGy); a typical value above the DRL calls for a review of the procedure;
* a **local DRL** is the **75th percentile of the room medians** of the rooms of a
  facility or group.

Kerma also flags rooms whose typical value exceeds the DRL in several **consecutive
periods** (``Settings.drl_consecutive_periods``, 2 quarters by default).

Per-exam quantities come from :mod:`kerma.analysis.frames`: CT DLP per complete
examination (the DRL tables' "per complete examination"); CT CTDIvol as the per-study
mean over the non-localiser irradiation events (the UK NDRL defines CTDIvol "per
sequence": the study mean of sequence CTDIvols is Kerma's choice, documented in
``docs/analysis.md``); radiography KAP per projection; fluoroscopy KAP per procedure;
mammography AGD per view. Paediatric CT samples (age below ``adult_age_years``) are
compared with the paediatric table's age or weight band that contains the patient.

This module works on DataFrames only; it must not import ``kerma.db``, ``kerma.web``
or ``kerma.cli``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from kerma.analysis.frames import DRL_QUANTITY_COLUMNS, PRIMARY_QUANTITY, SAMPLE_QUANTITIES
from kerma.analysis.reference import QUANTITY_UNITS
from kerma.analysis.stats import add_period

logger = logging.getLogger(__name__)

#: Age (years) from which the adult DRL tables apply; below it, the paediatric ones.
ADULT_AGE_YEARS: Final = 18.0

STATUS_ABOVE: Final = "above"
STATUS_BELOW: Final = "below"
STATUS_INSUFFICIENT: Final = "insufficient sample"
STATUS_NO_DRL: Final = "no DRL in set"

#: Columns of :func:`compare_with_drls`.
COMPARISON_COLUMNS: Final[tuple[str, ...]] = (
    "standard_exam",
    "clinical_indication",
    "patient_group",
    "band_label",
    "view",
    "device_id",
    "device_name",
    "quantity",
    "unit",
    "n",
    "min_sample",
    "typical_value",
    "drl_value",
    "ratio_to_drl",
    "status",
    "drl_region",
    "drl_source",
    "drl_year",
    "drl_status",
    "drl_verification",
    "source_ref",
)


def _band_mask(samples: pd.DataFrame, drl: pd.Series, adult_age_years: float) -> pd.Series:
    """Return which samples a DRL row applies to (adult/paediatric, band, view)."""
    age = pd.to_numeric(samples.get("patient_age_years"), errors="coerce")
    if drl["patient_group"] == "paediatric":
        mask = age.notna() & (age < adult_age_years)
        grouping = drl.get("band_grouping")
        column = {"age": "patient_age_years", "weight": "patient_weight_kg"}.get(str(grouping))
        if column is not None:
            values = pd.to_numeric(samples.get(column), errors="coerce")
            mask &= values.notna()
            if pd.notna(drl["band_min"]):
                mask &= values >= drl["band_min"]
            if pd.notna(drl["band_max"]):
                mask &= values < drl["band_max"]
    else:
        # Unknown age counts as adult: most adult RDSRs carry no age problem, and the
        # adult table is the default comparison.
        mask = age.isna() | (age >= adult_age_years)
    if drl.get("band_grouping") == "compressed breast thickness":
        thickness = pd.to_numeric(samples.get("compression_thickness_mm"), errors="coerce")
        mask &= thickness.between(drl["band_min"], drl["band_max"], inclusive="both")
    view = drl.get("view")
    if isinstance(view, str) and view:
        mask &= samples.get("view", pd.Series(None, index=samples.index)) == view
    return mask.fillna(False).astype(bool)


def _room_medians(subset: pd.DataFrame, column: str, min_sample: int) -> pd.DataFrame:
    """Return n and median per room (``device_id``) of ``column``."""
    data = subset[["device_id", "device_name", column]].dropna(subset=[column])
    if data.empty:
        return pd.DataFrame(columns=["device_id", "device_name", "n", "typical_value"])
    grouped = data.groupby("device_id", dropna=False, sort=True)
    out = pd.DataFrame(
        {
            "device_name": grouped["device_name"].first(),
            "n": grouped[column].count(),
            "typical_value": grouped[column].median(),
        }
    ).reset_index()
    out.loc[out["n"] < min_sample, "typical_value"] = np.nan
    return out


def compare_with_drls(
    samples: pd.DataFrame,
    drls: pd.DataFrame,
    *,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    adult_age_years: float = ADULT_AGE_YEARS,
    include_no_drl: bool = True,
) -> pd.DataFrame:
    """Return, per exam, room and DRL, the room's typical value and its DRL status.

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame (:func:`kerma.analysis.frames.build_dose_samples`), already
        filtered (dates, devices); rows without ``standard_exam`` are ignored.
    drls : pandas.DataFrame
        Selected DRL rows (:func:`kerma.analysis.reference.select_drls`).
    min_sample : int, optional
        Minimum sample per room and exam (ICRP 135: 20; ``Settings.drl_min_sample``).
    min_sample_mammography : int, optional
        Minimum for mammography (ICRP 135: 50).
    adult_age_years : float, optional
        Age from which adult DRLs apply (default 18); younger patients are compared
        with the paediatric rows whose band contains their age or weight.
    include_no_drl : bool, optional
        Also list exams and rooms that have samples but no DRL in the selected set
        (status ``"no DRL in set"``, in the family's main quantity).

    Returns
    -------
    pandas.DataFrame
        One row per (DRL row, room): ``standard_exam``, ``clinical_indication``,
        ``patient_group``, ``band_label``, ``view``, ``device_id``, ``device_name``,
        ``quantity`` (``dlp_mgycm``, ``ctdivol_mgy``, ``kap_gycm2``, ``agd_mgy``),
        ``unit``, ``n`` (samples), ``min_sample``, ``typical_value`` (room median, in
        ``unit``; NaN when the sample is too small), ``drl_value``, ``ratio_to_drl``,
        ``status`` (``"above"``, ``"below"`` (at or below), ``"insufficient
        sample"``, ``"no DRL in set"``), ``drl_region``, ``drl_source``, ``drl_year``,
        ``drl_status``, ``drl_verification``, ``source_ref`` (keys of
        ``kerma/reference/SOURCES.md``).
    """
    samples = samples[samples["standard_exam"].notna()]
    rows: list[pd.DataFrame] = []
    compared: set[str] = set()
    for _, drl in drls.iterrows():
        family = str(drl["modality_family"])
        column = DRL_QUANTITY_COLUMNS.get((family, str(drl["quantity"])))
        if column is None or column not in samples.columns:
            continue
        subset = samples[
            (samples["modality_family"] == family)
            & (samples["standard_exam"] == drl["standard_exam"])
        ]
        if subset.empty:
            continue
        compared.add(str(drl["standard_exam"]))
        subset = subset[_band_mask(subset, drl, adult_age_years)]
        threshold = min_sample_mammography if family == "MG" else min_sample
        rooms = _room_medians(subset, column, threshold)
        if rooms.empty:
            continue
        rooms["min_sample"] = threshold
        rooms["drl_value"] = float(drl["drl_value"])
        for name in ("standard_exam", "clinical_indication", "patient_group", "band_label"):
            rooms[name] = drl[name]
        rooms["view"] = drl["view"] if isinstance(drl["view"], str) else ""
        rooms["quantity"] = drl["quantity"]
        rooms["unit"] = drl["unit"]
        for name in ("drl_region", "drl_source", "drl_year", "source_ref"):
            rooms[name] = drl[name]
        rooms["drl_status"] = drl["status"]
        rooms["drl_verification"] = drl["verification"]
        rows.append(rooms)
    if include_no_drl:
        rows.extend(_rooms_without_drl(samples, compared, min_sample, min_sample_mammography))
    if not rows:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    out = pd.concat(rows, ignore_index=True)
    out["ratio_to_drl"] = out["typical_value"] / out["drl_value"]
    out["status"] = np.select(
        [
            out["drl_value"].isna(),
            out["typical_value"].isna(),
            out["typical_value"] > out["drl_value"],
        ],
        [STATUS_NO_DRL, STATUS_INSUFFICIENT, STATUS_ABOVE],
        default=STATUS_BELOW,
    )
    for name in COMPARISON_COLUMNS:
        if name not in out.columns:
            out[name] = np.nan
    for name in ("clinical_indication", "band_label", "view"):
        out[name] = out[name].fillna("")
    out = out[list(COMPARISON_COLUMNS)]
    return out.sort_values(
        ["standard_exam", "quantity", "patient_group", "band_label", "device_name"],
        ignore_index=True,
    )


def _rooms_without_drl(
    samples: pd.DataFrame, compared: set[str], min_sample: int, min_sample_mammography: int
) -> list[pd.DataFrame]:
    """Return room medians of the main quantity for exams with no DRL in the set."""
    rows = []
    rest = samples[~samples["standard_exam"].isin(compared)]
    for (family, exam), subset in rest.groupby(["modality_family", "standard_exam"]):
        quantity = PRIMARY_QUANTITY.get(str(family))
        column = DRL_QUANTITY_COLUMNS.get((str(family), quantity or ""))
        if column is None or column not in subset.columns:
            continue
        threshold = min_sample_mammography if family == "MG" else min_sample
        rooms = _room_medians(subset, column, threshold)
        if rooms.empty:
            continue
        rooms["standard_exam"] = exam
        rooms["quantity"] = quantity
        rooms["unit"] = QUANTITY_UNITS[str(quantity)]
        rooms["min_sample"] = threshold
        rooms["drl_value"] = np.nan
        rooms["patient_group"] = ""
        rows.append(rooms)
    return rows


def local_drls(
    samples: pd.DataFrame,
    *,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    quantities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return local DRLs: the 75th percentile of room medians per exam (ICRP 135).

    Only rooms whose sample reaches the minimum contribute a median. The percentile is
    ``numpy.percentile(medians, 75, method="linear")``. With a single room the local
    DRL equals that room's median (ICRP 135 then speaks of a typical value; the
    ``n_rooms`` column shows it).

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame (:func:`kerma.analysis.frames.build_dose_samples`).
    min_sample, min_sample_mammography : int, optional
        Minimum sample per room (ICRP 135: 20, mammography 50).
    quantities : sequence of str, optional
        Sample columns (default: every ``SAMPLE_QUANTITIES`` column with data).

    Returns
    -------
    pandas.DataFrame
        One row per (``modality_family``, ``standard_exam``, ``quantity``):
        ``unit``, ``n_rooms`` (rooms with a sufficient sample), ``n`` (their samples),
        ``local_drl`` (in ``unit``), ``median_of_room_medians``.
    """
    if quantities is None:
        quantities = [q for q in SAMPLE_QUANTITIES if q in samples.columns]
    rows = []
    data = samples[samples["standard_exam"].notna()]
    for (family, exam), subset in data.groupby(["modality_family", "standard_exam"]):
        threshold = min_sample_mammography if family == "MG" else min_sample
        for quantity in quantities:
            if subset[quantity].notna().sum() == 0:
                continue
            rooms = _room_medians(subset, quantity, threshold).dropna(subset=["typical_value"])
            if rooms.empty:
                continue
            medians = rooms["typical_value"].to_numpy(dtype=float)
            rows.append(
                {
                    "modality_family": family,
                    "standard_exam": exam,
                    "quantity": quantity,
                    "unit": SAMPLE_QUANTITIES.get(quantity, ""),
                    "n_rooms": len(medians),
                    "n": int(rooms["n"].sum()),
                    "local_drl": float(np.percentile(medians, 75, method="linear")),
                    "median_of_room_medians": float(np.median(medians)),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "modality_family",
            "standard_exam",
            "quantity",
            "unit",
            "n_rooms",
            "n",
            "local_drl",
            "median_of_room_medians",
        ],
    )


def compare_by_period(
    samples: pd.DataFrame,
    drls: pd.DataFrame,
    *,
    period: str = "quarter",
    consecutive: int = 2,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    adult_age_years: float = ADULT_AGE_YEARS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the DRL comparison per period and the rooms consistently above the DRL.

    Parameters
    ----------
    samples, drls : pandas.DataFrame
        As for :func:`compare_with_drls`.
    period : {"month", "quarter", "year"}, optional
        Length of a period (default quarter).
    consecutive : int, optional
        Number of consecutive periods above the DRL that make a room "consistently
        above" (``Settings.drl_consecutive_periods``, default 2). Periods are
        consecutive when they are adjacent in the calendar; a period with an
        insufficient sample or without data breaks the run.

    Returns
    -------
    tuple of pandas.DataFrame
        ``per_period``: the :func:`compare_with_drls` columns plus ``period``;
        ``summary``: one row per (exam, DRL row, room, quantity) with
        ``periods_above`` (count), ``longest_run_above``, ``last_period``,
        ``last_status`` and ``consistently_above`` (bool: longest run ≥
        ``consecutive``).
    """
    with_period = add_period(samples, period)
    parts = []
    for label, subset in with_period.groupby("period", sort=True):
        compared = compare_with_drls(
            subset,
            drls,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            adult_age_years=adult_age_years,
            include_no_drl=False,
        )
        compared.insert(0, "period", label)
        parts.append(compared)
    if not parts:
        empty = pd.DataFrame(columns=["period", *COMPARISON_COLUMNS])
        return empty, pd.DataFrame()
    per_period = pd.concat(parts, ignore_index=True)
    freq = {"month": "M", "quarter": "Q", "year": "Y"}.get(period, period)
    per_period["_ordinal"] = [pd.Period(p, freq=freq).ordinal for p in per_period["period"]]
    key = ["standard_exam", "clinical_indication", "patient_group", "band_label", "view"]
    key += ["device_id", "device_name", "quantity", "drl_value"]
    summary_rows = []
    for group_key, group in per_period.groupby(key, dropna=False, sort=True):
        group = group.sort_values("_ordinal")
        above = group.loc[group["status"] == STATUS_ABOVE, "_ordinal"].to_list()
        longest = run = 0
        previous: int | None = None
        for ordinal in above:
            run = run + 1 if previous is not None and ordinal == previous + 1 else 1
            longest = max(longest, run)
            previous = ordinal
        summary_rows.append(
            {
                **dict(zip(key, group_key, strict=True)),
                "periods_above": len(above),
                "longest_run_above": longest,
                "last_period": group["period"].iloc[-1],
                "last_status": group["status"].iloc[-1],
                "consistently_above": longest >= consecutive,
            }
        )
    return per_period.drop(columns="_ordinal"), pd.DataFrame(summary_rows)

"""Effective dose for CT as k × DLP: a population-level estimate, never a patient dose.

E (mSv) = k (mSv per mGy·cm) × DLP (mGy·cm), with k chosen by body region (from the
standard exam) and age from ``kerma/reference/ct_effective_dose_k_factors.csv``. Every
value carries the k used and that row's source, ICRP basis and verification grade.

k-sets (``k_set``):

* ``"ICRP 103"`` (default): Lee C et al., Med Phys 2012;39(4):2129-2146, Table XII,
  ICRP 103 columns (ages 0, 1, 5, 10, 15, adult; 80/100/120 kVp; verification
  ``primary``); for body regions that table lacks (neck, abdomen, pelvis, trunk) the
  ICRP 103 adult coefficients tabulated on radclass.mudr.org (commonly attributed to
  Deak et al. Radiology 2010; ``secondary``).
* ``"ICRP 60"``: EUR 16262 / AAPM Report 96 after Shrimpton et al. (ages 0, 1, 5, 10,
  adult; the coefficients most dose-monitoring software uses).

No effective dose is computed for projection radiography, fluoroscopy or mammography:
no sourced E/KAP or E/AGD coefficient table ships with Kerma
(``kerma/reference/dx_mg_effective_dose.md``).

This module works on DataFrames only; it must not import ``kerma.db``, ``kerma.web``
or ``kerma.cli``.
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
import pandas as pd

from kerma.analysis.exams import split_indication_exam
from kerma.analysis.reference import load_k_factors

logger = logging.getLogger(__name__)

#: Label of the method written beside every value.
METHOD: Final = "k × DLP (population-level estimate for a reference person; not a patient dose)"

#: Why other modalities have no effective dose.
NO_COEFFICIENT_NOTE: Final = (
    "no effective dose: no sourced conversion coefficients for radiography, "
    "fluoroscopy or mammography ship with Kerma (reference/dx_mg_effective_dose.md)"
)

#: Standard exam -> k-factor body regions to try, in order.
EXAM_BODY_REGIONS: Final[dict[str, tuple[str, ...]]] = {
    "CT Head": ("Head",),
    "CT Paranasal sinuses": ("Head",),
    "CT Cervical spine": ("Neck", "Head & neck"),
    "CT Neck": ("Neck", "Head & neck"),
    "CT Chest": ("Chest",),
    "CT Chest HRCT": ("Chest",),
    "CT pulmonary angiography": ("Chest",),
    "CT coronary angiography": ("Chest",),
    "CT Coronary calcium scoring": ("Chest",),
    "CT Chest-Abdomen": ("Chest-abdomen-pelvis", "Trunk"),
    "CT Abdomen": ("Abdomen", "Abdomen & pelvis"),
    "CT Abdomen-Pelvis": ("Abdomen & pelvis", "Abdomen"),
    "CT Abdomen multiphase": ("Abdomen", "Abdomen & pelvis"),
    "CT Liver multiphase": ("Abdomen", "Abdomen & pelvis"),
    "CT KUB": ("Abdomen & pelvis", "Abdomen"),
    "CT urogram": ("Abdomen & pelvis", "Abdomen"),
    "CT colonography": ("Abdomen & pelvis", "Abdomen"),
    "CT Lumbar spine": ("Abdomen & pelvis", "Abdomen"),
    "CT Chest-Abdomen-Pelvis": ("Chest-abdomen-pelvis", "Trunk"),
    "CT Neck-Chest-Abdomen-Pelvis": ("Chest-abdomen-pelvis", "Trunk"),
}

#: Source strings (prefixes) of the k-sets, in order of preference.
K_SETS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "ICRP 103": (("Lee C et al.", "ICRP 103"), ("ICRP 103 adult", "ICRP 103")),
    "ICRP 60": (("EUR 16262", "ICRP 60"), ("Lee C et al.", "ICRP 60")),
}

#: Output columns added by :func:`ct_effective_dose`.
EFFECTIVE_DOSE_COLUMNS: Final[tuple[str, ...]] = (
    "effective_dose_msv",
    "k_msv_per_mgycm",
    "k_body_region",
    "k_age_group",
    "k_kvp",
    "k_source",
    "k_icrp_basis",
    "k_verification",
    "k_source_ref",
    "effective_dose_method",
)


def age_group(age_years: float | None, available: list[str]) -> str:
    """Return the tabulated age column for a patient age.

    ``adult`` from 18 years (and when the age is unknown); below, the nearest
    tabulated paediatric age (0, 1, 5, 10, 15) that the set has.
    """
    if age_years is None or np.isnan(age_years) or age_years >= 18 or "adult" not in available:
        return "adult"
    ages = sorted(float(a) for a in available if a != "adult")
    if not ages:
        return "adult"
    nearest = min(ages, key=lambda a: (abs(a - age_years), a))
    return str(int(nearest))


def _nearest_kvp(kvp: float | None, available: list[str]) -> str:
    """Return the tabulated kVp nearest ``kvp`` (120 when unknown)."""
    numeric = {}
    for value in available:
        try:
            numeric[value] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    if not numeric:
        return available[0]
    target = 120.0 if kvp is None or np.isnan(kvp) else kvp
    return min(numeric, key=lambda v: (abs(numeric[v] - target), -numeric[v]))


def select_k_factor(
    standard_exam: str,
    *,
    age_years: float | None = None,
    kvp_kv: float | None = None,
    k_set: str = "ICRP 103",
    k_factors: pd.DataFrame | None = None,
) -> pd.Series | None:
    """Return the k-factor row for an exam, age and tube voltage, or ``None``.

    Parameters
    ----------
    standard_exam : str
        CT standard exam name (``EXAM_BODY_REGIONS`` gives its body regions; a
        clinical-indication exam such as ``"CT Head (Stroke)"`` uses its anatomical
        exam's regions, :func:`kerma.analysis.exams.split_indication_exam`).
    age_years : float, optional
        Patient age; unknown ages use the adult coefficient.
    kvp_kv : float, optional
        Tube voltage (kV); the set's nearest tabulated kVp is used (120 when unknown).
    k_set : {"ICRP 103", "ICRP 60"}, optional
        Coefficient set (see the module docstring for its sources).
    k_factors : pandas.DataFrame, optional
        The table (:func:`kerma.analysis.reference.load_k_factors`); loaded if omitted.

    Returns
    -------
    pandas.Series or None
        The table row (``k_mSv_per_mGycm``, ``source``, ``icrp_basis``,
        ``body_region``, ``age_years``, ``kvp``, ``verification``, ``source_ref``) or
        ``None`` when the exam has no body region or the set has no coefficient.

    Raises
    ------
    ValueError
        When ``k_set`` is unknown.
    """
    if k_set not in K_SETS:
        raise ValueError(f"Unable to use the k-set {k_set!r}: choose one of {sorted(K_SETS)}.")
    table = load_k_factors() if k_factors is None else k_factors
    regions = EXAM_BODY_REGIONS.get(standard_exam) or EXAM_BODY_REGIONS.get(
        split_indication_exam(str(standard_exam or ""))[0], ()
    )
    for region in regions:
        for prefix, basis in K_SETS[k_set]:
            rows = table[
                table["source"].str.startswith(prefix)
                & (table["icrp_basis"] == basis)
                & (table["body_region"] == region)
            ]
            if rows.empty:
                continue
            group = age_group(age_years, sorted(set(rows["age_years"])))
            rows = rows[rows["age_years"] == group]
            if rows.empty:
                continue
            kvp = _nearest_kvp(kvp_kv, sorted(set(rows["kvp"])))
            return rows[rows["kvp"] == kvp].iloc[0]
    return None


def ct_effective_dose(samples: pd.DataFrame, *, k_set: str = "ICRP 103") -> pd.DataFrame:
    """Return the sample frame with effective dose for its CT studies.

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame (:func:`kerma.analysis.frames.build_dose_samples`) with
        ``modality_family``, ``standard_exam``, ``ct_dlp_total_mgycm`` (mGy·cm),
        ``patient_age_years`` and optionally ``kvp_kv``.
    k_set : {"ICRP 103", "ICRP 60"}, optional
        Coefficient set (module docstring).

    Returns
    -------
    pandas.DataFrame
        A copy with ``effective_dose_msv`` (mSv; NaN where not computed),
        ``k_msv_per_mgycm``, ``k_body_region``, ``k_age_group``, ``k_kvp``,
        ``k_source``, ``k_icrp_basis``, ``k_verification``, ``k_source_ref`` and
        ``effective_dose_method`` (the method, or why no value: non-CT modality, no
        body region for the exam, no DLP).
    """
    table = load_k_factors()
    out = samples.copy()
    values: dict[str, list[object]] = {c: [] for c in EFFECTIVE_DOSE_COLUMNS}
    cache: dict[tuple[object, ...], pd.Series | None] = {}
    for record in out.to_dict("records"):
        row = None
        method = METHOD
        dlp = record.get("ct_dlp_total_mgycm")
        if record.get("modality_family") != "CT":
            method = NO_COEFFICIENT_NOTE
        elif dlp is None or pd.isna(dlp):
            method = "no effective dose: no DLP"
        else:
            age = record.get("patient_age_years")
            age = None if age is None or pd.isna(age) else float(age)
            kvp = record.get("kvp_kv")
            kvp = None if kvp is None or pd.isna(kvp) else float(kvp)
            key = (
                record.get("standard_exam"),
                age_group(age, ["0", "1", "5", "10", "15", "adult"]),
                kvp,
            )
            if key not in cache:
                cache[key] = select_k_factor(
                    str(record.get("standard_exam")),
                    age_years=age,
                    kvp_kv=kvp,
                    k_set=k_set,
                    k_factors=table,
                )
            row = cache[key]
            if row is None:
                method = "no effective dose: no k-factor body region for this standard exam"
        k = float(row["k_mSv_per_mGycm"]) if row is not None else np.nan
        values["effective_dose_msv"].append(k * float(dlp) if row is not None else np.nan)
        values["k_msv_per_mgycm"].append(k)
        for column, source in (
            ("k_body_region", "body_region"),
            ("k_age_group", "age_years"),
            ("k_kvp", "kvp"),
            ("k_source", "source"),
            ("k_icrp_basis", "icrp_basis"),
            ("k_verification", "verification"),
            ("k_source_ref", "source_ref"),
        ):
            values[column].append(row[source] if row is not None else None)
        values["effective_dose_method"].append(method)
    for column, column_values in values.items():
        out[column] = pd.Series(
            column_values,
            index=out.index,
            dtype=float if column in ("effective_dose_msv", "k_msv_per_mgycm") else object,
        )
    return out

"""Size-specific dose estimate (SSDE) per AAPM Reports 204 and 220.

SSDE (mGy) = f(D) × CTDIvol (mGy), with the AAPM Report 204 (2011) exponential fit
f(D) = a · exp(−b · D), D in cm, a and b per reference phantom from
``kerma/reference/ssde_fit_coefficients.csv`` (32 cm: a = 3.704369, b = 0.03671937;
16 cm: a = 1.874799, b = 0.03871313; verification ``secondary``: identical in at least
five public implementations). D is, in order of preference:

1. the water-equivalent diameter the RDSR reports (``water_equivalent_diameter_mm``,
   TID 10013), size source ``"rdsr"``;
2. the effective diameter √(AP × LAT) from patient AP and lateral dimensions (AAPM
   Report 204), size source ``"ap_lat"``;
3. the water-equivalent diameter measured on the study's received CT axial images
   per AAPM Report 220 (mean Dw over the images, i.e. over the scanned range;
   :mod:`kerma.dicom.size` measures each image at import, ``Registry.studies()``
   gives the mean as ``image_size_mm``), size source ``"image"``;
4. the effective diameter √(AP × LAT) from the widths of the patient on the study's
   AP/PA and lateral CT localizers (AAPM Report 204; a geometric size, not Dw),
   size source ``"localizer"``.

The fit domain is 8–45 cm (``valid_dw_min_cm``/``valid_dw_max_cm``); outside it no
SSDE is given. Head exams and CTDIvol reported in the 16 cm head phantom use the 16 cm
coefficients; AAPM Report 293 head-SSDE coefficients are not shipped, so head SSDE is
labelled as a Report-204 16 cm approximation.

Patient sizes measured on images come from the registry (the image measurement itself
is :mod:`kerma.dicom.size`'s, at import); this module only uses them.

This module works on DataFrames, arrays and numbers only. May import ``kerma.records``,
``kerma.units``, ``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import logging
import math
from functools import cache
from typing import Final, NamedTuple

import numpy as np
import pandas as pd

from kerma.analysis.exams import split_indication_exam
from kerma.analysis.reference import load_ssde_coefficients

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_APPROXIMATION_NOTE",
    "SsdeFit",
    "conversion_factor",
    "effective_diameter_mm",
    "phantom_cm_of",
    "ssde_events",
    "ssde_fits",
]

HEAD_APPROXIMATION_NOTE: Final = (
    "head: AAPM 204 16 cm fit used as an approximation (AAPM Report 293 head "
    "coefficients not shipped)"
)


def conversion_factor(dw_cm: float | np.ndarray, phantom_cm: int = 32) -> float | np.ndarray:
    """Return the AAPM Report 204 conversion factor f = a · exp(−b · D).

    Parameters
    ----------
    dw_cm : float or numpy.ndarray
        Effective or water-equivalent diameter (cm).
    phantom_cm : {32, 16}, optional
        Reference phantom of the CTDIvol (32 cm body, 16 cm head).

    Returns
    -------
    float or numpy.ndarray
        f (dimensionless); NaN outside the fit domain (8–45 cm).

    Raises
    ------
    ValueError
        When ``phantom_cm`` is not 16 or 32.

    Examples
    --------
    >>> round(float(conversion_factor(24.0, 32)), 2)
    1.53
    """
    fits = ssde_fits()
    if phantom_cm not in fits:
        raise ValueError(f"Unable to convert for a {phantom_cm} cm phantom: use 16 or 32.")
    fit = fits[phantom_cm]
    d = np.asarray(dw_cm, dtype=float)
    f = fit.a * np.exp(-fit.b_per_cm * d)
    valid = (d >= fit.min_cm) & (d <= fit.max_cm)
    result = np.where(valid, f, np.nan)
    return float(result) if result.ndim == 0 else result


def effective_diameter_mm(ap_mm: float, lat_mm: float) -> float:
    """Return the AAPM Report 204 effective diameter √(AP × LAT) (mm), AP and LAT in mm.

    A geometric size from the patient's anterior-posterior and lateral dimensions, not
    a water-equivalent diameter (AAPM Report 204, 2011, section 2).
    """
    return math.sqrt(ap_mm * lat_mm)


class SsdeFit(NamedTuple):
    """AAPM Report 204 fit f = a · exp(−b · D) of one phantom, D in cm within its domain."""

    a: float
    b_per_cm: float
    min_cm: float
    max_cm: float

    def factor(self, size_mm: float | None) -> float | None:
        """Return f for a size in mm, ``None`` without a size or outside the fit domain."""
        if size_mm is None or not math.isfinite(size_mm):
            return None
        d_cm = size_mm / 10.0
        if not self.min_cm <= d_cm <= self.max_cm:
            return None
        return self.a * math.exp(-self.b_per_cm * d_cm)


@cache
def ssde_fits() -> dict[int, SsdeFit]:
    """Return the AAPM Report 204 fits by phantom (16, 32 cm) from the packaged table."""
    table = load_ssde_coefficients()
    return {
        int(cm): SsdeFit(
            float(row["a"]),
            float(row["b"]),
            float(row["valid_dw_min_cm"]),
            float(row["valid_dw_max_cm"]),
        )
        for cm, row in table.iterrows()
    }


def phantom_cm_of(phantom_type: object, standard_exam: object = None) -> int:
    """Return the CTDI phantom (16 or 32 cm) from the RDSR phantom type, else the exam.

    ``'IEC Head Dosimetry Phantom'`` → 16; ``'IEC Body Dosimetry Phantom'`` → 32; when
    unknown, head exams (``CT Head``, ``CT Paranasal sinuses`` and their clinical-indication
    exams such as ``CT Head (Stroke)``) → 16, others → 32.
    """
    text = str(phantom_type or "").lower()
    if "head" in text:
        return 16
    if "body" in text:
        return 32
    exam = split_indication_exam(str(standard_exam or ""))[0]
    return 16 if exam in ("CT Head", "CT Paranasal sinuses") else 32


def ssde_events(
    events: pd.DataFrame,
    *,
    image_dw_mm: dict[object, float] | None = None,
    localizer_size_mm: dict[object, float] | None = None,
) -> pd.DataFrame:
    """Return the SSDE of every CT irradiation event that has a size.

    Parameters
    ----------
    events : pandas.DataFrame
        ``Registry.events()`` CT rows: ``event_id``, ``study_id``, ``ctdivol_mgy``
        (mGy), ``ctdiw_phantom_type``, ``water_equivalent_diameter_mm`` (mm),
        ``standard_exam``; optional ``patient_ap_dimension_mm`` and
        ``patient_lat_dimension_mm`` (mm).
    image_dw_mm : dict, optional
        ``{study_id: Dw in mm}``: the mean water-equivalent diameter of the study's
        received axial images (AAPM Report 220; ``Registry.studies()`` columns
        ``image_size_mm`` where ``image_size_source`` is ``image``).
    localizer_size_mm : dict, optional
        ``{study_id: D in mm}``: the effective diameter √(AP × LAT) from the study's
        localizers (AAPM Report 204; ``image_size_source`` ``localizer``).

    Returns
    -------
    pandas.DataFrame
        One row per event: ``event_id``, ``study_id``, ``ctdivol_mgy``,
        ``size_mm`` (the D used, mm), ``size_source`` (``rdsr``, ``ap_lat``,
        ``image``, ``localizer`` or ``None``), ``phantom_cm``, ``conversion_factor``,
        ``ssde_mgy`` (mGy; NaN when no size or D outside 8–45 cm), ``ssde_note``.
    """

    def column(name: str) -> pd.Series:
        if name in events.columns:
            return events[name]
        return pd.Series(None, index=events.index, dtype=object)

    out = pd.DataFrame(
        {
            "event_id": column("event_id"),
            "study_id": column("study_id"),
            "ctdivol_mgy": pd.to_numeric(column("ctdivol_mgy"), errors="coerce"),
        },
        index=events.index,
    )
    size = pd.to_numeric(column("water_equivalent_diameter_mm"), errors="coerce")
    source = pd.Series(None, index=events.index, dtype=object).mask(size.notna(), "rdsr")
    if {"patient_ap_dimension_mm", "patient_lat_dimension_mm"} <= set(events.columns):
        ap = pd.to_numeric(events["patient_ap_dimension_mm"], errors="coerce")
        lat = pd.to_numeric(events["patient_lat_dimension_mm"], errors="coerce")
        eff = np.sqrt(ap * lat)
        use = size.isna() & eff.notna()
        size = size.where(~use, eff)
        source = source.where(~use, "ap_lat")
    for sizes, label in ((image_dw_mm, "image"), (localizer_size_mm, "localizer")):
        if sizes:
            from_images = pd.to_numeric(column("study_id").map(sizes), errors="coerce")
            use = size.isna() & from_images.notna()
            size = size.where(~use, from_images)
            source = source.where(~use, label)
    phantom = [
        phantom_cm_of(p, e)
        for p, e in zip(column("ctdiw_phantom_type"), column("standard_exam"), strict=True)
    ]
    out["size_mm"] = size
    out["size_source"] = source.astype(object).where(source.notna(), None)
    out["phantom_cm"] = phantom
    factor = np.full(len(out), np.nan)
    for cm in (16, 32):
        mask = (out["phantom_cm"] == cm).to_numpy()
        if mask.any():
            factor[mask] = conversion_factor(size.to_numpy(dtype=float)[mask] / 10.0, cm)
    out["conversion_factor"] = factor
    out["ssde_mgy"] = out["conversion_factor"] * out["ctdivol_mgy"]
    notes = np.where(
        size.isna(),
        "no patient size (no Dw in RDSR, no AP/LAT, no CT image or localizer pair)",
        np.where(
            np.isnan(factor), "size outside the AAPM 204 fit domain (8-45 cm)", "AAPM 204/220"
        ),
    )
    head = (out["phantom_cm"] == 16).to_numpy() & ~np.isnan(factor)
    out["ssde_note"] = np.where(head, HEAD_APPROXIMATION_NOTE, notes)
    return out.reset_index(drop=True)

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

This module must not import ``kerma.db``, ``kerma.web`` or ``kerma.cli``; the
image measurement itself lives in :mod:`kerma.dicom.size` (which must not import
``kerma.analysis``).
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset

from kerma.analysis.exams import split_indication_exam
from kerma.analysis.reference import load_ssde_coefficients
from kerma.dicom.size import PATIENT_THRESHOLD_HU, water_equivalent_diameter_from_hu
from kerma.dicom.size import effective_diameter_mm as _effective_diameter_mm

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_APPROXIMATION_NOTE",
    "PATIENT_THRESHOLD_HU",
    "conversion_factor",
    "effective_diameter_mm",
    "phantom_cm_of",
    "ssde_events",
    "water_equivalent_diameter_mm",
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
    table = load_ssde_coefficients()
    if phantom_cm not in table.index:
        raise ValueError(f"Unable to convert for a {phantom_cm} cm phantom: use 16 or 32.")
    row = table.loc[phantom_cm]
    d = np.asarray(dw_cm, dtype=float)
    f = float(row["a"]) * np.exp(-float(row["b"]) * d)
    valid = (d >= float(row["valid_dw_min_cm"])) & (d <= float(row["valid_dw_max_cm"]))
    result = np.where(valid, f, np.nan)
    return float(result) if result.ndim == 0 else result


def effective_diameter_mm(ap_mm: float, lat_mm: float) -> float:
    """Return the AAPM Report 204 effective diameter √(AP × LAT) (mm), AP and LAT in mm."""
    return _effective_diameter_mm(ap_mm, lat_mm)


def water_equivalent_diameter_mm(
    ds: Dataset, *, threshold_hu: float = PATIENT_THRESHOLD_HU
) -> float:
    """Return the water-equivalent diameter Dw (mm) of one CT axial image (AAPM Report 220).

    Dw = 2 · √( (mean(HU)/1000 + 1) · A / π ) over the patient region, where A is
    the region's area (pixel count × (0028,0030) 'Pixel Spacing' row × column, mm²)
    and HU = stored value × (0028,1053) 'Rescale Slope' + (0028,1052) 'Rescale
    Intercept'. The patient region is :func:`kerma.dicom.size.patient_region`: pixels
    above ``threshold_hu`` (−400 HU by default, within the −200 to −400 HU range
    implementers use), the largest connected region with its holes filled when SciPy
    is installed (a separate table is left out); a patient truncated by the field of
    view gives too small a Dw (not corrected). The import pipeline measures every
    received CT image with :func:`kerma.dicom.size.measure_patient_size`.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A CT image with pixel data, Pixel Spacing and (optionally) rescale attributes.
    threshold_hu : float, optional
        Patient-region threshold (HU).

    Returns
    -------
    float
        Dw in mm (0.0 when no pixel passes the threshold).

    Raises
    ------
    ValueError
        When the dataset has no Pixel Spacing.
    """
    if "PixelSpacing" not in ds:
        raise ValueError(
            "Unable to compute the water-equivalent diameter: the image has no "
            "(0028,0030) 'Pixel Spacing'."
        )
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    hu = ds.pixel_array.astype(float) * slope + intercept
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    return water_equivalent_diameter_from_hu(hu, spacing, threshold_hu=threshold_hu)


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

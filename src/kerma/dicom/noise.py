"""Local noise of an axial CT image, for the global noise level of its series (issue #17).

The automated global-noise method of Christianson O, Winslow J, Frush DP, Samei E.
"Automated Technique to Measure Noise in Clinical CT Examinations." AJR Am J
Roentgenol 2015;205(1):W93-W99: every pixel of soft tissue (CT number 0 to 100 HU) is
the centre of a small square kernel whose standard deviation is its local noise; the
histogram of those standard deviations over the images of a series has its mode at the
series' *global noise level* (GNL, in HU). The mode is robust to edges and structure,
which only add a tail of high standard deviations.

This module measures one image and returns its histogram
(:func:`measure_image_noise`); the series' histogram is the sum of its images', and
:func:`kerma.analysis.quality.global_noise_level_hu` takes its mode. Kerma's choices,
where the paper leaves room: a square kernel of :data:`KERNEL_MM` (rounded to an odd
number of pixels, at least 3), the sample standard deviation, pixels whose kernel
leaves the image are not counted, histogram bins :data:`HISTOGRAM_BIN_HU` wide up to
:data:`HISTOGRAM_MAX_HU`.

Pure; never fails an import (:class:`NoiseResult` carries the reason). May import
``kerma.records`` and ``kerma.dicom`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from kerma.dicom.size import _Frame, is_ct_image

#: Soft-tissue window of the method (HU), Christianson et al. 2015.
SOFT_TISSUE_HU: Final = (0.0, 100.0)
#: Side of the square kernel (mm): Kerma's default, a small region as in the method.
KERNEL_MM: Final = 6.0
#: Width of a histogram bin (HU).
HISTOGRAM_BIN_HU: Final = 0.1
#: Upper end of the histogram (HU); larger local standard deviations are not counted.
HISTOGRAM_MAX_HU: Final = 100.0
#: Fewest soft-tissue pixels for an image to count (a slice through air or bone only).
MIN_TISSUE_PIXELS: Final = 100


@dataclass(frozen=True)
class ImageNoise:
    """The local-noise histogram of one axial CT image and the attributes it is filed by.

    ``histogram[i]`` counts soft-tissue pixels whose local standard deviation is in
    ``[i, i + 1) × HISTOGRAM_BIN_HU`` HU; trailing empty bins are dropped.
    """

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str | None
    histogram: list[int]
    tissue_pixels: int
    kernel_mm: float
    station_name: str | None = None
    manufacturer_model_name: str | None = None
    protocol_name: str | None = None
    series_description: str | None = None
    study_date: str | None = None
    ctdivol_mgy: float | None = None
    slice_thickness_mm: float | None = None
    convolution_kernel: str | None = None


@dataclass(frozen=True)
class NoiseResult:
    """The measurement, or ``None`` with the reason it was not made."""

    noise: ImageNoise | None
    reason: str | None = None


def local_noise_hu(hu: np.ndarray, kernel_px: int) -> np.ndarray:
    """Return the standard deviation (HU) of the ``kernel_px`` × ``kernel_px`` square around
    every pixel (sample SD, n - 1); shape as ``hu`` (rows, columns)."""
    # imported where used: scipy costs about 28 MiB of memory, and most objects a
    # registry receives are dose reports, not CT images
    from scipy.ndimage import uniform_filter

    values = hu.astype(np.float64)
    mean = uniform_filter(values, size=kernel_px, mode="nearest")
    mean_sq = uniform_filter(values * values, size=kernel_px, mode="nearest")
    n = kernel_px * kernel_px
    variance = np.clip(mean_sq - mean * mean, 0.0, None) * (n / (n - 1))
    return np.sqrt(variance)


def noise_histogram(hu: np.ndarray, spacing_mm: float, kernel_mm: float = KERNEL_MM) -> list[int]:
    """Return the histogram of local noise over the soft-tissue pixels of one image.

    Parameters
    ----------
    hu : numpy.ndarray
        CT numbers (HU), shape (rows, columns).
    spacing_mm : float
        Pixel spacing (mm), the mean of row and column spacing.
    kernel_mm : float, optional
        Side of the square kernel (mm). Default :data:`KERNEL_MM`.

    Returns
    -------
    list of int
        Counts per :data:`HISTOGRAM_BIN_HU` bin from 0 HU, trailing zeros dropped.
    """
    kernel_px = max(3, round(kernel_mm / spacing_mm))
    if kernel_px % 2 == 0:
        kernel_px += 1
    sd = local_noise_hu(hu, kernel_px)
    low, high = SOFT_TISSUE_HU
    mask = (hu >= low) & (hu <= high)
    half = kernel_px // 2
    mask[:half, :] = mask[-half:, :] = False
    mask[:, :half] = mask[:, -half:] = False
    n_bins = round(HISTOGRAM_MAX_HU / HISTOGRAM_BIN_HU)
    counts, _ = np.histogram(sd[mask], bins=n_bins, range=(0.0, HISTOGRAM_MAX_HU))
    hist = [int(c) for c in counts]
    while hist and hist[-1] == 0:
        hist.pop()
    return hist


def _text(ds: Dataset, keyword: str) -> str | None:
    """Return a text attribute stripped, or ``None`` when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return None
    text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    return text.strip() or None


def _number(ds: Dataset, keyword: str) -> float | None:
    """Return a numeric attribute as float, or ``None`` when absent or unreadable."""
    value = ds.get(keyword)
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def measure_image_noise(ds: Dataset, *, kernel_mm: float = KERNEL_MM) -> NoiseResult:
    """Measure the local-noise histogram of one axial CT image (module docstring).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A CT image read with its pixel data.
    kernel_mm : float, optional
        Side of the square kernel (mm). Default :data:`KERNEL_MM`.

    Returns
    -------
    NoiseResult
        ``noise`` or ``None`` with the ``reason``: not a CT image, a localizer or
        reformatted image, no Pixel Spacing or UIDs, undecodable pixel data, fewer than
        :data:`MIN_TISSUE_PIXELS` soft-tissue pixels.
    """
    if not is_ct_image(str(ds.get("SOPClassUID", "")).strip()):
        return NoiseResult(None, "not a CT image")
    sop_uid = str(ds.get("SOPInstanceUID", "")).strip()
    study_uid = str(ds.get("StudyInstanceUID", "")).strip()
    if not sop_uid or not study_uid:
        return NoiseResult(None, "no SOP or Study Instance UID")
    frame = _Frame.of(ds)
    if frame.spacing_mm is None:
        return NoiseResult(None, "no (0028,0030) 'Pixel Spacing'")
    if frame.kind() != "axial":
        return NoiseResult(None, "not an axial image (localizer or reformat)")
    try:
        pixels = frame.pixels(ds)
    except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError) as exc:
        return NoiseResult(None, f"pixel data not decoded ({type(exc).__name__}: {exc})")
    hu = pixels.astype(np.float64) * frame.slope + frame.intercept
    spacing = (frame.spacing_mm[0] + frame.spacing_mm[1]) / 2.0
    hist = noise_histogram(hu, spacing, kernel_mm)
    total = sum(hist)
    if total < MIN_TISSUE_PIXELS:
        return NoiseResult(None, f"only {total} soft-tissue pixels (0-100 HU)")
    return NoiseResult(
        ImageNoise(
            sop_instance_uid=sop_uid,
            study_instance_uid=study_uid,
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")).strip() or None,
            histogram=hist,
            tissue_pixels=total,
            kernel_mm=kernel_mm,
            station_name=_text(ds, "StationName"),
            manufacturer_model_name=_text(ds, "ManufacturerModelName"),
            protocol_name=_text(ds, "ProtocolName"),
            series_description=_text(ds, "SeriesDescription"),
            study_date=_text(ds, "StudyDate"),
            ctdivol_mgy=_number(ds, "CTDIvol"),
            slice_thickness_mm=_number(ds, "SliceThickness"),
            convolution_kernel=_text(ds, "ConvolutionKernel"),
        )
    )

"""Image-quality indicators beside dose: deviation index, vendor indices, global noise (#17).

- **Deviation index** (IEC 62494-1:2008, "Exposure index of digital X-ray imaging
  systems - Part 1: Definitions and requirements for general radiography", also AAPM
  Report No. 116, "An Exposure Indicator for Digital Radiography", July 2009; Shepard
  SJ et al., Med Phys 2009;36:2898-2914): DI = 10·log10(EI / EI_T), EI the exposure
  index of the image and EI_T the target exposure index of that body part and view
  (:func:`deviation_index`). DI = +1 is about 26 % more detector exposure than
  intended, +3 about twice. IEC 62494-1 defines EI and DI; the action ranges are the
  control limits AAPM Report 116 recommends, which Kerma reports: |DI| <= 1 within
  target (:data:`DI_ACCEPTABLE`), 1 < |DI| <= 3 to be reviewed when frequent, |DI| > 3
  (:data:`DI_ACTION`) far from target and investigated (over-exposure above +3,
  under-exposure and a likely repeat below -3).
- **Vendor exposure indices** (Fujifilm/Konica S value, Carestream/Kodak EI, Siemens
  EXI, Philips EI (REX), Agfa lgM) are not the IEC EI: they are kept under their own
  names (:func:`vendor_index_name`) and never enter a DI.
- **Global noise level** of a CT series (Christianson et al., AJR 2015;205:W93-W99): the
  mode of the histogram of local standard deviations in soft tissue
  (:func:`global_noise_level_hu`; the histograms come from :mod:`kerma.dicom.noise`).

Pure computation: numbers and DataFrames in and out, never a session. May import
``kerma.records`` and ``kerma.units``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

#: |DI| at or below which an exposure is within its target (AAPM Report 116).
DI_ACCEPTABLE: Final = 1.0
#: |DI| above which an exposure is far from its target and investigated (AAPM Report 116).
DI_ACTION: Final = 3.0

#: Bin edges of the DI distribution Kerma reports (DI units), open at both ends.
DI_BIN_EDGES: Final = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)

#: Vendor names of (0018,6000) Sensitivity and (0018,1405) Relative X-Ray Exposure by
#: manufacturer prefix (upper case), as the vendors' documentation names them. An index
#: of a manufacturer not listed keeps its DICOM attribute name.
VENDOR_INDEX_NAMES: Final[dict[str, dict[str, str]]] = {
    "sensitivity": {
        "FUJI": "S value (Fujifilm)",
        "KONICA": "S value (Konica Minolta)",
    },
    "relative_xray_exposure": {
        "KODAK": "EI (Carestream/Kodak)",
        "CARESTREAM": "EI (Carestream/Kodak)",
        "SIEMENS": "EXI (Siemens)",
        "PHILIPS": "EI_s / REX (Philips)",
        "AGFA": "lgM (Agfa)",
    },
}

#: DICOM attribute names of the vendor index columns, for manufacturers not listed.
VENDOR_INDEX_ATTRIBUTES: Final = {
    "sensitivity": "(0018,6000) Sensitivity",
    "relative_xray_exposure": "(0018,1405) Relative X-Ray Exposure",
}


def deviation_index(
    exposure_index: float | None, target_exposure_index: float | None
) -> float | None:
    """Return DI = 10·log10(EI / EI_T) (IEC 62494-1:2008), or ``None``.

    Parameters
    ----------
    exposure_index : float or None
        EI of the image, (0018,1411) or TID 10003 'Exposure Index' (DCM 113845).
    target_exposure_index : float or None
        EI_T, (0018,1412) or 'Target Exposure Index' (DCM 113846).

    Returns
    -------
    float or None
        ``None`` when either is missing or not positive (the logarithm is undefined).

    Examples
    --------
    >>> round(deviation_index(51.745061, 438.469173), 2)
    -9.28
    """
    if exposure_index is None or target_exposure_index is None:
        return None
    if exposure_index <= 0 or target_exposure_index <= 0:
        return None
    return 10.0 * math.log10(exposure_index / target_exposure_index)


def vendor_index_name(column: str, manufacturer: str | None) -> str:
    """Return the vendor's name of a vendor exposure index column.

    Parameters
    ----------
    column : str
        ``sensitivity`` or ``relative_xray_exposure``.
    manufacturer : str or None
        (0008,0070) Manufacturer of the device.

    Returns
    -------
    str
        E.g. ``"S value (Fujifilm)"``; the DICOM attribute name with the manufacturer
        when the vendor is not known to use it as its index.

    Raises
    ------
    KeyError
        When ``column`` is not one of the two.
    """
    names = VENDOR_INDEX_NAMES[column]
    upper = (manufacturer or "").strip().upper()
    for prefix, name in names.items():
        if upper.startswith(prefix):
            return name
    attribute = VENDOR_INDEX_ATTRIBUTES[column]
    return f"{attribute} ({manufacturer})" if manufacturer else attribute


def sum_histograms(histograms: Iterable[Sequence[int]]) -> list[int]:
    """Return the bin-wise sum of histograms of possibly different lengths."""
    total: list[int] = []
    for hist in histograms:
        if len(hist) > len(total):
            total.extend([0] * (len(hist) - len(total)))
        for i, count in enumerate(hist):
            total[i] += int(count)
    return total


def global_noise_level_hu(histogram: Sequence[int], bin_hu: float) -> float | None:
    """Return the mode (HU) of a local-noise histogram: the global noise level.

    The mode is the centre of the fullest bin after a 5-bin moving average (the raw
    counts of a single slice are ragged), refined by a parabola through that bin and
    its neighbours.

    Parameters
    ----------
    histogram : sequence of int
        Counts per bin from 0 HU (:func:`kerma.dicom.noise.noise_histogram`, summed
        over a series with :func:`sum_histograms`).
    bin_hu : float
        Bin width (HU).

    Returns
    -------
    float or None
        ``None`` for an empty histogram.
    """
    n = len(histogram)
    if n == 0 or sum(histogram) == 0:
        return None
    half = 2
    smooth = [
        sum(histogram[max(0, i - half) : min(n, i + half + 1)])
        / (min(n, i + half + 1) - max(0, i - half))
        for i in range(n)
    ]
    peak = max(range(n), key=smooth.__getitem__)
    offset = 0.0
    if 0 < peak < n - 1:
        left, centre, right = smooth[peak - 1], smooth[peak], smooth[peak + 1]
        denominator = left - 2 * centre + right
        if denominator != 0:
            offset = 0.5 * (left - right) / denominator
    return (peak + 0.5 + offset) * bin_hu


def di_category(di: float | None) -> str | None:
    """Return ``within ±1``, ``±1 to ±3`` or ``beyond ±3`` for a DI (AAPM Report 116 ranges)."""
    if di is None or math.isnan(di):
        return None
    if abs(di) <= DI_ACCEPTABLE:
        return "within ±1"
    if abs(di) <= DI_ACTION:
        return "±1 to ±3"
    return "beyond ±3"

"""Patient size measured on received CT images, for the SSDE (AAPM Reports 204 and 220).

Two measurements, one per CT image (CT Image Storage; Enhanced and Legacy Converted
Enhanced CT Image Storage, central frame):

- **axial image**: the water-equivalent diameter Dw (mm) of AAPM Report 220 (2014),
  eq. 2/3: Dw = 2 · √( (mean(HU)/1000 + 1) · A / π ), with A the area of the patient
  region (pixel count × (0028,0030) 'Pixel Spacing' row × column, mm²) and the mean
  CT number over that region;
- **localizer** (projection radiograph, (0008,0008) 'Image Type' value LOCALIZER): the
  patient's *geometric* width along the image row (mm): lateral (LAT) on an AP/PA
  localizer, anterior-posterior (AP) on a lateral one, decided by (0020,0037) 'Image
  Orientation (Patient)'. This is a geometric size, not a water-equivalent diameter:
  the effective diameter √(AP × LAT) of AAPM Report 204 (2011), section 2, is formed
  from an AP and a LAT width of the same study (:func:`effective_diameter_mm`).

Nothing here fails an import: :func:`measure_patient_size` returns a
:class:`SizeResult` whose ``size`` is ``None`` with a ``reason`` when the image cannot
be measured (compressed pixel data without a decoder such as pylibjpeg or GDCM,
reformatted non-axial image, no Pixel Spacing, ...).

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``;
never ``kerma.db``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: SOP classes whose pixel data are CT numbers (HU after rescale), PS3.4 B.5.
CT_IMAGE_SOP_CLASSES: Final = frozenset(
    {
        uid.CTImageStorage,
        uid.EnhancedCTImageStorage,
        uid.LegacyConvertedEnhancedCTImageStorage,
    }
)

#: CT number (HU) above which a pixel of an axial image belongs to the patient. AAPM
#: Report 220 leaves the segmentation to the implementer; -400 HU lies within the
#: -200 to -400 HU range published implementations use, below soft tissue and above
#: the foam of table pads (about -900 HU).
PATIENT_THRESHOLD_HU: Final = -400.0

#: Fraction of the localizer's value range (1st to 99th percentile) above its
#: background that a pixel must exceed to belong to the patient. A projection's path
#: length goes to zero at the patient's edge, so a low fraction is needed: for an
#: elliptical section 10 % of the maximum path loses 0.5 % of the width.
LOCALIZER_THRESHOLD_FRACTION: Final = 0.10

#: ``method`` of an axial measurement (AAPM Report 220 Dw).
METHOD_AXIAL_DW: Final = "AAPM Report 220 water-equivalent diameter (axial image)"
#: ``method`` of a localizer width measured across the patient, left to right.
METHOD_LOCALIZER_LAT: Final = "geometric LAT width (AP/PA localizer)"
#: ``method`` of a localizer width measured front to back.
METHOD_LOCALIZER_AP: Final = "geometric AP width (lateral localizer)"

ImageKind = Literal["axial", "localizer"]


@dataclass(frozen=True)
class PatientSize:
    """The patient size measured on one CT image.

    Attributes
    ----------
    sop_instance_uid, study_instance_uid, series_instance_uid : str
        Of the image.
    image_type : {'axial', 'localizer'}
        What the image is.
    direction : {'dw', 'lat', 'ap'}
        ``dw``: ``size_mm`` is the AAPM Report 220 water-equivalent diameter of an
        axial image; ``lat`` / ``ap``: it is the geometric width of the patient on a
        localizer, left-right or front-back.
    size_mm : float
        The measurement (mm).
    table_position_mm : float or None
        Longitudinal position of an axial image (mm): (0020,0032) 'Image Position
        (Patient)' z, else (0020,1041) 'Slice Location'.
    method : str
        How it was measured (:data:`METHOD_AXIAL_DW`, :data:`METHOD_LOCALIZER_LAT`,
        :data:`METHOD_LOCALIZER_AP`, plus the segmentation used).
    """

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str | None
    image_type: ImageKind
    direction: Literal["dw", "lat", "ap"]
    size_mm: float
    table_position_mm: float | None
    method: str


@dataclass(frozen=True)
class SizeResult:
    """What :func:`measure_patient_size` found: a size, or ``None`` and the reason."""

    size: PatientSize | None
    reason: str | None = None


def is_ct_image(sop_class_uid: object) -> bool:
    """Return whether a SOP Class UID is a CT image (:data:`CT_IMAGE_SOP_CLASSES`)."""
    return str(sop_class_uid or "").strip() in CT_IMAGE_SOP_CLASSES


def effective_diameter_mm(ap_mm: float, lat_mm: float) -> float:
    """Return the effective diameter √(AP × LAT) (mm) of AAPM Report 204, section 2.

    A geometric size from the patient's anterior-posterior and lateral dimensions
    (mm), not a water-equivalent diameter: it ignores the attenuation of the tissue.
    """
    return math.sqrt(ap_mm * lat_mm)


def patient_region(hu: np.ndarray, *, threshold_hu: float = PATIENT_THRESHOLD_HU) -> np.ndarray:
    """Return the patient region of an axial CT image as a boolean mask.

    The pixels above ``threshold_hu``, then only the largest connected region (which
    leaves out a table that an air gap or a foam pad separates from the patient), with
    its holes filled (lungs, bowel gas), as AAPM Report 220 integrates over the whole
    patient contour. Labelling and hole filling are :func:`scipy.ndimage.label` and
    :func:`scipy.ndimage.binary_fill_holes` (SciPy is a core dependency, so every
    installation measures with this one algorithm).

    Parameters
    ----------
    hu : numpy.ndarray
        CT numbers (HU), shape (rows, columns).
    threshold_hu : float, optional
        Threshold (HU), default :data:`PATIENT_THRESHOLD_HU`.

    Returns
    -------
    numpy.ndarray
        Boolean mask, shape of ``hu``.
    """
    from scipy import ndimage  # imported where used: importing it costs about 0.1 s

    mask = hu > threshold_hu
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)


#: How :func:`patient_region` segments, for ``method``.
SEGMENTATION: Final = f"largest region above {PATIENT_THRESHOLD_HU:g} HU, holes filled"


def water_equivalent_diameter_from_hu(
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    *,
    threshold_hu: float = PATIENT_THRESHOLD_HU,
) -> float:
    """Return the water-equivalent diameter Dw (mm) of one axial image, AAPM Report 220.

    Dw = 2 · √( (mean(HU)/1000 + 1) · A / π ) over :func:`patient_region`, A its area
    (mm²) (AAPM Report 220, 2014, eqs. 2 and 3).

    Parameters
    ----------
    hu : numpy.ndarray
        CT numbers (HU), shape (rows, columns).
    pixel_spacing_mm : (float, float)
        (0028,0030) 'Pixel Spacing': row spacing, column spacing (mm).
    threshold_hu : float, optional
        Patient threshold (HU).

    Returns
    -------
    float
        Dw (mm); 0.0 when no pixel belongs to the patient.
    """
    region = patient_region(hu, threshold_hu=threshold_hu)
    n = int(region.sum())
    if n == 0:
        return 0.0
    area_mm2 = n * float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    water_area_mm2 = (float(hu[region].mean()) / 1000.0 + 1.0) * area_mm2
    return 2.0 * math.sqrt(max(water_area_mm2, 0.0) / math.pi)


def localizer_width_mm(values: np.ndarray, spacing_mm: float) -> float:
    """Return the patient's width across a localizer (mm): the median over its lines.

    Each line (array row) is a profile across the patient. The patient is where the
    value exceeds the background (1st percentile) by :data:`LOCALIZER_THRESHOLD_FRACTION`
    of the range to the 99th percentile; a line's width is its longest such run times
    ``spacing_mm``; the result is the median width of the lines that cross the patient.

    Parameters
    ----------
    values : numpy.ndarray
        Pixel values, larger for more attenuation, shape (lines, samples per line).
    spacing_mm : float
        Distance between samples along a line (mm).

    Returns
    -------
    float
        Width (mm); 0.0 when no line crosses the patient.
    """
    low, high = np.percentile(values, [1.0, 99.0])
    if not high > low:
        return 0.0
    inside = values > low + LOCALIZER_THRESHOLD_FRACTION * (high - low)
    widths = [_longest_run(line) for line in inside]
    crossing = [w for w in widths if w > 0]
    if not crossing:
        return 0.0
    return float(np.median(crossing)) * spacing_mm


def _longest_run(line: np.ndarray) -> int:
    """Return the length of the longest run of ``True`` in a 1-D boolean array."""
    padded = np.concatenate(([0], line.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    if edges.size == 0:
        return 0
    return int((edges[1::2] - edges[0::2]).max())


def measure_patient_size(ds: Dataset) -> SizeResult:
    """Measure the patient size on one CT image (see the module docstring).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A CT image read with its pixel data.

    Returns
    -------
    SizeResult
        ``size`` (:class:`PatientSize`) or ``None`` with the ``reason``: not a CT image,
        no SOP or Study Instance UID, a reformatted (non-axial) image, no Pixel Spacing,
        pixel data that cannot be decoded (e.g. JPEG 2000 without pylibjpeg or GDCM),
        no patient in the image.
    """
    sop_class_uid = str(ds.get("SOPClassUID", "")).strip()
    if not is_ct_image(sop_class_uid):
        return SizeResult(None, f"SOP class {sop_class_uid or '?'} is not a CT image")
    sop_uid = str(ds.get("SOPInstanceUID", "")).strip()
    study_uid = str(ds.get("StudyInstanceUID", "")).strip()
    if not sop_uid or not study_uid:
        return SizeResult(None, "no SOP or Study Instance UID to file the measurement under")
    series_uid = str(ds.get("SeriesInstanceUID", "")).strip() or None
    frame = _Frame.of(ds)
    if frame.spacing_mm is None:
        return SizeResult(None, "no (0028,0030) 'Pixel Spacing'")
    kind = frame.kind()
    if kind is None:
        return SizeResult(
            None, "neither an axial image nor a LOCALIZER (a reformatted image is not measured)"
        )
    try:
        pixels = frame.pixels(ds)
    except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "unknown transfer syntax")
        return SizeResult(
            None,
            f"its pixel data ({name}) could not be decoded ({type(exc).__name__}: {exc}); "
            "install pylibjpeg or GDCM for compressed transfer syntaxes",
        )
    values = pixels.astype(float) * frame.slope + frame.intercept
    if kind == "axial":
        dw = water_equivalent_diameter_from_hu(values, frame.spacing_mm)
        if dw <= 0.0:
            return SizeResult(None, f"no pixel above {PATIENT_THRESHOLD_HU:g} HU")
        size = PatientSize(
            sop_instance_uid=sop_uid,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            image_type="axial",
            direction="dw",
            size_mm=dw,
            table_position_mm=frame.table_position_mm,
            method=f"{METHOD_AXIAL_DW}; {SEGMENTATION}",
        )
        return SizeResult(size)
    return _measure_localizer(ds, frame, values, sop_uid, study_uid, series_uid)


def _measure_localizer(
    ds: Dataset,
    frame: _Frame,
    values: np.ndarray,
    sop_uid: str,
    study_uid: str,
    series_uid: str | None,
) -> SizeResult:
    """Return the geometric width of the patient on a localizer."""
    if frame.orientation is None:
        return SizeResult(None, "localizer without (0020,0037) 'Image Orientation (Patient)'")
    assert frame.spacing_mm is not None
    row, col = frame.orientation[:3], frame.orientation[3:]
    if abs(row[2]) <= abs(col[2]):  # rows cross the patient, columns run head-feet
        across, spacing = row, frame.spacing_mm[1]
        lines = values
    else:
        across, spacing = col, frame.spacing_mm[0]
        lines = values.T
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        lines = -lines  # larger values must mean more attenuation
    if abs(across[0]) >= abs(across[1]):
        direction: Literal["lat", "ap"] = "lat"
        method = METHOD_LOCALIZER_LAT
    else:
        direction, method = "ap", METHOD_LOCALIZER_AP
    width = localizer_width_mm(lines, spacing)
    if width <= 0.0:
        return SizeResult(None, "no patient found on the localizer")
    threshold = f"{LOCALIZER_THRESHOLD_FRACTION:.0%} of the value range above background"
    size = PatientSize(
        sop_instance_uid=sop_uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        image_type="localizer",
        direction=direction,
        size_mm=width,
        table_position_mm=None,
        method=f"{method}; median over lines, {threshold}",
    )
    return SizeResult(size)


@dataclass(frozen=True)
class _Frame:
    """The geometry and rescale of the frame to measure (central frame if multi-frame)."""

    index: int | None
    image_type: tuple[str, ...]
    spacing_mm: tuple[float, float] | None
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    slice_location: float | None
    slope: float
    intercept: float

    @classmethod
    def of(cls, ds: Dataset) -> _Frame:
        """Read the frame attributes, from functional groups for enhanced images."""
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        index = frames // 2 if "PerFrameFunctionalGroupsSequence" in ds else None

        def attr(sequence: str, keyword: str) -> Any:
            if index is not None:
                for groups in (
                    ds.PerFrameFunctionalGroupsSequence[index],
                    *ds.get("SharedFunctionalGroupsSequence", [])[:1],
                ):
                    items = groups.get(sequence)
                    if items and keyword in items[0]:
                        return items[0].get(keyword)
            return ds.get(keyword)

        image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or []))
        frame_type = attr("CTImageFrameTypeSequence", "FrameType")
        if frame_type:
            image_type += tuple(str(v).upper() for v in frame_type)
        spacing = attr("PixelMeasuresSequence", "PixelSpacing")
        orientation = attr("PlaneOrientationSequence", "ImageOrientationPatient")
        position = attr("PlanePositionSequence", "ImagePositionPatient")
        location = ds.get("SliceLocation")
        slope = attr("PixelValueTransformationSequence", "RescaleSlope")
        intercept = attr("PixelValueTransformationSequence", "RescaleIntercept")
        return cls(
            index=index,
            image_type=image_type,
            spacing_mm=(float(spacing[0]), float(spacing[1]))
            if spacing is not None and len(spacing) == 2
            else None,
            orientation=tuple(float(v) for v in orientation)
            if orientation is not None and len(orientation) == 6
            else None,
            position=tuple(float(v) for v in position)
            if position is not None and len(position) == 3
            else None,
            slice_location=float(location) if location not in (None, "") else None,
            slope=float(slope) if slope not in (None, "") else 1.0,
            intercept=float(intercept) if intercept not in (None, "") else 0.0,
        )

    def kind(self) -> ImageKind | None:
        """Return ``localizer`` (Image Type), ``axial`` (orientation), else ``None``."""
        if "LOCALIZER" in self.image_type:
            return "localizer"
        if self.orientation is None:
            return "axial"  # CT Image: orientation is Type 1; assume a transverse slice
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        return "axial" if abs(float(normal[2])) > 0.9 else None

    @property
    def table_position_mm(self) -> float | None:
        """Return the slice's z (mm): Image Position (Patient), else Slice Location."""
        if self.position is not None:
            return self.position[2]
        return self.slice_location

    def pixels(self, ds: Dataset) -> np.ndarray:
        """Return the stored values of the frame, shape (rows, columns)."""
        if self.index is not None:
            ds.pixel_array_options(index=self.index)
        array = np.asarray(ds.pixel_array)
        if array.ndim == 3 and array.shape[-1] not in (3, 4):  # all frames decoded
            array = array[self.index or 0]
        return array

"""Read PS3.16 TID 10001 Projection X-Ray Radiation Dose: RF, XA, DX and MG reports.

This module fills a :class:`kerma.records.DoseReport` from an X-Ray Radiation Dose SR
whose 'Procedure reported' (DCM 121058) is 'Projection X-Ray' (DCM 113704) or
'Mammography' (SCT 71651007):

- the modality the dose belongs to, decided by rule (:func:`get_study_modality`);
- one :class:`~kerma.records.AccumulatedPlane` per 'Accumulated X-Ray Dose Data'
  container (DCM 113702; TID 10002 with TID 10004 fluoroscopy/acquisition totals), and
  the mammography accumulated AGD by laterality (TID 10005);
- one :class:`~kerma.records.IrradiationEvent` per 'Irradiation Event X-Ray Data'
  container (DCM 113706; TID 10003 with TID 10003a detector, 10003b source and 10003c
  mechanical data), in document order.

It also reads the Siemens private 'Radiation Summary Report' (99SMS_RADSUM C-10) that
ARCADIS mobile C-arms send as an Enhanced SR: study totals only, no events.

Every content item is read leniently through :mod:`kerma.dicom.content`: a missing or
odd item is a warning on the report, never an exception. Each container's Content
Sequence is indexed once by concept (:class:`ContentIndex`), so reading an event costs
one pass over its items whatever the number of fields.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``
(``content``, ``codes``); must not import ``kerma.db``, ``kerma.ingest`` or anything above.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sr._snomed_dict import mapping as _snomed_mapping
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from kerma.dicom import codes as local_codes
from kerma.dicom.content import (
    as_count,
    children,
    clean_text,
    code_meaning,
    code_value,
    concept_of,
    datetime_value,
    describe,
    is_any_concept,
    is_concept,
    numeric_value,
    text_value,
    uid_value,
    value_type,
)
from kerma.dicom.tree import ContentItem, content_tree
from kerma.records import (
    AccumulatedPlane,
    DoseReport,
    IrradiationEvent,
    XRayFilter,
)
from kerma.units import (
    UCUM_DEG,
    UCUM_GY,
    UCUM_GYM2,
    UCUM_KV,
    UCUM_M2,
    UCUM_MA,
    UCUM_MAS,
    UCUM_MGY,
    UCUM_MM,
    UCUM_N,
    UCUM_PER_S,
    UCUM_S,
)

logger = logging.getLogger(__name__)

#: SNOMED-RT code values that pydicom maps to SNOMED CT (the table ``Code.__eq__`` uses).
_SRT_TO_SCT: dict[str, str] = _snomed_mapping["SRT"]

#: Header (0008,0060) Modality values that name a projection X-ray modality.
PROJECTION_MODALITIES = frozenset({"RF", "XA", "DX", "CR", "MG", "PX"})

#: 'Exposure Time' (DCM 113824), the concept TID 10003b and TID 10013 share today.
EXPOSURE_TIME: Code = codes.DCM.ExposureTime
#: The retired projection 'Exposure Time' (DCM 113735, ``codes.DCM.ExposureTime_Retired``),
#: still sent by most fluoroscopy systems; read when DCM 113824 is absent.
EXPOSURE_TIME_RETIRED: Code = codes.DCM.ExposureTime_Retired

_FLUOROSCOPY_DEVICE_TYPE = codes.DCM.FluoroscopyGuidedProjectionRadiographySystem
_RADIOGRAPHY_DEVICE_TYPES = (
    codes.DCM.IntegratedProjectionRadiographySystem,
    codes.DCM.CassetteBasedProjectionRadiographySystem,
)


def concept_key(code: Code) -> tuple[str, str]:
    """Return a hashable key of a code that agrees with ``Code.__eq__``.

    :class:`pydicom.sr.coding.Code` compares legacy SNOMED-RT codes equal to their SNOMED
    CT form but hashes them differently; this key maps SRT to SCT first, so a dict keyed
    by it finds ``T-D0005`` (SRT) under ``codes.SCT.AnatomicalStructure``.
    """
    scheme = code.scheme_designator
    value = code.value
    if scheme == "SRT" and value in _SRT_TO_SCT:
        return ("SCT", _SRT_TO_SCT[value])
    return (scheme, value)


def _item_key(item: ContentItem | Dataset) -> tuple[str, str] | None:
    """Return the :func:`concept_key` of an item's Concept Name, or ``None``.

    A :class:`~kerma.dicom.tree.ContentItem` has it already; for a pydicom dataset only
    Code Value and Coding Scheme Designator are read (not Code Meaning).
    """
    if isinstance(item, ContentItem):
        return item.key
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    name = seq[0]
    value = name.get("CodeValue") or name.get("LongCodeValue") or name.get("URNCodeValue")
    scheme = name.get("CodingSchemeDesignator")
    if not value or not scheme:
        return None
    scheme, value = str(scheme).strip(), str(value).strip()
    if scheme == "SRT" and value in _SRT_TO_SCT:
        return ("SCT", _SRT_TO_SCT[value])
    return (scheme, value)


class ContentIndex:
    """The items of one Content Sequence, indexed once by concept name.

    Parameters
    ----------
    items : sequence of kerma.dicom.tree.ContentItem (or pydicom.dataset.Dataset)
        The content items (children of one container), in document order.
    report : DoseReport, optional
        Receives a warning when an item documented as singular is repeated.
    where : str, optional
        Names the container in warnings, e.g. ``'an irradiation event'``.
    """

    __slots__ = ("_by_key", "items", "report", "where")

    def __init__(
        self, items: Sequence[Any], report: DoseReport | None = None, where: str = ""
    ) -> None:
        self.items = items
        self.report = report
        self.where = where
        self._by_key: dict[tuple[str, str], list[Any]] = {}
        for item in items:
            key = _item_key(item)
            if key is not None:
                self._by_key.setdefault(key, []).append(item)

    @classmethod
    def of(cls, item: Any, report: DoseReport | None = None, where: str = "") -> ContentIndex:
        """Return the index of the children of ``item``."""
        return cls(children(item), report, where)

    def all(self, concept: Code) -> list[Any]:
        """Return every item whose concept name equals ``concept``, in document order."""
        return self._by_key.get(concept_key(concept), [])

    def first(self, concept: Code) -> Any:
        """Return the item of a singular concept; warn and take the first if repeated."""
        found = self._by_key.get(concept_key(concept))
        if not found:
            return None
        if len(found) > 1 and self.report is not None:
            self.report.warn(
                f"{describe(concept)} appears {len(found)} times in {self.where or 'a container'}"
                "; the first is used"
            )
        return found[0]

    def __contains__(self, concept: Code) -> bool:
        """Return whether an item with concept name ``concept`` is present."""
        return concept_key(concept) in self._by_key


def mean_of_nonzero(values: Iterable[float | None]) -> float | None:
    """Return the mean of the non-zero values (EXTRACTION.md, values stored per pulse).

    ``None`` values (empty or unreadable items) are ignored; all-zero values give ``0.0``;
    no value at all gives ``None``.
    """
    numbers = [v for v in values if v is not None]
    if not numbers:
        return None
    nonzero = [v for v in numbers if v != 0]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0


@dataclass(frozen=True)
class _NumericField:
    """How one NUM concept of a container fills one record field."""

    field: str
    concept: Code
    unit: str | None  # canonical unit (kerma.units), None for counts
    template_units: tuple[str, ...] = ()
    per_pulse: bool = False  # 1-n in TID 10003b: mean of the non-zero values


# --- TID 10003 / 10003a / 10003b / 10003c numeric content items ---------------------
#: Numeric fields of an irradiation event, with the units PS3.16 gives each concept.
EVENT_NUMERIC_FIELDS: tuple[_NumericField, ...] = (
    # TID 10003
    _NumericField("dap_gym2", codes.DCM.DoseAreaProduct, UCUM_GYM2, ("Gy.m2",)),
    _NumericField("dose_rp_gy", codes.DCM.DoseRP, UCUM_GY, ("Gy",)),
    _NumericField("entrance_exposure_at_rp_mgy", codes.DCM.EntranceExposureAtRP, UCUM_MGY),
    _NumericField("agd_mgy", codes.DCM.AverageGlandularDose, UCUM_MGY),
    _NumericField("half_value_layer_mm", codes.DCM.HalfValueLayer, UCUM_MM),
    _NumericField("collimated_field_area_m2", codes.DCM.CollimatedFieldArea, UCUM_M2),
    # IEC 62494-1 indices (dimensionless, unit "1"): DCM 113845, 113846, 113847
    _NumericField("exposure_index", codes.DCM.ExposureIndex, None),
    _NumericField("target_exposure_index", codes.DCM.TargetExposureIndex, None),
    _NumericField("deviation_index", codes.DCM.DeviationIndex, None),
    # TID 10003b source
    _NumericField("kvp_kv", codes.DCM.KVP, UCUM_KV, per_pulse=True),
    _NumericField("tube_current_ma", codes.DCM.XRayTubeCurrent, UCUM_MA, per_pulse=True),
    _NumericField("exposure_time_s", EXPOSURE_TIME, UCUM_S, ("ms",)),
    _NumericField("pulse_width_s", codes.DCM.PulseWidth, UCUM_S, ("ms",), per_pulse=True),
    _NumericField("exposure_mas", codes.DCM.Exposure, UCUM_MAS, ("uA.s",), per_pulse=True),
    _NumericField("number_of_pulses", codes.DCM.NumberOfPulses, None),
    _NumericField("pulse_rate_per_s", codes.DCM.PulseRate, UCUM_PER_S, ("{pulse}/s",)),
    _NumericField("irradiation_duration_s", codes.DCM.IrradiationDuration, UCUM_S),
    _NumericField("focal_spot_size_mm", codes.DCM.FocalSpotSize, UCUM_MM, per_pulse=True),
    # TID 10003c mechanical
    _NumericField("compression_thickness_mm", codes.DCM.CompressionThickness, UCUM_MM),
    _NumericField("compression_force_n", codes.DCM.CompressionForce, UCUM_N),
    _NumericField("positioner_primary_angle_deg", codes.DCM.PositionerPrimaryAngle, UCUM_DEG),
    _NumericField("positioner_secondary_angle_deg", codes.DCM.PositionerSecondaryAngle, UCUM_DEG),
    _NumericField("distance_source_to_detector_mm", codes.DCM.DistanceSourceToDetector, UCUM_MM),
    _NumericField("distance_source_to_isocenter_mm", codes.DCM.DistanceSourceToIsocenter, UCUM_MM),
    _NumericField("distance_source_to_rp_mm", codes.DCM.DistanceSourceToReferencePoint, UCUM_MM),
    _NumericField("table_longitudinal_position_mm", codes.DCM.TableLongitudinalPosition, UCUM_MM),
    _NumericField("table_lateral_position_mm", codes.DCM.TableLateralPosition, UCUM_MM),
    _NumericField("table_height_position_mm", codes.DCM.TableHeightPosition, UCUM_MM),
)

#: Coded fields of an irradiation event (the Code Meaning of the value is kept).
EVENT_CODED_FIELDS: tuple[tuple[str, Code], ...] = (
    ("irradiation_event_type", codes.DCM.IrradiationEventType),
    ("acquisition_plane", codes.DCM.AcquisitionPlane),
    ("target_region", codes.DCM.TargetRegion),
    ("anatomical_structure", codes.SCT.AnatomicalStructure),
    ("image_view", codes.DCM.ImageView),
    ("patient_table_relationship", codes.DCM.PatientTableRelationship),
    ("patient_orientation", codes.DCM.PatientOrientation),
)

#: Numeric fields of an 'Accumulated X-Ray Dose Data' container (TID 10002 + 10004).
PLANE_NUMERIC_FIELDS: tuple[_NumericField, ...] = (
    _NumericField("dap_total_gym2", codes.DCM.DoseAreaProductTotal, UCUM_GYM2, ("Gy.m2",)),
    _NumericField("dose_rp_total_gy", codes.DCM.DoseRPTotal, UCUM_GY, ("Gy",)),
    _NumericField(
        "fluoro_dap_total_gym2", codes.DCM.FluoroDoseAreaProductTotal, UCUM_GYM2, ("Gy.m2",)
    ),
    _NumericField("fluoro_dose_rp_total_gy", codes.DCM.FluoroDoseRPTotal, UCUM_GY, ("Gy",)),
    _NumericField(
        "acquisition_dap_total_gym2",
        codes.DCM.AcquisitionDoseAreaProductTotal,
        UCUM_GYM2,
        ("Gy.m2",),
    ),
    _NumericField(
        "acquisition_dose_rp_total_gy", codes.DCM.AcquisitionDoseRPTotal, UCUM_GY, ("Gy",)
    ),
    _NumericField("fluoro_time_total_s", codes.DCM.TotalFluoroTime, UCUM_S),
    _NumericField("acquisition_time_total_s", codes.DCM.TotalAcquisitionTime, UCUM_S),
)


def read_projection_report(
    ds: Dataset, report: DoseReport, *, root: ContentItem | None = None
) -> None:
    """Fill the modality, accumulated totals and irradiation events of a projection report.

    Reads PS3.16 TID 10001 'Projection X-Ray Radiation Dose' below the root container
    'X-Ray Radiation Dose Report' (DCM 113701), or the Siemens private 'Radiation Summary
    Report' (99SMS_RADSUM C-10), which holds study totals only.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The SR document (its root content item is the dataset itself).
    report : DoseReport
        The report to fill; study, device and observer context are already read by
        :func:`kerma.dicom.extract.extract_dataset`. Receives warnings for every item
        that could not be read.

    Notes
    -----
    Units are converted from each item's Measurement Units Code Sequence
    (:func:`kerma.dicom.content.numeric_value`): DAP to Gy·m², Dose (RP) to Gy, AGD and
    Entrance Exposure at RP to mGy, times (Exposure Time and Pulse Width are given in
    ms by TID 10003b) to s, 'Exposure' (DCM 113736, µA·s) to mA·s. A value in a unit
    other than the template's is converted with a warning.

    Concepts PS3.16 allows per pulse (1-n in TID 10003b: 'KVP' DCM 113733,
    'X-Ray Tube Current' DCM 113734, 'Pulse Width' DCM 113793, 'Exposure' DCM 113736,
    'Focal Spot Size' DCM 113766) give the mean of their non-zero values
    (EXTRACTION.md). Other repeated concepts give the first, with a warning.

    The modality rule is :func:`get_study_modality`; each event's is
    :func:`get_event_modality`.

    ``accumulated.total_number_of_irradiation_events`` is 'Total Number of Irradiation
    Events' (DCM 113812) when an accumulated container gives it, else the number of
    event containers in the document (TID 10001 lists every event of its scope).

    No exception is raised on purpose: a missing or unreadable item is a warning on
    ``report`` and the field stays ``None``.
    """
    tree = root if root is not None else content_tree(ds)
    title = concept_of(tree)
    if title is not None and title == local_codes.SIEMENS_RADIATION_SUMMARY_REPORT:
        _read_siemens_radiation_summary(ds, tree, report)
        return

    root_index = ContentIndex(children(tree), report, "the report root (TID 10001)")
    procedure_item = root_index.first(codes.DCM.ProcedureReported)
    procedure = code_value(procedure_item)
    if procedure_item is not None and codes.SCT.HasIntent not in ContentIndex.of(procedure_item):
        report.warn(
            "'Procedure reported' (DCM 121058) has no 'Has Intent' (SCT 363703001) "
            "modifier (TID 10001 requires it); read anyway"
        )
    device_type = code_value(root_index.first(codes.DCM.AcquisitionDeviceType))
    tz_offset = clean_text(ds.get("TimezoneOffsetFromUTC"))

    report.accumulated.planes = []
    plane_codes = [
        _read_accumulated(container, report)
        for container in root_index.all(codes.DCM.AccumulatedXRayDoseData)
    ]

    report.events = []
    event_types: list[Code | None] = []
    for container in root_index.all(codes.DCM.IrradiationEventXRayData):
        event, event_type = _read_event(container, report, tz_offset)
        report.events.append(event)
        event_types.append(event_type)
    if report.accumulated.total_number_of_irradiation_events is None:
        report.accumulated.total_number_of_irradiation_events = len(report.events)

    header_modality = clean_text(ds.get("Modality"))
    modality = get_study_modality(
        procedure=procedure,
        device_type=device_type,
        event_types=event_types,
        planes=report.accumulated.planes,
        acquisition_planes=plane_codes,
        header_modality=header_modality,
    )
    report.study.modality = modality
    for event, event_type in zip(report.events, event_types, strict=True):
        event.modality = get_event_modality(event_type, modality)


# --- modality -------------------------------------------------------------------------


def has_fluoroscopy(event_types: Sequence[Code | None], planes: Sequence[AccumulatedPlane]) -> bool:
    """Return whether a report records fluoroscopy that actually took place.

    True when an event's 'Irradiation Event Type' (DCM 113721) is 'Fluoroscopy'
    (SCT 44491008), or an accumulated container (TID 10004) reports a non-zero
    'Total Fluoro Time' (DCM 113730) or 'Fluoro Dose Area Product Total' (DCM 113726).
    Zero fluoroscopy totals, as a radiography room that can also do fluoroscopy writes
    them (Siemens Fluorospot Compact), do not count.
    """
    if any(is_concept(t, codes.SCT.Fluoroscopy) for t in event_types):
        return True
    return any(
        (p.fluoro_time_total_s or 0) > 0 or (p.fluoro_dap_total_gym2 or 0) > 0 for p in planes
    )


def get_study_modality(
    *,
    procedure: Code | None,
    device_type: Code | None,
    event_types: Sequence[Code | None],
    planes: Sequence[AccumulatedPlane],
    acquisition_planes: Sequence[Code | None] = (),
    header_modality: str | None = None,
) -> str:
    """Return the modality a projection dose report belongs to: MG, RF, XA or DX.

    The rule, in order (first match wins):

    1. 'Procedure reported' (DCM 121058) is 'Mammography' (SCT 71651007), or the
       header (0008,0060) Modality is MG → ``MG``.
    2. The report records fluoroscopy (:func:`has_fluoroscopy`: a 'Fluoroscopy' event,
       or non-zero fluoroscopy totals of TID 10004) → ``XA`` when the system is biplane
       (an accumulated container for 'Plane B', DCM 113621, as only angiography systems
       have) or the header Modality is XA, else ``RF``.
    3. 'Acquisition Device Type' (DCM 122142, CID 10032) is 'Fluoroscopy-Guided
       Projection Radiography System' (DCM 113957) → ``RF`` (a fluoroscopy room that
       reported no X-rays, e.g. a cancelled procedure), unless the report holds
       radiographic events only, which makes it ``DX``.
    4. The report holds irradiation events (all of them acquisitions without
       fluoroscopy), or the Acquisition Device Type is 'Integrated Projection
       Radiography System' (DCM 113958) or 'Cassette-based Projection Radiography
       System' (DCM 113959) → ``DX`` (the header's CR or PX is kept).
    5. No events and no device type: ``RF`` when the accumulated data has fluoroscopy
       totals (TID 10004 is written by fluoroscopy-capable systems), else the header
       Modality when it names a projection modality, else ``DX``.

    A radiography/fluoroscopy ("dual") room such as the Siemens Fluorospot Compact
    writes one RDSR per study with zero fluoroscopy totals for a radiography study:
    by rule 2 and 4 such a study is DX, and a study with fluoroscopy is RF, including
    the single spot acquisitions taken during it, which are part of that fluoroscopy
    examination and counted in its accumulated totals.

    Parameters
    ----------
    procedure : pydicom.sr.coding.Code or None
        Value of 'Procedure reported' (DCM 121058).
    device_type : pydicom.sr.coding.Code or None
        Value of 'Acquisition Device Type' (DCM 122142).
    event_types : sequence of pydicom.sr.coding.Code or None
        'Irradiation Event Type' (DCM 113721) of each event, in order (one per event).
    planes : sequence of AccumulatedPlane
        The accumulated containers read (times in s, DAP in Gy·m²).
    acquisition_planes : sequence of pydicom.sr.coding.Code or None, optional
        'Acquisition Plane' (DCM 113764) of each accumulated container.
    header_modality : str, optional
        (0008,0060) Modality of the SR (usually ``SR``; used only as a tie-breaker).

    Returns
    -------
    str
        ``MG``, ``RF``, ``XA``, ``DX`` (or ``CR``/``PX`` from the header for radiography).
    """
    header = (header_modality or "").upper()
    if is_concept(procedure, codes.SCT.Mammography) or header == "MG":
        return "MG"
    if has_fluoroscopy(event_types, planes):
        biplane = any(is_concept(p, codes.DCM.PlaneB) for p in acquisition_planes)
        return "XA" if biplane or header == "XA" else "RF"
    radiography_header = header if header in {"DX", "CR", "PX"} else "DX"
    if is_concept(device_type, _FLUOROSCOPY_DEVICE_TYPE):
        return radiography_header if event_types else ("XA" if header == "XA" else "RF")
    if event_types or is_any_concept(device_type, _RADIOGRAPHY_DEVICE_TYPES):
        return radiography_header
    has_fluoro_totals = any(
        p.fluoro_time_total_s is not None or p.fluoro_dap_total_gym2 is not None for p in planes
    )
    if has_fluoro_totals:
        return "XA" if header == "XA" else "RF"
    return header if header in PROJECTION_MODALITIES else "DX"


def get_event_modality(event_type: Code | None, study_modality: str) -> str:
    """Return the modality of one irradiation event from its 'Irradiation Event Type'.

    A 'Fluoroscopy' event is RF (or XA in an XA report); in a mammography report every
    event is MG; any other event (an acquisition) belongs to the examination it was
    taken in, i.e. the study modality: DX for radiography without fluoroscopy, RF/XA for
    spot or cine acquisitions of a fluoroscopy procedure (see :func:`get_study_modality`).
    """
    if study_modality == "MG":
        return "MG"
    if is_concept(event_type, codes.SCT.Fluoroscopy):
        return study_modality if study_modality in {"RF", "XA"} else "RF"
    return study_modality


# --- accumulated (TID 10002 / 10004 / 10005) ----------------------------------------------


def _read_numbers(
    index: ContentIndex, fields: Iterable[_NumericField], target: object, report: DoseReport
) -> None:
    """Set the numeric ``fields`` of ``target`` from an indexed container."""
    for spec in fields:
        items = index.all(spec.concept)
        if not items:
            continue
        if spec.per_pulse and len(items) > 1:
            value = mean_of_nonzero(
                numeric_value(i, spec.unit, report, template_units=spec.template_units)
                for i in items
            )
        else:
            item = index.first(spec.concept)
            value = numeric_value(item, spec.unit, report, template_units=spec.template_units)
        setattr(target, spec.field, value)


def _read_accumulated(container: ContentItem, report: DoseReport) -> Code | None:
    """Read one 'Accumulated X-Ray Dose Data' container (DCM 113702) into the report.

    Returns the coded 'Acquisition Plane' (DCM 113764) of the container, or ``None``.
    """
    index = ContentIndex.of(container, report, "an 'Accumulated X-Ray Dose Data' container")
    plane = AccumulatedPlane()
    plane_item = index.first(codes.DCM.AcquisitionPlane)
    plane.acquisition_plane = code_meaning(plane_item, report)
    _read_numbers(index, PLANE_NUMERIC_FIELDS, plane, report)
    frames = numeric_value(index.first(codes.DCM.TotalNumberOfRadiographicFrames), None, report)
    plane.total_number_of_radiographic_frames = as_count(
        frames, report, what=describe(codes.DCM.TotalNumberOfRadiographicFrames)
    )
    plane.reference_point_definition = _code_or_text(
        index.first(codes.DCM.ReferencePointDefinition), report
    )
    events_total = numeric_value(
        index.first(codes.DCM.TotalNumberOfIrradiationEvents), None, report
    )
    if events_total is not None:
        report.accumulated.total_number_of_irradiation_events = as_count(
            events_total, report, what=describe(codes.DCM.TotalNumberOfIrradiationEvents)
        )
    _read_accumulated_agd(index, report)
    report.accumulated.planes.append(plane)
    return code_value(plane_item)


def _read_accumulated_agd(index: ContentIndex, report: DoseReport) -> None:
    """Read TID 10005 'Accumulated Average Glandular Dose' (DCM 111637) by laterality.

    The laterality is the 'Laterality' (SCT 272741003) modifier of each item: 'Left
    breast' (SCT 80248007), 'Right breast' (SCT 73056007) or 'Both breasts'
    (SCT 63762007); the plain 'Left'/'Right'/'Bilateral' qualifiers are accepted too.
    """
    accumulated = report.accumulated
    for item in index.all(codes.DCM.AccumulatedAverageGlandularDose):
        value = numeric_value(item, UCUM_MGY, report)
        side = code_value(ContentIndex.of(item).first(codes.SCT.Laterality))
        if side is None:
            report.warn(
                "'Accumulated Average Glandular Dose' (DCM 111637) has no 'Laterality' "
                "(SCT 272741003); value not kept"
            )
            continue
        if side in (codes.SCT.LeftBreast, codes.SCT.Left):
            field = "agd_total_left_mgy"
        elif side in (codes.SCT.RightBreast, codes.SCT.Right):
            field = "agd_total_right_mgy"
        elif side in (codes.SCT.BothBreasts, codes.SCT.Bilateral):
            field = "agd_total_both_mgy"
        else:
            report.warn(
                f"'Accumulated Average Glandular Dose' (DCM 111637) has laterality "
                f"{describe(side)}, not left, right or both breasts; value not kept"
            )
            continue
        if getattr(accumulated, field) is not None:
            report.warn(
                f"'Accumulated Average Glandular Dose' (DCM 111637) is given twice for "
                f"{side.meaning or field}; the first is kept"
            )
            continue
        setattr(accumulated, field, value)


# --- irradiation events (TID 10003 / 10003a / 10003b / 10003c) ----------------------------


def _read_event(
    container: ContentItem, report: DoseReport, tz_offset: str | None
) -> tuple[IrradiationEvent, Code | None]:
    """Read one 'Irradiation Event X-Ray Data' container (DCM 113706).

    Returns the event and its coded 'Irradiation Event Type' (DCM 113721), or ``None``.
    """
    index = ContentIndex.of(container, report, "an irradiation event (TID 10003)")
    event = IrradiationEvent()
    event.irradiation_event_uid = uid_value(index.first(codes.DCM.IrradiationEventUID))
    event.datetime_started = datetime_value(index.first(codes.DCM.DatetimeStarted), tz_offset)
    for field, concept in EVENT_CODED_FIELDS:
        item = index.first(concept)
        if item is not None:
            setattr(event, field, code_meaning(item, report))
    event_type = code_value(index.first(codes.DCM.IrradiationEventType))
    event.acquisition_protocol = text_value(index.first(codes.DCM.AcquisitionProtocol), report)
    event.comment = text_value(index.first(codes.DCM.Comment), report)
    event.laterality = _event_laterality(index, report)
    orientation = index.first(codes.DCM.PatientOrientation)
    modifier = index.first(codes.DCM.PatientOrientationModifier)
    if modifier is None and orientation is not None:
        modifier = ContentIndex.of(orientation).first(codes.DCM.PatientOrientationModifier)
    event.patient_orientation_modifier = code_meaning(modifier, report)

    _read_numbers(index, EVENT_NUMERIC_FIELDS, event, report)
    if EXPOSURE_TIME not in index and EXPOSURE_TIME_RETIRED in index:
        event.exposure_time_s = numeric_value(
            index.first(EXPOSURE_TIME_RETIRED), UCUM_S, report, template_units=("ms",)
        )
    anode = index.first(codes.DCM.AnodeTargetMaterial)
    if anode is None:  # IMS Giotto sends the non-standard DCM 113632
        anode = index.first(local_codes.ANODE_TARGET_MATERIAL_113632)
    event.anode_target_material = code_meaning(anode, report)
    _read_filters(index, event, report)
    return event, event_type


def _event_laterality(index: ContentIndex, report: DoseReport) -> str | None:
    """Return the 'Laterality' (SCT 272741003) of an event.

    TID 10003 places it as a modifier of 'Target Region' (DCM 123014); mammography
    systems also place it under 'Anatomical structure' (SCT 91723000) or directly in the
    event. The first found in that order (event, target region, anatomical structure)
    is used.
    """
    item = index.first(codes.SCT.Laterality)
    if item is None:
        for parent in (codes.DCM.TargetRegion, codes.SCT.AnatomicalStructure):
            holder = index.first(parent)
            if holder is not None and children(holder):
                item = ContentIndex.of(holder).first(codes.SCT.Laterality)
                if item is not None:
                    break
    return code_meaning(item, report)


def _read_filters(index: ContentIndex, event: IrradiationEvent, report: DoseReport) -> None:
    """Read the 'X-Ray Filters' containers (DCM 113771, TID 10003b) of an event.

    ``xray_filters`` is ``None`` when the event has no X-Ray Filters container (not
    recorded) and ``[]`` when its only containers say 'No filter' (DCM 111609).
    ``xray_filter_material`` joins the materials' Code Meanings with ``', '`` in item
    order; the event-level thickness minimum and maximum are given when every filter is
    of one material (e.g. one copper filter, or the same silver filter per pulse), and
    left empty for a combination of materials (see ``xray_filters`` then).
    """
    containers = index.all(codes.DCM.XRayFilters)
    if not containers:
        return
    filters: list[XRayFilter] = []
    for container in containers:
        fidx = ContentIndex.of(container, report, "an 'X-Ray Filters' container")
        type_item = fidx.first(codes.DCM.XRayFilterType)
        material_item = fidx.first(codes.DCM.XRayFilterMaterial)
        filter_type = code_value(type_item)
        if material_item is None and is_concept(filter_type, codes.DCM.NoFilter):
            continue
        filters.append(
            XRayFilter(
                xray_filter_type=code_meaning(type_item, report),
                xray_filter_material=code_meaning(material_item, report),
                xray_filter_thickness_min_mm=numeric_value(
                    fidx.first(codes.DCM.XRayFilterThicknessMinimum), UCUM_MM, report
                ),
                xray_filter_thickness_max_mm=numeric_value(
                    fidx.first(codes.DCM.XRayFilterThicknessMaximum), UCUM_MM, report
                ),
            )
        )
    event.xray_filters = filters
    materials = [f.xray_filter_material for f in filters if f.xray_filter_material]
    if materials:
        event.xray_filter_material = ", ".join(materials)
    if len(set(materials)) == 1:
        minima = [f.xray_filter_thickness_min_mm for f in filters]
        maxima = [f.xray_filter_thickness_max_mm for f in filters]
        if all(v is not None for v in minima):
            event.xray_filter_thickness_min_mm = min(v for v in minima if v is not None)
        if all(v is not None for v in maxima):
            event.xray_filter_thickness_max_mm = max(v for v in maxima if v is not None)


def _code_or_text(item: ContentItem | None, report: DoseReport) -> str | None:
    """Return the Code Meaning of a CODE item or the text of a TEXT item (vendors use both)."""
    if item is None:
        return None
    if value_type(item) == "TEXT":
        return text_value(item, report)
    return code_meaning(item, report)


# --- Siemens private 'Radiation Summary Report' ------------------------------------------


def _read_siemens_radiation_summary(ds: Dataset, tree: ContentItem, report: DoseReport) -> None:
    """Read the Siemens 'Radiation Summary Report' (99SMS_RADSUM C-10) of ARCADIS C-arms.

    An Enhanced SR with study totals and no irradiation events: 'Cumulative dose area
    product' (C-204), 'Cumulative air kerma' (C-210, the Ka,r total), 'Cumulative fluoro
    time' (C-202) and 'Total number of exposures' (C-200, radiographic frames). They are
    kept as one accumulated container without an acquisition plane; the modality is RF
    (a mobile fluoroscopy C-arm) unless the header says XA.
    """
    index = ContentIndex(children(tree), report, "the Siemens Radiation Summary Report")
    plane = AccumulatedPlane()
    plane.dap_total_gym2 = numeric_value(
        index.first(local_codes.SIEMENS_CUMULATIVE_DAP),
        UCUM_GYM2,
        report,
        template_units=("Gy.cm^2",),
    )
    plane.dose_rp_total_gy = numeric_value(
        index.first(local_codes.SIEMENS_CUMULATIVE_AIR_KERMA),
        UCUM_GY,
        report,
        template_units=("Gy", "mGy"),
    )
    plane.fluoro_time_total_s = numeric_value(
        index.first(local_codes.SIEMENS_CUMULATIVE_FLUORO_TIME), UCUM_S, report
    )
    exposures = numeric_value(
        index.first(local_codes.SIEMENS_TOTAL_NUMBER_OF_EXPOSURES), None, report
    )
    plane.total_number_of_radiographic_frames = as_count(
        exposures, report, what="Siemens 'Total Number of Exposures'"
    )
    report.accumulated.planes = [plane]
    report.events = []
    report.warn(
        "Siemens private 'Radiation Summary Report' (99SMS_RADSUM C-10): study totals only, "
        "no irradiation events"
    )
    header = (clean_text(ds.get("Modality")) or "").upper()
    report.study.modality = "XA" if header == "XA" else "RF"

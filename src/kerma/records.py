"""Plain domain records: what Kerma extracts from one dose object.

These dataclasses are the single vocabulary shared by extraction (``kerma.dicom``),
storage (``kerma.db``), analysis and every interface. A field's name is the same in
the dataclass, the database column, the DataFrame column and the JSON key of
``kerma inspect`` (``../shared/docs/EXTRACTION.md``), and carries its canonical unit
(``ctdivol_mgy``, ``dap_gym2``, ``exposure_time_s``).

This module must not import anything else from Kerma.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Modalities Kerma reads dose objects of (the keys of
#: ``kerma.dicom.headers.KIND_BY_MODALITY``; RDSRs report one of these too).
DOSE_MODALITIES: tuple[str, ...] = ("CR", "CT", "DX", "IO", "MG", "NM", "PT", "PX", "RF", "XA")

#: The study summary columns, derived from a study's reports at ingest
#: (``kerma.analysis.summary.summarise_study`` computes them, ``kerma.db.summary`` stores
#: them in the ``study`` table): one list for both layers.
STUDY_SUMMARY_COLUMNS: tuple[str, ...] = (
    "number_of_events",
    "number_of_reports",
    "modality_family",
    "acquisition_protocols",
    "target_regions",
    "anatomical_structures",
    "image_views",
    "lateralities",
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "ctdivol_max_mgy",
    "kvp_kv",
    "ssde_mgy",
    "ssde_size_mm",
    "ssde_size_source",
    "ssde_reference",
    "effective_dose_msv",
    "effective_dose_k_msv_per_mgycm",
    "effective_dose_reference",
    "dap_total_gym2",
    "dap_total_plane_a_gym2",
    "dap_total_plane_b_gym2",
    "dose_rp_total_gy",
    "dose_rp_total_plane_a_gy",
    "dose_rp_total_plane_b_gy",
    "fluoro_time_total_s",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "administered_activity_total_mbq",
    "image_size_mm",
    "image_size_source",
)


class ReportKind(StrEnum):
    """Kind of dose object (EXTRACTION.md, top-level ``kind``)."""

    RDSR_CT = "rdsr-ct"
    RDSR_PROJECTION = "rdsr-projection"
    RDSR_RADIOPHARMACEUTICAL = "rdsr-radiopharmaceutical"
    HEADER_DX = "header-dx"
    HEADER_MG = "header-mg"
    HEADER_RF = "header-rf"
    HEADER_CT = "header-ct"
    HEADER_NM = "header-nm"
    HEADER_PT = "header-pt"
    DOSE_SHEET_CT = "dose-sheet-ct"


class SizeDirection(StrEnum):
    """What a patient size measured on a CT image is (``patient_size_measurement.direction``).

    ``dw``: the AAPM Report 220 water-equivalent diameter of an axial image; ``lat`` /
    ``ap``: the patient's geometric width on a localizer, left-right (AP/PA localizer) or
    front-back (lateral localizer), AAPM Report 204.
    """

    DW = "dw"
    LAT = "lat"
    AP = "ap"


#: ``method`` of an axial-image measurement (AAPM Report 220 Dw); shared by the image
#: measurement (``kerma.dicom.size``) and the store, which derives ``direction`` from it.
SIZE_METHOD_AXIAL_DW = "AAPM Report 220 water-equivalent diameter (axial image)"
#: ``method`` of a localizer width measured across the patient, left to right.
SIZE_METHOD_LOCALIZER_LAT = "geometric LAT width (AP/PA localizer)"
#: ``method`` of a localizer width measured front to back.
SIZE_METHOD_LOCALIZER_AP = "geometric AP width (lateral localizer)"


def size_direction(image_type: str, method: str | None) -> SizeDirection | None:
    """Return the :class:`SizeDirection` of a stored size measurement.

    Parameters
    ----------
    image_type : {'axial', 'localizer'}
        What the image is.
    method : str or None
        The measurement method, starting with one of the ``SIZE_METHOD_*`` texts.

    Returns
    -------
    SizeDirection or None
        ``dw`` for an axial image; ``lat`` / ``ap`` for a localizer by its method;
        ``None`` for a localizer whose method names neither.
    """
    if image_type == "axial":
        return SizeDirection.DW
    text = method or ""
    if text.startswith(SIZE_METHOD_LOCALIZER_LAT):
        return SizeDirection.LAT
    if text.startswith(SIZE_METHOD_LOCALIZER_AP):
        return SizeDirection.AP
    return None


#: Prefix of the display form of a patient pseudonym (:func:`display_pseudonym`).
PSEUDONYM_DISPLAY_PREFIX = "P-"

#: Base32 characters of the display form: 50 bits, so two of a million patients share a
#: display form with a probability of about 4e-4 (the full pseudonym stays the key).
PSEUDONYM_DISPLAY_LENGTH = 10


def display_pseudonym(pseudonym: str | None) -> str | None:
    """Return the short, stable display form of a patient pseudonym, e.g. ``P-K5QW2MZT4A``.

    The first :data:`PSEUDONYM_DISPLAY_LENGTH` characters of the RFC 4648 base32 of the
    HMAC-SHA-256 digest (the 64 hex characters of ``patient.pseudonym``), after
    :data:`PSEUDONYM_DISPLAY_PREFIX`. Needs no key; the same pseudonym always gives the
    same form, in every table (studies, cumulative dose, ``kerma patient``).

    Parameters
    ----------
    pseudonym : str or None
        The stored pseudonym (hex). A value that is not hex is shown as given.

    Returns
    -------
    str or None
        ``None`` for a missing pseudonym.
    """
    if pseudonym is None or pseudonym != pseudonym:  # None or NaN
        return None
    text = str(pseudonym)
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        return text
    encoded = base64.b32encode(digest).decode("ascii")
    return PSEUDONYM_DISPLAY_PREFIX + encoded[:PSEUDONYM_DISPLAY_LENGTH]


@dataclass
class PatientIdentity:
    """Identifying attributes read only to pseudonymise and to detect QA studies.

    Never serialised, never stored, never logged: ``kerma.ingest`` turns it into a
    keyed HMAC-SHA-256 pseudonym and a non-patient flag, then drops it.
    """

    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None

    def __repr__(self) -> str:  # never leak identity through a repr or a traceback
        return "PatientIdentity(<redacted>)"


@dataclass
class StudyInfo:
    """Study-level attributes (EXTRACTION.md ``study``)."""

    study_instance_uid: str | None = None
    accession_number: str | None = None
    study_date: str | None = None  # YYYY-MM-DD
    study_time: str | None = None  # HH:MM:SS[.ffffff]
    study_description: str | None = None
    modality: str | None = None
    procedure_reported: str | None = None
    patient_age_years: float | None = None
    patient_sex: str | None = None
    patient_weight_kg: float | None = None
    patient_size_m: float | None = None
    requested_procedure_description: str | None = None
    series_description: str | None = None


@dataclass
class DeviceInfo:
    """Equipment attributes and the TID 1004 device observer (EXTRACTION.md ``device``)."""

    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    device_serial_number: str | None = None
    station_name: str | None = None
    institution_name: str | None = None
    software_versions: str | None = None
    device_observer_uid: str | None = None


@dataclass
class AccumulatedPlane:
    """One Accumulated X-Ray Dose container, TID 10002 (+ 10004 fluoro/acquisition)."""

    acquisition_plane: str | None = None
    dap_total_gym2: float | None = None
    fluoro_dap_total_gym2: float | None = None
    acquisition_dap_total_gym2: float | None = None
    fluoro_time_total_s: float | None = None
    acquisition_time_total_s: float | None = None
    dose_rp_total_gy: float | None = None
    fluoro_dose_rp_total_gy: float | None = None
    acquisition_dose_rp_total_gy: float | None = None
    total_number_of_radiographic_frames: int | None = None
    reference_point_definition: str | None = None


@dataclass
class Accumulated:
    """Study-level totals: TID 10012 (CT), TID 10002/10004/10005/10007 (projection)."""

    total_number_of_irradiation_events: int | None = None
    ct_dlp_total_mgycm: float | None = None
    planes: list[AccumulatedPlane] = field(default_factory=list)
    agd_total_left_mgy: float | None = None
    agd_total_right_mgy: float | None = None
    agd_total_both_mgy: float | None = None


@dataclass
class XRaySource:
    """CT X-Ray Source Parameters, TID 10013 (one per source of a dual-source event)."""

    identification: str | None = None
    kvp_kv: float | None = None
    maximum_tube_current_ma: float | None = None
    tube_current_ma: float | None = None
    exposure_time_per_rotation_s: float | None = None


@dataclass
class XRayFilter:
    """One X-Ray Filters container, TID 10003b."""

    xray_filter_type: str | None = None
    xray_filter_material: str | None = None
    xray_filter_thickness_min_mm: float | None = None
    xray_filter_thickness_max_mm: float | None = None


@dataclass
class IrradiationEvent:
    """One irradiation event (or, for radiopharmaceuticals, one administration).

    One class for every modality: fields that do not apply stay ``None``. Units are
    in the names (EXTRACTION.md ``events[]``).
    """

    # common
    irradiation_event_uid: str | None = None
    modality: str | None = None
    datetime_started: str | None = None
    irradiation_event_type: str | None = None
    acquisition_protocol: str | None = None
    comment: str | None = None
    target_region: str | None = None
    # CT, TID 10013/10014/10015
    ct_acquisition_type: str | None = None
    exposure_time_s: float | None = None
    scanning_length_mm: float | None = None
    nominal_single_collimation_width_mm: float | None = None
    nominal_total_collimation_width_mm: float | None = None
    pitch_factor: float | None = None
    number_of_xray_sources: int | None = None
    ctdivol_mgy: float | None = None
    dlp_mgycm: float | None = None
    ctdiw_phantom_type: str | None = None
    ctdivol_alert_value_mgy: float | None = None
    ctdivol_notification_value_mgy: float | None = None
    dlp_notification_value_mgycm: float | None = None
    water_equivalent_diameter_mm: float | None = None
    xray_sources: list[XRaySource] | None = None
    # projection, TID 10003/10003a/b/c
    acquisition_plane: str | None = None
    anatomical_structure: str | None = None
    laterality: str | None = None
    image_view: str | None = None
    dap_gym2: float | None = None
    dose_rp_gy: float | None = None
    entrance_exposure_at_rp_mgy: float | None = None
    agd_mgy: float | None = None
    half_value_layer_mm: float | None = None
    kvp_kv: float | None = None
    tube_current_ma: float | None = None
    pulse_width_s: float | None = None
    exposure_mas: float | None = None
    number_of_pulses: float | None = None
    pulse_rate_per_s: float | None = None
    irradiation_duration_s: float | None = None
    focal_spot_size_mm: float | None = None
    xray_filter_material: str | None = None
    xray_filter_thickness_min_mm: float | None = None
    xray_filter_thickness_max_mm: float | None = None
    xray_filters: list[XRayFilter] | None = None
    anode_target_material: str | None = None
    compression_thickness_mm: float | None = None
    compression_force_n: float | None = None
    positioner_primary_angle_deg: float | None = None
    positioner_secondary_angle_deg: float | None = None
    collimated_field_area_m2: float | None = None
    distance_source_to_detector_mm: float | None = None
    distance_source_to_isocenter_mm: float | None = None
    distance_source_to_rp_mm: float | None = None
    table_longitudinal_position_mm: float | None = None
    table_lateral_position_mm: float | None = None
    table_height_position_mm: float | None = None
    patient_table_relationship: str | None = None
    patient_orientation: str | None = None
    patient_orientation_modifier: str | None = None
    # image headers
    entrance_dose_mgy: float | None = None
    exposure_index: float | None = None
    target_exposure_index: float | None = None
    deviation_index: float | None = None
    #: (0018,700A) Detector ID of the image (issue #17: quality per detector)
    detector_id: str | None = None
    #: (0018,6000) Sensitivity and (0018,1405) Relative X-Ray Exposure as stored: vendor
    #: exposure indices (e.g. Fuji/Konica S value, Carestream EI, Siemens EXI), never IEC EI
    sensitivity: float | None = None
    relative_xray_exposure: float | None = None
    # radiopharmaceutical, TID 10021 and image headers
    radiopharmaceutical_agent: str | None = None
    radionuclide: str | None = None
    radionuclide_half_life_s: float | None = None
    administered_activity_mbq: float | None = None
    radiopharmaceutical_start_datetime: str | None = None
    radiopharmaceutical_stop_datetime: str | None = None
    route_of_administration: str | None = None
    radiopharmaceutical_volume_ml: float | None = None


#: Scalar event fields, in declaration order (the columns of ``irradiation_event``).
EVENT_SCALAR_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(IrradiationEvent)
    if f.name not in {"xray_sources", "xray_filters"}
)


@dataclass
class DoseReport:
    """Everything Kerma extracts from one dose object (EXTRACTION.md, top level).

    ``identity`` is kept in memory for pseudonymisation only and is never part of
    :meth:`to_dict`.
    """

    kind: ReportKind
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study: StudyInfo = field(default_factory=StudyInfo)
    device: DeviceInfo = field(default_factory=DeviceInfo)
    accumulated: Accumulated = field(default_factory=Accumulated)
    events: list[IrradiationEvent] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    identity: PatientIdentity = field(default_factory=PatientIdentity, repr=False)
    file: str | None = None

    def warn(self, message: str) -> None:
        """Record a non-fatal reading problem on the report."""
        if message not in self.warnings:
            self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        """Return the EXTRACTION.md JSON object for this report (no patient identity).

        Event fields that the object does not hold are left out; study, device and
        accumulated keys are always present (``None`` when not held).
        """
        accumulated = dataclasses.asdict(self.accumulated)
        warnings = list(self.warnings)
        out = {
            "file": self.file,
            "status": "ok",
            "kind": str(self.kind),
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "study": _finite(dataclasses.asdict(self.study), "study", warnings),
            "device": dataclasses.asdict(self.device),
            "accumulated": _finite(accumulated, "accumulated", warnings),
            "events": [
                _finite(event_to_dict(e), f"event {n}", warnings)
                for n, e in enumerate(self.events, start=1)
            ],
            "warnings": warnings,
        }
        return out


def _finite(value: Any, where: str, warnings: list[str]) -> Any:
    """Return ``value`` with NaN and infinite floats replaced by ``None``, each warned.

    JSON (RFC 8259) has no NaN or Infinity; a record must stay valid JSON, and a value
    that is not a finite number must not vanish without a word (issue #11).
    """
    if isinstance(value, float) and not math.isfinite(value):
        message = f"{where}: {value!r} is not a finite number; shown as null"
        if message not in warnings:
            warnings.append(message)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where} {k}", warnings) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{where}[{i}]", warnings) for i, v in enumerate(value)]
    return value


def event_to_dict(event: IrradiationEvent) -> dict[str, Any]:
    """Return one event as a JSON-ready dict, leaving out fields that are ``None``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if value is None:
            continue
        if f.name in {"xray_sources", "xray_filters"}:
            value = [dict(dataclasses.asdict(x).items()) for x in value]
        out[f.name] = value
    return out


@dataclass
class Rejection:
    """An object that is not a dose object or cannot be read, with the reason."""

    reason: str
    file: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the EXTRACTION.md JSON object of a rejected file."""
        return {
            "file": self.file,
            "status": "rejected",
            "reject_reason": self.reason,
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
        }

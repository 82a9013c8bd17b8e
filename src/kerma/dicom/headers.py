"""Dose and technique read from image headers: one irradiation event per image.

Radiography (CR, DX, PX, IO), mammography (2D, For Presentation and For Processing,
breast tomosynthesis), single fluoroscopy/angiography images (RF, XA), CT images, and
nuclear medicine / PET images carry their dose in attributes of the image itself (PS3.3
C.8.11.7 DX Image, C.8.11.5 X-Ray Acquisition Dose, C.8.11.6 X-Ray Generation, C.8.11.7
Mammography Image, C.8.2.1 CT Image, C.8.4.10 NM Isotope, C.8.9.2 PET Isotope). This
module turns those attributes into one :class:`kerma.records.IrradiationEvent` in the
canonical units of EXTRACTION.md, converting once from each attribute's defined unit:

============================================  ===========  ======================
attribute                                     defined unit  field (canonical unit)
============================================  ===========  ======================
(0018,115E) Image and Fluoroscopy Area Dose   dGy·cm²      ``dap_gym2`` (× 1e-5)
Product
(0040,0316) Organ Dose (mammography: AGD)     dGy          ``agd_mgy`` (× 100)
(0040,8302) Entrance Dose in mGy              mGy          ``entrance_dose_mgy``
(0040,0302) Entrance Dose                     dGy          ``entrance_dose_mgy`` (× 100)
(0018,9345) CTDIvol                           mGy          ``ctdivol_mgy``
(0018,1153) Exposure in µAs                   µAs          ``exposure_mas`` (× 1e-3)
(0018,9332) Exposure in mAs / (0018,1152)     mAs          ``exposure_mas``
(0018,8150) Exposure Time in µS               µs           ``exposure_time_s`` (× 1e-6)
(0018,9328) Exposure Time in ms / (0018,1150) ms           ``exposure_time_s`` (× 1e-3)
(0018,8151) X-Ray Tube Current in µA          µA           ``tube_current_ma`` (× 1e-3)
(0018,9330) X-Ray Tube Current in mA /        mA           ``tube_current_ma``
(0018,1151)
(0018,1074) Radionuclide Total Dose, NM      MBq          ``administered_activity_mbq``
Image
(0018,1074) Radionuclide Total Dose, PET     Bq           ``administered_activity_mbq``
Image (and Enhanced / Legacy Converted PET)                (× 1e-6)
============================================  ===========  ======================

The more precise attribute is preferred where the standard defines two (µAs before mAs,
µs before ms, µA before mA). An attribute missing from the image itself is also looked
for where the enhanced (multi-frame) IODs keep it: the first item of the Shared, then
the Per-frame Functional Groups, and the X-Ray 3D Acquisition Sequence (0018,9507) of
breast tomosynthesis.

Vendor rules (each recognised by device *and* value range, converted, and reported in
``warnings``; EXTRACTION.md):

- KODAK / Carestream DR 7500 (software 4.0.3) writes (0018,1110) Distance Source to
  Detector in dm (``11.5`` for a 1150 mm SID): a value below 30 from a KODAK or
  Carestream device is taken as dm.

Radionuclide Total Dose has two units in PS3.3, one per IOD, whatever the manufacturer:
C.8.4.10.1.7 (NM Isotope Module of the NM Image IOD): "the radiopharmaceutical dose
administered to the patient measured in MegaBecquerels (MBq) at the Radiopharmaceutical
Start Time"; Table C.8-61 (PET Isotope Module of the PET Image IOD, and the Enhanced
PET Isotope Module): "... measured in Becquerels (Bq) at the Radiopharmaceutical Start
Time (0018,1072)". DICOM WG-3 kept the inconsistency on purpose (D. Clunie's answer,
quoted in NIH MIPAV's SUV plug-in: "in NM instances, the units are MBq, and in PET
instances they are in Bq ... Folks affected have generally addressed this concern by
doing a sanity check on the magnitude"). So the unit is chosen by the SOP class (the
Modality when the SOP class is neither), then checked by magnitude both ways: no
diagnostic or therapeutic administration is below :data:`ACTIVITY_MBQ_PLAUSIBLE_MIN`
or above :data:`ACTIVITY_MBQ_PLAUSIBLE_MAX`; a value implausible in the IOD's unit but
plausible in the other (an NM image holding Bq, ``740000000``) is converted with a
warning (``../shared/cases/C24``). Siemens NM cameras (``764`` in an NM image) follow
the standard: no vendor rule is needed.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from pydicom import uid
from pydicom.dataset import Dataset

from kerma.dicom.common import format_date, format_time, get_number, get_text, split_time
from kerma.dicom.content import code_from, format_dicom_datetime, parse_number, sequence_items
from kerma.dicom.decode_errors import DECODE_ERRORS
from kerma.errors import NotADoseReportError
from kerma.records import DoseReport, IrradiationEvent, ReportKind, XRaySource
from kerma.units import BQ_TO_MBQ, DGY_TO_MGY, DGYCM2_TO_GYM2, MS_TO_S, UAS_TO_MAS

logger = logging.getLogger(__name__)

US_TO_S: Final = 1e-6  # (0018,8150) Exposure Time in uS
UA_TO_MA: Final = 1e-3  # (0018,8151) X-Ray Tube Current in uA
DM_TO_MM: Final = 100.0

#: Report kind by (0008,0060) Modality (EXTRACTION.md: ``header-dx`` covers CR, DX, PX).
KIND_BY_MODALITY: Final[dict[str, ReportKind]] = {
    "CR": ReportKind.HEADER_DX,
    "DX": ReportKind.HEADER_DX,
    "PX": ReportKind.HEADER_DX,
    "IO": ReportKind.HEADER_DX,
    "MG": ReportKind.HEADER_MG,
    "RF": ReportKind.HEADER_RF,
    "XA": ReportKind.HEADER_RF,
    "CT": ReportKind.HEADER_CT,
    "NM": ReportKind.HEADER_NM,
    "PT": ReportKind.HEADER_PT,
}

#: Report kind by SOP class, used when Modality is missing or not an imaging modality.
KIND_BY_SOP_CLASS: Final[dict[str, ReportKind]] = {
    uid.ComputedRadiographyImageStorage: ReportKind.HEADER_DX,
    uid.DigitalXRayImageStorageForPresentation: ReportKind.HEADER_DX,
    uid.DigitalXRayImageStorageForProcessing: ReportKind.HEADER_DX,
    uid.DigitalIntraOralXRayImageStorageForPresentation: ReportKind.HEADER_DX,
    uid.DigitalIntraOralXRayImageStorageForProcessing: ReportKind.HEADER_DX,
    uid.DigitalMammographyXRayImageStorageForPresentation: ReportKind.HEADER_MG,
    uid.DigitalMammographyXRayImageStorageForProcessing: ReportKind.HEADER_MG,
    uid.BreastTomosynthesisImageStorage: ReportKind.HEADER_MG,
    uid.BreastProjectionXRayImageStorageForPresentation: ReportKind.HEADER_MG,
    uid.BreastProjectionXRayImageStorageForProcessing: ReportKind.HEADER_MG,
    uid.XRayAngiographicImageStorage: ReportKind.HEADER_RF,
    uid.EnhancedXAImageStorage: ReportKind.HEADER_RF,
    uid.XRayRadiofluoroscopicImageStorage: ReportKind.HEADER_RF,
    uid.EnhancedXRFImageStorage: ReportKind.HEADER_RF,
    uid.CTImageStorage: ReportKind.HEADER_CT,
    uid.EnhancedCTImageStorage: ReportKind.HEADER_CT,
    uid.LegacyConvertedEnhancedCTImageStorage: ReportKind.HEADER_CT,
    uid.NuclearMedicineImageStorage: ReportKind.HEADER_NM,
    uid.PositronEmissionTomographyImageStorage: ReportKind.HEADER_PT,
    uid.EnhancedPETImageStorage: ReportKind.HEADER_PT,
    uid.LegacyConvertedEnhancedPETImageStorage: ReportKind.HEADER_PT,
}

#: The modality a kind stands for when the image does not name its own.
MODALITY_OF_KIND: Final[dict[ReportKind, str]] = {
    ReportKind.HEADER_DX: "DX",
    ReportKind.HEADER_MG: "MG",
    ReportKind.HEADER_RF: "RF",
    ReportKind.HEADER_CT: "CT",
    ReportKind.HEADER_NM: "NM",
    ReportKind.HEADER_PT: "PT",
}

#: Attributes whose presence makes an image a dose object: (keyword, tag and name).
DOSE_ATTRIBUTES: Final[tuple[tuple[str, str], ...]] = (
    ("ImageAndFluoroscopyAreaDoseProduct", "(0018,115E) 'Image and Fluoroscopy Area Dose Product'"),
    ("OrganDose", "(0040,0316) 'Organ Dose'"),
    ("EntranceDoseInmGy", "(0040,8302) 'Entrance Dose in mGy'"),
    ("CTDIvol", "(0018,9345) 'CTDIvol'"),
    ("ExposureInuAs", "(0018,1153) 'Exposure in uAs'"),
    ("ExposureInmAs", "(0018,9332) 'Exposure in mAs'"),
    ("Exposure", "(0018,1152) 'Exposure'"),
    ("KVP", "(0018,0060) 'KVP'"),
    (
        "RadiopharmaceuticalInformationSequence",
        "(0054,0016) 'Radiopharmaceutical Information Sequence'",
    ),
)

#: (0018,9302) Acquisition Type (PS3.3 C.8.15.3.8) -> CID 10013 code meaning.
CT_ACQUISITION_TYPES: Final[dict[str, str]] = {
    "SEQUENCED": "Sequenced Acquisition",
    "SPIRAL": "Spiral Acquisition",
    "CONSTANT_ANGLE": "Constant Angle Acquisition",
    "STATIONARY": "Stationary Acquisition",
    "FREE": "Free Acquisition",
}

#: (0020,0062) Image Laterality / (0020,0060) Laterality -> EXTRACTION.md vocabulary.
LATERALITY: Final[dict[str, str]] = {"L": "Left", "R": "Right", "B": "Both", "U": "Unpaired"}

#: (Manufacturer prefix, Software Versions prefix) of devices that write the acquisition
#: protocol into (0020,4000) Image Comments (OpenREM #482: Toshiba Radrex, TM_TFD_1.0).
PROTOCOL_IN_IMAGE_COMMENTS: Final = (("TOSHIBA_MEC", "TM_TFD"),)

#: Element symbols (and names) in vendor Filter Type terms -> (0018,7050) Filter
#: Material defined terms (PS3.3 C.8.7.10) or the element's name.
FILTER_MATERIAL_SYMBOLS: Final[dict[str, str]] = {
    "CU": "COPPER",
    "COPPER": "COPPER",
    "AL": "ALUMINUM",
    "ALUMINUM": "ALUMINUM",
    "ALUMINIUM": "ALUMINUM",
    "MO": "MOLYBDENUM",
    "MOLYBDENUM": "MOLYBDENUM",
    "RH": "RHODIUM",
    "RHODIUM": "RHODIUM",
    "AG": "SILVER",
    "SILVER": "SILVER",
    "NB": "NIOBIUM",
    "NIOBIUM": "NIOBIUM",
    "EU": "EUROPIUM",
    "EUROPIUM": "EUROPIUM",
    "PB": "LEAD",
    "LEAD": "LEAD",
    "SN": "TIN",
    "TIN": "TIN",
    "TA": "TANTALUM",
    "W": "TUNGSTEN",
    "ER": "ERBIUM",
}
_FILTER_THICKNESS = r"(?P<thickness>\d+(?:[.,]\d+)?)"
_FILTER_MATERIAL = r"(?P<material>[A-Z]+)"
#: ``CU_0.1_MM``, ``Cu 0.1mm``, ``CU0.1``.
FILTER_TERM_MATERIAL_FIRST: Final = re.compile(
    rf"{_FILTER_MATERIAL}[\s_-]*{_FILTER_THICKNESS}[\s_-]*(?:MM)?"
)
#: ``0.1_MM_CU``, ``0.1 mm Cu``.
FILTER_TERM_THICKNESS_FIRST: Final = re.compile(
    rf"{_FILTER_THICKNESS}[\s_-]*MM[\s_-]*{_FILTER_MATERIAL}"
)
FILTER_TERM_SEPARATOR: Final = re.compile(r"[+/,;&]| AND ")

#: Devices known to write (0018,1110) in dm (seen: KODAK DR 7500, software 4.0.3.B8.P6).
SID_IN_DM_MANUFACTURERS: Final = ("KODAK", "CARESTREAM")
#: Below this, a Distance Source to Detector cannot be mm (no SID is under 3 cm).
SID_DM_BELOW: Final = 30.0
#: Below this (mm), a Distance Source to Detector is implausible for any X-ray device.
SID_MM_PLAUSIBLE_MIN: Final = 100.0

#: SOP classes whose (0018,1074) Radionuclide Total Dose is in MBq (PS3.3 C.8.4.10.1.7,
#: NM Isotope Module); the retired NM Image Storage class is included.
ACTIVITY_MBQ_SOP_CLASSES: Final = frozenset(
    {uid.NuclearMedicineImageStorage, "1.2.840.10008.5.1.4.1.1.5"}
)
#: SOP classes whose (0018,1074) is in Bq (PS3.3 Table C.8-61 PET Isotope Module; the
#: Enhanced PET Isotope Module of Enhanced PET Image keeps the PET definition).
ACTIVITY_BQ_SOP_CLASSES: Final = frozenset(
    {
        uid.PositronEmissionTomographyImageStorage,
        uid.EnhancedPETImageStorage,
        uid.LegacyConvertedEnhancedPETImageStorage,
    }
)
#: Plausible range of one administered activity (MBq): below 0.1 MBq or above 1e5 MBq
#: (100 GBq, beyond any diagnostic or therapeutic administration, e.g. 7.4 GBq of
#: I-131 or Lu-177) a value must be in the other unit (``../shared/cases/C24`` rule).
ACTIVITY_MBQ_PLAUSIBLE_MIN: Final = 0.1
ACTIVITY_MBQ_PLAUSIBLE_MAX: Final = 1e5

_FUNCTIONAL_GROUPS: Final = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
#: Secondary Capture SOP classes (a vendor dose screen is stored as one of these).
SECONDARY_CAPTURE_CLASSES: Final = frozenset(
    {
        uid.SecondaryCaptureImageStorage,
        uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    }
)


def read_image_header(ds: Dataset, report: DoseReport) -> None:
    """Fill the kind, modality and the one irradiation event of an image.

    ``report`` already holds the study, device and SOP identifiers
    (:func:`kerma.dicom.common.fill_common`); this adds ``report.kind``,
    ``report.study.modality`` (the image's own (0008,0060) Modality: ``CR``, ``DX``,
    ``PX``, ``MG``, ``RF``, ``XA``, ``CT``, ``NM``, ``PT``) and exactly one event.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An image (any non-SR object that is not a vendor dose screen).
    report : DoseReport
        The record being filled; missing or odd attributes become warnings on it.

    Raises
    ------
    NotADoseReportError
        When the image holds none of the dose or technique attributes listed in
        :data:`DOSE_ATTRIBUTES` (e.g. an MR image or a plain secondary capture).

    Notes
    -----
    Units are converted from each attribute's defined unit (module docstring table).
    ``irradiation_event_uid`` comes from (0008,3010) Irradiation Event UID (X-ray) or
    (0008,3012) Radiopharmaceutical Administration Event UID (NM/PET) when present;
    ``datetime_started`` is always filled when a date and time can be found, so that
    the same exposure sent For Presentation and For Processing gives the same
    (device, ``datetime_started``, values) identity.
    """
    modality = get_text(ds, "Modality", report)
    _require_dose_information(ds, report, modality)
    kind = _kind(ds, modality, report)
    report.kind = kind
    known = modality is not None and modality.upper() in KIND_BY_MODALITY
    report.study.modality = modality.upper() if known and modality else MODALITY_OF_KIND[kind]
    event = IrradiationEvent(modality=report.study.modality)
    event.irradiation_event_uid = get_text(ds, "IrradiationEventUID")
    event.datetime_started = acquisition_datetime(ds, report)
    event.acquisition_protocol = _acquisition_protocol(ds, report)
    if kind in (ReportKind.HEADER_NM, ReportKind.HEADER_PT):
        _read_radiopharmaceutical(ds, event, report)
    else:
        _read_technique(ds, event, report)
        if kind is ReportKind.HEADER_CT:
            _read_ct(ds, event, report)
        else:
            _read_projection(ds, event, report, kind)
    report.events = [event]


def _require_dose_information(ds: Dataset, report: DoseReport, modality: str | None) -> None:
    """Raise :class:`NotADoseReportError` when no dose or technique attribute is present."""
    for keyword, _ in DOSE_ATTRIBUTES:
        holder = find_holder(ds, keyword)
        if holder is not None:
            return
    names = ", ".join(name for _, name in DOSE_ATTRIBUTES)
    sop_class = report.sop_class_uid or "unknown"
    class_name = uid.UID(sop_class).name if report.sop_class_uid else sop_class
    if class_name != sop_class:
        sop_class = f"{class_name} ({sop_class})"
    hint = ""
    if report.sop_class_uid in SECONDARY_CAPTURE_CLASSES and _looks_like_dose_screen(ds):
        hint = (
            " It looks like a dose screen whose values are only burned into its pixels, "
            "which Kerma does not read; send the device's RDSR instead."
        )
    raise NotADoseReportError(
        f"Image {report.sop_instance_uid} (Modality {modality or 'not given'}, SOP class "
        f"{sop_class}) holds no dose information: none of {names} is present.{hint} Nothing "
        "to import.",
        sop_instance_uid=report.sop_instance_uid,
    )


def _looks_like_dose_screen(ds: Dataset) -> bool:
    """Return whether Image Type or Series Description names a dose screen."""
    image_type = get_text(ds, "ImageType") or ""
    series = get_text(ds, "SeriesDescription") or ""
    return "DOSE" in image_type.upper() or "DOSE" in series.upper()


def _kind(ds: Dataset, modality: str | None, report: DoseReport) -> ReportKind:
    """Return the report kind from Modality, else the SOP class, else the dose attributes."""
    if modality and modality.upper() in KIND_BY_MODALITY:
        return KIND_BY_MODALITY[modality.upper()]
    by_class = KIND_BY_SOP_CLASS.get(report.sop_class_uid or "")
    if by_class is not None:
        report.warn(
            f"(0008,0060) Modality {modality!r} is not an X-ray or nuclear medicine modality; "
            f"read as {by_class} from the SOP class"
        )
        return by_class
    if find_holder(ds, "RadiopharmaceuticalInformationSequence") is not None:
        kind = ReportKind.HEADER_NM
    elif find_holder(ds, "CTDIvol") is not None:
        kind = ReportKind.HEADER_CT
    else:
        kind = ReportKind.HEADER_DX
    report.warn(
        f"(0008,0060) Modality {modality!r} and SOP class {report.sop_class_uid} do not say "
        f"which kind of image this is; read as {kind} from its dose attributes"
    )
    return kind


def find_holder(ds: Dataset, keyword: str) -> Dataset | None:
    """Return the dataset holding a non-empty ``keyword``, looking where enhanced IODs keep it.

    Looks in ``ds`` itself, then in the first item of each sequence of the first item of
    the Shared and Per-frame Functional Groups Sequences (e.g. (0018,9321) CT Exposure
    Sequence), then in the first item of (0018,9507) X-Ray 3D Acquisition Sequence.

    Returns
    -------
    pydicom.dataset.Dataset or None
        ``None`` when the attribute is absent or empty everywhere.
    """
    if _has_value(ds, keyword):
        return ds
    for group in _FUNCTIONAL_GROUPS:
        seq = sequence_items(ds, group)
        if not seq:
            continue
        for elem in seq[0]:
            if elem.VR != "SQ":
                continue
            items = sequence_items(seq[0], elem.tag)
            if items and _has_value(items[0], keyword):
                return items[0]
    seq = sequence_items(ds, "XRay3DAcquisitionSequence")
    if seq and _has_value(seq[0], keyword):
        return seq[0]
    return None


def scaled(value: float | None, factor: float) -> float | None:
    """Return ``value * factor`` rounded to 12 significant digits (no binary noise), or ``None``.

    The attributes are decimal strings with far fewer digits, so the rounding loses
    nothing and keeps ``0.161`` from printing as ``0.16130000000000003``.
    """
    if value is None:
        return None
    return float(f"{value * factor:.12g}")


def _has_value(ds: Dataset, keyword: str) -> bool:
    """Return whether ``keyword`` is present in ``ds`` with a non-empty value."""
    if keyword not in ds:
        return False
    try:
        value = ds[keyword].value
    except DECODE_ERRORS:  # undecodable: present, reported when read
        return True
    if value is None:
        return False
    return len(value) > 0 if hasattr(value, "__len__") else True


def _number(ds: Dataset, keyword: str, report: DoseReport) -> float | None:
    """Return a numeric attribute from wherever :func:`find_holder` finds it, or ``None``.

    A value pydicom refuses to decode (an IS holding ``'12.5'`` when
    ``reading_validation_mode`` is RAISE) is parsed from its raw bytes and kept
    unrounded with a warning, as in the default WARN mode (cases/C10).
    """
    holder = find_holder(ds, keyword)
    if holder is None:
        return None
    try:
        holder[keyword]
    except DECODE_ERRORS:
        return _raw_number(holder, keyword, report)
    return get_number(holder, keyword, report)


def _raw_number(holder: Dataset, keyword: str, report: DoseReport) -> float | None:
    """Return the number in the raw bytes of an element pydicom cannot decode, or ``None``."""
    elem = holder.get_item(keyword)
    data = elem.value if elem is not None else None
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data or "")
    value = parse_number(text, what=keyword, report=None)
    if value is None:
        report.warn(f"{keyword}: value {text.strip()!r} could not be decoded; left empty")
    elif elem is not None and elem.VR == "IS" and not value.is_integer():
        report.warn(f"{keyword}: IS attribute holds a decimal value; value kept unrounded")
    else:
        report.warn(f"{keyword}: value {text.strip()!r} is invalid for its VR; read as {value:g}")
    return value


def _text(ds: Dataset, keyword: str, report: DoseReport) -> str | None:
    """Return a text attribute from wherever :func:`find_holder` finds it, or ``None``."""
    holder = find_holder(ds, keyword)
    return get_text(holder, keyword, report) if holder is not None else None


def _first(
    ds: Dataset, report: DoseReport, *choices: tuple[str, float]
) -> tuple[float | None, str | None]:
    """Return the first present of ``(keyword, factor)`` choices, converted, and its keyword."""
    for keyword, factor in choices:
        value = _number(ds, keyword, report)
        if value is not None:
            return scaled(value, factor), keyword
    return None, None


def acquisition_datetime(ds: Dataset, report: DoseReport | None = None) -> str | None:
    """Return when the image was acquired, as ISO 8601, or ``None``.

    (0008,002A) Acquisition DateTime (with (0008,0201) Timezone Offset From UTC when the
    value has no offset); else (0008,0022) Acquisition Date and (0008,0032) Acquisition
    Time; a missing date is taken from Content, Series then Study Date and a missing
    time from Content then Series Time, with a warning. Both images of one exposure
    (For Presentation and For Processing) share their acquisition date and time.
    """
    tz = get_text(ds, "TimezoneOffsetFromUTC")
    holder = find_holder(ds, "AcquisitionDateTime")
    if holder is not None:
        value = format_dicom_datetime(str(holder.AcquisitionDateTime), tz)
        if value:
            return value
    date_keyword = next(
        (
            k
            for k in ("AcquisitionDate", "ContentDate", "SeriesDate", "StudyDate")
            if format_date(ds.get(k))
        ),
        None,
    )
    time_keyword = next(
        (k for k in ("AcquisitionTime", "ContentTime", "SeriesTime") if format_time(ds.get(k))),
        None,
    )
    if date_keyword is None or time_keyword is None:
        if report is not None:
            report.warn("no Acquisition DateTime, date or time: the event has no start time")
        return None
    complete = (date_keyword, time_keyword) == ("AcquisitionDate", "AcquisitionTime")
    if report is not None and not complete:
        report.warn(
            f"Acquisition Date/Time incomplete; event start taken from {date_keyword} and "
            f"{time_keyword}"
        )
    date = str(format_date(ds.get(date_keyword))).replace("-", "")
    time, offset = split_time(ds.get(time_keyword))
    return format_dicom_datetime(date + str(time).replace(":", ""), offset or tz)


def _acquisition_protocol(ds: Dataset, report: DoseReport) -> str | None:
    """Return the acquisition protocol of an image, from where its device keeps it.

    In order: (0018,1030) Protocol Name; (0020,4000) Image Comments, only from devices
    known to write the protocol there (:data:`PROTOCOL_IN_IMAGE_COMMENTS`: Toshiba
    Radrex, Manufacturer ``TOSHIBA_MEC``, software ``TM_TFD...``; elsewhere Image Comments
    is free text); the Code Meaning of (0040,0260) Performed Protocol Code Sequence (the
    protocol performed, PS3.3 C.4.14; FUJIFILM FDR Go); (0008,103E) Series Description.
    Each fallback is reported in ``warnings`` (OpenREM #482, ``../shared/cases/C27``).
    """
    protocol = get_text(ds, "ProtocolName", report)
    if protocol:
        return protocol
    manufacturer = (report.device.manufacturer or "").upper()
    software = (report.device.software_versions or "").upper()
    sources: list[tuple[str, str | None]] = []
    if any(
        manufacturer.startswith(m) and software.startswith(v) for m, v in PROTOCOL_IN_IMAGE_COMMENTS
    ):
        sources.append(("(0020,4000) Image Comments", get_text(ds, "ImageComments", report)))
    sources.append(
        (
            "(0040,0260) Performed Protocol Code Sequence",
            _code_meanings(ds, "PerformedProtocolCodeSequence"),
        )
    )
    sources.append(("(0008,103E) Series Description", get_text(ds, "SeriesDescription", report)))
    for attribute, value in sources:
        if value:
            report.warn(
                f"(0018,1030) Protocol Name absent; acquisition protocol taken from {attribute}"
            )
            return value
    return None


def _code_meanings(ds: Dataset, sequence: str) -> str | None:
    """Return the Code Meanings of a code sequence's items joined with ``', '``, or ``None``."""
    items = sequence_items(ds, sequence)  # absent, wrong-type or undecodable: no items
    meanings = [get_text(item, "CodeMeaning") for item in items]
    return ", ".join(m for m in meanings if m) or None


def _read_technique(ds: Dataset, event: IrradiationEvent, report: DoseReport) -> None:
    """Read kVp, tube current, exposure time and exposure (X-Ray Acquisition, CT Image)."""
    event.kvp_kv = _number(ds, "KVP", report)
    event.tube_current_ma, _ = _first(
        ds,
        report,
        ("XRayTubeCurrentInuA", UA_TO_MA),
        ("XRayTubeCurrentInmA", 1.0),
        ("XRayTubeCurrent", 1.0),
    )
    event.exposure_time_s, _ = _first(
        ds,
        report,
        ("ExposureTimeInuS", US_TO_S),
        ("ExposureTimeInms", MS_TO_S),
        ("ExposureTime", MS_TO_S),
    )
    event.exposure_mas, _ = _first(
        ds, report, ("ExposureInuAs", UAS_TO_MAS), ("ExposureInmAs", 1.0), ("Exposure", 1.0)
    )


def _read_projection(
    ds: Dataset, event: IrradiationEvent, report: DoseReport, kind: ReportKind
) -> None:
    """Read the projection X-ray fields of a CR/DX/PX/MG/RF/XA image."""
    dap = _number(ds, "ImageAndFluoroscopyAreaDoseProduct", report)
    event.dap_gym2 = scaled(dap, DGYCM2_TO_GYM2)
    organ_dose = _number(ds, "OrganDose", report)
    organ = (_text(ds, "OrganExposed", report) or "").upper()
    if organ_dose is not None:
        if kind is ReportKind.HEADER_MG or organ == "BREAST":
            event.agd_mgy = scaled(organ_dose, DGY_TO_MGY)
        else:
            report.warn(
                f"(0040,0316) Organ Dose of organ {organ or 'not named'} kept out: it is not a "
                "glandular dose"
            )
    event.entrance_dose_mgy = _number(ds, "EntranceDoseInmGy", report)
    if event.entrance_dose_mgy is None:
        entrance_dgy = _number(ds, "EntranceDose", report)
        if entrance_dgy:  # US; devices write 0 for 'not measured'
            event.entrance_dose_mgy = scaled(entrance_dgy, DGY_TO_MGY)
    if kind is ReportKind.HEADER_MG:
        if event.agd_mgy is None:
            report.warn("(0040,0316) Organ Dose absent: no AGD for this mammography image")
    elif event.dap_gym2 is None:
        report.warn(
            "(0018,115E) Image and Fluoroscopy Area Dose Product absent: no KAP for this image"
        )
    event.laterality = _laterality(ds, report)
    event.image_view = get_text(ds, "ViewPosition", report)
    event.anatomical_structure = get_text(ds, "BodyPartExamined", report)
    event.positioner_primary_angle_deg = _number(ds, "PositionerPrimaryAngle", report)
    event.positioner_secondary_angle_deg = _number(ds, "PositionerSecondaryAngle", report)
    event.compression_thickness_mm = _number(ds, "BodyPartThickness", report)
    event.compression_force_n = _number(ds, "CompressionForce", report)
    event.exposure_index = _number(ds, "ExposureIndex", report)
    event.target_exposure_index = _number(ds, "TargetExposureIndex", report)
    event.deviation_index = _number(ds, "DeviationIndex", report)
    event.detector_id = _text(ds, "DetectorID", report)
    # vendor indices as stored; 0 is written by devices that do not use the attribute
    event.sensitivity = _number(ds, "Sensitivity", report) or None
    event.relative_xray_exposure = _number(ds, "RelativeXRayExposure", report) or None
    event.distance_source_to_detector_mm = _source_to_detector_mm(ds, report)
    event.distance_source_to_isocenter_mm = _number(ds, "DistanceSourceToIsocenter", report)
    event.anode_target_material = _text(ds, "AnodeTargetMaterial", report)
    materials = _text(ds, "FilterMaterial", report)
    event.xray_filter_material = ", ".join(materials.split("\\")) if materials else None
    event.xray_filter_thickness_min_mm = _number(ds, "FilterThicknessMinimum", report)
    event.xray_filter_thickness_max_mm = _number(ds, "FilterThicknessMaximum", report)
    if event.xray_filter_material is None:
        _filter_from_type_term(ds, event, report)
    event.half_value_layer_mm = _number(ds, "HalfValueLayer", report)
    event.focal_spot_size_mm = _number(ds, "FocalSpots", report)
    pulse_ms = _number(ds, "AveragePulseWidth", report)
    event.pulse_width_s = scaled(pulse_ms, MS_TO_S)


def parse_filter_type_term(term: str) -> list[tuple[str, float]] | None:
    """Return the (material, thickness in mm) filters a vendor Filter Type term names.

    Vendors write the added filtration into (0018,1160) Filter Type instead of (0018,7050)
    Filter Material and (0018,7052)/(0018,7054) thickness: Siemens ``CU_0.1_MM``,
    ``CU_0.2_MM``, ``CU_0.3_MM`` (OpenREM #905, ``../shared/cases/C26``); also read are
    ``AL_2.0_MM``, ``0.1 mm Cu``, ``Cu0.1mm`` and combinations joined with ``+``, ``/`` or
    ``,`` (``CU_0.1_MM+AL_1.0_MM``). Materials are given as the (0018,7050) Filter
    Material defined terms (``COPPER``, ``ALUMINUM``, ...).

    Returns
    -------
    list of (str, float) or None
        ``None`` when the term is not of this form (e.g. the defined terms ``FLAT``,
        ``WEDGE``, ``STRIP``, ``NONE``).
    """
    parts = [p.strip() for p in FILTER_TERM_SEPARATOR.split(term.strip().upper()) if p.strip()]
    filters: list[tuple[str, float]] = []
    for part in parts:
        m = FILTER_TERM_MATERIAL_FIRST.fullmatch(part) or FILTER_TERM_THICKNESS_FIRST.fullmatch(
            part
        )
        if m is None:
            return None
        material = FILTER_MATERIAL_SYMBOLS.get(m["material"])
        if material is None:
            return None
        filters.append((material, float(m["thickness"].replace(",", "."))))
    return filters or None


def _filter_from_type_term(ds: Dataset, event: IrradiationEvent, report: DoseReport) -> None:
    """Fill the filter of an image whose only filter description is a Filter Type term."""
    term = _text(ds, "FilterType", report)
    if not term:
        return
    filters = parse_filter_type_term(term)
    if filters is None:
        return
    materials = list(dict.fromkeys(material for material, _ in filters))
    event.xray_filter_material = ", ".join(materials)
    if len(materials) == 1:
        thicknesses = [thickness for _, thickness in filters]
        if event.xray_filter_thickness_min_mm is None:
            event.xray_filter_thickness_min_mm = min(thicknesses)
        if event.xray_filter_thickness_max_mm is None:
            event.xray_filter_thickness_max_mm = max(thicknesses)
    manufacturer = report.device.manufacturer or ""
    vendor = "Siemens" if "SIEMENS" in manufacturer.upper() else manufacturer or "a vendor"
    described = " + ".join(f"{material} {thickness:g} mm" for material, thickness in filters)
    report.warn(
        f"filter read from {vendor} Filter Type term {term!r} ({described}); (0018,7050) "
        "Filter Material absent"
    )


def _laterality(ds: Dataset, report: DoseReport) -> str | None:
    """Return (0020,0062) Image Laterality, else (0020,0060) Laterality, as Left/Right/..."""
    raw = get_text(ds, "ImageLaterality", report) or get_text(ds, "Laterality", report)
    if raw is None:
        return None
    value = LATERALITY.get(raw.upper())
    if value is None:
        report.warn(f"Image Laterality {raw!r} is not L, R, B or U; kept as stored")
        return raw
    return value


def _source_to_detector_mm(ds: Dataset, report: DoseReport) -> float | None:
    """Return (0018,1110) Distance Source to Detector in mm, converting the KODAK dm quirk."""
    value = _number(ds, "DistanceSourceToDetector", report)
    if value is None or value <= 0:
        return value
    manufacturer = (report.device.manufacturer or "").upper()
    device = f"{report.device.manufacturer or ''} {report.device.manufacturer_model_name or ''}"
    if value < SID_DM_BELOW and any(m in manufacturer for m in SID_IN_DM_MANUFACTURERS):
        report.warn(
            f"(0018,1110) Distance Source to Detector {value:g} from {device.strip()} is in dm, "
            f"not mm (known on KODAK DR 7500); converted to {value * DM_TO_MM:g} mm"
        )
        return scaled(value, DM_TO_MM)
    if value < SID_MM_PLAUSIBLE_MIN:
        report.warn(
            f"(0018,1110) Distance Source to Detector {value:g} mm is implausibly small; "
            "kept as stored"
        )
    return value


def _read_ct(ds: Dataset, event: IrradiationEvent, report: DoseReport) -> None:
    """Read the CT fields of a CT image (CT Image module, Enhanced CT functional groups)."""
    event.ctdivol_mgy = _number(ds, "CTDIvol", report)
    if event.ctdivol_mgy is None:
        report.warn("(0018,9345) CTDIvol absent: no CTDIvol for this CT image")
    acquisition_type = _text(ds, "AcquisitionType", report)
    if acquisition_type:
        event.ct_acquisition_type = CT_ACQUISITION_TYPES.get(acquisition_type.upper())
        if event.ct_acquisition_type is None:
            report.warn(f"(0018,9302) Acquisition Type {acquisition_type!r} not known; left empty")
    event.pitch_factor = _number(ds, "SpiralPitchFactor", report)
    event.nominal_single_collimation_width_mm = _number(ds, "SingleCollimationWidth", report)
    event.nominal_total_collimation_width_mm = _number(ds, "TotalCollimationWidth", report)
    event.anatomical_structure = get_text(ds, "BodyPartExamined", report)
    phantom = find_holder(ds, "CTDIPhantomTypeCodeSequence")
    phantom_items = sequence_items(phantom, "CTDIPhantomTypeCodeSequence") if phantom else []
    if phantom_items:
        code = code_from(phantom_items[0])
        event.ctdiw_phantom_type = code.meaning or None if code else None
    event.number_of_xray_sources = 1
    event.xray_sources = [
        XRaySource(
            kvp_kv=event.kvp_kv,
            tube_current_ma=event.tube_current_ma,
            exposure_time_per_rotation_s=_number(ds, "RevolutionTime", report),
        )
    ]


def _read_radiopharmaceutical(ds: Dataset, event: IrradiationEvent, report: DoseReport) -> None:
    """Read the administration of an NM/PET image from (0054,0016) (first item)."""
    seq = sequence_items(ds, "RadiopharmaceuticalInformationSequence")
    if not seq:
        report.warn(
            "(0054,0016) Radiopharmaceutical Information Sequence absent or empty: no "
            "administration recorded for this image"
        )
        return
    if len(seq) > 1:
        report.warn(
            f"(0054,0016) Radiopharmaceutical Information Sequence has {len(seq)} items; "
            "the first is read"
        )
    item = seq[0]
    agent_code = _code_meaning(item, "RadiopharmaceuticalCodeSequence")
    event.radiopharmaceutical_agent = agent_code or get_text(item, "Radiopharmaceutical", report)
    event.radionuclide = _code_meaning(item, "RadionuclideCodeSequence")
    event.radionuclide_half_life_s = get_number(item, "RadionuclideHalfLife", report)
    event.administered_activity_mbq = _activity_mbq(item, report)
    event.radiopharmaceutical_volume_ml = get_number(item, "RadiopharmaceuticalVolume", report)
    event.route_of_administration = _code_meaning(
        item, "AdministrationRouteCodeSequence"
    ) or get_text(item, "RadiopharmaceuticalRoute", report)
    tz = get_text(ds, "TimezoneOffsetFromUTC")
    event.radiopharmaceutical_start_datetime = _administration_time(ds, item, "Start", tz, report)
    event.radiopharmaceutical_stop_datetime = _administration_time(ds, item, "Stop", tz, report)
    administration_uid = get_text(item, "RadiopharmaceuticalAdministrationEventUID")
    if administration_uid and event.irradiation_event_uid is None:
        event.irradiation_event_uid = administration_uid


def _code_meaning(item: Dataset, sequence: str) -> str | None:
    """Return the Code Meaning of the first item of a code sequence, or ``None``."""
    seq = sequence_items(item, sequence)
    if not seq:
        return None
    code = code_from(seq[0])
    meaning = code.meaning if code else seq[0].get("CodeMeaning")
    return str(meaning).strip() or None if meaning else None


def _activity_mbq(item: Dataset, report: DoseReport) -> float | None:
    """Return (0018,1074) Radionuclide Total Dose in MBq, in the unit its IOD defines.

    MBq in an NM image, Bq in a PET image (module docstring), whatever the
    manufacturer; then a magnitude check both ways: a value implausible in the IOD's
    unit (outside :data:`ACTIVITY_MBQ_PLAUSIBLE_MIN` to :data:`ACTIVITY_MBQ_PLAUSIBLE_MAX`)
    but plausible in the other unit is read in the other unit, with a warning; a value
    implausible in both is kept in the IOD's unit, with a warning.
    """
    value = get_number(item, "RadionuclideTotalDose", report)
    if value is None:
        report.warn("(0018,1074) Radionuclide Total Dose absent: administered activity unknown")
        return None
    is_nm = _activity_in_mbq(report)
    iod, other = ("NM", "Bq") if is_nm else ("PET", "MBq")
    factor, other_factor = (1.0, BQ_TO_MBQ) if is_nm else (BQ_TO_MBQ, 1.0)
    activity = scaled(value, factor)
    assert activity is not None
    if value <= 0 or _plausible_mbq(activity):
        return activity
    alternative = scaled(value, other_factor)
    assert alternative is not None
    if _plausible_mbq(alternative):
        size = "large" if activity > ACTIVITY_MBQ_PLAUSIBLE_MAX else "small"
        unit = "MBq" if is_nm else "Bq"
        report.warn(
            f"{iod} (0018,1074) value too {size} to be {unit}; read as {other} "
            f"({value:g} {other} = {alternative:g} MBq; PS3.3 defines {unit} for the {iod} "
            "Image IOD)"
        )
        return alternative
    report.warn(
        f"(0018,1074) Radionuclide Total Dose {activity:g} MBq is implausible for an "
        f"administration in either unit; kept as the {iod} Image IOD defines it"
    )
    return activity


def _activity_in_mbq(report: DoseReport) -> bool:
    """Return whether this image's (0018,1074) is in MBq (NM) rather than Bq (PET).

    Decided by the SOP class; an image of another SOP class is decided by its kind
    (``header-nm`` or ``header-pt``, from (0008,0060) Modality).
    """
    sop_class = (report.sop_class_uid or "").strip()
    if sop_class in ACTIVITY_MBQ_SOP_CLASSES:
        return True
    if sop_class in ACTIVITY_BQ_SOP_CLASSES:
        return False
    return report.kind is ReportKind.HEADER_NM


def _plausible_mbq(activity_mbq: float) -> bool:
    """Return whether an activity (MBq) lies in the plausible range of one administration."""
    return ACTIVITY_MBQ_PLAUSIBLE_MIN <= activity_mbq <= ACTIVITY_MBQ_PLAUSIBLE_MAX


def _administration_time(
    ds: Dataset, item: Dataset, which: str, tz: str | None, report: DoseReport
) -> str | None:
    """Return Radiopharmaceutical Start/Stop DateTime, else Study Date + its Time (warned)."""
    raw = get_text(item, f"Radiopharmaceutical{which}DateTime")
    if raw:
        value = format_dicom_datetime(raw, tz)
        if value:
            return value
    time, offset = split_time(item.get(f"Radiopharmaceutical{which}Time"))
    date = report.study.study_date
    if time is None or date is None:
        return None
    report.warn(
        f"Radiopharmaceutical {which} DateTime absent; taken as the study date with "
        f"Radiopharmaceutical {which} Time"
    )
    return format_dicom_datetime(date.replace("-", "") + time.replace(":", ""), offset or tz)

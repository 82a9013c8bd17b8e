"""Attributes every dose object shares: study, equipment, patient demographics.

Read from the top-level dataset (PS3.3 Patient, General Study, Patient Study, General
Equipment modules), tolerant of the faults seen in the field: missing or partial dates,
Patient's Age without its D/W/M/Y unit, placeholder birth dates (9999-01-01,
1899-12-30), UTF-8 text under a Latin-1 label. Patient name, ID and birth date are
read into :class:`kerma.records.PatientIdentity` only, never into the study record.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom.content``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any, Final

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from kerma.dicom.content import clean_text, parse_number
from kerma.dicom.decode_errors import DECODE_ERRORS
from kerma.dicom.text import decode_text
from kerma.records import DeviceInfo, DoseReport, PatientIdentity, StudyInfo

logger = logging.getLogger(__name__)

#: Oldest plausible age in years; an age derived from a birth date beyond this (or
#: negative) comes from a placeholder birth date and is discarded.
MAX_PLAUSIBLE_AGE_YEARS = 125.0
DAYS_PER_YEAR = 365.25  # EXTRACTION.md: age = days / 365.25


#: Value representations holding text in the Specific Character Set (PS3.5 6.1.2.3).
TEXT_VRS: Final = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})


def get_text(ds: Dataset, keyword: str, report: DoseReport | None = None) -> str | None:
    """Return a string attribute stripped of padding (``None`` when absent or empty).

    Text (SH, LO, ST, LT, UT, PN, UC) still held as bytes is decoded by
    :func:`kerma.dicom.text.decode_text` (mislabelled UTF-8 and missing Specific
    Character Set handled, with a warning on ``report``); other values as pydicom
    decodes them. A multi-valued attribute is joined with ``\\``.
    """
    try:
        raw = ds.get_item(keyword)
    except DECODE_ERRORS:
        raw = None
    if raw is not None and isinstance(raw.value, bytes):
        vr = raw.VR or _dictionary_vr(keyword)
        if vr in TEXT_VRS:
            codecs = getattr(ds, "_character_set", None)
            return clean_text(decode_text(raw.value, codecs), report)
    try:
        value = ds.get(keyword)
    except DECODE_ERRORS as exc:  # a broken element must not stop the read
        if report is not None:
            report.warn(f"({keyword}) could not be decoded ({exc}); left empty")
        return None
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return clean_text(value, report)


def _dictionary_vr(keyword: str) -> str | None:
    """Return the dictionary VR of a keyword, or ``None``."""
    try:
        return dictionary_VR(keyword)
    except KeyError:
        return None


def get_number(ds: Dataset, keyword: str, report: DoseReport | None = None) -> float | None:
    """Return a numeric attribute as float (``None`` when absent, empty or unreadable).

    An IS attribute holding a decimal (``'12.5'``) is kept unrounded with a warning.
    """
    try:
        elem = ds.get(keyword)
    except DECODE_ERRORS as exc:
        if report is not None:
            report.warn(f"{keyword}: value could not be decoded ({exc}); left empty")
        return None
    if elem is None or elem == "":
        return None
    tag_elem = ds.data_element(keyword) if keyword in ds else None
    value = parse_number(elem, what=keyword, report=report)
    if (
        value is not None
        and report is not None
        and tag_elem is not None
        and tag_elem.VR == "IS"
        and not float(value).is_integer()
    ):
        report.warn(f"{keyword}: IS attribute holds a decimal value; value kept unrounded")
    return value


def format_date(raw: Any) -> str | None:
    """Return a DICOM DA value as ``YYYY-MM-DD``, or ``None`` when empty or invalid."""
    if raw is None:
        return None
    text = str(raw).strip().replace("-", "").replace(".", "")
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        return None


#: A DICOM TM value (PS3.5 Table 6.2-1), ``HHMMSS.FFFFFF``, as some devices write it with
#: colons (ACR-NEMA) and/or a UTC offset suffix ``&ZZXX`` (``+0100``), which TM does not
#: define but DT does (seen in the field; issue #10).
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?\s*(?:([+-]\d{4})|Z)?")


def split_time(raw: Any) -> tuple[str | None, str | None]:
    """Return a DICOM TM value as (``HH:MM:SS[.ffffff]``, UTC offset ``+HHMM`` or ``None``).

    The time is the local time as written; the offset is the ``&ZZXX`` suffix some
    devices add (``Z`` is read as ``+0000``). ``(None, None)`` when the value is empty
    or not a time.
    """
    if raw is None:
        return None, None
    text = str(raw).strip().replace(":", "")
    m = _TM.fullmatch(text)
    if not m:
        return None, None
    offset = m[5] or ("+0000" if text.endswith("Z") else None)
    return f"{m[1]}:{m[2] or '00'}:{m[3] or '00'}{m[4] or ''}", offset


def format_time(raw: Any) -> str | None:
    """Return a DICOM TM value as ``HH:MM:SS`` or ``HH:MM:SS.ffffff``, or ``None``.

    A UTC offset suffix (``101530.000000+0100``) is accepted and left out: the result is
    the local time as written (:func:`split_time` returns the offset too).
    """
    return split_time(raw)[0]


def parse_patient_age(raw: Any, report: DoseReport | None = None) -> float | None:
    """Return (0010,1010) Patient's Age in decimal years, or ``None``.

    ``nnnD``, ``nnnW``, ``nnnM``, ``nnnY`` (PS3.5 AS); a bare number is taken as years
    with a warning (seen from mammography units).
    """
    if raw is None:
        return None
    text = str(raw).strip().upper()
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([DWMY])?", text)
    if not m:
        if report is not None:
            report.warn(f"PatientAge {text!r} is not an age string; ignored")
        return None
    number = float(m[1])
    unit = m[2]
    if unit is None:
        if report is not None:
            report.warn(f"PatientAge {text!r} has no unit; assumed years")
        return number
    divisor = {"D": DAYS_PER_YEAR, "W": DAYS_PER_YEAR / 7, "M": 12.0, "Y": 1.0}[unit]
    return number / divisor


def age_from_birth_date(birth_date: str | None, study_date: str | None) -> float | None:
    """Return age in years (days / 365.25) from ISO dates, ``None`` when impossible."""
    if not birth_date or not study_date:
        return None
    try:
        days = (dt.date.fromisoformat(study_date) - dt.date.fromisoformat(birth_date)).days
    except ValueError:
        return None
    years = days / DAYS_PER_YEAR
    if years < 0 or years > MAX_PLAUSIBLE_AGE_YEARS:
        return None  # a placeholder birth date such as 9999-01-01 or 1899-12-30
    return years


def read_study(ds: Dataset, report: DoseReport) -> StudyInfo:
    """Return study-level attributes; warn on the fallbacks used.

    Study Date falls back to Series, Acquisition then Content Date (with a warning);
    Study Time likewise. Patient's Age comes from (0010,1010), else from birth date and
    study date.
    """
    study = StudyInfo(
        study_instance_uid=get_text(ds, "StudyInstanceUID"),
        accession_number=get_text(ds, "AccessionNumber", report),
        study_description=get_text(ds, "StudyDescription", report),
        requested_procedure_description=get_text(ds, "RequestedProcedureDescription", report),
        series_description=get_text(ds, "SeriesDescription", report),
        patient_sex=get_text(ds, "PatientSex"),
        patient_weight_kg=_known(get_number(ds, "PatientWeight", report), "PatientWeight", report),
        patient_size_m=_known(get_number(ds, "PatientSize", report), "PatientSize", report),
    )
    study.study_date = format_date(ds.get("StudyDate"))
    if study.study_date is None:
        for keyword in ("SeriesDate", "AcquisitionDate", "ContentDate"):
            study.study_date = format_date(ds.get(keyword))
            if study.study_date:
                report.warn(f"StudyDate empty; used {keyword}")
                break
    study.study_time = format_time(ds.get("StudyTime"))
    if study.study_time is None:
        for keyword in ("SeriesTime", "AcquisitionTime", "ContentTime"):
            study.study_time = format_time(ds.get(keyword))
            if study.study_time:
                report.warn(f"StudyTime empty; used {keyword}")
                break
    study.patient_age_years = parse_patient_age(ds.get("PatientAge"), report)
    if study.patient_age_years is None:
        study.patient_age_years = age_from_birth_date(
            format_date(ds.get("PatientBirthDate")), study.study_date
        )
    return study


def _known(value: float | None, keyword: str, report: DoseReport) -> float | None:
    """Return a body measure as read; 0, which devices write for 'not known', is ``None``.

    A zero (0.0) Patient's Weight or Size is left empty with a warning (devices write it
    when nobody entered the value; e.g. Philips Allura). A negative value is kept as
    read, so that the plausibility check rejects it (it cannot be physical) instead of
    the value vanishing without a word (issue #11).
    """
    if value == 0:
        report.warn(f"{keyword} is 0, which devices write for 'not known'; left empty")
        return None
    return value


def read_device(ds: Dataset, report: DoseReport) -> DeviceInfo:
    """Return General Equipment attributes (the device observer UID is set by SR readers)."""
    return DeviceInfo(
        manufacturer=get_text(ds, "Manufacturer", report),
        manufacturer_model_name=get_text(ds, "ManufacturerModelName", report),
        device_serial_number=get_text(ds, "DeviceSerialNumber", report),
        station_name=get_text(ds, "StationName", report),
        institution_name=get_text(ds, "InstitutionName", report),
        software_versions=get_text(ds, "SoftwareVersions", report),
    )


def read_identity(ds: Dataset) -> PatientIdentity:
    """Return the identifying attributes used for the pseudonym and QA detection only."""
    return PatientIdentity(
        patient_id=get_text(ds, "PatientID"),
        issuer_of_patient_id=get_text(ds, "IssuerOfPatientID"),
        patient_name=get_text(ds, "PatientName"),
        birth_date=format_date(ds.get("PatientBirthDate")),
    )


def fill_common(ds: Dataset, report: DoseReport) -> None:
    """Fill the SOP identifiers, study, device and identity of ``report`` from ``ds``."""
    report.sop_class_uid = get_text(ds, "SOPClassUID")
    report.sop_instance_uid = get_text(ds, "SOPInstanceUID")
    report.series_instance_uid = get_text(ds, "SeriesInstanceUID")
    report.study = read_study(ds, report)
    report.device = read_device(ds, report)
    report.identity = read_identity(ds)

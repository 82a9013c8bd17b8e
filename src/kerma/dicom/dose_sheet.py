"""Vendor CT dose screens stored as secondary capture, read from their header.

Some CT scanners without an RDSR send their dose screen as a Secondary Capture image.
Kerma reads the ones whose header carries the dose table, never the pixels (no OCR).

Seen on **Philips Brilliance 16P** (software 2.3.0): a Secondary Capture Image
(``1.2.840.10008.5.1.4.1.1.7``) with Modality ``CT``, Image Type
``DERIVED\\SECONDARY\\DOSE_INFO`` and one item per scan in (0040,030E) Exposure Dose
Sequence (PS3.3 C.4.16 Radiation Dose Module, extended by Philips):

==============================================  =====================================
item attribute                                  event field
==============================================  =====================================
(0008,103E) Series Description                  ``acquisition_protocol``
(0008,002A) Acquisition DateTime                ``datetime_started``
(0018,9302) Acquisition Type                    ``ct_acquisition_type`` (CID 10013)
(0018,1150) Exposure Time (ms)                  ``exposure_time_s`` (× 1e-3)
(0018,1302) Scan Length (mm)                    ``scanning_length_mm``
(0018,9306) / (0018,9307) Single / Total        ``nominal_single_collimation_width_mm``,
Collimation Width (mm)                          ``nominal_total_collimation_width_mm``
(0018,9311) Spiral Pitch Factor                 ``pitch_factor``
(0018,9345) CTDIvol (mGy)                       ``ctdivol_mgy``
(00E1,xx21) ELSCINT1 private 'DLP' (mGy·cm)     ``dlp_mgycm``
(0018,0060) KVP, (0018,8151) X-Ray Tube         ``xray_sources[0]`` ``kvp_kv``,
Current in µA                                   ``tube_current_ma`` (× 1e-3)
==============================================  =====================================

The study total DLP is the top-level ELSCINT1 (00E1,xx21) 'DLP'; the number of events
is (0040,0301) Total Number of Exposures (else the number of items).

Detection rule (:func:`is_dose_sheet`): Secondary Capture SOP class, Modality ``CT``,
and an Exposure Dose Sequence with at least one item holding (0018,9345) CTDIvol. The
layout is known from Philips only; another manufacturer's screen of the same shape is
read with a warning.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import logging
from typing import Final

from pydicom.dataset import Dataset

from kerma.dicom.common import get_number, get_text
from kerma.dicom.content import as_count, format_dicom_datetime, parse_number, sequence_items
from kerma.dicom.headers import CT_ACQUISITION_TYPES, SECONDARY_CAPTURE_CLASSES, scaled
from kerma.records import DoseReport, IrradiationEvent, XRaySource
from kerma.units import MS_TO_S

logger = logging.getLogger(__name__)

#: Manufacturers whose dose screen layout is known (seen: Philips Brilliance 16P).
KNOWN_MANUFACTURERS: Final = ("PHILIPS",)
#: Private creator of the Philips (ex-Elscint) block holding DLP at element 0x21.
ELSCINT_CREATOR: Final = "ELSCINT1"
ELSCINT_GROUP: Final = 0x00E1
ELSCINT_DLP_ELEMENT: Final = 0x21
UA_TO_MA: Final = 1e-3  # (0018,8151) X-Ray Tube Current in uA


def is_dose_sheet(ds: Dataset) -> bool:
    """Return whether ``ds`` is a CT dose screen whose header carries the dose table.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        Any non-SR object.

    Returns
    -------
    bool
        ``True`` for a Secondary Capture with Modality ``CT`` whose (0040,030E) Exposure
        Dose Sequence has an item with (0018,9345) CTDIvol (Philips Brilliance 16P).
    """
    if str(ds.get("SOPClassUID", "")) not in SECONDARY_CAPTURE_CLASSES:
        return False
    if str(ds.get("Modality", "")).strip().upper() != "CT":
        return False
    seq = sequence_items(ds, "ExposureDoseSequence")
    return bool(seq) and any("CTDIvol" in item for item in seq)


def read_dose_sheet(ds: Dataset, report: DoseReport) -> None:
    """Fill the events and DLP total of a CT dose screen from its header.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An object for which :func:`is_dose_sheet` is true.
    report : DoseReport
        The record being filled (kind ``dose-sheet-ct``); odd values become warnings.

    Notes
    -----
    One event per (0040,030E) Exposure Dose Sequence item, in order, including the
    localizer (Constant Angle Acquisition) that Philips lists with CTDIvol 0. DLP is
    the ELSCINT1 private (00E1,xx21) element of each item (mGy·cm, as the screen's
    (0040,0310) Comments on Radiation Dose shows); it is absent on other devices.
    """
    report.study.modality = "CT"
    manufacturer = (report.device.manufacturer or "").upper()
    if not any(m in manufacturer for m in KNOWN_MANUFACTURERS):
        report.warn(
            f"CT dose screen from {report.device.manufacturer or 'an unnamed manufacturer'}: "
            "layout known from Philips only; values read from (0040,030E) Exposure Dose "
            "Sequence"
        )
    seq = sequence_items(ds, "ExposureDoseSequence")
    tz = get_text(ds, "TimezoneOffsetFromUTC")
    report.events = [_read_item(item, report, tz) for item in seq]
    total_exposures = get_number(ds, "TotalNumberOfExposures", report)
    counted = as_count(total_exposures, report, what="(0040,0301) Total Number of Exposures")
    n_events = counted if counted is not None else len(report.events)
    if n_events != len(report.events):
        report.warn(
            f"(0040,0301) Total Number of Exposures is {n_events} but (0040,030E) Exposure "
            f"Dose Sequence has {len(report.events)} items"
        )
    report.accumulated.total_number_of_irradiation_events = n_events
    report.accumulated.ct_dlp_total_mgycm = _private_dlp(ds, report)
    if report.accumulated.ct_dlp_total_mgycm is None:
        report.warn("no total DLP: ELSCINT1 (00E1,xx21) 'DLP' absent from the dose screen")


def _read_item(item: Dataset, report: DoseReport, tz: str | None) -> IrradiationEvent:
    """Return the event of one Exposure Dose Sequence item."""
    event = IrradiationEvent(modality="CT")
    event.acquisition_protocol = get_text(item, "SeriesDescription", report)
    raw_dt = get_text(item, "AcquisitionDateTime")
    event.datetime_started = format_dicom_datetime(raw_dt, tz) if raw_dt else None
    acquisition_type = get_text(item, "AcquisitionType", report)
    if acquisition_type:
        event.ct_acquisition_type = CT_ACQUISITION_TYPES.get(acquisition_type.upper())
        if event.ct_acquisition_type is None:
            report.warn(f"(0018,9302) Acquisition Type {acquisition_type!r} not known; left empty")
    exposure_ms = get_number(item, "ExposureTime", report)
    event.exposure_time_s = scaled(exposure_ms, MS_TO_S)
    event.scanning_length_mm = get_number(item, "ScanLength", report)
    event.nominal_single_collimation_width_mm = get_number(item, "SingleCollimationWidth", report)
    event.nominal_total_collimation_width_mm = get_number(item, "TotalCollimationWidth", report)
    event.pitch_factor = get_number(item, "SpiralPitchFactor", report)
    event.ctdivol_mgy = get_number(item, "CTDIvol", report)
    event.dlp_mgycm = _private_dlp(item, report)
    current_ua = get_number(item, "XRayTubeCurrentInuA", report)
    event.number_of_xray_sources = 1
    event.xray_sources = [
        XRaySource(
            kvp_kv=get_number(item, "KVP", report),
            tube_current_ma=scaled(current_ua, UA_TO_MA),
        )
    ]
    return event


def _private_dlp(ds: Dataset, report: DoseReport) -> float | None:
    """Return the ELSCINT1 (00E1,xx21) 'DLP' of ``ds`` in mGy·cm, or ``None``."""
    try:
        elem = ds.get_private_item(ELSCINT_GROUP, ELSCINT_DLP_ELEMENT, ELSCINT_CREATOR)
    except KeyError:
        return None
    value = elem.value
    if isinstance(value, bytes):  # implicit VR or UN: a DS in ASCII
        value = value.decode("ascii", "replace")
    return parse_number(value, what="ELSCINT1 (00E1,xx21) 'DLP'", report=report)

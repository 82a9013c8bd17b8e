"""Read a CT dose report: PS3.16 TID 10011 'CT Radiation Dose' into a :class:`DoseReport`.

One function per template of the CT dose report, each reading one container:

- TID 10012 'CT Accumulated Dose Data' (DCM 113811) -> ``report.accumulated``;
- TID 10013 'CT Irradiation Event Data', one 'CT Acquisition' (DCM 113819) container
  per irradiation event -> one :class:`IrradiationEvent` in ``report.events``, in
  document order, with its 'CT Dose' (DCM 113829) container;
- TID 10014 'CT Acquisition Parameters' (DCM 113822) with one 'CT X-Ray Source
  Parameters' (DCM 113831) container per X-ray source (both sources of a dual-source
  event are kept);
- TID 10015 'CT Dose Check Details': the alert and notification values.

Reading is tolerant (STYLE.md B6): a missing, empty or odd item becomes ``None`` and a
warning on the report that names the concept and the event; nothing here raises. A
localizer without a 'CT Dose' container keeps ``ctdivol_mgy`` and ``dlp_mgycm`` at
``None``, never 0. Values are converted to Kerma's canonical units by
:func:`kerma.dicom.content.numeric_value`.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from kerma.dicom.common import get_text
from kerma.dicom.content import (
    as_count,
    children,
    code_meaning,
    code_value,
    concept_of,
    datetime_value,
    describe,
    find_all,
    find_one,
    has_measured_value,
    is_concept,
    iter_tree,
    numeric_value,
    stored_number,
    text_value,
    uid_value,
    value_type,
)
from kerma.dicom.tree import ContentItem, content_tree
from kerma.records import Accumulated, DoseReport, IrradiationEvent, XRaySource
from kerma.units import UCUM_KV, UCUM_MA, UCUM_MGY, UCUM_MGYCM, UCUM_MM, UCUM_S

logger = logging.getLogger(__name__)

#: NUM concepts that this module reads (their faults are reported where they are read);
#: any other NUM item of the report with an invalid Decimal String gets its own warning.
READ_NUM_CONCEPTS: tuple[Code, ...] = (
    codes.DCM.TotalNumberOfIrradiationEvents,
    codes.DCM.CTDoseLengthProductTotal,
    codes.DCM.ExposureTime,
    codes.DCM.ScanningLength,
    codes.DCM.NominalSingleCollimationWidth,
    codes.DCM.NominalTotalCollimationWidth,
    codes.DCM.PitchFactor,
    codes.DCM.NumberOfXRaySources,
    codes.DCM.KVP,
    codes.DCM.MaximumXRayTubeCurrent,
    codes.DCM.XRayTubeCurrent,
    codes.DCM.ExposureTimePerRotation,
    codes.DCM.MeanCtdivol,
    codes.DCM.DLP,
    codes.DCM.CtdivolAlertValue,
    codes.DCM.CtdivolNotificationValue,
    codes.DCM.DLPNotificationValue,
    codes.DCM.WaterEquivalentDiameter,
)

ROOT = "'X-Ray Radiation Dose Report' (TID 10011)"


def read_ct_report(ds: Dataset, report: DoseReport, *, root: ContentItem | None = None) -> None:
    """Fill ``report.accumulated`` and ``report.events`` from a TID 10011 CT dose report.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The SR document whose root is 'X-Ray Radiation Dose Report' (DCM 113701), read
        as PS3.16 TID 10011 'CT Radiation Dose' (the caller has checked the root).
    report : DoseReport
        Receives the accumulated dose (TID 10012), one event per 'CT Acquisition'
        (DCM 113819, TID 10013) in document order, and warnings.
    root : kerma.dicom.tree.ContentItem, optional
        The document's content tree (:func:`kerma.dicom.tree.content_tree`), when the
        caller has it.

    Notes
    -----
    'Start of X-Ray Irradiation' (DCM 113809) of the root is used as ``datetime_started``
    only when the report holds exactly one irradiation event: then it is that event's
    start; with several events it would be a guess for all but the first.
    Timezone: the DT value's own offset, else (0008,0201) Timezone Offset From UTC.

    Raises nothing: every fault is a warning on ``report``.
    """
    items = children(root if root is not None else content_tree(ds))
    tz_offset = get_text(ds, "TimezoneOffsetFromUTC")

    accumulated = find_one(items, codes.DCM.CTAccumulatedDoseData, report, where=ROOT)
    if accumulated is None:
        report.warn(f"{describe(codes.DCM.CTAccumulatedDoseData)} missing from {ROOT}")
    else:
        report.accumulated = read_ct_accumulated(accumulated, report)

    acquisitions = find_all(items, codes.DCM.CTAcquisition)
    if not acquisitions:
        report.warn(f"no {describe(codes.DCM.CTAcquisition)} container in {ROOT}")
    report.events = [
        read_ct_acquisition(item, report, number=n, tz_offset=tz_offset)
        for n, item in enumerate(acquisitions, start=1)
    ]
    if len(report.events) == 1 and report.events[0].datetime_started is None:
        start = find_one(items, codes.DCM.StartOfXRayIrradiation, report, where=ROOT)
        report.events[0].datetime_started = datetime_value(start, tz_offset)

    total = report.accumulated.total_number_of_irradiation_events
    if total is not None and total != len(report.events):
        report.warn(
            f"{describe(codes.DCM.TotalNumberOfIrradiationEvents)} is {total} but the report "
            f"holds {len(report.events)} {describe(codes.DCM.CTAcquisition)} containers"
        )
    warn_unread_invalid_numbers(items, report, READ_NUM_CONCEPTS)


def read_ct_accumulated(container: ContentItem, report: DoseReport) -> Accumulated:
    """Return the study totals of a 'CT Accumulated Dose Data' container (TID 10012).

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'CT Accumulated Dose Data' (DCM 113811) CONTAINER item.
    report : DoseReport
        Receives warnings.

    Returns
    -------
    Accumulated
        ``total_number_of_irradiation_events`` from 'Total Number of Irradiation
        Events' (DCM 113812) and ``ct_dlp_total_mgycm`` (mGy·cm) from 'CT Dose Length
        Product Total' (DCM 113813); ``None`` (with a warning) when missing.
    """
    where = f"{describe(codes.DCM.CTAccumulatedDoseData)} (TID 10012)"
    items = children(container)
    total_events = _required_num(
        items, codes.DCM.TotalNumberOfIrradiationEvents, None, report, where=where
    )
    dlp_total = _required_num(
        items, codes.DCM.CTDoseLengthProductTotal, UCUM_MGYCM, report, where=where
    )
    return Accumulated(
        total_number_of_irradiation_events=as_count(
            total_events, report, what=describe(codes.DCM.TotalNumberOfIrradiationEvents)
        ),
        ct_dlp_total_mgycm=dlp_total,
    )


def read_ct_acquisition(
    container: ContentItem, report: DoseReport, *, number: int, tz_offset: str | None = None
) -> IrradiationEvent:
    """Return one CT irradiation event from a 'CT Acquisition' container (TID 10013).

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'CT Acquisition' (DCM 113819) CONTAINER item.
    report : DoseReport
        Receives warnings; each names the concept and ``'CT Acquisition' #number``.
    number : int
        1-based position of the container in the report, for warnings.
    tz_offset : str, optional
        (0008,0201) Timezone Offset From UTC (``+HHMM``), for DT values without one.

    Returns
    -------
    IrradiationEvent
        ``modality`` "CT"; 'Irradiation Event UID' (DCM 113769), 'Acquisition
        Protocol' (DCM 125203), 'Target Region' (DCM 123014) and 'CT Acquisition Type'
        (DCM 113820) as code meanings, 'Comment' (DCM 121106), 'Irradiation Event
        Type' (DCM 113721) and 'DateTime Started' (DCM 111526) or 'Start of X-Ray
        Irradiation' (DCM 113809) when the event holds them; the acquisition
        parameters (TID 10014, :func:`read_ct_acquisition_parameters`) and the dose
        (:func:`read_ct_dose`). 'Water Equivalent Diameter' (DCM 113980, mm) is taken
        from anywhere in the event when present.
    """
    where = f"{describe(codes.DCM.CTAcquisition)} #{number} (TID 10013)"
    items = children(container)
    event = IrradiationEvent(modality="CT")

    uid_item = find_one(items, codes.DCM.IrradiationEventUID, report, where=where)
    event.irradiation_event_uid = uid_value(uid_item)
    if event.irradiation_event_uid is None:
        report.warn(f"{describe(codes.DCM.IrradiationEventUID)} missing from {where}")

    started = find_one(items, codes.DCM.DatetimeStarted, report, where=where) or find_one(
        items, codes.DCM.StartOfXRayIrradiation, report, where=where
    )
    event.datetime_started = datetime_value(started, tz_offset)
    event.irradiation_event_type = code_meaning(
        find_one(items, codes.DCM.IrradiationEventType, report, where=where), report
    )

    protocol = find_one(items, codes.DCM.AcquisitionProtocol, report, where=where)
    event.acquisition_protocol = text_value(protocol, report)
    if protocol is not None and event.acquisition_protocol is None:
        report.warn(
            f"{describe(codes.DCM.AcquisitionProtocol)} of {where} has no Text Value; left empty"
        )

    region = find_one(items, codes.DCM.TargetRegion, report, where=where)
    if region is None:
        report.warn(f"{describe(codes.DCM.TargetRegion)} missing from {where}")
    event.target_region = code_meaning(region, report)

    acquisition_type_item = find_one(items, codes.DCM.CTAcquisitionType, report, where=where)
    if acquisition_type_item is None:
        report.warn(f"{describe(codes.DCM.CTAcquisitionType)} missing from {where}")
    event.ct_acquisition_type = code_meaning(acquisition_type_item, report)
    acquisition_type = code_value(acquisition_type_item)

    event.comment = text_value(find_one(items, codes.DCM.Comment, report, where=where), report)

    parameters = find_one(items, codes.DCM.CTAcquisitionParameters, report, where=where)
    if parameters is None:
        report.warn(f"{describe(codes.DCM.CTAcquisitionParameters)} missing from {where}")
    else:
        read_ct_acquisition_parameters(
            parameters, event, report, where=where, acquisition_type=acquisition_type
        )

    dose = find_one(items, codes.DCM.CTDose, report, where=where)
    if dose is not None:
        read_ct_dose(dose, event, report, where=where)
    elif not is_concept(acquisition_type, codes.DCM.ConstantAngleAcquisition):
        # TID 10013: CT Dose is only left out for localizers (Constant Angle Acquisition)
        report.warn(
            f"{describe(codes.DCM.CTDose)} missing from {where}, which is not a "
            "Constant Angle Acquisition (localizer); CTDIvol and DLP left empty"
        )
    # dose check containers placed beside CT Dose instead of inside it
    read_ct_dose_check(items, event, report, where=where, overwrite=False)

    wed_concept = codes.DCM.WaterEquivalentDiameter
    wed = next((i for i in iter_tree(items) if is_concept(concept_of(i), wed_concept)), None)
    event.water_equivalent_diameter_mm = numeric_value(wed, UCUM_MM, report)
    return event


def read_ct_acquisition_parameters(
    container: ContentItem,
    event: IrradiationEvent,
    report: DoseReport,
    *,
    where: str,
    acquisition_type: Code | None = None,
) -> None:
    """Fill ``event`` from a 'CT Acquisition Parameters' container (TID 10014).

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'CT Acquisition Parameters' (DCM 113822) CONTAINER item.
    event : IrradiationEvent
        Receives ``exposure_time_s`` (s, 'Exposure Time' DCM 113824),
        ``scanning_length_mm`` (mm, DCM 113825), ``nominal_single_collimation_width_mm``
        and ``nominal_total_collimation_width_mm`` (mm, DCM 113826/113827),
        ``pitch_factor`` (DCM 113828), ``number_of_xray_sources`` (DCM 113823) and
        ``xray_sources`` (one per 'CT X-Ray Source Parameters', DCM 113831).
    report : DoseReport
        Receives warnings for missing mandatory items.
    where : str
        The event, as warnings name it.
    acquisition_type : pydicom.sr.coding.Code, optional
        The 'CT Acquisition Type'; Pitch Factor is required for a spiral acquisition.
    """
    items = children(container)
    here = f"{describe(codes.DCM.CTAcquisitionParameters)} of {where}"
    event.exposure_time_s = _required_num(items, codes.DCM.ExposureTime, UCUM_S, report, where=here)
    event.scanning_length_mm = _required_num(
        items, codes.DCM.ScanningLength, UCUM_MM, report, where=here
    )
    event.nominal_single_collimation_width_mm = _required_num(
        items, codes.DCM.NominalSingleCollimationWidth, UCUM_MM, report, where=here
    )
    event.nominal_total_collimation_width_mm = _required_num(
        items, codes.DCM.NominalTotalCollimationWidth, UCUM_MM, report, where=here
    )
    pitch = find_one(items, codes.DCM.PitchFactor, report, where=here)
    event.pitch_factor = numeric_value(pitch, None, report)
    if pitch is None and is_concept(acquisition_type, codes.SCT.SpiralAcquisition):
        report.warn(f"{describe(codes.DCM.PitchFactor)} missing from {here} (spiral)")
    event.number_of_xray_sources = as_count(
        _required_num(items, codes.DCM.NumberOfXRaySources, None, report, where=here),
        report,
        what=describe(codes.DCM.NumberOfXRaySources),
    )

    sources = find_all(items, codes.DCM.CTXRaySourceParameters)
    if not sources:
        report.warn(f"{describe(codes.DCM.CTXRaySourceParameters)} missing from {here}")
        return
    source_name = describe(codes.DCM.CTXRaySourceParameters)
    event.xray_sources = [
        read_ct_xray_source(source, report, where=f"{source_name} #{n} of {where}")
        for n, source in enumerate(sources, start=1)
    ]
    if event.number_of_xray_sources not in (None, len(sources)):
        report.warn(
            f"{describe(codes.DCM.NumberOfXRaySources)} of {where} is "
            f"{event.number_of_xray_sources} but {len(sources)} "
            f"{describe(codes.DCM.CTXRaySourceParameters)} containers are given"
        )


def read_ct_xray_source(container: ContentItem, report: DoseReport, *, where: str) -> XRaySource:
    """Return one 'CT X-Ray Source Parameters' container (TID 10014) as an XRaySource.

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'CT X-Ray Source Parameters' (DCM 113831) CONTAINER item.
    report : DoseReport
        Receives warnings for missing mandatory items.
    where : str
        The source and its event, as warnings name them.

    Returns
    -------
    XRaySource
        ``identification`` ('Identification of the X-Ray Source', DCM 113832),
        ``kvp_kv`` (kV, 'KVP' DCM 113733), ``maximum_tube_current_ma`` (mA, DCM 113833),
        ``tube_current_ma`` (mA, 'X-Ray Tube Current' DCM 113734) and
        ``exposure_time_per_rotation_s`` (s, DCM 113834; absent for localizers).
    """
    items = children(container)
    ident = find_one(items, codes.DCM.IdentificationOfTheXRaySource, report, where=where)
    if ident is None:
        report.warn(f"{describe(codes.DCM.IdentificationOfTheXRaySource)} missing from {where}")
    return XRaySource(
        identification=text_value(ident, report),
        kvp_kv=_required_num(items, codes.DCM.KVP, UCUM_KV, report, where=where),
        maximum_tube_current_ma=_required_num(
            items, codes.DCM.MaximumXRayTubeCurrent, UCUM_MA, report, where=where
        ),
        tube_current_ma=_required_num(
            items, codes.DCM.XRayTubeCurrent, UCUM_MA, report, where=where
        ),
        exposure_time_per_rotation_s=numeric_value(
            find_one(items, codes.DCM.ExposureTimePerRotation, report, where=where),
            UCUM_S,
            report,
        ),
    )


def read_ct_dose(
    container: ContentItem, event: IrradiationEvent, report: DoseReport, *, where: str
) -> None:
    """Fill the dose of ``event`` from its 'CT Dose' container (TID 10013).

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'CT Dose' (DCM 113829) CONTAINER item.
    event : IrradiationEvent
        Receives ``ctdivol_mgy`` (mGy, 'Mean CTDIvol' DCM 113830), ``dlp_mgycm``
        (mGy·cm, 'DLP' DCM 113838), ``ctdiw_phantom_type`` (code meaning, 'CTDIw
        Phantom Type' DCM 113835) and the TID 10015 dose check values
        (:func:`read_ct_dose_check`).
    report : DoseReport
        Receives warnings: the three items above are mandatory in TID 10013.
    where : str
        The event, as warnings name it.
    """
    items = children(container)
    here = f"{describe(codes.DCM.CTDose)} of {where}"
    event.ctdivol_mgy = _required_num(items, codes.DCM.MeanCtdivol, UCUM_MGY, report, where=here)
    event.dlp_mgycm = _required_num(items, codes.DCM.DLP, UCUM_MGYCM, report, where=here)
    phantom = find_one(items, codes.DCM.CtdiwPhantomType, report, where=here)
    if phantom is None:
        report.warn(f"{describe(codes.DCM.CtdiwPhantomType)} missing from {here}")
    event.ctdiw_phantom_type = code_meaning(phantom, report)
    read_ct_dose_check(items, event, report, where=where)


def read_ct_dose_check(
    items: Iterable[Any],
    event: IrradiationEvent,
    report: DoseReport,
    *,
    where: str,
    overwrite: bool = True,
) -> None:
    """Fill the dose check values of ``event`` (TID 10015 'CT Dose Check Details').

    Parameters
    ----------
    items : iterable of kerma.dicom.tree.ContentItem
        The content items holding the 'Dose Check Alert Details' (DCM 113900) and
        'Dose Check Notification Details' (DCM 113908) containers.
    event : IrradiationEvent
        Receives ``ctdivol_alert_value_mgy`` (mGy, DCM 113904),
        ``ctdivol_notification_value_mgy`` (mGy, DCM 113912) and
        ``dlp_notification_value_mgycm`` (mGy·cm, DCM 113911) when present.
    report : DoseReport
        Receives warnings.
    where : str
        The event, as warnings name it.
    overwrite : bool, optional
        Replace values already read (default ``True``); ``False`` fills only gaps.
    """
    items = list(items)
    alert = find_one(items, codes.DCM.DoseCheckAlertDetails, report, where=where)
    notification = find_one(items, codes.DCM.DoseCheckNotificationDetails, report, where=where)
    values = {
        "ctdivol_alert_value_mgy": (alert, codes.DCM.CtdivolAlertValue, UCUM_MGY),
        "ctdivol_notification_value_mgy": (
            notification,
            codes.DCM.CtdivolNotificationValue,
            UCUM_MGY,
        ),
        "dlp_notification_value_mgycm": (
            notification,
            codes.DCM.DLPNotificationValue,
            UCUM_MGYCM,
        ),
    }
    for name, (container, concept, unit) in values.items():
        if container is None or (not overwrite and getattr(event, name) is not None):
            continue
        item = find_one(children(container), concept, report, where=where)
        setattr(event, name, numeric_value(item, unit, report))


def warn_unread_invalid_numbers(
    items: Iterable[Any], report: DoseReport, read_concepts: Iterable[Code]
) -> None:
    """Warn about NUM items Kerma does not read whose value is not a valid Decimal String.

    Such an item (e.g. Toshiba's 'Standard deviation of population' (DCM 121414) as
    ``'10.00/ 12.50'``) does not stop the import; the warning tells the physicist the
    object holds a malformed value (PS3.5 DS allows one number, no ``/``).
    """
    read = tuple(read_concepts)
    for item in iter_tree(items):
        if value_type(item) != "NUM":
            continue
        concept = concept_of(item)
        if concept is None or concept in read:
            continue
        raw = stored_number(item)
        if not isinstance(raw, str) or not raw.strip():
            continue  # a number already decoded is valid
        try:
            float(raw)
        except ValueError:
            report.warn(
                f"{describe(concept)}: invalid DS {raw.strip()!r} in (0040,A30A) "
                "NumericValue; item skipped (Kerma does not use it)"
            )


def _required_num(
    items: list[Any],
    concept: Code,
    unit: str | None,
    report: DoseReport,
    *,
    where: str,
) -> float | None:
    """Return a mandatory NUM item of a container in ``unit``; warn when it is missing."""
    item = find_one(items, concept, report, where=where)
    if item is None:
        report.warn(f"{describe(concept)} missing from {where}; left empty")
        return None
    if not has_measured_value(item):
        report.warn(f"{describe(concept)} of {where} has no measured value; left empty")
        return None
    return numeric_value(item, unit, report)


__all__ = [
    "read_ct_accumulated",
    "read_ct_acquisition",
    "read_ct_acquisition_parameters",
    "read_ct_dose",
    "read_ct_dose_check",
    "read_ct_report",
    "read_ct_xray_source",
    "warn_unread_invalid_numbers",
]

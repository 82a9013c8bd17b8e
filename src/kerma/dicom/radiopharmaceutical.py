"""Read a radiopharmaceutical dose report: PS3.16 TID 10021 into a :class:`DoseReport`.

- one 'Radiopharmaceutical Administration' (DCM 113502) container (TID 10022
  'Radiopharmaceutical Administration Event Data') per administration -> one
  :class:`IrradiationEvent` in ``report.events``, in document order;
- the 'Patient Characteristics' (DCM 121118) container -> patient weight and height,
  used only where the top-level header lacks them.

The dose belongs to nuclear medicine: ``study.modality`` and each event's ``modality``
are ``"NM"``, PET administrations included (as the registry's NM/PET module reads them;
``../shared/cases/C14``). Reading is tolerant: a missing or odd item is ``None`` plus a
warning that names the concept; nothing here raises.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from kerma.dicom.codes import PATIENT_HEIGHT, PATIENT_WEIGHT, RADIOPHARMACEUTICAL_AGENT_SRT
from kerma.dicom.common import get_text
from kerma.dicom.content import (
    children,
    code_meaning,
    concept_of,
    datetime_value,
    describe,
    find_all,
    find_one,
    is_any_concept,
    numeric_value,
    uid_value,
)
from kerma.dicom.ct import warn_unread_invalid_numbers
from kerma.dicom.tree import ContentItem, content_tree
from kerma.records import DoseReport, IrradiationEvent
from kerma.units import UCUM_MBQ, UCUM_ML, UCUM_S

logger = logging.getLogger(__name__)

#: The modality a radiopharmaceutical dose belongs to (EXTRACTION.md ``study.modality``).
MODALITY = "NM"

#: 'Radiopharmaceutical agent': SCT 349358000, or its legacy SNOMED-RT code F-61FDB
#: that pydicom does not map (see :mod:`kerma.dicom.codes`).
RADIOPHARMACEUTICAL_AGENT: tuple[Code, ...] = (
    codes.SCT.Radiopharmaceuticals,
    RADIOPHARMACEUTICAL_AGENT_SRT,
)

#: UCUM units of the patient characteristics (not dose quantities: no conversion table).
UCUM_KG = "kg"
UCUM_M = "m"

#: NUM concepts read here; other NUM items with an invalid Decimal String are reported.
READ_NUM_CONCEPTS: tuple[Code, ...] = (
    codes.SCT.HalfLifeOfRadiopharmaceutical,
    codes.DCM.AdministeredActivity,
    codes.DCM.RadiopharmaceuticalVolume,
    PATIENT_WEIGHT,
    PATIENT_HEIGHT,
)

ROOT = "'Radiopharmaceutical Radiation Dose Report' (TID 10021)"


def read_radiopharmaceutical_report(
    ds: Dataset, report: DoseReport, *, root: ContentItem | None = None
) -> None:
    """Fill the administrations and patient size of a TID 10021 dose report.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The SR document whose root is 'Radiopharmaceutical Radiation Dose Report'
        (DCM 113500), PS3.16 TID 10021 (the caller has checked the root).
    report : DoseReport
        Receives ``study.modality`` ("NM"), ``study.procedure_reported`` (the code
        meaning of 'Associated Procedure', SCT 408730004, when present), one event per
        'Radiopharmaceutical Administration' (DCM 113502), ``study.patient_weight_kg``
        and ``study.patient_size_m`` from 'Patient Characteristics' (DCM 121118) when
        the header has none, and warnings.

    Notes
    -----
    Date-times are ISO 8601 with the DT value's own offset, else (0008,0201) Timezone
    Offset From UTC. Raises nothing: every fault is a warning on ``report``.
    """
    items = children(root if root is not None else content_tree(ds))
    tz_offset = get_text(ds, "TimezoneOffsetFromUTC")
    report.study.modality = MODALITY
    if report.study.procedure_reported is None:
        report.study.procedure_reported = code_meaning(
            find_one(items, codes.SCT.AssociatedProcedure, report, where=ROOT), report
        )

    administrations = find_all(items, codes.DCM.RadiopharmaceuticalAdministration)
    if not administrations:
        report.warn(
            f"no {describe(codes.DCM.RadiopharmaceuticalAdministration)} container in {ROOT}"
        )
    report.events = [
        read_administration(item, report, number=n, tz_offset=tz_offset)
        for n, item in enumerate(administrations, start=1)
    ]

    characteristics = find_one(items, codes.DCM.PatientCharacteristics, report, where=ROOT)
    if characteristics is not None:
        read_patient_characteristics(characteristics, report)
    warn_unread_invalid_numbers(items, report, READ_NUM_CONCEPTS)


def read_administration(
    container: ContentItem, report: DoseReport, *, number: int, tz_offset: str | None = None
) -> IrradiationEvent:
    """Return one administration from a 'Radiopharmaceutical Administration' container.

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'Radiopharmaceutical Administration' (DCM 113502) CONTAINER item
        (PS3.16 TID 10022).
    report : DoseReport
        Receives warnings, each naming the concept and the administration.
    number : int
        1-based position of the container in the report, for warnings.
    tz_offset : str, optional
        (0008,0201) Timezone Offset From UTC (``+HHMM``), for DT values without one.

    Returns
    -------
    IrradiationEvent
        ``modality`` "NM"; ``irradiation_event_uid`` from 'Radiopharmaceutical
        Administration Event UID' (DCM 113503); ``radiopharmaceutical_agent`` (code
        meaning, 'Radiopharmaceutical agent' SCT 349358000 / SRT F-61FDB);
        ``radionuclide`` (code meaning, 'Radionuclide' SCT 89457008) and
        ``radionuclide_half_life_s`` (s, 'Radionuclide Half Life' SCT 304283002), read
        under the agent item (HAS PROPERTIES) or beside it;
        ``administered_activity_mbq`` (MBq, 'Administered activity' DCM 113507; Bq
        and other activity units converted with a warning);
        ``radiopharmaceutical_start_datetime`` (also ``datetime_started``) and
        ``radiopharmaceutical_stop_datetime`` (ISO 8601, DCM 123003/123004);
        ``route_of_administration`` (code meaning, SCT 410675002);
        ``radiopharmaceutical_volume_ml`` (ml, DCM 123005; cm3 is ml).
    """
    where = f"{describe(codes.DCM.RadiopharmaceuticalAdministration)} #{number} (TID 10022)"
    items = children(container)
    event = IrradiationEvent(modality=MODALITY)

    event.irradiation_event_uid = uid_value(
        find_one(items, codes.DCM.RadiopharmaceuticalAdministrationEventUID, report, where=where)
    )
    if event.irradiation_event_uid is None:
        report.warn(
            f"{describe(codes.DCM.RadiopharmaceuticalAdministrationEventUID)} missing from {where}"
        )

    agents = [item for item in items if is_any_concept(concept_of(item), RADIOPHARMACEUTICAL_AGENT)]
    if len(agents) > 1:
        report.warn(
            f"{describe(codes.SCT.Radiopharmaceuticals)} appears {len(agents)} times in "
            f"{where}; first one used"
        )
    agent = agents[0] if agents else None
    if agent is None:
        report.warn(f"{describe(codes.SCT.Radiopharmaceuticals)} missing from {where}")
    event.radiopharmaceutical_agent = code_meaning(agent, report)

    # TID 10022 nests Radionuclide and its half-life under the agent; some devices
    # put them beside it
    nested = children(agent) if agent is not None else []
    radionuclide = find_one(nested, codes.SCT.RadioactiveIsotope, report, where=where) or (
        find_one(items, codes.SCT.RadioactiveIsotope, report, where=where)
    )
    event.radionuclide = code_meaning(radionuclide, report)
    half_life = find_one(
        nested, codes.SCT.HalfLifeOfRadiopharmaceutical, report, where=where
    ) or find_one(items, codes.SCT.HalfLifeOfRadiopharmaceutical, report, where=where)
    event.radionuclide_half_life_s = numeric_value(half_life, UCUM_S, report)

    activity = find_one(items, codes.DCM.AdministeredActivity, report, where=where)
    if activity is None:
        report.warn(f"{describe(codes.DCM.AdministeredActivity)} missing from {where}")
    # TID 10022 gives MBq; another activity unit (Bq, GBq, mCi) is converted with a warning
    event.administered_activity_mbq = numeric_value(activity, UCUM_MBQ, report)

    event.radiopharmaceutical_start_datetime = datetime_value(
        find_one(items, codes.DCM.RadiopharmaceuticalStartDatetime, report, where=where),
        tz_offset,
    )
    event.radiopharmaceutical_stop_datetime = datetime_value(
        find_one(items, codes.DCM.RadiopharmaceuticalStopDatetime, report, where=where),
        tz_offset,
    )
    event.datetime_started = event.radiopharmaceutical_start_datetime
    event.route_of_administration = code_meaning(
        find_one(items, codes.SCT.RouteOfAdministration, report, where=where), report
    )
    event.radiopharmaceutical_volume_ml = numeric_value(
        find_one(items, codes.DCM.RadiopharmaceuticalVolume, report, where=where),
        UCUM_ML,
        report,
        template_units=("ml", "cm3"),
    )
    return event


def read_patient_characteristics(container: ContentItem, report: DoseReport) -> None:
    """Fill patient weight and height from 'Patient Characteristics' where the header lacks them.

    Parameters
    ----------
    container : kerma.dicom.tree.ContentItem
        The 'Patient Characteristics' (DCM 121118) CONTAINER of TID 10021.
    report : DoseReport
        ``study.patient_weight_kg`` (kg, 'Patient Weight' LN 29463-7) and
        ``study.patient_size_m`` (m, 'Patient Height' LN 8302-2) are set only when
        (0010,1030) Patient's Weight / (0010,1020) Patient's Size gave none; a value
        that is not positive is ignored. A unit other than kg / m is not converted: the
        value is dropped with a warning.
    """
    where = f"{describe(codes.DCM.PatientCharacteristics)} of {ROOT}"
    items = children(container)
    if report.study.patient_weight_kg is None:
        weight = numeric_value(
            find_one(items, PATIENT_WEIGHT, report, where=where), UCUM_KG, report
        )
        report.study.patient_weight_kg = weight if weight and weight > 0 else None
    if report.study.patient_size_m is None:
        height = numeric_value(find_one(items, PATIENT_HEIGHT, report, where=where), UCUM_M, report)
        report.study.patient_size_m = height if height and height > 0 else None

"""HL7 FHIR R4 Radiation Dose Summary of a study (IG ``hl7.fhir.uv.radiation-dose-summary``).

Builds, for one study, the resources of the implementation guide "Radiation Dose
Summary for Diagnostic Procedures on FHIR" (canonical
``http://hl7.org/fhir/uv/radiation-dose-summary``, version 1.0.0, FHIR 4.0.1) as plain
JSON-ready dicts, in a Bundle (``collection``, or ``transaction`` for a FHIR server):

- the **RadiationDoseSummary** Observation (profile ``radiation-dose-summary``, LOINC
  73569-6) with its components by the guide's codes (value set
  ``component-radiation-dose-summary-vs``) and the units of its "Dose measurements"
  table (``input/pagecontent/background.md``), as UCUM codes: DCM 121058 'Procedure
  reported' (value set ``procedure-reported-type-rds-vs``), 113813 'CT Dose Length
  Product Total' (``mGy.cm``), 113725 'Dose (RP) Total' (``mGy``), 113722 'Dose Area
  Product Total' (``mGy.cm2``), 113730 'Total Fluoro Time' (``s``), 111637 'Accumulated
  Average Glandular Dose' (``mGy``, one component per breast), 113507 'Administered
  activity' (``MBq``), SCT 349358000 'Radiopharmaceuticals', SCT 89457008
  'Radioisotope', DCM 123005 'Radiopharmaceutical Volume' (``cm3``), SCT 410675002
  'Route of administration';
- the **ImagingStudy** it is ``partOf`` and ``focus`` on, identified by its Study
  Instance UID (``urn:dicom:uid``, ``urn:oid:<uid>``);
- the **ModalityDevice** Device (profile ``modality-device``): AE title, serial number,
  device UID (the device observer UID), manufacturer, model, software version, type
  from DICOM CID 33;
- a **Patient** carrying only the registry pseudonym.

Required elements (``1..``) of the profiles (``input/fsh/RadiationDoseSummary.fsh``,
``Modality.fsh``) that Kerma cannot fill, and what it does instead:

- ``Observation.performer[irradiationAuthorizingPerson]`` (1..1, Reference(Practitioner)):
  Kerma never stores person names (DESIGN.md "Storage"), so the reference carries only
  ``type`` Practitioner and the data-absent-reason extension ``unknown``.
- ``Device.identifier[aeTitle].value`` (1..1): the calling AE title of the C-STORE that
  brought the study's newest object; for an object imported from a file Kerma cannot
  know it, so the value carries the data-absent-reason extension ``unknown``
  (``_value``) instead of a string.

The guide gives no UCUM ``system``/``code`` in its examples, only ``unit``; Kerma sends
all three (``http://unitsofmeasure.org``), which the profile allows.

Values come from the registry in canonical units and are converted here once, for the
guide: Gy → mGy ×1000, Gy·m² → mGy·cm² ×10⁷ (:data:`kerma.units` names the canonical
units). May import ``kerma.services``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kerma.services.dose_summary import StudyDoseSummary

__all__ = [
    "DEVICE_PROFILE",
    "IG_CANONICAL",
    "OBSERVATION_PROFILE",
    "build_bundle",
    "study_resources",
]

IG_CANONICAL = "http://hl7.org/fhir/uv/radiation-dose-summary"
OBSERVATION_PROFILE = f"{IG_CANONICAL}/StructureDefinition/radiation-dose-summary"
DEVICE_PROFILE = f"{IG_CANONICAL}/StructureDefinition/modality-device"
DICOM_ID_TYPE = f"{IG_CANONICAL}/CodeSystem/dicom-identifier-type"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DEVICE_NAME_TYPE = "http://hl7.org/fhir/device-nametype"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
#: Identifier system of the Kerma patient pseudonym (a keyed hash; DESIGN.md "Storage").
PSEUDONYM_SYSTEM = "urn:kerma:patient-pseudonym"

#: 'Procedure reported' (DCM 121058) value by modality family (ProcedureReportedTypeVS).
PROCEDURE_REPORTED: dict[str, tuple[str, str, str]] = {
    "CT": (SCT, "77477000", "Computerized tomography"),
    "RF/XA": (DCM, "113704", "Projection X-Ray"),
    "DX": (DCM, "113704", "Projection X-Ray"),
    "MG": (SCT, "71651007", "Mammography"),
    "NM": (DCM, "113502", "Radiopharmaceutical Administration"),
}

#: Device type (DICOM CID 33 'Modality') display names of the modalities Kerma reads.
MODALITY_DISPLAY: dict[str, str] = {
    "CT": "Computed Tomography",
    "DX": "Digital Radiography",
    "CR": "Computed Radiography",
    "MG": "Mammography",
    "RF": "Radio Fluoroscopy",
    "XA": "X-Ray Angiography",
    "NM": "Nuclear Medicine",
    "PT": "Positron emission tomography",
    "PX": "Panoramic X-Ray",
    "IO": "Intra-oral Radiography",
}

#: Dose components: (study column, DCM code, meaning, UCUM unit, factor from canonical).
DOSE_COMPONENTS: tuple[tuple[str, str, str, str, float], ...] = (
    ("ct_dlp_total_mgycm", "113813", "CT Dose Length Product Total", "mGy.cm", 1.0),
    ("dose_rp_total_gy", "113725", "Dose (RP) Total", "mGy", 1e3),
    ("dap_total_gym2", "113722", "Dose Area Product Total", "mGy.cm2", 1e7),
    ("fluoro_time_total_s", "113730", "Total Fluoro Time", "s", 1.0),
    ("administered_activity_total_mbq", "113507", "Administered activity", "MBq", 1.0),
)

_UIDISH = re.compile(r"^[0-9.]+$")


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    """Return a Coding."""
    return {"system": system, "code": code, "display": display}


def _oid(uid: str) -> str:
    """Return a DICOM UID as the guide writes it in ``urn:dicom:uid`` identifiers."""
    return f"urn:oid:{uid}"


def _number(value: float) -> float | int:
    """Return ``value`` rounded to 12 significant digits (no binary noise after × 10ⁿ)."""
    rounded = float(f"{value:.12g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 1e15 else rounded


def _quantity(value: float, unit: str) -> dict[str, Any]:
    """Return a UCUM Quantity."""
    return {"value": _number(value), "unit": unit, "system": UCUM, "code": unit}


def _absent() -> dict[str, Any]:
    """Return the data-absent-reason extension ``unknown``."""
    return {"extension": [{"url": DATA_ABSENT, "valueCode": "unknown"}]}


def _effective(summary: StudyDoseSummary) -> str | None:
    """Return the irradiation start as a FHIR dateTime, or ``None``.

    The first event's 'DateTime Started' (CT: Start of X-Ray Irradiation; NM: the
    administration start), else the study date and time.
    """
    text = summary.first_event_start
    if text:
        try:
            return _with_zone(dt.datetime.fromisoformat(str(text)))
        except ValueError:
            pass
    date = summary.study.get("study_date")
    if date is None:
        return None
    time = str(summary.study.get("study_time") or "")
    digits = re.sub(r"[^0-9]", "", time.split(".")[0])
    if len(digits) >= 4:
        hh, mm, ss = int(digits[0:2]), int(digits[2:4]), int(digits[4:6] or "0")
        try:
            return _with_zone(dt.datetime.combine(date, dt.time(hh, mm, min(ss, 59))))
        except ValueError:
            pass
    return str(date.isoformat())


def _with_zone(value: dt.datetime) -> str:
    """Return a FHIR dateTime; a DICOM time without offset is taken as this host's zone.

    FHIR R4 dateTime: "If hours and minutes are specified, a time zone SHALL be
    populated"; DICOM times are local to the modality unless (0008,0201) 'Timezone
    Offset From UTC' says otherwise, and Kerma runs in the department's time zone.
    """
    if value.tzinfo is None:
        value = value.astimezone()
    return value.isoformat()


def _family(summary: StudyDoseSummary) -> str:
    """Return the study's modality family (``CT``, ``RF/XA``, ``MG``, ``DX``, ``NM``)."""
    family = summary.study.get("modality_family")
    if family:
        return str(family)
    modality = str(summary.study.get("modality") or "").upper()
    return {"RF": "RF/XA", "XA": "RF/XA", "PT": "NM"}.get(modality, modality)


def _components(summary: StudyDoseSummary) -> list[dict[str, Any]]:
    """Return the Observation components of a study (only the values it has)."""
    study = summary.study
    family = _family(summary)
    out: list[dict[str, Any]] = []
    if family in PROCEDURE_REPORTED:
        system, code, display = PROCEDURE_REPORTED[family]
        out.append(
            {
                "code": {"coding": [_coding(DCM, "121058", "Procedure reported")]},
                "valueCodeableConcept": {"coding": [_coding(system, code, display)]},
            }
        )
    for column, code, meaning, unit, factor in DOSE_COMPONENTS:
        value = study.get(column)
        if value is None or (column == "fluoro_time_total_s" and family not in ("RF/XA", "DX")):
            continue
        out.append(
            {
                "code": {"coding": [_coding(DCM, code, meaning)]},
                "valueQuantity": _quantity(float(value) * factor, unit),
            }
        )
    for side, column in (("left", "agd_total_left_mgy"), ("right", "agd_total_right_mgy")):
        value = study.get(column)
        if value is not None:
            out.append(
                {
                    "code": {
                        "coding": [_coding(DCM, "111637", "Accumulated Average Glandular Dose")],
                        "text": f"Accumulated Average Glandular Dose, {side} breast",
                    },
                    "valueQuantity": _quantity(float(value), "mGy"),
                }
            )
    out.extend(_radiopharmaceutical(summary))
    return out


def _radiopharmaceutical(summary: StudyDoseSummary) -> list[dict[str, Any]]:
    """Return the NM administration components (agent, radionuclide, volume, route)."""
    event = next(
        (e for e in summary.events if e.get("radiopharmaceutical_agent") or e.get("radionuclide")),
        None,
    )
    if event is None:
        return []
    out: list[dict[str, Any]] = []
    for column, system, code, display in (
        ("radiopharmaceutical_agent", SCT, "349358000", "Radiopharmaceuticals"),
        ("radionuclide", SCT, "89457008", "Radioisotope"),
        ("route_of_administration", SCT, "410675002", "Route of administration"),
    ):
        if event.get(column):
            out.append(
                {
                    "code": {"coding": [_coding(system, code, display)]},
                    "valueCodeableConcept": {"text": str(event[column])},
                }
            )
    volume = event.get("radiopharmaceutical_volume_ml")
    if volume is not None:
        out.append(
            {
                "code": {"coding": [_coding(DCM, "123005", "Radiopharmaceutical Volume")]},
                "valueQuantity": _quantity(float(volume), "cm3"),
            }
        )
    return out


def _summary_text(components: Sequence[dict[str, Any]]) -> str:
    """Return the Observation's ``valueString``: each dose component as 'name = value unit'."""
    parts = []
    for comp in components:
        quantity = comp.get("valueQuantity")
        if quantity is None:
            continue
        name = comp["code"].get("text") or comp["code"]["coding"][0]["display"]
        parts.append(f"{name} = {quantity['value']:g} {quantity['unit']}")
    return ", ".join(parts) if parts else "No dose values recorded."


def _device(summary: StudyDoseSummary) -> dict[str, Any]:
    """Return the ModalityDevice Device of the study."""
    device = summary.device
    identifiers: list[dict[str, Any]] = []
    ae: dict[str, Any] = {
        "type": {"coding": [_coding(DICOM_ID_TYPE, "application-entity", "Application Entity")]}
    }
    if summary.ae_title:
        ae["value"] = summary.ae_title
    else:
        ae["_value"] = _absent()
    identifiers.append(ae)
    serial = device.get("device_serial_number")
    if serial:
        identifiers.append(
            {"type": {"coding": [_coding(V2_0203, "SNO", "Serial Number")]}, "value": serial}
        )
    uid = device.get("device_observer_uid")
    if uid and _UIDISH.match(str(uid)):
        identifiers.append(
            {
                "type": {"coding": [_coding(DICOM_ID_TYPE, "device-uid", "Device UID")]},
                "system": "urn:dicom:uid",
                "value": _oid(str(uid)),
            }
        )
    modality = str(summary.study.get("modality") or "").upper() or "OT"
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "meta": {"profile": [DEVICE_PROFILE]},
        "identifier": identifiers,
        "type": {"coding": [_coding(DCM, modality, MODALITY_DISPLAY.get(modality, modality))]},
    }
    names = []
    if device.get("manufacturer"):
        resource["manufacturer"] = device["manufacturer"]
        names.append({"name": device["manufacturer"], "type": "manufacturer-name"})
    if device.get("manufacturer_model_name"):
        names.append({"name": device["manufacturer_model_name"], "type": "model-name"})
    if names:
        resource["deviceName"] = names
    if serial:
        resource["serialNumber"] = serial
    if device.get("software_versions"):
        resource["version"] = [{"value": str(device["software_versions"])}]
    return resource


def study_resources(
    summary: StudyDoseSummary, *, ids: dict[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Return ``(fullUrl, resource)`` of the Observation, ImagingStudy, Device and Patient.

    Parameters
    ----------
    summary : StudyDoseSummary
        From :func:`kerma.services.dose_summary.dose_summaries`.
    ids : dict, optional
        ``urn:uuid:`` full URLs already given (``patient``), so a Bundle of several
        studies of one patient has one Patient.

    Returns
    -------
    list of (str, dict)
        Observation first. Full URLs are ``urn:uuid:`` (uuid5 of the Study Instance UID,
        device id and pseudonym: the same study gives the same Bundle).
    """
    study = summary.study
    study_uid = str(study["study_instance_uid"])
    pseudonym = str(study.get("patient_pseudonym") or "")
    ns = uuid.uuid5(uuid.NAMESPACE_URL, "urn:kerma:fhir")
    ids = ids if ids is not None else {}
    patient_url = ids.setdefault(
        f"patient:{pseudonym}", f"urn:uuid:{uuid.uuid5(ns, 'patient:' + pseudonym)}"
    )
    study_key = f"{study_uid}|{study.get('device_id')}"
    study_url = f"urn:uuid:{uuid.uuid5(ns, 'study:' + study_key)}"
    device_url = f"urn:uuid:{uuid.uuid5(ns, 'device:' + str(study.get('device_id')))}"
    obs_url = f"urn:uuid:{uuid.uuid5(ns, 'observation:' + study_key)}"

    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": PSEUDONYM_SYSTEM, "value": pseudonym}],
    }
    effective = _effective(summary)
    imaging_study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": _oid(study_uid)}],
        "status": "available",
        "subject": {"reference": patient_url},
    }
    modality = str(study.get("modality") or "").upper()
    if modality:
        imaging_study["modality"] = [
            {
                "system": DCM,
                "code": modality,
                "display": MODALITY_DISPLAY.get(modality, modality),
            }
        ]
    if effective:
        imaging_study["started"] = effective
    if study.get("study_description"):
        imaging_study["description"] = str(study["study_description"])

    components = _components(summary)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"profile": [OBSERVATION_PROFILE]},
        "identifier": [
            {
                "type": {
                    "coding": [_coding(DICOM_ID_TYPE, "sop-instance-uid", "SOP Instance UID")]
                },
                "system": "urn:dicom:uid",
                "value": _oid(str(r["sop_instance_uid"])),
            }
            for r in summary.reports
            if str(r.get("kind", "")).startswith("rdsr")
        ],
        "partOf": [
            {
                "reference": study_url,
                "type": "ImagingStudy",
                "identifier": {
                    "type": {
                        "coding": [
                            _coding(DICOM_ID_TYPE, "study-instance-uid", "Study Instance UID")
                        ]
                    },
                    "system": "urn:dicom:uid",
                    "value": _oid(study_uid),
                },
            }
        ],
        "status": "final",
        "code": {
            "coding": [
                _coding(
                    LOINC,
                    "73569-6",
                    "Radiation exposure and protection information [Description] Document "
                    "Diagnostic imaging",
                )
            ]
        },
        "subject": {"reference": patient_url},
        "focus": [{"reference": study_url, "type": "ImagingStudy"}],
        "performer": [{"type": "Practitioner", **_absent()}],
        "valueString": _summary_text(components),
        "device": {
            "reference": device_url,
            "display": str(summary.device.get("device_name") or ""),
        },
        "component": components,
    }
    if not observation["identifier"]:
        del observation["identifier"]
    if effective:
        observation["effectiveDateTime"] = effective
    else:
        observation["_effectiveDateTime"] = _absent()
    accession = study.get("accession_number")
    if accession:
        observation["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {
                    "type": {"coding": [_coding(V2_0203, "ACSN", "Accession ID")]},
                    "value": str(accession),
                },
            }
        ]
    if not observation["device"]["display"]:
        del observation["device"]["display"]
    return [
        (obs_url, observation),
        (study_url, imaging_study),
        (device_url, _device(summary)),
        (patient_url, patient),
    ]


def build_bundle(
    summaries: Sequence[StudyDoseSummary], *, bundle_type: str = "collection"
) -> dict[str, Any]:
    """Return the FHIR R4 Bundle of the Radiation Dose Summaries of ``summaries``.

    Parameters
    ----------
    summaries : sequence of StudyDoseSummary
        One per study (and device).
    bundle_type : {"collection", "transaction"}, optional
        ``transaction`` adds each entry's ``request`` (POST; Patient, Device and
        ImagingStudy conditionally created by identifier, so re-sending a study does not
        duplicate them).

    Returns
    -------
    dict
        The Bundle as JSON-ready data (``json.dumps`` it).

    Raises
    ------
    ValueError
        When ``bundle_type`` is neither.
    """
    if bundle_type not in ("collection", "transaction"):
        raise ValueError(f"Unable to build a FHIR Bundle of type {bundle_type!r}.")
    ids: dict[str, str] = {}
    seen: set[str] = set()
    entries = []
    for summary in summaries:
        for full_url, resource in study_resources(summary, ids=ids):
            if full_url in seen:
                continue
            seen.add(full_url)
            entry: dict[str, Any] = {"fullUrl": full_url, "resource": resource}
            if bundle_type == "transaction":
                entry["request"] = _request(resource)
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "entry": entries,
    }


def _request(resource: dict[str, Any]) -> dict[str, Any]:
    """Return the transaction request of a resource (conditional create where identified)."""
    kind = resource["resourceType"]
    request: dict[str, Any] = {"method": "POST", "url": kind}
    identifiers = [i for i in resource.get("identifier", []) if i.get("value")]
    if kind in ("Patient", "ImagingStudy", "Device") and identifiers:
        first = identifiers[0]
        system = f"{first['system']}|" if first.get("system") else ""
        request["ifNoneExist"] = f"identifier={system}{first['value']}"
    return request


def post_bundle(base_url: str, body: str, *, timeout_s: float = 60.0) -> tuple[int, str]:
    """POST a transaction Bundle to a FHIR server's base URL (FHIR R4 RESTful API "transaction").

    Parameters
    ----------
    base_url : str
        The server's base (``http(s)://host/fhir``); the Bundle goes to the base itself.
    body : str
        The Bundle's JSON.
    timeout_s : float, optional
        Seconds to wait for the answer.

    Returns
    -------
    (int, str)
        The HTTP status and the answer's body (the transaction-response Bundle, or an
        OperationOutcome).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the URL is not http(s) or the server cannot be reached.
    """
    import urllib.error
    import urllib.request

    from kerma.errors import ConfigurationError

    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"Unable to POST to {base_url!r}: not an http(s) URL.")
    request = urllib.request.Request(
        base_url.rstrip("/"),
        data=body.encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "application/fhir+json; charset=utf-8",
            "Accept": "application/fhir+json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return int(answer.status), answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigurationError(f"Unable to reach the FHIR server at {base_url}: {exc}.") from exc

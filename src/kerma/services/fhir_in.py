"""FHIR resources in: ServiceRequest and Observation (weight, height) to orders (docs/ris.md).

A FHIR R4 JSON body (a Bundle of any type, a subscription notification, or one
resource) gives :class:`kerma.services.hl7.OrderData` records, as an HL7 v2 message
does:

- ``ServiceRequest``: the accession number is the ``identifier`` whose ``type`` is
  ``ACSN`` (HL7 Table 0203, system ``http://terminology.hl7.org/CodeSystem/v2-0203``,
  as the FHIR ImagingStudy and IHE profiles use it); the patient is ``subject``; the
  requested procedure is ``code.coding[0]`` (code and display, else ``code.text``);
  the date ``occurrenceDateTime`` (else ``occurrencePeriod.start``, ``authoredOn``);
  the modality a ``category`` coding of the DICOM system (DCM); the ordering
  department the ``requester.display``.
- ``Observation`` with a LOINC code 29463-7 (body weight) or 8302-2 (body height), a
  ``valueQuantity`` in a UCUM unit (``code``, else ``unit``): it joins the
  ServiceRequest it is ``basedOn`` when that is in the same body, else it is a patient
  update of its ``effectiveDateTime``'s date.
- ``Patient``: resolves ``subject`` references (``Patient/<id>``, ``urn:uuid:``); the
  patient ID is the ``identifier`` of type ``MR`` (else the first one). A ``subject``
  with an ``identifier`` needs no Patient resource.

May import ``kerma.errors``, ``kerma.units`` and ``kerma.services`` modules that import
no more.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kerma.errors import MessageError
from kerma.services.hl7 import ERR_DATA_TYPE, ERR_TABLE_VALUE, OrderData
from kerma.units import BODY_HEIGHT_TO_M, BODY_WEIGHT_TO_KG

LOINC: Final = "http://loinc.org"
V2_0203: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM_DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
#: LOINC body weight and body height codes read (as the HL7 v2 default mapping).
WEIGHT_CODES: Final = frozenset({"29463-7", "3141-9", "8335-2"})
HEIGHT_CODES: Final = frozenset({"8302-2", "3137-7", "8308-9"})


@dataclass
class ParsedFhir:
    """The orders of one FHIR body and what it was (``FHIR Bundle/searchset`` ...)."""

    kind: str
    orders: list[OrderData] = field(default_factory=list)


def _resources(data: Mapping[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Yield (fullUrl, resource) of a Bundle's entries (nested Bundles too) or one resource."""
    if data.get("resourceType") == "Bundle":
        for entry in data.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            resource = entry.get("resource")
            if isinstance(resource, dict):
                if resource.get("resourceType") == "Bundle":
                    yield from _resources(resource)
                else:
                    yield entry.get("fullUrl"), resource
    else:
        yield None, dict(data)


def _date(text: object) -> dt.date | None:
    """Return the date of a FHIR date/dateTime (``YYYY-MM-DD...``), ``None`` otherwise."""
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _patient_id(patient: Mapping[str, Any]) -> str | None:
    """Return the MR identifier of a Patient (else its first identifier)."""
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict)]
    for ident in identifiers:
        codings = (ident.get("type") or {}).get("coding") or []
        if any(c.get("code") == "MR" for c in codings if isinstance(c, dict)):
            return str(ident.get("value") or "").strip() or None
    for ident in identifiers:
        if ident.get("value"):
            return str(ident["value"]).strip()
    return None


def _accession(request: Mapping[str, Any]) -> str | None:
    """Return the ACSN identifier value of a ServiceRequest."""
    for ident in request.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        codings = (ident.get("type") or {}).get("coding") or []
        if any(c.get("code") == "ACSN" for c in codings if isinstance(c, dict)):
            value = str(ident.get("value") or "").strip()
            if value:
                return value
    return None


def _quantity(obs: Mapping[str, Any], table: Mapping[str, float], what: str) -> float | None:
    """Return an Observation's valueQuantity in the canonical unit of ``table``."""
    quantity = obs.get("valueQuantity")
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        return None
    try:
        value = float(quantity["value"])
    except (TypeError, ValueError):
        raise MessageError(
            f"Observation ({what}): valueQuantity.value is not a number.", error_code=ERR_DATA_TYPE
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise MessageError(
            f"Observation ({what}): valueQuantity.value is not a positive number.",
            error_code=ERR_DATA_TYPE,
        )
    unit = str(quantity.get("code") or quantity.get("unit") or "").strip()
    factor = table.get(unit)
    if factor is None:
        raise MessageError(
            f"Observation ({what}): the unit is not a known unit (known: {', '.join(table)}).",
            error_code=ERR_TABLE_VALUE,
        )
    return value * factor


def parse_fhir(body: bytes) -> ParsedFhir:
    """Return the orders a FHIR JSON body gives (module docstring).

    Raises
    ------
    kerma.errors.MessageError
        ``AR`` when the body is not FHIR JSON; ``AE`` for a weight or height that is
        not a positive number in a known unit.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MessageError("The body is not JSON.", ack_code="AR", error_code="100") from None
    if not isinstance(data, dict) or "resourceType" not in data:
        raise MessageError(
            "The body is not a FHIR resource (no resourceType).", ack_code="AR", error_code="100"
        )
    kind = str(data["resourceType"])
    if kind == "Bundle" and data.get("type"):
        kind = f"Bundle/{data['type']}"
    patients: dict[str, str | None] = {}
    requests: list[tuple[str | None, dict[str, Any]]] = []
    observations: list[dict[str, Any]] = []
    for full_url, resource in _resources(data):
        rtype = resource.get("resourceType")
        if rtype == "Patient":
            pid = _patient_id(resource)
            if resource.get("id"):
                patients[f"Patient/{resource['id']}"] = pid
            if full_url:
                patients[str(full_url)] = pid
        elif rtype == "ServiceRequest":
            requests.append((full_url, resource))
        elif rtype == "Observation":
            observations.append(resource)

    def subject_id(resource: Mapping[str, Any]) -> str | None:
        subject = resource.get("subject") or {}
        if not isinstance(subject, dict):
            return None
        ident = subject.get("identifier")
        if isinstance(ident, dict) and ident.get("value"):
            return str(ident["value"]).strip()
        ref = str(subject.get("reference") or "")
        return patients.get(ref) or patients.get(ref.split("/_history")[0])

    out = ParsedFhir(kind)
    by_reference: dict[str, OrderData] = {}
    for full_url, request in requests:
        coding = next(
            (c for c in (request.get("code") or {}).get("coding") or [] if isinstance(c, dict)),
            {},
        )
        modality = None
        for category in request.get("category") or []:
            for c in (category or {}).get("coding") or []:
                if isinstance(c, dict) and c.get("system") == DICOM_DCM and c.get("code"):
                    modality = str(c["code"]).upper()[:16]
        period = request.get("occurrencePeriod") or {}
        order = OrderData(
            message_type="ServiceRequest",
            accession_number=_accession(request),
            patient_id=subject_id(request),
            order_date=_date(request.get("occurrenceDateTime"))
            or _date(period.get("start") if isinstance(period, dict) else None)
            or _date(request.get("authoredOn")),
            modality=modality,
            requested_procedure_code=str(coding.get("code") or "").strip() or None,
            requested_procedure_text=str(
                coding.get("display") or (request.get("code") or {}).get("text") or ""
            ).strip()
            or None,
            ordering_department=str((request.get("requester") or {}).get("display") or "").strip()
            or None,
        )
        if not order.accession_number and not order.patient_id:
            continue  # nothing to match it by
        out.orders.append(order)
        if request.get("id"):
            by_reference[f"ServiceRequest/{request['id']}"] = order
        if full_url:
            by_reference[str(full_url)] = order
    for obs in observations:
        codes = {
            str(c.get("code"))
            for c in (obs.get("code") or {}).get("coding") or []
            if isinstance(c, dict) and c.get("system") in (LOINC, None)
        }
        if codes & WEIGHT_CODES:
            name, value = "patient_weight_kg", _quantity(obs, BODY_WEIGHT_TO_KG, "body weight")
        elif codes & HEIGHT_CODES:
            name, value = "patient_size_m", _quantity(obs, BODY_HEIGHT_TO_M, "body height")
        else:
            continue
        if value is None:
            continue
        target = None
        for based in obs.get("basedOn") or []:
            ref = str((based or {}).get("reference") or "")
            target = by_reference.get(ref) or target
        if target is None:
            patient = subject_id(obs)
            date = _date(obs.get("effectiveDateTime")) or _date(
                (obs.get("effectivePeriod") or {}).get("start")
            )
            if not patient or date is None:
                continue  # a measurement of no known patient or day cannot be matched
            target = next(
                (
                    o
                    for o in out.orders
                    if o.message_type == "Observation"
                    and o.patient_id == patient
                    and o.order_date == date
                ),
                None,
            )
            if target is None:
                target = OrderData(message_type="Observation", patient_id=patient, order_date=date)
                out.orders.append(target)
        setattr(target, name, value)
    return out

"""HL7 v2 messages from the RIS: the site mapping, parsing to an order, acknowledgements.

A message (ORM^O01, OMI^O23, ORU^R01, ADT^A08) is parsed with python-hl7 and read
through the site mapping (:class:`Hl7Mapping`, TOML; the packaged
``hl7_mapping.toml`` by default, ``KERMA_HL7_MAPPING`` for a site's): which segment
and field carry the accession number, patient ID, order date, modality, requested
procedure and ordering department, per sending application (MSH-3). Weight and height
come from the OBX segments whose OBX-3 code is a LOINC body weight (29463-7) or body
height (8302-2) code, converted from the OBX-6 unit (:data:`kerma.units.BODY_WEIGHT_TO_KG`,
:data:`kerma.units.BODY_HEIGHT_TO_M`).

What this module returns holds the clear accession number and patient ID, in memory
only: :mod:`kerma.services.orders` turns them into keyed hashes at once. No function
here logs a value of a message, and no error message quotes one.

May import ``kerma.errors``, ``kerma.units`` and ``kerma.records`` (and python-hl7).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from kerma.errors import ConfigurationError, MessageError
from kerma.units import BODY_HEIGHT_TO_M, BODY_WEIGHT_TO_KG

#: The packaged mapping (package data beside this module).
DEFAULT_MAPPING_FILE: Final = "hl7_mapping.toml"

#: What a mapping names, each a list of field paths tried in order.
MAPPED_FIELDS: Final[tuple[str, ...]] = (
    "accession_number",
    "patient_id",
    "patient_id_issuer",
    "order_date",
    "modality",
    "requested_procedure_code",
    "requested_procedure_text",
    "ordering_department",
)

#: Mapping keys that list OBX-3 codes rather than field paths.
CODE_FIELDS: Final[tuple[str, ...]] = ("weight_codes", "height_codes")

#: Message types read (MSH-9.1 ^ MSH-9.2), HL7 v2.5.1 chapters 4 (orders), 7
#: (observations) and 3 (ADT). ADT^A31 (update person) carries the same content.
SUPPORTED_TYPES: Final[frozenset[str]] = frozenset(
    {"ORM^O01", "OMI^O23", "ORU^R01", "ADT^A08", "ADT^A31"}
)

#: A field path: SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]].
_PATH = re.compile(
    r"(?P<seg>[A-Z][A-Z0-9]{2})-(?P<field>\d+)(?:\.(?P<comp>\d+))?(?:\.(?P<sub>\d+))?"
)

#: A message type (HL7 Table 0076) or trigger event (Table 0003) code.
_MESSAGE_CODE = re.compile(r"[A-Z][A-Z0-9]{2}")

#: HL7 Table 0357 (message error condition codes) used in ERR-3.
ERR_REQUIRED_FIELD_MISSING: Final = "101"
ERR_DATA_TYPE: Final = "102"
ERR_TABLE_VALUE: Final = "103"
ERR_UNSUPPORTED_TYPE: Final = "200"
ERR_UNSUPPORTED_EVENT: Final = "201"
ERR_INTERNAL: Final = "207"
ERR_SEGMENT_SEQUENCE: Final = "100"


@dataclass(frozen=True)
class FieldPath:
    """One position in a message: segment, field, component and subcomponent (1-based)."""

    segment: str
    field: int
    component: int = 1
    subcomponent: int = 1

    @classmethod
    def parse(cls, text: str, *, where: str) -> FieldPath:
        """Return the path of ``"OBR-18"``, ``"PID-3.1"`` or ``"OBR-4.2.1"``.

        Raises
        ------
        ConfigurationError
            When ``text`` is not a field path.
        """
        m = _PATH.fullmatch(text.strip().upper())
        if not m:
            raise ConfigurationError(
                f"Unable to read the HL7 mapping: {where} {text!r} is not a field path; "
                "write SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]], e.g. 'OBR-18' or 'PID-3.1'."
            )
        return cls(m["seg"], int(m["field"]), int(m["comp"] or 1), int(m["sub"] or 1))

    def __str__(self) -> str:
        """Return the path as written in a mapping."""
        text = f"{self.segment}-{self.field}"
        if self.component != 1 or self.subcomponent != 1:
            text += f".{self.component}"
        if self.subcomponent != 1:
            text += f".{self.subcomponent}"
        return text


@dataclass(frozen=True)
class FieldMap:
    """The mapping of one sending application: field paths per mapped field, OBX codes."""

    paths: Mapping[str, tuple[FieldPath, ...]]
    weight_codes: frozenset[str]
    height_codes: frozenset[str]


@dataclass(frozen=True)
class Hl7Mapping:
    """A site's HL7 v2 mapping: the default and per sending application (MSH-3).

    Attributes
    ----------
    default : FieldMap
        Used for every sending application without a table of its own.
    applications : dict of str to FieldMap
        ``[application."NAME"]`` tables, each the default with its keys replaced.
    source : str
        Where the mapping was read from.
    """

    default: FieldMap
    applications: Mapping[str, FieldMap]
    source: str

    def for_application(self, name: str | None) -> FieldMap:
        """Return the mapping of a sending application (the default when it has none)."""
        return self.applications.get((name or "").strip(), self.default)


def _field_map(table: Mapping[str, Any], base: Mapping[str, Any], *, where: str) -> FieldMap:
    """Build one :class:`FieldMap` from a TOML table over ``base``."""
    merged = {**base, **table}
    unknown = set(table) - set(MAPPED_FIELDS) - set(CODE_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"Unable to read the HL7 mapping: {where} has unknown keys "
            f"{', '.join(sorted(unknown))}; the keys are "
            f"{', '.join((*MAPPED_FIELDS, *CODE_FIELDS))}."
        )
    paths: dict[str, tuple[FieldPath, ...]] = {}
    for name in MAPPED_FIELDS:
        value = merged.get(name, [])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigurationError(
                f"Unable to read the HL7 mapping: {where}.{name} must be a field path or "
                "a list of field paths."
            )
        paths[name] = tuple(FieldPath.parse(v, where=f"{where}.{name}") for v in items)
    codes: dict[str, frozenset[str]] = {}
    for name in CODE_FIELDS:
        value = merged.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f"Unable to read the HL7 mapping: {where}.{name} must be a list of codes."
            )
        codes[name] = frozenset(v.strip() for v in value)
    return FieldMap(paths, codes["weight_codes"], codes["height_codes"])


def load_mapping(path: Path | str | None = None) -> Hl7Mapping:
    """Read an HL7 mapping file (TOML); ``None``: the packaged default.

    A site file's ``[default]`` keys replace the packaged default's (keys it leaves
    out keep the packaged paths); ``[application."NAME"]`` tables replace keys for one
    sending application.

    Raises
    ------
    ConfigurationError
        When the file cannot be read, is not TOML, or names an unknown key or a path
        that is not SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]].
    """
    packaged = resources.files("kerma.services").joinpath(DEFAULT_MAPPING_FILE)
    base: dict[str, Any] = tomllib.loads(packaged.read_text(encoding="utf-8"))["default"]
    if path is None:
        data: dict[str, Any] = {"default": {}}
        source = f"packaged {DEFAULT_MAPPING_FILE}"
    else:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                f"Unable to read the HL7 mapping {path}: {exc.strerror or exc}."
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(
                f"Unable to read the HL7 mapping {path}: not valid TOML ({exc})."
            ) from exc
        source = str(path)
    unknown = set(data) - {"default", "application"}
    if unknown:
        raise ConfigurationError(
            f"Unable to read the HL7 mapping {source}: unknown tables "
            f'{", ".join(sorted(unknown))}; use [default] and [application."NAME"].'
        )
    default_table = {**base, **data.get("default", {})}
    default = _field_map(default_table, {}, where="[default]")
    applications = {
        str(name): _field_map(table, default_table, where=f'[application."{name}"]')
        for name, table in data.get("application", {}).items()
    }
    return Hl7Mapping(default, applications, source)


@dataclass
class OrderData:
    """What one message tells about an order (clear identity: memory only, never logged).

    Attributes
    ----------
    message_type : str
        ``ORM^O01``, ``ORU^R01`` ...
    accession_number, patient_id, patient_id_issuer : str or None
        As read; hashed by :mod:`kerma.services.orders` before anything is stored.
    order_date : datetime.date or None
        The date the order is for (mapping ``order_date``).
    patient_weight_kg : float or None
        Body weight in kg (from the OBX unit).
    patient_size_m : float or None
        Body height in m.
    notes : list of str
        What was read with a fallback (e.g. an OBX without unit), for ``test-message``.
    """

    message_type: str
    message_control_id: str | None = None
    sending_application: str | None = None
    accession_number: str | None = field(default=None, repr=False)
    patient_id: str | None = field(default=None, repr=False)
    patient_id_issuer: str | None = field(default=None, repr=False)
    order_date: dt.date | None = None
    modality: str | None = None
    requested_procedure_code: str | None = None
    requested_procedure_text: str | None = None
    ordering_department: str | None = None
    patient_weight_kg: float | None = None
    patient_size_m: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Envelope:
    """The MSH of a message, as far as it could be read (for the ACK of any message)."""

    sending_application: str | None = None
    sending_facility: str | None = None
    receiving_application: str | None = None
    receiving_facility: str | None = None
    message_type: str | None = None
    trigger_event: str | None = None
    message_control_id: str | None = None
    processing_id: str = "P"
    version_id: str = "2.5.1"


def decode(raw: bytes) -> str:
    """Return the text of a message: UTF-8, else ISO 8859-1; segments split by CR.

    HL7 v2 allows any MSH-18 character set; UTF-8 is the preferred one since v2.8 and
    ISO 8859-1 (the default of many European RIS) decodes any byte, so nothing is lost.
    Line feeds between segments (files edited by hand) are read as CR.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 \t")
    return text


def read_envelope(raw: bytes) -> Envelope:
    """Return what the MSH segment says, without python-hl7 (also for a broken message).

    Only the first segment is read; a message that does not start with ``MSH`` gives
    an empty envelope.
    """
    text = decode(raw)
    first = text.split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return Envelope()
    sep = first[3]
    comp = first[4]
    fields = first.split(sep)
    # fields[0] = "MSH", fields[1] = encoding characters (MSH-2); MSH-n is fields[n - 1]

    def get(n: int, c: int = 1) -> str | None:
        if n - 1 >= len(fields):
            return None
        parts = fields[n - 1].split(comp)
        value = parts[c - 1].strip() if c - 1 < len(parts) else ""
        return value or None

    # a damaged MSH (fields shifted, segments run together) may carry any text in any
    # field, patient data included: its fields are used (ACK, ris_message, logs) only
    # when MSH-9 reads as a message type and trigger event
    if not _MESSAGE_CODE.fullmatch(get(9, 1) or "") or not _MESSAGE_CODE.fullmatch(
        get(9, 2) or "XXX"
    ):
        return Envelope()
    return Envelope(
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
        message_type=get(9, 1),
        trigger_event=get(9, 2),
        message_control_id=get(10),
        processing_id=get(11) or "P",
        version_id=get(12) or "2.5.1",
    )


def _value(message: Any, path: FieldPath) -> str:
    """Return the value at ``path`` in the first segment of its name ('' when absent)."""
    try:
        segment = message.segment(path.segment)
    except KeyError:
        return ""
    try:
        value = segment.extract_field(
            segment_num=1,
            field_num=path.field,
            repeat_num=1,
            component_num=path.component,
            subcomponent_num=path.subcomponent,
        )
    except IndexError:
        return ""  # a component or field the segment does not carry
    return str(value).strip()


def _first(message: Any, paths: Sequence[FieldPath]) -> str | None:
    """Return the first non-empty value of ``paths`` (``None`` when all are empty)."""
    for path in paths:
        value = _value(message, path)
        if value and value != '""':  # '""' is HL7's explicit null
            return value
    return None


def parse_hl7_date(text: str | None) -> dt.date | None:
    """Return the date of an HL7 DTM/TS value (``YYYYMMDD[HHMM[SS]]...``), ``None`` if none."""
    if not text:
        return None
    m = re.match(r"(\d{4})(\d{2})(\d{2})", text.strip())
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _number(text: str, *, what: str, obx: int) -> float:
    """Return an OBX-5 numeric value; raise :class:`MessageError` (AE, 102) otherwise."""
    try:
        value = float(text.strip())
    except ValueError:
        raise MessageError(
            f"OBX {obx} ({what}): OBX-5 is not a number.", error_code=ERR_DATA_TYPE
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise MessageError(
            f"OBX {obx} ({what}): OBX-5 is not a positive number.", error_code=ERR_DATA_TYPE
        )
    return value


def _convert(value: float, unit: str, table: Mapping[str, float], *, what: str, obx: int) -> float:
    """Return ``value`` in the canonical unit of ``table``; AE (103) for a unit not known."""
    factor = table.get(unit.strip())
    if factor is None:
        factor = {k.lower(): v for k, v in table.items()}.get(unit.strip().lower())
    if factor is None:
        known = ", ".join(table)
        raise MessageError(
            f"OBX {obx} ({what}): the unit in OBX-6 is not a known unit (known: {known}).",
            error_code=ERR_TABLE_VALUE,
        )
    return value * factor


def _observations(message: Any, fields: FieldMap, order: OrderData) -> None:
    """Read weight and height from the OBX segments (the last of each code wins)."""
    try:
        segments = message.segments("OBX")
    except KeyError:
        return
    for number, obx in enumerate(segments, start=1):
        code = _segment_value(obx, 3, 1)
        if code in fields.weight_codes:
            what, table, name = "body weight", BODY_WEIGHT_TO_KG, "patient_weight_kg"
        elif code in fields.height_codes:
            what, table, name = "body height", BODY_HEIGHT_TO_M, "patient_size_m"
        else:
            continue
        text = _segment_value(obx, 5, 1)
        if not text:
            order.notes.append(f"OBX {number} ({what}) has no value; ignored")
            continue
        value = _number(text, what=what, obx=number)
        unit = _segment_value(obx, 6, 1)
        if not unit:
            raise MessageError(
                f"OBX {number} ({what}): OBX-6 gives no unit.",
                error_code=ERR_REQUIRED_FIELD_MISSING,
            )
        setattr(order, name, _convert(value, unit, table, what=what, obx=number))


def _segment_value(segment: Any, field_num: int, component: int) -> str:
    """Return one component of one field of a segment ('' when absent)."""
    try:
        return str(
            segment.extract_field(
                segment_num=1, field_num=field_num, repeat_num=1, component_num=component
            )
        ).strip()
    except IndexError:
        return ""


def parse_message(raw: bytes, mapping: Hl7Mapping) -> OrderData:
    """Parse one HL7 v2 message into an :class:`OrderData` with ``mapping``.

    Parameters
    ----------
    raw : bytes
        The message as received (without MLLP framing).
    mapping : Hl7Mapping
        The site mapping; the sending application's table is used.

    Returns
    -------
    OrderData
        Clear identity included (memory only).

    Raises
    ------
    kerma.errors.MessageError
        ``AR`` when the bytes are not an HL7 v2 message or its type is not one Kerma
        reads; ``AE`` when it has neither accession number nor patient ID, or a weight
        or height that is not a positive number in a known unit.
    """
    import hl7

    envelope = read_envelope(raw)
    if envelope.message_type is None:
        raise MessageError(
            "The message does not start with an MSH segment whose MSH-9 is a message type.",
            ack_code="AR",
            error_code=ERR_SEGMENT_SEQUENCE,
        )
    kind = f"{envelope.message_type}^{envelope.trigger_event or ''}"
    if envelope.message_type not in {t.split("^")[0] for t in SUPPORTED_TYPES}:
        raise MessageError(
            f"Message type {kind} is not read by Kerma (it reads "
            f"{', '.join(sorted(SUPPORTED_TYPES))}).",
            ack_code="AR",
            error_code=ERR_UNSUPPORTED_TYPE,
        )
    if kind not in SUPPORTED_TYPES:
        raise MessageError(
            f"Trigger event {kind} is not read by Kerma (it reads "
            f"{', '.join(sorted(SUPPORTED_TYPES))}).",
            ack_code="AR",
            error_code=ERR_UNSUPPORTED_EVENT,
        )
    from hl7.exceptions import HL7Exception

    _silence_library_logs()
    try:
        return _read(hl7.parse(decode(raw)), envelope, kind, mapping)
    except (
        ValueError,
        LookupError,
        TypeError,
        AttributeError,
        AssertionError,
        HL7Exception,
    ) as exc:
        if isinstance(exc, MessageError):
            raise
        raise MessageError(
            f"The message cannot be parsed as HL7 v2 ({type(exc).__name__}).",
            ack_code="AR",
            error_code=ERR_SEGMENT_SEQUENCE,
        ) from None


def _silence_library_logs() -> None:
    """Turn off python-hl7's own loggers: they log field values (patient IDs) on errors.

    python-hl7 0.4 logs "Error unescaping value [<value>]" and the like through loggers
    named after its files (``logging.getLogger(__file__)``); a patient ID must never
    reach a log (docs/privacy.md), so they are disabled. Kerma reports what it could not
    read in its own words instead.
    """
    import hl7.containers
    import hl7.util

    for module in (hl7.containers, hl7.util):
        module.logger.disabled = True


def _read(message: Any, envelope: Envelope, kind: str, mapping: Hl7Mapping) -> OrderData:
    """Read a parsed message through the mapping of its sending application."""
    fields = mapping.for_application(envelope.sending_application)
    paths = fields.paths
    order = OrderData(
        message_type=kind,
        message_control_id=envelope.message_control_id,
        sending_application=envelope.sending_application,
        accession_number=_first(message, paths["accession_number"]),
        patient_id=_first(message, paths["patient_id"]),
        patient_id_issuer=_first(message, paths["patient_id_issuer"]),
        order_date=parse_hl7_date(_first(message, paths["order_date"])),
        modality=_first(message, paths["modality"]),
        requested_procedure_code=_first(message, paths["requested_procedure_code"]),
        requested_procedure_text=_first(message, paths["requested_procedure_text"]),
        ordering_department=_first(message, paths["ordering_department"]),
    )
    if envelope.message_type == "ADT":
        order.accession_number = None  # an ADT message is about the patient, not an order
    if order.modality:
        order.modality = order.modality.upper()[:16]
    _observations(message, fields, order)
    if not order.accession_number and not order.patient_id:
        raise MessageError(
            "The message has neither an accession number nor a patient ID where the "
            f"mapping looks ({', '.join(str(p) for p in paths['accession_number'])}; "
            f"{', '.join(str(p) for p in paths['patient_id'])}).",
            error_code=ERR_REQUIRED_FIELD_MISSING,
        )
    if not order.accession_number and order.order_date is None:
        raise MessageError(
            "A message without accession number needs a date to be matched, and the "
            "mapping's order_date fields are empty.",
            error_code=ERR_REQUIRED_FIELD_MISSING,
        )
    return order


def _escape(text: str) -> str:
    """Return free text made safe for an HL7 field (delimiters escaped, one line)."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    out = out.replace("&", "\\T\\").replace("~", "\\R\\")
    return " ".join(out.split())[:400]


def build_ack(
    envelope: Envelope,
    ack_code: str,
    *,
    reason: str | None = None,
    error_code: str | None = None,
    now: dt.datetime | None = None,
    control_id: str | None = None,
) -> bytes:
    """Return the ACK of a message (HL7 v2.5.1 2.9.2 original mode), UTF-8.

    MSH with sender and receiver swapped, MSA-1 ``ack_code`` (``AA``, ``AE``, ``AR``)
    and MSA-2 the message's control ID; with a ``reason``, MSA-3 carries it and an ERR
    segment gives ERR-3 the HL7 Table 0357 ``error_code``, ERR-4 severity ``E`` and
    ERR-8 the reason.
    """
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%d%H%M%S")
    trigger = envelope.trigger_event or ""
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            "KERMA",
            _escape(envelope.receiving_facility or ""),
            _escape(envelope.sending_application or ""),
            _escape(envelope.sending_facility or ""),
            stamp,
            "",
            f"ACK^{_escape(trigger)}^ACK" if trigger else "ACK",
            control_id or f"K{now.strftime('%Y%m%d%H%M%S%f')}",
            envelope.processing_id,
            envelope.version_id,
        ]
    )
    msa = ["MSA", ack_code, _escape(envelope.message_control_id or "")]
    segments = [msh]
    if reason:
        msa.append(_escape(reason))
        code = error_code or ERR_INTERNAL
        segments.append("|".join(msa))
        segments.append(
            "|".join(
                # ERR-3 error code (Table 0357), ERR-4 severity, ERR-8 user message
                [
                    "ERR",
                    "",
                    "",
                    f"{code}^{_escape(_ERROR_TEXT.get(code, ''))}^HL70357",
                    "E",
                    "",
                    "",
                    "",
                    _escape(reason),
                ]
            )
        )
    else:
        segments.append("|".join(msa))
    return ("\r".join(segments) + "\r").encode("utf-8")


#: HL7 Table 0357 texts of the codes used.
_ERROR_TEXT: Final[dict[str, str]] = {
    ERR_SEGMENT_SEQUENCE: "Segment sequence error",
    ERR_REQUIRED_FIELD_MISSING: "Required field missing",
    ERR_DATA_TYPE: "Data type error",
    ERR_TABLE_VALUE: "Table value not found",
    ERR_UNSUPPORTED_TYPE: "Unsupported message type",
    ERR_UNSUPPORTED_EVENT: "Unsupported event code",
    ERR_INTERNAL: "Application internal error",
}

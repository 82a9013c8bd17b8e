"""Reading SR content items (PS3.3 C.17.3) leniently, with units converted on the way.

Every template reader (TID 10011, 10001, 10021) goes through these functions, so the
rules for quirky items live in one place. They take the light
:class:`kerma.dicom.tree.ContentItem` the readers use, and pydicom datasets as well
(for callers that build SR documents, such as the demo generator's tests):

- concepts are matched by code (``==`` on :class:`pydicom.sr.coding.Code`, which maps
  legacy SNOMED-RT codes to SNOMED CT), never by Code Meaning;
- an empty Measured Value Sequence (Type 2) gives ``None``, never ``0``;
- a NUM value that is not a valid Decimal String (``'10.00/ 12.50'``) is split on
  ``/`` or ``\\`` when it holds several numbers, else skipped, with a warning;
- units are read from each item's Measurement Units Code Sequence and converted to
  the canonical unit with :func:`kerma.units.conversion_factor`; a unit that is not
  the template's gives a warning, an unknown unit drops the value with a warning.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.sr.coding import Code

from kerma.dicom.decode_errors import DECODE_ERRORS
from kerma.dicom.text import repair_decoded
from kerma.dicom.tree import ContentItem, concept_key, iter_items
from kerma.records import DoseReport
from kerma.units import NON_UCUM_SPELLINGS, conversion_factor

#: A content item: a light :class:`ContentItem` (read from bytes, or built from a
#: dataset) or a pydicom dataset (every function here accepts both).
Item = ContentItem | Dataset

logger = logging.getLogger(__name__)

#: A DICOM DT value ``YYYYMMDDHHMMSS.FFFFFF&ZZXX`` (PS3.5 Table 6.2-1); the offset may be
#: written with a colon or after a space, and ``Z`` is read as UTC (seen in the field).
_DT = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?\s*(?:([+-]\d{2}:?\d{2})|Z)?"
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def concept_of(item: Item) -> Code | None:
    """Return the Concept Name of a content item as a :class:`Code`, or ``None``."""
    if isinstance(item, ContentItem):
        return item.concept
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    return code_from(seq[0])


def is_concept(code: Any, concept: Code) -> bool:
    """Return whether ``code`` (a Concept Name or coded value, or ``None``) is ``concept``.

    :meth:`pydicom.sr.coding.Code.__eq__` raises ``AttributeError`` when the other side
    is not a Code (``None == codes.DCM.X`` ends there by reflection); a content item
    without a concept name is allowed (PS3.3 C.17.3, Concept Name Code Sequence Type 1C,
    e.g. an IMAGE item by relationship), so every comparison of a read code goes through
    here and an absent or malformed code is simply not the concept.
    """
    if not isinstance(code, Code):
        return False
    return bool(code == concept)


def is_any_concept(code: Any, concepts: Iterable[Code]) -> bool:
    """Return whether ``code`` is one of ``concepts`` (``False`` for ``None``); see
    :func:`is_concept`."""
    if not isinstance(code, Code):
        return False
    return any(code == c for c in concepts)


#: The largest count Kerma stores (a 32-bit signed integer column, as SQL ``INTEGER``).
MAX_COUNT = 2**31 - 1


def as_count(value: float | None, report: DoseReport | None, *, what: str) -> int | None:
    """Return a count read as a number as an ``int``, or ``None`` when it is not one.

    A NaN or infinite count, or one larger than a 32-bit column holds, cannot be a
    number of events or frames: it is left empty with a warning on ``report`` (never
    an exception: ``round(float('nan'))`` raises ``ValueError``).
    """
    if value is None:
        return None
    if not math.isfinite(value) or abs(value) > MAX_COUNT:
        if report is not None:
            report.warn(f"{what}: count {value!r} is not a usable number; left empty")
        return None
    return round(value)


def sequence_items(ds: Any, keyword: str | int) -> list[Dataset]:
    """Return the items of a sequence attribute of a pydicom dataset (``[]`` if none).

    ``keyword`` is a DICOM keyword or a tag (private sequences have no keyword).

    Tolerant of what a damaged object holds instead: an absent or undecodable element, a
    value that is not a sequence (a re-typed element: text, a number), items that are
    not data sets. Callers index ``[0]`` only after checking the list is not empty.
    """
    try:
        seq = ds.get(keyword)
        if isinstance(keyword, int) and seq is not None:  # by tag: pydicom gives the element
            seq = seq.value
    except DECODE_ERRORS:  # an undecodable element is as good as absent (warned where read)
        return []
    if not isinstance(seq, list | PydicomSequence):
        return []
    return [item for item in seq if isinstance(item, Dataset)]


def code_from(code_item: Dataset) -> Code | None:
    """Return a :class:`Code` built from a code sequence item, or ``None`` if incomplete."""
    value = (
        code_item.get("CodeValue")
        or code_item.get("LongCodeValue")
        or code_item.get("URNCodeValue")
    )
    scheme = code_item.get("CodingSchemeDesignator")
    if not value or not scheme:
        return None
    meaning = str(code_item.get("CodeMeaning", "") or "")
    try:
        return Code(str(value).strip(), str(scheme).strip(), meaning.strip())
    except (ValueError, TypeError, KeyError):  # pragma: no cover - pydicom validates nothing
        return None


def children(item: Any) -> list[Any]:
    """Return the Content Sequence of ``item`` (an empty list when absent)."""
    if isinstance(item, ContentItem):
        return item.children
    seq = item.get("ContentSequence")
    return list(seq) if seq else []


def _matches(item: Item, concept: Code, key: tuple[str, str]) -> bool:
    """Return whether the Concept Name of ``item`` equals ``concept`` (``key`` its key)."""
    if isinstance(item, ContentItem):
        return item.key == key
    return concept_of(item) == concept


def find(items: Iterable[Any], concept: Code) -> Any:
    """Return the first item whose Concept Name equals ``concept``, or ``None``."""
    key = concept_key(concept)
    for item in items:
        if _matches(item, concept, key):
            return item
    return None


def find_all(items: Iterable[Any], concept: Code) -> list[Any]:
    """Return every item whose Concept Name equals ``concept``, in order."""
    key = concept_key(concept)
    return [item for item in items if _matches(item, concept, key)]


def find_one(items: Iterable[Any], concept: Code, report: DoseReport | None, *, where: str) -> Any:
    """Return the first item of a concept the template allows once, warning on repeats.

    ``where`` names the container for the warning (e.g. ``"'CT Dose' (TID 10013)"``).
    """
    found = find_all(items, concept)
    if len(found) > 1 and report is not None:
        report.warn(f"{describe(concept)} appears {len(found)} times in {where}; first one used")
    return found[0] if found else None


def iter_tree(items: Iterable[Any]) -> Iterator[Any]:
    """Yield every item of a content tree, depth first, in document order."""
    items = list(items)
    if items and isinstance(items[0], ContentItem):
        yield from iter_items(items)
        return
    stack = [iter(list(items))]
    while stack:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        yield item
        kids = item.get("ContentSequence")
        if kids:
            stack.append(iter(list(kids)))


def value_type(item: Item | None) -> str | None:
    """Return the (0040,A040) Value Type of a content item (``NUM``, ``TEXT`` ...)."""
    if item is None:
        return None
    if isinstance(item, ContentItem):
        return item.value_type
    value = item.get("ValueType")
    return str(value).strip() or None if value else None


def has_measured_value(item: Item | None) -> bool:
    """Return whether a NUM item has an item in its Measured Value Sequence."""
    if item is None:
        return False
    if isinstance(item, ContentItem):
        return item.has_measured_value
    return bool(item.get("MeasuredValueSequence"))


def stored_number(item: Item | None) -> Any:
    """Return the (0040,A30A) Numeric Value of a NUM item as stored, or ``None``."""
    if item is None:
        return None
    if isinstance(item, ContentItem):
        return item.numeric_value if item.has_measured_value else None
    mvs = item.get("MeasuredValueSequence")
    return mvs[0].get("NumericValue") if mvs else None


def describe(concept: Code) -> str:
    """Return ``'Mean CTDIvol' (DCM 113830)`` for a concept, as messages name it."""
    return f"'{concept.meaning}' ({concept.scheme_designator} {concept.value})"


def code_value(item: Item | None) -> Code | None:
    """Return the coded value (Concept Code Sequence) of a CODE item, or ``None``."""
    if item is None:
        return None
    if isinstance(item, ContentItem):
        return item.code
    seq = item.get("ConceptCodeSequence")
    if not seq:
        return None
    return code_from(seq[0])


def code_meaning(item: Item | None, report: DoseReport | None = None) -> str | None:
    """Return the Code Meaning of a CODE item's value, or ``None`` if it has none."""
    if item is None:
        return None
    if isinstance(item, ContentItem):
        if not item.has_code_sequence:
            if report is not None:
                name = describe(item.concept) if item.concept else "a coded item"
                report.warn(f"{name} has no Concept Code Sequence; value left empty")
            return None
        return clean_text(item.code_meaning, report) if item.code_meaning else None
    seq = item.get("ConceptCodeSequence")
    if not seq:
        if report is not None:
            concept = concept_of(item)
            name = describe(concept) if concept else "a coded item"
            report.warn(f"{name} has no Concept Code Sequence; value left empty")
        return None
    meaning = seq[0].get("CodeMeaning")
    return clean_text(meaning, report) if meaning else None


def text_value(item: Item | None, report: DoseReport | None = None) -> str | None:
    """Return the Text Value of a TEXT item (stripped), or ``None`` when absent or empty."""
    if item is None:
        return None
    if isinstance(item, ContentItem):
        return clean_text(item.text, report) if item.text else None
    value = item.get("TextValue")
    if value is None or str(value).strip() == "":
        return None
    return clean_text(value, report)


def uid_value(item: Item | None) -> str | None:
    """Return the UID of a UIDREF item, or ``None``."""
    if item is None:
        return None
    if isinstance(item, ContentItem):
        return item.uid
    value = item.get("UID")
    return str(value).strip() or None if value else None


def datetime_value(item: Item | None, tz_offset: str | None = None) -> str | None:
    """Return the DateTime of a DATETIME item as ISO 8601 (offset kept), or ``None``.

    ``tz_offset`` is (0008,0201) Timezone Offset From UTC, used when the DT has none.
    """
    if item is None:
        return None
    raw = item.datetime if isinstance(item, ContentItem) else item.get("DateTime")
    return format_dicom_datetime(str(raw), tz_offset) if raw else None


def format_dicom_datetime(raw: str, tz_offset: str | None = None) -> str | None:
    """Return a DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``) as ISO 8601, or ``None``.

    Parameters
    ----------
    raw : str
        The DT value.
    tz_offset : str, optional
        (0008,0201) Timezone Offset From UTC (``+HHMM``), used when ``raw`` has none.
    """
    m = _DT.fullmatch(raw.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, offset = m.groups()
    if offset is None and raw.strip().endswith("Z"):
        offset = "+0000"
    offset = offset.replace(":", "") if offset else None
    date = f"{year}-{month or '01'}-{day or '01'}"
    if hour is None:
        return date
    text = f"{date}T{hour}:{minute or '00'}:{second or '00'}{frac or ''}"
    offset = offset or (tz_offset.strip() if tz_offset else None)
    if offset and re.fullmatch(r"[+-]\d{4}", offset):
        text += f"{offset[:3]}:{offset[3:]}"
    return text


def clean_text(value: Any, report: DoseReport | None = None) -> str | None:
    """Return a decoded DICOM string stripped of padding, with its decoding warning.

    A value decoded from bytes by :func:`kerma.dicom.text.decode_text` carries a warning
    when its bytes were not read as declared (UTF-8 under a single-byte label, or no
    Specific Character Set); a string pydicom decoded under a Latin-1 label that is
    really UTF-8 (``'Ã¼'``) is repaired here (:func:`kerma.dicom.text.repair_decoded`).
    The warning goes on ``report`` (EXTRACTION.md). NUL characters are removed wherever
    they are.
    """
    if value is None:
        return None
    warning = getattr(value, "warning", None)
    # NUL is padding at the end of a value; inside one (a damaged or mis-typed value) it
    # is never text and no database stores it (PostgreSQL refuses it in text columns)
    text = str(value).replace("\x00", "").strip()
    if not text:
        return None
    if warning is None and not text.isascii():
        repaired = repair_decoded(text)
        warning = getattr(repaired, "warning", None)
        text = str(repaired)
    if warning and report is not None:
        report.warn(warning)
    return text


def parse_number(raw: Any, *, what: str, report: DoseReport | None) -> float | None:
    """Return a float from a DS/IS/FD value, tolerating vendor faults, or ``None``.

    Multi-valued or slash-separated values where one number is expected give the mean of
    the non-zero numbers (EXTRACTION.md "per pulse" rule) with a warning.
    """
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    values: list[float]
    if isinstance(raw, list | tuple) or (
        hasattr(raw, "__iter__") and not isinstance(raw, str | bytes)
    ):
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            values = [float(x) for v in raw for x in _NUMBER.findall(str(v))]
        kind = "multi-valued"
    else:
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        text = text.strip()
        if text == "":
            return None
        try:
            return float(text)
        except ValueError:
            pass
        values = [float(x) for x in _NUMBER.findall(text)]
        kind = f"invalid DS {text!r}"
    if not values:
        if report is not None:
            report.warn(f"{what}: value {raw!r} is not a number; item skipped")
        return None
    if len(values) == 1:
        if report is not None and kind != "multi-valued":
            report.warn(f"{what}: {kind} read as {values[0]:g}")
        return values[0]
    nonzero = [v for v in values if v != 0]
    mean = sum(nonzero) / len(nonzero) if nonzero else 0.0
    if report is not None:
        report.warn(
            f"{what}: {kind} holds {len(values)} numbers where one is expected; "
            f"the mean of the non-zero values ({mean:g}) is used"
        )
    return mean


def numeric_value(
    item: Item | None,
    canonical_unit: str | None,
    report: DoseReport | None = None,
    *,
    template_units: Iterable[str] = (),
) -> float | None:
    """Return the numeric value of a NUM item converted to ``canonical_unit``, or ``None``.

    Parameters
    ----------
    item : pydicom.dataset.Dataset or None
        The NUM content item.
    canonical_unit : str or None
        Kerma's canonical UCUM unit for the quantity (``kerma.units.UCUM_MGY`` ...);
        ``None`` for dimensionless values (unit not checked).
    report : DoseReport, optional
        Receives warnings for empty values, invalid numbers and non-template units.
    template_units : iterable of str, optional
        Units the template allows; another convertible unit is converted with a
        warning. Defaults to ``[canonical_unit]``.

    Returns
    -------
    float or None
        ``None`` when the Measured Value Sequence is empty, the number is unreadable or
        the unit is unknown for the quantity (each with a warning).
    """
    if item is None:
        return None
    concept = concept_of(item)
    what = describe(concept) if concept else "numeric item"
    if isinstance(item, ContentItem):
        if not item.has_measured_value:
            return None
        raw: Any = item.numeric_value
        unit_code = item.unit or ""
    else:
        mvs = item.get("MeasuredValueSequence")
        if not mvs:
            return None
        mv = mvs[0]
        if "NumericValue" not in mv:
            return None
        raw = mv.get("NumericValue")
        units = mv.get("MeasurementUnitsCodeSequence")
        unit_code = str(units[0].get("CodeValue", "")).strip() if units else ""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        # an empty Numeric Value is 'no value'
        return None
    value = parse_number(raw, what=what, report=report)
    if value is None or canonical_unit is None:
        return value
    unit = unit_code
    if not unit:
        if report is not None:
            report.warn(f"{what}: no measurement unit; assumed {canonical_unit}")
        return value
    allowed = set(template_units) or {canonical_unit}
    factor = conversion_factor(unit, canonical_unit)
    if factor is None:
        if report is not None:
            report.warn(
                f"{what}: unit {unit!r} cannot be converted to {canonical_unit}; value dropped"
            )
        return None
    if report is not None and unit not in allowed:
        if unit in NON_UCUM_SPELLINGS and factor == 1.0:
            report.warn(f"unit code {unit!r} is not UCUM; treated as {canonical_unit}")
        else:
            report.warn(
                f"{what}: non-template unit {unit} converted (x{factor:g} to {canonical_unit})"
            )
    return value * factor

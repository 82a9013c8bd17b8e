"""The SR content tree as light read-only items: one :class:`ContentItem` per content item.

The template readers (TID 10011, 10001, 10021) read every item of a dose report's
content tree, often several times (an index by concept, then the values). Going
through pydicom datasets for that costs a :class:`pydicom.dataset.Dataset` per item and
a keyword look-up, value conversion and validation per element read; a 400-event
fluoroscopy report has about 130,000 elements. A :class:`ContentItem` holds only what a
reader uses (PS3.3 C.17.3 SR Document Content Module, Table C.17-6 and its value
macros): Value Type, Relationship Type, Concept Name, the coded, numeric (with its
unit), text, UID and date-time values, and the children. Items are built

- from the bytes of the object by :mod:`kerma.dicom.reader` in the same pass that
  checks the object for truncation (:func:`from_raw`: the elements' bytes, decoded here
  only for the attributes above), or
- from a pydicom dataset (:func:`from_dataset`), for datasets built in memory or read by
  pydicom.

Both give the same items (a test compares them on every shared object).

May import nothing of Kerma's but ``kerma.dicom.text`` and ``kerma.dicom.decode_errors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.sr._snomed_dict import mapping as _snomed_mapping
from pydicom.sr.coding import Code

from kerma.dicom.decode_errors import DECODE_ERRORS
from kerma.dicom.text import decode_text

#: SNOMED-RT code values that pydicom maps to SNOMED CT (the table ``Code.__eq__`` uses).
SRT_TO_SCT: Final[dict[str, str]] = _snomed_mapping["SRT"]

# Tags of the SR Document Content Module and its macros (PS3.3 C.17.3, Table 10-2).
SPECIFIC_CHARACTER_SET: Final = 0x00080005
CODE_VALUE: Final = 0x00080100
CODING_SCHEME_DESIGNATOR: Final = 0x00080102
CODE_MEANING: Final = 0x00080104
LONG_CODE_VALUE: Final = 0x00080119
URN_CODE_VALUE: Final = 0x00080120
MEASUREMENT_UNITS_CODE_SEQUENCE: Final = 0x004008EA
RELATIONSHIP_TYPE: Final = 0x0040A010
VALUE_TYPE: Final = 0x0040A040
CONCEPT_NAME_CODE_SEQUENCE: Final = 0x0040A043
DATETIME: Final = 0x0040A120
DATE: Final = 0x0040A121
TIME: Final = 0x0040A122
PERSON_NAME: Final = 0x0040A123
UID: Final = 0x0040A124
TEXT_VALUE: Final = 0x0040A160
FLOATING_POINT_VALUE: Final = 0x0040A161
CONCEPT_CODE_SEQUENCE: Final = 0x0040A168
MEASURED_VALUE_SEQUENCE: Final = 0x0040A300
NUMERIC_VALUE: Final = 0x0040A30A
CONTENT_SEQUENCE: Final = 0x0040A730

#: A raw item: tag -> value bytes, or a list of raw items for a sequence.
RawItem = dict[int, Any]


class ContentItem:
    """One SR content item, read only; values as stored (units converted by callers).

    Attributes
    ----------
    value_type : str or None
        (0040,A040) Value Type (``CONTAINER``, ``NUM``, ``CODE``, ``TEXT`` ...).
    relationship_type : str or None
        (0040,A010) Relationship Type.
    concept : pydicom.sr.coding.Code or None
        (0040,A043) Concept Name Code Sequence, first item.
    key : tuple of (str, str) or None
        ``(scheme, value)`` of ``concept`` with legacy SNOMED-RT mapped to SNOMED CT, so
        that ``key`` equality agrees with ``Code.__eq__``.
    children : list of ContentItem
        (0040,A730) Content Sequence.
    code : pydicom.sr.coding.Code or None
        (0040,A168) Concept Code Sequence, first item (CODE items).
    has_code_sequence : bool
        Whether the item has a non-empty Concept Code Sequence.
    code_meaning : str or None
        Code Meaning of ``code`` as stored (a :class:`kerma.dicom.text.DecodedText` when
        its bytes were not read as declared).
    has_measured_value : bool
        Whether (0040,A300) Measured Value Sequence has an item (NUM items).
    numeric_value : str, list of str, float or None
        (0040,A30A) Numeric Value as stored (a string, a list of them when several
        values are stored; a float for datasets built in memory).
    floating_point_value : float or None
        (0040,A161) Floating Point Value.
    unit : str or None
        Code Value of (0040,08EA) Measurement Units Code Sequence, first item.
    text : str or None
        (0040,A160) Text Value.
    uid : str or None
        (0040,A124) UID.
    datetime, date, time : str or None
        (0040,A120) DateTime, (0040,A121) Date, (0040,A122) Time as stored.
    """

    __slots__ = (
        "children",
        "code",
        "code_meaning",
        "concept",
        "date",
        "datetime",
        "floating_point_value",
        "has_code_sequence",
        "has_measured_value",
        "key",
        "numeric_value",
        "relationship_type",
        "text",
        "time",
        "uid",
        "unit",
        "value_type",
    )

    def __init__(self) -> None:
        self.value_type: str | None = None
        self.relationship_type: str | None = None
        self.concept: Code | None = None
        self.key: tuple[str, str] | None = None
        self.children: list[ContentItem] = []
        self.code: Code | None = None
        self.has_code_sequence = False
        self.code_meaning: str | None = None
        self.has_measured_value = False
        self.numeric_value: str | list[str] | float | None = None
        self.floating_point_value: float | None = None
        self.unit: str | None = None
        self.text: str | None = None
        self.uid: str | None = None
        self.datetime: str | None = None
        self.date: str | None = None
        self.time: str | None = None

    def __repr__(self) -> str:
        """Return ``<ContentItem NUM 'Mean CTDIvol'>``."""
        name = self.concept.meaning if self.concept is not None else "?"
        return f"<ContentItem {self.value_type} {name!r}>"

    def values(self) -> tuple[Any, ...]:
        """Return every value, children included, as nested tuples (for comparisons)."""
        return (
            self.value_type,
            self.relationship_type,
            _code_tuple(self.concept),
            _code_tuple(self.code),
            self.has_code_sequence,
            self.code_meaning,
            self.has_measured_value,
            _number_text(self.numeric_value),
            self.floating_point_value,
            self.unit,
            self.text,
            self.uid,
            self.datetime,
            self.date,
            self.time,
            tuple(child.values() for child in self.children),
        )


def _number_text(value: Any) -> str | None:
    """Return a stored number as comparable text (``'1.5'``, ``'0\\70'``)."""
    if value is None:
        return None
    if isinstance(value, list) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    text = str(value).strip()
    try:
        return repr(float(text))
    except ValueError:
        return text


def concept_key(code: Code) -> tuple[str, str]:
    """Return a hashable key of a code that agrees with ``Code.__eq__``.

    :class:`pydicom.sr.coding.Code` compares legacy SNOMED-RT codes equal to their SNOMED
    CT form but hashes them differently; this key maps SRT to SCT first, so a dict keyed
    by it finds ``T-D0005`` (SRT) under ``codes.SCT.AnatomicalStructure``.
    """
    return _key(code.scheme_designator, code.value)


def _key(scheme: str, value: str) -> tuple[str, str]:
    """Return the ``(scheme, value)`` key, legacy SNOMED-RT mapped to SNOMED CT."""
    if scheme == "SRT" and value in SRT_TO_SCT:
        return ("SCT", SRT_TO_SCT[value])
    return (scheme, value)


def _code_tuple(code: Code | None) -> tuple[str, str, str] | None:
    """Return (value, scheme, meaning) of a code for comparisons."""
    return None if code is None else (code.value, code.scheme_designator, code.meaning)


def iter_items(items: Iterable[ContentItem]) -> Iterable[ContentItem]:
    """Yield every item of a content tree, depth first, in document order."""
    stack = [iter(items)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        if item.children:
            stack.append(iter(item.children))


# --- from the raw elements of kerma.dicom.reader ---------------------------------------------


def _ascii(raw: Any) -> str | None:
    """Return an ASCII value (CS, SH, UI, DS, DT ...) stripped of padding, or ``None``.

    A sequence where a value is expected (a re-typed element) reads as ``None``.
    """
    if not isinstance(raw, bytes):
        return None
    text = raw.decode("ascii", "replace").strip(" \x00")
    return text or None


def _numeric(text: str | None) -> str | list[str] | None:
    """Return a stored Numeric Value: the string, or its values when multi-valued (VM > 1)."""
    if text is not None and "\\" in text:
        return [v.strip() for v in text.split("\\")]
    return text


def _first(raw: Any) -> RawItem | None:
    """Return the first item of a raw sequence, or ``None`` (also when it is not one)."""
    return raw[0] if isinstance(raw, list) and raw and isinstance(raw[0], dict) else None


def _raw_code(item: RawItem | None, codecs: Sequence[str]) -> tuple[Code | None, str | None]:
    """Return the Code of a raw code sequence item and its Code Meaning as decoded."""
    if item is None:
        return None, None
    value = _ascii(item.get(CODE_VALUE))
    if value is None:
        value = _text(item.get(LONG_CODE_VALUE), codecs) or _text(item.get(URN_CODE_VALUE), codecs)
    scheme = _ascii(item.get(CODING_SCHEME_DESIGNATOR))
    meaning = _text(item.get(CODE_MEANING), codecs)
    if not value or not scheme:
        return None, meaning
    return Code(value, scheme, str(meaning or "")), meaning


def _text(raw: Any, codecs: Sequence[str]) -> str | None:
    """Return a text value (LO, UT, PN, UC ...) decoded with the character set."""
    if not isinstance(raw, bytes):
        return None
    text = decode_text(raw, codecs)
    return text or None


def from_raw(raw: RawItem, codecs: Sequence[str]) -> ContentItem:
    """Return the content item (and its subtree) of a raw item of :mod:`kerma.dicom.reader`.

    Parameters
    ----------
    raw : dict of int to bytes or list
        The item's elements: tag -> value bytes, sequences as lists of raw items.
    codecs : sequence of str
        Python codecs of the Specific Character Set in force (pydicom's names).
    """
    if SPECIFIC_CHARACTER_SET in raw:  # an item may declare its own (PS3.5 7.5.3)
        from pydicom.charset import convert_encodings

        declared = _ascii(raw[SPECIFIC_CHARACTER_SET])
        codecs = convert_encodings(declared.split("\\") if declared else [])
    item = ContentItem()
    get = raw.get
    item.value_type = _ascii(get(VALUE_TYPE))
    item.relationship_type = _ascii(get(RELATIONSHIP_TYPE))
    concept, _ = _raw_code(_first(get(CONCEPT_NAME_CODE_SEQUENCE)), codecs)
    if concept is not None:
        item.concept = concept
        item.key = _key(concept.scheme_designator, concept.value)
    code_item = _first(get(CONCEPT_CODE_SEQUENCE))
    if code_item is not None:
        item.has_code_sequence = True
        item.code, item.code_meaning = _raw_code(code_item, codecs)
    measured = _first(get(MEASURED_VALUE_SEQUENCE))
    if measured is not None:
        item.has_measured_value = True
        item.numeric_value = _numeric(_ascii(measured.get(NUMERIC_VALUE)))
        fp = measured.get(FLOATING_POINT_VALUE)
        if isinstance(fp, bytes) and len(fp) >= 8:
            import struct

            item.floating_point_value = struct.unpack_from("<d", fp)[0]
        unit = _first(measured.get(MEASUREMENT_UNITS_CODE_SEQUENCE))
        if unit is not None:
            item.unit = _ascii(unit.get(CODE_VALUE))
    if TEXT_VALUE in raw:
        item.text = _text(raw[TEXT_VALUE], codecs)
    if UID in raw:
        item.uid = _ascii(raw[UID])
    if DATETIME in raw:
        item.datetime = _ascii(raw[DATETIME])
    if DATE in raw:
        item.date = _ascii(raw[DATE])
    if TIME in raw:
        item.time = _ascii(raw[TIME])
    children = get(CONTENT_SEQUENCE)
    if isinstance(children, list):  # not a sequence (a re-typed element): no children
        item.children = [from_raw(child, codecs) for child in children if isinstance(child, dict)]
    return item


# --- from a pydicom dataset ------------------------------------------------------------------


def _ds_text(ds: Dataset, keyword: str) -> str | None:
    """Return a string attribute of a pydicom item, decoded as Kerma decodes text."""
    try:
        elem = ds.get_item(keyword)
    except DECODE_ERRORS:
        return None
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        text = decode_text(value, getattr(ds, "_character_set", None))
        return text or None
    try:
        value = ds[keyword].value
    except DECODE_ERRORS:
        return None
    if value is None:
        return None
    if not isinstance(value, str):
        value = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
    text = value.strip(" \x00")
    if text and not text.isascii():
        from kerma.dicom.text import repair_decoded

        return repair_decoded(text)
    return text or None


def _ds_code(item: Dataset | None) -> tuple[Code | None, str | None]:
    """Return the Code of a pydicom code sequence item and its Code Meaning."""
    if item is None:
        return None, None
    value = (
        _ds_text(item, "CodeValue")
        or _ds_text(item, "LongCodeValue")
        or _ds_text(item, "URNCodeValue")
    )
    scheme = _ds_text(item, "CodingSchemeDesignator")
    meaning = _ds_text(item, "CodeMeaning")
    if not value or not scheme:
        return None, meaning
    return Code(value, scheme, str(meaning or "")), meaning


def _ds_first(ds: Dataset, keyword: str) -> Dataset | None:
    """Return the first item of a sequence of a pydicom dataset, or ``None``.

    ``None`` also when the element is not a sequence of items (a re-typed element).
    """
    try:
        seq = ds.get(keyword)
    except DECODE_ERRORS:
        return None
    if not isinstance(seq, list | PydicomSequence) or not seq:
        return None
    first = seq[0]
    return first if isinstance(first, Dataset) else None


def from_dataset(ds: Dataset) -> ContentItem:
    """Return the content item (and its subtree) of a pydicom dataset or SR item."""
    item = ContentItem()
    item.value_type = _ds_text(ds, "ValueType")
    item.relationship_type = _ds_text(ds, "RelationshipType")
    concept, _ = _ds_code(_ds_first(ds, "ConceptNameCodeSequence"))
    if concept is not None:
        item.concept = concept
        item.key = _key(concept.scheme_designator, concept.value)
    code_item = _ds_first(ds, "ConceptCodeSequence")
    if code_item is not None:
        item.has_code_sequence = True
        item.code, item.code_meaning = _ds_code(code_item)
    measured = _ds_first(ds, "MeasuredValueSequence")
    if measured is not None:
        item.has_measured_value = True
        raw = measured.get_item("NumericValue")
        if raw is not None and isinstance(raw.value, bytes):
            item.numeric_value = _numeric(_ascii(raw.value))
        elif raw is not None:
            value = measured.NumericValue
            item.numeric_value = None if value is None or value == "" else value
        fp = measured.get("FloatingPointValue")
        if fp is not None and not isinstance(fp, bytes):
            item.floating_point_value = float(fp if not isinstance(fp, list) else fp[0])
        unit = _ds_first(measured, "MeasurementUnitsCodeSequence")
        if unit is not None:
            item.unit = _ds_text(unit, "CodeValue")
    if "TextValue" in ds:
        item.text = _ds_text(ds, "TextValue")
    if "UID" in ds:
        item.uid = _ds_text(ds, "UID")
    if "DateTime" in ds:
        item.datetime = _ds_text(ds, "DateTime")
    if "Date" in ds:
        item.date = _ds_text(ds, "Date")
    if "Time" in ds:
        item.time = _ds_text(ds, "Time")
    try:
        children = ds.get("ContentSequence")
    except DECODE_ERRORS:
        children = None
    if isinstance(children, list | PydicomSequence):  # else not a sequence: no children
        item.children = [from_dataset(child) for child in children if isinstance(child, Dataset)]
    return item


#: Attribute of a dataset read by :mod:`kerma.dicom.reader` that holds its content tree.
TREE_ATTRIBUTE: Final = "_kerma_content_tree"


def content_tree(ds: Dataset) -> ContentItem:
    """Return the content tree of an SR document: the root item (the dataset itself).

    The tree :mod:`kerma.dicom.reader` built from the object's bytes when there is one,
    else one built from the pydicom dataset.
    """
    tree = ds.__dict__.get(TREE_ATTRIBUTE)
    if isinstance(tree, ContentItem):
        return tree
    return from_dataset(ds)

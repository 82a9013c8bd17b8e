"""Build SR content items (PS3.3 C.17.3) with pydicom, for writing synthetic dose reports.

Small constructors, one per value type used by the X-Ray Radiation Dose SR templates
(CONTAINER, NUM, CODE, TEXT, UIDREF, DATETIME). Concepts and units are
:class:`pydicom.sr.coding.Code` objects from ``pydicom.sr.codedict.codes`` or
:mod:`kerma.dicom.codes`; no code value is written here as a string.

Speed. A dose report repeats the same few dozen concept names, units and coded values
hundreds of times; only the numbers, texts, UIDs and date-times change. Each constant
part (a Concept Name Code Sequence, a Measurement Units Code Sequence, a whole CODE
item, the Relationship and Value Type of an item) is therefore encoded by pydicom once
per process and kept as a :class:`pydicom.dataelem.RawDataElement`, and every item is
marked with the encoding it was built for (explicit VR little endian,
:meth:`pydicom.dataset.Dataset.set_original_encoding`). pydicom's writer then copies the
raw elements as they are (its documented fast path for raw data elements) and encodes
only the values. The files are the same as items built element by element: the tests
compare both.

Every dataset built here must be written with the explicit VR little endian transfer
syntax to take the fast path; any other transfer syntax still works (pydicom decodes
the raw elements and encodes them again), only slower.

May import ``kerma.dicom`` only; used by :mod:`kerma.demo.generator`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Hashable, Iterable, Mapping
from functools import cache

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag, Tag

#: Relationship types (PS3.3 C.17.3.2.4).
CONTAINS = "CONTAINS"
HAS_CONCEPT_MOD = "HAS CONCEPT MOD"
HAS_OBS_CONTEXT = "HAS OBS CONTEXT"
HAS_PROPERTIES = "HAS PROPERTIES"

#: The encoding the items are built for: (implicit VR, little endian).
IS_IMPLICIT_VR = False
IS_LITTLE_ENDIAN = True

_CONTENT_SEQUENCE = Tag("ContentSequence")
_MEASURED_VALUE_SEQUENCE = Tag("MeasuredValueSequence")
_NUMERIC_VALUE = Tag("NumericValue")
_TEXT_VALUE = Tag("TextValue")
_UID = Tag("UID")
_DATETIME = Tag("DateTime")

#: A code as a hashable key that keeps its meaning (``Code.__eq__`` ignores it).
_CodeKey = tuple[str, str, str, str | None]
_RawElements = Mapping[BaseTag, RawDataElement]


def build_code_item(code: Code) -> Dataset:
    """Return a Code Sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    if code.scheme_version:
        item.CodingSchemeVersion = code.scheme_version
    item.CodeMeaning = code.meaning
    return item


def code_key(code: Code) -> _CodeKey:
    """Return ``code`` as a cache key (value, scheme, meaning, version).

    Not ``code`` itself: ``Code.__eq__`` ignores the meaning, which the item writes.
    """
    return (code.value, code.scheme_designator, code.meaning, code.scheme_version)


def _code(key: _CodeKey) -> Code:
    """Return the :class:`Code` of a cache key."""
    value, scheme, meaning, version = key
    return Code(value, scheme, meaning, version)


def _encode_once(ds: Dataset) -> dict[BaseTag, RawDataElement]:
    """Return the elements of ``ds`` encoded by pydicom, as raw data elements.

    The dataset is written with :func:`pydicom.filewriter.write_dataset` in explicit VR
    little endian and read back with :func:`pydicom.filereader.read_dataset`, which
    leaves every element raw (undecoded).
    """
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = IS_IMPLICIT_VR, IS_LITTLE_ENDIAN
    write_dataset(fp, ds)
    raw = read_dataset(
        io.BytesIO(fp.getvalue()),
        is_implicit_VR=IS_IMPLICIT_VR,
        is_little_endian=IS_LITTLE_ENDIAN,
    )
    elements: dict[BaseTag, RawDataElement] = {}
    for tag, element in raw.items():  # items() gives the elements as read, undecoded
        if not isinstance(element, RawDataElement):  # pragma: no cover - pydicom contract
            raise TypeError(f"Unable to keep {tag} raw: pydicom decoded it on reading")
        elements[tag] = element
    return elements


@cache
def _head(value_type: str, concept: _CodeKey, relationship: str) -> _RawElements:
    """Return the constant elements of an item: relationship, value type, concept name.

    A CONTAINER also gets 'Continuity Of Content' SEPARATE.
    """
    ds = Dataset()
    ds.RelationshipType = relationship
    ds.ValueType = value_type
    ds.ConceptNameCodeSequence = Sequence([build_code_item(_code(concept))])
    if value_type == "CONTAINER":
        ds.ContinuityOfContent = "SEPARATE"
    return _encode_once(ds)


@cache
def _code_item(concept: _CodeKey, value: _CodeKey, relationship: str) -> _RawElements:
    """Return every element of a CODE item (it holds no varying value)."""
    ds = Dataset()
    ds.RelationshipType = relationship
    ds.ValueType = "CODE"
    ds.ConceptNameCodeSequence = Sequence([build_code_item(_code(concept))])
    ds.ConceptCodeSequence = Sequence([build_code_item(_code(value))])
    return _encode_once(ds)


@cache
def _units(unit: _CodeKey) -> _RawElements:
    """Return the 'Measurement Units Code Sequence' of a NUM item's measured value."""
    ds = Dataset()
    ds.MeasurementUnitsCodeSequence = Sequence([build_code_item(_code(unit))])
    return _encode_once(ds)


def _new_item(elements: _RawElements) -> Dataset:
    """Return a new dataset holding ``elements``, marked for the raw fast path."""
    item = Dataset(dict(elements))
    item.set_original_encoding(IS_IMPLICIT_VR, IS_LITTLE_ENDIAN, default_encoding)
    return item


def _item(value_type: str, concept: Code, relationship: str) -> Dataset:
    """Return a content item with its relationship, value type and concept name."""
    return _new_item(_head(value_type, code_key(concept), relationship))


def build_container(
    concept: Code,
    children: Iterable[Dataset],
    *,
    relationship: str = CONTAINS,
) -> Dataset:
    """Return a CONTAINER content item (Continuity SEPARATE) holding ``children``."""
    item = _item("CONTAINER", concept, relationship)
    item.add(DataElement(_CONTENT_SEQUENCE, "SQ", Sequence(list(children))))
    return item


def build_num(
    concept: Code,
    value: str,
    unit: Code,
    *,
    relationship: str = CONTAINS,
) -> Dataset:
    """Return a NUM content item.

    Parameters
    ----------
    concept : pydicom.sr.coding.Code
        The concept name, e.g. ``codes.DCM.MeanCtdivol``.
    value : str
        The number as a Decimal String (at most 16 characters), already rounded.
    unit : pydicom.sr.coding.Code
        The UCUM unit, e.g. :data:`kerma.dicom.codes.UCUM_MGY`.
    relationship : str, optional
        Relationship with the parent, ``CONTAINS`` by default.
    """
    item = _item("NUM", concept, relationship)
    measured = _new_item(_units(code_key(unit)))
    measured.add(DataElement(_NUMERIC_VALUE, "DS", value))
    item.add(DataElement(_MEASURED_VALUE_SEQUENCE, "SQ", Sequence([measured])))
    return item


def build_code(concept: Code, value: Code, *, relationship: str = CONTAINS) -> Dataset:
    """Return a CODE content item whose value is ``value``."""
    return _new_item(_code_item(code_key(concept), code_key(value), relationship))


def build_text(concept: Code, value: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a TEXT content item."""
    item = _item("TEXT", concept, relationship)
    item.add(DataElement(_TEXT_VALUE, "UT", value))
    return item


def build_uidref(concept: Code, uid: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a UIDREF content item."""
    item = _item("UIDREF", concept, relationship)
    item.add(DataElement(_UID, "UI", uid))
    return item


def build_datetime(concept: Code, value: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a DATETIME content item; ``value`` is a DICOM DT (``YYYYMMDDHHMMSS``)."""
    item = _item("DATETIME", concept, relationship)
    item.add(DataElement(_DATETIME, "DT", value))
    return item


#: Items encoded once by :func:`build_constant`, by key.
_CONSTANT_ITEMS: dict[Hashable, _RawElements] = {}


def build_constant(key: Hashable, build: Callable[[], Dataset]) -> Dataset:
    """Return a new item equal to ``build()``; ``build`` runs and is encoded once per ``key``.

    For items and whole subtrees that hold no varying value (an 'X-Ray Filters'
    container, a 'Focal Spot Size' of a room): every element of the returned item is
    raw, so pydicom writes it without encoding anything. ``key`` must identify
    everything ``build`` writes (use :func:`code_key` for codes).
    """
    elements = _CONSTANT_ITEMS.get(key)
    if elements is None:
        elements = _CONSTANT_ITEMS[key] = _encode_once(build())
    return _new_item(elements)


def build_constant_num(
    concept: Code, value: str, unit: Code, *, relationship: str = CONTAINS
) -> Dataset:
    """Return a NUM item (as :func:`build_num`) whose value is the same in every report."""
    key = ("NUM", code_key(concept), value, code_key(unit), relationship)
    return build_constant(key, lambda: build_num(concept, value, unit, relationship=relationship))


def build_constant_text(concept: Code, value: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a TEXT item (as :func:`build_text`) whose value is the same in every report."""
    key = ("TEXT", code_key(concept), value, relationship)
    return build_constant(key, lambda: build_text(concept, value, relationship=relationship))


def with_children(item: Dataset, children: Iterable[Dataset]) -> Dataset:
    """Return ``item`` with ``children`` as its Content Sequence (for by-value modifiers)."""
    item.add(DataElement(_CONTENT_SEQUENCE, "SQ", Sequence(list(children))))
    return item


def mark_for_fast_write(ds: Dataset) -> Dataset:
    """Mark the top-level dataset ``ds`` as encoded like its items; return it.

    Call after (0008,0005) 'Specific Character Set' is set, so that pydicom writes the
    items' raw elements as they are (see the module docstring).
    """
    charset = ds.get("SpecificCharacterSet")
    encodings = convert_encodings(charset) if charset else default_encoding
    ds.set_original_encoding(IS_IMPLICIT_VR, IS_LITTLE_ENDIAN, encodings)
    return ds

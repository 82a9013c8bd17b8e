"""Build SR content items (PS3.3 C.17.3) with pydicom, for writing synthetic dose reports.

Small constructors, one per value type used by the X-Ray Radiation Dose SR templates
(CONTAINER, NUM, CODE, TEXT, UIDREF, DATETIME). Concepts and units are
:class:`pydicom.sr.coding.Code` objects from ``pydicom.sr.codedict.codes`` or
:mod:`kerma.dicom.codes`; no code value is written here as a string.

May import ``kerma.dicom`` only; used by :mod:`kerma.demo.generator`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code

#: Relationship types (PS3.3 C.17.3.2.4).
CONTAINS = "CONTAINS"
HAS_CONCEPT_MOD = "HAS CONCEPT MOD"
HAS_OBS_CONTEXT = "HAS OBS CONTEXT"
HAS_PROPERTIES = "HAS PROPERTIES"


def build_code_item(code: Code) -> Dataset:
    """Return a Code Sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    if code.scheme_version:
        item.CodingSchemeVersion = code.scheme_version
    item.CodeMeaning = code.meaning
    return item


def _item(value_type: str, concept: Code, relationship: str) -> Dataset:
    """Return a content item with its relationship, value type and concept name."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([build_code_item(concept)])
    return item


def build_container(
    concept: Code,
    children: Iterable[Dataset],
    *,
    relationship: str = CONTAINS,
) -> Dataset:
    """Return a CONTAINER content item (Continuity SEPARATE) holding ``children``."""
    item = _item("CONTAINER", concept, relationship)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(list(children))
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
    measured = Dataset()
    measured.NumericValue = value
    measured.MeasurementUnitsCodeSequence = Sequence([build_code_item(unit)])
    item.MeasuredValueSequence = Sequence([measured])
    return item


def build_code(concept: Code, value: Code, *, relationship: str = CONTAINS) -> Dataset:
    """Return a CODE content item whose value is ``value``."""
    item = _item("CODE", concept, relationship)
    item.ConceptCodeSequence = Sequence([build_code_item(value)])
    return item


def build_text(concept: Code, value: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a TEXT content item."""
    item = _item("TEXT", concept, relationship)
    item.TextValue = value
    return item


def build_uidref(concept: Code, uid: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a UIDREF content item."""
    item = _item("UIDREF", concept, relationship)
    item.UID = uid
    return item


def build_datetime(concept: Code, value: str, *, relationship: str = CONTAINS) -> Dataset:
    """Return a DATETIME content item; ``value`` is a DICOM DT (``YYYYMMDDHHMMSS``)."""
    item = _item("DATETIME", concept, relationship)
    item.DateTime = value
    return item


def with_children(item: Dataset, children: Iterable[Dataset]) -> Dataset:
    """Return ``item`` with ``children`` as its Content Sequence (for by-value modifiers)."""
    item.ContentSequence = Sequence(list(children))
    return item

"""Quality objects that are not dose objects: rejection notes (issue #17).

A Key Object Selection Document (KOS) whose document title is 'Rejected for Quality
Reasons' (DCM 113001) is how a modality or PACS says that images were rejected (IHE
Radiology TF, Imaging Object Change Management: "Rejected Instances").
:func:`parse_rejection_note` reads the instances it references; other KOS titles
(patient safety, worklist corrections, data retention) are not quality rejections and
are not read here.

Pure: a pydicom ``Dataset`` in, a plain dataclass out. May import ``kerma.records``
and ``kerma.dicom`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import KeyObjectSelectionDocumentStorage

#: The KOS document title that marks images rejected for quality reasons (PS3.16).
REJECTED_FOR_QUALITY = codes.DCM.RejectedForQualityReasons


@dataclass(frozen=True)
class ReferencedInstance:
    """One image a rejection note references."""

    sop_instance_uid: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_class_uid: str | None = None


@dataclass
class RejectionNote:
    """A KOS 'Rejected for Quality Reasons': the note's UIDs and the images it rejects."""

    sop_instance_uid: str
    study_instance_uid: str | None
    reason: str
    instances: list[ReferencedInstance] = field(default_factory=list)


def is_key_object_selection(ds: Dataset) -> bool:
    """Return whether ``ds`` is a Key Object Selection Document (by its SOP Class UID)."""
    return str(ds.get("SOPClassUID", "")) == KeyObjectSelectionDocumentStorage


def document_title(ds: Dataset) -> Code | None:
    """Return the KOS document title, (0040,A043) Concept Name Code Sequence, or ``None``."""
    seq = ds.get("ConceptNameCodeSequence")
    if not seq:
        return None
    item = seq[0]
    value = item.get("CodeValue")
    scheme = item.get("CodingSchemeDesignator")
    if not value or not scheme:
        return None
    return Code(str(value), str(scheme), str(item.get("CodeMeaning", "")))


def parse_rejection_note(ds: Dataset) -> RejectionNote | None:
    """Return the rejection note a KOS holds, or ``None`` when it is not one.

    The referenced instances are read from (0040,A375) Current Requested Procedure
    Evidence Sequence (study → (0008,1115) series → (0008,1199) SOP), the hierarchical
    reference the KOS IOD requires; IMAGE content items' (0008,1199) Referenced SOP
    Sequence add any instance the evidence does not list.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        Any object; only a KOS titled 'Rejected for Quality Reasons' (DCM 113001) gives
        a note.

    Returns
    -------
    RejectionNote or None
        ``None`` for other objects, other KOS titles, and a KOS without a SOP Instance
        UID.
    """
    if not is_key_object_selection(ds) or document_title(ds) != REJECTED_FOR_QUALITY:
        return None
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        return None
    seen: dict[str, ReferencedInstance] = {}
    for ref in _iter_evidence(ds):
        seen.setdefault(ref.sop_instance_uid, ref)
    for ref in _iter_content_references(ds.get("ContentSequence") or []):
        seen.setdefault(
            ref.sop_instance_uid,
            ReferencedInstance(
                ref.sop_instance_uid, str(ds.get("StudyInstanceUID", "") or "") or None
            ),
        )
    return RejectionNote(
        sop_instance_uid=uid,
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or "") or None,
        reason=REJECTED_FOR_QUALITY.meaning,
        instances=list(seen.values()),
    )


def _iter_evidence(ds: Dataset) -> Iterator[ReferencedInstance]:
    """Yield the instances of (0040,A375) Current Requested Procedure Evidence Sequence."""
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        study_uid = str(study.get("StudyInstanceUID", "") or "") or None
        for series in study.get("ReferencedSeriesSequence") or []:
            series_uid = str(series.get("SeriesInstanceUID", "") or "") or None
            for sop in series.get("ReferencedSOPSequence") or []:
                uid = str(sop.get("ReferencedSOPInstanceUID", "") or "")
                if uid:
                    yield ReferencedInstance(
                        uid,
                        study_uid,
                        series_uid,
                        str(sop.get("ReferencedSOPClassUID", "") or "") or None,
                    )


def _iter_content_references(items: list[Dataset]) -> Iterator[ReferencedInstance]:
    """Yield the instances of IMAGE (and COMPOSITE) content items, depth first."""
    for item in items:
        for sop in item.get("ReferencedSOPSequence") or []:
            uid = str(sop.get("ReferencedSOPInstanceUID", "") or "")
            if uid:
                yield ReferencedInstance(uid)
        yield from _iter_content_references(item.get("ContentSequence") or [])

"""Forged copies of a real RDSR for the conflict tests (issue #11, item 3).

A forged copy keeps the SOP Instance UID (and everything else) of a genuine object and
changes a dose value: the scenario of an attacker who sends it before the device does.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from tests.conftest import DICOM_DIR

#: A real Siemens CT RDSR: one irradiation event, DLP 7.46 mGy·cm (event and total).
GENUINE = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
GENUINE_DLP_MGYCM = 7.46
#: The factor the forgery applies to every DLP of the report.
FORGERY_FACTOR = 10.0
FORGED_DLP_MGYCM = GENUINE_DLP_MGYCM * FORGERY_FACTOR

#: Concepts whose values the forgery changes: 'DLP' (DCM 113838) and 'CT Dose Length
#: Product Total' (DCM 113813).
_DLP_CONCEPTS = (codes.DCM.DLP, codes.DCM.CTDoseLengthProductTotal)


def _scale_dlp(items: pydicom.Sequence, factor: float) -> int:
    """Multiply the DLP values of a content tree by ``factor``; return how many changed."""
    changed = 0
    for item in items:
        name = item.get("ConceptNameCodeSequence")
        if name and item.get("ValueType") == "NUM":
            code = (name[0].CodeValue, name[0].CodingSchemeDesignator)
            if code in {(c.value, c.scheme_designator) for c in _DLP_CONCEPTS}:
                measured = item.MeasuredValueSequence[0]
                measured.NumericValue = f"{float(measured.NumericValue) * factor:.4f}"
                changed += 1
        if "ContentSequence" in item:
            changed += _scale_dlp(item.ContentSequence, factor)
    return changed


def forged_bytes(source: Path = GENUINE, factor: float = FORGERY_FACTOR) -> bytes:
    """Return ``source`` with every DLP multiplied by ``factor``, its UIDs unchanged."""
    ds: Dataset = pydicom.dcmread(source)
    assert _scale_dlp(ds.ContentSequence, factor) >= 2  # the event's DLP and the total
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_forged(folder: Path, name: str = "forged.dcm") -> Path:
    """Write the forged copy of :data:`GENUINE` into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(forged_bytes())
    return path


def sop_instance_uid(path: Path = GENUINE) -> str:
    """Return the SOP Instance UID of a file."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)

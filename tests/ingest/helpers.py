"""Helpers of the registry tests: database dumps and synthetic DICOM objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import select
from sqlalchemy.engine import Engine

from kerma.db.base import Base


def dump_tables(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Return every row of every registry table as dicts (JSON-ready values)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            out[table.name] = [dict(r) for r in rows]
    return out


def dump_text(engine: Engine) -> str:
    """Return all the text held in the registry database, one JSON document."""
    return json.dumps(dump_tables(engine), default=str, ensure_ascii=False)


def without(rows: dict[str, list[dict[str, Any]]], *names: str) -> dict[str, list[dict[str, Any]]]:
    """Return a table dump with the named columns left out (e.g. timestamps)."""
    return {
        t: [{k: v for k, v in r.items() if k not in names} for r in rs] for t, rs in rows.items()
    }


def write_image_without_dose(path: Path) -> Path:
    """Write a small MR image: a valid DICOM object that holds no dose information."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientID = "MRI-NO-DOSE-42"
    ds.PatientName = "Nodose^Mary"
    ds.StudyDate = "20240102"
    ds.Manufacturer = "ACME"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x00\x01\x02\x03"
    ds.save_as(path, enforce_file_format=True)
    return path

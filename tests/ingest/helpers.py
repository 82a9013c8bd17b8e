"""Helpers of the registry tests: database dumps and synthetic DICOM objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
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


#: Stored value = HU - this intercept (the usual CT Rescale Intercept).
CT_RESCALE_INTERCEPT = -1024.0


def _ct_dataset(
    *,
    study_instance_uid: str,
    series_instance_uid: str | None,
    pixels: np.ndarray,
    pixel_mm: float,
    image_type: list[str],
    orientation: list[float],
    position: list[float],
    intercept: float,
    transfer_syntax: str,
) -> Dataset:
    """Return a CT Image Storage dataset holding ``pixels`` (uint16) and its geometry."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.Modality = "CT"
    ds.PatientID = "SYNTH-CT-7"
    ds.PatientName = "Water^Cylinder"
    ds.StudyDate = "20240102"
    ds.Manufacturer = "Kerma synthetic phantom"
    ds.ImageType = image_type
    ds.ImageOrientationPatient = orientation
    ds.ImagePositionPatient = position
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [pixel_mm, pixel_mm]
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = 1
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def water_cylinder_ct(
    *,
    study_instance_uid: str,
    diameter_mm: float = 250.0,
    z_mm: float = 0.0,
    pixel_mm: float = 0.8,
    size: int = 512,
    with_table: bool = True,
    series_instance_uid: str | None = None,
) -> Dataset:
    """Return an axial CT image of a water cylinder (0 HU) in air (-1000 HU).

    With ``with_table``, a 400 mm x 10 mm strip of +200 HU lies 10 mm below the
    cylinder (a patient table with an air gap); it must not count in Dw.
    """
    centre = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size]
    x_mm, y_mm = (x - centre) * pixel_mm, (y - centre) * pixel_mm
    hu = np.full((size, size), -1000.0)
    hu[x_mm**2 + y_mm**2 <= (diameter_mm / 2) ** 2] = 0.0
    if with_table:
        top = diameter_mm / 2 + 10.0
        hu[(np.abs(x_mm) <= 200.0) & (y_mm >= top) & (y_mm <= top + 10.0)] = 200.0
    return _ct_dataset(
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        pixels=np.round(hu - CT_RESCALE_INTERCEPT),
        pixel_mm=pixel_mm,
        image_type=["ORIGINAL", "PRIMARY", "AXIAL"],
        orientation=[1, 0, 0, 0, 1, 0],
        position=[-centre * pixel_mm, -centre * pixel_mm, z_mm],
        intercept=CT_RESCALE_INTERCEPT,
        transfer_syntax=ExplicitVRLittleEndian,
    )


def elliptical_localizer(
    *,
    study_instance_uid: str,
    view: str,
    ap_mm: float = 240.0,
    lat_mm: float = 340.0,
    pixel_mm: float = 1.0,
    columns: int = 512,
    rows: int = 300,
) -> Dataset:
    """Return a CT localizer of an elliptical water cylinder (axis along z).

    ``view`` ``"AP"``: tube above the patient, image rows run left-right (x), so the
    width across a row is the LAT dimension; ``"LAT"``: rows run front-back (y), the
    width is the AP dimension. Pixel value = 2 x water path length (mm); the patient
    spans rows 20 to rows - 20 (beyond: air, as above the head).
    """
    centre = (columns - 1) / 2.0
    u_mm = (np.arange(columns) - centre) * pixel_mm
    if view == "AP":
        half, through, orientation = lat_mm / 2, ap_mm, [1, 0, 0, 0, 0, -1]
    else:
        half, through, orientation = ap_mm / 2, lat_mm, [0, 1, 0, 0, 0, -1]
    path = through * np.sqrt(np.clip(1.0 - (u_mm / half) ** 2, 0.0, None))
    image = np.zeros((rows, columns))
    image[20 : rows - 20, :] = 2.0 * path
    return _ct_dataset(
        study_instance_uid=study_instance_uid,
        series_instance_uid=None,
        pixels=np.round(image),
        pixel_mm=pixel_mm,
        image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        orientation=orientation,
        position=[-centre * pixel_mm, 0.0, 0.0],
        intercept=0.0,
        transfer_syntax=ExplicitVRLittleEndian,
    )


def undecodable_ct(*, study_instance_uid: str) -> Dataset:
    """Return an axial CT image whose pixel data is JPEG 2000 that no decoder can read.

    The encapsulated fragment is not a JPEG 2000 code stream, so decoding fails
    whether or not pylibjpeg / GDCM are installed.
    """
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = water_cylinder_ct(study_instance_uid=study_instance_uid, size=16)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00\x01\x02\x03" * 16])
    ds["PixelData"].VR = "OB"
    return ds


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file and return its path."""
    ds.save_as(path, enforce_file_format=True)
    return path

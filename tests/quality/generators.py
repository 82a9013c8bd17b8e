"""Builders of the synthetic objects of the quality tests (issue #17).

Everything is generated in code: DX images from a shared GE Definium header with new
UIDs (and EI/DI as the test chooses), KOS 'Rejected for Quality Reasons' documents, and
CT series of a water-like ellipse with Gaussian noise of a chosen σ. No patient data.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    generate_uid,
)

from tests.conftest import DICOM_DIR

DX_TEMPLATE = "DX-Im-GE_XR220-1.dcm"


def dx_image(
    *,
    study_uid: str | None = None,
    station: str = "ROOM-A",
    serial: str = "SN-A",
    exposure_index: float | None = 500.0,
    target_exposure_index: float | None = 250.0,
    deviation_index: float | None = None,
    body_part: str = "CHEST",
    protocol: str = "Chest PA",
    patient_id: str = "P1",
    dap_dgycm2: float = 1.5,
    detector_id: str = "DET-1",
) -> Dataset:
    """Return a DX image header (from the GE template) with new UIDs and chosen EI/DI."""
    ds = pydicom.dcmread(DICOM_DIR / DX_TEMPLATE)
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StationName = station
    ds.DeviceSerialNumber = serial
    ds.PatientID = patient_id
    ds.BodyPartExamined = body_part
    ds.ProtocolName = protocol
    ds.DetectorID = detector_id
    ds.ImageAndFluoroscopyAreaDoseProduct = dap_dgycm2
    for keyword, value in (
        ("ExposureIndex", exposure_index),
        ("TargetExposureIndex", target_exposure_index),
        ("DeviationIndex", deviation_index),
    ):
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def rejection_kos(
    images: Sequence[Dataset], *, title=codes.DCM.RejectedForQualityReasons
) -> Dataset:
    """Return a KOS titled ``title`` that references ``images`` (PS3.3 A.35.4)."""
    first = images[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.Modality = "KO"
    ds.PatientID = first.PatientID
    ds.PatientName = "Test^Quality"
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.StudyDate = first.get("StudyDate", "")
    ds.ContentDate = first.get("StudyDate", "")
    ds.ContentTime = "120000"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    concept = Dataset()
    concept.CodeValue = title.value
    concept.CodingSchemeDesignator = title.scheme_designator
    concept.CodeMeaning = title.meaning
    ds.ConceptNameCodeSequence = DicomSequence([concept])
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = DicomSequence([template])
    by_study: dict[str, dict[str, list[Dataset]]] = {}
    content = []
    for image in images:
        by_study.setdefault(image.StudyInstanceUID, {}).setdefault(
            image.SeriesInstanceUID, []
        ).append(image)
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        item.ReferencedSOPSequence = DicomSequence([ref])
        content.append(item)
    ds.ContentSequence = DicomSequence(content)
    evidence = []
    for study_uid, series in by_study.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = DicomSequence()
        for series_uid, members in series.items():
            s = Dataset()
            s.SeriesInstanceUID = series_uid
            s.ReferencedSOPSequence = DicomSequence()
            for image in members:
                ref = Dataset()
                ref.ReferencedSOPClassUID = image.SOPClassUID
                ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
                s.ReferencedSOPSequence.append(ref)
            study.ReferencedSeriesSequence.append(s)
        evidence.append(study)
    ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence(evidence)
    return ds


def ct_series(
    *,
    sigma_hu: float,
    n_images: int = 3,
    size: int = 256,
    spacing_mm: float = 0.8,
    seed: int = 17,
    ctdivol_mgy: float | None = 10.0,
    protocol: str = "Abdomen",
    station: str = "CT-1",
) -> list[Dataset]:
    """Return axial CT images of a 40 HU ellipse in air with Gaussian noise σ (HU) added."""
    rng = np.random.default_rng(seed)
    study_uid, series_uid = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    inside = ((xx - c) / (0.42 * size)) ** 2 + ((yy - c) / (0.32 * size)) ** 2 <= 1.0
    images = []
    for index in range(n_images):
        hu = np.where(inside, 40.0, -1000.0) + rng.normal(0.0, sigma_hu, (size, size))
        stored = np.round(hu + 1024.0).clip(0, 4095).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.ManufacturerModelName = "Noise phantom"
        ds.StationName = station
        ds.DeviceSerialNumber = "CT-SN-1"
        ds.PatientID = "CT-P1"
        ds.PatientName = "Test^Noise"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyDate = "20260301"
        ds.StudyTime = "101500"
        ds.AcquisitionDateTime = f"20260301101{500 + index:03d}"[:14]
        ds.ProtocolName = protocol
        ds.SeriesDescription = protocol
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100, -100, -5.0 * index]
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [spacing_mm, spacing_mm]
        ds.KVP = 120
        if ctdivol_mgy is not None:
            ds.CTDIvol = ctdivol_mgy
        ds.InstanceNumber = index + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = stored.tobytes()
        images.append(ds)
    return images


def write(ds: Dataset, folder: Path, name: str | None = None) -> Path:
    """Write ``ds`` as a Part 10 file in ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{ds.SOPInstanceUID}.dcm")
    ds = copy.deepcopy(ds)
    ds.save_as(path, enforce_file_format=True)
    return path

"""Tests of kerma.dicom.dose_sheet: vendor CT dose screens read from their header."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from typing import Any

import pytest
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from kerma.dicom import dose_sheet
from kerma.dicom.extract import extract_dataset, inspect_path, read_dataset
from kerma.records import DoseReport, ReportKind
from tests.conftest import DICOM_DIR, SHARED

ORACLE = SHARED / "tools" / "oracle_check.py"
PHILIPS = DICOM_DIR / "CT-SC-Philips_Brilliance16P.dcm"

needs_shared = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared is not present")


def exposure_item(**attributes: Any) -> Dataset:
    """Return one Exposure Dose Sequence item of a spiral scan, Philips style."""
    item = Dataset()
    item.SeriesDescription = "ABDOMEN"
    item.KVP = "120"
    item.ExposureTime = 6986
    item.XRayTubeCurrentInuA = "165044.374"
    item.AcquisitionType = "SPIRAL"
    item.ScanLength = 231
    item.SingleCollimationWidth = 1.5
    item.TotalCollimationWidth = 24.0
    item.SpiralPitchFactor = 0.8
    item.CTDIvol = 7.2
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def add_dlp(ds: Dataset, value: str) -> None:
    """Add the Philips (ELSCINT1) private DLP element (00E1,xx21) to ``ds``."""
    block = ds.private_block(0x00E1, "ELSCINT1", create=True)
    block.add_new(0x21, "DS", value)


def dose_screen(items: list[Dataset], **attributes: Any) -> Dataset:
    """Return a secondary capture CT dose screen holding ``items``."""
    ds = Dataset()
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID = uid.generate_uid()
    ds.Modality = "CT"
    ds.StudyDate = "20170516"
    ds.Manufacturer = "Philips"
    ds.ManufacturerModelName = "Brilliance 16P"
    ds.ImageType = ["DERIVED", "SECONDARY", "DOSE_INFO"]
    ds.ExposureDoseSequence = items
    ds.TotalNumberOfExposures = len(items)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def roundtrip(ds: Dataset) -> Dataset:
    """Write ``ds`` as a Part 10 file to memory and read it back as Kerma reads files."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return read_dataset(buffer)


class TestDetection:
    """is_dose_sheet recognises the Philips CT dose screen by rule."""

    def test_secondary_capture_with_ctdivol_items_detected(self) -> None:
        """A CT secondary capture whose Exposure Dose Sequence has CTDIvol is a dose sheet."""
        assert dose_sheet.is_dose_sheet(roundtrip(dose_screen([exposure_item()])))

    def test_mammography_secondary_capture_not_detected(self) -> None:
        """A secondary capture with Modality MG (Hologic tomo projection) is not one."""
        assert not dose_sheet.is_dose_sheet(
            roundtrip(dose_screen([exposure_item()], Modality="MG"))
        )

    def test_ct_image_not_detected(self) -> None:
        """A CT Image Storage object is an image header, not a dose sheet."""
        ds = dose_screen([exposure_item()], SOPClassUID=uid.CTImageStorage)
        assert not dose_sheet.is_dose_sheet(roundtrip(ds))

    def test_screen_without_ctdivol_not_detected(self) -> None:
        """An Exposure Dose Sequence without CTDIvol (pixels only) is not read."""
        item = exposure_item()
        del item.CTDIvol
        assert not dose_sheet.is_dose_sheet(roundtrip(dose_screen([item])))


class TestReading:
    """read_dose_sheet turns each Exposure Dose Sequence item into a CT event."""

    def test_item_values_converted(self) -> None:
        """ms to s, µA to mA, acquisition type to CID 10013, private DLP in mGy·cm."""
        item = exposure_item()
        add_dlp(item, "196.01")
        ds = dose_screen([item])
        add_dlp(ds, "196.01")
        report = extract_dataset(roundtrip(ds))
        event = report.events[0]
        assert report.kind is ReportKind.DOSE_SHEET_CT
        assert report.study.modality == "CT"
        assert event.acquisition_protocol == "ABDOMEN"
        assert event.exposure_time_s == pytest.approx(6.986)
        assert event.ct_acquisition_type == "Spiral Acquisition"
        assert event.scanning_length_mm == 231.0
        assert event.ctdivol_mgy == 7.2
        assert event.dlp_mgycm == 196.01
        assert event.xray_sources is not None
        assert event.xray_sources[0].tube_current_ma == pytest.approx(165.044374)
        assert event.xray_sources[0].kvp_kv == 120.0
        assert report.accumulated.ct_dlp_total_mgycm == 196.01
        assert report.accumulated.total_number_of_irradiation_events == 1
        assert report.warnings == []

    def test_missing_dlp_warns(self) -> None:
        """Without the ELSCINT1 DLP element, DLP is empty and the total is warned about."""
        report = extract_dataset(roundtrip(dose_screen([exposure_item()])))
        assert report.events[0].dlp_mgycm is None
        assert report.accumulated.ct_dlp_total_mgycm is None
        assert any("no total DLP" in w for w in report.warnings)

    def test_other_manufacturer_read_with_warning(self) -> None:
        """A dose screen of the same shape from another maker is read, with a warning."""
        ds = dose_screen([exposure_item()], Manufacturer="Other CT Co")
        report = extract_dataset(roundtrip(ds))
        assert report.events[0].ctdivol_mgy == 7.2
        assert any("layout known from Philips only" in w for w in report.warnings)

    def test_count_mismatch_warns(self) -> None:
        """A Total Number of Exposures that differs from the items is reported."""
        ds = dose_screen([exposure_item()], TotalNumberOfExposures=3)
        report = extract_dataset(roundtrip(ds))
        assert report.accumulated.total_number_of_irradiation_events == 3
        assert any("Total Number of Exposures is 3" in w for w in report.warnings)


@needs_shared
class TestPhilipsBrilliance:
    """The real Philips Brilliance 16P dose screen."""

    def test_four_events_and_total_dlp(self) -> None:
        """Localizer plus three spirals, DLP total 1102.44609 mGy·cm."""
        report = inspect_path(PHILIPS)
        assert isinstance(report, DoseReport)
        assert report.kind is ReportKind.DOSE_SHEET_CT
        assert [e.ct_acquisition_type for e in report.events] == [
            "Constant Angle Acquisition",
            "Spiral Acquisition",
            "Spiral Acquisition",
            "Spiral Acquisition",
        ]
        assert [e.acquisition_protocol for e in report.events] == [
            None,
            "PRE KIDNEYS",
            "30S KIDNEYS",
            "100S C/A/P",
        ]
        assert report.events[3].dlp_mgycm == 657.85012
        assert report.events[3].ctdivol_mgy == pytest.approx(9.315682513246966)
        assert report.accumulated.ct_dlp_total_mgycm == 1102.44609
        assert report.accumulated.total_number_of_irradiation_events == 4

    def test_oracle_dose_sheet_all_fields_match(self) -> None:
        """oracle_check.py on CT-SC-* reports 100.0% of fields matched."""
        proc = subprocess.run(
            [
                sys.executable,
                str(ORACLE),
                "--kerma",
                f"{sys.executable} -m kerma.cli.main",
                "--only",
                "CT-SC-*",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        last = proc.stdout.strip().splitlines()[-1]
        assert proc.returncode == 0, proc.stdout
        assert "100.0%" in last

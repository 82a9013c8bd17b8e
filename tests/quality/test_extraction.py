"""Quality indicators read from objects (issue #17): EI/DI, vendor indices, KOS, CT noise."""

from __future__ import annotations

import io
import math

import pydicom
import pytest
from pydicom.sr.codedict import codes

from kerma.analysis.quality import (
    deviation_index,
    di_category,
    global_noise_level_hu,
    sum_histograms,
    vendor_index_name,
)
from kerma.dicom.extract import extract_dataset
from kerma.dicom.noise import HISTOGRAM_BIN_HU, measure_image_noise
from kerma.dicom.quality import parse_rejection_note
from tests.conftest import DICOM_DIR
from tests.quality.generators import ct_series, dx_image, rejection_kos

needs_shared = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom missing")

#: Shared image headers that carry IEC EI, target and DI.
EI_FILES = ("DX-Im-GE_XR220-1.dcm", "DX-Im-GE_XR220-2.dcm", "DX-Im-Carestream_DRX.dcm")


def _round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Write ``ds`` to bytes and read it back (as a received object would be)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@needs_shared
class TestExposureIndexExtraction:
    """EI, EI_T and DI of DX/CR/MG headers and RDSR events equal pydicom's values."""

    @pytest.mark.parametrize("name", EI_FILES)
    def test_header_indices_match_pydicom(self, name: str) -> None:
        """(0018,1411/1412/1413) are extracted as stored."""
        ds = pydicom.dcmread(DICOM_DIR / name)
        event = extract_dataset(ds).events[0]
        assert event.exposure_index == pytest.approx(float(ds.ExposureIndex))
        assert event.target_exposure_index == pytest.approx(float(ds.TargetExposureIndex))
        assert event.deviation_index == pytest.approx(float(ds.DeviationIndex))
        assert event.detector_id == ds.DetectorID

    def test_rdsr_event_indices_match_pydicom(self) -> None:
        """TID 10003 'Exposure Index' (DCM 113845) etc. of each event are read."""
        ds = pydicom.dcmread(DICOM_DIR / "DX-RDSR-Carestream_DRXEvolution.dcm")
        expected = []
        for item in ds.ContentSequence:
            if item.get("ValueType") != "CONTAINER":
                continue
            values = {}
            for child in item.get("ContentSequence", []):
                code = child.ConceptNameCodeSequence[0].CodeValue
                if code in ("113845", "113846", "113847"):
                    values[code] = float(child.MeasuredValueSequence[0].NumericValue)
            if values:
                expected.append(values)
        events = extract_dataset(ds).events
        assert len(expected) == len(events) == 5
        for event, values in zip(events, expected, strict=True):
            assert event.exposure_index == pytest.approx(values["113845"])
            assert event.target_exposure_index == pytest.approx(values["113846"])
            assert event.deviation_index == pytest.approx(values["113847"])

    def test_vendor_indices_kept_apart_from_iec(self) -> None:
        """Siemens (0018,6000)/(0018,1405) are vendor indices, not an IEC EI."""
        ds = pydicom.dcmread(DICOM_DIR / "DX-Im-SiemensMultix.dcm")
        event = extract_dataset(ds).events[0]
        assert event.exposure_index is None
        assert event.sensitivity == pytest.approx(float(ds.Sensitivity))
        assert event.relative_xray_exposure == pytest.approx(float(ds.RelativeXRayExposure))
        assert vendor_index_name("relative_xray_exposure", ds.Manufacturer) == "EXI (Siemens)"

    def test_device_di_agrees_with_iec_formula(self) -> None:
        """The GE device's DI is 10·log10(EI/EI_T) to its one decimal."""
        ds = pydicom.dcmread(DICOM_DIR / "DX-Im-GE_XR220-1.dcm")
        di = deviation_index(float(ds.ExposureIndex), float(ds.TargetExposureIndex))
        assert di == pytest.approx(float(ds.DeviationIndex), abs=0.05)


class TestDeviationIndex:
    """DI = 10·log10(EI/EI_T) (IEC 62494-1) where the device gives no DI."""

    def test_hand_computed_value(self) -> None:
        """EI 500, EI_T 250: DI = 10·log10(2) = 3.0103."""
        assert deviation_index(500.0, 250.0) == pytest.approx(3.0103, abs=1e-4)

    def test_header_without_di_is_not_guessed_on_extraction(self) -> None:
        """The extracted record keeps DI absent; the registry calculates it (services)."""
        event = extract_dataset(_round_trip(dx_image(deviation_index=None))).events[0]
        assert event.deviation_index is None
        assert event.exposure_index == 500.0

    @pytest.mark.parametrize(
        ("ei", "target"), [(None, 250.0), (500.0, None), (0.0, 250.0), (500.0, -1.0)]
    )
    def test_missing_or_non_positive_gives_none(self, ei, target) -> None:  # type: ignore[no-untyped-def]
        """No logarithm of a missing or non-positive ratio."""
        assert deviation_index(ei, target) is None

    @pytest.mark.parametrize(
        ("di", "category"),
        [(0.0, "within ±1"), (-1.0, "within ±1"), (1.5, "±1 to ±3"), (-3.2, "beyond ±3")],
    )
    def test_action_ranges(self, di: float, category: str) -> None:
        """The AAPM Report 116 ranges, ends included in the inner range."""
        assert di_category(di) == category


class TestRejectionNote:
    """A KOS 'Rejected for Quality Reasons' lists the images it rejects."""

    def test_references_read(self) -> None:
        """Every referenced SOP Instance UID with its study and series."""
        images = [dx_image(), dx_image()]
        note = parse_rejection_note(_round_trip(rejection_kos(images)))
        assert note is not None
        assert note.reason == "Rejected for Quality Reasons"
        assert {i.sop_instance_uid for i in note.instances} == {im.SOPInstanceUID for im in images}
        assert {i.series_instance_uid for i in note.instances} == {
            im.SeriesInstanceUID for im in images
        }

    def test_other_title_is_not_a_rejection(self) -> None:
        """A KOS for patient-safety reasons is not a quality rejection."""
        kos = rejection_kos([dx_image()], title=codes.DCM.RejectedForPatientSafetyReasons)
        assert parse_rejection_note(_round_trip(kos)) is None

    def test_image_is_not_a_rejection(self) -> None:
        """Any other object gives no note."""
        assert parse_rejection_note(dx_image()) is None


class TestGlobalNoise:
    """Christianson's global noise level on a synthetic CT series of known noise."""

    @pytest.mark.parametrize("sigma_hu", [6.0, 15.0, 30.0])
    def test_measured_within_ten_percent(self, sigma_hu: float) -> None:
        """Gaussian noise of σ HU added to a 40 HU ellipse: GNL within 10 % of σ."""
        histograms = []
        for ds in ct_series(sigma_hu=sigma_hu, n_images=2):
            result = measure_image_noise(_round_trip(ds))
            assert result.noise is not None, result.reason
            histograms.append(result.noise.histogram)
        gnl = global_noise_level_hu(sum_histograms(histograms), HISTOGRAM_BIN_HU)
        assert gnl is not None
        print(f"\nσ = {sigma_hu} HU: global noise level {gnl:.2f} HU")
        assert math.isclose(gnl, sigma_hu, rel_tol=0.10)

    def test_localizer_is_not_measured(self) -> None:
        """A LOCALIZER image has no global noise."""
        ds = ct_series(sigma_hu=10.0, n_images=1)[0]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        result = measure_image_noise(_round_trip(ds))
        assert result.noise is None
        assert "axial" in (result.reason or "")

    def test_empty_histogram_has_no_mode(self) -> None:
        """No soft-tissue pixel: no noise level."""
        assert global_noise_level_hu([], HISTOGRAM_BIN_HU) is None

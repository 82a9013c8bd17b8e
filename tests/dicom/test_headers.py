"""Tests of kerma.dicom.headers: dose and technique from image headers, one event per image."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from typing import Any

import pytest
from pydicom import config, uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag

from kerma.dicom.extract import extract_dataset, inspect_path, read_dataset
from kerma.errors import NotADoseReportError
from kerma.records import DoseReport, Rejection, ReportKind
from tests.conftest import CASES_DIR, DICOM_DIR, SHARED, load_case

ORACLE = SHARED / "tools" / "oracle_check.py"
HEADER_FILES = "DX-Im-*,MG-Im-*,NM-NmIm-*,NM-PetIm-*,PX-*"

needs_shared = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared is not present")


def raw(ds: Dataset, keyword: str, vr: str, value: str) -> None:
    """Store ``value`` as the raw bytes a device wrote, valid for its VR or not."""
    data = value.encode("ascii")
    data += b" " * (len(data) % 2)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(data), data, 0, True, True)


def image(sop_class: str, modality: str, **attributes: Any) -> Dataset:
    """Return a minimal image dataset with study, equipment and the given attributes."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Modality = modality
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.AcquisitionDate = "20240301"
    ds.AcquisitionTime = "101733"
    ds.Manufacturer = "Test Medical"
    ds.ManufacturerModelName = "Model 1"
    ds.PatientAge = "050Y"
    ds.SeriesDescription = "Test series"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def dx_image(**attributes: Any) -> Dataset:
    """Return a DX For Presentation image with a DAP, kVp and exposure."""
    values: dict[str, Any] = {
        "ImageAndFluoroscopyAreaDoseProduct": "1.5",
        "KVP": "80",
        "ExposureInuAs": 4000,
        "ExposureTime": 20,
        "XRayTubeCurrent": 200,
        "ProtocolName": "Chest PA",
        "BodyPartExamined": "CHEST",
        "ViewPosition": "PA",
    }
    values.update(attributes)
    return image(uid.DigitalXRayImageStorageForPresentation, "DX", **values)


def mg_image(**attributes: Any) -> Dataset:
    """Return an MG For Presentation image with Organ Dose and compression."""
    values: dict[str, Any] = {
        "OrganDose": "0.0152",
        "EntranceDoseInmGy": "5.81",
        "KVP": "29",
        "ExposureInuAs": 63000,
        "ImageLaterality": "L",
        "ViewPosition": "CC",
        "BodyPartThickness": "52",
        "CompressionForce": "98",
        "ProtocolName": "ROUTINE",
    }
    values.update(attributes)
    return image(uid.DigitalMammographyXRayImageStorageForPresentation, "MG", **values)


def radiopharmaceutical(**attributes: Any) -> Dataset:
    """Return a Radiopharmaceutical Information Sequence item (FDG, coded)."""
    item = Dataset()
    item.Radiopharmaceutical = "FDG"
    item.RadionuclideTotalDose = "221596288"
    item.RadionuclideHalfLife = "6586.2"
    item.RadiopharmaceuticalStartDateTime = "20240301091500"
    nuclide = Dataset()
    nuclide.CodeValue = "C-111A1"
    nuclide.CodingSchemeDesignator = "SRT"
    nuclide.CodeMeaning = "^18^Fluorine"
    item.RadionuclideCodeSequence = [nuclide]
    agent = Dataset()
    agent.CodeValue = "C-B1031"
    agent.CodingSchemeDesignator = "SRT"
    agent.CodeMeaning = "Fluorodeoxyglucose F^18^"
    item.RadiopharmaceuticalCodeSequence = [agent]
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


@pytest.fixture
def strict_reading() -> Any:
    """Make pydicom raise on invalid values while reading; restore the mode afterwards."""
    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    yield
    config.settings.reading_validation_mode = old


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


def extract(ds: Dataset) -> DoseReport:
    """Return the dose report of a dataset after a round trip through a file."""
    return extract_dataset(roundtrip(ds))


def inspect_file(path: Any) -> DoseReport:
    """Return the report of a real file, failing the test when it is rejected."""
    result = inspect_path(path)
    assert isinstance(result, DoseReport), getattr(result, "reason", result)
    return result


class TestUnitConversion:
    """Each attribute is converted once from its PS3.3 defined unit."""

    @pytest.mark.parametrize(
        ("keyword", "vr", "value", "field", "expected"),
        [
            ("ImageAndFluoroscopyAreaDoseProduct", "DS", "1.83", "dap_gym2", 1.83e-5),
            ("ExposureTime", "IS", "250", "exposure_time_s", 0.25),
            ("ExposureTimeInuS", "DS", "5600", "exposure_time_s", 0.0056),
            ("ExposureInuAs", "IS", "63000", "exposure_mas", 63.0),
            ("Exposure", "IS", "12", "exposure_mas", 12.0),
            ("XRayTubeCurrentInuA", "DS", "303000", "tube_current_ma", 303.0),
            ("EntranceDoseInmGy", "DS", "0.095", "entrance_dose_mgy", 0.095),
            ("AveragePulseWidth", "DS", "5.6", "pulse_width_s", 0.0056),
        ],
        ids=[
            "dap-dGycm2-to-Gym2",
            "exposure-time-ms-to-s",
            "exposure-time-us-to-s",
            "exposure-uAs-to-mAs",
            "exposure-mAs",
            "tube-current-uA-to-mA",
            "entrance-dose-mGy",
            "pulse-width-ms-to-s",
        ],
    )
    def test_dx_attribute_in_defined_unit_converted(
        self, keyword: str, vr: str, value: str, field: str, expected: float
    ) -> None:
        """A DX header attribute in its defined unit gives the canonical value."""
        ds = dx_image()
        for other in ("ExposureInuAs", "ExposureTime", "XRayTubeCurrent"):
            if other != keyword:
                delattr(ds, other)
        raw(ds, keyword, vr, value)
        event = extract(ds).events[0]
        assert getattr(event, field) == pytest.approx(expected, rel=1e-12)

    def test_organ_dose_dgy_read_as_agd_mgy(self) -> None:
        """(0040,0316) Organ Dose 0.0152 dGy on a mammogram is an AGD of 1.52 mGy."""
        event = extract(mg_image(OrganDose="0.0152")).events[0]
        assert event.agd_mgy == pytest.approx(1.52)

    def test_entrance_dose_dgy_used_when_mgy_absent(self) -> None:
        """(0040,0302) Entrance Dose 3 dGy gives 300 mGy when (0040,8302) is absent."""
        ds = mg_image()
        del ds.EntranceDoseInmGy
        ds.EntranceDose = 3
        assert extract(ds).events[0].entrance_dose_mgy == pytest.approx(300.0)

    def test_entrance_dose_zero_dgy_is_not_a_value(self) -> None:
        """(0040,0302) Entrance Dose 0 (GE Senographe: 'not measured') gives no value."""
        ds = mg_image()
        del ds.EntranceDoseInmGy
        ds.EntranceDose = 0
        assert extract(ds).events[0].entrance_dose_mgy is None

    def test_radionuclide_total_dose_bq_to_mbq(self) -> None:
        """(0018,1074) Radionuclide Total Dose 221596288 Bq gives 221.596288 MBq."""
        ds = image(
            uid.PositronEmissionTomographyImageStorage,
            "PT",
            RadiopharmaceuticalInformationSequence=[radiopharmaceutical()],
        )
        report = extract(ds)
        assert report.events[0].administered_activity_mbq == pytest.approx(221.596288)
        assert not any("(0018,1074)" in w for w in report.warnings)

    def test_uas_preferred_over_rounded_mas(self) -> None:
        """(0018,1153) 1040 µAs is used rather than the rounded (0018,1152) 1 mAs."""
        event = extract(dx_image(ExposureInuAs=1040, Exposure=1)).events[0]
        assert event.exposure_mas == pytest.approx(1.04)


class TestKind:
    """Kind and modality follow the image's own Modality."""

    @pytest.mark.parametrize(
        ("sop_class", "modality", "kind"),
        [
            (uid.ComputedRadiographyImageStorage, "CR", ReportKind.HEADER_DX),
            (uid.DigitalXRayImageStorageForPresentation, "DX", ReportKind.HEADER_DX),
            (uid.DigitalXRayImageStorageForPresentation, "PX", ReportKind.HEADER_DX),
            (uid.DigitalMammographyXRayImageStorageForProcessing, "MG", ReportKind.HEADER_MG),
            (uid.XRayRadiofluoroscopicImageStorage, "RF", ReportKind.HEADER_RF),
            (uid.XRayAngiographicImageStorage, "XA", ReportKind.HEADER_RF),
        ],
        ids=["CR", "DX", "PX", "MG", "RF", "XA"],
    )
    def test_modality_gives_kind_and_study_modality(
        self, sop_class: str, modality: str, kind: ReportKind
    ) -> None:
        """Each projection modality gives its header kind and keeps its own modality."""
        ds = image(sop_class, modality, ImageAndFluoroscopyAreaDoseProduct="2", KVP="70")
        report = extract(ds)
        assert report.kind is kind
        assert report.study.modality == modality
        assert len(report.events) == 1
        assert report.events[0].modality == modality

    def test_other_modality_kind_from_sop_class(self) -> None:
        """An odd Modality on a DX SOP class is read as header-dx with a warning."""
        ds = dx_image(Modality="OT")
        report = extract(ds)
        assert report.kind is ReportKind.HEADER_DX
        assert report.study.modality == "DX"
        assert any("Modality 'OT'" in w for w in report.warnings)


class TestProjectionFields:
    """Projection fields of DX and MG headers."""

    @pytest.mark.parametrize(
        ("stored", "expected"),
        [("L", "Left"), ("R", "Right"), ("B", "Both"), ("U", "Unpaired")],
        ids=["L", "R", "B", "U"],
    )
    def test_image_laterality_read_as_word(self, stored: str, expected: str) -> None:
        """(0020,0062) Image Laterality L/R/B/U is Left/Right/Both/Unpaired."""
        assert extract(mg_image(ImageLaterality=stored)).events[0].laterality == expected

    def test_series_laterality_used_when_image_laterality_absent(self) -> None:
        """(0020,0060) Laterality is used when (0020,0062) is absent (Hologic SC)."""
        ds = mg_image(Laterality="R")
        del ds.ImageLaterality
        assert extract(ds).events[0].laterality == "Right"

    def test_mammography_fields_read(self) -> None:
        """View, thickness, force, protocol and technique of a mammogram are read."""
        event = extract(mg_image()).events[0]
        assert event.image_view == "CC"
        assert event.compression_thickness_mm == 52.0
        assert event.compression_force_n == 98.0
        assert event.acquisition_protocol == "ROUTINE"
        assert event.kvp_kv == 29.0
        assert event.exposure_mas == 63.0

    def test_protocol_name_absent_series_description_used(self) -> None:
        """Without (0018,1030) Protocol Name the Series Description is the protocol."""
        ds = dx_image()
        del ds.ProtocolName
        report = extract(ds)
        assert report.events[0].acquisition_protocol == "Test series"
        assert any("Protocol Name absent" in w for w in report.warnings)

    def test_series_description_recorded_on_study(self) -> None:
        """(0008,103E) Series Description is kept on the study record."""
        assert extract(dx_image()).study.series_description == "Test series"

    def test_acquisition_datetime_read_with_offset(self) -> None:
        """(0008,002A) Acquisition DateTime with (0008,0201) offset gives ISO 8601."""
        ds = dx_image(AcquisitionDateTime="20240301101733.25", TimezoneOffsetFromUTC="+0100")
        event = extract(ds).events[0]
        assert event.datetime_started == "2024-03-01T10:17:33.25+01:00"

    def test_organ_dose_of_non_breast_organ_not_agd(self) -> None:
        """Organ Dose on a DX image is not a glandular dose: kept out with a warning."""
        report = extract(dx_image(OrganDose="0.5", OrganExposed="LUNG"))
        assert report.events[0].agd_mgy is None
        assert any("not a glandular dose" in w for w in report.warnings)


class TestMissingAttribute:
    """A missing key attribute is a warning that names it; the image is still read."""

    def test_dx_without_dap_warns_naming_attribute(self) -> None:
        """A DX image without (0018,115E) is read with a warning naming it."""
        ds = dx_image()
        del ds.ImageAndFluoroscopyAreaDoseProduct
        report = extract(ds)
        assert report.events[0].dap_gym2 is None
        assert report.events[0].kvp_kv == 80.0
        assert any("(0018,115E)" in w for w in report.warnings)

    def test_mg_without_organ_dose_warns_naming_attribute(self) -> None:
        """An MG image without (0040,0316) Organ Dose is read with a warning naming it."""
        ds = mg_image()
        del ds.OrganDose
        report = extract(ds)
        assert report.events[0].agd_mgy is None
        assert any("(0040,0316) Organ Dose absent" in w for w in report.warnings)

    def test_ct_without_ctdivol_warns_naming_attribute(self) -> None:
        """A CT image with technique but no (0018,9345) CTDIvol warns and names it."""
        ds = image(uid.CTImageStorage, "CT", KVP="120", Exposure=150)
        report = extract(ds)
        assert report.kind is ReportKind.HEADER_CT
        assert report.events[0].ctdivol_mgy is None
        assert any("(0018,9345) CTDIvol absent" in w for w in report.warnings)

    def test_pet_without_total_dose_warns_naming_attribute(self) -> None:
        """A PET image without (0018,1074) Radionuclide Total Dose warns and names it."""
        item = radiopharmaceutical()
        del item.RadionuclideTotalDose
        ds = image(
            uid.PositronEmissionTomographyImageStorage,
            "PT",
            RadiopharmaceuticalInformationSequence=[item],
        )
        report = extract(ds)
        assert report.events[0].administered_activity_mbq is None
        assert report.events[0].radionuclide == "^18^Fluorine"
        assert any("(0018,1074) Radionuclide Total Dose absent" in w for w in report.warnings)

    def test_empty_dap_is_no_value_not_zero(self) -> None:
        """An empty (0018,115E) (Type 3 sent empty) gives no value, never 0."""
        ds = dx_image()
        raw(ds, "ImageAndFluoroscopyAreaDoseProduct", "DS", "")
        assert extract(ds).events[0].dap_gym2 is None


class TestRejection:
    """Images without any dose or technique attribute are rejected with a reason."""

    def test_mr_image_rejected_naming_what_was_looked_for(self) -> None:
        """An MR image holds no dose information and is rejected, listing the attributes."""
        ds = image(uid.MRImageStorage, "MR", MagneticFieldStrength="1.5", EchoTime="4.2")
        with pytest.raises(
            NotADoseReportError,
            match=r"\(Modality MR, SOP class MR Image Storage \(1\.2\.840\.10008\.5\.1\.4\.1\.1"
            r"\.4\)\) holds no dose information: none of \(0018,115E\) 'Image and Fluoroscopy"
            r" Area Dose Product', \(0040,0316\) 'Organ Dose', .*\(0018,9345\) 'CTDIvol', "
            r".*\(0054,0016\) 'Radiopharmaceutical Information Sequence' is present",
        ) as info:
            extract(ds)
        assert info.value.sop_instance_uid == ds.SOPInstanceUID

    def test_plain_secondary_capture_rejected(self) -> None:
        """A secondary capture without dose attributes is rejected as not a dose object."""
        ds = image(uid.SecondaryCaptureImageStorage, "OT", ConversionType="WSD")
        with pytest.raises(NotADoseReportError, match="holds no dose information"):
            extract(ds)

    def test_pixel_only_dose_screen_rejected_with_hint(self) -> None:
        """A CT dose screen with values only in its pixels is rejected, saying so."""
        ds = image(
            uid.SecondaryCaptureImageStorage,
            "CT",
            ImageType=["DERIVED", "SECONDARY", "DOSE_INFO"],
            SeriesDescription="Dose Report",
        )
        with pytest.raises(NotADoseReportError, match="only burned into its pixels"):
            extract(ds)

    def test_dx_with_every_dose_attribute_removed_rejected(self) -> None:
        """A DX image stripped of DAP, kVp and exposure is rejected, not read as empty."""
        ds = dx_image()
        for keyword in ("ImageAndFluoroscopyAreaDoseProduct", "KVP", "ExposureInuAs"):
            delattr(ds, keyword)
        with pytest.raises(NotADoseReportError, match=r"none of \(0018,115E\)"):
            extract(ds)


class TestCT:
    """CT image headers (header-ct)."""

    def test_ct_image_values_read(self) -> None:
        """CTDIvol, kVp, tube current, acquisition type and pitch of a CT image are read."""
        ds = image(
            uid.CTImageStorage,
            "CT",
            CTDIvol=7.2,
            KVP="120",
            XRayTubeCurrent=250,
            ExposureTime=1000,
            Exposure=250,
            AcquisitionType="SPIRAL",
            SpiralPitchFactor=0.8,
            RevolutionTime=0.5,
        )
        report = extract(ds)
        event = report.events[0]
        assert report.kind is ReportKind.HEADER_CT
        assert report.study.modality == "CT"
        assert event.ctdivol_mgy == 7.2
        assert event.ct_acquisition_type == "Spiral Acquisition"
        assert event.pitch_factor == 0.8
        assert event.exposure_time_s == 1.0
        assert event.xray_sources is not None
        assert event.xray_sources[0].kvp_kv == 120.0
        assert event.xray_sources[0].tube_current_ma == 250.0
        assert event.xray_sources[0].exposure_time_per_rotation_s == 0.5

    def test_enhanced_ct_ctdivol_read_from_functional_groups(self) -> None:
        """An Enhanced CT image's CTDIvol in the CT Exposure Sequence is found."""
        exposure = Dataset()
        exposure.CTDIvol = 12.5
        exposure.ExposureInmAs = 180.0
        group = Dataset()
        group.CTExposureSequence = [exposure]
        ds = image(uid.EnhancedCTImageStorage, "CT", SharedFunctionalGroupsSequence=[group])
        event = extract(ds).events[0]
        assert event.ctdivol_mgy == 12.5
        assert event.exposure_mas == 180.0


class TestRadiopharmaceutical:
    """NM and PET image headers (header-nm, header-pt)."""

    def test_pet_administration_read(self) -> None:
        """Agent from the code sequence, radionuclide, half-life and start are read."""
        ds = image(
            uid.PositronEmissionTomographyImageStorage,
            "PT",
            RadiopharmaceuticalInformationSequence=[radiopharmaceutical()],
        )
        report = extract(ds)
        event = report.events[0]
        assert report.kind is ReportKind.HEADER_PT
        assert event.radiopharmaceutical_agent == "Fluorodeoxyglucose F^18^"
        assert event.radionuclide == "^18^Fluorine"
        assert event.radionuclide_half_life_s == 6586.2
        assert event.radiopharmaceutical_start_datetime == "2024-03-01T09:15:00"

    def test_start_time_only_combined_with_study_date(self) -> None:
        """A Start Time without Start DateTime is placed on the study date, with a warning."""
        item = radiopharmaceutical(RadiopharmaceuticalStartTime="091500")
        del item.RadiopharmaceuticalStartDateTime
        ds = image(
            uid.NuclearMedicineImageStorage, "NM", RadiopharmaceuticalInformationSequence=[item]
        )
        report = extract(ds)
        assert report.kind is ReportKind.HEADER_NM
        assert report.events[0].radiopharmaceutical_start_datetime == "2024-03-01T09:15:00"
        assert any("Start DateTime absent" in w for w in report.warnings)

    def test_administration_uid_identifies_event(self) -> None:
        """(0008,3012) Radiopharmaceutical Administration Event UID identifies the event."""
        item = radiopharmaceutical(RadiopharmaceuticalAdministrationEventUID="1.2.3.4")
        ds = image(
            uid.PositronEmissionTomographyImageStorage,
            "PT",
            RadiopharmaceuticalInformationSequence=[item],
        )
        assert extract(ds).events[0].irradiation_event_uid == "1.2.3.4"

    @pytest.mark.parametrize(
        ("sop_class", "modality", "stored", "expected_mbq", "warning"),
        [
            (uid.NuclearMedicineImageStorage, "NM", "555", 555.0, None),
            (uid.NuclearMedicineImageStorage, "NM", "740000000", 740.0, "too large to be MBq"),
            (uid.PositronEmissionTomographyImageStorage, "PT", "370000000", 370.0, None),
            (uid.PositronEmissionTomographyImageStorage, "PT", "370", 370.0, "too small to be Bq"),
            (uid.EnhancedPETImageStorage, "PT", "185000000", 185.0, None),
            (uid.NuclearMedicineImageStorage, "NM", "0.001", 0.001, "implausible"),
            (uid.SecondaryCaptureImageStorage, "NM", "400", 400.0, None),
            (uid.SecondaryCaptureImageStorage, "PT", "400000000", 400.0, None),
        ],
        ids=[
            "nm-mbq",
            "nm-holding-bq",
            "pet-bq",
            "pet-holding-mbq",
            "enhanced-pet-bq",
            "nm-implausible",
            "other-class-nm-modality",
            "other-class-pt-modality",
        ],
    )
    def test_activity_unit_by_iod_then_magnitude(
        self, sop_class: str, modality: str, stored: str, expected_mbq: float, warning: str | None
    ) -> None:
        """(0018,1074) is MBq in NM images and Bq in PET images (PS3.3), checked by size."""
        item = radiopharmaceutical(RadionuclideTotalDose=stored)
        ds = image(sop_class, modality, RadiopharmaceuticalInformationSequence=[item])
        ds.Manufacturer = "GE MEDICAL SYSTEMS"  # the rule holds for every manufacturer
        report = extract(ds)
        assert report.events[0].administered_activity_mbq == pytest.approx(expected_mbq)
        messages = [w for w in report.warnings if "(0018,1074)" in w]
        if warning is None:
            assert messages == []
        else:
            assert any(warning in w for w in messages)


class TestFilterTypeTerm:
    """Filtration given only as a vendor term in (0018,1160) Filter Type (case C26)."""

    @pytest.mark.parametrize(
        ("term", "material", "low", "high"),
        [
            ("CU_0.1_MM", "COPPER", 0.1, 0.1),
            ("CU_0.3_MM", "COPPER", 0.3, 0.3),
            ("AL_2.0_MM", "ALUMINUM", 2.0, 2.0),
            ("0.2 mm Cu", "COPPER", 0.2, 0.2),
            ("Cu0.1mm", "COPPER", 0.1, 0.1),
            ("CU_0.1_MM+AL_1.0_MM", "COPPER, ALUMINUM", None, None),
        ],
        ids=["siemens-cu01", "siemens-cu03", "al", "thickness-first", "compact", "combination"],
    )
    def test_term_gives_material_and_thickness(
        self, term: str, material: str, low: float | None, high: float | None
    ) -> None:
        """The term's material and thickness fill the filter fields, with a warning."""
        ds = dx_image(Manufacturer="SIEMENS", FilterType=term)
        report = extract(ds)
        event = report.events[0]
        assert event.xray_filter_material == material
        assert event.xray_filter_thickness_min_mm == low
        assert event.xray_filter_thickness_max_mm == high
        assert any(
            f"filter read from Siemens Filter Type term {term!r}" in w for w in report.warnings
        )

    @pytest.mark.parametrize("term", ["FLAT", "WEDGE", "NONE", "STRIP"])
    def test_defined_terms_are_not_materials(self, term: str) -> None:
        """A PS3.3 defined term (FLAT, WEDGE ...) names no material."""
        report = extract(dx_image(FilterType=term))
        assert report.events[0].xray_filter_material is None
        assert not any("Filter Type term" in w for w in report.warnings)

    def test_filter_material_wins_over_term(self) -> None:
        """(0018,7050) Filter Material, when present, is what is read."""
        report = extract(dx_image(FilterType="CU_0.1_MM", FilterMaterial="ALUMINUM"))
        assert report.events[0].xray_filter_material == "ALUMINUM"


class TestProtocolFallback:
    """Acquisition protocol outside (0018,1030) Protocol Name (case C27)."""

    def test_performed_protocol_code_sequence(self) -> None:
        """The Code Meaning of Performed Protocol Code Sequence, with a warning."""
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = "X1", "99FUJI"
        item.CodeMeaning = "Chest AP mobile"
        ds = dx_image(Manufacturer="FUJIFILM Corporation", PerformedProtocolCodeSequence=[item])
        del ds.SeriesDescription, ds.ProtocolName
        report = extract(ds)
        assert report.events[0].acquisition_protocol == "Chest AP mobile"
        assert any("(0040,0260) Performed Protocol Code Sequence" in w for w in report.warnings)

    def test_toshiba_image_comments(self) -> None:
        """TOSHIBA_MEC / TM_TFD software keeps the protocol in Image Comments."""
        ds = dx_image(
            Manufacturer="TOSHIBA_MEC", SoftwareVersions="TM_TFD_1.0", ImageComments="Chest PA"
        )
        del ds.ProtocolName
        report = extract(ds)
        assert report.events[0].acquisition_protocol == "Chest PA"
        assert any("(0020,4000) Image Comments" in w for w in report.warnings)

    def test_image_comments_of_other_makers_are_free_text(self) -> None:
        """Image Comments of another manufacturer is never taken as the protocol."""
        ds = dx_image(Manufacturer="Test Medical", ImageComments="patient moved")
        del ds.SeriesDescription, ds.ProtocolName
        assert extract(ds).events[0].acquisition_protocol is None

    def test_protocol_name_first(self) -> None:
        """Protocol Name is used when present, without a warning."""
        ds = dx_image(ProtocolName="Chest PA", ImageComments="x", Manufacturer="TOSHIBA_MEC")
        report = extract(ds)
        assert report.events[0].acquisition_protocol == "Chest PA"
        assert not any("Protocol Name absent" in w for w in report.warnings)


@needs_shared
class TestVendorQuirks:
    """Device-specific unit faults, recognised by device and value range."""

    def test_kodak_dr7500_sid_dm_converted_to_mm(self) -> None:
        """KODAK DR 7500 (0018,1110) 11.5 dm is 1150 mm, with a warning."""
        report = inspect_file(DICOM_DIR / "DX-Im-Carestream_DR7500-1.dcm")
        assert report.events[0].distance_source_to_detector_mm == 1150.0
        assert any("in dm" in w for w in report.warnings)

    def test_small_sid_from_other_device_kept_with_warning(self) -> None:
        """A Distance Source to Detector of 11.5 from another maker is kept, with a warning."""
        report = extract(dx_image(DistanceSourceToDetector="11.5"))
        assert report.events[0].distance_source_to_detector_mm == 11.5
        assert any("implausibly small" in w for w in report.warnings)

    def test_kodak_plausible_sid_not_converted(self) -> None:
        """A KODAK SID already in mm (1800) is not converted."""
        report = extract(dx_image(Manufacturer="KODAK", DistanceSourceToDetector="1800"))
        assert report.events[0].distance_source_to_detector_mm == 1800.0
        assert not any("in dm" in w for w in report.warnings)

    def test_siemens_nm_activity_mbq_read_as_mbq(self) -> None:
        """SIEMENS NM (0018,1074) 764 in an NM image is 764 MBq as PS3.3 defines it: no warning."""
        report = inspect_file(DICOM_DIR / "NM-NmIm-Siemens.dcm")
        assert report.kind is ReportKind.HEADER_NM
        assert report.events[0].administered_activity_mbq == 764.0
        assert report.events[0].radiopharmaceutical_agent == "DPD"
        assert not any("(0018,1074)" in w for w in report.warnings)

    def test_siemens_pet_activity_in_bq_converted(self) -> None:
        """SIEMENS Biograph (0018,1074) 394000000 Bq is 394 MBq, without a warning."""
        report = inspect_file(DICOM_DIR / "NM-PetIm-Siemens.dcm")
        assert report.events[0].administered_activity_mbq == 394.0
        assert not any("(0018,1074)" in w for w in report.warnings)


@needs_shared
class TestCases:
    """Fault cases C10 and C13 of ../shared/cases."""

    def test_c10_is_with_decimals_kept_unrounded(self) -> None:
        """C10: IS values 12.5 ms, 320.5 mA and 3.2 mAs are kept unrounded, with warnings."""
        case = load_case("C10-dx-header-is-with-decimals")
        expected = case["expected"]
        report = inspect_file(CASES_DIR / case["files"][0])
        event = report.events[0]
        assert report.kind is ReportKind.HEADER_DX
        assert report.study.modality == expected["modality"]
        assert event.kvp_kv == expected["kvp"]
        assert event.exposure_time_s == pytest.approx(expected["exposure_time_s"])
        assert event.tube_current_ma == expected["tube_current_ma"]
        assert event.exposure_mas == expected["exposure_mas"]
        assert event.dap_gym2 == pytest.approx(expected["dap_gym2"])
        assert event.entrance_dose_mgy == expected["entrance_dose_mgy"]
        for warning in case["expected_warnings"]:
            assert any(warning in w for w in report.warnings)

    @pytest.mark.usefixtures("strict_reading")
    def test_c10_strict_pydicom_still_keeps_decimals(self) -> None:
        """C10 read with pydicom in RAISE mode keeps 12.5 ms, 320.5 mA and 3.2 mAs."""
        report = inspect_file(CASES_DIR / "C10-dx-header-is-with-decimals.dcm")
        event = report.events[0]
        assert event.exposure_time_s == pytest.approx(0.0125)
        assert event.tube_current_ma == 320.5
        assert event.exposure_mas == 3.2
        assert "Exposure: IS attribute holds a decimal value; value kept unrounded" in (
            report.warnings
        )

    def test_c13_age_without_unit_and_content_date(self) -> None:
        """C13: age '45' is 45 years, study date from Content Date, AGD 1.52 mGy."""
        case = load_case("C13-mg-header-age-no-unit-no-study-date")
        expected = case["expected"]
        report = inspect_file(CASES_DIR / case["files"][0])
        event = report.events[0]
        assert report.kind is ReportKind.HEADER_MG
        assert report.study.modality == expected["modality"]
        assert report.study.patient_age_years == expected["patient_age_years"]
        assert report.study.study_date == expected["study_date"]
        assert event.laterality == "Left"  # the case writes 'L'; EXTRACTION.md says Left
        assert event.image_view == expected["view"]
        assert event.agd_mgy == pytest.approx(expected["agd_mgy"])
        assert event.entrance_dose_mgy == expected["entrance_dose_mgy"]
        assert event.kvp_kv == expected["kvp"]
        assert event.exposure_mas == expected["exposure_mas"]
        assert event.compression_thickness_mm == expected["compressed_breast_thickness_mm"]
        assert event.compression_force_n == expected["compression_force_n"]
        assert event.datetime_started == "2024-02-20T09:35:10"
        for warning in case["expected_warnings"]:
            assert warning in report.warnings


@needs_shared
class TestDeduplication:
    """The same exposure sent twice is recognisable as one event."""

    def test_for_presentation_and_processing_same_identity(self) -> None:
        """GE Senographe For Presentation and For Processing give the same event identity."""
        presentation = inspect_file(DICOM_DIR / "MG-Im-GE_Seno_1_ForPresentation.dcm")
        processing = inspect_file(DICOM_DIR / "MG-Im-GE_Seno_1_ForProcessing.dcm")
        assert presentation.sop_instance_uid != processing.sop_instance_uid
        a, b = presentation.events[0], processing.events[0]
        assert a.irradiation_event_uid == b.irradiation_event_uid
        identity_a = (a.datetime_started, a.dap_gym2, a.agd_mgy, a.kvp_kv, a.exposure_mas)
        identity_b = (b.datetime_started, b.dap_gym2, b.agd_mgy, b.kvp_kv, b.exposure_mas)
        assert identity_a == identity_b
        assert a.datetime_started == "2013-04-12T13:22:23.000000"

    def test_irradiation_event_uid_read(self) -> None:
        """(0008,3010) Irradiation Event UID of a Carestream DRX image is the event UID."""
        report = inspect_file(DICOM_DIR / "DX-Im-Carestream_DRX.dcm")
        assert report.events[0].irradiation_event_uid == (
            "1.3.6.1.4.1.5962.99.1.886610039.3649959.1495535261815.5.0"
        )

    def test_rejected_mr_file_is_a_rejection(self, tmp_path: Any) -> None:
        """inspect_path turns an MR file into a Rejection with the reason."""
        ds = image(uid.MRImageStorage, "MR")
        path = tmp_path / "mr.dcm"
        roundtrip(ds).save_as(path, enforce_file_format=True)
        result = inspect_path(path)
        assert isinstance(result, Rejection)
        assert "holds no dose information" in result.reason


@needs_shared
class TestOracle:
    """The oracle of ../shared agrees with every image-header expected value."""

    def test_oracle_header_files_all_fields_match(self) -> None:
        """oracle_check.py on the header files reports 100.0% of fields matched."""
        proc = subprocess.run(
            [
                sys.executable,
                str(ORACLE),
                "--kerma",
                f"{sys.executable} -m kerma.cli.main",
                "--only",
                HEADER_FILES,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        last = proc.stdout.strip().splitlines()[-1]
        assert proc.returncode == 0, proc.stdout
        assert "100.0%" in last

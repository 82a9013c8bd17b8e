"""Tests of kerma.dicom.projection: TID 10001 projection X-ray dose reports (RF/XA/DX/MG).

Real objects come from ``../shared`` (cases C01, C03, C07, C09, C22 and vendor RDSRs);
rule tests build small SR documents here with pydicom, write them to a BytesIO and read
them back before extraction.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, XRayRadiationDoseSRStorage, generate_uid

from kerma.dicom.extract import extract_dataset, inspect_path, read_dataset
from kerma.dicom.projection import (
    ContentIndex,
    concept_key,
    get_event_modality,
    get_study_modality,
    mean_of_nonzero,
)
from kerma.records import AccumulatedPlane, DoseReport
from tests.conftest import CASES_DIR, DICOM_DIR, SHARED, load_case

ORACLE = SHARED / "tools" / "oracle_check.py"
PROJECTION_GLOBS = "RF-*,OR1-*,PSD-*,DX-RDSR-*,Dual-*,MG-RDSR-*"


# --- builders of small SR documents ---------------------------------------------------


def code_item(code: Code) -> Dataset:
    """Return a code sequence item for ``code``."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def content_item(
    value_type: str, concept: Code, relationship: str = "CONTAINS", kids: Sequence[Dataset] = ()
) -> Dataset:
    """Return a content item with its concept name and (optional) children."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [code_item(concept)]
    if value_type == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    if kids:
        item.ContentSequence = list(kids)
    return item


def num(concept: Code, value: str | None, unit: str) -> Dataset:
    """Return a NUM item; ``value`` None gives an empty Measured Value Sequence."""
    item = content_item("NUM", concept)
    if value is None:
        item.MeasuredValueSequence = []
        return item
    mv = Dataset()
    mv.NumericValue = value
    mv.MeasurementUnitsCodeSequence = [code_item(Code(unit, "UCUM", unit))]
    item.MeasuredValueSequence = [mv]
    return item


def coded(
    concept: Code, value: Code, relationship: str = "CONTAINS", kids: Sequence[Dataset] = ()
) -> Dataset:
    """Return a CODE item."""
    item = content_item("CODE", concept, relationship, kids)
    item.ConceptCodeSequence = [code_item(value)]
    return item


def uidref(concept: Code, uid: str) -> Dataset:
    """Return a UIDREF item."""
    item = content_item("UIDREF", concept)
    item.UID = uid
    return item


def event_items(
    event_type: Code = codes.DCM.StationaryAcquisition, *extra: Dataset, dap: str | None = "1e-5"
) -> Dataset:
    """Return an 'Irradiation Event X-Ray Data' container (DAP omitted when ``dap`` None)."""
    kids = [
        coded(codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane, "HAS CONCEPT MOD"),
        coded(codes.DCM.IrradiationEventType, event_type),
        uidref(codes.DCM.IrradiationEventUID, generate_uid()),
    ]
    if dap is not None:
        kids.append(num(codes.DCM.DoseAreaProduct, dap, "Gy.m2"))
    kids.extend(extra)
    return content_item("CONTAINER", codes.DCM.IrradiationEventXRayData, kids=kids)


def accumulated(*items: Dataset, plane: Code = codes.DCM.SinglePlane) -> Dataset:
    """Return an 'Accumulated X-Ray Dose Data' container."""
    kids = [coded(codes.DCM.AcquisitionPlane, plane, "HAS CONCEPT MOD"), *items]
    return content_item("CONTAINER", codes.DCM.AccumulatedXRayDoseData, kids=kids)


def build_report(
    *containers: Dataset,
    procedure: Code = codes.DCM.ProjectionXRay,
    device_type: Code | None = None,
    template: bool = True,
) -> DoseReport:
    """Build a TID 10001 SR, write it to a BytesIO, read it back and extract it."""
    ds = Dataset()
    ds.SOPClassUID = XRayRadiationDoseSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = [code_item(codes.DCM.XRayRadiationDoseReport)]
    if template:
        tpl = Dataset()
        tpl.MappingResource = "DCMR"
        tpl.TemplateIdentifier = "10001"
        ds.ContentTemplateSequence = [tpl]
    intent = coded(codes.SCT.HasIntent, codes.SCT.DiagnosticIntent, "HAS CONCEPT MOD")
    root = [coded(codes.DCM.ProcedureReported, procedure, "HAS CONCEPT MOD", [intent])]
    if device_type is not None:
        root.append(coded(codes.DCM.AcquisitionDeviceType, device_type))
    root.extend(containers)
    ds.ContentSequence = root
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return extract_dataset(read_dataset(buffer))


def zero_fluoro_totals() -> list[Dataset]:
    """Return zero TID 10004 fluoroscopy totals, as a radiography/fluoroscopy room sends."""
    return [
        num(codes.DCM.FluoroDoseAreaProductTotal, "0", "Gy.m2"),
        num(codes.DCM.TotalFluoroTime, "0", "s"),
    ]


def inspect_shared(path: object) -> DoseReport:
    """Return the report of a file in ../shared, failing on a rejection."""
    result = inspect_path(path)  # type: ignore[arg-type]
    assert isinstance(result, DoseReport), getattr(result, "reason", result)
    return result


# --- the fault cases of ../shared/cases -------------------------------------------------


@pytest.mark.usefixtures("shared_dir")
class TestCases:
    """The projection fault cases give their expected values."""

    def test_c01_non_template_units_converted_with_warnings(self) -> None:
        """C01: DAP in dGy.cm2 and Dose (RP) in mGy are converted by unit, with warnings."""
        case = load_case("C01-fluoro-dgycm2-mgy-units")["expected"]
        report = inspect_shared(CASES_DIR / "C01-fluoro-dgycm2-mgy-units.dcm")
        assert report.study.modality == case["modality"]
        assert len(report.events) == case["n_events"]
        plane = report.accumulated.planes[0]
        acc = case["accumulated"]
        assert plane.dap_total_gym2 == pytest.approx(acc["dap_total_gym2"])
        assert plane.dose_rp_total_gy == pytest.approx(acc["dose_rp_total_gy"])
        assert plane.fluoro_dap_total_gym2 == pytest.approx(acc["fluoro_dap_total_gym2"])
        assert plane.fluoro_dose_rp_total_gy == pytest.approx(acc["fluoro_dose_rp_total_gy"])
        assert plane.acquisition_dap_total_gym2 == pytest.approx(acc["acquisition_dap_total_gym2"])
        assert plane.acquisition_dose_rp_total_gy == pytest.approx(
            acc["acquisition_dose_rp_total_gy"]
        )
        assert plane.fluoro_time_total_s == pytest.approx(acc["total_fluoro_time_s"])
        assert plane.acquisition_time_total_s == pytest.approx(acc["total_acquisition_time_s"])
        for event, expected in zip(report.events, case["events"], strict=True):
            assert event.dap_gym2 == pytest.approx(expected["dap_gym2"])
            assert event.dose_rp_gy == pytest.approx(expected["dose_rp_gy"])
        assert any("non-template unit dGy.cm2 converted" in w for w in report.warnings)
        assert any("non-template unit mGy converted" in w for w in report.warnings)

    def test_c03_empty_measured_value_gives_null_and_keeps_events(self) -> None:
        """C03: empty DAP/Dose (RP) values are None (not 0) and both events are kept."""
        case = load_case("C03-dx-rdsr-empty-dap")["expected"]
        report = inspect_shared(CASES_DIR / "C03-dx-rdsr-empty-dap.dcm")
        assert report.study.modality == case["modality"] == "DX"
        assert len(report.events) == case["n_events"]
        plane = report.accumulated.planes[0]
        assert plane.dap_total_gym2 is None
        assert plane.dose_rp_total_gy is None
        assert plane.acquisition_time_total_s == pytest.approx(
            case["accumulated"]["total_acquisition_time_s"]
        )
        assert plane.total_number_of_radiographic_frames == 2
        for event, expected in zip(report.events, case["events"], strict=True):
            assert event.dap_gym2 is None
            assert event.dose_rp_gy is None
            assert event.kvp_kv == pytest.approx(expected["kvp"])
            assert event.tube_current_ma == pytest.approx(expected["tube_current_ma"])
            assert event.exposure_time_s == pytest.approx(expected["exposure_time_s"])
            assert event.modality == "DX"

    def test_c07_no_template_no_intent_read_with_warning(self) -> None:
        """C07: no Content Template Sequence and no Has Intent: read as TID 10001, warned."""
        case = load_case("C07-rf-no-template-no-intent")["expected"]
        report = inspect_shared(CASES_DIR / "C07-rf-no-template-no-intent.dcm")
        assert str(report.kind) == "rdsr-projection"
        assert report.study.modality == case["modality"]
        assert len(report.events) == case["n_events"]
        plane = report.accumulated.planes[0]
        assert plane.dap_total_gym2 == pytest.approx(case["accumulated"]["dap_total_gym2"])
        assert plane.dose_rp_total_gy == pytest.approx(case["accumulated"]["dose_rp_total_gy"])
        assert plane.fluoro_time_total_s == pytest.approx(
            case["accumulated"]["total_fluoro_time_s"]
        )
        for event, expected in zip(report.events, case["events"], strict=True):
            assert event.dap_gym2 == pytest.approx(expected["dap_gym2"])
            assert event.dose_rp_gy == pytest.approx(expected["dose_rp_gy"])
        assert any("no ContentTemplateSequence" in w for w in report.warnings)
        assert any("'Has Intent'" in w for w in report.warnings)

    def test_c09_filters_multiple_and_none(self) -> None:
        """C09: two filters, one, none (None) and 'No filter' ([]) per event."""
        case = load_case("C09-rf-filters-multiple-and-none")["expected"]
        report = inspect_shared(CASES_DIR / "C09-rf-filters-multiple-and-none.dcm")
        assert len(report.events) == case["n_events"]
        # the case names each material by its code value; Kerma keeps the Code Meaning:
        # the same code must give the same meaning, different codes different meanings
        meanings: dict[str, str | None] = {}
        for event, expected in zip(report.events, case["events"], strict=True):
            assert event.dap_gym2 == pytest.approx(expected["dap_gym2"])
            if expected["filters"] is None:
                assert event.xray_filters is None
                continue
            assert event.xray_filters is not None
            assert len(event.xray_filters) == len(expected["filters"])
            for got, want in zip(event.xray_filters, expected["filters"], strict=True):
                found = meanings.setdefault(want["material"], got.xray_filter_material)
                assert got.xray_filter_material == found
                assert got.xray_filter_thickness_min_mm == pytest.approx(want["thickness_min_mm"])
                assert got.xray_filter_thickness_max_mm == pytest.approx(want["thickness_max_mm"])
        assert len(set(meanings.values())) == len(meanings) == 2
        first = report.events[0]
        assert first.xray_filter_material == (
            "Copper or Copper compound, Aluminum or Aluminum compound"
        )
        assert first.xray_filter_thickness_min_mm is None  # two materials: see xray_filters
        assert report.events[1].xray_filter_thickness_min_mm == pytest.approx(0.3)
        assert report.events[3].xray_filter_material is None
        plane = report.accumulated.planes[0]
        assert plane.dap_total_gym2 == pytest.approx(case["accumulated"]["dap_total_gym2"])
        assert plane.dose_rp_total_gy == pytest.approx(case["accumulated"]["dose_rp_total_gy"])

    def test_c22_zero_events_zero_totals_not_null(self) -> None:
        """C22: no events and zero totals import as RF with totals 0.0, not None."""
        case = load_case("C22-rf-rdsr-zero-events-zero-dap")["expected"]
        report = inspect_shared(CASES_DIR / "C22-rf-rdsr-zero-events-zero-dap.dcm")
        assert report.study.modality == case["modality"]
        assert report.events == []
        assert report.accumulated.total_number_of_irradiation_events == 0
        plane = report.accumulated.planes[0]
        assert plane.dap_total_gym2 == 0.0
        assert plane.dose_rp_total_gy == 0.0
        assert plane.fluoro_time_total_s == 0.0


# --- units ---------------------------------------------------------------------------


class TestUnits:
    """Every value is converted by its item's own unit."""

    @pytest.mark.parametrize(
        ("unit", "value", "expected_gym2", "warns"),
        [
            ("Gy.m2", "2.5e-5", 2.5e-5, False),  # the template unit
            ("dGy.cm2", "2.5", 2.5e-5, True),  # Canon (C01): 1 dGy.cm2 = 1e-5 Gy.m2
            ("uGy.m2", "25", 2.5e-5, True),  # 1 uGy.m2 = 1e-6 Gy.m2
        ],
        ids=["Gy.m2", "dGy.cm2", "uGy.m2"],
    )
    def test_dap_unit_converted_to_gym2(
        self, unit: str, value: str, expected_gym2: float, warns: bool
    ) -> None:
        """Event DAP in Gy.m2, dGy.cm2 or uGy.m2 is stored in Gy.m2."""
        event = event_items(codes.DCM.StationaryAcquisition, dap=None)
        event.ContentSequence.append(num(codes.DCM.DoseAreaProduct, value, unit))
        report = build_report(event)
        assert report.events[0].dap_gym2 == pytest.approx(expected_gym2)
        assert any(f"non-template unit {unit}" in w for w in report.warnings) is warns

    def test_ms_times_and_uas_exposure_converted(self) -> None:
        """Exposure Time and Pulse Width in ms give s; Exposure in uA.s gives mAs."""
        report = build_report(
            event_items(
                codes.DCM.StationaryAcquisition,
                num(codes.DCM.ExposureTime_Retired, "12", "ms"),  # DCM 113735
                num(codes.DCM.PulseWidth, "6.5", "ms"),
                num(codes.DCM.Exposure, "2500", "uA.s"),
                num(codes.DCM.IrradiationDuration, "0.4", "s"),
            )
        )
        event = report.events[0]
        assert event.exposure_time_s == pytest.approx(0.012)
        assert event.pulse_width_s == pytest.approx(0.0065)
        assert event.exposure_mas == pytest.approx(2.5)
        assert event.irradiation_duration_s == pytest.approx(0.4)
        assert report.warnings == []

    @pytest.mark.parametrize(
        "concept",
        [codes.DCM.ExposureTime, codes.DCM.ExposureTime_Retired],
        ids=["DCM-113824", "retired-DCM-113735"],
    )
    def test_exposure_time_current_or_retired_concept_read(self, concept: Code) -> None:
        """'Exposure Time' is read under DCM 113824 and under the retired DCM 113735."""
        event = event_items(codes.DCM.StationaryAcquisition, num(concept, "609.5", "ms"))
        report = build_report(event)
        assert report.events[0].exposure_time_s == pytest.approx(0.6095)
        assert report.warnings == []

    def test_dose_rp_in_mgy_converted_to_gy(self) -> None:
        """Dose (RP) in mGy (Canon Ultimaxi) is stored in Gy with a warning."""
        report = build_report(
            event_items(codes.DCM.StationaryAcquisition, num(codes.DCM.DoseRP, "0.41", "mGy"))
        )
        assert report.events[0].dose_rp_gy == pytest.approx(4.1e-4)
        assert any("non-template unit mGy" in w for w in report.warnings)


# --- per-pulse values, missing items, template identification --------------------------


class TestReading:
    """Tolerant reading: per-pulse values, missing items and odd containers."""

    def test_per_pulse_kvp_gives_mean_of_nonzero(self) -> None:
        """Repeated KVP items (one per pulse) give the mean of the non-zero values."""
        report = build_report(
            event_items(
                codes.DCM.RotationalAcquisition,
                num(codes.DCM.KVP, "0", "kV"),
                num(codes.DCM.KVP, "70", "kV"),
                num(codes.DCM.KVP, "80", "kV"),
                num(codes.DCM.XRayTubeCurrent, "2", "mA"),
                num(codes.DCM.XRayTubeCurrent, "30", "mA"),
            )
        )
        event = report.events[0]
        assert event.kvp_kv == pytest.approx(75.0)
        assert event.tube_current_ma == pytest.approx(16.0)
        assert not any("KVP" in w for w in report.warnings)

    def test_multivalued_kvp_gives_mean_of_nonzero(self) -> None:
        """One KVP item whose Numeric Value holds one value per pulse gives their mean."""
        kvp = num(codes.DCM.KVP, "70", "kV")
        kvp.MeasuredValueSequence[0].NumericValue = ["0", "70", "80"]
        report = build_report(event_items(codes.DCM.StationaryAcquisition, kvp))
        assert report.events[0].kvp_kv == pytest.approx(75.0)
        assert any("'KVP' (DCM 113733): multi-valued" in w for w in report.warnings)

    def test_all_zero_per_pulse_values_give_zero(self) -> None:
        """Per-pulse values that are all zero give 0.0, not None."""
        report = build_report(
            event_items(
                codes.DCM.StationaryAcquisition,
                num(codes.DCM.KVP, "0", "kV"),
                num(codes.DCM.KVP, "0", "kV"),
            )
        )
        assert report.events[0].kvp_kv == 0.0

    def test_repeated_singular_item_first_used_with_warning(self) -> None:
        """A repeated DAP (singular in TID 10003) gives the first value and a warning."""
        report = build_report(
            event_items(
                codes.DCM.StationaryAcquisition, num(codes.DCM.DoseAreaProduct, "9", "Gy.m2")
            )
        )
        assert report.events[0].dap_gym2 == pytest.approx(1e-5)
        assert any("'Dose Area Product' (DCM 122130) appears 2 times" in w for w in report.warnings)

    def test_event_without_dap_read_with_null(self) -> None:
        """An event whose 'Dose Area Product' item is removed is kept with dap None."""
        report = build_report(
            event_items(codes.DCM.StationaryAcquisition, num(codes.DCM.KVP, "70", "kV"), dap=None),
            event_items(codes.DCM.StationaryAcquisition),
        )
        assert len(report.events) == 2
        assert report.events[0].dap_gym2 is None
        assert report.events[0].kvp_kv == pytest.approx(70.0)
        assert report.events[1].dap_gym2 == pytest.approx(1e-5)

    def test_missing_template_identifier_warns(self) -> None:
        """No Content Template Sequence: read as TID 10001 with a warning."""
        report = build_report(event_items(), template=False)
        assert len(report.events) == 1
        assert any("no ContentTemplateSequence" in w for w in report.warnings)

    def test_laterality_under_target_region_read(self) -> None:
        """Laterality given as a modifier of Target Region (TID 10003) is read."""
        laterality = coded(codes.SCT.Laterality, codes.SCT.Right, "HAS CONCEPT MOD")
        report = build_report(
            event_items(
                codes.DCM.StationaryAcquisition,
                coded(codes.DCM.TargetRegion, codes.SCT.Breast, kids=[laterality]),
                num(codes.DCM.AverageGlandularDose, "1.2", "mGy"),
            ),
            procedure=codes.SCT.Mammography,
        )
        event = report.events[0]
        assert event.laterality == "Right"
        assert event.target_region == "Breast"
        assert event.agd_mgy == pytest.approx(1.2)
        assert event.modality == "MG"

    def test_accumulated_agd_by_laterality(self) -> None:
        """TID 10005 accumulated AGD is split by its Laterality modifier."""

        def agd(value: str, side: Code) -> Dataset:
            item = num(codes.DCM.AccumulatedAverageGlandularDose, value, "mGy")
            item.ContentSequence = [coded(codes.SCT.Laterality, side, "HAS CONCEPT MOD")]
            return item

        report = build_report(
            accumulated(agd("4.4", codes.SCT.RightBreast), agd("0", codes.SCT.LeftBreast)),
            procedure=codes.SCT.Mammography,
        )
        assert report.study.modality == "MG"
        assert report.accumulated.agd_total_right_mgy == pytest.approx(4.4)
        assert report.accumulated.agd_total_left_mgy == 0.0
        assert report.accumulated.agd_total_both_mgy is None

    def test_mean_of_nonzero_ignores_none(self) -> None:
        """mean_of_nonzero skips None and zeros, and gives None for no values."""
        assert mean_of_nonzero([None, 0.0, 2.0, 4.0]) == pytest.approx(3.0)
        assert mean_of_nonzero([None]) is None
        assert mean_of_nonzero([0.0, 0.0]) == 0.0

    def test_content_index_maps_srt_to_sct(self) -> None:
        """An item coded in SNOMED-RT is found under its SNOMED CT concept."""
        srt = Code("T-D0005", "SRT", "Anatomical structure")
        assert srt == codes.SCT.AnatomicalStructure
        assert concept_key(srt) == concept_key(codes.SCT.AnatomicalStructure)
        index = ContentIndex([coded(srt, codes.SCT.Breast)])
        assert index.first(codes.SCT.AnatomicalStructure) is not None


# --- modality rule ---------------------------------------------------------------------


class TestModality:
    """The modality the dose belongs to is decided from the report content."""

    def test_dual_room_radiography_study_is_dx(self) -> None:
        """Stationary acquisitions with zero fluoroscopy totals (Fluorospot DX) are DX."""
        report = build_report(
            accumulated(
                num(codes.DCM.DoseAreaProductTotal, "2e-6", "Gy.m2"), *zero_fluoro_totals()
            ),
            event_items(codes.DCM.StationaryAcquisition),
        )
        assert report.study.modality == "DX"
        assert [e.modality for e in report.events] == ["DX"]

    def test_dual_room_fluoroscopy_study_is_rf_for_every_event(self) -> None:
        """A study with fluoroscopy is RF, its spot acquisitions included."""
        report = build_report(
            accumulated(
                num(codes.DCM.FluoroDoseAreaProductTotal, "4e-7", "Gy.m2"),
                num(codes.DCM.TotalFluoroTime, "4", "s"),
            ),
            event_items(codes.SCT.Fluoroscopy),
            event_items(codes.DCM.StationaryAcquisition),
        )
        assert report.study.modality == "RF"
        assert [e.modality for e in report.events] == ["RF", "RF"]

    def test_integrated_device_with_fluoroscopy_is_rf(self) -> None:
        """Fluoroscopy events outrank an 'Integrated' Acquisition Device Type (Azurion)."""
        report = build_report(
            event_items(codes.SCT.Fluoroscopy),
            device_type=codes.DCM.IntegratedProjectionRadiographySystem,
        )
        assert report.study.modality == "RF"

    def test_fluoroscopy_device_without_events_is_rf(self) -> None:
        """A fluoroscopy-guided system that reported no X-rays (C22) is RF."""
        report = build_report(
            accumulated(*zero_fluoro_totals()),
            device_type=codes.DCM.FluoroscopyGuidedProjectionRadiographySystem,
        )
        assert report.study.modality == "RF"
        assert report.events == []

    def test_biplane_system_is_xa(self) -> None:
        """Fluoroscopy on a biplane (Plane B) system is XA."""
        report = build_report(
            accumulated(num(codes.DCM.TotalFluoroTime, "10", "s"), plane=codes.DCM.PlaneA),
            accumulated(num(codes.DCM.TotalFluoroTime, "5", "s"), plane=codes.DCM.PlaneB),
            event_items(codes.SCT.Fluoroscopy),
        )
        assert report.study.modality == "XA"
        assert [p.acquisition_plane for p in report.accumulated.planes] == ["Plane A", "Plane B"]
        assert report.events[0].modality == "XA"

    def test_cassette_based_without_events_is_dx(self) -> None:
        """A cassette-based system is DX even with no events."""
        modality = get_study_modality(
            procedure=codes.DCM.ProjectionXRay,
            device_type=codes.DCM.CassetteBasedProjectionRadiographySystem,
            event_types=[],
            planes=[AccumulatedPlane()],
        )
        assert modality == "DX"

    @pytest.mark.parametrize(
        ("plane", "header", "expected"),
        [
            (AccumulatedPlane(fluoro_time_total_s=0.0), None, "RF"),  # TID 10004 written
            (AccumulatedPlane(fluoro_time_total_s=0.0), "XA", "XA"),
            (AccumulatedPlane(dap_total_gym2=0.0), "CR", "CR"),
            (AccumulatedPlane(dap_total_gym2=0.0), None, "DX"),
        ],
        ids=["fluoro-totals", "fluoro-totals-header-xa", "header-cr", "nothing"],
    )
    def test_no_events_no_device_type_by_totals_then_header(
        self, plane: AccumulatedPlane, header: str | None, expected: str
    ) -> None:
        """Without events or device type: fluoroscopy totals, then the header decide."""
        modality = get_study_modality(
            procedure=codes.DCM.ProjectionXRay,
            device_type=None,
            event_types=[],
            planes=[plane],
            header_modality=header,
        )
        assert modality == expected

    def test_fluoroscopy_event_in_dx_study_is_rf(self) -> None:
        """get_event_modality keeps a fluoroscopy event RF whatever the study says."""
        assert get_event_modality(codes.SCT.Fluoroscopy, "DX") == "RF"
        assert get_event_modality(codes.SCT.Fluoroscopy, "XA") == "XA"
        assert get_event_modality(codes.DCM.StationaryAcquisition, "RF") == "RF"
        assert get_event_modality(None, "MG") == "MG"


# --- real vendor files ---------------------------------------------------------------


@pytest.mark.usefixtures("shared_dir")
class TestVendorFiles:
    """Vendor RDSRs of ../shared/dicom."""

    def test_dual_room_dx_and_rf_reports(self) -> None:
        """Siemens Fluorospot: the radiography study is DX, the fluoroscopy study RF."""
        dx = inspect_shared(DICOM_DIR / "Dual-RDSR-DX.dcm")
        rf = inspect_shared(DICOM_DIR / "Dual-RDSR-RF.dcm")
        assert dx.study.modality == "DX"
        assert [e.modality for e in dx.events] == ["DX"]
        assert rf.study.modality == "RF"
        assert [e.modality for e in rf.events] == ["RF"] * 4
        assert rf.events[0].exposure_mas == pytest.approx(0.1)  # 100 uAs
        assert rf.events[1].xray_filters == []  # 'No Filter'

    def test_many_events_read_in_order(self) -> None:
        """RF-Pat-Orientation-Modifier-Missing: 316 events, in document order."""
        report = inspect_shared(DICOM_DIR / "RF-Pat-Orientation-Modifier-Missing.dcm")
        assert len(report.events) == 316
        assert report.accumulated.total_number_of_irradiation_events == 316
        first = report.events[0]
        assert first.irradiation_event_type == "Fluoroscopy"
        assert first.patient_orientation == "recumbent"
        assert first.patient_orientation_modifier == "supine"
        assert first.patient_table_relationship == "headfirst"
        assert first.dap_gym2 == pytest.approx(4.1e-6)

    def test_mammography_tomosynthesis_per_pulse(self) -> None:
        """Giotto DBT: 11 per-pulse kVp values give one kVp; laterality under Target Region."""
        report = inspect_shared(DICOM_DIR / "MG-RDSR-Giotto-DBT.dcm")
        assert report.study.modality == "MG"
        event = report.events[0]
        assert event.kvp_kv == pytest.approx(27.0)
        assert event.laterality == "Right"
        assert event.anode_target_material == "Tungsten or Tungsten compound"
        assert event.xray_filter_thickness_min_mm == pytest.approx(0.05)
        assert report.accumulated.agd_total_left_mgy == pytest.approx(4.842)

    def test_siemens_radiation_summary_read_as_projection(self) -> None:
        """Siemens ARCADIS 'Radiation Summary Report': RF totals, no events."""
        report = inspect_shared(DICOM_DIR / "RF-ESR-Siemens-Varic.dcm")
        assert str(report.kind) == "rdsr-projection"
        assert report.study.modality == "RF"
        assert report.events == []
        plane = report.accumulated.planes[0]
        assert plane.dap_total_gym2 == pytest.approx(2.359e-5)  # 0.2359 Gy.cm^2
        assert plane.fluoro_time_total_s == pytest.approx(34.427)
        assert plane.dose_rp_total_gy is None  # empty Measured Value Sequence


@pytest.mark.usefixtures("shared_dir")
class TestOracle:
    """The oracle of ../shared/tools agrees with kerma on every projection file."""

    def test_projection_files_all_fields_match(self) -> None:
        """oracle_check.py reports 100% of fields matched for the projection RDSRs."""
        proc = subprocess.run(
            [
                sys.executable,
                str(ORACLE),
                "--kerma",
                f"{sys.executable} -m kerma.cli.main",
                "--only",
                PROJECTION_GLOBS,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "100.0%" in last

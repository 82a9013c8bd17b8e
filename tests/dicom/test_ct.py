"""Tests of kerma.dicom.ct: TID 10011 CT dose reports, real vendor files and built objects.

Real files are read from ``../shared`` (never copied into the repository); edge cases
are built here with pydicom, written to a BytesIO and read back before extraction.
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import Tag
from pydicom.uid import (
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ExplicitVRLittleEndian,
    XRayRadiationDoseSRStorage,
    generate_uid,
)

from kerma import units
from kerma.dicom.extract import extract_dataset, inspect_path
from kerma.records import DoseReport, IrradiationEvent, Rejection, ReportKind
from tests.conftest import CASES_DIR, DICOM_DIR, SHARED, load_case

ORACLE = SHARED / "tools" / "oracle_check.py"
ORACLE_GLOBS = "CT-RDSR-*,CT-ESR-*,NM-CT-*,NM-RRDSR-*"
NUMERIC_VALUE = Tag("NumericValue")  # (0040,A30A)


# --- builders of small SR objects (PS3.3 C.17.3 content items) -------------------------


def code_item(code: Code) -> Dataset:
    """Return a code sequence item for ``code``."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def unit_code(unit: str) -> Code:
    """Return the UCUM unit code of a unit string (units are not concept codes)."""
    return Code(unit, "UCUM", unit)


def content_item(concept: Code, value_type: str, relationship: str = "CONTAINS") -> Dataset:
    """Return an empty content item of ``value_type`` named ``concept``."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [code_item(concept)]
    return item


def num(concept: Code, value: str | None, unit: str | None = units.UCUM_MGY) -> Dataset:
    """Return a NUM item; ``value`` None gives an empty Measured Value Sequence."""
    item = content_item(concept, "NUM")
    mv = Dataset()
    if value is not None:
        mv.NumericValue = value
    if unit is not None:
        mv.MeasurementUnitsCodeSequence = [code_item(unit_code(unit))]
    item.MeasuredValueSequence = [mv] if value is not None else []
    return item


def code(concept: Code, value: Code, relationship: str = "CONTAINS") -> Dataset:
    """Return a CODE item."""
    item = content_item(concept, "CODE", relationship)
    item.ConceptCodeSequence = [code_item(value)]
    return item


def text(concept: Code, value: str) -> Dataset:
    """Return a TEXT item."""
    item = content_item(concept, "TEXT")
    item.TextValue = value
    return item


def uidref(concept: Code, value: str) -> Dataset:
    """Return a UIDREF item."""
    item = content_item(concept, "UIDREF")
    item.UID = value
    return item


def datetime_item(concept: Code, value: str, relationship: str = "CONTAINS") -> Dataset:
    """Return a DATETIME item."""
    item = content_item(concept, "DATETIME", relationship)
    item.DateTime = value
    return item


def container(concept: Code, *kids: Dataset) -> Dataset:
    """Return a CONTAINER item holding ``kids``."""
    item = content_item(concept, "CONTAINER")
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = list(kids)
    return item


def xray_source(ident: str = "A", kvp: str = "120", ma: str = "200") -> Dataset:
    """Return a 'CT X-Ray Source Parameters' container (TID 10014)."""
    return container(
        codes.DCM.CTXRaySourceParameters,
        text(codes.DCM.IdentificationOfTheXRaySource, ident),
        num(codes.DCM.KVP, kvp, units.UCUM_KV),
        num(codes.DCM.MaximumXRayTubeCurrent, "250", units.UCUM_MA),
        num(codes.DCM.XRayTubeCurrent, ma, units.UCUM_MA),
        num(codes.DCM.ExposureTimePerRotation, "0.5", units.UCUM_S),
    )


def ct_dose(ctdivol: str = "11.2", dlp: str = "412.0") -> Dataset:
    """Return a 'CT Dose' container with Mean CTDIvol, phantom and DLP."""
    return container(
        codes.DCM.CTDose,
        num(codes.DCM.MeanCtdivol, ctdivol, units.UCUM_MGY),
        code(codes.DCM.CtdiwPhantomType, codes.DCM.IECBodyDosimetryPhantom),
        num(codes.DCM.DLP, dlp, units.UCUM_MGYCM),
    )


def acquisition(
    *,
    acquisition_type: Code = codes.SCT.SpiralAcquisition,
    region: Code = codes.SCT.Chest,
    dose: Dataset | None = None,
    sources: tuple[Dataset, ...] | None = None,
    n_sources: str = "1",
    extra: tuple[Dataset, ...] = (),
) -> Dataset:
    """Return a 'CT Acquisition' container (TID 10013) of a spiral chest scan."""
    parameters = container(
        codes.DCM.CTAcquisitionParameters,
        num(codes.DCM.ExposureTime, "5.0", units.UCUM_S),
        num(codes.DCM.ScanningLength, "360.0", units.UCUM_MM),
        num(codes.DCM.NominalSingleCollimationWidth, "0.6", units.UCUM_MM),
        num(codes.DCM.NominalTotalCollimationWidth, "38.4", units.UCUM_MM),
        num(codes.DCM.PitchFactor, "1.0", "{ratio}"),
        num(codes.DCM.NumberOfXRaySources, n_sources, "{X-Ray sources}"),
        *(sources if sources is not None else (xray_source(),)),
    )
    kids = [
        text(codes.DCM.AcquisitionProtocol, "Chest routine"),
        code(codes.DCM.TargetRegion, region),
        code(codes.DCM.CTAcquisitionType, acquisition_type),
        uidref(codes.DCM.IrradiationEventUID, generate_uid()),
        parameters,
    ]
    if dose is not None:
        kids.append(dose)
    kids.extend(extra)
    return container(codes.DCM.CTAcquisition, *kids)


def ct_report(
    *acquisitions: Dataset,
    dlp_total: str = "412.0",
    n_events: str | None = None,
    procedure: Code | None = codes.SCT.ComputedTomography,
    template: bool = True,
    sop_class: str = XRayRadiationDoseSRStorage,
    root_items: tuple[Dataset, ...] = (),
) -> Dataset:
    """Return a CT RDSR (TID 10011) holding ``acquisitions``, written and read back."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.StudyDate = "20240115"
    ds.Manufacturer = "Synthetic"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = [code_item(codes.DCM.XRayRadiationDoseReport)]
    if template:
        tmpl = Dataset()
        tmpl.MappingResource = "DCMR"
        tmpl.TemplateIdentifier = "10011"
        ds.ContentTemplateSequence = [tmpl]
    kids = []
    if procedure is not None:
        kids.append(code(codes.DCM.ProcedureReported, procedure, "HAS CONCEPT MOD"))
    kids.extend(root_items)
    kids.append(
        container(
            codes.DCM.CTAccumulatedDoseData,
            num(
                codes.DCM.TotalNumberOfIrradiationEvents,
                n_events or str(len(acquisitions)),
                "{events}",
            ),
            num(codes.DCM.CTDoseLengthProductTotal, dlp_total, units.UCUM_MGYCM),
        )
    )
    kids.extend(acquisitions)
    ds.ContentSequence = kids
    return round_trip(ds)


def round_trip(ds: Dataset) -> Dataset:
    """Write ``ds`` as a Part 10 file to a BytesIO and read it back."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def read(ds: Dataset) -> DoseReport:
    """Extract ``ds`` and check it was read as a CT dose report."""
    report = extract_dataset(ds)
    assert report.kind is ReportKind.RDSR_CT
    return report


def read_file(path: Path) -> DoseReport:
    """Inspect a shared file and check it was read (not rejected)."""
    result = inspect_path(path)
    assert isinstance(result, DoseReport), getattr(result, "reason", "")
    return result


def ct_values(event: IrradiationEvent) -> tuple[float | None, float | None]:
    """Return (CTDIvol mGy, DLP mGy·cm) of an event."""
    return event.ctdivol_mgy, event.dlp_mgycm


# --- real vendor files -----------------------------------------------------------------


@pytest.mark.usefixtures("shared_dir")
class TestVendorFiles:
    """CT RDSRs from ../shared/dicom, beyond what the oracle checks."""

    def test_dual_source_flash_keeps_both_sources(self) -> None:
        """Siemens Flash dual-source events keep source A and B with their own kVp and mA."""
        report = read_file(DICOM_DIR / "CT-RDSR-Siemens_Flash-QA-DS.dcm")
        first = report.events[0]
        assert first.number_of_xray_sources == 2
        assert [(s.identification, s.kvp_kv, s.tube_current_ma) for s in first.xray_sources] == [
            ("A", 100.0, 399.0),
            ("B", 140.0, 308.0),
        ]
        assert first.xray_sources[1].exposure_time_per_rotation_s == pytest.approx(0.5)

    def test_utf8_protocol_under_latin1_label_repaired(self) -> None:
        """A protocol name stored as UTF-8 under ISO_IR 100 is decoded as UTF-8 with a warning."""
        report = read_file(DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm")
        assert report.events[0].acquisition_protocol == "testæøå"
        assert any("stored as UTF-8 under a Latin-1" in w for w in report.warnings)

    def test_dose_check_alert_value_read(self) -> None:
        """Toshiba TID 10015 'CTDIvol Alert Value' (DCM 113904) is read in mGy."""
        report = read_file(DICOM_DIR / "CT-RDSR-Toshiba_DoseCheck.dcm")
        assert [e.ctdivol_alert_value_mgy for e in report.events] == [10.0, 10.0]
        assert report.events[0].ctdivol_notification_value_mgy is None

    def test_dose_check_notification_value_read(self) -> None:
        """Philips alert 1000 mGy and notification 60 mGy are read; DLP notification absent."""
        event = read_file(DICOM_DIR / "CT-RDSR-Philips_BigBore4DCT.dcm").events[0]
        assert event.ctdivol_alert_value_mgy == 1000.0
        assert event.ctdivol_notification_value_mgy == 60.0
        assert event.dlp_notification_value_mgycm is None

    def test_single_event_takes_report_start_time(self) -> None:
        """With one event, 'Start of X-Ray Irradiation' (DCM 113809) is its start."""
        event = read_file(DICOM_DIR / "CT-RDSR-Philips_BigBore4DCT.dcm").events[0]
        assert event.datetime_started == "2019-06-12T16:36:54.100"

    def test_several_events_no_guessed_start_time(self) -> None:
        """With several events and no event-level time, datetime_started stays null."""
        report = read_file(DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm")
        assert [e.datetime_started for e in report.events] == [None, None]

    def test_toshiba_multivalue_private_item_warns_only(self) -> None:
        """Toshiba's '10.50/ 15.00' private SD item gives a warning; the dose is unaffected."""
        report = read_file(DICOM_DIR / "CT-RDSR-Toshiba_MultiValSD.dcm")
        assert ct_values(report.events[2]) == (3.2, 136.9)
        assert any("invalid DS '10.50/ 15.00'" in w for w in report.warnings)

    def test_localizers_without_ct_dose_null(self) -> None:
        """Toshiba localizers have no CT Dose container: CTDIvol and DLP stay null."""
        report = read_file(DICOM_DIR / "CT-RDSR-Toshiba_MultiValSD.dcm")
        assert [ct_values(e) for e in report.events[:2]] == [(None, None), (None, None)]
        assert not any("'CT Dose'" in w for w in report.warnings)

    def test_enhanced_sr_ge_read_as_ct(self) -> None:
        """GE VCT sends TID 10011 in an Enhanced SR: read as rdsr-ct with 27 events."""
        report = read_file(DICOM_DIR / "CT-ESR-GE_VCT.dcm")
        assert report.kind is ReportKind.RDSR_CT
        assert report.sop_class_uid == EnhancedSRStorage
        assert len(report.events) == 27
        assert report.accumulated.ct_dlp_total_mgycm == pytest.approx(2002.39)

    def test_every_event_modality_ct(self) -> None:
        """Every CT irradiation event carries modality CT."""
        report = read_file(DICOM_DIR / "NM-CT-RDSR-Siemens.dcm")
        assert {e.modality for e in report.events} == {"CT"}
        assert report.study.modality == "CT"


# --- fault cases from ../shared/cases ----------------------------------------------------


@pytest.mark.usefixtures("shared_dir")
class TestCases:
    """The CT fault cases: each file read alone gives its expected values."""

    def test_c02_invalid_ds_private_item_import_with_warning(self) -> None:
        """C02: an invalid DS '10.00/ 12.50' in a private item warns; doses are read."""
        case = load_case("C02-ct-invalid-ds-slash-vhp")["expected"]
        report = read_file(CASES_DIR / "C02-ct-invalid-ds-slash-vhp.dcm")
        assert report.study.modality == case["modality"]
        assert len(report.events) == case["n_events"]
        assert report.accumulated.ct_dlp_total_mgycm == case["dlp_total_mgycm"]
        assert [ct_values(e) for e in report.events] == [
            (e["ctdivol_mgy"], e["dlp_mgycm"]) for e in case["events"]
        ]
        assert (
            "'Standard deviation of population' (DCM 121414): invalid DS '10.00/ 12.50' in "
            "(0040,A30A) NumericValue; item skipped (Kerma does not use it)"
        ) in report.warnings

    @pytest.mark.parametrize(
        ("suffix", "n_events", "dlp_total"),
        [("a", 1, 3.4), ("b", 2, 248.5), ("c", 3, 651.1)],
        ids=["a", "b", "c"],
    )
    def test_c04_cumulative_report_alone_read(
        self, suffix: str, n_events: int, dlp_total: float
    ) -> None:
        """C04: each cumulative Siemens report holds the events so far and its own total."""
        case = load_case("C04-ct-siemens-cumulative-rdsr")["expected"]
        expected = case["after_importing_all_in_any_order"]["events"][:n_events]
        report = read_file(CASES_DIR / f"C04-ct-siemens-cumulative-rdsr-{suffix}.dcm")
        assert report.accumulated.total_number_of_irradiation_events == n_events
        assert report.accumulated.ct_dlp_total_mgycm == pytest.approx(dlp_total)
        assert [ct_values(e) for e in report.events] == [
            (e["ctdivol_mgy"], e["dlp_mgycm"]) for e in expected
        ]
        assert report.warnings == []

    def test_c04_later_report_repeats_event_uids(self) -> None:
        """C04: report c repeats the Irradiation Event UIDs of a and b, in order."""
        uids = {
            s: [
                e.irradiation_event_uid
                for e in read_file(CASES_DIR / f"C04-ct-siemens-cumulative-rdsr-{s}.dcm").events
            ]
            for s in "abc"
        }
        assert uids["c"][:1] == uids["a"]
        assert uids["c"][:2] == uids["b"]
        assert len(set(uids["c"])) == 3

    @pytest.mark.parametrize(("suffix", "first"), [("a", 0), ("b", 2)], ids=["a", "b"])
    def test_c05_continued_report_alone_read(self, suffix: str, first: int) -> None:
        """C05: each part of a continued study holds its own two events and total."""
        case = load_case("C05-ct-siemens-continued-study")["expected"]
        report = read_file(CASES_DIR / f"C05-ct-siemens-continued-study-{suffix}.dcm")
        assert report.accumulated.ct_dlp_total_mgycm == pytest.approx(
            case["per_report_totals_mgycm"][suffix]
        )
        assert [ct_values(e) for e in report.events] == [
            (e["ctdivol_mgy"], e["dlp_mgycm"]) for e in case["events"][first : first + 2]
        ]

    def test_c05_parts_have_disjoint_event_uids(self) -> None:
        """C05: the two parts share the study but no Irradiation Event UID."""
        a, b = (read_file(CASES_DIR / f"C05-ct-siemens-continued-study-{s}.dcm") for s in "ab")
        assert a.study.study_instance_uid == b.study.study_instance_uid
        assert not {e.irradiation_event_uid for e in a.events} & {
            e.irradiation_event_uid for e in b.events
        }

    def test_c06_localizers_keep_null_dose_and_empty_items(self) -> None:
        """C06: localizers keep null CTDIvol/DLP; empty code and text items give null."""
        case = load_case("C06-ct-localizer-no-ctdivol")["expected"]
        report = read_file(CASES_DIR / "C06-ct-localizer-no-ctdivol.dcm")
        assert len(report.events) == case["n_events"]
        assert report.accumulated.ct_dlp_total_mgycm == case["dlp_total_mgycm"]
        assert [ct_values(e) for e in report.events] == [
            (e["ctdivol_mgy"], e["dlp_mgycm"]) for e in case["events"]
        ]
        assert [e.acquisition_protocol for e in report.events] == [
            e["protocol"] for e in case["events"]
        ]
        assert [e.target_region for e in report.events] == [None, "Chest", "Chest"]
        assert [e.ct_acquisition_type for e in report.events] == [
            "Constant Angle Acquisition",
            "Constant Angle Acquisition",
            "Spiral Acquisition",
        ]
        with_value = [e.ctdivol_mgy for e in report.events if e.ctdivol_mgy is not None]
        assert sum(with_value) / len(with_value) == case["mean_ctdivol_over_events_with_value_mgy"]
        assert (
            "'Target Region' (DCM 123014) has no Concept Code Sequence; value left empty"
            in report.warnings
        )
        assert any("'Acquisition Protocol' (DCM 125203)" in w for w in report.warnings)

    def test_c08_vendor_meanings_and_mgycm_read(self) -> None:
        """C08: concepts match by code despite vendor meanings; 'mGycm' is read as mGy.cm."""
        case = load_case("C08-ct-codemeaning-unit-variants")
        report = read_file(CASES_DIR / "C08-ct-codemeaning-unit-variants.dcm")
        expected = case["expected"]
        assert report.study.modality == expected["modality"]
        assert report.accumulated.ct_dlp_total_mgycm == expected["dlp_total_mgycm"]
        sources = [e.xray_sources[0] for e in report.events]
        assert [
            (e.ctdivol_mgy, e.dlp_mgycm, s.kvp_kv, s.tube_current_ma)
            for e, s in zip(report.events, sources, strict=True)
        ] == [
            (e["ctdivol_mgy"], e["dlp_mgycm"], e["kvp"], e["tube_current_ma"])
            for e in expected["events"]
        ]
        assert report.warnings == case["expected_warnings"]

    def test_c17a_enhanced_sr_dose_report_read(self) -> None:
        """C17 a: a TID 10011 report in an Enhanced SR is read as CT."""
        case = load_case("C17-esr-dose-vs-nondose")["expected"]["a"]
        report = read_file(CASES_DIR / "C17-esr-dose-vs-nondose-a.dcm")
        assert report.kind is ReportKind.RDSR_CT
        assert report.study.modality == case["modality"]
        assert len(report.events) == case["n_events"]
        assert report.accumulated.ct_dlp_total_mgycm == case["dlp_total_mgycm"]
        event = report.events[0]
        expected = case["events"][0]
        assert ct_values(event) == (expected["ctdivol_mgy"], expected["dlp_mgycm"])
        assert event.ctdiw_phantom_type == codes.DCM.IECHeadDosimetryPhantom.meaning

    def test_c17b_enhanced_sr_not_dose_rejected(self) -> None:
        """C17 b: an Enhanced SR diagnostic report is rejected as not a dose report."""
        result = inspect_path(CASES_DIR / "C17-esr-dose-vs-nondose-b.dcm")
        assert isinstance(result, Rejection)
        assert "is not a dose report" in result.reason
        assert "'Diagnostic Imaging Report' (LN 18748-4)" in result.reason

    def test_c18_dual_source_both_sources_and_mgycm(self) -> None:
        """C18: both sources A and B are kept; DLP in 'mGycm' is read as mGy.cm."""
        case = load_case("C18-ct-dual-source-qa-phantom")["expected"]
        report = read_file(CASES_DIR / "C18-ct-dual-source-qa-phantom.dcm")
        assert report.study.modality == case["modality"]
        assert len(report.events) == case["n_events"]
        assert report.accumulated.ct_dlp_total_mgycm == case["dlp_total_mgycm"]
        for event, expected in zip(report.events, case["events"], strict=True):
            assert ct_values(event) == (expected["ctdivol_mgy"], expected["dlp_mgycm"])
            sources = [(s.identification, s.kvp_kv, s.tube_current_ma) for s in event.xray_sources]
            assert sources == [
                (s["id"], s["kvp"], s["tube_current_ma"]) for s in expected["sources"]
            ]
        assert "unit code 'mGycm' is not UCUM; treated as mGy.cm" in report.warnings


# --- rules, on objects built here ------------------------------------------------------


class TestRules:
    """Reading rules of TID 10011/10012/10013/10014/10015 on small built objects."""

    def test_complete_event_all_fields_read(self) -> None:
        """A complete spiral event gives every CT field in canonical units."""
        report = read(ct_report(acquisition(dose=ct_dose())))
        event = report.events[0]
        assert report.accumulated.total_number_of_irradiation_events == 1
        assert report.accumulated.ct_dlp_total_mgycm == 412.0
        assert event.modality == "CT"
        assert event.acquisition_protocol == "Chest routine"
        assert event.target_region == codes.SCT.Chest.meaning
        assert event.ct_acquisition_type == codes.SCT.SpiralAcquisition.meaning
        assert (event.exposure_time_s, event.scanning_length_mm) == (5.0, 360.0)
        assert event.nominal_single_collimation_width_mm == 0.6
        assert event.nominal_total_collimation_width_mm == 38.4
        assert (event.pitch_factor, event.number_of_xray_sources) == (1.0, 1)
        assert ct_values(event) == (11.2, 412.0)
        assert event.ctdiw_phantom_type == codes.DCM.IECBodyDosimetryPhantom.meaning
        assert event.irradiation_event_uid is not None
        assert report.warnings == []

    def test_missing_unit_value_kept_with_warning(self) -> None:
        """A NUM without Measurement Units Code Sequence keeps its value and warns."""
        dose = container(
            codes.DCM.CTDose,
            num(codes.DCM.MeanCtdivol, "7.5", unit=None),
            code(codes.DCM.CtdiwPhantomType, codes.DCM.IECBodyDosimetryPhantom),
            num(codes.DCM.DLP, "300", units.UCUM_MGYCM),
        )
        report = read(ct_report(acquisition(dose=dose)))
        assert report.events[0].ctdivol_mgy == 7.5
        assert "'Mean CTDIvol' (DCM 113830): no measurement unit; assumed mGy" in report.warnings

    @pytest.mark.parametrize(
        ("unit", "expected"),
        [(units.UCUM_MGYCM, 412.0), ("mGycm", 412.0), ("Gy.cm", 412000.0)],
        ids=["ucum", "siemens-mGycm", "gy-cm"],
    )
    def test_dlp_unit_converted_to_mgycm(self, unit: str, expected: float) -> None:
        """DLP is converted from its coded unit to mGy·cm."""
        dose = container(
            codes.DCM.CTDose,
            num(codes.DCM.MeanCtdivol, "11.2", units.UCUM_MGY),
            code(codes.DCM.CtdiwPhantomType, codes.DCM.IECBodyDosimetryPhantom),
            num(codes.DCM.DLP, "412", unit),
        )
        report = read(ct_report(acquisition(dose=dose)))
        assert report.events[0].dlp_mgycm == pytest.approx(expected)

    def test_unknown_unit_value_dropped_with_warning(self) -> None:
        """A CTDIvol in a unit that is not a dose is dropped (null), never guessed."""
        dose = container(
            codes.DCM.CTDose,
            num(codes.DCM.MeanCtdivol, "11.2", units.UCUM_MM),
            code(codes.DCM.CtdiwPhantomType, codes.DCM.IECBodyDosimetryPhantom),
            num(codes.DCM.DLP, "412", units.UCUM_MGYCM),
        )
        report = read(ct_report(acquisition(dose=dose)))
        assert report.events[0].ctdivol_mgy is None
        assert (
            "'Mean CTDIvol' (DCM 113830): unit 'mm' cannot be converted to mGy; value dropped"
            in report.warnings
        )

    @pytest.mark.parametrize(
        ("procedure", "acquisition_type", "region"),
        [
            (
                codes.SCT.ComputedTomography,
                codes.SCT.SpiralAcquisition,
                codes.SCT.Chest,
            ),
            (
                Code("P5-08000", "SRT", "Computed Tomography X-Ray"),
                Code("P5-08001", "SRT", "Spiral Acquisition"),
                Code("T-D3000", "SRT", "Chest"),
            ),
        ],
        ids=["SCT", "SRT"],
    )
    def test_srt_and_sct_codes_read_alike(
        self, procedure: Code, acquisition_type: Code, region: Code
    ) -> None:
        """Legacy SNOMED-RT and SNOMED CT codes give the same CT reading (compared by code)."""
        acq = acquisition(acquisition_type=acquisition_type, region=region, dose=ct_dose())
        parameters = acq.ContentSequence[4].ContentSequence
        assert parameters[4].ConceptNameCodeSequence[0].CodeValue == codes.DCM.PitchFactor.value
        del parameters[4]  # 'Pitch Factor' is required for a spiral acquisition
        report = read(ct_report(acq, procedure=procedure))
        assert report.study.procedure_reported == procedure.meaning
        assert report.events[0].ct_acquisition_type == "Spiral Acquisition"
        assert report.events[0].target_region == "Chest"
        assert any("'Pitch Factor' (DCM 113828) missing" in w for w in report.warnings)

    def test_empty_measured_value_null_with_warning(self) -> None:
        """An empty Measured Value Sequence gives null, never 0, and names the concept."""
        dose = container(
            codes.DCM.CTDose,
            num(codes.DCM.MeanCtdivol, None),
            code(codes.DCM.CtdiwPhantomType, codes.DCM.IECBodyDosimetryPhantom),
            num(codes.DCM.DLP, "412", units.UCUM_MGYCM),
        )
        report = read(ct_report(acquisition(dose=dose)))
        assert ct_values(report.events[0]) == (None, 412.0)
        assert any(
            w.startswith("'Mean CTDIvol' (DCM 113830) of 'CT Dose'") and "no measured value" in w
            for w in report.warnings
        )

    def test_required_item_removed_null_with_warning(self) -> None:
        """A CT Dose without 'Mean CTDIvol' is read with null CTDIvol and a named warning."""
        dose = ct_dose()
        del dose.ContentSequence[0]
        report = read(ct_report(acquisition(dose=dose)))
        assert ct_values(report.events[0]) == (None, 412.0)
        assert (
            "'Mean CTDIvol' (DCM 113830) missing from 'CT Dose' (DCM 113829) of "
            "'CT Acquisition' (DCM 113819) #1 (TID 10013); left empty"
        ) in report.warnings

    def test_repeated_item_first_used_with_warning(self) -> None:
        """A singular item given twice: the first is used and a warning says so."""
        dose = ct_dose("11.2", "412")
        dose.ContentSequence.append(num(codes.DCM.MeanCtdivol, "99.9", units.UCUM_MGY))
        report = read(ct_report(acquisition(dose=dose)))
        assert report.events[0].ctdivol_mgy == 11.2
        assert any(
            w.startswith("'Mean CTDIvol' (DCM 113830) appears 2 times") for w in report.warnings
        )

    def test_missing_template_identifier_warns(self) -> None:
        """No Content Template Sequence: read as TID 10011 from the root, with a warning."""
        report = read(ct_report(acquisition(dose=ct_dose()), template=False))
        assert ct_values(report.events[0]) == (11.2, 412.0)
        assert any("no ContentTemplateSequence" in w for w in report.warnings)

    def test_no_template_no_procedure_dispatched_by_ct_acquisition(self) -> None:
        """Without template and 'Procedure reported', 'CT Acquisition' makes it a CT report."""
        report = read(ct_report(acquisition(dose=ct_dose()), template=False, procedure=None))
        assert report.study.modality == "CT"
        assert len(report.events) == 1

    @pytest.mark.parametrize(
        "sop_class", [EnhancedSRStorage, ComprehensiveSRStorage], ids=["enhanced", "comprehensive"]
    )
    def test_general_sr_sop_class_dispatched_by_content(self, sop_class: str) -> None:
        """A CT dose report in an Enhanced or Comprehensive SR is read by its root concept."""
        report = read(ct_report(acquisition(dose=ct_dose()), sop_class=sop_class))
        assert report.sop_class_uid == sop_class
        assert ct_values(report.events[0]) == (11.2, 412.0)

    def test_localizer_without_ct_dose_null_no_warning(self) -> None:
        """A Constant Angle Acquisition without CT Dose has null CTDIvol/DLP and no warning."""
        report = read(ct_report(acquisition(acquisition_type=codes.DCM.ConstantAngleAcquisition)))
        assert ct_values(report.events[0]) == (None, None)
        assert not any("'CT Dose'" in w for w in report.warnings)

    def test_spiral_without_ct_dose_warns(self) -> None:
        """A spiral event without CT Dose keeps null CTDIvol/DLP and warns."""
        report = read(ct_report(acquisition()))
        assert ct_values(report.events[0]) == (None, None)
        assert any(w.startswith("'CT Dose' (DCM 113829) missing from") for w in report.warnings)

    def test_dual_source_sources_kept_in_order(self) -> None:
        """Two 'CT X-Ray Source Parameters' containers give two sources, in order."""
        acq = acquisition(
            dose=ct_dose(),
            sources=(xray_source("A", "80", "300"), xray_source("B", "140", "150")),
            n_sources="2",
        )
        event = read(ct_report(acq)).events[0]
        assert [(s.identification, s.kvp_kv, s.tube_current_ma) for s in event.xray_sources] == [
            ("A", 80.0, 300.0),
            ("B", 140.0, 150.0),
        ]

    def test_source_count_mismatch_warns(self) -> None:
        """'Number of X-Ray Sources' 2 with one source container warns."""
        report = read(ct_report(acquisition(dose=ct_dose(), n_sources="2")))
        assert len(report.events[0].xray_sources) == 1
        assert any("'Number of X-Ray Sources' (DCM 113823)" in w for w in report.warnings)

    def test_event_count_mismatch_warns(self) -> None:
        """'Total Number of Irradiation Events' that differs from the containers warns."""
        report = read(ct_report(acquisition(dose=ct_dose()), n_events="3"))
        assert (
            "'Total Number of Irradiation Events' (DCM 113812) is 3 but the report holds 1 "
            "'CT Acquisition' (DCM 113819) containers"
        ) in report.warnings

    def test_events_in_document_order(self) -> None:
        """Events follow the order of the 'CT Acquisition' containers."""
        first = acquisition(dose=ct_dose("1.0", "10"))
        second = acquisition(dose=ct_dose("2.0", "20"))
        report = read(ct_report(first, second, dlp_total="30"))
        assert [ct_values(e) for e in report.events] == [(1.0, 10.0), (2.0, 20.0)]

    def test_dose_check_values_read(self) -> None:
        """TID 10015 alert and notification values are read in mGy and mGy·cm."""
        dose = ct_dose()
        dose.ContentSequence.extend(
            [
                container(
                    codes.DCM.DoseCheckAlertDetails,
                    num(codes.DCM.CtdivolAlertValue, "1000", units.UCUM_MGY),
                ),
                container(
                    codes.DCM.DoseCheckNotificationDetails,
                    num(codes.DCM.CtdivolNotificationValue, "80", units.UCUM_MGY),
                    num(codes.DCM.DLPNotificationValue, "1000", units.UCUM_MGYCM),
                ),
            ]
        )
        event = read(ct_report(acquisition(dose=dose))).events[0]
        assert event.ctdivol_alert_value_mgy == 1000.0
        assert event.ctdivol_notification_value_mgy == 80.0
        assert event.dlp_notification_value_mgycm == 1000.0

    def test_water_equivalent_diameter_read_in_mm(self) -> None:
        """'Water Equivalent Diameter' (DCM 113980) in cm is read in mm."""
        dose = ct_dose()
        dose.ContentSequence.append(num(codes.DCM.WaterEquivalentDiameter, "28.5", "cm"))
        event = read(ct_report(acquisition(dose=dose))).events[0]
        assert event.water_equivalent_diameter_mm == pytest.approx(285.0)

    def test_event_start_time_with_timezone_offset(self) -> None:
        """An event 'DateTime Started' takes (0008,0201) Timezone Offset From UTC."""
        acq = acquisition(
            dose=ct_dose(), extra=(datetime_item(codes.DCM.DatetimeStarted, "20240115093512"),)
        )
        ds = ct_report(acq, acquisition(dose=ct_dose()))
        ds.TimezoneOffsetFromUTC = "+0100"
        report = read(ds)
        assert report.events[0].datetime_started == "2024-01-15T09:35:12+01:00"
        assert report.events[1].datetime_started is None

    def test_invalid_ds_in_read_item_split_with_warning(self) -> None:
        """A Mean CTDIvol '10.00/ 12.50' (invalid DS) is read as the mean with a warning."""
        dose = ct_dose()
        measured = dose.ContentSequence[0].MeasuredValueSequence[0]
        value = b"10.00/ 12.50"  # as Toshiba vHP writes it; pydicom would refuse the str
        measured[NUMERIC_VALUE] = RawDataElement(
            Tag(NUMERIC_VALUE), "DS", len(value), value, 0, False, True
        )
        ds = ct_report(acquisition(dose=dose))
        report = read(ds)
        assert report.events[0].ctdivol_mgy == pytest.approx(11.25)
        assert any("'Mean CTDIvol' (DCM 113830): invalid DS" in w for w in report.warnings)


# --- the oracle --------------------------------------------------------------------------


@pytest.mark.usefixtures("shared_dir")
class TestOracle:
    """The shared oracle on the CT and radiopharmaceutical files."""

    @pytest.mark.slow
    def test_oracle_ct_and_radiopharmaceutical_all_fields_match(self) -> None:
        """``oracle_check.py --only CT-*,NM-CT-*,NM-RRDSR-*`` matches 100% of fields."""
        proc = subprocess.run(
            [
                sys.executable,
                str(ORACLE),
                "--kerma",
                f"{sys.executable} -m kerma.cli.main",
                "--only",
                ORACLE_GLOBS,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        last = proc.stdout.strip().splitlines()[-1]
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "(100.0%)" in last

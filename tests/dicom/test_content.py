"""Tests of kerma.dicom.content: lenient reading of SR NUM, CODE and TEXT items."""

from __future__ import annotations

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import Tag

from kerma.dicom import content
from kerma.records import DoseReport, ReportKind


def code_item(code: Code) -> Dataset:
    """Return a code sequence item for ``code``."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def num_item(concept: Code, value: str | None, unit: str | None) -> Dataset:
    """Return a NUM content item; ``value`` None gives an empty Measured Value Sequence."""
    item = Dataset()
    item.ValueType = "NUM"
    item.ConceptNameCodeSequence = [code_item(concept)]
    mv = Dataset()
    if value is not None:
        # a raw element, as read from a file: pydicom keeps an invalid DS as its string
        raw = value.encode("ascii")
        raw += b" " * (len(raw) % 2)
        tag = Tag("NumericValue")
        mv[tag] = RawDataElement(tag, "DS", len(raw), raw, 0, True, True)
    if unit is not None:
        mv.MeasurementUnitsCodeSequence = [code_item(Code(unit, "UCUM", unit))]
    item.MeasuredValueSequence = [mv] if value is not None else []
    return item


@pytest.fixture
def report() -> DoseReport:
    """An empty report to collect warnings."""
    return DoseReport(kind=ReportKind.RDSR_PROJECTION)


class TestNumericValue:
    """numeric_value() converts by the item's unit and never invents values."""

    def test_template_unit_no_warning(self, report: DoseReport) -> None:
        """DAP in Gy.m2 is read as is, without warning."""
        item = num_item(codes.DCM.DoseAreaProduct, "2.5e-5", "Gy.m2")
        assert content.numeric_value(item, "Gy.m2", report) == pytest.approx(2.5e-5)
        assert report.warnings == []

    def test_dgycm2_converted_with_warning(self, report: DoseReport) -> None:
        """DAP in dGy.cm2 (case C01) is converted ×1e-5 with a warning naming the unit."""
        item = num_item(codes.DCM.DoseAreaProduct, "4.0", "dGy.cm2")
        assert content.numeric_value(item, "Gy.m2", report) == pytest.approx(4e-5)
        assert any("dGy.cm2" in w for w in report.warnings)

    def test_empty_measured_value_gives_none(self, report: DoseReport) -> None:
        """An empty Measured Value Sequence (Type 2, case C03) is None, not 0."""
        item = num_item(codes.DCM.DoseAreaProduct, None, "Gy.m2")
        assert content.numeric_value(item, "Gy.m2", report) is None

    def test_non_ucum_spelling_warns(self, report: DoseReport) -> None:
        """'mGycm' (case C08) is read as mGy.cm with a warning that it is not UCUM."""
        item = num_item(codes.DCM.DLP, "188.7", "mGycm")
        assert content.numeric_value(item, "mGy.cm", report) == pytest.approx(188.7)
        assert report.warnings == ["unit code 'mGycm' is not UCUM; treated as mGy.cm"]

    def test_unknown_unit_dropped_with_warning(self, report: DoseReport) -> None:
        """A unit that cannot be converted drops the value (no silent default)."""
        item = num_item(codes.DCM.DLP, "100", "kV")
        assert content.numeric_value(item, "mGy.cm", report) is None
        assert "cannot be converted" in report.warnings[0]

    def test_slash_separated_ds_split_with_warning(self, report: DoseReport) -> None:
        """An invalid DS '10.00/ 12.50' (case C02) is split; the mean is used, with a warning."""
        item = num_item(codes.DCM.DLP, "10.00/ 12.50", "mGy.cm")
        assert content.numeric_value(item, "mGy.cm", report) == pytest.approx(11.25)
        assert "invalid DS" in report.warnings[0]


class TestCodesAndText:
    """Concept matching is by code, not by meaning; text is cleaned."""

    def test_srt_code_equals_sct_code(self) -> None:
        """Legacy SNOMED-RT P5-08000 equals SCT 77477000 (Computed tomography)."""
        assert Code("P5-08000", "SRT", "CT") == codes.SCT.ComputedTomography

    def test_find_ignores_code_meaning(self) -> None:
        """An item with a vendor Code Meaning ('Mean CTDIVol') is still found."""
        item = num_item(Code("113830", "DCM", "Mean CTDIVol"), "5.55", "mGy")
        assert content.find([item], codes.DCM.MeanCtdivol) is item

    def test_code_meaning_missing_sequence_warns(self, report: DoseReport) -> None:
        """A CODE item without Concept Code Sequence (case C06) gives None and a warning."""
        item = Dataset()
        item.ValueType = "CODE"
        item.ConceptNameCodeSequence = [code_item(codes.DCM.TargetRegion)]
        assert content.code_meaning(item, report) is None
        assert "Target Region" in report.warnings[0]

    def test_utf8_under_latin1_repaired(self, report: DoseReport) -> None:
        """Mojibake from UTF-8 bytes decoded as Latin-1 is repaired, with a warning."""
        assert content.clean_text("Thorax Routine Ã¼", report) == "Thorax Routine ü"
        assert "UTF-8" in report.warnings[0]

    def test_datetime_offset_kept(self) -> None:
        """A DT with a UTC offset becomes ISO 8601 with the offset."""
        assert (
            content.format_dicom_datetime("20240115081500.5+0100") == "2024-01-15T08:15:00.5+01:00"
        )
        assert content.format_dicom_datetime("20240115", "+0100") == "2024-01-15"

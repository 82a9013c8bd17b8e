"""Tests of kerma.dicom.radiopharmaceutical: TID 10021 radiopharmaceutical dose reports.

Real files are read from ``../shared``; edge cases are built with the SR builders of
``tests.dicom.test_ct``, written to a BytesIO and read back before extraction.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import RadiopharmaceuticalRadiationDoseSRStorage, generate_uid

from kerma import units
from kerma.dicom import codes as kerma_codes
from kerma.dicom.extract import extract_dataset, inspect_path
from kerma.records import DoseReport, ReportKind
from tests.conftest import CASES_DIR, DICOM_DIR, load_case
from tests.dicom.test_ct import (
    code,
    code_item,
    container,
    datetime_item,
    num,
    round_trip,
    uidref,
)

FDG = codes.SCT.FluorodeoxyglucoseF18
F18 = codes.SCT._18Fluorine


def administration(
    *,
    agent_concept: Code = codes.SCT.Radiopharmaceuticals,
    activity: tuple[str | None, str] | None = ("250", units.UCUM_MBQ),
    nested: bool = True,
    extra: tuple[Dataset, ...] = (),
) -> Dataset:
    """Return a 'Radiopharmaceutical Administration' container (TID 10022) of FDG."""
    agent = code(agent_concept, FDG)
    properties = [
        code(codes.SCT.RadioactiveIsotope, F18, "HAS PROPERTIES"),
        num(codes.SCT.HalfLifeOfRadiopharmaceutical, "6586.2", units.UCUM_S),
    ]
    for item in properties:
        item.RelationshipType = "HAS PROPERTIES" if nested else "CONTAINS"
    kids = [agent]
    if nested:
        agent.ContentSequence = properties
    else:
        kids.extend(properties)
    kids.append(uidref(codes.DCM.RadiopharmaceuticalAdministrationEventUID, generate_uid()))
    kids.append(datetime_item(codes.DCM.RadiopharmaceuticalStartDatetime, "20240115081500"))
    kids.append(datetime_item(codes.DCM.RadiopharmaceuticalStopDatetime, "20240115081530"))
    if activity is not None:
        kids.append(num(codes.DCM.AdministeredActivity, activity[0], activity[1]))
    kids.append(code(codes.SCT.RouteOfAdministration, codes.SCT.IntravenousRoute))
    kids.extend(extra)
    return container(codes.DCM.RadiopharmaceuticalAdministration, *kids)


def patient_characteristics(weight: str = "68", height: str = "1.68") -> Dataset:
    """Return a 'Patient Characteristics' container with weight (kg) and height (m)."""
    return container(
        codes.DCM.PatientCharacteristics,
        num(kerma_codes.PATIENT_WEIGHT, weight, "kg"),
        num(kerma_codes.PATIENT_HEIGHT, height, "m"),
    )


def rp_report(*items: Dataset, header_weight: str | None = None) -> Dataset:
    """Return a Radiopharmaceutical Radiation Dose SR (TID 10021), written and read back."""
    ds = Dataset()
    ds.SOPClassUID = RadiopharmaceuticalRadiationDoseSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.StudyDate = "20240115"
    if header_weight is not None:
        ds.PatientWeight = header_weight
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = [code_item(codes.DCM.RadiopharmaceuticalRadiationDoseReport)]
    tmpl = Dataset()
    tmpl.MappingResource = "DCMR"
    tmpl.TemplateIdentifier = "10021"
    ds.ContentTemplateSequence = [tmpl]
    ds.ContentSequence = list(items)
    return round_trip(ds)


def read(ds: Dataset) -> DoseReport:
    """Extract ``ds`` and check it was read as a radiopharmaceutical dose report."""
    report = extract_dataset(ds)
    assert report.kind is ReportKind.RDSR_RADIOPHARMACEUTICAL
    return report


@pytest.mark.usefixtures("shared_dir")
class TestVendorFiles:
    """Siemens Biograph Vision radiopharmaceutical RDSRs from ../shared/dicom."""

    @pytest.mark.parametrize(
        ("name", "activity_mbq"),
        [("NM-RRDSR-Siemens.dcm", 394.0), ("NM-RRDSR-Siemens-Extended.dcm", 250.0)],
        ids=["basic", "extended"],
    )
    def test_siemens_administration_read(self, name: str, activity_mbq: float) -> None:
        """The FDG administration of a Siemens report is read with activity in MBq."""
        report = inspect_path(DICOM_DIR / name)
        assert isinstance(report, DoseReport)
        assert report.study.modality == "NM"
        assert len(report.events) == 1
        event = report.events[0]
        assert event.modality == "NM"
        assert event.radiopharmaceutical_agent == "Fluorodeoxyglucose F^18^"
        assert event.radionuclide == "^18^Fluorine"
        assert event.radionuclide_half_life_s == 6586.2
        assert event.administered_activity_mbq == activity_mbq
        assert event.route_of_administration == "Intravenous route"
        assert report.warnings == []

    def test_extended_volume_times_uid_and_patient_read(self) -> None:
        """The extended report gives volume (cm3 as ml), ISO times, event UID, weight, height."""
        report = inspect_path(DICOM_DIR / "NM-RRDSR-Siemens-Extended.dcm")
        assert isinstance(report, DoseReport)
        event = report.events[0]
        assert event.radiopharmaceutical_volume_ml == 100.0
        assert event.radiopharmaceutical_start_datetime == "2022-02-23T08:29:18.000000"
        assert event.radiopharmaceutical_stop_datetime == "2022-02-23T08:29:18.000000"
        assert event.irradiation_event_uid == "1.3.12.2.1107.5.1.4.11090.20220223082918.0"
        assert (report.study.patient_weight_kg, report.study.patient_size_m) == (68.0, 1.68)
        assert report.study.procedure_reported == "PET study for localization of tumor"


@pytest.mark.usefixtures("shared_dir")
class TestCases:
    """Case C14 (extraction part): a radiopharmaceutical RDSR as a PET scanner sends it."""

    def test_c14_administration_values(self) -> None:
        """C14: one FDG administration with the expected activity, times and patient size."""
        case = load_case("C14-nm-radiopharm-rdsr-network")["expected"]
        expected = case["administrations"][0]
        report = inspect_path(CASES_DIR / "C14-nm-radiopharm-rdsr-network.dcm")
        assert isinstance(report, DoseReport)
        assert report.kind is ReportKind.RDSR_RADIOPHARMACEUTICAL
        assert report.sop_class_uid == case["network"]["sop_class_uid"]
        assert report.study.modality == case["modality"]
        assert len(report.events) == case["n_administrations"]
        event = report.events[0]
        assert event.radionuclide_half_life_s == expected["half_life_s"]
        assert event.administered_activity_mbq == expected["activity_mbq"]
        assert event.radiopharmaceutical_start_datetime == expected["start"]
        assert event.radiopharmaceutical_stop_datetime == expected["stop"]
        assert report.study.patient_weight_kg == case["patient_weight_kg"]
        assert report.study.patient_size_m == case["patient_height_m"]

    def test_c14_coded_values_are_the_expected_codes(self) -> None:
        """C14: agent, radionuclide and route meanings belong to the expected SCT codes."""
        case = load_case("C14-nm-radiopharm-rdsr-network")["expected"]["administrations"][0]
        expected = {
            Code(case["radiopharmaceutical"], "SCT", ""),
            Code(case["radionuclide"], "SCT", ""),
            Code(case["route"], "SCT", ""),
        }
        assert expected == {FDG, F18, codes.SCT.IntravenousRoute}
        event = inspect_path(CASES_DIR / "C14-nm-radiopharm-rdsr-network.dcm").events[0]
        assert event.radiopharmaceutical_agent == "Fluorodeoxyglucose F^18^"
        assert event.radionuclide == "^18^Fluorine"
        assert event.route_of_administration == "Intravenous route"


class TestRules:
    """Reading rules of TID 10021/10022 on small built objects."""

    def test_complete_administration_all_fields_read(self) -> None:
        """A complete administration gives every radiopharmaceutical field."""
        report = read(rp_report(administration(), patient_characteristics()))
        event = report.events[0]
        assert event.radiopharmaceutical_agent == FDG.meaning
        assert event.radionuclide == F18.meaning
        assert event.radionuclide_half_life_s == 6586.2
        assert event.administered_activity_mbq == 250.0
        assert event.radiopharmaceutical_start_datetime == "2024-01-15T08:15:00"
        assert event.radiopharmaceutical_stop_datetime == "2024-01-15T08:15:30"
        assert event.datetime_started == "2024-01-15T08:15:00"
        assert event.route_of_administration == codes.SCT.IntravenousRoute.meaning
        assert event.irradiation_event_uid is not None
        assert report.warnings == []

    def test_activity_in_bq_converted_to_mbq_with_warning(self) -> None:
        """Administered activity in Bq (TID 10022 gives MBq) is converted and warned."""
        report = read(rp_report(administration(activity=("370000000", "Bq"))))
        assert report.events[0].administered_activity_mbq == pytest.approx(370.0)
        assert any("non-template unit Bq" in w for w in report.warnings)

    def test_activity_missing_null_with_warning(self) -> None:
        """No 'Administered activity' gives null and a warning naming the concept."""
        report = read(rp_report(administration(activity=None)))
        assert report.events[0].administered_activity_mbq is None
        assert any(
            w.startswith("'Administered activity' (DCM 113507) missing") for w in report.warnings
        )

    def test_empty_activity_null(self) -> None:
        """An empty Measured Value Sequence gives null activity, never 0."""
        report = read(rp_report(administration(activity=(None, units.UCUM_MBQ))))
        assert report.events[0].administered_activity_mbq is None

    @pytest.mark.parametrize(
        "agent_concept",
        [codes.SCT.Radiopharmaceuticals, kerma_codes.RADIOPHARMACEUTICAL_AGENT_SRT],
        ids=["SCT-349358000", "SRT-F-61FDB"],
    )
    def test_srt_and_sct_agent_concept_read_alike(self, agent_concept: Code) -> None:
        """'Radiopharmaceutical agent' is found under its SCT and its legacy SRT code."""
        report = read(rp_report(administration(agent_concept=agent_concept)))
        assert report.events[0].radiopharmaceutical_agent == FDG.meaning
        assert report.events[0].radionuclide == F18.meaning

    def test_radionuclide_beside_agent_read(self) -> None:
        """Radionuclide and half-life given beside the agent (not nested) are read."""
        report = read(rp_report(administration(nested=False)))
        assert report.events[0].radionuclide == F18.meaning
        assert report.events[0].radionuclide_half_life_s == 6586.2

    def test_repeated_item_first_used_with_warning(self) -> None:
        """A second 'Administered activity' is ignored with a warning."""
        extra = (num(codes.DCM.AdministeredActivity, "999", units.UCUM_MBQ),)
        report = read(rp_report(administration(extra=extra)))
        assert report.events[0].administered_activity_mbq == 250.0
        assert any(
            w.startswith("'Administered activity' (DCM 113507) appears 2 times")
            for w in report.warnings
        )

    def test_two_administrations_two_events_in_order(self) -> None:
        """Each administration container is one event, in document order."""
        report = read(
            rp_report(
                administration(activity=("200", units.UCUM_MBQ)),
                administration(activity=("150", units.UCUM_MBQ)),
            )
        )
        assert [e.administered_activity_mbq for e in report.events] == [200.0, 150.0]

    def test_no_administration_warns(self) -> None:
        """A report without any administration has no events and a warning."""
        report = read(rp_report(patient_characteristics()))
        assert report.events == []
        assert any("'Radiopharmaceutical Administration'" in w for w in report.warnings)

    def test_patient_size_from_content_when_header_lacks_it(self) -> None:
        """Weight and height come from 'Patient Characteristics' when the header has none."""
        report = read(rp_report(administration(), patient_characteristics("80", "1.80")))
        assert (report.study.patient_weight_kg, report.study.patient_size_m) == (80.0, 1.8)

    def test_header_weight_wins_over_content(self) -> None:
        """(0010,1030) Patient's Weight in the header is kept over the SR content."""
        report = read(
            rp_report(administration(), patient_characteristics("80"), header_weight="75")
        )
        assert report.study.patient_weight_kg == 75.0

    def test_height_in_cm_dropped_with_warning(self) -> None:
        """A height in cm is not a height in m: dropped with a warning, never guessed."""
        characteristics = container(
            codes.DCM.PatientCharacteristics, num(kerma_codes.PATIENT_HEIGHT, "180", "cm")
        )
        report = read(rp_report(administration(), characteristics))
        assert report.study.patient_size_m is None
        assert any("'Patient Height' (LN 8302-2)" in w for w in report.warnings)

    def test_datetime_with_timezone_offset(self) -> None:
        """Start and stop take (0008,0201) Timezone Offset From UTC when the DT has none."""
        ds = rp_report(administration())
        ds.TimezoneOffsetFromUTC = "-0500"
        event = read(ds).events[0]
        assert event.radiopharmaceutical_start_datetime == "2024-01-15T08:15:00-05:00"
        assert event.radiopharmaceutical_stop_datetime == "2024-01-15T08:15:30-05:00"


class TestLocalCodes:
    """kerma.dicom.codes constants for TID 10021 are still missing from pydicom."""

    @pytest.mark.parametrize(
        "concept",
        [kerma_codes.PATIENT_WEIGHT, kerma_codes.PATIENT_HEIGHT],
        ids=["patient-weight", "patient-height"],
    )
    def test_loinc_code_absent_from_pydicom(self, concept: Code) -> None:
        """The LOINC code is not in pydicom's LN collection (else use pydicom's)."""
        keywords = codes.LN.dir()
        assert not [k for k in keywords if getattr(codes.LN, k) == concept]

    def test_srt_agent_not_mapped_by_pydicom(self) -> None:
        """pydicom does not map SRT F-61FDB to SCT 349358000 (else drop the constant)."""
        assert codes.SCT.Radiopharmaceuticals != kerma_codes.RADIOPHARMACEUTICAL_AGENT_SRT

    def test_used_pydicom_keywords_resolve(self) -> None:
        """Every pydicom keyword the TID 10021 reader uses still resolves."""
        used = [
            codes.SCT.Radiopharmaceuticals,
            codes.SCT.RadioactiveIsotope,
            codes.SCT.HalfLifeOfRadiopharmaceutical,
            codes.SCT.RouteOfAdministration,
            codes.SCT.AssociatedProcedure,
            codes.DCM.RadiopharmaceuticalAdministration,
            codes.DCM.RadiopharmaceuticalAdministrationEventUID,
            codes.DCM.AdministeredActivity,
            codes.DCM.RadiopharmaceuticalStartDatetime,
            codes.DCM.RadiopharmaceuticalStopDatetime,
            codes.DCM.RadiopharmaceuticalVolume,
            codes.DCM.PatientCharacteristics,
        ]
        assert all(c.scheme_designator in {"SCT", "DCM"} for c in used)

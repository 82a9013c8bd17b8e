"""Tests of the demo data generator (kerma.demo) and the ``kerma demo`` command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import XRayRadiationDoseSRStorage
from typer.testing import CliRunner

from kerma.cli.demo import _kerma_command
from kerma.demo import (
    DemoStudy,
    build_demo_dataset,
    generate_demo_files,
    iter_demo_studies,
    plan_demo_study,
)
from kerma.dicom import codes as kerma_codes
from kerma.dicom.content import children, concept_of, find_all
from kerma.dicom.extract import inspect_path
from kerma.errors import ConfigurationError
from kerma.records import DoseReport, ReportKind

END_DATE = dt.date(2026, 6, 30)
N_STUDIES = 12


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> list[DemoStudy]:
    """Twelve demo studies (seed 5) written once for the module."""
    out = tmp_path_factory.mktemp("demo")
    return list(iter_demo_studies(out, studies=N_STUDIES, seed=5, end_date=END_DATE))


def _first(studies: list[DemoStudy], modality: str) -> DemoStudy:
    """Return the first study of ``modality`` in the set."""
    return next(s for s in studies if s.modality == modality and not s.is_qa)


def _first_index(modality: str, *, seed: int, qa: bool = False) -> int:
    """Return the index of the first study of ``modality`` (QA or not) for ``seed``."""
    return next(i for i in range(1000) if plan_demo_study(i, seed=seed)[:2] == (modality, qa))


class TestGenerator:
    """The files written by :func:`kerma.demo.generator.iter_demo_studies`."""

    def test_same_seed_identical_files(self, tmp_path: Path) -> None:
        """The same seed and end date give byte-identical files."""
        first = generate_demo_files(tmp_path / "a", studies=4, seed=3, end_date=END_DATE)
        second = generate_demo_files(tmp_path / "b", studies=4, seed=3, end_date=END_DATE)
        assert [p.name for p in first] == [p.name for p in second]
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]

    def test_other_seed_new_uids(self) -> None:
        """Another seed gives other SOP Instance UIDs."""
        _, a = build_demo_dataset(0, seed=1, end_date=END_DATE)
        _, b = build_demo_dataset(0, seed=2, end_date=END_DATE)
        assert a.sop_instance_uid != b.sop_instance_uid
        assert a.study_instance_uid != b.study_instance_uid

    def test_iterating_writes_one_file_at_a_time(self, tmp_path: Path) -> None:
        """The generator yields after each file, so nothing is held for the whole set."""
        studies = iter_demo_studies(tmp_path, studies=5, seed=1, end_date=END_DATE)
        first = next(studies)
        assert [p.name for p in tmp_path.iterdir()] == [first.path.name]

    def test_negative_count_raises(self, tmp_path: Path) -> None:
        """A negative number of studies is refused with a clear message."""
        with pytest.raises(ValueError, match="studies must be >= 0, not -1"):
            list(iter_demo_studies(tmp_path, studies=-1))

    def test_read_back_root_concept_and_template(self, demo_set: list[DemoStudy]) -> None:
        """Every file reads back as an X-Ray Radiation Dose SR with its TID."""
        for study in demo_set:
            ds = pydicom.dcmread(study.path)
            assert ds.SOPClassUID == XRayRadiationDoseSRStorage
            assert ds.SOPInstanceUID == study.sop_instance_uid
            assert concept_of(ds) == codes.DCM.XRayRadiationDoseReport
            expected_tid = "10011" if study.modality == "CT" else "10001"
            assert ds.ContentTemplateSequence[0].TemplateIdentifier == expected_tid
            assert str(ds.PatientName).startswith(("DEMO^PATIENT", "QA PHANTOM"))

    def test_read_back_number_of_events(self, demo_set: list[DemoStudy]) -> None:
        """The content tree holds one event container per generated event."""
        for study in demo_set:
            items = children(pydicom.dcmread(study.path))
            concept = (
                codes.DCM.CTAcquisition
                if study.modality == "CT"
                else codes.DCM.IrradiationEventXRayData
            )
            assert len(find_all(items, concept)) == len(study.events) > 0

    def test_ct_values_in_range(self, demo_set: list[DemoStudy]) -> None:
        """CTDIvol, DLP = CTDIvol x scanning length, and the DLP total are consistent."""
        for study in (s for s in demo_set if s.modality == "CT"):
            assert study.events[0].irradiation_event_type == "Constant Angle Acquisition"
            for event in study.events:
                assert event.ctdivol_mgy is not None and event.dlp_mgycm is not None
                assert event.scanning_length_mm is not None
                assert 0.01 < event.ctdivol_mgy < 300
                assert 50 < event.scanning_length_mm < 1500
                assert event.dlp_mgycm == pytest.approx(
                    event.ctdivol_mgy * event.scanning_length_mm / 10, rel=1e-3
                )
            total = sum(e.dlp_mgycm or 0.0 for e in study.events)
            assert study.ct_dlp_total_mgycm == pytest.approx(total, rel=1e-4)

    def test_projection_values_in_range(self, demo_set: list[DemoStudy]) -> None:
        """DAP (Gy.m2) and Dose (RP) (Gy) are plausible and add up to the totals."""
        for study in (s for s in demo_set if s.modality in {"RF", "DX"}):
            for event in study.events:
                assert event.dap_gym2 is not None and event.dose_rp_gy is not None
                assert 1e-8 < event.dap_gym2 < 0.1
                assert 1e-6 < event.dose_rp_gy < 10
            total = sum(e.dap_gym2 or 0.0 for e in study.events)
            assert study.dap_total_gym2 == pytest.approx(total, rel=1e-3)

    def test_qa_phantom_study_named_qa_phantom(self) -> None:
        """A QA phantom study has patient name 'QA PHANTOM' and no demographics."""
        index = _first_index("CT", seed=1, qa=True)
        ds, study = build_demo_dataset(index, seed=1, end_date=END_DATE)
        assert study.is_qa
        assert str(ds.PatientName) == "QA PHANTOM"
        assert "PatientWeight" not in ds

    def test_qa_share_about_two_percent(self) -> None:
        """About 2 % of studies are QA phantom scans."""
        plans = [plan_demo_study(i, seed=1) for i in range(2000)]
        share = sum(plan.is_qa for plan in plans) / len(plans)
        assert 0.01 < share < 0.035

    def test_ct_descriptions_name_clinical_indications(self) -> None:
        """Demo CT descriptions map to the six EU EUCLID indication exams and to generic exams.

        The emergency room CT2 does strokes, appendicitis and renal colic; CT1 no strokes.
        """
        from kerma.analysis.exams import assign_study_exams, load_exam_rules
        from kerma.demo.catalogue import CT_PROTOCOLS, ct_protocols_for

        descriptions = [p.study_description for p in CT_PROTOCOLS]
        studies = pd.DataFrame(
            {
                "study_id": range(len(descriptions)),
                "modality": "CT",
                "study_description": descriptions,
            }
        )
        mapped = assign_study_exams(studies, None, load_exam_rules())
        exams = dict(zip(descriptions, mapped["standard_exam"], strict=True))
        assert exams["CT HEAD STROKE"] == "CT Head (Stroke)"
        assert exams["CT ABDOMEN APPENDICITIS"] == "CT Abdomen-Pelvis (Appendicitis)"
        assert exams["CT KUB LOW DOSE STONE"] == "CT Abdomen-Pelvis (Colic/abdominal pain)"
        assert exams["CT CHEST LUNG CANCER STAGING"] == "CT Chest (Lung cancer)"
        assert exams["CT C-SPINE TRAUMA"] == "CT Cervical spine (Trauma)"
        assert exams["CT SINUSES CHRONIC SINUSITIS"] == "CT Paranasal sinuses (Chronic sinusitis)"
        assert exams["CT Head"] == "CT Head"  # routine studies stay generic
        ct2 = {p.study_description for p in ct_protocols_for("CT2")}
        assert {"CT HEAD STROKE", "CT ABDOMEN APPENDICITIS", "CT KUB LOW DOSE STONE"} <= ct2
        assert "CT HEAD STROKE" not in {p.study_description for p in ct_protocols_for("CT1")}

    def test_some_patients_have_unknown_age(self) -> None:
        """About 4 % of patients have no birth date and no Patient's Age (age unknown)."""
        from kerma.demo.generator import _patient

        patients = [_patient(1, number, "CT") for number in range(1, 2001)]
        share = sum(p.birth_date is None for p in patients) / len(patients)
        assert 0.025 < share < 0.055
        index = next(
            i
            for i in range(500)
            if plan_demo_study(i, seed=1)[0] == "CT"
            and not plan_demo_study(i, seed=1)[1]
            and build_demo_dataset(i, seed=1, end_date=END_DATE)[0].PatientBirthDate == ""
        )
        ds, _ = build_demo_dataset(index, seed=1, end_date=END_DATE)
        assert "PatientAge" not in ds

    def test_ct3_delivers_more_than_other_rooms(self) -> None:
        """The deliberately high room CT3 has a higher median head CTDIvol."""
        from kerma.demo.catalogue import DEVICES

        factors = {d.key: d.dose_factor for d in DEVICES}
        assert factors["CT3"] > 1.3 * max(factors["CT1"], factors["CT2"])


class TestContentItems:
    """The fast SR item builders of :mod:`kerma.demo.sr` encode what plain pydicom encodes."""

    @staticmethod
    def _encode(items: list[pydicom.Dataset]) -> bytes:
        """Return ``items`` encoded as a Content Sequence, explicit VR little endian."""
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        ds = pydicom.Dataset()
        ds.ContentSequence = pydicom.Sequence(items)
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = False, True
        write_dataset(fp, ds)
        return fp.getvalue()

    @staticmethod
    def _plain(value_type: str, concept: Code, relationship: str = "CONTAINS") -> pydicom.Dataset:
        """Return a content item head built attribute by attribute (the slow, plain way)."""
        from kerma.demo.sr import build_code_item

        item = pydicom.Dataset()
        item.RelationshipType = relationship
        item.ValueType = value_type
        item.ConceptNameCodeSequence = pydicom.Sequence([build_code_item(concept)])
        return item

    def test_items_encode_as_plain_pydicom_items(self) -> None:
        """NUM, CODE, TEXT, UIDREF, DATETIME and CONTAINER items give the same bytes."""
        from kerma.demo import sr

        num = self._plain("NUM", codes.DCM.MeanCtdivol)
        measured = pydicom.Dataset()
        measured.MeasurementUnitsCodeSequence = pydicom.Sequence(
            [sr.build_code_item(kerma_codes.UCUM_MGY)]
        )
        measured.NumericValue = "12.5"
        num.MeasuredValueSequence = pydicom.Sequence([measured])
        code = self._plain("CODE", codes.DCM.CTAcquisitionType)
        code.ConceptCodeSequence = pydicom.Sequence(
            [sr.build_code_item(codes.SCT.SpiralAcquisition)]
        )
        text = self._plain("TEXT", codes.DCM.AcquisitionProtocol, sr.HAS_OBS_CONTEXT)
        text.TextValue = "Thorax Routine"
        uid = self._plain("UIDREF", codes.DCM.IrradiationEventUID)
        uid.UID = "1.2.826.0.1.3680043.8.498.1"
        when = self._plain("DATETIME", codes.DCM.DatetimeStarted)
        when.DateTime = "20260630101500"
        container = self._plain("CONTAINER", codes.DCM.CTDose)
        container.ContinuityOfContent = "SEPARATE"
        container.ContentSequence = pydicom.Sequence([num, code])
        plain = [num, code, text, uid, when, container]

        fast_num = sr.build_num(codes.DCM.MeanCtdivol, "12.5", kerma_codes.UCUM_MGY)
        fast_code = sr.build_code(codes.DCM.CTAcquisitionType, codes.SCT.SpiralAcquisition)
        fast = [
            fast_num,
            fast_code,
            sr.build_text(
                codes.DCM.AcquisitionProtocol, "Thorax Routine", relationship=sr.HAS_OBS_CONTEXT
            ),
            sr.build_uidref(codes.DCM.IrradiationEventUID, "1.2.826.0.1.3680043.8.498.1"),
            sr.build_datetime(codes.DCM.DatetimeStarted, "20260630101500"),
            sr.build_container(
                codes.DCM.CTDose,
                [
                    sr.build_constant_num(codes.DCM.MeanCtdivol, "12.5", kerma_codes.UCUM_MGY),
                    fast_code,
                ],
            ),
        ]
        assert self._encode(fast) == self._encode(plain)

    def test_constant_items_cached_and_uncached_files_identical(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reports with constant items encoded once equal reports building them each time."""
        from kerma.demo import generator, sr

        indices = [_first_index(m, seed=4) for m in ("CT", "RF", "DX", "MG")]
        (tmp_path / "a").mkdir()
        cached = [
            generator.write_demo_study(tmp_path / "a", i, seed=4, end_date=END_DATE)
            for i in indices
        ]
        monkeypatch.setattr(sr, "build_constant", lambda key, build: build())
        monkeypatch.setattr(generator, "build_constant", lambda key, build: build())
        (tmp_path / "b").mkdir()
        built = [
            generator.write_demo_study(tmp_path / "b", i, seed=4, end_date=END_DATE)
            for i in indices
        ]
        assert [s.modality for s in cached] == ["CT", "RF", "DX", "MG"]
        for a, b in zip(cached, built, strict=True):
            assert a.path.read_bytes() == b.path.read_bytes()

    def test_implicit_vr_write_reads_back_equal(self) -> None:
        """Encoded in implicit VR (pydicom re-encodes the raw parts), the report is the same.

        Load tests send demo datasets over the network, where the transfer syntax is
        often Implicit VR Little Endian.
        """
        from io import BytesIO

        from pydicom.filebase import DicomBytesIO
        from pydicom.filereader import read_dataset
        from pydicom.filewriter import write_dataset

        ds, _ = build_demo_dataset(_first_index("RF", seed=3), seed=3, end_date=END_DATE)
        explicit = BytesIO()
        ds.save_as(explicit, enforce_file_format=True)
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = True, True
        write_dataset(fp, ds)
        a = pydicom.dcmread(BytesIO(explicit.getvalue()))
        b = read_dataset(BytesIO(fp.getvalue()), is_implicit_VR=True, is_little_endian=True)
        assert b.ContentSequence == a.ContentSequence
        assert len(a.ContentSequence) > 5


class TestStudyMix:
    """The default demo (1,000 studies, seed 1) has enough studies for DRL verdicts."""

    #: Room and study description of every exam with an EU DRL (EUCLID CT clinical
    #: indications; coronary angiography and PCI, Siiskonen 2018).
    DRL_EXAMS = (
        ("CT2", "CT HEAD STROKE"),
        ("CT3", "CT HEAD STROKE"),
        ("CT2", "CT ABDOMEN APPENDICITIS"),
        ("CT3", "CT ABDOMEN APPENDICITIS"),
        ("CT2", "CT KUB LOW DOSE STONE"),
        ("CT1", "CT CHEST LUNG CANCER STAGING"),
        ("CT3", "CT CHEST LUNG CANCER STAGING"),
        ("CT2", "CT Pulmonary Angiogram"),
        ("CT3", "CT Pulmonary Angiogram"),
        ("CT2", "CT C-SPINE TRAUMA"),
        ("CT1", "CT SINUSES CHRONIC SINUSITIS"),
        ("CATHLAB1", "Coronary angiography"),
        ("CATHLAB1", "Percutaneous coronary intervention"),
    )

    @pytest.fixture(scope="class")
    def plans(self) -> list:
        """The plans of the 1,000 studies of the default demo."""
        return [plan_demo_study(i, seed=1) for i in range(1000)]

    def test_every_drl_room_and_exam_has_20_patients(self, plans: list) -> None:
        """ICRP 135: at least 20 patient studies per room and exam that has an EU DRL."""
        from collections import Counter

        counts = Counter((p.room, p.study_description) for p in plans if not p.is_qa)
        for room_exam in self.DRL_EXAMS:
            assert counts[room_exam] >= 20, (room_exam, counts[room_exam])
        assert min(counts[k] for k in self.DRL_EXAMS) == 25  # CT2 renal colic, seed 1

    def test_mammography_has_50_patients(self, plans: list) -> None:
        """ICRP 135 asks 50 for mammography: the one mammography room gets more."""
        assert sum(p.modality == "MG" for p in plans) == 104

    def test_modality_shares(self, plans: list) -> None:
        """CT about half, fluoroscopy the smallest share (its reports are the largest)."""
        from collections import Counter

        assert Counter(p.modality for p in plans) == {"CT": 544, "DX": 215, "RF": 137, "MG": 104}
        assert sum(p.is_qa for p in plans) == 22

    def test_catalogue_rooms_perform_only_their_exams(self) -> None:
        """Each CT protocol is done only in the rooms it lists, with a positive weight."""
        from kerma.demo.catalogue import CT_PROTOCOLS, ct_protocols_for

        for protocol in CT_PROTOCOLS:
            assert protocol.rooms
            for room, weight in protocol.rooms:
                assert weight > 0
                assert protocol in ct_protocols_for(room)
        assert {p.study_description for p in ct_protocols_for("CT2")} == {
            "CT HEAD STROKE",
            "CT ABDOMEN APPENDICITIS",
            "CT KUB LOW DOSE STONE",
            "CT Pulmonary Angiogram",
            "CT C-SPINE TRAUMA",
        }


class TestExtraction:
    """Kerma's readers extract the values the generator wrote."""

    def test_ct_report_values(self, demo_set: list[DemoStudy]) -> None:
        """A CT report reads as rdsr-ct with the written CTDIvol, DLP and DLP total."""
        study = _first(demo_set, "CT")
        report = inspect_path(study.path)
        assert isinstance(report, DoseReport), getattr(report, "reason", "")
        assert report.kind is ReportKind.RDSR_CT
        assert report.device.device_observer_uid == study.device_observer_uid
        assert report.study.study_description == study.study_description
        assert report.accumulated.ct_dlp_total_mgycm == pytest.approx(study.ct_dlp_total_mgycm)
        assert [e.irradiation_event_uid for e in report.events] == [
            e.irradiation_event_uid for e in study.events
        ]
        assert [e.ctdivol_mgy for e in report.events] == pytest.approx(
            [e.ctdivol_mgy for e in study.events]
        )
        assert [e.dlp_mgycm for e in report.events] == pytest.approx(
            [e.dlp_mgycm for e in study.events]
        )
        assert not report.warnings

    def test_fluoro_report_values(self) -> None:
        """A fluoroscopy report reads as rdsr-projection with the written DAP and Ka,r."""
        ds, study = build_demo_dataset(_first_index("RF", seed=2), seed=2, end_date=END_DATE)
        report = _inspect(ds, study)
        assert report.kind is ReportKind.RDSR_PROJECTION
        assert [e.dap_gym2 for e in report.events] == pytest.approx(
            [e.dap_gym2 for e in study.events]
        )
        assert [e.dose_rp_gy for e in report.events] == pytest.approx(
            [e.dose_rp_gy for e in study.events]
        )
        plane = report.accumulated.planes[0]
        assert plane.dap_total_gym2 == pytest.approx(study.dap_total_gym2)
        assert plane.fluoro_time_total_s == pytest.approx(study.fluoro_time_total_s)
        # 'Exposure Time' is written as DCM 113824, the code of the current PS3.16
        # (pydicom lists the older DCM 113735 as retired); a reader may note it.
        assert [w for w in report.warnings if "'Exposure Time'" not in w] == []

    def test_radiography_report_values(self) -> None:
        """A radiography report reads as rdsr-projection with the written DAP."""
        ds, study = build_demo_dataset(_first_index("DX", seed=2), seed=2, end_date=END_DATE)
        report = _inspect(ds, study)
        assert report.kind is ReportKind.RDSR_PROJECTION
        assert [e.dap_gym2 for e in report.events] == pytest.approx(
            [e.dap_gym2 for e in study.events]
        )

    def test_mammography_report_values(self) -> None:
        """A mammography report reads as MG with the written AGD per view and per breast."""
        ds, study = build_demo_dataset(_first_index("MG", seed=2), seed=2, end_date=END_DATE)
        report = _inspect(ds, study)
        assert report.study.modality == "MG"
        assert [e.agd_mgy for e in report.events] == pytest.approx(
            [e.agd_mgy for e in study.events]
        )
        assert [e.laterality for e in report.events] == [
            "Right breast",
            "Left breast",
            "Right breast",
            "Left breast",
        ]
        assert report.accumulated.agd_total_left_mgy == pytest.approx(study.agd_total_left_mgy)
        assert report.accumulated.agd_total_right_mgy == pytest.approx(study.agd_total_right_mgy)


def _inspect(ds: pydicom.Dataset, study: DemoStudy) -> DoseReport:
    """Write ``ds`` to a temporary file, read it back with inspect_path, return the report."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / study.path.name
        ds.save_as(path, enforce_file_format=True)
        report = inspect_path(path)
    assert isinstance(report, DoseReport), getattr(report, "reason", "")
    return report


class TestDemoCommand:
    """``kerma demo``."""

    def test_demo_imports_and_prints_summary(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``kerma demo --studies 20`` imports every file and prints the dose tables."""
        from kerma.cli.main import app

        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("KERMA_DATABASE_URL", raising=False)
        result = CliRunner().invoke(app, ["demo", "--studies", "20"])
        assert result.exit_code == 0, result.output
        assert "Wrote 20 X-Ray Radiation Dose SRs" in result.output
        counts = {
            cells[1].strip(): int(cells[2])
            for line in result.output.splitlines()
            if len(cells := line.split("│")) == 4 and cells[2].strip().isdigit()
        }
        assert counts["objects read"] == 20
        assert sum(n for k, n in counts.items() if k.startswith("imported ")) == 20
        assert counts["rejected"] == 0
        assert "DLP (mGy·cm) per examination" in result.output
        assert "CTDIvol (mGy)" in result.output
        assert (tmp_path / "kerma-demo.db").exists()
        assert len(list((tmp_path / "kerma-demo-data").glob("DEMO-*.dcm"))) == 20
        assert not (tmp_path / "kerma.db").exists()
        lines = result.output.splitlines()
        kerma = _kerma_command()  # "kerma", or .venv/bin/kerma when not on the PATH
        assert lines[-1] == f"  {kerma} drl"
        assert lines[-2] == f"  {kerma} studies"
        assert lines[-3].startswith("  export KERMA_DATABASE_URL=sqlite:///")
        assert "KERMA_ARCHIVE_DIR=" in lines[-3]

    def test_next_steps_commands_never_wrap(self) -> None:
        """On a 40-column terminal each command is still one pasteable line."""
        from rich.console import Console

        from kerma.cli.demo import _print_next_steps

        console = Console(width=40, record=True, color_system=None)
        _print_next_steps(console, "sqlite:///kerma-demo.db", Path("kerma-demo-archive"))
        lines = console.export_text().splitlines()
        assert lines[-3:] == [
            "  export KERMA_DATABASE_URL=sqlite:///kerma-demo.db"
            " KERMA_ARCHIVE_DIR=kerma-demo-archive",
            f"  {_kerma_command()} studies",
            f"  {_kerma_command()} drl",
        ]
        assert all(len(line) <= 40 for line in lines[:-3])  # the prose does wrap

    def test_next_steps_quote_paths_for_the_shell(self) -> None:
        """A path with a space is quoted, so the export sets the whole path."""
        from rich.console import Console

        from kerma.cli.demo import _print_next_steps

        console = Console(width=200, record=True, color_system=None)
        _print_next_steps(console, "sqlite:///my demo.db", Path("my archive"))
        lines = console.export_text().splitlines()
        assert lines[-3] == (
            "  export KERMA_DATABASE_URL='sqlite:///my demo.db' KERMA_ARCHIVE_DIR='my archive'"
        )

    def test_parallel_demo_equals_sequential(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two worker processes write and import the same 120 studies as one process."""
        from kerma.api import Registry
        from kerma.cli.main import app

        counts = {}
        for workers in (1, 2):
            run = tmp_path / f"w{workers}"
            run.mkdir()
            monkeypatch.chdir(run)
            monkeypatch.delenv("KERMA_DATABASE_URL", raising=False)
            result = CliRunner().invoke(
                app, ["demo", "--studies", "120", "--workers", str(workers)]
            )
            assert result.exit_code == 0, result.output
            assert "objects read" in result.output
            with Registry(f"sqlite:///{run / 'kerma-demo.db'}") as registry:
                studies = registry.studies(include_non_patient=True)
                events = registry.events(include_non_patient=True)
            counts[workers] = (
                len(studies),
                len(events),
                round(float(studies["ct_dlp_total_mgycm"].sum()), 6),
                round(float(studies["dap_total_gym2"].sum()), 9),
                sorted(studies["study_instance_uid"]),
            )
        assert counts[1][0] == counts[2][0] == 120
        assert counts[1] == counts[2]

    def test_help_has_no_hard_wraps_or_markup(self) -> None:
        """``kerma demo --help`` wraps at the terminal's width, not the docstring's."""
        from kerma.cli.main import app

        result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        text = result.output
        assert "three CT rooms (Siemens, GE, Canon), a cardiac cath lab, a fluoroscopy room" in text
        assert "``" not in text
        assert "so kerma drl on the demo registry compares the rooms with the DRLs" in " ".join(
            text.split()
        )

    def test_chunks_cover_every_study_once(self) -> None:
        """Studies are handed out in chunks of CHUNK_STUDIES, the last one shorter."""
        from kerma.cli.demo import CHUNK_STUDIES, _chunks

        chunks = _chunks(2 * CHUNK_STUDIES + 5)
        assert [len(c) for c in chunks] == [CHUNK_STUDIES, CHUNK_STUDIES, 5]
        assert [i for c in chunks for i in c] == list(range(2 * CHUNK_STUDIES + 5))
        assert _chunks(0) == []

    def test_worker_processes_write_every_study_once(self, tmp_path: Path) -> None:
        """Two worker processes write each of 35 studies once, named by the plan."""
        from kerma.cli.demo import DemoRun, iter_demo_run

        run = DemoRun(tmp_path, 35, 6, END_DATE, database=None, archive_dir=None)
        done = list(iter_demo_run(run, workers=2))
        expected = [f"DEMO-{i + 1:06d}-{plan_demo_study(i, seed=6).room}.dcm" for i in range(35)]
        assert sorted(d.path.name for d in done) == expected
        assert sorted(p.name for p in tmp_path.glob("DEMO-*.dcm")) == expected
        assert all(d.outcome is None for d in done)
        assert [d.modality for d in sorted(done, key=lambda d: d.path.name)] == [
            plan_demo_study(i, seed=6).modality for i in range(35)
        ]

    def test_no_import_only_writes_files(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``--no-import`` writes the files and creates no registry."""
        from kerma.cli.main import app

        monkeypatch.chdir(tmp_path)
        out = tmp_path / "files"
        result = CliRunner().invoke(
            app, ["demo", "--studies", "3", "--out", str(out), "--no-import"]
        )
        assert result.exit_code == 0, result.output
        assert len(list(out.glob("DEMO-*.dcm"))) == 3
        assert not (tmp_path / "kerma-demo.db").exists()

    def test_existing_other_sqlite_file_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An existing SQLite file other than the demo one is never deleted."""
        from kerma.cli.main import app

        monkeypatch.chdir(tmp_path)
        precious = tmp_path / "kerma.db"
        precious.write_bytes(b"not to be touched")
        result = CliRunner().invoke(
            app, ["demo", "--studies", "1", "--database", "sqlite:///kerma.db"]
        )
        assert isinstance(result.exception, ConfigurationError)
        assert "the demo needs a fresh registry" in str(result.exception)
        assert precious.read_bytes() == b"not to be touched"
        assert not list((tmp_path / "kerma-demo-data").glob("*.dcm"))  # refused before writing


class TestLocalUcumCodes:
    """The UCUM units of kerma.dicom.codes that the generator writes."""

    @pytest.mark.parametrize(
        "unit",
        [
            kerma_codes.UCUM_MGY,
            kerma_codes.UCUM_MGY_CM,
            kerma_codes.UCUM_GY_M2,
            kerma_codes.UCUM_MA,
            kerma_codes.UCUM_PULSE_PER_S,
            kerma_codes.UCUM_EVENTS,
            kerma_codes.UCUM_XRAY_SOURCES,
        ],
        ids=["mGy", "mGy.cm", "Gy.m2", "mA", "pulse-per-s", "events", "xray-sources"],
    )
    def test_unit_absent_from_pydicom(self, unit: Code) -> None:
        """The unit is not in pydicom's UCUM collection (else use pydicom's)."""
        assert not [k for k in codes.UCUM.dir() if getattr(codes.UCUM, k) == unit]

"""The ingest pipeline on SQLite and PostgreSQL: reconciliation, rejections, reprocess."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from sqlalchemy import select

from kerma.api import Registry
from kerma.db.models import DoseReport, RejectedObject, Study
from kerma.ingest.pipeline import ImportStatus
from tests.conftest import CASES_DIR, DICOM_DIR, load_case
from tests.db_fixtures import make_settings
from tests.ingest.helpers import dump_tables, dump_text, without, write_image_without_dose

C04 = load_case("C04-ct-siemens-cumulative-rdsr") if CASES_DIR.is_dir() else {"files": []}
C05 = load_case("C05-ct-siemens-continued-study") if CASES_DIR.is_dir() else {"files": []}

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)


def sop_uid(path: Path) -> str:
    """Return the SOP Instance UID of a file."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def ct_values(reg: Registry) -> list[float]:
    """Return CTDIvol, DLP of the current CT events, sorted by event, flattened."""
    events = reg.events(include_non_patient=True)
    return flat(zip(events["ctdivol_mgy"], events["dlp_mgycm"], strict=True))


def flat(pairs) -> list[float]:
    """Return sorted (CTDIvol, DLP) pairs as one flat list."""
    return [v for pair in sorted(pairs) for v in pair]


@needs_shared
class TestCumulativeReports:
    """Case C04: three cumulative Siemens RDSRs of one study."""

    @pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
    def test_any_order_gives_three_events_and_final_dlp(self, registry: Registry, order) -> None:
        """Any import order leaves one study, 3 current events and DLP 651.1 mGy·cm."""
        expected = C04["expected"]["after_importing_all_in_any_order"]
        files = [CASES_DIR / C04["files"][i] for i in order]
        summary = registry.import_paths(files)
        assert summary.n_imported == 3
        studies = registry.studies(include_non_patient=True)
        assert len(studies) == expected["n_studies"] == 1
        row = studies.iloc[0]
        assert row["number_of_events"] == expected["n_events"] == 3
        assert row["number_of_reports"] == expected["source_sop_instance_uids_recorded"] == 3
        assert row["ct_dlp_total_mgycm"] == pytest.approx(expected["dlp_total_mgycm"])
        want = flat((e["ctdivol_mgy"], e["dlp_mgycm"]) for e in expected["events"])
        assert ct_values(registry) == pytest.approx(want)
        with registry.session(write=False) as session:
            reports = {r.source: r for r in session.scalars(select(DoseReport))}
            newest = reports[str(CASES_DIR / C04["files"][2])]
            assert newest.superseded_by_id is None
            others = [r for r in reports.values() if r is not newest]
            assert all(r.superseded_by_id is not None for r in others)

    def test_reimport_same_file_is_a_no_op(self, registry: Registry) -> None:
        """The same SOP Instance UID again changes nothing."""
        files = [CASES_DIR / f for f in C04["files"]]
        registry.import_paths(files)
        before = dump_tables(registry.engine)
        outcome = registry.import_bytes(files[1].read_bytes(), source="again")
        assert outcome.status is ImportStatus.ALREADY_PRESENT
        assert outcome.sop_instance_uid == sop_uid(files[1])
        assert dump_tables(registry.engine) == before

    def test_older_report_after_newer_is_superseded_on_arrival(self, registry: Registry) -> None:
        """Importing b after c stores b, superseded at once, with no change to totals."""
        c, b = CASES_DIR / C04["files"][2], CASES_DIR / C04["files"][1]
        registry.import_paths([c])
        before = registry.studies(include_non_patient=True)
        outcome = registry.import_bytes(b.read_bytes(), source=str(b))
        assert outcome.status is ImportStatus.SUPERSEDED
        after = registry.studies(include_non_patient=True)
        assert after["ct_dlp_total_mgycm"].tolist() == before["ct_dlp_total_mgycm"].tolist()
        assert after["number_of_reports"].iloc[0] == 2


@needs_shared
class TestContinuedStudy:
    """Case C05: two RDSRs of one study with disjoint events."""

    @pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["a-b", "b-a"])
    def test_both_reports_count(self, registry: Registry, order) -> None:
        """Both reports stay current: 4 events and DLP 1056.7 mGy·cm."""
        expected = C05["expected"]
        registry.import_paths([CASES_DIR / C05["files"][i] for i in order])
        studies = registry.studies(include_non_patient=True)
        assert len(studies) == 1
        assert studies["number_of_events"].iloc[0] == expected["n_events_for_study"] == 4
        assert studies["ct_dlp_total_mgycm"].iloc[0] == pytest.approx(
            expected["study_dlp_total_mgycm"]
        )
        want = flat((e["ctdivol_mgy"], e["dlp_mgycm"]) for e in expected["events"])
        assert ct_values(registry) == pytest.approx(want)
        with registry.session(write=False) as session:
            assert all(r.superseded_by_id is None for r in session.scalars(select(DoseReport)))


@needs_shared
class TestSharedMultiAndContinued:
    """The real Siemens Multi (cumulative) and Continued files."""

    def test_multi_second_report_supersedes_first(self, registry: Registry) -> None:
        """Multi-2 holds Multi-1's event: one study, Multi-2's 2 events, Multi-1 superseded."""
        multi1, multi2 = (
            DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm",
            DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm",
        )
        for order in ([multi2, multi1], [multi1, multi2]):
            registry.import_paths(order)
        studies = registry.studies(include_non_patient=True)
        assert len(studies) == 1
        assert studies["number_of_events"].iloc[0] == 2
        with registry.session(write=False) as session:
            by_uid = {r.sop_instance_uid: r for r in session.scalars(select(DoseReport))}
            assert by_uid[sop_uid(multi1)].superseded_by_id == by_uid[sop_uid(multi2)].id
            assert by_uid[sop_uid(multi2)].superseded_by_id is None
            dlp_multi2 = sum(e.dlp_mgycm or 0 for e in by_uid[sop_uid(multi2)].events)
        assert studies["ct_dlp_total_mgycm"].iloc[0] == pytest.approx(dlp_multi2)

    def test_continued_reports_sum(self, registry: Registry) -> None:
        """Continued-1 and -2 are one study holding the events of both."""
        files = [
            DICOM_DIR / "CT-RDSR-Siemens-Continued-2.dcm",
            DICOM_DIR / "CT-RDSR-Siemens-Continued-1.dcm",
        ]
        registry.import_paths(files)
        studies = registry.studies(include_non_patient=True)
        assert len(studies) == 1
        with registry.session(write=False) as session:
            reports = list(session.scalars(select(DoseReport)))
            assert [r.superseded_by_id for r in reports] == [None, None]
            total = sum(e.dlp_mgycm or 0 for r in reports for e in r.events)
            n_events = sum(r.number_of_events for r in reports)
        assert studies["number_of_events"].iloc[0] == n_events == 4
        assert studies["ct_dlp_total_mgycm"].iloc[0] == pytest.approx(total)


@needs_shared
class TestRejections:
    """Bad objects are rejected with a reason, archived, listed; the rest imports."""

    def test_bad_objects_rejected_and_good_ones_imported(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """A truncated RDSR, an image without dose and a non-dose SR; a text file skipped."""
        folder = tmp_path / "incoming"
        folder.mkdir()
        (folder / "notes.txt").write_text("not a DICOM object\n")
        rdsr = (DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm").read_bytes()
        (folder / "truncated.dcm").write_bytes(rdsr[: len(rdsr) // 2])
        write_image_without_dose(folder / "mr.dcm")
        shutil.copy(DICOM_DIR / "ESR_non-dose.dcm", folder / "esr.dcm")
        shutil.copy(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", folder / "good.dcm")
        summary = registry.import_paths([folder])
        assert summary.objects_read == 5
        assert summary.n_imported == 1
        assert summary.rejected == 3
        assert summary.skipped_not_dicom == 1
        rejects = registry.rejects().set_index("file_name")
        reasons = rejects["reason"].to_dict()
        assert str(folder / "notes.txt") not in reasons
        assert "incomplete" in reasons[str(folder / "truncated.dcm")]
        assert "not a dose report" in reasons[str(folder / "esr.dcm")]
        assert str(folder / "mr.dcm") in reasons
        assert rejects.loc[str(folder / "esr.dcm"), "sop_instance_uid"] == sop_uid(
            folder / "esr.dcm"
        )
        archive = registry.settings.archive_dir
        for rel in rejects["archive_path"]:
            assert (archive / rel).is_file()
        truncated = rejects.loc[str(folder / "truncated.dcm"), "archive_path"]
        assert (archive / truncated).read_bytes() == rdsr[: len(rdsr) // 2]
        assert len(registry.studies(include_non_patient=True)) == 1
        assert "Nodose^Mary" not in dump_text(registry.engine)
        assert "MRI-NO-DOSE-42" not in dump_text(registry.engine)

    def test_same_rejected_bytes_twice_keep_one_row(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """Rejecting the same bytes again keeps one row and counts it as already listed."""
        rdsr = (DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm").read_bytes()
        bad = tmp_path / "cut.dcm"
        bad.write_bytes(rdsr[: len(rdsr) // 3])
        first = registry.import_paths([bad])
        second = registry.import_paths([bad])
        assert (first.rejected, first.rejected_new, first.rejected_already_listed) == (1, 1, 0)
        assert (second.rejected, second.rejected_new, second.rejected_already_listed) == (1, 0, 1)
        assert sum(second.new_rejections_by_reason.values()) == 0
        assert len(registry.rejects()) == 1

    def test_missing_path_is_reported_not_raised(self, registry: Registry, tmp_path: Path) -> None:
        """A path that does not exist is a rejected outcome, not an exception."""
        summary = registry.import_paths([tmp_path / "nope.dcm"])
        assert summary.rejected == 1
        assert summary.unreadable == 1
        assert "Unable to read" in summary.rejection_examples[0][1]


@needs_shared
class TestKeepNonDose:
    """``keep_non_dose=False`` ignores readable non-dose objects; the rest is unchanged."""

    def test_folder_import_ignores_non_dose_and_rejects_bad(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """MR image and non-dose SR ignored; broken files rejected and archived; RDSR in."""
        folder = tmp_path / "incoming"
        folder.mkdir()
        (folder / "notes.txt").write_text("not a DICOM object\n")
        rdsr = (DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm").read_bytes()
        (folder / "truncated.dcm").write_bytes(rdsr[: len(rdsr) // 2])
        write_image_without_dose(folder / "mr.dcm")
        shutil.copy(DICOM_DIR / "ESR_non-dose.dcm", folder / "esr.dcm")
        shutil.copy(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", folder / "good.dcm")
        summary = registry.import_paths([folder], keep_non_dose=False)
        assert summary.objects_read == 5
        assert summary.n_imported == 1
        assert summary.ignored == 2
        assert summary.rejected == 1
        assert summary.skipped_not_dicom == 1
        # where each came from: its path relative to the folder imported
        ignored = registry.ignored().set_index("source")
        assert set(ignored.index) == {"mr.dcm", "esr.dcm"}
        assert ignored.loc["esr.dcm", "sop_instance_uid"] == sop_uid(folder / "esr.dcm")
        assert "not a dose report" in ignored.loc["esr.dcm", "reason"]
        rejects = registry.rejects()
        assert set(rejects["file_name"]) == {str(folder / "truncated.dcm")}
        archived = {p.name for p in registry.settings.archive_dir.rglob("*.dcm")}
        for name in ("mr.dcm", "esr.dcm", "notes.txt"):
            sha = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            assert f"{sha}.dcm" not in archived
        assert len(archived) == 2  # the RDSR and the truncated file
        assert "Nodose^Mary" not in dump_text(registry.engine)

    def test_default_keeps_and_rejects_non_dose(self, registry: Registry, tmp_path: Path) -> None:
        """With the default the non-dose object is rejected and archived, nothing ignored."""
        path = write_image_without_dose(tmp_path / "mr.dcm")
        outcome = registry.import_bytes(path.read_bytes(), source="mr.dcm")
        assert outcome.status is ImportStatus.REJECTED
        assert registry.ignored().empty
        assert len(registry.rejects()) == 1


def _encode(ds: pydicom.Dataset) -> bytes:
    """Return a dataset written as a DICOM file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@needs_shared
class TestConflictingDuplicates:
    """Same SOP Instance UID, different content: both kept, the first counts until decided."""

    ZEE = DICOM_DIR / "RF-RDSR-Siemens-Zee.dcm"
    ZEE_ADJUSTED = DICOM_DIR / "RF-RDSR-Siemens-Zee_adjusted.dcm"

    def test_second_copy_held_as_version_and_archived(self, registry: Registry) -> None:
        """The adjusted copy is held as version 2, not rejected; the first one's values count."""
        assert sop_uid(self.ZEE) == sop_uid(self.ZEE_ADJUSTED)
        first = registry.import_paths([self.ZEE])
        assert first.n_imported == 1
        events_before = registry.events(include_non_patient=True)
        summary = registry.import_paths([self.ZEE_ADJUSTED])
        assert (summary.conflicts, summary.rejected, summary.already_present) == (1, 0, 0)
        assert registry.rejects().empty
        uid = sop_uid(self.ZEE)
        detail = registry.conflict(uid)
        assert [v.source for v in detail.versions] == [str(self.ZEE), str(self.ZEE_ADJUSTED)]
        assert detail.current_version == 1
        archived = registry.settings.archive_dir / detail.versions[1].archive_path
        assert archived.read_bytes() == self.ZEE_ADJUSTED.read_bytes()
        with registry.session() as session:
            reports = session.scalars(select(DoseReport)).all()
            assert [r.source for r in reports] == [str(self.ZEE)]
        events_after = registry.events(include_non_patient=True)
        pd.testing.assert_frame_equal(events_before, events_after)

    def test_identical_copy_stays_silent(self, registry: Registry, tmp_path: Path) -> None:
        """The same object re-encoded (other file meta) is already present, not a conflict."""
        ds = pydicom.dcmread(self.ZEE)
        ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
        copy = tmp_path / "copy.dcm"
        ds.save_as(copy, enforce_file_format=True)
        assert copy.read_bytes() != self.ZEE.read_bytes()
        registry.import_paths([self.ZEE])
        summary = registry.import_paths([copy, self.ZEE])
        assert summary.already_present == 2
        assert summary.rejected == 0
        assert registry.rejects().empty

    def test_differing_fields_named_in_outcome(self, registry: Registry) -> None:
        """The outcome names the first differing extracted fields and the next command."""
        registry.import_paths([self.ZEE])
        outcome = registry.import_bytes(self.ZEE_ADJUSTED.read_bytes(), source="adjusted.dcm")
        assert outcome.status is ImportStatus.CONFLICT
        reason = outcome.reason or ""
        # the adjusted copy moves the study two days and gives it another Study UID
        assert "(study_instance_uid " in reason
        assert "; study_date 2016-05-12 vs 2016-05-10)" in reason
        assert f"kerma conflicts show {sop_uid(self.ZEE)}" in reason

    def test_real_byte_difference_in_event_comment_is_a_conflict(self, registry: Registry) -> None:
        """OR1-...-Zee_adjusted differs from Zee_adjusted only in an event comment: held."""
        other = DICOM_DIR / "OR1-RF-RDSR-Siemens-Zee_adjusted.dcm"
        assert sop_uid(other) == sop_uid(self.ZEE_ADJUSTED)
        registry.import_paths([self.ZEE_ADJUSTED])
        summary = registry.import_paths([other])
        assert (summary.conflicts, summary.rejected, summary.already_present) == (1, 0, 0)
        [(name, values)] = registry.conflict(sop_uid(other)).differences
        # the scene name reads "FL - Ang" in one copy and "FLå Ang" in the other
        assert name == "event 1 comment"
        assert "FL - Ang" in values[0]
        assert "FLå Ang" in values[1]

    @pytest.mark.parametrize(
        "transfer_syntax",
        [pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian],
        ids=["implicit-little", "explicit-big"],
    )
    def test_same_object_in_other_transfer_syntax_is_already_present(
        self, registry: Registry, tmp_path: Path, transfer_syntax: pydicom.uid.UID
    ) -> None:
        """A copy re-encoded as e.g. by ``storescu -xi`` is the same object, not a conflict."""
        original = DICOM_DIR / "DX-Im-GE_XR220-1.dcm"
        ds = pydicom.dcmread(original)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        copy = tmp_path / "reencoded.dcm"
        # dcmwrite, not save_as: save_as refuses a change of endianness (pixel data are
        # not byte-swapped, which Kerma does not read for a DX image)
        pydicom.dcmwrite(copy, ds, enforce_file_format=True)
        reread = pydicom.dcmread(copy)
        assert reread.file_meta.TransferSyntaxUID == transfer_syntax
        assert copy.read_bytes() != original.read_bytes()
        assert registry.import_paths([original]).n_imported == 1
        summary = registry.import_paths([copy])
        assert (summary.already_present, summary.rejected, summary.n_imported) == (1, 0, 0)
        assert registry.rejects().empty
        with registry.session() as session:
            reports = session.scalars(select(DoseReport)).all()
            assert [r.source for r in reports] == [str(original)]

    def test_older_extractor_content_is_re_extracted(self, registry: Registry) -> None:
        """A stored report from another extractor version is compared after re-extraction."""
        registry.import_paths([self.ZEE])
        with registry.session(write=True) as session:
            row = session.scalars(select(DoseReport)).one()
            row.extractor_version = "0.0.1"
            row.content = {**row.content, "study": {**row.content["study"], "study_date": None}}
        ds = pydicom.dcmread(self.ZEE)
        ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
        summary = registry.import_bytes(_encode(ds), source="resent")
        assert summary.status is ImportStatus.ALREADY_PRESENT

    def test_reprocess_keeps_the_versions(self, registry: Registry) -> None:
        """Reprocessing leaves the held version and the open conflict as they are."""
        registry.import_paths([self.ZEE, self.ZEE_ADJUSTED])
        summary = registry.reprocess()
        assert (summary.rejected_still, summary.rejected_now_imported) == (0, 0)
        assert registry.rejects().empty
        detail = registry.conflict(sop_uid(self.ZEE))
        assert (len(detail.versions), detail.is_open, detail.current_version) == (2, True, 1)


@needs_shared
class TestNonPatient:
    """QA / phantom studies are flagged and left out by default."""

    def test_qa_phantom_study_flagged_and_excluded(self, registry: Registry) -> None:
        """C18 (Patient ID PHANTOM-QA-001) is non-patient: hidden unless asked for."""
        registry.import_paths(
            [
                CASES_DIR / "C18-ct-dual-source-qa-phantom.dcm",
                DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm",
            ]
        )
        everything = registry.studies(include_non_patient=True)
        assert sorted(everything["is_non_patient"].tolist()) == [False, True]
        assert len(registry.studies()) == 1
        assert not registry.events()["is_non_patient"].any()


@needs_shared
class TestReprocess:
    """kerma reprocess: in place and idempotent."""

    def test_reprocess_twice_gives_the_same_rows(self, registry: Registry) -> None:
        """Reprocessing changes nothing but timestamps, and twice equals once."""
        registry.import_paths(
            [CASES_DIR / f for f in C04["files"]] + [DICOM_DIR / "ESR_non-dose.dcm"]
        )
        before = without(dump_tables(registry.engine), "rejected_at")
        first = registry.reprocess()
        once = without(dump_tables(registry.engine), "rejected_at")
        second = registry.reprocess()
        twice = without(dump_tables(registry.engine), "rejected_at")
        assert first.reports == second.reports == 3
        assert first.rejected_still == second.rejected_still == 1
        assert once == before
        assert twice == once

    def test_rejected_object_that_now_reads_is_imported(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A strict-mode rejection imports on a lenient reprocess; its rejection is cleared."""
        path = CASES_DIR / "C10-dx-header-is-with-decimals.dcm"  # reads with a warning
        strict = Registry(settings=make_settings(database_url, tmp_path, strict=True))
        outcome = strict.import_paths([path])
        strict.close()
        assert outcome.rejected == 1
        lenient = Registry(settings=make_settings(database_url, tmp_path))
        assert len(lenient.rejects()) == 1
        result = lenient.reprocess()
        assert result.rejected_now_imported == 1
        assert lenient.rejects().empty
        assert len(lenient.studies(include_non_patient=True)) == 1
        again = lenient.reprocess()
        assert again.rejected_now_imported == 0
        assert again.reports == 1
        lenient.close()


@needs_shared
class TestConcurrency:
    """import_paths from several threads at once."""

    def test_threads_importing_the_same_files_store_each_once(self, registry: Registry) -> None:
        """Four threads importing C04 and C05 leave each SOP Instance UID stored once."""
        files = [CASES_DIR / f for f in C04["files"] + C05["files"]]
        errors: list[BaseException] = []

        def work() -> None:
            try:
                registry.import_paths(files)
            except BaseException as exc:  # report in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with registry.session(write=False) as session:
            assert len(list(session.scalars(select(DoseReport)))) == 5
            assert len(list(session.scalars(select(Study)))) == 2
            assert list(session.scalars(select(RejectedObject))) == []
        studies = registry.studies(include_non_patient=True).set_index("number_of_events")
        assert studies.loc[3, "ct_dlp_total_mgycm"] == pytest.approx(651.1)
        assert studies.loc[4, "ct_dlp_total_mgycm"] == pytest.approx(1056.7)

    def test_processes_importing_the_same_files_store_each_once(
        self, registry: Registry, database_url: str, tmp_path: Path
    ) -> None:
        """Three processes importing C04 and C05 at once leave each object stored once."""
        files = [str(CASES_DIR / f) for f in C04["files"] + C05["files"]]
        script = "import sys, kerma; kerma.Registry().import_paths(sys.argv[1:])"
        env = {
            **os.environ,
            "KERMA_DATABASE_URL": database_url,
            "KERMA_ARCHIVE_DIR": str(registry.settings.archive_dir),
            "KERMA_PSEUDONYM_KEY": str(registry.settings.pseudonym_key),
        }
        procs = [
            subprocess.Popen([sys.executable, "-c", script, *files], env=env, cwd=tmp_path)
            for _ in range(3)
        ]
        assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
        with registry.session(write=False) as session:
            assert len(list(session.scalars(select(DoseReport)))) == 5
            assert len(list(session.scalars(select(Study)))) == 2
        studies = registry.studies(include_non_patient=True).set_index("number_of_events")
        assert studies.loc[3, "ct_dlp_total_mgycm"] == pytest.approx(651.1)
        assert studies.loc[4, "ct_dlp_total_mgycm"] == pytest.approx(1056.7)

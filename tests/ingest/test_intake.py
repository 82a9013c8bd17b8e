"""What the intake keeps and lists: DICOM or not, one hash, modalities, reason groups, purge."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from kerma.api import Registry
from kerma.db.models import RejectedObject
from kerma.ingest.archive import Archive, ArchivedObject
from kerma.ingest.pipeline import ImportStatus, SkipKind
from kerma.ingest.sources import is_dicom, iter_sources
from kerma.services.intake import (
    RejectFilter,
    count_rejects,
    delete_rejects,
    known_instances,
    list_rejects,
    reason_group,
    remove_archived_files,
)
from tests.conftest import DICOM_DIR
from tests.ingest.helpers import write_image_without_dose

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

CT_RDSR = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
DX_RDSR = DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm"


def bare_dataset(path: Path) -> bytes:
    """Return a file's data set without preamble and file meta (implicit VR little endian)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, pydicom.dcmread(path))
    return buffer.getvalue()


class CountingArchive(Archive):
    """An archive that counts the SHA-256 digests it computes itself."""

    digests_computed = 0

    def store(self, data, *, sha256=None):  # type: ignore[no-untyped-def]
        """Keep ``data``; count a digest computed here."""
        if sha256 is None:
            self.digests_computed += 1
        result: ArchivedObject = super().store(data, sha256=sha256)
        return result


@needs_shared
class TestIsDicom:
    """DICOM (whole or damaged) against files that are not DICOM at all."""

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            pytest.param(b"", False, id="empty"),
            pytest.param(b'{"StudyDate": "20240101"}', False, id="json"),
            pytest.param(b"# Index\n\nNotes about the files.\n" * 20, False, id="markdown"),
            pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(300), False, id="png"),
            pytest.param(bytes(128) + b"DICM", True, id="prefix-only"),
        ],
    )
    def test_bytes(self, data: bytes, expected: bool) -> None:
        """Only the DICM prefix or a readable SOP Class UID make an object DICOM."""
        assert is_dicom(data) is expected

    def test_part10_damaged_and_bare_data_set(self) -> None:
        """A Part 10 file, the same cut short, and a bare data set are DICOM."""
        data = CT_RDSR.read_bytes()
        assert is_dicom(data)
        assert is_dicom(data[: len(data) // 3])
        assert is_dicom(bare_dataset(CT_RDSR))

    def test_shared_folder(self) -> None:
        """In ../shared/dicom the 58 .dcm files are DICOM; the JSON files and INDEX.md are not."""
        verdicts = {p.name: is_dicom(p.read_bytes()) for p in DICOM_DIR.rglob("*") if p.is_file()}
        assert {n for n, v in verdicts.items() if v} == {n for n in verdicts if n.endswith(".dcm")}
        assert sum(not v for v in verdicts.values()) == 59

    def test_iter_sources_names_files_relative_to_the_folder(self, tmp_path: Path) -> None:
        """A folder's files carry their path inside it; a file given alone, its path as given."""
        (tmp_path / "in" / "sub").mkdir(parents=True)
        (tmp_path / "in" / "sub" / "a.dcm").write_bytes(b"x")
        (tmp_path / "in" / "b.dcm").write_bytes(b"x")
        (tmp_path / "in" / ".hidden").write_bytes(b"x")
        found = [(s.path, s.origin) for s in iter_sources([tmp_path / "in", tmp_path / "c"])]
        assert found == [
            (tmp_path / "in" / "b.dcm", "b.dcm"),
            (tmp_path / "in" / "sub" / "a.dcm", "sub/a.dcm"),
            (tmp_path / "c", str(tmp_path / "c")),
        ]


@needs_shared
class TestImportBytes:
    """``Importer.import_bytes``: the sender's bytes, hashed once, modalities."""

    def test_given_sha256_is_used_not_computed(self, registry: Registry) -> None:
        """With the caller's SHA-256 the archive computes none; without, exactly one."""
        importer = registry.importer
        archive = CountingArchive(registry.settings.archive_dir)
        importer.archive = archive
        data = CT_RDSR.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        outcome = importer.import_bytes(data, sha256=sha, source="scp")
        assert outcome.status is ImportStatus.IMPORTED
        assert outcome.archive_sha256 == sha
        assert archive.digests_computed == 0
        stored = registry.settings.archive_dir / sha[:2] / sha[2:4] / f"{sha}.dcm"
        assert stored.read_bytes() == data  # the sender's bytes, unchanged
        other = DX_RDSR.read_bytes()
        assert importer.import_bytes(other, source="file").status is ImportStatus.IMPORTED
        assert archive.digests_computed == 1

    def test_archive_refuses_a_malformed_digest(self, tmp_path: Path) -> None:
        """A digest that is not 64 lowercase hex digits is a caller's error, not a file name."""
        with pytest.raises(ValueError, match="is not a SHA-256 hex digest"):
            Archive(tmp_path).store(b"x", sha256="../../etc/passwd")

    def test_non_dicom_bytes_are_skipped_not_archived(self, registry: Registry) -> None:
        """Bytes that are not DICOM: skipped (not-dicom), nothing archived or listed."""
        outcome = registry.importer.import_bytes(b'{"a": 1}', source="sidecar.json")
        assert outcome.status is ImportStatus.SKIPPED
        assert outcome.kind == SkipKind.NOT_DICOM
        assert not list(registry.settings.archive_dir.rglob("*.dcm"))
        assert registry.rejects().empty

    def test_other_modality_is_skipped_not_archived(self, registry: Registry) -> None:
        """modalities={"CT"}: a DX RDSR is skipped and not archived; a CT RDSR is imported."""
        importer = registry.importer
        skipped = importer.import_bytes(DX_RDSR.read_bytes(), source="dx", modalities={"CT"})
        assert skipped.status is ImportStatus.SKIPPED
        assert skipped.kind == SkipKind.OTHER_MODALITY
        assert "dose object of DX, not of CT" in (skipped.reason or "")
        assert not list(registry.settings.archive_dir.rglob("*.dcm"))
        kept = importer.import_bytes(CT_RDSR.read_bytes(), source="ct", modalities={"ct"})
        assert kept.status is ImportStatus.IMPORTED
        assert list(registry.studies()["modality"]) == ["CT"]
        assert registry.rejects().empty and registry.ignored().empty

    def test_non_dose_object_with_modalities_is_still_ignored(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """A non-dose object of a pull with modalities is listed as ignored, with its origin."""
        path = write_image_without_dose(tmp_path / "mr.dcm")
        outcome = registry.importer.import_bytes(
            path.read_bytes(),
            source="C-GET from PACS at 10.0.0.9:104",
            origin="C-GET from PACS at 10.0.0.9:104",
            keep_non_dose=False,
            modalities={"CT"},
        )
        assert outcome.status is ImportStatus.IGNORED
        assert list(registry.ignored()["source"]) == ["C-GET from PACS at 10.0.0.9:104"]


@needs_shared
class TestReasonGroups:
    """Every group of :data:`kerma.services.intake.REASON_GROUPS` matches the reasons written."""

    def test_reasons_the_pipeline_writes_fall_in_their_groups(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """Damaged file, non-dose SR, strict mode, an older conflict rejection: one group each.

        A conflicting copy is held as a version since 0009 (``kerma conflicts``), not
        rejected; the ``conflict`` group still names the rejections older versions wrote.
        """
        folder = tmp_path / "in"
        folder.mkdir()
        data = CT_RDSR.read_bytes()
        (folder / "a-cut.dcm").write_bytes(data[: len(data) // 2])
        shutil.copy(DICOM_DIR / "ESR_non-dose.dcm", folder / "b-esr.dcm")
        shutil.copy(DICOM_DIR / "OR1-RF-RDSR-Siemens-Zee_adjusted.dcm", folder / "c-first.dcm")
        shutil.copy(DICOM_DIR / "RF-RDSR-Siemens-Zee.dcm", folder / "d-conflict.dcm")
        registry.import_paths([folder])
        assert len(registry.conflicts()) == 1  # d-conflict.dcm is held, not rejected
        legacy = registry.importer.archive.store(b"legacy conflicting copy")
        with registry.session(write=True) as session:  # as Kerma before 0009 wrote it
            session.add(
                RejectedObject(
                    archive_sha256=legacy.sha256,
                    archive_path=legacy.relative_path,
                    file_name="d-conflict.dcm",
                    reason=(
                        "Not imported: d-conflict.dcm has the same SOP Instance UID 1.2.3 as "
                        "an object already in the registry (c-first.dcm, received "
                        "2026-12-01 10:00) but different content (study_date 2016-05-10 vs "
                        "2016-05-12). The registry keeps the first copy."
                    ),
                    sop_instance_uid="1.2.3",
                    rejected_at=dt.datetime.now(dt.UTC),
                )
            )
        strict = Registry(settings=registry.settings.model_copy(update={"strict": True}))
        try:
            warned = next(
                p for p in sorted(DICOM_DIR.glob("*.dcm")) if strict.import_paths([p]).rejected == 1
            )
        finally:
            strict.close()
        with registry.session(write=False) as session:
            groups = {
                Path(r.file_name or "").name: reason_group(r.reason) for r in list_rejects(session)
            }
            by_filter = {
                name: sorted(
                    Path(r.file_name or "").name
                    for r in list_rejects(session, where=RejectFilter(reason=name))
                )
                for name in ("unreadable", "not-dose", "conflict", "strict", "other")
            }
        assert groups == {
            "a-cut.dcm": "unreadable",
            "b-esr.dcm": "not-dose",
            "d-conflict.dcm": "conflict",
            warned.name: "strict",
        }
        assert by_filter == {
            "unreadable": ["a-cut.dcm"],
            "not-dose": ["b-esr.dcm"],
            "conflict": ["d-conflict.dcm"],
            "strict": [warned.name],
            "other": [],
        }


@needs_shared
class TestRejectServices:
    """Listing, dates, purge and the known-instances check, on SQLite and PostgreSQL."""

    def test_dates_and_purge(self, registry: Registry, tmp_path: Path) -> None:
        """Dates select by UTC day; purge deletes rows, then the files, and counts them."""
        data = CT_RDSR.read_bytes()
        for i in range(3):
            path = tmp_path / f"cut{i}.dcm"
            path.write_bytes(data[: len(data) // (i + 2)])
            registry.import_paths([path])
        today = dt.datetime.now(dt.UTC).date()
        with registry.session(write=False) as session:
            assert count_rejects(session, where=RejectFilter(since=today, until=today)) == 3
            assert count_rejects(session, where=RejectFilter(until=today - dt.timedelta(1))) == 0
            rows = list_rejects(session, where=RejectFilter(reason="cut1"))
        (row,) = rows
        assert row.rejected_at.tzinfo is not None
        archived = registry.settings.archive_dir / row.archive_path
        assert archived.is_file()
        with registry.session() as session:
            purge = delete_rejects(session, where=RejectFilter(reason="cut1.dcm"))
        assert purge.listings_removed == 1
        assert archived.is_file()  # rows first, files after the commit
        remove_archived_files(registry.settings.archive_dir, purge)
        assert (purge.files_removed, purge.files_missing, purge.failed) == (1, 0, [])
        assert purge.bytes_removed == len(data) // 3
        assert not archived.exists()
        with registry.session(write=False) as session:
            assert count_rejects(session) == 2

    def test_known_instances(self, registry: Registry, tmp_path: Path) -> None:
        """Stored, rejected and ignored SOP Instance UIDs are known; others are not."""
        registry.import_paths([CT_RDSR])
        mr = write_image_without_dose(tmp_path / "mr.dcm")
        registry.import_paths([mr], keep_non_dose=False)
        registry.import_paths([DICOM_DIR / "ESR_non-dose.dcm"])

        def uid(path: Path) -> str:
            return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)

        wanted = [uid(CT_RDSR), uid(mr), uid(DICOM_DIR / "ESR_non-dose.dcm"), "1.2.3.4"]
        with registry.session(write=False) as session:
            assert known_instances(session, wanted) == set(wanted[:3])
            assert known_instances(session, []) == set()


def test_bare_dataset_is_imported(registry: Registry) -> None:
    """A bare data set (no preamble, no file meta) is DICOM: imported, not skipped."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared is not beside the repository")
    outcome = registry.importer.import_bytes(bare_dataset(CT_RDSR), source="bare")
    assert outcome.status is ImportStatus.IMPORTED

"""KERMA_ARCHIVE_MODE: original, encrypted (default), de-identified; reprocess in each.

Runs on SQLite and PostgreSQL (reprocess rewrites the registry's rows).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from kerma.api import Registry
from kerma.config import Settings
from kerma.db.models import DoseReport, Patient, RejectedObject, Study
from kerma.errors import ArchiveDecryptionError
from kerma.ingest.archive import ENCRYPTED_MAGIC, Archive
from kerma.ingest.pseudonym import KeyChain
from tests.conftest import DICOM_DIR
from tests.db_fixtures import make_settings

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

FILE = DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm"
PATIENT_ID = b"PLANTED-ID-4711"
PATIENT_NAME = "Planted^Patient"


def planted_copy(folder: Path) -> Path:
    """Write a copy of a real CT RDSR with a known Patient ID and name."""
    ds = pydicom.dcmread(FILE)
    ds.PatientID = PATIENT_ID.decode()
    ds.PatientName = PATIENT_NAME
    ds.ReferringPhysicianName = "Referring^Doctor"
    path = folder / "planted.dcm"
    ds.save_as(path)
    return path


def archived_files(settings: Settings) -> list[Path]:
    """Return the archived object files (not the spool or maps)."""
    return [p for p in settings.archive_dir.rglob("*.dcm") if len(p.stem) == 64]


def stored(reg: Registry) -> tuple[list[str], list[tuple[str, bool]]]:
    """Return (pseudonyms, [(study uid, is_non_patient)])."""
    with reg.session(write=False) as session:
        pseudonyms = sorted(session.scalars(select(Patient.pseudonym)))
        studies = sorted(session.execute(select(Study.study_instance_uid, Study.is_non_patient)))
    return pseudonyms, [tuple(r) for r in studies]


@needs_shared
class TestArchiveModes:
    """What the archive file holds, and that reprocess reads it back."""

    def test_default_mode_is_encrypted(self) -> None:
        """The default configuration keeps the archive encrypted."""
        assert Settings(_env_file=None).archive_mode == "encrypted"  # type: ignore[call-arg]

    def test_encrypted_archive_holds_no_clear_identity_and_reprocesses(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Encrypted: no Patient ID in the file; read() gives back the original bytes."""
        source = planted_copy(tmp_path)
        settings = make_settings(database_url, tmp_path, archive_mode="encrypted")
        with Registry(settings=settings) as reg:
            reg.import_paths([source])
            before = stored(reg)
            (path,) = archived_files(settings)
            blob = path.read_bytes()
            assert blob.startswith(ENCRYPTED_MAGIC)
            assert PATIENT_ID not in blob
            original = reg.importer.archive.read(path.relative_to(settings.archive_dir).as_posix())
            assert original == source.read_bytes()
            assert hashlib.sha256(original).hexdigest() == path.stem
            summary = reg.importer.reprocess()
            assert (summary.reports, summary.reports_failing, summary.missing_from_archive) == (
                1,
                0,
                0,
            )
            assert stored(reg) == before

    def test_encrypted_file_does_not_open_with_another_key(self, tmp_path: Path) -> None:
        """Only the key recovers the original: another key raises, no key raises."""
        archive = Archive(tmp_path, mode="encrypted", key=KeyChain([b"a" * 32]))
        where = archive.store(b"DICOM-ish bytes with PLANTED-ID-4711")
        assert PATIENT_ID not in (tmp_path / where.relative_path).read_bytes()
        other = Archive(tmp_path, mode="encrypted", key=KeyChain([b"b" * 32]))
        with pytest.raises(ArchiveDecryptionError, match="another key"):
            other.read(where.relative_path)
        with pytest.raises(ArchiveDecryptionError, match="no pseudonym key"):
            Archive(tmp_path).read(where.relative_path)

    def test_encrypted_files_survive_a_key_rotation(self, tmp_path: Path) -> None:
        """A file written before a rotation decrypts with the rotated chain."""
        old = KeyChain([b"a" * 32])
        where = Archive(tmp_path, mode="encrypted", key=old).store(b"before rotation")
        rotated = Archive(tmp_path, mode="encrypted", key=old.extended(b"n" * 32))
        assert rotated.read(where.relative_path) == b"before rotation"
        later = rotated.store(b"after rotation")
        assert rotated.read(later.relative_path) == b"after rotation"

    def test_deidentified_archive_has_no_identity_keeps_pseudonym_on_reprocess(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """De-identified: names and IDs removed from the file; pseudonym from the original."""
        source = planted_copy(tmp_path)
        settings = make_settings(database_url, tmp_path, archive_mode="deidentified")
        with Registry(settings=settings) as reg:
            reg.import_paths([source])
            before = stored(reg)
            assert len(before[0]) == 1  # the pseudonym was computed from the original
            (path,) = archived_files(settings)
            blob = path.read_bytes()
            assert PATIENT_ID not in blob
            assert b"Planted" not in blob and b"Referring" not in blob
            ds = pydicom.dcmread(path)
            assert "PatientID" not in ds and "PatientName" not in ds
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.SOPInstanceUID == pydicom.dcmread(source).SOPInstanceUID
            summary = reg.importer.reprocess()
            assert (summary.reports, summary.reports_failing) == (1, 0)
            assert stored(reg) == before
            with reg.session(write=False) as session:
                assert session.scalar(select(Study.patient_id)) is not None

    def test_deidentified_mode_keeps_unreadable_object_encrypted(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """An object pydicom cannot rewrite is kept (rejected) encrypted, never in clear."""
        damaged = tmp_path / "damaged.dcm"
        damaged.write_bytes(planted_copy(tmp_path).read_bytes()[:700])
        settings = make_settings(database_url, tmp_path, archive_mode="deidentified")
        with Registry(settings=settings) as reg:
            summary = reg.import_paths([damaged])
            assert summary.rejected == 1
            with reg.session(write=False) as session:
                rel = session.scalar(select(RejectedObject.archive_path))
            blob = (settings.archive_dir / rel).read_bytes()
            assert blob.startswith(ENCRYPTED_MAGIC)
            assert reg.importer.archive.read(rel) == damaged.read_bytes()

    def test_original_mode_keeps_the_bytes_as_received(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Original: the archive file is the object byte for byte (identity included)."""
        source = planted_copy(tmp_path)
        settings = make_settings(database_url, tmp_path, archive_mode="original")
        with Registry(settings=settings) as reg:
            reg.import_paths([source])
            with reg.session(write=False) as session:
                rel = session.scalar(select(DoseReport.archive_path))
        assert (settings.archive_dir / rel).read_bytes() == source.read_bytes()

"""The pseudonym key at rest: apart from the archive, checked, never silently replaced, rotated.

Every test runs on SQLite and PostgreSQL (issue 11, item 5: "starting with a different
key is refused").
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from kerma.api import Registry
from kerma.config import Settings
from kerma.db.keys import KEYED_HASH_COLUMNS
from kerma.db.models import Patient
from kerma.errors import ConfigurationError
from kerma.ingest.pseudonym import PENDING_SUFFIX, KeyChain, read_key_file, rekey
from kerma.records import PatientIdentity
from kerma.services.keys import key_status, open_key, rotate_key
from tests.conftest import DICOM_DIR
from tests.db_fixtures import make_settings

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

FILE = DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm"


def key_settings(url: str, folder: Path, **overrides: object) -> Settings:
    """Settings of a registry whose key lives in a key file (not KERMA_PSEUDONYM_KEY)."""
    values: dict[str, object] = {
        "pseudonym_key": None,
        "key_file": folder / "kerma-key" / "kerma.key",
    }
    values.update(overrides)
    return make_settings(url, folder, **values)


def pseudonyms(reg: Registry) -> list[str]:
    """Return the stored pseudonyms, sorted."""
    with reg.session(write=False) as session:
        return sorted(session.scalars(select(Patient.pseudonym)))


@needs_shared
class TestOpenKey:
    """open_key: first use, missing key, other key."""

    def test_first_use_creates_key_apart_and_records_fingerprint(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A new registry gets a 0600 key outside the archive and its fingerprint stored."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
            status = key_status(settings, reg.session_factory)
        key_file = settings.key_file
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        assert not key_file.resolve().is_relative_to(settings.archive_dir.resolve())
        chain = read_key_file(key_file)
        assert chain is not None
        assert status.recorded_fingerprint == chain.fingerprint()
        assert status.keyed_hashes["patient.pseudonym"] == 1
        assert chain.keys[0].decode() not in status.recorded_fingerprint

    def test_missing_key_with_pseudonyms_is_refused_not_recreated(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Deleting the key stops Kerma with how to restore it; no new key is made."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
        settings.key_file.unlink()
        with (
            Registry(settings=settings) as reg,
            pytest.raises(ConfigurationError, match=r"is missing.*Restore the key file"),
        ):
            open_key(settings, reg.session_factory)
        assert not settings.key_file.exists()

    def test_different_key_is_refused(self, database_url: str, tmp_path: Path) -> None:
        """Another key (file replaced) is refused: its fingerprint differs."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
        settings.key_file.write_text("f" * 64 + "\n")
        with (
            Registry(settings=settings) as reg,
            pytest.raises(ConfigurationError, match="not the key this registry's pseudonyms"),
        ):
            reg.import_paths([FILE])

    def test_different_environment_key_is_refused(self, database_url: str, tmp_path: Path) -> None:
        """KERMA_PSEUDONYM_KEY is checked against the registry too."""
        settings = make_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
        other = make_settings(database_url, tmp_path, pseudonym_key="0" * 40)
        with (
            Registry(settings=other) as reg,
            pytest.raises(ConfigurationError, match="KERMA_PSEUDONYM_KEY is not the key"),
        ):
            open_key(other, reg.session_factory)

    def test_legacy_key_in_archive_is_moved_out(self, database_url: str, tmp_path: Path) -> None:
        """A key an earlier version kept in <archive>/pseudonym.key moves to KERMA_KEY_FILE."""
        settings = key_settings(database_url, tmp_path)
        legacy = settings.archive_dir / "pseudonym.key"
        legacy.parent.mkdir(parents=True)
        legacy.write_text("a" * 64 + "\n")
        with Registry(settings=settings) as reg:
            chain = open_key(settings, reg.session_factory)
        assert chain.keys == (b"a" * 64,)
        assert not legacy.exists()
        assert stat.S_IMODE(settings.key_file.stat().st_mode) == 0o600


@needs_shared
class TestRotate:
    """kerma key rotate."""

    def test_rotation_rekeys_pseudonyms_and_new_imports_match(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Stored pseudonyms become HMAC(new, old); a re-import finds the same patient."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
            before = pseudonyms(reg)
            new_key = tmp_path / "new.key"
            new_key.write_text("n" * 64 + "\n")
            result = rotate_key(settings, reg.session_factory, new_key_file=new_key)
        assert result.rekeyed["patient.pseudonym"] == 1
        assert set(result.rekeyed) == {f"{t}.{c}" for t, c in KEYED_HASH_COLUMNS}
        assert result.generations == 2
        chain = read_key_file(settings.key_file)
        assert chain is not None and chain.keys[-1] == b"n" * 64
        assert not settings.key_file.with_name("kerma.key" + PENDING_SUFFIX).exists()
        with Registry(settings=settings) as reg:
            after = pseudonyms(reg)
            assert after == [rekey(b"n" * 64, before[0])]
            # a new object of the same patient gets the rotated pseudonym, not a second one
            other = tmp_path / "copy.dcm"
            import pydicom

            ds = pydicom.dcmread(FILE)
            ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
            ds.save_as(other)
            reg.import_paths([other])
            assert pseudonyms(reg) == after
        with Registry(settings=settings) as reg:
            assert key_status(settings, reg.session_factory).matches

    def test_old_key_no_longer_opens_the_registry(self, database_url: str, tmp_path: Path) -> None:
        """After rotation the previous key file is refused."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
            old_text = settings.key_file.read_text()
            rotate_key(settings, reg.session_factory)
        settings.key_file.write_text(old_text)
        with (
            Registry(settings=settings) as reg,
            pytest.raises(ConfigurationError, match="not the key"),
        ):
            open_key(settings, reg.session_factory)

    def test_interrupted_rotation_is_completed_on_open(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A crash after the commit (new key only in <key>.new) is completed by open_key."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
            old_text = settings.key_file.read_text()
            rotate_key(settings, reg.session_factory)
        new_text = settings.key_file.read_text()
        pending = settings.key_file.with_name("kerma.key" + PENDING_SUFFIX)
        pending.write_text(new_text)
        settings.key_file.write_text(old_text)  # as if os.replace had not run
        with Registry(settings=settings) as reg:
            chain = open_key(settings, reg.session_factory)
        assert chain.generations == 2
        assert settings.key_file.read_text() == new_text

    def test_rotation_refuses_short_new_key(self, database_url: str, tmp_path: Path) -> None:
        """A new key under 32 bytes is refused and nothing changes."""
        settings = key_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths([FILE])
            before = pseudonyms(reg)
            short = tmp_path / "short.key"
            short.write_text("abc\n")
            with pytest.raises(ConfigurationError, match="at least 32"):
                rotate_key(settings, reg.session_factory, new_key_file=short)
            assert pseudonyms(reg) == before


def test_pseudonym_of_rotated_chain_equals_rekeyed_value() -> None:
    """The chain computes for a new object exactly what rotation stored for an old one."""
    from kerma.ingest.pseudonym import Pseudonymizer

    old = KeyChain([b"o" * 32])
    identity = PatientIdentity(patient_id="123", issuer_of_patient_id="H")
    stored = Pseudonymizer(old, []).pseudonym(identity)
    assert stored is not None
    rotated = Pseudonymizer(old.extended(b"n" * 32), []).pseudonym(identity)
    assert rotated == rekey(b"n" * 32, stored)


@needs_shared
@pytest.mark.parametrize("command", ["listen", "serve"])
def test_network_services_refuse_to_start_with_another_key(tmp_path: Path, command: str) -> None:
    """kerma listen / serve stop at start (exit 2) when the key is not the registry's."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.net.conftest import free_port

    settings = key_settings(f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path)
    with Registry(settings=settings) as reg:
        reg.import_paths([FILE])
    settings.key_file.write_text("e" * 64 + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERMA_")}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        KERMA_DATABASE_URL=settings.database_url,
        KERMA_ARCHIVE_DIR=str(settings.archive_dir),
        KERMA_KEY_FILE=str(settings.key_file),
    )
    done = subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", command, "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "is not the key this registry's pseudonyms were made with" in " ".join(
        done.stderr.split()
    )


@needs_shared
def test_short_key_of_an_existing_registry_can_be_rotated_away(
    database_url: str, tmp_path: Path
) -> None:
    """A registry made with a short key is refused, and `rotate` moves it to a long one."""
    settings = key_settings(database_url, tmp_path)
    settings.key_file.parent.mkdir(parents=True)
    settings.key_file.write_text("short\n")
    with Registry(settings=settings) as reg:
        with pytest.raises(ConfigurationError, match="at least 32"):
            reg.import_paths([FILE])
        # what an earlier version did: the pseudonym made with the short key
        from kerma.ingest.pseudonym import Pseudonymizer
        from kerma.services.derive import make_importer

        with reg.session() as session:
            session.add(Patient(pseudonym=Pseudonymizer(b"short", []).keyed_hash("H\x00X")))
        result = rotate_key(settings, reg.session_factory)
        assert result.generations == 2
        make_importer(settings, session_factory=reg.session_factory)  # opens now
        expected = Pseudonymizer(read_key_file(settings.key_file), []).keyed_hash("H\x00X")
        assert pseudonyms(reg) == [expected]


@needs_shared
def test_key_commands(tmp_path: Path) -> None:
    """`kerma key status` shows the matching fingerprint; `kerma key rotate` re-keys."""
    from typer.testing import CliRunner

    from kerma.cli.main import app

    settings = key_settings(f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path)
    with Registry(settings=settings) as reg:
        reg.import_paths([FILE])
    env = {
        "KERMA_DATABASE_URL": settings.database_url,
        "KERMA_ARCHIVE_DIR": str(settings.archive_dir),
        "KERMA_KEY_FILE": str(settings.key_file),
        "COLUMNS": "200",
    }
    runner = CliRunner()
    status = runner.invoke(app, ["key", "status"], env=env, catch_exceptions=False)
    assert status.exit_code == 0, status.output
    fingerprint = read_key_file(settings.key_file).fingerprint()  # type: ignore[union-attr]
    assert f"fingerprint: {fingerprint}" in status.output
    assert "patient.pseudonym: 1 keyed hashes" in status.output
    rotated = runner.invoke(app, ["key", "rotate", "--yes"], env=env, catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.output
    # the patient pseudonym and the study's keyed accession number (regfeat, #10)
    assert "2 keyed hashes re-keyed in one transaction" in rotated.output
    assert "study.accession_pseudonym 1" in " ".join(rotated.output.split())
    assert read_key_file(settings.key_file).generations == 2  # type: ignore[union-attr]
    settings.key_file.write_text("d" * 64 + "\n")
    status = runner.invoke(app, ["key", "status"], env=env, catch_exceptions=False)
    assert status.exit_code == 1
    assert "NOT the registry's key" in status.output


@needs_shared
def test_rotation_rekeys_held_versions_too(database_url: str, tmp_path: Path) -> None:
    """report_version.patient_pseudonym (conflicts) moves with patient.pseudonym."""
    from kerma.db.models import ReportVersion

    settings = key_settings(database_url, tmp_path)
    zee, adjusted = (
        DICOM_DIR / "RF-RDSR-Siemens-Zee.dcm",
        DICOM_DIR / "RF-RDSR-Siemens-Zee_adjusted.dcm",
    )
    with Registry(settings=settings) as reg:
        reg.import_paths([zee])
        assert reg.import_paths([adjusted]).conflicts == 1
        with reg.session(write=False) as session:
            before = sorted(session.scalars(select(ReportVersion.patient_pseudonym)))
        result = rotate_key(settings, reg.session_factory)
        new_key = read_key_file(settings.key_file).keys[-1]  # type: ignore[union-attr]
        assert result.rekeyed["report_version.patient_pseudonym"] == len(before) == 2
        with reg.session(write=False) as session:
            after = sorted(session.scalars(select(ReportVersion.patient_pseudonym)))
        assert after == sorted(rekey(new_key, p) for p in before)
        assert set(after) <= set(pseudonyms(reg))


@needs_shared
def test_patient_and_accession_lookup_after_rotation(database_url: str, tmp_path: Path) -> None:
    """After ``kerma key rotate`` a typed Patient ID and Accession Number still find the study.

    Both keyed hashes (``patient.pseudonym``, ``study.accession_pseudonym``) are re-keyed
    by the chain, and the lookup hashes the typed value with the whole chain.
    """
    import pydicom

    source = DICOM_DIR / "RF-RDSR-Philips_Allura.dcm"
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    settings = key_settings(database_url, tmp_path)
    with Registry(settings=settings) as reg:
        reg.import_paths([source])
        before = reg.patient(str(ds.PatientID), issuer=str(ds.get("IssuerOfPatientID") or ""))
        result = rotate_key(settings, reg.session_factory)
        assert result.rekeyed["study.accession_pseudonym"] == 1
    with Registry(settings=settings) as reg:
        by_id = reg.patient(str(ds.PatientID), issuer=str(ds.get("IssuerOfPatientID") or ""))
        by_accession = reg.patient(accession=str(ds.AccessionNumber))
    uid = str(ds.StudyInstanceUID)
    assert set(by_id.studies["study_instance_uid"]) == {uid}
    assert set(by_accession.studies["study_instance_uid"]) == {uid}
    assert set(before.studies["study_instance_uid"]) == {uid}

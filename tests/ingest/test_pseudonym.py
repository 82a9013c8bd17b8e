"""Pseudonyms (HMAC-SHA-256) and the non-patient flag."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from kerma.config import DEFAULT_NON_PATIENT_PATTERNS
from kerma.errors import ConfigurationError
from kerma.ingest.pseudonym import (
    KeyChain,
    Pseudonymizer,
    check_key_location,
    create_key_file,
    read_key_file,
    rekey,
)
from kerma.records import PatientIdentity


class TestKeyFile:
    """Key files and key chains."""

    def test_new_key_file_is_0600_in_a_0700_folder_whatever_the_umask(self, tmp_path: Path) -> None:
        """A key file is created 0600 (its new folder 0700) even under umask 000."""
        path = tmp_path / "keys" / "kerma.key"
        old = os.umask(0)
        try:
            chain = create_key_file(path)
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert len(chain.keys[-1]) == 64
        assert read_key_file(path).fingerprint() == chain.fingerprint()

    def test_short_key_is_refused(self, tmp_path: Path) -> None:
        """A key shorter than 32 bytes is a configuration error that says so."""
        path = tmp_path / "kerma.key"
        path.write_text("x\n")
        with pytest.raises(ConfigurationError, match=r"1 bytes long and Kerma needs at least 32"):
            read_key_file(path)

    def test_empty_key_file_is_refused(self, tmp_path: Path) -> None:
        """An empty key file is a configuration error, not a new key."""
        path = tmp_path / "kerma.key"
        path.write_text("")
        with pytest.raises(ConfigurationError, match="holds no key"):
            read_key_file(path)

    def test_missing_key_file_reads_as_none(self, tmp_path: Path) -> None:
        """A missing key file is ``None`` (the caller decides whether to create one)."""
        assert read_key_file(tmp_path / "absent.key") is None

    def test_chain_of_one_key_is_plain_hmac(self) -> None:
        """With one key the keyed hash is HMAC-SHA-256(key, message)."""
        key = b"k" * 32
        expected = hmac.new(key, b"m", hashlib.sha256).hexdigest()
        assert KeyChain([key]).digest(b"m") == expected

    def test_extended_chain_rekeys_an_old_hash(self) -> None:
        """A chain with a new key gives HMAC(new, old hash): what rotation stores."""
        old, new = KeyChain([b"a" * 32]), b"b" * 32
        assert old.extended(new).digest(b"m") == rekey(new, old.digest(b"m"))
        assert old.extended(new).fingerprint() != old.fingerprint()

    def test_repr_hides_the_key(self) -> None:
        """A key never appears in a repr (tracebacks, logs)."""
        assert "aaaa" not in repr(KeyChain([b"a" * 32]))

    def test_key_inside_the_archive_is_refused(self, tmp_path: Path) -> None:
        """KERMA_KEY_FILE inside KERMA_ARCHIVE_DIR is refused with the way out."""
        with pytest.raises(ConfigurationError, match="inside the archive folder"):
            check_key_location(tmp_path / "archive" / "k.key", tmp_path / "archive")
        check_key_location(tmp_path / "kerma-key" / "k.key", tmp_path / "archive")


class TestPseudonymizer:
    """Pseudonymizer."""

    def test_pseudonym_is_hmac_of_issuer_and_id(self) -> None:
        """The pseudonym is HMAC-SHA-256(key, issuer NUL id) in hex."""
        p = Pseudonymizer(b"k", [])
        expected = hmac.new(b"k", b"HOSP\x00123", hashlib.sha256).hexdigest()
        identity = PatientIdentity(patient_id="123", issuer_of_patient_id="HOSP")
        assert p.pseudonym(identity) == expected
        assert p.pseudonym(PatientIdentity(patient_id="123")) != expected

    def test_no_patient_id_gives_no_pseudonym(self) -> None:
        """Without a Patient ID there is no pseudonym."""
        assert Pseudonymizer(b"k", []).pseudonym(PatientIdentity(patient_name="X")) is None

    @pytest.mark.parametrize(
        ("identity", "description", "expected"),
        [
            (PatientIdentity(patient_id="PHANTOM-QA-001"), None, True),
            (PatientIdentity(patient_name="QA^DailyPhantom"), None, True),
            (PatientIdentity(patient_id="123"), "Monthly QC", True),
            (PatientIdentity(patient_id="123", patient_name="Doe^Jane"), "CT head", False),
            (PatientIdentity(patient_id="AQUA7"), "Aquarium", False),  # 'qa' inside a word
        ],
        ids=["id", "name", "description", "patient", "substring"],
    )
    def test_default_patterns_flag_qa(self, identity, description, expected) -> None:
        """The default patterns match QA/phantom words, not words that contain them."""
        p = Pseudonymizer(b"k", DEFAULT_NON_PATIENT_PATTERNS)
        assert p.is_non_patient(identity, description) is expected

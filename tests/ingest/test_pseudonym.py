"""Pseudonyms (HMAC-SHA-256) and the non-patient flag."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from kerma.config import DEFAULT_NON_PATIENT_PATTERNS
from kerma.errors import ConfigurationError
from kerma.ingest.pseudonym import KEY_FILE_NAME, Pseudonymizer, load_or_create_key
from kerma.records import PatientIdentity


class TestKey:
    """load_or_create_key."""

    def test_missing_key_file_is_created_0600_and_reused(self, tmp_path: Path) -> None:
        """A random key is written once with mode 0600 and read back the next time."""
        key = load_or_create_key(tmp_path)
        path = tmp_path / KEY_FILE_NAME
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(key) == 64
        assert load_or_create_key(tmp_path) == key

    def test_configured_key_wins_and_writes_nothing(self, tmp_path: Path) -> None:
        """KERMA_PSEUDONYM_KEY is used as is; no key file is created."""
        assert load_or_create_key(tmp_path, "secret") == b"secret"
        assert not (tmp_path / KEY_FILE_NAME).exists()

    def test_empty_key_file_raises(self, tmp_path: Path) -> None:
        """An empty key file is a configuration error, not a new key."""
        (tmp_path / KEY_FILE_NAME).write_text("")
        with pytest.raises(ConfigurationError, match="the file is empty"):
            load_or_create_key(tmp_path)


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

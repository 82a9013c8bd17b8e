"""Patient pseudonyms, keyed accession numbers and the non-patient (QA / phantom) flag.

Every keyed hash Kerma computes is made here, with one key (so a key rotation covers
them all):

- the patient pseudonym, HMAC-SHA-256(key, issuer + NUL + Patient ID) in hex (DESIGN.md
  "Storage"): one patient's doses accumulate without storing who they are, and without
  the key the pseudonym cannot be recomputed from a guessed Patient ID. Stored in
  ``patient.pseudonym``.
- the accession pseudonym, HMAC-SHA-256(key, ``"accession"`` + NUL + Accession Number)
  in hex; the prefix keeps it apart from a patient pseudonym of the same text. Stored in
  ``study.accession_pseudonym`` (the clear number only when ``KERMA_ACCESSION_IN_CLEAR``).

The key is ``KERMA_PSEUDONYM_KEY``, or a random key created once in
``<archive_dir>/pseudonym.key`` (mode 0600). Patient name, ID, birth date and accession
number are used here in memory only. The short display form of a pseudonym
(``P-…``) is :func:`kerma.records.display_pseudonym`; it needs no key.

Must not import ``kerma.db`` or any interface package.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from kerma.errors import ConfigurationError
from kerma.records import PatientIdentity

KEY_FILE_NAME = "pseudonym.key"

#: Domain prefix of the accession-number hash (keeps it apart from patient pseudonyms).
ACCESSION_DOMAIN = "accession"


def load_or_create_key(archive_dir: Path, configured: str | None = None) -> bytes:
    """Return the pseudonym key: ``configured``, else the key file, created when missing.

    Parameters
    ----------
    archive_dir : pathlib.Path
        Folder of ``pseudonym.key``.
    configured : str, optional
        ``KERMA_PSEUDONYM_KEY``; takes precedence.

    Raises
    ------
    ConfigurationError
        When the key file exists but is empty or cannot be read.
    """
    if configured:
        return configured.encode("utf-8")
    path = Path(archive_dir) / KEY_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"Unable to read the pseudonym key {path}: {exc}. Check its permissions."
        ) from exc
    if not key:
        raise ConfigurationError(
            f"Unable to use the pseudonym key {path}: the file is empty. Restore it from a "
            "backup (pseudonyms depend on it) or set KERMA_PSEUDONYM_KEY."
        )
    return key.encode("utf-8")


class Pseudonymizer:
    """Turn a :class:`~kerma.records.PatientIdentity` into a pseudonym and a QA flag.

    Parameters
    ----------
    key : bytes
        HMAC key.
    non_patient_patterns : iterable of str
        Regular expressions (case-insensitive), searched in Patient ID, Patient's Name
        and Study Description.
    """

    def __init__(self, key: bytes, non_patient_patterns: Iterable[str]) -> None:
        self._key = key
        self._patterns = [re.compile(p, re.IGNORECASE) for p in non_patient_patterns]

    def _hash(self, message: str) -> str:
        """Return HMAC-SHA-256(key, message) in hex (64 characters)."""
        return hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def patient_pseudonym(self, patient_id: str | None, issuer: str | None = None) -> str | None:
        """Return the pseudonym of a typed or read Patient ID, ``None`` without an ID.

        Parameters
        ----------
        patient_id : str or None
            (0010,0020) Patient ID, surrounding blanks ignored.
        issuer : str, optional
            (0010,0021) Issuer of Patient ID, surrounding blanks ignored.

        Returns
        -------
        str or None
            HMAC-SHA-256(key, issuer + NUL + Patient ID) in hex.
        """
        patient_id = (patient_id or "").strip()
        if not patient_id:
            return None
        return self._hash(f"{(issuer or '').strip()}\x00{patient_id}")

    def pseudonym(self, identity: PatientIdentity) -> str | None:
        """Return the pseudonym of an identity (:meth:`patient_pseudonym`)."""
        return self.patient_pseudonym(identity.patient_id, identity.issuer_of_patient_id)

    def accession_pseudonym(self, accession_number: str | None) -> str | None:
        """Return the keyed hash of an (0008,0050) Accession Number, ``None`` without one.

        HMAC-SHA-256(key, ``"accession"`` + NUL + number) in hex, blanks stripped.
        """
        accession_number = (accession_number or "").strip()
        if not accession_number:
            return None
        return self._hash(f"{ACCESSION_DOMAIN}\x00{accession_number}")

    def is_non_patient(self, identity: PatientIdentity, study_description: str | None) -> bool:
        """Return whether a non-patient pattern matches the ID, name or study description."""
        texts = [t for t in (identity.patient_id, identity.patient_name, study_description) if t]
        return any(p.search(t) for p in self._patterns for t in texts)

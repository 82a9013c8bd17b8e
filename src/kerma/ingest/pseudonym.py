"""Patient pseudonyms, keyed accession numbers, the pseudonym key, and the non-patient flag.

Every keyed hash Kerma computes is made here, with one key (so a key rotation covers
them all; ``kerma.db.keys.KEYED_HASH_COLUMNS``):

- the patient pseudonym, issuer + NUL + Patient ID (``patient.pseudonym``);
- the accession pseudonym, ``"accession"`` + NUL + Accession Number; the prefix keeps
  it apart from a patient pseudonym of the same text (``study.accession_pseudonym``;
  the clear number only with ``KERMA_ACCESSION_IN_CLEAR``). The short display form of
  a pseudonym (``P-…``) is :func:`kerma.records.display_pseudonym`; it needs no key.

The pseudonym is the keyed hash HMAC-SHA-256(key, issuer + NUL + Patient ID) (RFC 2104,
FIPS 198-1): one patient's doses accumulate without storing who they are, and without
the key the pseudonym cannot be recomputed from a guessed Patient ID (GDPR Art. 4(5)
"pseudonymisation": the additional information is kept separately). Patient name, ID
and birth date are used here in memory only.

The key is a :class:`KeyChain`: the key file (``KERMA_KEY_FILE``, default
``kerma-key/kerma.key``, never inside the archive folder) holds one key per line, the
first one the registry was created with and one more per ``kerma key rotate``. A
keyed hash is computed with every key in turn, ``h = HMAC(k1, m)``, then ``h =
HMAC(k2, hex(h))`` ... so that a rotation re-keys the stored hashes without their
originals, ``new = HMAC(k_new, old)`` (``docs/privacy.md``). With one key (every
registry that was never rotated) this is plain HMAC-SHA-256(key, m).

:class:`KeyChain` ``fingerprint`` is HMAC of a fixed label: it tells one key from
another and reveals nothing of it; ``kerma.services.keys`` stores it in the registry
at first use and refuses to run with another key.

Must not import ``kerma.db`` or any interface package.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from kerma.errors import ConfigurationError
from kerma.files import create_private_file, fsync_dir, make_private_dirs
from kerma.records import PatientIdentity

#: Name of the key file that earlier versions kept inside the archive folder; it is
#: moved to ``KERMA_KEY_FILE`` on first use (:func:`adopt_legacy_key`).
LEGACY_KEY_FILE_NAME = "pseudonym.key"

#: Kept for callers of earlier versions.
KEY_FILE_NAME = LEGACY_KEY_FILE_NAME

#: Shortest key Kerma accepts, in bytes (256 bits: the HMAC-SHA-256 block security
#: level; RFC 2104 Section 3 advises keys no shorter than the hash output, 32 bytes).
MIN_KEY_BYTES = 32

#: The label whose keyed hash is the key's fingerprint.
FINGERPRINT_LABEL = b"kerma pseudonym key fingerprint v1"

#: Suffix of the key file written during ``kerma key rotate`` before the registry commits.
PENDING_SUFFIX = ".new"

#: Domain prefix of the accession-number hash (keeps it apart from patient pseudonyms).
ACCESSION_DOMAIN = "accession"


def new_key_text() -> str:
    """Return a new random key: 32 random bytes as 64 hex digits (:mod:`secrets`)."""
    return secrets.token_hex(32)


class KeyChain:
    """The pseudonym key: one or more keys, oldest first.

    Parameters
    ----------
    keys : sequence of bytes
        The keys, oldest first; at least one.
    source : str, optional
        Where they were read from, for messages.
    check_length : bool, optional
        Refuse a newest key shorter than :data:`MIN_KEY_BYTES` (default ``True``).

    Raises
    ------
    ConfigurationError
        When there is no key, or the newest key is shorter than :data:`MIN_KEY_BYTES`
        (older keys are kept only to recompute existing pseudonyms and are not checked).
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        source: str = "the pseudonym key",
        check_length: bool = True,
    ) -> None:
        if not keys or not all(keys):
            raise ConfigurationError(
                f"Unable to use {source}: it holds no key. Restore the key file from a "
                "backup (the registry's pseudonyms depend on it)."
            )
        if check_length and len(keys[-1]) < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"Unable to use {source}: the key is {len(keys[-1])} bytes long and Kerma "
                f"needs at least {MIN_KEY_BYTES} (256 bits), or a guessed key would "
                "reveal who the pseudonyms are. Use a random key of 64 hex digits, e.g. "
                "from `python -c 'import secrets; print(secrets.token_hex(32))'`. If the "
                "registry already holds pseudonyms made with this short key, move them to "
                "a new key with `kerma key rotate`."
            )
        self.keys = tuple(keys)
        self.source = source

    def __repr__(self) -> str:  # never show a key in a repr or a traceback
        return f"KeyChain(<{len(self.keys)} key(s) from {self.source}>)"

    @property
    def generations(self) -> int:
        """How many keys the chain holds (1 + the number of rotations)."""
        return len(self.keys)

    def digest(self, message: bytes) -> str:
        """Return the keyed hash of ``message``: chained HMAC-SHA-256, 64 hex digits."""
        value = hmac.new(self.keys[0], message, hashlib.sha256).hexdigest()
        for key in self.keys[1:]:
            value = rekey(key, value)
        return value

    def fingerprint(self) -> str:
        """Return the fingerprint of the chain: the keyed hash of a fixed label (hex)."""
        return self.digest(FINGERPRINT_LABEL)

    def extended(self, key: bytes) -> KeyChain:
        """Return the chain with ``key`` added as the newest key."""
        return KeyChain([*self.keys, key], source=self.source)

    def to_text(self) -> str:
        """Return the key file text: one key per line, oldest first."""
        return "".join(k.decode("utf-8") + "\n" for k in self.keys)


def rekey(key: bytes, value: str) -> str:
    """Return a stored keyed hash moved to one more key: HMAC-SHA-256(key, value), hex."""
    return hmac.new(key, value.encode("ascii"), hashlib.sha256).hexdigest()


def parse_key_text(text: str, *, source: str, check_length: bool = True) -> KeyChain:
    """Return the :class:`KeyChain` of a key file's text (one key per line).

    Raises
    ------
    ConfigurationError
        As :class:`KeyChain`.
    """
    keys = [line.strip().encode("utf-8") for line in text.splitlines() if line.strip()]
    return KeyChain(keys, source=source, check_length=check_length)


def read_key_file(path: Path, *, check_length: bool = True) -> KeyChain | None:
    """Return the key chain of a key file, ``None`` when the file does not exist.

    ``check_length=False`` accepts a short newest key (only to rotate away from it).

    Raises
    ------
    ConfigurationError
        When the file cannot be read, is empty or its newest key is too short.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"Unable to read the pseudonym key {path}: {exc}. Check its permissions "
            "(it must be readable by the user that runs Kerma)."
        ) from exc
    return parse_key_text(text, source=f"the pseudonym key file {path}", check_length=check_length)


def write_key_file(path: Path, chain: KeyChain, *, exclusive: bool = True) -> None:
    """Write ``chain`` to ``path`` with mode 0600 (folder 0700), flushed to disk.

    Parameters
    ----------
    path : pathlib.Path
        The key file.
    chain : KeyChain
        The keys.
    exclusive : bool, optional
        Fail when the file exists (default); ``False`` replaces it.

    Raises
    ------
    FileExistsError
        With ``exclusive`` when the file exists (another process created it first).
    OSError
        When the file cannot be written.
    """
    path = Path(path)
    make_private_dirs(path.parent)
    if not exclusive:
        path.unlink(missing_ok=True)
    fd = create_private_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(chain.to_text())
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(path.parent)


def create_key_file(path: Path) -> KeyChain:
    """Create a key file with a new random key, or read the one another process made.

    Raises
    ------
    ConfigurationError
        When a file made meanwhile cannot be read.
    """
    chain = KeyChain([new_key_text().encode("ascii")], source=f"the pseudonym key file {path}")
    try:
        write_key_file(path, chain)
    except FileExistsError:
        existing = read_key_file(path)
        if existing is None:  # pragma: no cover - deleted between the two calls
            raise
        return existing
    return chain


def adopt_legacy_key(archive_dir: Path, key_file: Path) -> KeyChain | None:
    """Move the key an earlier version kept in ``<archive_dir>/pseudonym.key`` to ``key_file``.

    Returns
    -------
    KeyChain or None
        The moved key, or ``None`` when there is no legacy key file.
    """
    legacy = Path(archive_dir) / LEGACY_KEY_FILE_NAME
    chain = read_key_file(legacy)
    if chain is None:
        return None
    try:
        write_key_file(key_file, chain)
    except FileExistsError:
        return read_key_file(key_file)
    legacy.unlink()
    return chain


def check_key_location(key_file: Path, archive_dir: Path) -> None:
    """Refuse a key file inside the archive folder (a copy of the archive must not carry it).

    Raises
    ------
    ConfigurationError
        When ``key_file`` is inside ``archive_dir``.
    """
    key = Path(key_file).resolve()
    archive = Path(archive_dir).resolve()
    if key.is_relative_to(archive):
        raise ConfigurationError(
            f"Unable to use the pseudonym key {key_file}: it is inside the archive folder "
            f"{archive_dir}, so whoever copies the archive also gets the key that protects "
            "it. Set KERMA_KEY_FILE to a path outside KERMA_ARCHIVE_DIR (default "
            "kerma-key/kerma.key) and move the key file there."
        )


def load_or_create_key(archive_dir: Path, configured: str | None = None) -> bytes:
    """Return the newest key of ``configured`` or of ``<archive_dir>/pseudonym.key``.

    Kept for earlier callers; Kerma itself opens the key with
    :func:`kerma.services.keys.open_key`, which checks it against the registry.

    Raises
    ------
    ConfigurationError
        When the key is too short or the file cannot be read.
    """
    if configured:
        return KeyChain([configured.encode("utf-8")], source="KERMA_PSEUDONYM_KEY").keys[-1]
    path = Path(archive_dir) / LEGACY_KEY_FILE_NAME
    chain = read_key_file(path) or create_key_file(path)
    return chain.keys[-1]


class Pseudonymizer:
    """Turn a :class:`~kerma.records.PatientIdentity` into a pseudonym and a QA flag.

    Parameters
    ----------
    key : KeyChain or bytes
        The pseudonym key (bytes: a chain of that one key, not length-checked).
    non_patient_patterns : iterable of str
        Regular expressions (case-insensitive), searched in Patient ID, Patient's Name
        and Study Description.
    """

    def __init__(self, key: KeyChain | bytes, non_patient_patterns: Iterable[str]) -> None:
        if isinstance(key, bytes | bytearray):
            key = KeyChain([bytes(key)], source="a key given in code", check_length=False)
        self.key_chain = key
        self._patterns = [re.compile(p, re.IGNORECASE) for p in non_patient_patterns]

    def keyed_hash(self, message: str) -> str:
        """Return the keyed hash of ``message`` (UTF-8) with the pseudonym key, hex.

        Every keyed-hash column of the registry must be made with this method (or
        :meth:`KeyChain.digest`), so that ``kerma key rotate`` re-keys it (the column
        is then listed in ``kerma.db.keys.KEYED_HASH_COLUMNS``). Give each kind of
        value its own prefix in ``message`` (domain separation).
        """
        return self.key_chain.digest(message.encode("utf-8"))

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
        return self.keyed_hash(f"{(issuer or '').strip()}\x00{patient_id}")

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
        return self.keyed_hash(f"{ACCESSION_DOMAIN}\x00{accession_number}")

    def is_non_patient(self, identity: PatientIdentity, study_description: str | None) -> bool:
        """Return whether a non-patient pattern matches the ID, name or study description."""
        texts = [t for t in (identity.patient_id, identity.patient_name, study_description) if t]
        return any(p.search(t) for p in self._patterns for t in texts)

"""Content-addressed archive of every received object (DESIGN.md "Archive first").

Each object is kept byte for byte under ``<archive_dir>/aa/bb/<sha256>.dcm``, where
``aa`` and ``bb`` are the first two pairs of hex digits of the SHA-256 of its bytes. A
file is written to a temporary name in its final folder, flushed and fsynced, renamed
into place and the folder fsynced, so a crash leaves either the whole object or none.
The same bytes are stored once. A caller that already hashed the bytes (the spool does,
when it receives them) passes the digest, so an object is hashed once on its way in.

What is written depends on the archive mode (``KERMA_ARCHIVE_MODE``, docs/privacy.md);
the name is always the SHA-256 of the bytes *as received*, so de-duplication and the
registry's ``archive_sha256`` do not depend on the mode:

- ``original``: the bytes as received.
- ``encrypted`` (default): the bytes as received, encrypted with AES-256-GCM (NIST SP
  800-38D) under a key derived with HKDF-SHA-256 (RFC 5869) from the newest pseudonym
  key; the file starts with :data:`ENCRYPTED_MAGIC`, the key generation and the 96-bit
  nonce, and the SHA-256 name is bound to it as associated data (a file moved to
  another name does not decrypt). Only the pseudonym key recovers the original.
- ``deidentified``: the object with patient identity removed
  (:func:`kerma.dicom.deidentify.deidentify_bytes`); an object pydicom cannot rewrite
  whole (damaged, truncated) is kept encrypted instead, so nothing is lost and nothing
  identifying is kept in clear.

:meth:`Archive.read` returns the original bytes of ``original`` and ``encrypted``
files and the de-identified bytes of ``deidentified`` ones, whatever the current
mode, so an archive written in several modes reads as one.

Must not import ``kerma.db`` or any interface package.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kerma.errors import ArchiveDecryptionError, ConfigurationError
from kerma.files import fsync_dir, make_private_dirs
from kerma.ingest.pseudonym import KeyChain

SUFFIX = ".dcm"

#: First bytes of an encrypted archive file (never the start of a DICOM object, whose
#: first 128 bytes are a preamble or a group 0002/0008 tag).
ENCRYPTED_MAGIC = b"KERMA-AES256GCM\x00"

#: HKDF ``info`` of the archive encryption key (RFC 5869 Section 3.2).
ARCHIVE_KEY_INFO = b"kerma archive encryption v1"

#: Length of the AES-GCM nonce in bytes (NIST SP 800-38D Section 8.2: 96 bits).
NONCE_BYTES = 12

ArchiveMode = Literal["original", "deidentified", "encrypted"]

#: The archive modes (``KERMA_ARCHIVE_MODE``).
ARCHIVE_MODES: tuple[str, ...] = ("original", "deidentified", "encrypted")


#: A SHA-256 digest as the archive writes it: 64 lowercase hex digits.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ArchivedObject:
    """Where an object's bytes are kept.

    Attributes
    ----------
    sha256 : str
        SHA-256 of the bytes, 64 lowercase hex digits.
    relative_path : str
        Path inside the archive folder, ``aa/bb/<sha256>.dcm`` (POSIX separators).
    """

    sha256: str
    relative_path: str


def sha256_of(data: bytes | memoryview) -> str:
    """Return the archive key of ``data``: its SHA-256, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def relative_path_for(sha256: str) -> str:
    """Return the archive path of an object from its SHA-256, ``aa/bb/<sha256>.dcm``."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}{SUFFIX}"


class ArchiveCipher:
    """AES-256-GCM encryption of archive files with keys derived from the pseudonym key.

    Parameters
    ----------
    key : KeyChain
        The pseudonym key; generation ``g`` of the chain gives the archive key
        HKDF-SHA-256(key_g, info=:data:`ARCHIVE_KEY_INFO`). New files use the newest
        generation; the generation is written in each file, so files written before a
        ``kerma key rotate`` still decrypt.
    """

    def __init__(self, key: KeyChain) -> None:
        self._chain = key
        self._keys: dict[int, bytes] = {}

    def _key(self, generation: int) -> bytes:
        """Return the AES key of one generation of the pseudonym key."""
        if generation not in self._keys:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            if not 0 <= generation < len(self._chain.keys):
                raise ArchiveDecryptionError(
                    f"Unable to decrypt an archived object: it was encrypted with key "
                    f"generation {generation + 1}, and the key file holds "
                    f"{len(self._chain.keys)}. Restore the key file from the latest backup."
                )
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ARCHIVE_KEY_INFO)
            self._keys[generation] = hkdf.derive(self._chain.keys[generation])
        return self._keys[generation]

    def encrypt(self, data: bytes | memoryview, sha256: str) -> bytes:
        """Return ``data`` encrypted: magic, generation, nonce, ciphertext and tag."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        generation = len(self._chain.keys) - 1
        header = ENCRYPTED_MAGIC + struct.pack(">H", generation)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self._key(generation)).encrypt(
            nonce, bytes(data), header + sha256.encode("ascii")
        )
        return header + nonce + sealed

    def decrypt(self, blob: bytes, sha256: str) -> bytes:
        """Return the original bytes of an encrypted archive file.

        Raises
        ------
        ArchiveDecryptionError
            When the file is damaged or was not encrypted with this key.
        """
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        start = len(ENCRYPTED_MAGIC)
        header = blob[: start + 2]
        (generation,) = struct.unpack(">H", blob[start : start + 2])
        nonce = blob[start + 2 : start + 2 + NONCE_BYTES]
        try:
            return AESGCM(self._key(generation)).decrypt(
                nonce, blob[start + 2 + NONCE_BYTES :], header + sha256.encode("ascii")
            )
        except InvalidTag as exc:
            raise ArchiveDecryptionError(
                f"Unable to decrypt the archived object {sha256}: the file is damaged or "
                "was encrypted with another key. Restore it (or the key file) from backup."
            ) from exc


def is_encrypted(blob: bytes) -> bool:
    """Return whether archive file bytes are encrypted (start with :data:`ENCRYPTED_MAGIC`)."""
    return blob[: len(ENCRYPTED_MAGIC)] == ENCRYPTED_MAGIC


class Archive:
    """The archive folder.

    Parameters
    ----------
    root : pathlib.Path
        The archive folder (``KERMA_ARCHIVE_DIR``); created when missing (mode 0700).
    mode : {'original', 'encrypted', 'deidentified'}, optional
        How new objects are kept (module docstring); default ``original``.
    key : KeyChain, optional
        The pseudonym key; needed by the ``encrypted`` and ``deidentified`` modes, and
        to read encrypted files in any mode.
    identifying_attributes : iterable of str, optional
        Further attribute keywords the ``deidentified`` mode removes
        (``KERMA_IDENTIFYING_ATTRIBUTES``).

    Raises
    ------
    ConfigurationError
        When ``mode`` is unknown, or needs a key and none is given.
    """

    def __init__(
        self,
        root: Path,
        *,
        mode: str = "original",
        key: KeyChain | None = None,
        identifying_attributes: Iterable[str] = (),
    ) -> None:
        if mode not in ARCHIVE_MODES:
            raise ConfigurationError(
                f"KERMA_ARCHIVE_MODE {mode!r} is not an archive mode: use one of "
                f"{', '.join(ARCHIVE_MODES)}."
            )
        if mode != "original" and key is None:
            raise ConfigurationError(
                f"Unable to keep the archive {mode}: no pseudonym key was given."
            )
        self.root = Path(root)
        self.mode = mode
        self.cipher = ArchiveCipher(key) if key is not None else None
        self.identifying_attributes = tuple(identifying_attributes)

    def _encode(self, data: bytes | memoryview, sha256: str) -> bytes | memoryview:
        """Return what the archive file holds for ``data`` in this archive's mode."""
        if self.mode == "original":
            return data
        assert self.cipher is not None
        if self.mode == "deidentified":
            from kerma.dicom.deidentify import deidentify_bytes

            cleaned = deidentify_bytes(bytes(data), self.identifying_attributes)
            if cleaned is not None:
                return cleaned
        return self.cipher.encrypt(data, sha256)

    def store(self, data: bytes | memoryview, *, sha256: str | None = None) -> ArchivedObject:
        """Keep ``data`` in the archive (no-op when the same bytes are there) and return where.

        Parameters
        ----------
        data : bytes or memoryview
            The object's bytes as received; written as they are, encrypted or
            de-identified according to the archive mode.
        sha256 : str, optional
            Their SHA-256 (64 lowercase hex digits) when the caller already computed it
            (the spool records it when it receives an object): the bytes are then not
            hashed again. Default: computed here.

        Returns
        -------
        ArchivedObject
            Where the bytes are kept.

        Raises
        ------
        OSError
            When the archive cannot be written (disk full, permissions).
        ValueError
            When ``sha256`` is not 64 lowercase hex digits.
        """
        if sha256 is None:
            sha256 = sha256_of(data)
        elif not _SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"Unable to archive: {sha256!r} is not a SHA-256 hex digest.")
        rel = relative_path_for(sha256)
        target = self.root / rel
        if target.is_file() and (self.mode != "original" or target.stat().st_size == len(data)):
            return ArchivedObject(sha256, rel)
        encoded = self._encode(data, sha256)
        make_private_dirs(target.parent)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(encoded)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        return ArchivedObject(sha256, rel)

    def path_of(self, relative_path: str) -> Path:
        """Return the absolute path of an archived object (its file may be encrypted)."""
        return self.root / relative_path

    def read(self, relative_path: str) -> bytes:
        """Return the bytes of an archived object, decrypted when it is encrypted.

        Raises
        ------
        OSError
            When the file is missing or unreadable.
        ArchiveDecryptionError
            When it is encrypted and does not decrypt with this archive's key (an
            ``OSError`` too), or this archive has no key.
        """
        blob = self.path_of(relative_path).read_bytes()
        if not is_encrypted(blob):
            return blob
        if self.cipher is None:
            raise ArchiveDecryptionError(
                f"Unable to read the archived object {relative_path}: it is encrypted and "
                "no pseudonym key was given."
            )
        return self.cipher.decrypt(blob, Path(relative_path).stem)

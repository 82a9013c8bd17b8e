"""The pseudonym key of a registry: open it (checked), create it once, rotate it.

:func:`open_key` is the only way Kerma gets its pseudonym key. It refuses a key
file inside the archive folder, a key shorter than 32 bytes, a missing key once the
registry holds keyed hashes (pseudonyms), and a key whose fingerprint differs from the
one recorded in the registry at first use; it never creates a new key for a registry
that holds pseudonyms (a second pseudonym per patient would split cumulative dose,
issue 11). :func:`rotate_key` moves every keyed-hash column to a new key in one
transaction (``kerma key rotate``); ``docs/privacy.md`` explains the design.

May import ``kerma.db``, ``kerma.ingest``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from kerma.config import Settings
from kerma.db import keys as store
from kerma.db.session import session_scope
from kerma.errors import ConfigurationError
from kerma.ingest.pseudonym import (
    PENDING_SUFFIX,
    KeyChain,
    adopt_legacy_key,
    check_key_location,
    create_key_file,
    new_key_text,
    parse_key_text,
    read_key_file,
    rekey,
    write_key_file,
)

logger = logging.getLogger(__name__)


def _restore_hint(key_file: Path) -> str:
    """Return what to do when the key is missing or another one."""
    return (
        f"Restore the key file {key_file} from your backup (the one made when the registry "
        "was set up or last rotated; see docs/privacy.md), or set KERMA_KEY_FILE to where "
        "it is. Kerma does not make a new key for a registry that holds pseudonyms: every "
        "patient would get a second pseudonym and cumulative doses would split."
    )


def _configured_chain(settings: Settings, *, check_length: bool = True) -> KeyChain | None:
    """Return the key of ``KERMA_PSEUDONYM_KEY`` or of the key file (``None`` if absent).

    A key file that earlier versions kept in the archive folder is moved to
    ``settings.key_file`` first.
    """
    if settings.pseudonym_key:
        return parse_key_text(
            settings.pseudonym_key, source="KERMA_PSEUDONYM_KEY", check_length=check_length
        )
    key_file = Path(settings.key_file)
    check_key_location(key_file, Path(settings.archive_dir))
    chain = read_key_file(key_file, check_length=check_length)
    if chain is None:
        chain = adopt_legacy_key(Path(settings.archive_dir), key_file)
        if chain is not None:
            logger.warning(
                "moved the pseudonym key out of the archive folder to %s; back it up", key_file
            )
    return chain


def _finish_rotation(settings: Settings, recorded: str) -> KeyChain | None:
    """Complete a rotation that committed but did not replace the key file (crash).

    Returns the new chain when ``<key_file>.new`` matches the recorded fingerprint.
    """
    if settings.pseudonym_key:
        return None
    key_file = Path(settings.key_file)
    pending_path = key_file.with_name(key_file.name + PENDING_SUFFIX)
    pending = read_key_file(pending_path)
    if pending is None or pending.fingerprint() != recorded:
        return None
    os.replace(pending_path, key_file)
    logger.warning("completed an interrupted key rotation: %s is the new key file", key_file)
    return read_key_file(key_file)


def open_key(
    settings: Settings, session_factory: sessionmaker[Session], *, check_length: bool = True
) -> KeyChain:
    """Return the registry's pseudonym key, checked against the registry.

    On first use of a registry the key file is created when missing (mode 0600, folder
    0700) and the key's fingerprint is recorded in the registry.

    Parameters
    ----------
    settings : Settings
        ``pseudonym_key``, ``key_file`` and ``archive_dir``.
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions on the registry (the fingerprint is written at first use).
    check_length : bool, optional
        Refuse a key shorter than 32 bytes (default); ``False`` only for
        :func:`rotate_key`, which moves a registry away from such a key.

    Returns
    -------
    KeyChain
        The key.

    Raises
    ------
    ConfigurationError
        When the key file is inside the archive folder, cannot be read, or its newest
        key is shorter than 32 bytes; when the key is missing although the registry
        holds pseudonyms or a recorded fingerprint; when the key is not the one the
        registry's pseudonyms were made with.
    """
    chain = _configured_chain(settings, check_length=check_length)
    key_file = Path(settings.key_file)
    where = "KERMA_PSEUDONYM_KEY" if settings.pseudonym_key else str(key_file)
    with session_scope(session_factory) as session:
        recorded = store.get_key_fingerprint(session)
        has_hashes = recorded is None and store.has_keyed_hashes(session)
    if chain is None:
        if recorded is not None or has_hashes:
            raise ConfigurationError(
                f"Unable to open the registry: its pseudonym key {where} is missing, and the "
                "registry already holds patient pseudonyms made with it. " + _restore_hint(key_file)
            )
        chain = create_key_file(key_file)
        logger.warning(
            "created a new pseudonym key in %s; back it up apart from the archive",
            key_file,
        )
    if recorded is None:
        if has_hashes:
            logger.warning(
                "the registry holds pseudonyms but no key fingerprint (made by an earlier "
                "version); recording the fingerprint of %s",
                where,
            )
        with session_scope(session_factory) as session:
            if store.get_key_fingerprint(session) is None:
                store.set_key_fingerprint(session, fingerprint=chain.fingerprint())
            recorded = store.get_key_fingerprint(session)
    if recorded != chain.fingerprint():
        finished = _finish_rotation(settings, recorded or "")
        if finished is not None:
            return finished
        raise ConfigurationError(
            f"Unable to open the registry: the pseudonym key {where} is not the key this "
            "registry's pseudonyms were made with (its fingerprint differs from the one "
            "recorded in the registry). " + _restore_hint(key_file)
        )
    return chain


@dataclass
class KeyStatus:
    """What ``kerma key status`` shows.

    Attributes
    ----------
    location : str
        The key file, or ``KERMA_PSEUDONYM_KEY``.
    exists : bool
        Whether a key is configured or the key file exists.
    generations : int
        Keys in the chain (1 + rotations); 0 when missing.
    fingerprint : str or None
        Fingerprint of the configured key (HMAC of a fixed label, not the key).
    recorded_fingerprint : str or None
        Fingerprint recorded in the registry.
    keyed_hashes : dict of str to int
        Values of each keyed-hash column.
    """

    location: str
    exists: bool
    generations: int
    fingerprint: str | None
    recorded_fingerprint: str | None
    keyed_hashes: dict[str, int] = field(default_factory=dict)

    @property
    def matches(self) -> bool:
        """Whether the configured key is the registry's key (or none is recorded yet)."""
        return self.recorded_fingerprint is None or self.fingerprint == self.recorded_fingerprint


def key_status(settings: Settings, session_factory: sessionmaker[Session]) -> KeyStatus:
    """Return where the key is and whether it is the registry's (creates nothing).

    Raises
    ------
    ConfigurationError
        When the key file is inside the archive folder or cannot be read.
    """
    chain = _configured_chain(settings)
    with session_scope(session_factory) as session:
        recorded = store.get_key_fingerprint(session)
        counts = store.count_keyed_hashes(session)
    return KeyStatus(
        location="KERMA_PSEUDONYM_KEY" if settings.pseudonym_key else str(settings.key_file),
        exists=chain is not None,
        generations=chain.generations if chain is not None else 0,
        fingerprint=chain.fingerprint() if chain is not None else None,
        recorded_fingerprint=recorded,
        keyed_hashes=counts,
    )


@dataclass(frozen=True)
class RotationResult:
    """The outcome of :func:`rotate_key`.

    Attributes
    ----------
    key_file : pathlib.Path
        The key file, now holding the new key as its last line.
    generations : int
        Keys in the new chain.
    rekeyed : dict of str to int
        Values re-keyed, by ``table.column``.
    fingerprint : str
        Fingerprint of the new key chain, recorded in the registry.
    """

    key_file: Path
    generations: int
    rekeyed: dict[str, int]
    fingerprint: str


def rotate_key(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    new_key_file: Path | None = None,
) -> RotationResult:
    """Move every keyed hash of the registry to a new key, in one transaction.

    Each stored keyed hash ``h`` becomes ``HMAC-SHA-256(new_key, h)`` and the new key is
    appended to the key file, so new pseudonyms are computed through the same chain
    (:class:`~kerma.ingest.pseudonym.KeyChain`). The originals (Patient IDs) are not
    needed. Order: the new key file is written as ``<key_file>.new``; the registry is
    re-keyed and the new fingerprint recorded in one transaction; then
    ``<key_file>.new`` replaces the key file. A crash between the commit and the
    replacement is completed by the next :func:`open_key`.

    Parameters
    ----------
    settings : Settings
        The registry's settings (the key must be in a key file, not in
        ``KERMA_PSEUDONYM_KEY``).
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions on the registry.
    new_key_file : pathlib.Path, optional
        A file holding the new key (one line, at least 32 bytes); default a new random
        key (64 hex digits).

    Returns
    -------
    RotationResult
        What was done.

    Raises
    ------
    ConfigurationError
        When the current key does not open the registry (:func:`open_key`), the key is
        given in ``KERMA_PSEUDONYM_KEY``, or the new key is too short or already in the
        chain.
    """
    if settings.pseudonym_key:
        raise ConfigurationError(
            "Unable to rotate the pseudonym key: it is given in KERMA_PSEUDONYM_KEY, which "
            "Kerma cannot rewrite. Write it to a key file (KERMA_KEY_FILE, mode 0600), "
            "unset KERMA_PSEUDONYM_KEY, and run `kerma key rotate` again."
        )
    old = open_key(settings, session_factory, check_length=False)  # a short key may go
    if new_key_file is not None:
        given = read_key_file(Path(new_key_file))
        if given is None:
            raise ConfigurationError(
                f"Unable to rotate the pseudonym key: the new key file {new_key_file} does "
                "not exist."
            )
        new_key = given.keys[-1]
    else:
        new_key = new_key_text().encode("ascii")
    if new_key in old.keys:
        raise ConfigurationError(
            "Unable to rotate the pseudonym key: the new key is already one of the "
            "registry's keys. Give a new random key."
        )
    chain = old.extended(new_key)
    key_file = Path(settings.key_file)
    pending = key_file.with_name(key_file.name + PENDING_SUFFIX)
    write_key_file(pending, chain, exclusive=False)
    fingerprint = chain.fingerprint()
    with session_scope(session_factory) as session:
        rekeyed = store.rekey_columns(session, lambda value: rekey(new_key, value))
        store.set_key_fingerprint(session, fingerprint=fingerprint)
    os.replace(pending, key_file)
    logger.warning("pseudonym key rotated (%d keys in %s); back it up", chain.generations, key_file)
    return RotationResult(key_file, chain.generations, rekeyed, fingerprint)


def read_archived_file(settings: Settings, path: Path) -> bytes:
    """Return the original bytes of an archive file, decrypted when it is encrypted.

    For ``kerma inspect`` of a file in an encrypted archive (the path a rejection reason
    names). Uses the key of ``settings`` without opening the registry: AES-GCM itself
    tells a wrong key (:class:`~kerma.errors.ArchiveDecryptionError`).

    Raises
    ------
    OSError
        When the file cannot be read.
    ConfigurationError
        When the file is encrypted and no key is configured.
    kerma.errors.ArchiveDecryptionError
        When it does not decrypt with the configured key.
    """
    from kerma.ingest.archive import ArchiveCipher, is_encrypted

    blob = Path(path).read_bytes()
    if not is_encrypted(blob):
        return blob
    chain = _configured_chain(settings)
    if chain is None:
        raise ConfigurationError(
            f"Unable to read {path}: it is an encrypted archive file and the pseudonym key "
            f"{settings.key_file} is missing. Set KERMA_KEY_FILE to the registry's key."
        )
    return ArchiveCipher(chain).decrypt(blob, Path(path).stem)


def check_registry_key(settings: Settings) -> KeyChain:
    """Open the registry of ``settings`` and return its checked key (:func:`open_key`).

    For ``kerma listen`` and ``kerma serve``, which import in a worker that starts after
    they answer: a missing or different key stops them at start instead.

    Raises
    ------
    ConfigurationError
        As :func:`open_key`.
    """
    from kerma.db.migrate import ensure_schema
    from kerma.db.session import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        ensure_schema(engine)
        return open_key(settings, make_session_factory(engine, write=True))
    finally:
        engine.dispose()

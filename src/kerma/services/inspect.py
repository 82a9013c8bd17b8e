"""What ``kerma inspect`` shows: the record Kerma would extract from files, storing nothing.

:func:`inspect_files` walks files and folders and yields, for each file, the
:class:`~kerma.records.DoseReport` that import would store or the
:class:`~kerma.records.Rejection` with its reason (EXTRACTION.md). Nothing opens the
registry, so this module stays light: it imports ``kerma.dicom`` and ``kerma.records``
only (no SQLAlchemy, no pandas), and ``kerma inspect ONE_FILE`` starts fast.

The size limits of the settings apply (``max_object_bytes``, ``max_inflated_bytes``;
``docs/network.md``, "Limits"), and a file of an encrypted archive (``archive_mode``
``encrypted``, ``docs/privacy.md``) is decrypted with the key first, so a path that a
rejection reason names can be inspected as it is.

May import ``kerma.dicom``, ``kerma.records``, ``kerma.config`` and ``kerma.errors``;
``kerma.ingest.archive`` and ``kerma.services.keys`` only for an encrypted file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kerma.config import Settings
from kerma.dicom.extract import inspect_bytes, inspect_path
from kerma.records import DoseReport, Rejection

__all__ = ["InspectedFile", "empty_folders", "inspect_files", "iter_files"]


@dataclass(frozen=True)
class InspectedFile:
    """One file of :func:`inspect_files`.

    Attributes
    ----------
    path : pathlib.Path
        The file as found (a given file, or a file under a given folder).
    result : DoseReport or Rejection or None
        What import would store, or why it would reject the object; ``None`` when
        ``path`` does not exist.
    """

    path: Path
    result: DoseReport | Rejection | None

    @property
    def exists(self) -> bool:
        """``True`` when the file was there to be read."""
        return self.result is not None


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Yield files in the order given; folders are walked recursively in sorted order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def empty_folders(paths: Iterable[Path]) -> list[Path]:
    """Return the given folders that hold no file (nothing to inspect in them)."""
    return [p for p in paths if p.is_dir() and not any(q.is_file() for q in p.rglob("*"))]


def inspect_files(
    *, paths: Iterable[Path], settings: Settings | None = None
) -> Iterator[InspectedFile]:
    """Yield what Kerma extracts from each file under ``paths``, storing nothing.

    Parameters
    ----------
    paths : iterable of pathlib.Path
        DICOM files or folders (walked recursively, files in sorted order).
    settings : Settings, optional
        Size limits and the pseudonym key (for encrypted archive files); the
        defaults of :class:`~kerma.config.Settings` when omitted.

    Yields
    ------
    InspectedFile
        One per file, in order; a path that does not exist gives ``result=None``.
        Lenient-decoding warnings are recorded on the record, not emitted.

    Never raises for a bad file: an unreadable or non-dose object is a
    :class:`~kerma.records.Rejection` with its reason.
    """
    settings = settings if settings is not None else Settings()
    for path in iter_files(paths):
        if not path.exists():
            yield InspectedFile(path=path, result=None)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _inspect_one(path, settings)
        yield InspectedFile(path=path, result=result)


def _inspect_one(path: Path, settings: Settings) -> DoseReport | Rejection:
    """Return the record of one file; a file of an encrypted archive is decrypted first.

    Raises
    ------
    kerma.errors.KermaError
        When an encrypted file cannot be decrypted with the key of ``settings``
        (``ArchiveDecryptionError``) or the key is missing.
    """
    from kerma.ingest.archive import ENCRYPTED_MAGIC

    try:
        with path.open("rb") as handle:
            is_encrypted = handle.read(len(ENCRYPTED_MAGIC)) == ENCRYPTED_MAGIC
    except OSError:
        is_encrypted = False
    if not is_encrypted:
        return inspect_path(
            path,
            max_object_bytes=settings.max_object_bytes,
            max_inflated_bytes=settings.max_inflated_bytes,
        )
    from kerma.services.keys import read_archived_file

    return inspect_bytes(
        read_archived_file(settings, path),
        name=str(path),
        max_inflated_bytes=settings.max_inflated_bytes,
    )

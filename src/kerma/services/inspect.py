"""What ``kerma inspect`` shows: the record Kerma would extract from files, storing nothing.

:func:`inspect_files` walks files and folders and yields, for each file, the
:class:`~kerma.records.DoseReport` that import would store or the
:class:`~kerma.records.Rejection` with its reason (EXTRACTION.md). Nothing opens the
registry, so this module stays light: it imports ``kerma.dicom`` and ``kerma.records``
only (no SQLAlchemy, no pandas), and ``kerma inspect ONE_FILE`` starts fast.

May import ``kerma.dicom``, ``kerma.records`` and ``kerma.errors``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kerma.dicom.extract import inspect_path
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


def inspect_files(*, paths: Iterable[Path]) -> Iterator[InspectedFile]:
    """Yield what Kerma extracts from each file under ``paths``, storing nothing.

    Parameters
    ----------
    paths : iterable of pathlib.Path
        DICOM files or folders (walked recursively, files in sorted order).

    Yields
    ------
    InspectedFile
        One per file, in order; a path that does not exist gives ``result=None``.
        Lenient-decoding warnings are recorded on the record, not emitted.

    Never raises for a bad file: an unreadable or non-dose object is a
    :class:`~kerma.records.Rejection` with its reason.
    """
    for path in iter_files(paths):
        if not path.exists():
            yield InspectedFile(path=path, result=None)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = inspect_path(path)
        yield InspectedFile(path=path, result=result)

"""Where objects come from: files and folders (the network intake hands bytes to the pipeline).

:func:`iter_files` walks folders lazily, one folder listing at a time, so a folder of a
million files does not become a list of a million paths; :func:`iter_sources` does the
same and also names each file by its path relative to the folder it was found in (what
``kerma ignored`` shows). :func:`is_dicom` tells a DICOM object (damaged or not) from
a file that is not DICOM at all (a sidecar JSON file, notes), which a folder import
skips instead of rejecting.

Must not import ``kerma.db`` or any interface package.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Offset and value of the DICOM prefix after the 128-byte preamble (PS3.10 Section 7.1).
DICM_OFFSET = 128
DICM_PREFIX = b"DICM"

#: A UID as PS3.5 Section 9.1 allows it: digits and dots, at most 64 characters.
_UID = re.compile(r"[0-9][0-9.]{0,63}")


def is_dicom(data: bytes | memoryview) -> bool:
    """Return whether ``data`` is a DICOM object, whole or damaged, rather than another file.

    An object is DICOM when it has the Part 10 prefix ``DICM`` after its 128-byte
    preamble (PS3.10 Section 7.1), however damaged the rest; without the prefix, when
    pydicom reads its first elements as a bare data set (as some archives hold them)
    and finds a (0008,0016) 'SOP Class UID' that is a UID. Anything else (JSON, text,
    an image file, an empty file) is not DICOM. Only the elements up to (0008,0018)
    are decoded, so the check costs the same for a file of any size.

    Parameters
    ----------
    data : bytes or memoryview
        The whole file.

    Returns
    -------
    bool
        ``True`` for a DICOM object (to be imported, or rejected and kept when it does
        not read), ``False`` for a file that is not DICOM (skipped).
    """
    if bytes(data[DICM_OFFSET : DICM_OFFSET + len(DICM_PREFIX)]) == DICM_PREFIX:
        return True
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_partial

    try:
        ds = read_partial(
            io.BytesIO(data), stop_when=lambda tag, vr, length: bool(tag > 0x00080018), force=True
        )
        value = ds.get("SOPClassUID")
    except (InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OverflowError):
        return False
    return value is not None and _UID.fullmatch(str(value).strip("\x00 ")) is not None


@dataclass(frozen=True)
class FileSource:
    """A file found by :func:`iter_sources`.

    Attributes
    ----------
    path : pathlib.Path
        The file, as found (relative to the working folder when the folder was given so).
    origin : str
        Where it came from, for listings and the registry: its path relative to the
        folder given to the import (POSIX separators), or its name for a file given by
        itself. Never the folders above: they are often named after patients.
    """

    path: Path
    origin: str


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files of ``paths`` in the order given; folders recursively, sorted.

    Hidden files and folders (name starting with ``.``) inside a folder are skipped. A
    path that does not exist is yielded as is, so the caller can report it (``kerma
    import`` refuses such paths beforehand, see :func:`find_missing`).
    """
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield Path(dirpath) / name


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[FileSource]:
    """Yield the files of ``paths`` as :func:`iter_files` does, each with its origin.

    Parameters
    ----------
    paths : iterable of path-like
        Files and folders, in order.

    Yields
    ------
    FileSource
        The file and its path relative to the folder it was found in (its name for a
        file given by itself).
    """
    for raw in paths:
        root = Path(raw)
        if not root.is_dir():
            yield FileSource(root, root.name or str(raw))
            continue
        for path in iter_files([root]):
            yield FileSource(path, path.relative_to(root).as_posix())


def count_files(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Return how many files :func:`iter_files` would yield (for a progress bar)."""
    return sum(1 for _ in iter_files(paths))


def find_missing(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Return the paths that do not exist, in the order given (to refuse a mistyped import).

    Parameters
    ----------
    paths : iterable of path-like
        Files and folders.

    Returns
    -------
    list of pathlib.Path
        Those for which :meth:`pathlib.Path.exists` is false (a dangling symlink too).
    """
    return [Path(p) for p in paths if not Path(p).exists()]

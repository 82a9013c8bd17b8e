"""Where objects come from: files and folders (the SCP hands bytes to the pipeline).

:func:`iter_files` walks folders lazily, one folder listing at a time, so a folder of a
million files does not become a list of a million paths.

Must not import ``kerma.db`` or any interface package.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path


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

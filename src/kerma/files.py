"""Private files and folders: what Kerma writes is readable by its own user only.

Patient data at rest (the registry database, archived objects, the network spool, the
pseudonym key, logs and exports) must not be world-readable (issue 11, "identity at
rest"; GDPR Art. 32(1) "security of processing"). Every file Kerma creates is made with
mode 0600 and every folder with 0700, *regardless of the process umask*: the mode is
set explicitly on the new file descriptor (``os.fchmod``) or folder (``os.chmod``)
right after it is created. Changing the umask instead would not be thread-safe (it is
process-wide), so Kerma never does.

This module must not import anything else from Kerma.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

#: Mode of every file Kerma creates (owner read and write).
PRIVATE_FILE_MODE = 0o600

#: Mode of every folder Kerma creates (owner only).
PRIVATE_DIR_MODE = 0o700


def make_private_dirs(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents with mode 0700; return it.

    Folders that exist already keep their mode (a user's own folder is not changed).

    Raises
    ------
    OSError
        When a folder cannot be created.
    """
    target = Path(path)
    missing: list[Path] = []
    current = target
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # another process or thread made it meanwhile
            continue
        os.chmod(folder, PRIVATE_DIR_MODE)
    return target


def private_opener(path: str, flags: int) -> int:
    """Open ``path`` as :func:`os.open` does and give a newly created file mode 0600.

    Use as ``open(path, "wb", opener=private_opener)``. A file that exists already is
    also set to 0600 when opened for writing (a truncated export keeps no wider mode).
    """
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        except OSError:
            os.close(fd)
            raise
    return fd


def open_private(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> IO[Any]:
    """Open ``path`` for writing like :func:`open`, the file with mode 0600.

    Missing parent folders are created with mode 0700.

    Parameters
    ----------
    path : path-like
        The file.
    mode : str, optional
        A writing mode of :func:`open` (``"w"``, ``"wb"``, ``"a"``, ``"x"`` ...).
    **kwargs
        Passed to :func:`open` (``encoding``, ``newline``).
    """
    make_private_dirs(Path(path).parent)
    return open(path, mode, opener=private_opener, **kwargs)


def write_private_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (created or truncated) with mode 0600."""
    with open_private(path, "wb") as handle:
        handle.write(data)


def create_private_file(path: str | os.PathLike[str]) -> int:
    """Create ``path`` exclusively (``O_EXCL``) with mode 0600; return the open descriptor.

    Raises
    ------
    FileExistsError
        When the file exists.
    """
    return private_opener(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync a folder so a new or renamed name in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

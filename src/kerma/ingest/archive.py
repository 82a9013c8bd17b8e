"""Content-addressed archive of every received object (DESIGN.md "Archive first").

Each object is kept byte for byte under ``<archive_dir>/aa/bb/<sha256>.dcm``, where
``aa`` and ``bb`` are the first two pairs of hex digits of the SHA-256 of its bytes. A
file is written to a temporary name in its final folder, flushed and fsynced, renamed
into place and the folder fsynced, so a crash leaves either the whole object or none.
The same bytes are stored once. A caller that already hashed the bytes (the spool does,
when it receives them) passes the digest, so an object is hashed once on its way in.

Must not import ``kerma.db`` or any interface package.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kerma.files import make_private_dirs

SUFFIX = ".dcm"

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


class Archive:
    """The archive folder.

    Parameters
    ----------
    root : pathlib.Path
        The archive folder (``KERMA_ARCHIVE_DIR``); created when missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def store(self, data: bytes | memoryview, *, sha256: str | None = None) -> ArchivedObject:
        """Keep ``data`` in the archive (no-op when the same bytes are there) and return where.

        Parameters
        ----------
        data : bytes or memoryview
            The object's bytes, written as they are.
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
        if target.is_file() and target.stat().st_size == len(data):
            return ArchivedObject(sha256, rel)
        make_private_dirs(target.parent)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return ArchivedObject(sha256, rel)

    def path_of(self, relative_path: str) -> Path:
        """Return the absolute path of an archived object."""
        return self.root / relative_path

    def read(self, relative_path: str) -> bytes:
        """Return the bytes of an archived object.

        Raises
        ------
        OSError
            When the file is missing or unreadable.
        """
        return self.path_of(relative_path).read_bytes()


def _fsync_dir(path: Path) -> None:
    """Fsync a directory so a rename inside it is durable (no-op where unsupported)."""
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

"""The content-addressed archive."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kerma.ingest.archive import Archive


class TestArchive:
    """Archive.store and read."""

    def test_store_uses_sha256_layout(self, tmp_path: Path) -> None:
        """Bytes are kept under aa/bb/<sha256>.dcm, and read back unchanged."""
        data = b"DICM some bytes"
        sha = hashlib.sha256(data).hexdigest()
        archived = Archive(tmp_path).store(data)
        assert archived.sha256 == sha
        assert archived.relative_path == f"{sha[:2]}/{sha[2:4]}/{sha}.dcm"
        assert (tmp_path / archived.relative_path).read_bytes() == data
        assert Archive(tmp_path).read(archived.relative_path) == data

    def test_same_bytes_stored_once(self, tmp_path: Path) -> None:
        """Storing the same bytes twice leaves one file and no temporary files."""
        archive = Archive(tmp_path)
        first = archive.store(b"abc")
        second = archive.store(b"abc")
        assert first == second
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert files == [tmp_path / first.relative_path]

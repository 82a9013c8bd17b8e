"""What the network intake writes: one spool write and one archive write per object, the
sender's bytes in the archive, and where each object came from.

A real association: dcmtk ``storescu`` sends to a Storage SCP running in this process,
whose spool and archive are instrumented subclasses that count the files they write.
The import runs in this process too (the pipeline itself as importer), so every write
of the intake happens under the counters.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from kerma.api import Registry
from kerma.config import Settings
from kerma.ingest.archive import Archive, ArchivedObject
from kerma.ingest.pipeline import Importer
from kerma.net.scp import StorageSCP
from kerma.net.spool import Spool
from kerma.services import intake_importer
from tests.net.conftest import (
    DICOM_DIR,
    dataset_bytes,
    file_meta_of,
    free_port,
    mr_image_file,
    registry_sop_uids,
    storescu,
)

pytestmark = pytest.mark.network

RDSR = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"


class CountingSpool(Spool):
    """A spool that counts the objects it writes (:meth:`put`, one slot each)."""

    def __init__(self, archive_dir: Path) -> None:
        super().__init__(archive_dir)
        self.puts: list[int] = []
        self._count_lock = threading.Lock()

    def put(self, data, *, origin=None):  # type: ignore[no-untyped-def]
        """Write an object; record its length."""
        path = super().put(data, origin=origin)
        with self._count_lock:
            self.puts.append(sum(len(c) for c in ([data] if isinstance(data, bytes) else data)))
        return path


class CountingArchive(Archive):
    """An archive that counts the files it writes and the digests it computes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.files_written: list[str] = []
        self.digests_computed = 0

    def store(self, data, *, sha256=None):  # type: ignore[no-untyped-def]
        """Keep ``data``; count a new file and a digest computed here."""
        if sha256 is None:
            self.digests_computed += 1
        before = {p.name for p in self.root.rglob("*.dcm")}
        archived: ArchivedObject = super().store(data, sha256=sha256)
        if Path(archived.relative_path).name not in before:
            self.files_written.append(archived.relative_path)
        return archived


@dataclass
class InstrumentedSCP:
    """A Storage SCP in this process with counting spool and archive."""

    settings: Settings
    scp: StorageSCP
    spool: CountingSpool
    archive: CountingArchive

    @property
    def port(self) -> int:
        """The SCP's port."""
        return self.scp.address[1]


@pytest.fixture
def instrumented(tmp_path: Path) -> Iterator[InstrumentedSCP]:
    """A running in-process SCP; its import uses the pipeline with a counting archive."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'kerma.db'}",
        archive_dir=tmp_path / "archive",
        pseudonym_key="kerma-test-key-0123456789abcdef-0123456789",
        archive_mode="original",  # the test reads the archived files
    )
    spool = CountingSpool(settings.archive_dir)
    archive = CountingArchive(settings.archive_dir)

    def factory() -> Importer:
        importer = intake_importer(settings)
        importer.archive = archive
        return importer

    scp = StorageSCP(settings, importer_factory=factory, port=free_port(), spool=spool)
    scp.start()
    yield InstrumentedSCP(settings, scp, spool, archive)
    scp.stop(grace_s=5)


def archived_files(archive_dir: Path) -> list[Path]:
    """Return the objects in the archive (not the spool, not the key)."""
    return sorted(
        p for p in archive_dir.rglob("*.dcm") if "incoming" not in p.parts and p.is_file()
    )


class TestOneWritePerObject:
    """An object received by the SCP is written once to the spool and once to the archive."""

    def test_storescu_object_is_written_twice_in_all(self, instrumented: InstrumentedSCP) -> None:
        """One spool slot, one archive file, no scratch copy, no second hash."""
        run = storescu(instrumented.port, [RDSR])
        assert run.returncode == 0, run.stderr
        assert "Received Store Response (Success)" in run.stderr
        assert instrumented.scp.worker.wait_idle(120)
        # while the worker still runs: no folder of import copies was ever needed
        incoming = instrumented.settings.archive_dir / "incoming"
        assert [p.name for p in incoming.iterdir() if p.is_dir()] == []
        assert len(instrumented.spool.puts) == 1
        assert instrumented.spool.file_fsyncs == 1
        assert len(instrumented.archive.files_written) == 1
        assert instrumented.archive.digests_computed == 0  # the spool's digest was used
        assert instrumented.spool.pending() == []
        (archived,) = archived_files(instrumented.settings.archive_dir)
        assert archived.name == f"{hashlib.sha256(archived.read_bytes()).hexdigest()}.dcm"
        assert registry_sop_uids(instrumented.settings) == [
            str(pydicom.dcmread(RDSR, stop_before_pixels=True).SOPInstanceUID)
        ]

    def test_archive_holds_the_data_set_as_sent_with_file_meta(
        self, instrumented: InstrumentedSCP
    ) -> None:
        """The archived object is the data set storescu sent, byte for byte, with file meta."""
        sent = RDSR.read_bytes()
        assert storescu(instrumented.port, [RDSR]).returncode == 0
        assert instrumented.scp.worker.wait_idle(120)
        (archived,) = archived_files(instrumented.settings.archive_dir)
        data = archived.read_bytes()
        assert dataset_bytes(data) == dataset_bytes(sent)
        meta, sent_meta = file_meta_of(data), file_meta_of(sent)
        assert meta.TransferSyntaxUID == sent_meta.TransferSyntaxUID
        assert meta.MediaStorageSOPClassUID == sent_meta.MediaStorageSOPClassUID
        assert meta.MediaStorageSOPInstanceUID == sent_meta.MediaStorageSOPInstanceUID

    def test_ignored_object_shows_the_sender(
        self, instrumented: InstrumentedSCP, tmp_path: Path
    ) -> None:
        """An MR image: acknowledged, not archived, listed with the sender's AE title and IP."""
        mr = mr_image_file(tmp_path / "mr.dcm")
        run = storescu(instrumented.port, [tmp_path / "mr.dcm"])
        assert run.returncode == 0, run.stderr
        assert instrumented.scp.worker.wait_idle(120)
        assert len(instrumented.spool.puts) == 1
        assert instrumented.archive.files_written == []
        with Registry(settings=instrumented.settings) as reg:
            ignored = reg.ignored()
        assert list(ignored["sop_instance_uid"]) == [str(mr.SOPInstanceUID)]
        assert list(ignored["source"]) == ["C-STORE from STORESCU at 127.0.0.1"]
        assert "incoming" not in ignored["source"].iloc[0]

    def test_rejected_object_shows_the_sender(
        self, instrumented: InstrumentedSCP, tmp_path: Path
    ) -> None:
        """A non-dose SR with KERMA_SCP_KEEP_NON_DOSE would be rejected; its source is the peer."""
        settings = instrumented.settings.model_copy(update={"scp_keep_non_dose": True})
        instrumented.scp.stop(grace_s=5)
        scp = StorageSCP(
            settings,
            importer_factory=lambda: intake_importer(settings),
            port=free_port(),
        )
        scp.start()
        try:
            run = storescu(scp.address[1], [DICOM_DIR / "ESR_non-dose.dcm"])
            assert run.returncode == 0, run.stderr
            assert scp.worker.wait_idle(120)
        finally:
            scp.stop(grace_s=5)
        with Registry(settings=settings) as reg:
            rejects = reg.rejects()
        assert list(rejects["file_name"]) == ["C-STORE from STORESCU at 127.0.0.1"]

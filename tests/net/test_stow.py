"""STOW-RS on ``kerma serve`` with real clients (dicomweb-client, httpx).

Most tests run ``kerma serve`` as a subprocess; the streaming tests run the same app
under uvicorn in a thread of the test process, so that ``tracemalloc`` sees the
memory the route uses while a large body goes through it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from kerma.api import Registry
from kerma.config import Settings
from kerma.net.spool import SpoolWorker, read_footer
from kerma.services import intake_importer
from kerma.web.app import create_app
from tests.net.conftest import (
    DICOM_DIR,
    ROOT,
    bearer,
    free_port,
    registry_sop_uids,
    stow_token,
    wait_until,
)

pytestmark = pytest.mark.network

STOW_FILES = ("CT-RDSR-Siemens-Multi-1.dcm", "DX-RDSR-Canon_CXDI.dcm", "NM-RRDSR-Siemens.dcm")


class Server:
    """A ``kerma serve`` subprocess with its own registry and archive."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.settings = Settings(
            database_url=f"sqlite:///{workdir / 'kerma.db'}", archive_dir=workdir / "archive"
        )
        env = dict(os.environ)
        env.update(
            KERMA_DATABASE_URL=self.settings.database_url,
            KERMA_ARCHIVE_DIR=str(self.settings.archive_dir),
            PYTHONPATH=str(ROOT / "src"),
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kerma.cli.main", "serve", "--port", str(self.port)],
            cwd=workdir,
            env=env,
            stdout=(workdir / "serve.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/login", timeout=2).status_code == 200
            except httpx.HTTPError:
                return self.process.poll() is not None

        assert wait_until(up, timeout=120) and self.process.poll() is None
        self.token = stow_token(self.settings)
        self.headers = bearer(self.token)

    @property
    def url(self) -> str:
        """Root URL."""
        return f"http://127.0.0.1:{self.port}"

    def pending(self) -> list[Path]:
        """Spool files not yet imported."""
        incoming = self.settings.archive_dir / "incoming"
        return list(incoming.glob("*.dcm")) if incoming.is_dir() else []

    def stop(self) -> None:
        """SIGTERM the server."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A running ``kerma serve``."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    srv = Server(tmp_path / "serve")
    yield srv
    srv.stop()


class TestStow:
    """POST /dicomweb/studies."""

    def test_dicomweb_client_store_is_imported(self, server: Server) -> None:
        """dicomweb-client store_instances: each instance referenced, then imported."""
        from dicomweb_client.api import DICOMwebClient

        datasets = [pydicom.dcmread(DICOM_DIR / name) for name in STOW_FILES]
        client = DICOMwebClient(url=f"{server.url}/dicomweb", headers=server.headers)
        response = client.store_instances(datasets)
        referenced = {str(item.ReferencedSOPInstanceUID) for item in response.ReferencedSOPSequence}
        expected = {str(ds.SOPInstanceUID) for ds in datasets}
        assert referenced == expected
        assert "FailedSOPSequence" not in response
        assert wait_until(lambda: not server.pending(), timeout=300)
        assert sorted(registry_sop_uids(server.settings)) == sorted(expected)

    def test_undecodable_part_is_listed_as_failed(self, server: Server) -> None:
        """A part that is not DICOM is in FailedSOPSequence (0xC000), the good one stored: 202."""
        good = (DICOM_DIR / STOW_FILES[0]).read_bytes()
        boundary = "kerma-boundary"
        body = (
            b"".join(
                b"--"
                + boundary.encode()
                + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + part
                + b"\r\n"
                for part in (good, b"not a DICOM object")
            )
            + b"--"
            + boundary.encode()
            + b"--\r\n"
        )
        r = httpx.post(
            f"{server.url}/dicomweb/studies",
            content=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                **server.headers,
            },
            timeout=60,
        )
        assert r.status_code == 202
        result = r.json()
        assert len(result["00081199"]["Value"]) == 1
        assert result["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]

    def test_wrong_media_type_returns_415(self, server: Server) -> None:
        """A body that is not multipart/related is refused with 415."""
        r = httpx.post(
            f"{server.url}/dicomweb/studies",
            content=b"{}",
            headers={"Content-Type": "application/json", **server.headers},
            timeout=60,
        )
        assert r.status_code == 415


# -- streaming: the app in this process -----------------------------------------------------

BOUNDARY = "kerma-stow-boundary"
STOW_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

#: Size of the synthetic MR image's pixel data: 8192 x 8192 x 16 bits = 128 MiB.
BIG_ROWS = BIG_COLUMNS = 8192
BIG_PIXEL_BYTES = BIG_ROWS * BIG_COLUMNS * 2
CHUNK = b"\0" * (1024 * 1024)


class InProcessServer:
    """The Kerma web app under uvicorn on a thread of the test process."""

    def __init__(self, workdir: Path) -> None:
        self.settings = Settings(
            database_url=f"sqlite:///{workdir / 'kerma.db'}", archive_dir=workdir / "archive"
        )
        self.app = create_app(self.settings)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.server.started, timeout=60)
        self.held: SpoolWorker | None = None
        self.token = stow_token(self.settings)
        self.headers = bearer(self.token)

    @property
    def url(self) -> str:
        """Root URL."""
        return f"http://127.0.0.1:{self.port}"

    def hold_imports(self) -> None:
        """Replace the app's import worker by one that is not started yet.

        Objects are still spooled (fsynced) and queued by the route, but nothing is
        imported until :meth:`release_imports`, so memory measured during the request
        is the route's alone (the import of a 128 MiB object reads it whole, later).
        """
        self.app.state.worker.stop()
        self.held = SpoolWorker(
            self.app.state.spool,
            lambda: intake_importer(self.settings),
            keep_non_dose=self.settings.scp_keep_non_dose,
        )
        self.app.state.worker = self.held

    def release_imports(self) -> None:
        """Start the held worker and wait until it imported everything queued."""
        assert self.held is not None
        self.held.start()
        assert self.held.wait_idle(600)

    def stop(self) -> None:
        """Stop uvicorn (and the held worker)."""
        self.server.should_exit = True
        self.thread.join(60)
        if self.held is not None:
            self.held.stop()


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[InProcessServer]:
    """The app running in this process."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    srv = InProcessServer(tmp_path / "app")
    yield srv
    srv.stop()


def big_mr_image() -> tuple[bytes, str]:
    """Return the Part 10 encoding of a synthetic MR image up to its pixel data.

    The (7FE0,0010) 'Pixel Data' element header announcing :data:`BIG_PIXEL_BYTES`
    is included; its value is streamed by the caller. An MR image holds no dose
    information. Returns ``(bytes, SOP Instance UID)``.
    """
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientID = "STOW-BIG"
    ds.StudyDate = "20260101"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = BIG_ROWS, BIG_COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, BIG_PIXEL_BYTES)
    return buf.getvalue() + pixel_header, str(ds.SOPInstanceUID)


def part_header() -> bytes:
    """Return the delimiter and headers that open one part."""
    return f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()


class TestStowStreaming:
    """The body is parsed as it arrives; memory does not grow with its size."""

    def test_large_body_streams_in_bounded_memory(self, app_server: InProcessServer) -> None:
        """A 128 MiB part plus three RDSRs: all stored, imported, route peak < 1/8 of the body."""
        big_head, big_uid = big_mr_image()
        rdsrs = [(DICOM_DIR / name).read_bytes() for name in STOW_FILES]
        rdsr_uids = [
            str(pydicom.dcmread(DICOM_DIR / name, stop_before_pixels=True).SOPInstanceUID)
            for name in STOW_FILES
        ]
        body_size = len(big_head) + BIG_PIXEL_BYTES + sum(len(d) for d in rdsrs)

        def body() -> Iterator[bytes]:
            yield part_header()
            yield big_head
            for _ in range(BIG_PIXEL_BYTES // len(CHUNK)):
                yield CHUNK
            for data in rdsrs:
                yield b"\r\n" + part_header()
                yield data
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        app_server.hold_imports()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            r = httpx.post(
                f"{app_server.url}/dicomweb/studies",
                content=body(),
                headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
                timeout=600,
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert r.status_code == 200, r.text
        referenced = [item["00081155"]["Value"][0] for item in r.json()["00081199"]["Value"]]
        assert referenced == [big_uid, *rdsr_uids]
        assert body_size > 128 * 1024 * 1024
        assert peak < body_size / 8, f"peak {peak} bytes for a body of {body_size} bytes"
        # spooled whole before the response: the big part's file has every byte (and after
        # them its origin and footer)
        footers = [read_footer(p) for p in app_server.app.state.spool.pending()]
        assert max(f.length for f in footers if f is not None) == len(big_head) + BIG_PIXEL_BYTES
        assert {f.origin for f in footers if f is not None} == {"STOW-RS from 127.0.0.1"}
        app_server.release_imports()
        assert sorted(registry_sop_uids(app_server.settings)) == sorted(rdsr_uids)
        with Registry(settings=app_server.settings) as reg:
            ignored = reg.ignored()
        assert list(ignored["sop_instance_uid"]) == [big_uid]
        assert list(ignored["modality"]) == ["MR"]
        assert list(ignored["sop_class_uid"]) == [MRImageStorage]

    def test_many_small_chunks_and_preamble(self, app_server: InProcessServer) -> None:
        """A preamble, parts split across 7-byte chunks and a base64 part: all stored."""
        import base64

        first, second, third = ((DICOM_DIR / name).read_bytes() for name in STOW_FILES)
        body = (
            b"This is a preamble, to be ignored.\r\n"
            + part_header()
            + first
            + b"\r\n"
            + f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
            + base64.encodebytes(second)
            + b"\r\n"
            + f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nskipped\r\n".encode()
            + part_header()
            + third
            + f"\r\n--{BOUNDARY}--\r\nepilogue".encode()
        )

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 7):
                yield body[i : i + 7]

        r = httpx.post(
            f"{app_server.url}/dicomweb/studies",
            content=chunks(),
            headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
            timeout=600,
        )
        assert r.status_code == 200, r.text
        expected = sorted(
            str(pydicom.dcmread(DICOM_DIR / name, stop_before_pixels=True).SOPInstanceUID)
            for name in STOW_FILES
        )
        got = sorted(item["00081155"]["Value"][0] for item in r.json()["00081199"]["Value"])
        assert got == expected
        assert wait_until(lambda: not app_server.app.state.spool.pending(), timeout=300)
        assert app_server.app.state.worker.wait_idle(300)
        assert sorted(registry_sop_uids(app_server.settings)) == expected

    def test_body_without_closing_boundary_returns_400(self, app_server: InProcessServer) -> None:
        """A body cut before its closing boundary: 400, and no temporary file left behind."""
        data = (DICOM_DIR / STOW_FILES[0]).read_bytes()
        r = httpx.post(
            f"{app_server.url}/dicomweb/studies",
            content=part_header() + data[: len(data) // 2],
            headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
            timeout=60,
        )
        assert r.status_code == 400
        assert r.json() == {
            "detail": "Unable to read the request: the body ends before its closing boundary."
        }
        incoming = app_server.settings.archive_dir / "incoming"
        assert [p.name for p in incoming.iterdir()] == []

    def test_part_of_another_study_is_failed(self, app_server: InProcessServer) -> None:
        """POST /studies/{uid} with a part of another study: 409, 0x0122, nothing spooled."""
        data = (DICOM_DIR / STOW_FILES[0]).read_bytes()
        r = httpx.post(
            f"{app_server.url}/dicomweb/studies/1.2.3.4",
            content=part_header() + data + f"\r\n--{BOUNDARY}--\r\n".encode(),
            headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
            timeout=60,
        )
        assert r.status_code == 409
        assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0122]
        incoming = app_server.settings.archive_dir / "incoming"
        assert [p.name for p in incoming.iterdir()] == []

    def test_non_dose_object_is_ignored(self, app_server: InProcessServer) -> None:
        """A non-dose object by STOW-RS (scp_keep_non_dose off): 200, listed as ignored."""
        data = (DICOM_DIR / "ESR_non-dose.dcm").read_bytes()
        uid = str(pydicom.dcmread(DICOM_DIR / "ESR_non-dose.dcm").SOPInstanceUID)
        r = httpx.post(
            f"{app_server.url}/dicomweb/studies",
            content=part_header() + data + f"\r\n--{BOUNDARY}--\r\n".encode(),
            headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert wait_until(lambda: not app_server.app.state.spool.pending(), timeout=300)
        assert app_server.app.state.worker.wait_idle(300)
        with Registry(settings=app_server.settings) as reg:
            ignored = reg.ignored()
            rejects = reg.rejects()
        assert list(ignored["sop_instance_uid"]) == [uid]
        assert rejects.empty
        assert registry_sop_uids(app_server.settings) == []


class TestStowKeepsTheSendersBytes:
    """What STOW-RS archives is the part as sent; what it ignores says who sent it."""

    def test_archived_object_is_the_part_as_sent(self, app_server: InProcessServer) -> None:
        """Each part's bytes are archived unchanged: same SHA-256 as the bytes posted."""
        sent = {name: (DICOM_DIR / name).read_bytes() for name in STOW_FILES}
        body = b"".join(part_header() + data + b"\r\n" for data in sent.values())
        r = httpx.post(
            f"{app_server.url}/dicomweb/studies",
            content=body + f"--{BOUNDARY}--\r\n".encode(),
            headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert wait_until(lambda: not app_server.app.state.spool.pending(), timeout=300)
        assert app_server.app.state.worker.wait_idle(300)
        archive = app_server.settings.archive_dir
        archived = {
            p.name for p in archive.rglob("*.dcm") if "incoming" not in p.relative_to(archive).parts
        }
        assert archived == {f"{hashlib.sha256(d).hexdigest()}.dcm" for d in sent.values()}
        with Registry(settings=app_server.settings) as reg, reg.session(write=False) as session:
            from sqlalchemy import select

            from kerma.db.models import DoseReport

            rows = session.execute(select(DoseReport.archive_sha256, DoseReport.source)).all()
        assert {sha for sha, _ in rows} == {hashlib.sha256(d).hexdigest() for d in sent.values()}
        assert {source for _, source in rows} == {"STOW-RS from 127.0.0.1"}

    def test_ignored_object_shows_the_client(self, app_server: InProcessServer) -> None:
        """A non-dose object by STOW-RS is listed with the client's address, not a spool path."""
        data = (DICOM_DIR / "ESR_non-dose.dcm").read_bytes()
        r = httpx.post(
            f"{app_server.url}/dicomweb/studies",
            content=part_header() + data + f"\r\n--{BOUNDARY}--\r\n".encode(),
            headers={"Content-Type": STOW_CONTENT_TYPE, **app_server.headers},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert wait_until(lambda: not app_server.app.state.spool.pending(), timeout=300)
        assert app_server.app.state.worker.wait_idle(300)
        with Registry(settings=app_server.settings) as reg:
            ignored = reg.ignored()
        assert list(ignored["source"]) == ["STOW-RS from 127.0.0.1"]

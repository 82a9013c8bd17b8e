"""STOW-RS on ``kerma serve`` with real clients (dicomweb-client, httpx)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from kerma.config import Settings
from tests.net.conftest import DICOM_DIR, ROOT, free_port, registry_sop_uids, wait_until

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
                return httpx.get(f"{self.url}/openapi.json", timeout=2).status_code == 200
            except httpx.HTTPError:
                return self.process.poll() is not None

        assert wait_until(up, timeout=120) and self.process.poll() is None

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
        client = DICOMwebClient(url=f"{server.url}/dicomweb")
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
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
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
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 415

"""Intake limits: object size, inflated size, per-peer associations, idle time-outs.

The hostile objects are built by :mod:`tests.net.oversize`: a deflate bomb (about
2 MB that inflates to 2.2 GB) and an object larger than ``max_object_bytes``. They are
sent to a real ``kerma listen`` (pynetdicom SCU streaming the file as it is, with
``STORE_SEND_CHUNKED_DATASET``) and a real ``kerma serve`` (httpx), and the peak
resident memory of the receiving process (``VmHWM`` in ``/proc/<pid>/status``) is
checked against 300 MiB (docs/web.md "Memory": what a serving process holds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, XRayRadiationDoseSRStorage
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification

from kerma.api import Registry
from kerma.dicom.extract import inspect_path
from kerma.dicom.inflate import inflate, inflated_size
from kerma.errors import ObjectTooLargeError
from kerma.net import status
from kerma.net.dicomweb import SpooledPartWriter
from kerma.net.handlers import IntakeLimits, check_dataset
from kerma.net.spool import Spool
from kerma.records import Rejection
from kerma.services.keys import read_archived_file
from tests.db_fixtures import make_settings
from tests.net.conftest import (
    DICOM_DIR,
    ROOT,
    KermaListener,
    bearer,
    dataset_bytes,
    free_port,
    registry_sop_uids,
    stow_token,
    wait_until,
)
from tests.net.oversize import deflate_bomb, oversized_object, peak_rss_mb

pytestmark = pytest.mark.network

#: Peak resident memory allowed to the receiving process, in MiB (issue #11).
MAX_RSS_MB = 300

#: Memory a refused hostile request may add to the peak of a warmed-up ``kerma serve``,
#: in MiB: the bomb inflates to 2.2 GB and the oversized part is 300 MiB, so inflating or
#: buffering either would pass this many times over.
MAX_REQUEST_GROWTH_MB = 96

#: Size of the oversized object, in bytes (more than the default max_object_bytes).
OVERSIZED_BYTES = 300 * 1024 * 1024

RDSR = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A deflated RDSR of about 2 MB that inflates to 2.2 GB, and its SOP Instance UID."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    uid = deflate_bomb(path)
    return path, uid


@pytest.fixture(scope="module")
def oversized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An Explicit VR Little Endian RDSR of 300 MiB (a 300 MiB private OB element)."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    path = tmp_path_factory.mktemp("oversized") / "oversized.dcm"
    uid = oversized_object(path, OVERSIZED_BYTES)
    return path, uid


class TestInflate:
    """Bounded inflation (kerma.dicom.inflate)."""

    def test_bomb_is_refused_at_the_limit(self, bomb: tuple[Path, str]) -> None:
        """The bomb's data set is counted to the limit and refused, naming the setting."""
        data = bomb[0].read_bytes()
        deflated = data[data.index(b"DICM") + 4 :]
        offset = 12 + int.from_bytes(deflated[8:12], "little")
        with pytest.raises(ObjectTooLargeError, match="max_inflated_bytes") as info:
            inflated_size((deflated[offset:],), max_bytes=64 * 1024 * 1024)
        assert info.value.limit_bytes == 64 * 1024 * 1024

    def test_small_data_set_inflates_whole(self) -> None:
        """A data set within the limit inflates to its bytes, and the stream is complete."""
        raw = bytes(range(256)) * 40_000
        deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = deflater.compress(raw) + deflater.flush()
        assert inflated_size((deflated,), max_bytes=len(raw)) == (len(raw), True)
        assert inflate(deflated, max_bytes=len(raw)) == (raw, True)
        with pytest.raises(ObjectTooLargeError):
            inflate(deflated, max_bytes=len(raw) - 1)
        assert inflated_size((deflated[:1000],), max_bytes=len(raw))[1] is False


class TestCheckDataset:
    """The C-STORE handler's decode check of a deflated data set."""

    @staticmethod
    def _deflated(ds: pydicom.Dataset) -> bytes:
        """Return the data set encoded explicit VR little endian and raw-deflated."""
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_dataset(buf, ds)
        deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return deflater.compress(buf.getvalue()) + deflater.flush()

    def test_uids_beyond_the_inflated_head_are_found(self) -> None:
        """UIDs after 300 kB of a private element: the whole data set is inflated (within
        the limit) and read."""
        ds = pydicom.Dataset()
        ds.add_new(0x00070010, "LO", "KERMA")
        ds.add_new(0x00071000, "OB", bytes(300_000))
        ds.SOPClassUID = XRayRadiationDoseSRStorage
        ds.SOPInstanceUID = "1.2.3.4.5"
        data = self._deflated(ds)
        assert check_dataset(data, DeflatedExplicitVRLittleEndian) == (
            XRayRadiationDoseSRStorage,
            "1.2.3.4.5",
        )
        with pytest.raises(ObjectTooLargeError):
            check_dataset(data, DeflatedExplicitVRLittleEndian, max_inflated_bytes=200_000)


class TestSpooledPart:
    """The STOW-RS/WADO-RS part writer checks a deflated part in bounded memory."""

    def test_deflated_part_reads_its_uids(self, tmp_path: Path) -> None:
        """A genuine deflated RDSR part gives its SOP Class, Instance and Study UIDs."""
        ds = pydicom.dcmread(RDSR)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        writer = SpooledPartWriter(Spool(tmp_path / "archive"))
        writer.write(buffer.getvalue())
        expected = (str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID))
        assert writer.read_uids(with_study=True) == expected
        writer.discard()

    def test_part_over_the_limits_is_refused(self, tmp_path: Path, bomb: tuple[Path, str]) -> None:
        """write() stops at max_object_bytes; read_uids() refuses the bomb."""
        spool = Spool(tmp_path / "archive")
        writer = SpooledPartWriter(spool, IntakeLimits(max_object_bytes=1000))
        writer.write(b"x" * 1000)
        with pytest.raises(ObjectTooLargeError, match="max_object_bytes"):
            writer.write(b"x")
        writer.discard()
        writer = SpooledPartWriter(spool)
        writer.write(bomb[0].read_bytes())
        with pytest.raises(ObjectTooLargeError, match="max_inflated_bytes"):
            writer.read_uids()
        writer.discard()


class TestFileLimits:
    """``kerma inspect`` and ``kerma import`` refuse what is over the limits."""

    def test_inspect_rejects_bomb_with_reason(self, bomb: tuple[Path, str]) -> None:
        """inspect rejects the bomb (inflated size over the limit) and says which setting."""
        result = inspect_path(bomb[0])
        assert isinstance(result, Rejection)
        assert "inflates to more than 536,870,912 bytes" in result.reason
        assert "KERMA_MAX_INFLATED_BYTES" in result.reason

    def test_inspect_cli_memory_stays_low(self, bomb: tuple[Path, str], tmp_path: Path) -> None:
        """``kerma inspect`` of the bomb prints the rejection; its peak memory stays low."""
        script = (
            "import resource, subprocess, sys\n"
            "run = subprocess.run([sys.executable, '-m', 'kerma.cli.main', 'inspect',"
            " '--format', 'jsonl', sys.argv[1]], capture_output=True, text=True)\n"
            "sys.stdout.write(run.stdout)\n"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print('MAXRSS', peak, file=sys.stderr)\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", script, str(bomb[0])],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            timeout=300,
            check=False,
        )
        assert '"status": "rejected"' in run.stdout, run.stdout + run.stderr
        assert "max_inflated_bytes" in run.stdout
        maxrss_mb = int(run.stderr.rsplit("MAXRSS", 1)[1].split()[0]) / 1024
        print(f"\nkerma inspect of the deflate bomb: peak RSS {maxrss_mb:.0f} MiB")
        assert maxrss_mb < MAX_RSS_MB

    def test_import_rejects_bomb_and_oversized_file(
        self, bomb: tuple[Path, str], database_url: str, tmp_path: Path
    ) -> None:
        """import archives and rejects the bomb; a file over max_object_bytes is not read."""
        big = tmp_path / "big.dcm"
        big_uid = oversized_object(big, 8 * 1024 * 1024)
        settings = make_settings(database_url, tmp_path, max_object_bytes=4 * 1024 * 1024)
        with Registry(settings=settings) as reg:
            seen: list = []
            reg.import_paths([bomb[0], big, RDSR], progress=seen.append)
            outcomes = {Path(o.source).name: o for o in seen}
            assert outcomes["big.dcm"].status == "rejected"
            assert outcomes["big.dcm"].kind == "too-large"
            assert "more than the 4,194,304 bytes" in (outcomes["big.dcm"].reason or "")
            assert outcomes["bomb.dcm"].status == "rejected"
            assert "max_inflated_bytes" in (outcomes["bomb.dcm"].reason or "")
            assert outcomes[RDSR.name].status == "imported"
            rejects = reg.rejects()
        # the bomb is listed (archived, 2 MB) with its reason; the big file is not read
        assert len(rejects) == 1, rejects
        assert "max_inflated_bytes" in rejects["reason"].iloc[0]
        assert big_uid not in set(rejects["sop_instance_uid"])


def send_file(
    port: int,
    path: Path,
    *,
    sop_class: str = XRayRadiationDoseSRStorage,
    transfer_syntax: str,
    aet: str = "KERMA",
) -> pydicom.Dataset | None:
    """C-STORE a file as it is on disk (pynetdicom reads it in chunks, never decoded).

    Returns the C-STORE response status data set, or ``None`` when no response came.
    """
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title="LIMITSCU")
        ae.add_requested_context(sop_class, transfer_syntax)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
        assoc = ae.associate("127.0.0.1", port, ae_title=aet)
        assert assoc.is_established
        try:
            rsp = assoc.send_c_store(path)
            return rsp if rsp else None
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


@pytest.fixture
def limited_listener(tmp_path: Path) -> Iterator[KermaListener]:
    """``kerma listen`` with max_object_bytes 64 MiB (the rest at defaults)."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    scp = KermaListener(
        tmp_path / "kerma", extra_env={"KERMA_MAX_OBJECT_BYTES": str(64 * 1024 * 1024)}
    )
    scp.start()
    yield scp
    scp.terminate()
    scp.reap_orphans()


class TestSCPLimits:
    """The Storage SCP refuses the bomb and the oversized object with 0xA700, in bounded memory."""

    def test_bomb_is_refused_with_out_of_resources(
        self, limited_listener: KermaListener, bomb: tuple[Path, str]
    ) -> None:
        """The bomb gets 0xA700 with an Error Comment; it is quarantined, not imported."""
        rsp = send_file(
            limited_listener.port, bomb[0], transfer_syntax=DeflatedExplicitVRLittleEndian
        )
        assert rsp is not None
        assert rsp.Status == status.OUT_OF_RESOURCES
        assert "Inflated data set exceeds" in rsp.ErrorComment
        # a normal object still goes through on the same listener
        assert (
            send_file(
                limited_listener.port, RDSR, transfer_syntax=pydicom.uid.ExplicitVRLittleEndian
            ).Status
            == status.SUCCESS
        )
        limited_listener.wait_drained()
        uids = registry_sop_uids(limited_listener.settings)
        assert bomb[1] not in uids and len(uids) == 1
        quarantined = list((limited_listener.archive_dir / "quarantine").iterdir())
        assert len(quarantined) == 1  # the deflated data set as sent, with its file meta
        assert dataset_bytes(quarantined[0].read_bytes()) == dataset_bytes(bomb[0].read_bytes())
        rss = peak_rss_mb(limited_listener.process.pid)
        print(f"\nkerma listen after the deflate bomb: peak RSS {rss:.0f} MiB")
        assert rss < MAX_RSS_MB
        assert "max_inflated_bytes" in limited_listener.log()

    @pytest.mark.parametrize("limit_mib", [256, 64], ids=["default-limit", "limit-64MiB"])
    def test_oversized_object_is_refused_in_bounded_memory(
        self, tmp_path: Path, oversized: tuple[Path, str], limit_mib: int
    ) -> None:
        """A 300 MiB object gets 0xA700; the SCP holds at most 16 MiB of it in memory."""
        env = {} if limit_mib == 256 else {"KERMA_MAX_OBJECT_BYTES": str(limit_mib << 20)}
        listener = KermaListener(tmp_path / "kerma", extra_env=env)
        listener.start()
        try:
            rsp = send_file(
                listener.port, oversized[0], transfer_syntax=pydicom.uid.ExplicitVRLittleEndian
            )
            assert rsp is not None
            assert rsp.Status == status.OUT_OF_RESOURCES
            assert rsp.ErrorComment == f"Object exceeds {limit_mib << 20} bytes"
            rss = peak_rss_mb(listener.process.pid)
            print(f"\nkerma listen, 300 MiB object, limit {limit_mib} MiB: peak RSS {rss:.0f} MiB")
            assert rss < MAX_RSS_MB
            assert "more than max_object_bytes" in listener.log()
            assert oversized[1] not in registry_sop_uids(listener.settings)
            assert listener.pending() == []
            # nothing is left of it on disk either (the spill file is anonymous)
            assert [p.name for p in (listener.archive_dir / "incoming").iterdir()] in (
                [],
                [".lock"],
            )
        finally:
            listener.terminate()
            listener.reap_orphans()

    def test_large_object_under_the_limit_is_stored_whole(self, tmp_path: Path) -> None:
        """A 40 MiB object (held on disk while it arrives) is stored byte for byte."""
        path = tmp_path / "large.dcm"
        uid = oversized_object(path, 40 * 1024 * 1024)
        listener = KermaListener(tmp_path / "kerma", extra_env={"KERMA_SCP_KEEP_NON_DOSE": "1"})
        listener.start()
        try:
            rsp = send_file(listener.port, path, transfer_syntax=pydicom.uid.ExplicitVRLittleEndian)
            assert rsp is not None and rsp.Status == status.SUCCESS
            listener.wait_drained()
        finally:
            listener.terminate()
            listener.reap_orphans()
        with Registry(settings=listener.settings) as reg:
            rejects = reg.rejects()
        # an RDSR without content: kept in the archive and listed as rejected
        assert list(rejects["sop_instance_uid"]) == [uid], rejects
        kept = [p for p in listener.archive_dir.rglob("*") if p.stat().st_size > 40_000_000]
        assert len(kept) == 1
        # the archive is encrypted by default (archive_mode): decrypt with the key
        archived = read_archived_file(listener.settings, kept[0])
        assert dataset_bytes(archived) == dataset_bytes(path.read_bytes())


class StowServer:
    """A ``kerma serve`` subprocess with its own registry, archive and limits."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.settings = make_settings(f"sqlite:///{workdir / 'kerma.db'}", workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kerma.cli.main", "serve", "--port", str(self.port)],
            cwd=workdir,
            env={
                **os.environ,
                "KERMA_DATABASE_URL": self.settings.database_url,
                "KERMA_ARCHIVE_DIR": str(self.settings.archive_dir),
                "KERMA_PSEUDONYM_KEY": str(self.settings.pseudonym_key),
                "PYTHONPATH": str(ROOT / "src"),
                **env,
            },
            stdout=(workdir / "serve.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            """Serving, and the start-up warm-up of the overview has ended (GET /health):
            the memory measured after it is the request's, not the warm-up's."""
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                return httpx.get(url, timeout=2).json().get("overview_ready") is True
            except (httpx.HTTPError, ValueError):
                return self.process.poll() is not None

        assert wait_until(up, timeout=120) and self.process.poll() is None
        self.headers = bearer(stow_token(self.settings))

    @property
    def url(self) -> str:
        """The STOW-RS endpoint."""
        return f"http://127.0.0.1:{self.port}/dicomweb/studies"

    def stop(self) -> None:
        """Stop the server (SIGTERM)."""
        self.process.terminate()
        self.process.wait(60)


BOUNDARY = "kerma-limit-test"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(*paths: Path) -> Iterator[bytes]:
    """Yield a multipart/related body of the files, read in 1 MiB pieces."""
    for path in paths:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as fh:
            while piece := fh.read(1024 * 1024):
                yield piece
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def stow_server(tmp_path: Path) -> Iterator[StowServer]:
    """``kerma serve`` with the default limits."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    server = StowServer(tmp_path / "serve")
    yield server
    server.stop()


class TestSTOWLimits:
    """STOW-RS answers 413 for the bomb and the oversized object, in bounded memory."""

    def test_bomb_gets_413(self, stow_server: StowServer, bomb: tuple[Path, str]) -> None:
        """The bomb's part fails with 0xA700 and the request gets 413; an RDSR beside it is kept."""
        before = peak_rss_mb(stow_server.process.pid)
        response = httpx.post(
            stow_server.url,
            content=b"".join(multipart(RDSR, bomb[0])),
            headers={"Content-Type": CONTENT_TYPE, **stow_server.headers},
            timeout=300,
        )
        assert response.status_code == 413, response.text
        body = response.json()
        assert "max_inflated_bytes" in body["detail"]
        failed = body["response"]["00081198"]["Value"]
        assert [f["00081197"]["Value"] for f in failed] == [[status.OUT_OF_RESOURCES]]
        stored = body["response"]["00081199"]["Value"]
        assert len(stored) == 1
        rss = peak_rss_mb(stow_server.process.pid)
        print(f"\nkerma serve after the deflate bomb: peak RSS {before:.0f} -> {rss:.0f} MiB")
        assert rss < MAX_RSS_MB
        assert rss - before < MAX_REQUEST_GROWTH_MB

    def test_oversized_part_gets_413(
        self, stow_server: StowServer, oversized: tuple[Path, str]
    ) -> None:
        """A 300 MiB part (default limit 256 MiB) gets 413; nothing is kept in the spool."""
        before = peak_rss_mb(stow_server.process.pid)
        response = httpx.post(
            stow_server.url,
            content=multipart(oversized[0]),
            headers={"Content-Type": CONTENT_TYPE, **stow_server.headers},
            timeout=300,
        )
        assert response.status_code == 413, response.text
        assert "max_object_bytes" in response.json()["detail"]
        rss = peak_rss_mb(stow_server.process.pid)
        print(f"\nkerma serve after a 300 MiB part: peak RSS {before:.0f} -> {rss:.0f} MiB")
        assert rss < MAX_RSS_MB
        assert rss - before < MAX_REQUEST_GROWTH_MB
        incoming = stow_server.settings.archive_dir / "incoming"
        assert not incoming.is_dir() or list(incoming.iterdir()) == []

    def test_serve_imports_without_pyarrow(self, stow_server: StowServer) -> None:
        """``kerma serve`` keeps pyarrow out of its process (kerma.cli.serve.keep_pyarrow_out,
        60-75 MiB resident): no libarrow is mapped after the overview's warm-up and an
        import through STOW-RS, and the imported RDSR is in the registry."""
        uid = str(pydicom.dcmread(RDSR, stop_before_pixels=True).SOPInstanceUID)
        response = httpx.post(
            stow_server.url,
            content=b"".join(multipart(RDSR)),
            headers={"Content-Type": CONTENT_TYPE, **stow_server.headers},
            timeout=300,
        )
        assert response.status_code == 200, response.text
        assert wait_until(lambda: uid in registry_sop_uids(stow_server.settings), timeout=60)
        maps = Path(f"/proc/{stow_server.process.pid}/maps").read_text()
        assert "libarrow" not in maps
        assert "/pandas/" in maps  # the check would see a library the server loaded

    def test_declared_body_over_limit_gets_413_unread(self, tmp_path: Path) -> None:
        """A Content-Length over stow_max_request_bytes gets 413 before the body is read."""
        server = StowServer(tmp_path / "serve", KERMA_STOW_MAX_REQUEST_BYTES="1000000")
        try:
            body = b"".join(multipart(RDSR)) + b"\0" * 1_000_000
            response = httpx.post(
                server.url,
                content=body,
                headers={"Content-Type": CONTENT_TYPE, **server.headers},
                timeout=60,
            )
            assert response.status_code == 413
            assert "stow_max_request_bytes" in response.json()["detail"]
        finally:
            server.stop()
        assert registry_sop_uids(server.settings) == []


class TestAssociationLimits:
    """One peer holding many idle associations does not lock out the others."""

    def test_idle_peer_does_not_starve_another(self, tmp_path: Path) -> None:
        """64 idle associations from one peer: 32 admitted, the rest refused; another
        peer stores; the idle ones are closed by the network time-out."""
        if not DICOM_DIR.is_dir():
            pytest.skip("../shared/dicom is not beside the repository")
        listener = KermaListener(
            tmp_path / "kerma", extra_env={"KERMA_SCP_NETWORK_TIMEOUT_S": "30"}
        )
        listener.start()
        held = []
        try:
            ae = AE(ae_title="GREEDY")
            ae.add_requested_context(Verification)
            ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
            admitted, rejected = [], []
            for _ in range(64):
                assoc = ae.associate("127.0.0.1", listener.port, ae_title="KERMA")
                held.append(assoc)
                (admitted if assoc.is_established else rejected).append(assoc)
                assoc.dul._run_loop_delay = 0.05  # the test's idle peer: poll gently
            assert len(admitted) == 32  # scp_max_associations_per_peer
            assert all(a.is_rejected for a in rejected)

            other = AE(ae_title="MODALITY2")
            other.add_requested_context(XRayRadiationDoseSRStorage)
            assoc = other.associate(
                "127.0.0.1", listener.port, ae_title="KERMA", bind_address=("127.0.0.2", 0)
            )
            assert assoc.is_established
            try:
                rsp = assoc.send_c_store(pydicom.dcmread(RDSR))
                assert rsp.Status == status.SUCCESS
            finally:
                assoc.release()
            # the held associations send nothing: the SCP closes them after 30 s
            assert wait_until(
                lambda: not any(a.is_established for a in admitted), timeout=120, interval=0.5
            )
            assert all(a.is_aborted for a in admitted)
            listener.wait_drained()
            expected = str(pydicom.dcmread(RDSR, stop_before_pixels=True).SOPInstanceUID)
            assert registry_sop_uids(listener.settings) == [expected]
            log = listener.log()
            assert "scp_max_associations_per_peer" in log
            limits = (
                "object 256 MiB, inflated 512 MiB; associations 64, per peer 32; idle time-out 30 s"
            )
            assert f"limits: {limits}" in log
        finally:
            for assoc in held:
                if assoc.is_established:
                    assoc.abort()
            listener.terminate()
            listener.reap_orphans()


def test_default_limits_agree_between_settings_and_reader() -> None:
    """kerma.config repeats the reader's default limits (config imports nothing of Kerma)."""
    from kerma import config
    from kerma.dicom import inflate

    assert config.DEFAULT_MAX_OBJECT_BYTES == inflate.DEFAULT_MAX_OBJECT_BYTES
    assert config.DEFAULT_MAX_INFLATED_BYTES == inflate.DEFAULT_MAX_INFLATED_BYTES
    assert config.Settings().max_inflated_bytes == inflate.DEFAULT_MAX_INFLATED_BYTES

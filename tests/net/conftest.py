"""Fixtures of the network tests: a ``kerma listen`` subprocess, an Orthanc PACS, senders.

Every peer is real and runs on loopback: ``kerma listen`` is started as
``python -m kerma.cli.main listen`` with its own SQLite registry and archive in
``tmp_path``; Orthanc is started from a JSON configuration in ``tmp_path``; objects
are sent with dcmtk ``storescu`` or pynetdicom SCU threads that record every status.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from kerma.config import Settings
from tests.conftest import CASES_DIR, DICOM_DIR, ROOT

#: Small RDSRs of several kinds, repeated with new UIDs for the load tests.
SMALL_RDSRS = (
    "CT-RDSR-Siemens-Multi-1.dcm",
    "DX-RDSR-Canon_CXDI.dcm",
    "Dual-RDSR-DX.dcm",
    "CT-RDSR-Philips_BigBore4DCT.dcm",
    "MG-RDSR-Hologic_2D.dcm",
)

#: How long to wait for a peer or for the import worker, in seconds (a safety net only;
#: the tests assert values, never durations).
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 600.0


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """Return the path of ``name`` or skip the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (needed as a real DICOM peer)")
    return path


def wait_until(predicate, *, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def echo(
    port: int,
    *,
    aet: str = "KERMA",
    calling: str = "TESTSCU",
    tls_args: tuple[ssl.SSLContext, str] | None = None,
) -> bool:
    """Return whether a C-ECHO to 127.0.0.1:port succeeds (over TLS with ``tls_args``)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, tls_args=tls_args)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0x0000
    finally:
        assoc.release()


@dataclass
class KermaListener:
    """A ``kerma listen`` subprocess with its own registry and archive."""

    workdir: Path
    aet: str = "KERMA"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    ready_calling: str = "TESTSCU"
    orphans: list[int] = field(default_factory=list)
    #: (client SSL context, server host name) for the readiness C-ECHO of a TLS listener
    tls_args: tuple[ssl.SSLContext, str] | None = None

    @property
    def database_url(self) -> str:
        """SQLite URL of the listener's registry."""
        return f"sqlite:///{self.workdir / 'kerma.db'}"

    @property
    def archive_dir(self) -> Path:
        """The listener's archive folder."""
        return self.workdir / "archive"

    @property
    def settings(self) -> Settings:
        """Settings of the listener (for a Registry opened by the test)."""
        return Settings(
            database_url=self.database_url,
            archive_dir=self.archive_dir,
            key_file=self.workdir / "kerma-key" / "kerma.key",  # the subprocess's default
        )

    def env(self) -> dict[str, str]:
        """Environment of the subprocess."""
        env = dict(os.environ)
        env.update(
            KERMA_DATABASE_URL=self.database_url,
            KERMA_ARCHIVE_DIR=str(self.archive_dir),
            KERMA_KEY_FILE=str(self.workdir / "kerma-key" / "kerma.key"),
            PYTHONPATH=str(ROOT / "src"),
            **self.extra_env,
        )
        return env

    def start(self) -> None:
        """Start the listener and wait until it answers C-ECHO."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "listen.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kerma.cli.main",
                "listen",
                "--aet",
                self.aet,
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
            ],
            cwd=self.workdir,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ready = wait_until(
            lambda: (
                self.process.poll() is not None
                or echo(self.port, aet=self.aet, calling=self.ready_calling, tls_args=self.tls_args)
            ),
            timeout=READY_TIMEOUT_S,
            interval=0.3,
        )
        if not ready or self.process.poll() is not None:
            raise RuntimeError(f"kerma listen did not start:\n{self.log()}")

    def log(self) -> str:
        """The listener's output so far."""
        path = self.workdir / "listen.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def children(self) -> list[int]:
        """PIDs of the listener's child processes (its import process)."""
        if self.process is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL the listener (no clean-up at all); its orphans are stopped at teardown."""
        if self.process is not None and self.process.poll() is None:
            self.orphans.extend(self.children())
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def reap_orphans(self) -> None:
        """SIGTERM the children a SIGKILLed listener left behind, by PID."""
        for pid in self.orphans:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        self.orphans.clear()

    def terminate(self) -> int | None:
        """SIGTERM the listener and wait; return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def pending(self) -> list[Path]:
        """Spool files not yet imported."""
        incoming = self.archive_dir / "incoming"
        if not incoming.is_dir():
            return []
        return [p for p in incoming.iterdir() if p.suffix == ".dcm" and not p.name.startswith(".")]

    def wait_drained(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Wait until the spool is empty (every stored object imported)."""
        assert wait_until(lambda: not self.pending(), timeout=timeout, interval=0.5), (
            f"{len(self.pending())} objects still in the spool\n{self.log()[-3000:]}"
        )


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[KermaListener]:
    """A running ``kerma listen`` (skipped when the shared data is missing)."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    scp = KermaListener(tmp_path / "kerma")
    scp.start()
    yield scp
    scp.terminate()
    scp.reap_orphans()


def registry_sop_uids(settings: Settings) -> list[str]:
    """Return the SOP Instance UIDs of every ``dose_report`` row (duplicates kept)."""
    from sqlalchemy import select

    from kerma.api import Registry
    from kerma.db.models import DoseReport

    with Registry(settings=settings) as reg, reg.session(write=False) as session:
        return list(session.scalars(select(DoseReport.sop_instance_uid)))


# -- test objects -------------------------------------------------------------------------


def load_templates(names: Iterable[str] = SMALL_RDSRS) -> list[Dataset]:
    """Read shared dose objects to copy."""
    return [pydicom.dcmread(DICOM_DIR / name) for name in names]


def copies(templates: list[Dataset], n: int) -> list[Dataset]:
    """Return ``n`` copies of the templates, each a new study (new Study/Series/SOP UIDs)."""
    out = []
    for i in range(n):
        ds = copy.deepcopy(templates[i % len(templates)])
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def _same_length_uid(length: int, rng: random.Random) -> str:
    """Return a random valid UID of exactly ``length`` characters under the 2.25 root."""
    digits = length - len("2.25.")
    return "2.25." + str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=digits - 1))


def write_copies(
    directory: Path, n: int, names: Iterable[str] = SMALL_RDSRS, *, seed: int = 0
) -> dict[Path, str]:
    """Write ``n`` copies of shared files, each a new study; return file -> SOP Instance UID.

    The Study, Series and SOP Instance UIDs are replaced in the encoded bytes by new
    UIDs of the same length (so every element length stays valid), which is much
    faster than decoding and re-encoding a thousand datasets.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    templates = []
    for name in names:
        path = DICOM_DIR / name
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        templates.append((path.read_bytes(), uids))
    out: dict[Path, str] = {}
    for i in range(n):
        data, uids = templates[i % len(templates)]
        new = [_same_length_uid(len(u), rng) for u in uids]
        for old_uid, new_uid in zip(uids, new, strict=True):
            data = data.replace(old_uid.encode(), new_uid.encode())
        path = directory / f"{i:05d}.dcm"
        path.write_bytes(data)
        out[path] = new[2]
    return out


@dataclass
class SendLog:
    """Statuses recorded by sender threads: SOP Instance UID -> status (thread-safe)."""

    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, uid: str, status: int) -> None:
        """Record the status of one C-STORE."""
        with self.lock:
            self.statuses[uid] = status

    @property
    def succeeded(self) -> set[str]:
        """SOP Instance UIDs acknowledged with 0x0000."""
        with self.lock:
            return {uid for uid, status in self.statuses.items() if status == 0x0000}


def send_concurrently(
    datasets: list[Dataset],
    port: int,
    *,
    associations: int = 20,
    aet: str = "KERMA",
    log: SendLog | None = None,
) -> SendLog:
    """Send ``datasets`` over ``associations`` parallel associations; record every status.

    A sender whose association breaks (the SCP was killed) stops; what it had not
    sent is simply not in the log.
    """
    log = log or SendLog()
    sop_classes = sorted({str(ds.SOPClassUID) for ds in datasets})
    chunks = [datasets[i::associations] for i in range(associations)]

    def sender(chunk: list[Dataset], index: int) -> None:
        ae = AE(ae_title=f"SENDER{index:02d}")
        for sop_class in sop_classes:
            ae.add_requested_context(sop_class)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        assoc = ae.associate("127.0.0.1", port, ae_title=aet)
        if not assoc.is_established:
            log.errors.append(f"sender {index}: association failed")
            return
        try:
            for ds in chunk:
                if not assoc.is_established:
                    break
                try:
                    rsp = assoc.send_c_store(ds)
                except Exception as exc:  # the peer went away mid-request
                    log.errors.append(f"sender {index}: {type(exc).__name__}")
                    break
                if rsp and "Status" in rsp:
                    log.record(str(ds.SOPInstanceUID), int(rsp.Status))
                else:
                    break  # no response: not acknowledged
        finally:
            with contextlib.suppress(Exception):
                if assoc.is_established:
                    assoc.release()

    threads = [threading.Thread(target=sender, args=(c, i)) for i, c in enumerate(chunks) if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return log


def send_with_storescu(
    files: dict[Path, str],
    port: int,
    *,
    processes: int = 20,
    aet: str = "KERMA",
    log: SendLog | None = None,
) -> SendLog:
    """Send ``files`` over ``processes`` concurrent dcmtk storescu processes; record statuses.

    Each process opens one association. Their output is parsed while they run (one
    reader thread each), so ``log`` grows as objects are acknowledged; a file counts
    as acknowledged only after its "Received Store Response (Success)".
    """
    exe = require_binary("storescu")
    log = log or SendLog()
    paths = list(files)
    chunks = [paths[i::processes] for i in range(processes)]

    def run(chunk: list[Path], index: int) -> None:
        proc = subprocess.Popen(
            [
                exe,
                "-R",
                "-v",
                "-aet",
                f"STORESCU{index:02d}",
                "-aec",
                aet,
                "127.0.0.1",
                str(port),
                *map(str, chunk),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        current: Path | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif "Received Store Response" in line and current is not None:
                ok = "(Success)" in line
                log.record(files[current], 0x0000 if ok else 0xFFFF)
                current = None
        proc.wait()

    threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(chunks) if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return log


def storescu(
    port: int, files: list[Path], *, aet: str = "KERMA"
) -> subprocess.CompletedProcess[str]:
    """Run dcmtk ``storescu`` (proposing exactly the files' SOP classes) and return it."""
    exe = require_binary("storescu")
    return subprocess.run(
        [exe, "-R", "-v", "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# -- Orthanc ------------------------------------------------------------------------------


@dataclass
class Orthanc:
    """An Orthanc PACS started for one test, on loopback ports."""

    workdir: Path
    kerma_aet: str
    kerma_port: int
    aet: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    has_dicomweb: bool = False

    @property
    def url(self) -> str:
        """REST root."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root (plugin)."""
        return f"{self.url}/dicom-web"

    def start(self) -> None:
        """Write the configuration and start Orthanc; wait until its REST API answers."""
        exe = require_binary("Orthanc")
        self.workdir.mkdir(parents=True, exist_ok=True)
        plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
        self.has_dicomweb = plugin.exists()
        config = {
            "Name": "kerma-test",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": {
                "kerma": {
                    "AET": self.kerma_aet,
                    "Host": "127.0.0.1",
                    "Port": self.kerma_port,
                    "AllowEcho": True,
                    "AllowFind": True,
                    "AllowMove": True,
                    "AllowGet": True,
                    "AllowStore": True,
                }
            },
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "Plugins": [str(plugin)] if self.has_dicomweb else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
            "HttpsVerifyPeers": False,
            "StorageCompression": False,
        }
        conf = self.workdir / "orthanc.json"
        conf.write_text(json.dumps(config, indent=2))
        log = (self.workdir / "orthanc.log").open("ab")
        self.process = subprocess.Popen([exe, str(conf)], stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.process.poll() is not None:
                return True
            try:
                return httpx.get(f"{self.url}/system", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, timeout=READY_TIMEOUT_S) or self.process.poll() is not None:
            raise RuntimeError(
                f"Orthanc did not start: {(self.workdir / 'orthanc.log').read_text()}"
            )

    def upload(self, files: Iterable[Path]) -> int:
        """POST files to /instances; return how many Orthanc accepted."""
        n = 0
        with httpx.Client(timeout=60) as client:
            for path in files:
                r = client.post(f"{self.url}/instances", content=path.read_bytes())
                r.raise_for_status()
                n += 1
        return n

    def instance_file(self, sop_instance_uid: str) -> bytes:
        """Return the file Orthanc holds for a SOP Instance UID (what it sends when asked)."""
        with httpx.Client(timeout=60) as client:
            found = client.post(
                f"{self.url}/tools/find",
                json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
            )
            found.raise_for_status()
            (orthanc_id,) = found.json()
            r = client.get(f"{self.url}/instances/{orthanc_id}/file")
            r.raise_for_status()
            return r.content

    def stop(self) -> None:
        """Stop Orthanc."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


__all__ = ["CASES_DIR", "DICOM_DIR"]


def deep_sr_file(path: Path, depth: int = 300) -> Path:
    """Write an X-Ray Radiation Dose SR whose content tree is nested ``depth`` levels deep.

    The nested (0040,A730) 'Content Sequence' is encoded by hand (explicit VR little
    endian, undefined lengths), since pydicom itself cannot build or read such depth.
    """
    import struct

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    base = pydicom.dcmread(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm")
    base.SOPInstanceUID = generate_uid()
    base.StudyInstanceUID = generate_uid()
    before, after = Dataset(), Dataset()
    for elem in base:
        if elem.tag < 0x0040A730:
            before.add(elem)
        elif elem.tag > 0x0040A730:
            after.add(elem)

    def encode(ds: Dataset) -> bytes:
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_dataset(buf, ds)
        return buf.getvalue()

    sq_open = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item_open = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    value_type = struct.pack("<HH2sH", 0x0040, 0xA040, b"CS", 10) + b"CONTAINER "
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = (sq_open + item_open + value_type) * depth + closing * depth
    meta = base.file_meta
    meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta_buf = DicomBytesIO()
    meta_buf.is_little_endian, meta_buf.is_implicit_VR = True, False
    write_file_meta_info(meta_buf, meta)
    path.write_bytes(
        b"\0" * 128 + b"DICM" + meta_buf.getvalue() + encode(before) + nested + encode(after)
    )
    return path


def dataset_bytes(part10: bytes) -> bytes:
    """Return the data set of a Part 10 object: what follows its preamble and file meta.

    The file meta group's length is (0002,0000) 'File Meta Information Group Length'
    (PS3.10 Section 7.1), which starts right after the ``DICM`` prefix.
    """
    import struct

    assert part10[128:132] == b"DICM"
    tag, vr, _, group_length = struct.unpack_from("<I2sHI", part10, 132)
    assert (tag, vr) == (0x00000002, b"UL")
    return part10[132 + 12 + group_length :]


def file_meta_of(part10: bytes) -> Dataset:
    """Return the file meta information of a Part 10 object."""
    from io import BytesIO

    return pydicom.dcmread(BytesIO(part10), stop_before_pixels=True).file_meta


def mr_image_file(path: Path) -> Dataset:
    """Write a synthetic 8 x 8 MR image without any dose attribute; return its dataset.

    An MR Image Storage object (PS3.3 A.4) with the identifying attributes, a Modality
    of MR and 128 bytes of zero pixel data: a real image type that carries no dose
    information, such as a Storage SCP receiving whole studies gets.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientID = "KERMA-TEST-MR"
    ds.StudyDate = "20240101"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(8 * 8 * 2)
    ds.save_as(path, enforce_file_format=True)
    return ds


# -- STOW-RS authentication (issue #13) -----------------------------------------------------


def stow_token(settings: Settings, name: str = "stow-test") -> str:
    """Create an API token with the physicist role in the registry of ``settings``.

    STOW-RS refuses requests without a token (or a session) of at least that role; the
    token is made through the service a ``kerma tokens add`` runs.
    """
    from kerma.services.users import Accounts, Actor

    accounts = Accounts(settings)
    try:
        _info, token = accounts.add_token(name, "physicist", Actor(name="test", kind="cli"))
    finally:
        accounts.close()
    return token


def bearer(token: str) -> dict[str, str]:
    """Return the ``Authorization`` header of an API token."""
    return {"Authorization": f"Bearer {token}"}


def server_is_up(url: str) -> bool:
    """Return whether ``kerma serve`` at ``url`` answers (its login page, open to all)."""
    try:
        return httpx.get(f"{url}/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

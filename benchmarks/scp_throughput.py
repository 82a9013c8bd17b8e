"""Throughput of ``kerma listen`` against dcmtk ``storescp``, with the same sender.

Usage::

    .venv/bin/python benchmarks/scp_throughput.py [--n 500] [--associations 1]

Writes ``n`` copies of small shared RDSRs (each a new study: Study, Series and SOP
Instance UIDs replaced in the bytes), sends them with dcmtk ``storescu`` to dcmtk
``storescp`` (writing to a temporary folder) and to ``kerma listen`` (fresh SQLite
registry and archive in a temporary folder), and prints objects per second for both
and their ratio. Kerma fsyncs every object (file and folder) before it answers;
storescp does not. Kerma's import worker runs during the transfer, as in production.
Only loopback is used.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parent.parent
DICOM_DIR = ROOT.parent / "shared" / "dicom"
FILES = (
    "CT-RDSR-Siemens-Multi-1.dcm",
    "DX-RDSR-Canon_CXDI.dcm",
    "Dual-RDSR-DX.dcm",
    "CT-RDSR-Philips_BigBore4DCT.dcm",
    "MG-RDSR-Hologic_2D.dcm",
)


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_copies(directory: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` copies of :data:`FILES`, each with new UIDs of the same length."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    templates = []
    for name in FILES:
        ds = pydicom.dcmread(DICOM_DIR / name, stop_before_pixels=True)
        uids = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        templates.append(((DICOM_DIR / name).read_bytes(), uids))
    paths = []
    for i in range(n):
        data, uids = templates[i % len(templates)]
        for old in uids:
            digits = len(old) - len("2.25.")
            new = (
                "2.25." + str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=digits - 1))
            )
            data = data.replace(old.encode(), new.encode())
        path = directory / f"{i:05d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def wait_echo(port: int, aet: str, timeout: float = 120.0) -> None:
    """Wait until ``echoscu`` succeeds against 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = subprocess.run(
            ["echoscu", "-aec", aet, "127.0.0.1", str(port)], capture_output=True, check=False
        )
        if run.returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError(f"no C-ECHO answer on port {port}")


def send(port: int, aet: str, files: list[Path], associations: int) -> tuple[float, int]:
    """Send ``files`` with ``associations`` parallel storescu; return (seconds, successes)."""
    chunks = [files[i::associations] for i in range(associations)]
    env = dict(os.environ, TCP_NODELAY="1")  # dcmtk: disable Nagle's algorithm
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-R", "-v", "-aec", aet, "127.0.0.1", str(port), *map(str, chunk)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for chunk in chunks
        if chunk
    ]
    outputs = [p.communicate()[0] for p in procs]
    seconds = time.perf_counter() - start
    return seconds, sum(o.count("Received Store Response (Success)") for o in outputs)


def main() -> int:
    """Run the benchmark and print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="objects to send (default 500)")
    parser.add_argument("--associations", type=int, default=1, help="parallel storescu (default 1)")
    args = parser.parse_args()
    for exe in ("storescu", "storescp", "echoscu"):
        if shutil.which(exe) is None:
            print(f"{exe} (dcmtk) is not installed", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="kerma-bench-") as tmp:
        work = Path(tmp)
        files = write_copies(work / "objects", args.n)

        # dcmtk storescp
        port = free_port()
        out = work / "storescp"
        out.mkdir()
        storescp = subprocess.Popen(
            ["storescp", "-od", str(out), "-aet", "STORESCP", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, TCP_NODELAY="1"),
        )
        try:
            wait_echo(port, "STORESCP")
            dcmtk_s, dcmtk_ok = send(port, "STORESCP", files, args.associations)
        finally:
            storescp.send_signal(signal.SIGTERM)
            storescp.wait(30)

        # kerma listen
        port = free_port()
        env = dict(os.environ)
        env.update(
            KERMA_DATABASE_URL=f"sqlite:///{work / 'kerma.db'}",
            KERMA_ARCHIVE_DIR=str(work / "archive"),
            PYTHONPATH=str(ROOT / "src"),
        )
        kerma = subprocess.Popen(
            [sys.executable, "-m", "kerma.cli.main", "listen", "--port", str(port)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_echo(port, "KERMA")
            kerma_s, kerma_ok = send(port, "KERMA", files, args.associations)
        finally:
            kerma.send_signal(signal.SIGTERM)
            kerma.wait(300)

    dcmtk_rate, kerma_rate = dcmtk_ok / dcmtk_s, kerma_ok / kerma_s
    print(f"objects: {args.n} (small RDSRs), associations: {args.associations}")
    print(f"dcmtk storescp: {dcmtk_ok} stored in {dcmtk_s:.2f} s = {dcmtk_rate:.1f} objects/s")
    print(f"kerma listen:   {kerma_ok} stored in {kerma_s:.2f} s = {kerma_rate:.1f} objects/s")
    print(f"ratio kerma/storescp: {kerma_rate / dcmtk_rate:.2f} (target >= 0.5)")
    return 0 if dcmtk_ok == kerma_ok == args.n else 1


if __name__ == "__main__":
    sys.exit(main())

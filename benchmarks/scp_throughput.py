"""Throughput of ``kerma listen`` against dcmtk ``storescp``, with the same sender.

Usage::

    .venv/bin/python benchmarks/scp_throughput.py [--n 500] [--associations 1] [--rounds 5]

Writes ``n`` copies of small shared RDSRs (each a new study: Study, Series and SOP
Instance UIDs replaced in the bytes) and starts dcmtk ``storescp`` (writing to a
temporary folder) and ``kerma listen`` (fresh SQLite registry and archive in a
temporary folder) side by side. The objects are split into ``rounds`` slices; each
slice is sent with dcmtk ``storescu`` to one server and then to the other (the order
alternates from round to round), so both meet the same load on a shared machine.
Prints objects per second for both, per round and in total, their ratio, the median
of the per-round ratios, the CPU time storescp and ``kerma listen``'s network process
spent per object while receiving, the CPU time its import process spent per object
once the spool is drained (Linux ``/proc``), and the load average.
Kerma makes every object durable (fsync of a pre-created spool slot) before it
answers; storescp does not.
Kerma's import worker runs during the transfer, as in production. Only loopback is used.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
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


def process_cpu_s(pid: int) -> float | None:
    """Return the user + system CPU seconds of process ``pid`` (Linux ``/proc``), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s(pid: int) -> float:
    """Return the user + system CPU seconds of the live child processes of ``pid``."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_drained(spool: Path, timeout: float = 600.0) -> bool:
    """Wait until ``kerma listen`` imported everything spooled (no ``*.dcm`` left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(p.suffix == ".dcm" for p in spool.glob("*.dcm")):
            return True
        time.sleep(0.2)
    return False


def start_storescp(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start dcmtk storescp writing to ``work/storescp``; return it and its port."""
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        ["storescp", "-od", str(out), "-aet", "STORESCP", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TCP_NODELAY="1"),
    )
    return proc, port


def start_kerma(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``kerma listen`` with a fresh SQLite registry and archive; return it and its port."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        KERMA_DATABASE_URL=f"sqlite:///{work / 'kerma.db'}",
        KERMA_ARCHIVE_DIR=str(work / "archive"),
        PYTHONPATH=str(ROOT / "src"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerma.cli.main", "listen", "--port", str(port)],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def main() -> int:
    """Run the benchmark and print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="objects to send (default 500)")
    parser.add_argument("--associations", type=int, default=1, help="parallel storescu (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating slices per server (default 5)"
    )
    args = parser.parse_args()
    for exe in ("storescu", "storescp", "echoscu"):
        if shutil.which(exe) is None:
            print(f"{exe} (dcmtk) is not installed", file=sys.stderr)
            return 2
    rounds = max(1, min(args.rounds, args.n))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kerma-bench-") as tmp:
        work = Path(tmp)
        files = write_copies(work / "objects", args.n)
        slices = [files[i * args.n // rounds : (i + 1) * args.n // rounds] for i in range(rounds)]
        storescp, dcmtk_port = start_storescp(work)
        kerma, kerma_port = start_kerma(work)
        seconds = {"storescp": 0.0, "kerma": 0.0}
        stored = {"storescp": 0, "kerma": 0}
        ratios = []
        cpu_s = {"storescp": 0.0, "kerma": 0.0}
        import_cpu_s: float | None = None
        try:
            wait_echo(dcmtk_port, "STORESCP")
            wait_echo(kerma_port, "KERMA")
            for i, chunk in enumerate(slices):
                order = ["storescp", "kerma"] if i % 2 == 0 else ["kerma", "storescp"]
                rate = {}
                for server in order:
                    port, aet = (
                        (dcmtk_port, "STORESCP") if server == "storescp" else (kerma_port, "KERMA")
                    )
                    pid = kerma.pid if server == "kerma" else storescp.pid
                    cpu_before = process_cpu_s(pid)
                    s, ok = send(port, aet, chunk, args.associations)
                    cpu_after = process_cpu_s(pid)
                    if cpu_before is not None and cpu_after is not None:
                        cpu_s[server] += cpu_after - cpu_before
                    seconds[server] += s
                    stored[server] += ok
                    rate[server] = ok / s
                ratios.append(rate["kerma"] / rate["storescp"])
                print(
                    f"round {i + 1}/{rounds}: {len(chunk)} objects, storescp "
                    f"{rate['storescp']:.1f}/s, kerma {rate['kerma']:.1f}/s, "
                    f"ratio {ratios[-1]:.2f}"
                )
            drained = wait_drained(work / "archive" / "incoming")
            import_cpu_s = children_cpu_s(kerma.pid) if drained else None
        finally:
            storescp.send_signal(signal.SIGTERM)
            kerma.send_signal(signal.SIGTERM)
            storescp.wait(30)
            kerma.wait(300)
    load_after = os.getloadavg()

    dcmtk_rate = stored["storescp"] / seconds["storescp"]
    kerma_rate = stored["kerma"] / seconds["kerma"]
    print(f"objects: {args.n} (small RDSRs), associations: {args.associations}, rounds: {rounds}")
    print(
        f"dcmtk storescp: {stored['storescp']} stored in {seconds['storescp']:.2f} s "
        f"= {dcmtk_rate:.1f} objects/s"
    )
    print(
        f"kerma listen:   {stored['kerma']} stored in {seconds['kerma']:.2f} s "
        f"= {kerma_rate:.1f} objects/s"
    )
    if cpu_s["kerma"]:
        print(
            "CPU per object: storescp "
            f"{cpu_s['storescp'] / max(stored['storescp'], 1) * 1e3:.2f} ms, kerma listen "
            f"network process {cpu_s['kerma'] / max(stored['kerma'], 1) * 1e3:.2f} ms"
        )
    if import_cpu_s is not None:
        print(
            "CPU per object of kerma listen's import process (start-up included): "
            f"{import_cpu_s / max(stored['kerma'], 1) * 1e3:.2f} ms"
        )
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"median of the round ratios: {statistics.median(ratios):.2f}")
    print(f"ratio kerma/storescp: {kerma_rate / dcmtk_rate:.2f} (target >= 0.5)")
    return 0 if stored["storescp"] == stored["kerma"] == args.n else 1


if __name__ == "__main__":
    sys.exit(main())

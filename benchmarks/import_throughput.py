"""Import throughput of Kerma against the floor of simply decoding the same DICOM files.

Run from the repository root::

    .venv/bin/python benchmarks/import_throughput.py [--n 2000] [--workdir DIR]

It builds ``N`` dose reports in ``DIR/corpus`` (about half copies of the real vendor CT
and fluoroscopy RDSRs of ``../shared/dicom`` with new SOP Instance, Study Instance,
Series Instance and Irradiation Event UIDs so that nothing is merged or de-duplicated,
half written by :mod:`kerma.demo.generator`), then times, each in its own process:

(a) the floor: ``pydicom.dcmread`` of each file, then a visit of every element of every
    content item, recursively, reading its value (so pydicom decodes everything);
(b) ``kerma.Registry(<fresh SQLite>).import_paths(...)`` of every 4th file (N/4);
(c) the same for all N files.

It prints objects/s, the ratio kerma time / floor time (target <= 2) and, per phase,
the peak resident memory (``resource.getrusage(...).ru_maxrss``) and its growth over the
resident memory just before the timed loop; growth at N/4 and at N shows whether
memory grows with N. ``--tracemalloc`` also reports the Python heap peak (slower, so
timings of that run are not comparable). ``--profile`` prints a cProfile of (c).
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
SHARED_DICOM = ROOT.parent / "shared" / "dicom"
#: Name prefixes of the shared CT and fluoroscopy RDSRs used as templates.
SHARED_PREFIXES = ("CT-RDSR-", "CT-ESR-", "RF-RDSR-", "PSD-", "OR1-", "RF-No-", "RF-Pat-")


# --- corpus -----------------------------------------------------------------------------------


def shared_templates() -> list[Path]:
    """Return the shared CT and fluoroscopy RDSRs, sorted by name."""
    return sorted(p for p in SHARED_DICOM.glob("*.dcm") if p.name.startswith(SHARED_PREFIXES))


def _concept(item: Dataset) -> Any:
    """Return the concept name of a content item as a pydicom Code, or ``None``."""
    from kerma.dicom.content import concept_of

    return concept_of(item)


def renew_uids(ds: Dataset, salt: str) -> None:
    """Give ``ds`` new SOP Instance, Study, Series and Irradiation Event UIDs (in place).

    The Study Instance UID referenced in the content tree ('Scope of Accumulation') is
    replaced by the new one; each Irradiation Event UID gets a new UID; the Device
    Observer UID is kept (same device).
    """
    old_study = str(ds.get("StudyInstanceUID", ""))
    new_study = generate_uid(entropy_srcs=[salt, "study"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[salt, "sop"])
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = new_study
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[salt, "series"])
    event_uids: dict[str, str] = {}
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        stack.extend(item.get("ContentSequence", []))
        if item.get("ValueType") != "UIDREF":
            continue
        concept = _concept(item)
        old = str(item.get("UID", ""))
        if concept == codes.DCM.IrradiationEventUID:
            if old not in event_uids:
                event_uids[old] = generate_uid(entropy_srcs=[salt, "event", old])
            item.UID = event_uids[old]
        elif concept == codes.DCM.StudyInstanceUID and (old == old_study or not old_study):
            item.UID = new_study


def build_corpus(workdir: Path, n: int, seed: int) -> list[Path]:
    """Write (or reuse) ``n`` dose reports under ``workdir/corpus``; return their paths."""
    from kerma.demo.generator import generate_demo_files

    corpus = workdir / "corpus"
    manifest = corpus / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("n") == n and data.get("seed") == seed:
            print(f"reusing corpus of {n} files in {corpus}")
            return [Path(p) for p in data["paths"]]
    if corpus.exists():
        shutil.rmtree(corpus)
    (corpus / "shared").mkdir(parents=True)
    templates = shared_templates()
    if not templates:
        raise SystemExit(f"no shared RDSRs found in {SHARED_DICOM}")
    n_shared = n // 2
    paths: list[Path] = []
    t0 = time.perf_counter()
    cache: dict[Path, Dataset] = {}  # each template is read once; UIDs are renewed per copy
    for i in range(n_shared):
        src = templates[i % len(templates)]
        ds = cache.get(src) or cache.setdefault(src, pydicom.dcmread(src))
        renew_uids(ds, f"kerma-bench-{seed}-{i}")
        dst = corpus / "shared" / f"{i:06d}-{src.name}"
        ds.save_as(dst)
        paths.append(dst)
    print(
        f"copied {n_shared} shared RDSRs ({len(templates)} templates) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    t0 = time.perf_counter()
    paths += generate_demo_files(corpus / "demo", studies=n - n_shared, seed=10_000 + seed)
    print(f"generated {n - n_shared} demo RDSRs in {time.perf_counter() - t0:.1f} s")
    # interleave shared and demo files
    shared, demo = paths[:n_shared], paths[n_shared:]
    mixed = [p for pair in zip(shared, demo, strict=False) for p in pair]
    mixed += shared[len(demo) :] + demo[len(shared) :]
    manifest.write_text(json.dumps({"n": n, "seed": seed, "paths": [str(p) for p in mixed]}))
    return mixed


# --- phases (each run in a child process) -------------------------------------------------


def _rss_mb() -> float:
    """Return the current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float:
    """Return the peak resident set size of this process in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux


def touch(ds: Dataset) -> int:
    """Read the value of every element of ``ds``, recursing into sequences; return the count."""
    count = 0
    for elem in ds:
        value = elem.value
        count += 1
        if elem.VR == "SQ":
            for item in value:
                count += touch(item)
    return count


def phase_floor(paths: list[Path]) -> dict[str, Any]:
    """Time ``dcmread`` plus a full decode of every element of each file."""
    elements = 0
    start, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        elements += touch(pydicom.dcmread(path))
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "elements": elements,
    }


def phase_import(paths: list[Path], workdir: Path, label: str, profile: bool) -> dict[str, Any]:
    """Time ``Registry(fresh SQLite).import_paths(paths)``."""
    from kerma.api import Registry
    from kerma.config import get_settings

    db = workdir / f"bench-{label}.sqlite"
    archive = workdir / f"archive-{label}"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(archive, ignore_errors=True)
    url = f"sqlite:///{db}"
    settings = get_settings(database_url=url, archive_dir=archive)
    registry = Registry(url, settings=settings)
    registry.importer  # noqa: B018 - set up archive and key before timing
    profiler = cProfile.Profile() if profile else None
    baseline = _rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    summary = registry.import_paths(paths)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu
    registry.close()
    out: dict[str, Any] = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "imported": summary.n_imported,
        "rejected": summary.rejected,
        "already_present": summary.already_present,
        "rss_before_mb": baseline,
    }
    if profiler is not None:
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream).sort_stats("cumulative")
        stats.print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
        out["profile"] = stream.getvalue()
    return out


def run_child(args: argparse.Namespace) -> None:
    """Run one phase in this process and print its result as JSON on the last line."""
    paths = [Path(p) for p in json.loads(Path(args.files).read_text())]
    if args.tracemalloc:
        tracemalloc.start()
    if args.phase == "floor":
        baseline = _rss_mb()
        result = phase_floor(paths)
        result["rss_before_mb"] = baseline
    else:
        result = phase_import(paths, Path(args.workdir), args.phase, args.profile)
    result["n"] = len(paths)
    result["peak_rss_mb"] = _peak_rss_mb()
    if args.tracemalloc:
        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    print(json.dumps(result))


def spawn(phase: str, paths: list[Path], args: argparse.Namespace, profile: bool = False) -> dict:
    """Run ``phase`` on ``paths`` in a child Python process and return its result."""
    workdir = Path(args.workdir)
    files = workdir / f"files-{phase}.json"
    files.write_text(json.dumps([str(p) for p in paths]))
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--files",
        str(files),
        "--workdir",
        str(workdir),
    ]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    if profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    """Build the corpus, run the phases and print the report."""
    warnings.simplefilter("ignore")  # vendor files carry invalid UIDs; not what is timed
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of dose reports")
    parser.add_argument("--workdir", default="/tmp/kerma-bench", help="scratch folder")
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo half")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the heap")
    parser.add_argument("--profile", action="store_true", help="cProfile the N import")
    parser.add_argument("--phase", choices=["floor", "quarter", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_child(args)
        return

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = str(workdir)
    paths = build_corpus(workdir, args.n, args.seed)
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    for p in paths:  # warm the page cache so no phase pays for the first disk read
        p.read_bytes()
    quarter = paths[::4]  # every 4th file: the same mix of templates as the full set

    floor = spawn("floor", paths, args)
    part = spawn("quarter", quarter, args)
    full = spawn("full", paths, args, profile=args.profile)

    n = len(paths)
    print()
    print(
        f"corpus: {n} dose reports ({n // 2} shared copies, {n - n // 2} demo), "
        f"{size_mb:.1f} MB, in {workdir / 'corpus'}"
    )
    print(
        f"Python {sys.version.split()[0]}, pydicom {pydicom.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'phase':<26}{'objects':>8}{'seconds':>10}{'CPU s':>9}{'objects/s':>11}"
        f"{'peak RSS MB':>13}{'growth MB':>11}"
    )
    if args.tracemalloc:
        header += f"{'heap peak MB':>14}"
    print(header)
    for name, result in (
        ("floor: dcmread + decode", floor),
        ("kerma import, N/4", part),
        ("kerma import, N", full),
    ):
        line = (
            f"{name:<26}{result['n']:>8}{result['seconds']:>10.2f}{result['cpu_seconds']:>9.2f}"
            f"{result['n'] / result['seconds']:>11.1f}{result['peak_rss_mb']:>13.1f}"
            f"{result['peak_rss_mb'] - result['rss_before_mb']:>11.1f}"
        )
        if args.tracemalloc:
            line += f"{result['tracemalloc_peak_mb']:>14.1f}"
        print(line)
    ratio = full["seconds"] / floor["seconds"]
    print(
        f"imported {full['imported']}, rejected {full['rejected']}, "
        f"already present {full['already_present']}"
    )
    verdict = "meets" if ratio <= 2 else "misses"
    print(f"ratio kerma / floor = {ratio:.2f} ({verdict} the target of <= 2)")
    cpu_ratio = full["cpu_seconds"] / floor["cpu_seconds"]
    print(
        f"ratio of CPU time kerma / floor = {cpu_ratio:.2f} (less sensitive to other load "
        "on the machine than wall time)"
    )
    growth_part = part["peak_rss_mb"] - part["rss_before_mb"]
    growth_full = full["peak_rss_mb"] - full["rss_before_mb"]
    print(
        f"memory growth: {growth_part:.1f} MB at N/4, {growth_full:.1f} MB at N "
        f"({'flat' if growth_full <= 1.5 * growth_part + 20 else 'grows with N'})"
    )
    if "profile" in full:
        print()
        print(full["profile"])


if __name__ == "__main__":
    main()

"""Import throughput of Kerma against the floor of simply decoding the same DICOM files.

Run from the repository root::

    .venv/bin/python benchmarks/import_throughput.py [--n 200] [--sets ct,fluoro]
                                                     [--events 400] [--workdir DIR]

For each set (``ct``: CT dose reports; ``fluoro``: fluoroscopy/angiography dose
reports) it builds ``N`` reports in ``DIR/corpus-<set>`` (half copies of the real vendor
RDSRs of that kind in ``../shared/dicom`` with new SOP Instance, Study Instance, Series
Instance and Irradiation Event UIDs so that nothing is merged or de-duplicated, half
written by :mod:`kerma.demo.generator`), then times, each in its own process:

(a) the floor: ``pydicom.dcmread`` of each file, then a visit of every element of every
    content item, recursively, reading its value (so pydicom decodes everything);
(b) ``kerma.Registry(<fresh SQLite>).import_paths(...)`` of every 4th file (N/4);
(c) the same for all N files.

It prints, per set, objects/s, the ratio of CPU time kerma / floor (target <= 1.0) and,
per phase, the peak resident memory and its growth over the resident memory just before
the timed loop (growth at N/4 and at N shows whether memory grows with N).

Then it builds one fluoroscopy RDSR with ``--events`` irradiation events (a demo study's
events repeated, each with a new Irradiation Event UID) and measures the CPU time of
its extraction in-process (:func:`kerma.dicom.extract.read_and_extract`, best of 3),
the floor for that file, and the CPU time of the whole ``kerma import FILE`` command
(interpreter start and imports included) into a fresh registry.

``--tracemalloc`` also reports the Python heap peak (slower, so timings of that run are
not comparable). ``--profile`` prints a cProfile of (c). See ``benchmarks/README.md``.
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
#: Name prefixes of the shared RDSRs used as templates, per set.
SHARED_PREFIXES = {
    "ct": ("CT-RDSR-", "CT-ESR-"),
    "fluoro": ("RF-RDSR-", "PSD-", "OR1-", "RF-No-", "RF-Pat-"),
}
#: Demo modalities of each set (:func:`kerma.demo.generator.plan_demo_study`).
DEMO_MODALITIES = {"ct": ("CT",), "fluoro": ("RF", "XA")}


# --- corpus -----------------------------------------------------------------------------------


def shared_templates(set_name: str) -> list[Path]:
    """Return the shared RDSRs of a set, sorted by name."""
    prefixes = SHARED_PREFIXES[set_name]
    return sorted(p for p in SHARED_DICOM.glob("*.dcm") if p.name.startswith(prefixes))


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


def demo_indexes(set_name: str, n: int, seed: int) -> list[int]:
    """Return the first ``n`` demo study indexes whose modality belongs to the set."""
    from kerma.demo.generator import plan_demo_study

    wanted = DEMO_MODALITIES[set_name]
    found: list[int] = []
    index = 0
    while len(found) < n:
        modality = plan_demo_study(index, seed=seed).modality
        if modality in wanted:
            found.append(index)
        index += 1
    return found


def build_corpus(workdir: Path, set_name: str, n: int, seed: int) -> list[Path]:
    """Write (or reuse) ``n`` dose reports of a set under ``workdir``; return their paths."""
    from kerma.demo.generator import build_demo_dataset

    corpus = workdir / f"corpus-{set_name}"
    manifest = corpus / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("n") == n and data.get("seed") == seed:
            print(f"reusing corpus of {n} {set_name} files in {corpus}")
            return [Path(p) for p in data["paths"]]
    if corpus.exists():
        shutil.rmtree(corpus)
    (corpus / "shared").mkdir(parents=True)
    (corpus / "demo").mkdir(parents=True)
    templates = shared_templates(set_name)
    if not templates:
        raise SystemExit(f"no shared {set_name} RDSRs found in {SHARED_DICOM}")
    n_shared = n // 2
    shared: list[Path] = []
    t0 = time.perf_counter()
    cache: dict[Path, Dataset] = {}  # each template is read once; UIDs are renewed per copy
    for i in range(n_shared):
        src = templates[i % len(templates)]
        ds = cache.get(src) or cache.setdefault(src, pydicom.dcmread(src))
        renew_uids(ds, f"kerma-bench-{set_name}-{seed}-{i}")
        dst = corpus / "shared" / f"{i:06d}-{src.name}"
        ds.save_as(dst)
        shared.append(dst)
    print(
        f"{set_name}: copied {n_shared} shared RDSRs ({len(templates)} templates) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    t0 = time.perf_counter()
    demo: list[Path] = []
    for index in demo_indexes(set_name, n - n_shared, 10_000 + seed):
        ds, study = build_demo_dataset(index, seed=10_000 + seed)
        dst = corpus / "demo" / study.path.name
        ds.save_as(dst, enforce_file_format=True)
        demo.append(dst)
    print(f"{set_name}: generated {len(demo)} demo RDSRs in {time.perf_counter() - t0:.1f} s")
    mixed = [p for pair in zip(shared, demo, strict=False) for p in pair]
    mixed += shared[len(demo) :] + demo[len(shared) :]
    manifest.write_text(json.dumps({"n": n, "seed": seed, "paths": [str(p) for p in mixed]}))
    return mixed


def build_big_fluoro(workdir: Path, events: int, seed: int) -> Path:
    """Write one fluoroscopy RDSR with ``events`` irradiation events; return its path.

    A demo fluoroscopy study's 'Irradiation Event X-Ray Data' containers (DCM 113706) are
    repeated in turn, each copy with a new Irradiation Event UID; the accumulated
    containers are kept as they are (the file is for timing, not for dose values).
    """
    import copy

    from kerma.demo.generator import build_demo_dataset

    path = workdir / f"fluoro-{events}-events.dcm"
    if path.exists():
        return path
    index = demo_indexes("fluoro", 1, seed)[0]
    ds, _study = build_demo_dataset(index, seed=seed)
    items = list(ds.ContentSequence)
    is_event = [_concept(i) == codes.DCM.IrradiationEventXRayData for i in items]
    templates = [i for i, e in zip(items, is_event, strict=True) if e]
    others = [i for i, e in zip(items, is_event, strict=True) if not e]
    repeated = []
    for n in range(events):
        event = copy.deepcopy(templates[n % len(templates)])
        for item in event.ContentSequence:
            if _concept(item) == codes.DCM.IrradiationEventUID:
                item.UID = generate_uid(entropy_srcs=["kerma-bench-big", str(seed), str(n)])
        repeated.append(event)
    ds.ContentSequence = others + repeated
    ds.save_as(path, enforce_file_format=True)
    return path


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


def phase_big(path: Path, workdir: Path) -> dict[str, Any]:
    """Time the extraction of one file in-process (best of 3) and its floor.

    Extraction is :func:`kerma.dicom.extract.read_and_extract` (decode, truncation check
    and extraction; :func:`~kerma.dicom.extract.inspect_path` on Kerma versions before it,
    so that the benchmark can measure them too).
    """
    from kerma.dicom import extract

    data = path.read_bytes()
    extraction = floor = float("inf")
    n_events = 0
    for _ in range(3):
        cpu = time.process_time()
        if hasattr(extract, "read_and_extract"):
            report = extract.read_and_extract(data, name=path.name).report
        else:
            report = extract.inspect_path(path)
        extraction = min(extraction, time.process_time() - cpu)
        n_events = len(getattr(report, "events", []) or [])
        cpu = time.process_time()
        touch(pydicom.dcmread(io.BytesIO(data)))
        floor = min(floor, time.process_time() - cpu)
    return {"extraction_cpu_s": extraction, "floor_cpu_s": floor, "events": n_events}


def whole_import_cpu(path: Path, workdir: Path) -> dict[str, Any]:
    """Return the CPU time (user + system) of ``kerma import FILE`` into a fresh registry."""
    folder = workdir / "big-import"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = dict(os.environ)
    env["KERMA_DATABASE_URL"] = f"sqlite:///{folder / 'kerma.db'}"
    env["KERMA_ARCHIVE_DIR"] = str(folder / "archive")
    kerma = Path(sys.executable).parent / "kerma"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [str(kerma), "import", str(path)], env=env, capture_output=True, text=True, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "exit_code": done.returncode, "output": done.stdout[-400:]}


def run_child(args: argparse.Namespace) -> None:
    """Run one phase in this process and print its result as JSON on the last line."""
    if args.phase == "big":
        result = phase_big(Path(args.files), Path(args.workdir))
        print(json.dumps(result))
        return
    paths = [Path(p) for p in json.loads(Path(args.files).read_text())]
    if args.tracemalloc:
        tracemalloc.start()
    if args.phase == "floor":
        baseline = _rss_mb()
        result = phase_floor(paths)
        result["rss_before_mb"] = baseline
    else:
        result = phase_import(paths, Path(args.workdir), args.label or args.phase, args.profile)
    result["n"] = len(paths)
    result["peak_rss_mb"] = _peak_rss_mb()
    if args.tracemalloc:
        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    print(json.dumps(result))


def spawn(
    phase: str, paths: list[Path], args: argparse.Namespace, profile: bool = False, tag: str = ""
) -> dict:
    """Run ``phase`` on ``paths`` in a child Python process and return its result."""
    workdir = Path(args.workdir)
    files = workdir / f"files-{tag}{phase}.json"
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
        "--label",
        f"{tag}{phase}",
    ]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    if profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- main -------------------------------------------------------------------------------------


def run_set(set_name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build one set, run its three phases, print and return the result."""
    paths = build_corpus(workdir, set_name, args.n, args.seed)
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    for p in paths:  # warm the page cache so no phase pays for the first disk read
        p.read_bytes()
    quarter = paths[::4]  # every 4th file: the same mix of templates as the full set
    tag = f"{set_name}-"
    floor = spawn("floor", paths, args, tag=tag)
    part = spawn("quarter", quarter, args, tag=tag)
    full = spawn("full", paths, args, profile=args.profile, tag=tag)
    n = len(paths)
    print()
    print(
        f"set {set_name}: {n} dose reports ({n // 2} shared copies, {n - n // 2} demo), "
        f"{size_mb:.1f} MB, in {workdir / f'corpus-{set_name}'}"
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
    print(
        f"imported {full['imported']}, rejected {full['rejected']}, "
        f"already present {full['already_present']}"
    )
    cpu_ratio = full["cpu_seconds"] / floor["cpu_seconds"]
    verdict = "meets" if cpu_ratio <= 1.0 else "misses"
    print(f"ratio of CPU time kerma / floor = {cpu_ratio:.2f} ({verdict} the target of <= 1.0)")
    print(
        f"ratio of wall time kerma / floor = {full['seconds'] / floor['seconds']:.2f} "
        "(more sensitive to other load on the machine)"
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
    return {"set": set_name, "cpu_ratio": cpu_ratio}


def run_big(args: argparse.Namespace, workdir: Path) -> None:
    """Build the many-event fluoroscopy RDSR and print its extraction and import CPU."""
    path = build_big_fluoro(workdir, args.events, 10_000 + args.seed)
    workdir_files = workdir / "files-big.json"
    workdir_files.write_text("[]")
    cmd = [sys.executable, __file__, "--phase", "big", "--files", str(path)]
    cmd += ["--workdir", str(workdir)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    big = json.loads(done.stdout.strip().splitlines()[-1])
    whole = whole_import_cpu(path, workdir)
    print()
    print(
        f"one fluoroscopy RDSR of {big['events']} irradiation events "
        f"({path.stat().st_size / 1e6:.1f} MB, {path}):"
    )
    print(f"  floor (dcmread + decode every element), CPU s: {big['floor_cpu_s']:.2f}")
    print(f"  extraction (read_and_extract), CPU s:          {big['extraction_cpu_s']:.2f}")
    verdict = "meets" if whole["cpu_s"] < 2.0 and whole["exit_code"] == 0 else "misses"
    print(
        f"  whole 'kerma import FILE' command, CPU s:      {whole['cpu_s']:.2f} "
        f"({verdict} the target of < 2 s; exit code {whole['exit_code']})"
    )


def main() -> None:
    """Build the corpora, run the phases and print the report."""
    warnings.simplefilter("ignore")  # vendor files carry invalid UIDs; not what is timed
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="dose reports per set")
    parser.add_argument("--sets", default="ct,fluoro", help="sets to run: ct, fluoro")
    parser.add_argument("--events", type=int, default=400, help="events of the big RDSR")
    parser.add_argument("--skip-big", action="store_true", help="skip the big RDSR")
    parser.add_argument("--workdir", default="/tmp/kerma-bench", help="scratch folder")
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo half")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the heap")
    parser.add_argument("--profile", action="store_true", help="cProfile the N import")
    parser.add_argument(
        "--phase", choices=["floor", "quarter", "full", "big"], help=argparse.SUPPRESS
    )
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_child(args)
        return

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = str(workdir)
    print(
        f"Python {sys.version.split()[0]}, pydicom {pydicom.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    results = [run_set(name.strip(), args, workdir) for name in args.sets.split(",") if name]
    if not args.skip_big:
        run_big(args, workdir)
    print()
    for result in results:
        print(f"{result['set']}: CPU ratio kerma / floor = {result['cpu_ratio']:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

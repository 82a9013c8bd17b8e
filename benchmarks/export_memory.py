"""Peak memory of ``kerma export xlsx`` (and ``csv``, ``parquet``) on registries of N studies.

Issue #14: the XLSX export of a large registry must run in constant memory (the open
peer's spreadsheet export ran a server out of memory at 6,500 CT studies). For each N
(default 10,000 and 100,000 studies) this script

1. builds a registry of about N studies with ``benchmarks/query_latency.py``'s builder
   (bulk inserts into the real tables, then the ingest's own derive code; about 9.7
   events per study, fluoroscopy studies about 68 each), or reuses the file
   ``WORKDIR/reg-N.db`` when it exists;
2. runs the export as a whole ``kerma`` process (``kerma export xlsx --out ...``) and
   reads its peak resident set size (``ru_maxrss`` of the child, via ``os.wait4``);
3. opens the workbook with openpyxl (read-only) and counts the rows of each sheet
   (``--no-verify`` skips it).

Usage (from the repository root, in the project's virtual environment)::

    .venv/bin/python benchmarks/export_memory.py --studies 10000 100000
    .venv/bin/python benchmarks/export_memory.py --studies 10000 --formats xlsx,csv,parquet

SQLite only (the builder's PostgreSQL path works too: ``--url``). Results are printed
as a table; docs/exports.md records them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query_latency import BENCHMARK_KEY, build_registry

#: Events per study of the builder (query_latency._families: about 9.68).
EVENTS_PER_STUDY = 9.68


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run a command; return (wall s, peak RSS MB of the command's process, exit code).

    The peak is the process's own ``VmHWM``: GNU time's ``%M`` when ``/usr/bin/time``
    exists, else ``VmHWM`` of ``/proc/PID/status`` sampled every 0.2 s. (Not
    ``ru_maxrss`` of ``wait4``: Linux carries the high-water mark across ``exec``, so a
    child forked from a large parent reports the parent's size.)
    """
    gnu_time = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
    started = time.perf_counter()
    if gnu_time:
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
            process = subprocess.run(
                [gnu_time, "-f", "%M", "-o", rss_file.name, *command],
                env=env,
                stdout=subprocess.DEVNULL,
                check=False,
            )
            peak_kb = float(Path(rss_file.name).read_text().split()[-1])
        return time.perf_counter() - started, peak_kb / 1024, process.returncode
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    peak_kb = 0.0
    while child.poll() is None:
        try:
            for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, float(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.2)
    return time.perf_counter() - started, peak_kb / 1024, child.returncode


def _count_rows(path: Path) -> dict[str, int]:
    """Return the rows of each sheet of a workbook (openpyxl read-only)."""
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        return {ws.title: sum(1 for _ in ws.iter_rows(values_only=True)) for ws in workbook}
    finally:
        workbook.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--formats", default="xlsx", help="comma-separated: xlsx,csv,parquet")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "kerma-export-bench"
    )
    parser.add_argument("--no-verify", action="store_true", help="do not count the XLSX rows")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    kerma = str(Path(sys.executable).with_name("kerma"))
    results = []
    for n in args.studies:
        db = args.workdir / f"reg-{n}.db"
        url = f"sqlite:///{db}"
        if not db.exists():
            print(f"building a registry of about {n} studies in {db} ...", flush=True)
            build_registry(url, int(n * EVENTS_PER_STUDY))
        env = {
            **os.environ,
            "KERMA_DATABASE_URL": url,
            "KERMA_PSEUDONYM_KEY": BENCHMARK_KEY,
            "KERMA_ARCHIVE_DIR": str(args.workdir / f"archive-{n}"),
        }
        for fmt in args.formats.split(","):
            out = args.workdir / (f"export-{n}" + ("" if fmt == "parquet" else f".{fmt}"))
            if out.is_dir():
                shutil.rmtree(out)
            command = [kerma, "export", fmt, "--out", str(out)]
            if fmt == "parquet":
                command.append("--full")
            wall, rss, code = _run(command, env)
            rows = _count_rows(out) if fmt == "xlsx" and not args.no_verify and code == 0 else {}
            results.append((n, fmt, wall, rss, code, rows))
            print(
                f"{n:>8} studies  {fmt:<8} exit {code}  {wall:7.0f} s  "
                f"peak RSS {rss:6.0f} MB  {rows}",
                flush=True,
            )
    print("\n| studies | format | wall time (s) | peak RSS (MB) | rows per sheet |")
    print("|---:|---|---:|---:|---|")
    for n, fmt, wall, rss, code, rows in results:
        shown = (
            ", ".join(f"{k}: {v}" for k, v in rows.items()) if rows else ("failed" if code else "")
        )
        print(f"| {n:,} | {fmt} | {wall:.0f} | {rss:.0f} | {shown} |")
    return 0 if all(r[4] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

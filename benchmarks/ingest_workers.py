"""Import throughput with 1, 2 and 4 worker processes into one PostgreSQL (issue #15).

Run from the repository root::

    .venv/bin/python benchmarks/ingest_workers.py [--n 400] [--workers 1,2,4]
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--twice]
        [--workdir /tmp/kerma-bench-workers] [--json FILE]

It writes ``N`` synthetic dose reports (:mod:`kerma.demo.generator`: CT, radiography,
fluoroscopy, mammography) into ``WORKDIR/corpus-N`` once, then for each worker count
creates a fresh database on the server of ``--url``, opens the registry (schema and key
made before the clock starts), and times ``kerma.services.parallel.ParallelImporter``
importing the folder (``kerma import --workers W``). With ``--twice`` the folder is given
twice, so every object arrives twice, at different workers: the second copies must all
be ``already-present``. After each run it checks the registry: one ``dose_report`` per
object, no duplicate study, device, patient or event, the same event count for every
worker count. It prints objects/s, the speed-up over one worker and the CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from kerma.config import Settings  # noqa: E402
from kerma.demo.generator import generate_demo_files  # noqa: E402
from kerma.services.parallel import ParallelImporter  # noqa: E402
from kerma.services.registry import Registry  # noqa: E402

KEY = "kerma-benchmark-pseudonym-key-0123456789abcdef"

CHECKS = {
    "dose_report": "SELECT count(*) FROM dose_report",
    "distinct_sop": "SELECT count(DISTINCT sop_instance_uid) FROM dose_report",
    "study": "SELECT count(*) FROM study",
    "distinct_study": (
        "SELECT count(*) FROM (SELECT DISTINCT study_instance_uid, device_id FROM study) s"
    ),
    "device": "SELECT count(*) FROM device",
    "patient": "SELECT count(*) FROM patient",
    "irradiation_event": "SELECT count(*) FROM irradiation_event",
    "distinct_event": (
        "SELECT count(*) FROM (SELECT DISTINCT dose_report_id, event_index "
        "FROM irradiation_event) e"
    ),
}


def _corpus(workdir: Path, n: int) -> Path:
    """Return the folder of ``n`` demo reports, written once."""
    folder = workdir / f"corpus-{n}"
    if not folder.is_dir() or len(list(folder.glob("*.dcm"))) != n:
        generate_demo_files(folder, studies=n, seed=15)
    return folder


def _database(admin: str, name: str, *, drop: bool = False) -> str:
    """Create (or drop) database ``name`` on the server of ``admin``; return its URL."""
    url = make_url(admin)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _counts(url: str) -> dict[str, int]:
    """Return the registry's row counts of :data:`CHECKS`."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {k: int(conn.execute(text(q)).scalar_one()) for k, q in CHECKS.items()}
    finally:
        engine.dispose()


def run(admin: str, corpus: Path, workers: int, workdir: Path, twice: bool) -> dict[str, Any]:
    """Import ``corpus`` with ``workers`` processes into a fresh database; return the numbers."""
    name = f"kerma_bench_{workers}_{secrets.token_hex(4)}"
    url = _database(admin, name)
    try:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=url,
            archive_dir=workdir / f"archive-{name}",
            pseudonym_key=KEY,
        )
        Registry(settings=settings).close()  # schema and archive before the clock
        paths = [corpus, corpus] if twice else [corpus]
        with ParallelImporter(settings, workers=workers) as importer:
            cpu0 = time.process_time()
            start = time.perf_counter()
            summary = importer.import_paths(paths)
            seconds = time.perf_counter() - start
        counts = _counts(url)
    finally:
        _database(admin, name, drop=True)
    return {
        "workers": workers,
        "objects": summary.objects_read,
        "imported": summary.n_imported,
        "already_present": summary.already_present,
        "rejected": summary.rejected,
        "seconds": round(seconds, 2),
        "objects_per_s": round(summary.objects_read / seconds, 1),
        "parent_cpu_s": round(time.process_time() - cpu0, 2),
        **counts,
    }


def main() -> None:
    """Parse the options, run each worker count, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--twice", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kerma-bench-workers"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(args.workdir, args.n)
    results = [
        run(args.url, corpus, int(w), args.workdir, args.twice) for w in args.workers.split(",")
    ]
    base = results[0]["objects_per_s"]
    print(f"CPUs: {os.cpu_count()}; corpus: {args.n} demo reports; twice: {args.twice}")
    print("workers  objects  imported  already  seconds  objects/s  speed-up  reports  events")
    for r in results:
        print(
            f"{r['workers']:>7}  {r['objects']:>7}  {r['imported']:>8}  {r['already_present']:>7}"
            f"  {r['seconds']:>7}  {r['objects_per_s']:>9}  {r['objects_per_s'] / base:>8.2f}"
            f"  {r['dose_report']:>7}  {r['irradiation_event']:>6}"
        )
    for r in results:
        assert r["dose_report"] == r["distinct_sop"] == r["imported"], r
        assert r["study"] == r["distinct_study"], r
        assert r["irradiation_event"] == r["distinct_event"], r
        assert r["irradiation_event"] == results[0]["irradiation_event"], r
        assert r["device"] == results[0]["device"] and r["patient"] == results[0]["patient"], r
    print("checks: one report per object, no duplicate study/device/patient/event: ok")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

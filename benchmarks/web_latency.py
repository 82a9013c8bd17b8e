"""Latency of Kerma's web pages as whole HTTP requests, against a running ``kerma serve``.

Builds (or reuses) the registry of ``benchmarks/query_latency.py`` (N irradiation
events, default 1,000,000: about 104,000 studies, 24 rooms, three years), starts
``kerma serve`` on a free loopback port as a real process, and measures whole HTTP
requests (connection kept alive, response read to its end) with httpx:

- the overview (``/``), the study browser's first page, a filtered page and the last
  page, one study detail (a fluoroscopy study with the median number of events), the
  analysis page of the most frequent CT exam and one of its charts' data (CSV), and the
  JSON API's first page of studies;
- each URL is requested once to warm up (the first overview computes the cached DRL
  status: its time is printed as "cold"), then ``--repeat`` times: median and 95th
  percentile (linear interpolation) of the wall time;
- the server's resident memory (``VmRSS``) and peak (``VmHWM``) after the runs.

The benchmark logs in as its own admin user ``web-latency`` (created in the registry,
with a new random password each run), or as ``--user`` / ``--password``.

Usage (repository root, project virtual environment)::

    .venv/bin/python benchmarks/web_latency.py --backend sqlite          # N = 1,000,000
    .venv/bin/python benchmarks/web_latency.py --backend both --events 100000
    .venv/bin/python benchmarks/web_latency.py --reuse sqlite:////tmp/kerma-bench.db

``--reuse URL`` measures an existing benchmark registry (made by this script or
``query_latency.py`` with ``--keep``) without building it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from query_latency import (
    BENCHMARK_KEY,
    DEFAULT_POSTGRES_URL,
    build_registry,
    database,
)

#: Target of issue #13: p95 of every page below this (ms).
TARGET_P95_MS = 300.0


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_kb(pid: int, field: str) -> float:
    """Return a ``/proc/PID/status`` memory field (kB)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def start_server(url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start ``kerma serve`` against ``url`` and wait until it answers."""
    import httpx

    kerma = Path(sys.executable).with_name("kerma")
    env = os.environ | {
        "KERMA_DATABASE_URL": url,
        "KERMA_ARCHIVE_DIR": str(workdir / "archive"),
        "KERMA_PSEUDONYM_KEY": BENCHMARK_KEY,
    }
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(kerma), "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    deadline = time.monotonic() + 300  # opening a 10⁶-event registry checks its schema
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kerma serve exited: see {workdir / 'serve.log'}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/static/kerma.css", timeout=2)
            return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError("kerma serve did not answer within 300 s")


def login(client: Any, user: str | None, password: str | None) -> None:
    """Log in when the server asks for it (a redirect to /login)."""
    response = client.get("/", follow_redirects=False)
    if response.status_code not in (302, 303, 307, 401):
        return
    if not user or not password:
        raise SystemExit("the server asks for a login: give --user and --password")
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    data = {"username": user, "password": password}
    if token:
        data["csrf_token"] = token.group(1)
    answer = client.post("/login", data=data, follow_redirects=False)
    if answer.status_code >= 400:
        raise SystemExit(f"login failed: HTTP {answer.status_code}")


def ensure_user(url: str, user: str, password: str) -> None:
    """Create (or reset the password of) the benchmark's admin user, when Kerma has users."""
    try:
        from kerma.services.users import Accounts, Actor
    except ImportError:  # a Kerma before the security work: no login
        return
    from kerma.config import Settings

    settings = Settings(_env_file=None, database_url=url, pseudonym_key=BENCHMARK_KEY)  # type: ignore[call-arg]
    accounts = Accounts(settings)
    actor = Actor(name="web_latency benchmark", kind="cli")
    try:
        if any(u.username == user for u in accounts.list_users()):
            accounts.set_password(user, password, actor)
        else:
            accounts.add_user(user, password, "admin", actor)
    finally:
        accounts.close()


def pick_urls(url: str) -> dict[str, str]:
    """Return the measured URLs (ids and exams read from the registry once)."""
    from sqlalchemy import func, select

    from kerma.config import Settings
    from kerma.db.models import Study
    from kerma.services.registry import Registry

    settings = Settings(_env_file=None, database_url=url, pseudonym_key=BENCHMARK_KEY)  # type: ignore[call-arg]
    with Registry(settings=settings) as registry, registry.session(write=False) as session:
        total = registry.count_studies()
        rf = session.execute(
            select(Study.id, Study.number_of_events)
            .where(Study.modality_family == "RF/XA")
            .order_by(Study.number_of_events, Study.id)
        ).all()
        study_id = rf[len(rf) // 2][0] if rf else 1
        exam = session.execute(
            select(Study.standard_exam, func.count())
            .where(Study.modality == "CT", Study.standard_exam.is_not(None))
            .group_by(Study.standard_exam)
            .order_by(func.count().desc())
        ).first()
    last_page = max((total + 49) // 50, 1)
    exam_q = f"exam={exam[0]}" if exam else ""
    return {
        "overview": "/",
        "studies, first page": "/studies",
        "studies, filtered page": "/studies?modality=CT&date_from=2025-01-01&date_to=2025-06-30"
        "&device=CT+2",
        "studies, last page": f"/studies?page={last_page}",
        "study detail (RF/XA, median events)": f"/studies/{study_id}",
        "analysis page (CT exam)": f"/analysis?{exam_q}",
        "analysis chart data (boxes.csv)": f"/analysis/boxes.csv?{exam_q}",
        "API studies, first page": "/api/v1/studies",
    }


def measure(
    url: str,
    *,
    repeat: int,
    workdir: Path,
    user: str | None = None,
    password: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Start the server on ``url``, measure every page, stop it; return the results."""
    import httpx

    urls = pick_urls(url)
    if user is None:  # the benchmark's own admin (a random password, reset each run)
        user, password = "web-latency", secrets.token_urlsafe(18)
        ensure_user(url, user, password)
    port = free_port()
    started = time.perf_counter()
    server = start_server(url, port, workdir)
    results: dict[str, Any] = {"start_s": time.perf_counter() - started, "pages": {}}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            login(client, user, password)
            for name, path in urls.items():
                t0 = time.perf_counter()
                first = client.get(path)
                cold = time.perf_counter() - t0
                if first.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {first.status_code}: {first.text[:300]}")
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    response.read()
                    times.append(time.perf_counter() - t0)
                    assert response.status_code == 200, (path, response.status_code)
                array = np.asarray(times) * 1000
                entry = {
                    "path": path,
                    "cold_ms": cold * 1000,
                    "median_ms": float(np.median(array)),
                    "p95_ms": float(np.percentile(array, 95)),
                    "bytes": len(first.content),
                    "times_ms": array.tolist(),
                }
                results["pages"][name] = entry
                mark = "✔" if entry["p95_ms"] < TARGET_P95_MS else "✘"
                log(
                    f"  {name:38s} median {entry['median_ms']:7.1f} ms  p95 "
                    f"{entry['p95_ms']:7.1f} ms {mark}  cold {entry['cold_ms']:7.0f} ms  "
                    f"{entry['bytes'] / 1024:6.0f} kB"
                )
        results["server_rss_mb"] = _proc_kb(server.pid, "VmRSS") / 1024
        results["server_peak_rss_mb"] = _proc_kb(server.pid, "VmHWM") / 1024
        log(
            f"  server RSS {results['server_rss_mb']:.0f} MB, "
            f"peak {results['server_peak_rss_mb']:.0f} MB"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results


def _print_table(backend: str, results: dict[str, Any], repeat: int) -> None:
    """Print a markdown table of one backend's results."""
    print(f"\n### {backend} ({repeat} requests per page after one warm-up)\n")
    print("| page | median (ms) | p95 (ms) | first request (ms) | size (kB) |")
    print("|---|---|---|---|---|")
    for name, entry in results["pages"].items():
        print(
            f"| {name} | {entry['median_ms']:.0f} | {entry['p95_ms']:.0f} | "
            f"{entry['cold_ms']:.0f} | {entry['bytes'] / 1024:.0f} |"
        )
    print(
        f"\nserver: RSS {results['server_rss_mb']:.0f} MB, peak {results['server_peak_rss_mb']:.0f}"
        f" MB; start-up {results['start_s']:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build or reuse benchmark registries, measure the pages, print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="irradiation events")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=20, help="requests per page")
    parser.add_argument("--keep", action="store_true", help="keep the built databases")
    parser.add_argument("--reuse", default=None, help="measure this registry URL, no build")
    parser.add_argument("--user", default=None, help="login name when the server asks")
    parser.add_argument("--password", default=None, help="its password")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kerma-web-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    common = {"repeat": args.repeat, "workdir": workdir, "user": args.user,
              "password": args.password, "log": log}  # fmt: skip
    all_results: dict[str, Any] = {}
    if args.reuse:
        backend = "postgresql" if args.reuse.startswith("postgresql") else "sqlite"
        log(f"{backend}: measuring {args.reuse}")
        all_results[backend] = measure(args.reuse, **common)
    else:
        backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
        for backend in backends:
            with database(backend, workdir, args.postgres_url, args.keep) as url:
                log(f"{backend}: building {args.events:,} events at {url}")
                build_registry(url, args.events, log=log)
                all_results[backend] = measure(url, **common)
    for backend, results in all_results.items():
        _print_table(backend, results, args.repeat)
    if args.json is not None:
        args.json.write_text(json.dumps(all_results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

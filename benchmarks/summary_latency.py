"""Latency of ``Registry.summary()`` on several benchmark registries, interleaved.

Measures the summary per (modality, device, protocol) on registries built by
``query_latency.py`` (``--keep``), for instance one partitioned by study month and a
copy whose ``irradiation_event`` is one plain table (docs/scaling.md, "The summary on
partitions"). Each round runs every call once on every registry, so that the registries
share the machine's load; per call and registry it prints the median and fastest wall
time and the median client CPU (the Python process's; the database server's share is
not in it) over ``--repeat`` rounds, and the number of rows.

``--frames FILE`` pickles the last frame of each call and registry; ``--compare FILE``
checks them against such a file (the same call on the same registry must give the same
frame, floats to 1e-12 relative) and prints which differ. To compare two versions of
the code, run the script once with each on ``PYTHONPATH``, the first with ``--frames``,
the second with ``--compare``.

Usage (from the repository root, in the project's virtual environment)::

    .venv/bin/python benchmarks/summary_latency.py --repeat 7 \\
        postgresql+psycopg://postgres@127.0.0.1:5432/bench_flat \\
        postgresql+psycopg://postgres@127.0.0.1:5432/bench_part
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from query_latency import ONE_SITE, open_benchmark_registry


def _one_site(registry: Any) -> Any:
    """Return the summary of the builder's first site (a study condition)."""
    from kerma.services.filters import StudyFilter

    return registry.summary(flt=StudyFilter(site_names=(ONE_SITE,)))


#: The calls measured: name -> call on a ``kerma.Registry``.
CALLS: dict[str, Callable[[Any], Any]] = {
    "summary": lambda r: r.summary(),
    "summary, date filter": lambda r: r.summary(date_from="2024-01-01"),
    "summary, one site": _one_site,
    "summary, with non-patient": lambda r: r.summary(include_non_patient=True),
}


def measure(urls: Sequence[str], repeat: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Run every call ``repeat`` times on every registry, interleaved; return the runs."""
    registries = {url: open_benchmark_registry(url) for url in urls}
    for registry in registries.values():
        registry.count_studies()  # open the connection pool before timing
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(repeat):
        for url, registry in registries.items():
            for name, call in CALLS.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                frame = call(registry)
                wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
                run = runs.setdefault((url, name), {"wall": [], "cpu": []})
                run["wall"].append(wall)
                run["cpu"].append(cpu)
                run["frame"] = frame
    for registry in registries.values():
        registry.close()
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print a markdown table, and save or compare the frames."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="registry URLs (benchmark registries)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds")
    parser.add_argument("--frames", type=Path, default=None, help="pickle the frames here")
    parser.add_argument("--compare", type=Path, default=None, help="compare with these frames")
    args = parser.parse_args(argv)
    import kerma

    runs = measure(args.urls, args.repeat)
    print(f"code: {os.path.dirname(kerma.__file__)}; load average: {os.getloadavg()}")
    print("| registry | call | median / fastest (ms) | client CPU (ms) | rows |")
    print("|---|---|---|---|---|")
    for (url, name), run in runs.items():
        wall = [t * 1000 for t in run["wall"]]
        cpu = statistics.median(run["cpu"]) * 1000
        print(f"| {url.rsplit('/', 1)[-1]} | {name} | {statistics.median(wall):,.0f} / "
              f"{min(wall):,.0f} | {cpu:,.0f} | {len(run['frame'])} |")  # fmt: skip
    frames = {key: run["frame"] for key, run in runs.items()}
    if args.frames is not None:
        args.frames.write_bytes(pickle.dumps(frames))
    if args.compare is not None:
        import pandas as pd

        earlier = pickle.loads(args.compare.read_bytes())  # our own file
        for key, frame in frames.items():
            try:
                pd.testing.assert_frame_equal(earlier[key], frame, check_exact=False, rtol=1e-12)
                print(f"same frame: {key}")
            except AssertionError as error:
                print(f"DIFFERENT frame: {key}: {str(error).splitlines()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

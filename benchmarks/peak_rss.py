"""Run a Python module as ``__main__`` and write its peak resident memory (VmHWM) on exit.

``python benchmarks/peak_rss.py OUT.json MODULE [ARGS...]`` runs ``MODULE`` (e.g.
``kerma.cli.main``, or a script path ending in ``.py``) with ``ARGS`` and, at exit,
writes ``{"peak_rss_mb": ...}`` read from ``/proc/self/status`` ``VmHWM``: the
high-water mark of this process's own address space. (``ru_maxrss`` from ``wait4`` is
not usable here: on Linux a child forked from a large parent starts with the parent's
high-water mark, which survives ``exec``.) The wrapper imports nothing but the
standard library, so it adds no start-up cost.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys


def vm_hwm_mb() -> float:
    """Return this process's peak resident set size (MB) from /proc/self/status."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """Run the module given on the command line; report VmHWM at exit."""
    out, module, *args = sys.argv[1:]

    def report() -> None:
        with open(out, "w") as handle:
            json.dump({"peak_rss_mb": vm_hwm_mb()}, handle)

    atexit.register(report)
    sys.argv = [module, *args]
    if module.endswith(".py"):  # a script (benchmarks/own_commands.py)
        runpy.run_path(module, run_name="__main__")
    else:
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

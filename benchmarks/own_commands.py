"""Run one of this work's commands with only its own CLI module imported.

``kerma``'s root (``kerma.cli.main``) imports every command module at start-up
(pydicom, pynetdicom, pandas ...), which the start-up work removes; this runner shows
what ``kerma studies`` / ``summary`` (``kerma.cli.registry``) and ``drl`` / ``stats`` /
``cumulative`` (``kerma.cli.analysis``) cost by themselves: the same functions, the same
options, a Typer app holding only the command's module.

``python benchmarks/own_commands.py COMMAND [ARGS...]``
"""

from __future__ import annotations

import importlib
import sys

import typer

#: Command -> the module that registers it.
MODULES = {
    "studies": "kerma.cli.registry",
    "summary": "kerma.cli.registry",
    "drl": "kerma.cli.analysis",
    "stats": "kerma.cli.analysis",
    "cumulative": "kerma.cli.analysis",
    "exams": "kerma.cli.analysis",
}


def main() -> None:
    """Register the command's module on a fresh Typer app and run it."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    importlib.import_module(MODULES[sys.argv[1]]).register(app)
    app()


if __name__ == "__main__":
    main()

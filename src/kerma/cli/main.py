"""Typer root of the ``kerma`` command; maps errors to exit codes, configures logging.

Each command group lives in its own module with a ``register(app)`` function that adds
its commands (``kerma.cli.inspect``, ``kerma.cli.ingest``, ...). Errors: a
:class:`kerma.errors.KermaError` prints its message and exits 2; anything else prints
a one-line message (the traceback goes to the log at DEBUG level) and exits 3. No
traceback reaches a user unless ``KERMA_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer
from rich.console import Console

from kerma.errors import KermaError

app = typer.Typer(
    name="kerma",
    help="Kerma: an open registry of patient radiation dose.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Kerma: an open registry of patient radiation dose."""


logger = logging.getLogger("kerma")

#: Modules that add commands; each has ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = (
    "kerma.cli.inspect",
    "kerma.cli.ingest",
    "kerma.cli.db",
    "kerma.cli.demo",
    "kerma.cli.net",
    "kerma.cli.analysis",
    "kerma.cli.serve",
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    """Run the ``kerma`` command with error mapping (entry point of the console script)."""
    debug = os.environ.get("KERMA_DEBUG") == "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    if not debug:
        # pydicom logs every lenient decode (e.g. an IS holding a decimal) at WARNING;
        # Kerma reports what matters as warnings on the dose record instead.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        app(standalone_mode=False)
    except KermaError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        logger.debug("unexpected error", exc_info=True)
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc}. "
            "Run with KERMA_DEBUG=1 for details and report it."
        )
        sys.exit(3)


if __name__ == "__main__":
    main()

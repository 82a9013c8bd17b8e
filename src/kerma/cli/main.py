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
import re
import sys
from typing import Annotated

import typer
from rich.markup import escape

from kerma.cli.console import make_console
from kerma.errors import KermaError

app = typer.Typer(
    name="kerma",
    help="Kerma: an open registry of patient radiation dose.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = make_console(stderr=True)


def _print_version(value: bool) -> None:
    """Print ``kerma <version>`` and stop, for ``kerma --version``."""
    if value:
        from kerma import __version__

        print(f"kerma {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the Kerma version and exit.",
        ),
    ] = False,
) -> None:
    """Kerma: an open registry of patient radiation dose."""


logger = logging.getLogger("kerma")

#: Modules that add commands; each has ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = (
    "kerma.cli.inspect",
    "kerma.cli.ingest",
    "kerma.cli.registry",
    "kerma.cli.db",
    "kerma.cli.demo",
    "kerma.cli.net",
    "kerma.cli.analysis",
    "kerma.cli.skin",
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
        code = app(standalone_mode=False)
    except KermaError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
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
        sys.exit(_report(exc, debug=debug))
    sys.exit(code if isinstance(code, int) else 0)


def _report(exc: Exception, *, debug: bool) -> int:
    """Print an error a user can act on and return the exit code (2 usage, 3 internal)."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click/typer usage errors
        exc.show()
        return int(exc.exit_code)
    if debug:
        raise exc
    logger.debug("error", exc_info=True)
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ArgumentError | SQLAlchemyError):
        first_line = str(exc).splitlines()[0]
        err_console.print(
            f"[red]error:[/red] the registry database cannot be used ({escape(first_line)}). "
            "Check KERMA_DATABASE_URL (e.g. sqlite:///kerma.db or "
            "postgresql+psycopg://user@host/db) and that the server is running."
        )
        return 2
    if isinstance(exc, re.error):
        err_console.print(
            f"[red]error:[/red] invalid regular expression ({escape(str(exc))}); check "
            "KERMA_NON_PATIENT_PATTERNS and the exam rules file."
        )
        return 2
    if isinstance(exc, OSError):
        err_console.print(f"[red]error:[/red] {escape(message)}. Check the path and permissions.")
        return 2
    if isinstance(exc, ValueError | KeyError):
        err_console.print(
            f"[red]error:[/red] {escape(message)}. Check the command's options (--help)."
        )
        return 2
    err_console.print(
        f"[red]internal error:[/red] {escape(message)}. "
        "Run with KERMA_DEBUG=1 for details and report it."
    )
    return 3


if __name__ == "__main__":
    main()

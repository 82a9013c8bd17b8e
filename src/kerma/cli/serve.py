"""``kerma serve``: run the web application (:func:`kerma.web.app.create_app`) with uvicorn."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kerma.cli.console import make_console
from kerma.cli.net import parse_port_option

if TYPE_CHECKING:
    from kerma.config import Settings

#: Log levels of uvicorn (``uvicorn.config.LOG_LEVELS``).
LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug", "trace")


def parse_log_level_option(value: str) -> str:
    """Return a ``--log-level`` option in lower case; a usage error names the levels."""
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}."
        )
    return level


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="TCP port, 1 to 65535.", callback=parse_port_option)
    ] = 8000,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.",
            callback=parse_log_level_option,
        ),
    ] = "info",
) -> None:
    """Run Kerma's web application (STOW-RS at /dicomweb/studies) until Ctrl-C or SIGTERM."""
    keep_pyarrow_out()  # before anything imports pandas
    import uvicorn

    from kerma.config import get_settings
    from kerma.services.keys import check_registry_key
    from kerma.web.app import create_app

    settings = get_settings()
    check_registry_key(settings)  # a missing or other pseudonym key stops it here
    check_address_free(host, port)  # a busy port stops it here, with what to do
    _hint_first_admin(settings)
    uvicorn.run(create_app(settings, warm=True), host=host, port=port, log_level=log_level)


def keep_pyarrow_out() -> bool:
    """Keep pyarrow out of this process unless pandas has loaded it already.

    pandas imports pyarrow whenever it is installed (``pandas.compat.pyarrow``), and
    Kerma installs it for ``kerma export parquet``. No page, API call or STOW-RS import
    uses it, yet in a web server it holds 60-75 MiB resident (measured on an empty
    registry after the overview's warm-up: 278 MiB with it, 202 MiB without; docs/web.md
    "Memory"). pandas without pyarrow is a configuration pandas supports: its ``str``
    dtype then keeps Python strings, with the same missing-value rules (pandas 3.0
    release notes, "Dedicated string data type by default").

    Returns
    -------
    bool
        True when pyarrow is now kept out; False when pandas or pyarrow was already
        imported (nothing is changed then).
    """
    if "pandas" in sys.modules or "pyarrow" in sys.modules:
        return False
    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # import pyarrow -> ImportError
    return True


def check_address_free(host: str, port: int) -> None:
    """Bind ``host``:``port`` once and let it go, as uvicorn will bind it.

    uvicorn reports a busy port only as a log line of its own and exits; checked here, the
    ``OSError`` (``EADDRINUSE``, ``EADDRNOTAVAIL``) reaches the command's error handler,
    which says what to do.
    """
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError as exc:  # the message names the address (OSError.filename)
            raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from exc


def _hint_first_admin(settings: Settings) -> None:
    """Say how to make the first admin when the registry has no users (nobody can log in)."""
    from kerma.services.users import Accounts

    accounts = Accounts(settings)
    try:
        has_users = accounts.has_users()
    finally:
        accounts.close()
    if not has_users:
        make_console(stderr=True).print(
            "[yellow]No users yet: nobody can log in.[/yellow] Create the first admin with\n"
            "    kerma users add admin --role admin\n"
            "and machine clients' tokens with `kerma tokens add NAME --role physicist`.",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``kerma`` command."""
    app.command("serve")(serve)

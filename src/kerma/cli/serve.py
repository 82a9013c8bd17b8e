"""``kerma serve``: run the web application (:func:`kerma.web.app.create_app`) with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from kerma.config import get_settings


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Run Kerma's web application (STOW-RS at /dicomweb/studies) until Ctrl-C or SIGTERM."""
    import uvicorn

    from kerma.web.app import create_app

    uvicorn.run(create_app(get_settings()), host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``kerma`` command."""
    app.command("serve")(serve)

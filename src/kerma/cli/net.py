"""``kerma listen`` (Storage SCP) and ``kerma pull`` (Query/Retrieve SCU, DICOMweb).

Thin wrappers around :class:`kerma.net.scp.StorageSCP` and :mod:`kerma.net.pull`;
settings come from ``KERMA_*`` (``KERMA_SCP_AET``, ``KERMA_SCP_PORT`` ...).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console

from kerma.config import get_settings

console = Console()


def listen(
    aet: Annotated[
        str | None, typer.Option("--aet", help="AE title (default KERMA_SCP_AET, KERMA).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="TCP port (default KERMA_SCP_PORT, 11112).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to bind (default KERMA_SCP_HOST, 127.0.0.1)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every stored object.")
    ] = False,
) -> None:
    """Run the DICOM Storage SCP: spool every object durably, import it into the registry.

    Stops cleanly on SIGTERM or Ctrl-C: associations in progress finish, the import
    worker stops, and anything not yet imported is imported on the next start.
    """
    from pynetdicom import _config as pynetdicom_config

    from kerma.net.scp import StorageSCP

    if verbose:
        logging.getLogger("kerma").setLevel(logging.INFO)
    else:
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"  # no per-PDU debug handlers
    settings = get_settings()
    scp = StorageSCP(settings, ae_title=aet, host=host, port=port)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        """Ask the main loop to stop."""
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    scp.start()
    bound_host, bound_port = scp.address
    console.print(
        f"Kerma Storage SCP [bold]{scp.ae_title}[/bold] listening on {bound_host}:{bound_port}; "
        f"spool {scp.spool.directory}",
        highlight=False,
        soft_wrap=True,
    )
    while not stop.wait(0.5):
        pass
    console.print("stopping: finishing associations in progress", highlight=False)
    scp.stop()
    console.print(
        f"stopped: {scp.counters.stored} stored, {scp.counters.failed} failed, "
        f"{scp.worker.imported} imported, {len(scp.spool.pending())} left for the next start",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``listen`` and ``pull`` to the ``kerma`` command."""
    app.command("listen")(listen)

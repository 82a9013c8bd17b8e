"""``kerma listen`` (Storage SCP) and ``kerma pull`` (Query/Retrieve SCU, DICOMweb).

Thin wrappers around :class:`kerma.net.scp.StorageSCP` and :mod:`kerma.net.pull`;
settings come from ``KERMA_*`` (``KERMA_SCP_AET``, ``KERMA_SCP_PORT`` ...).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from kerma.cli.console import make_console
from kerma.config import get_settings

console = make_console()


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

    Every object is fsynced to the spool before its C-STORE is answered. Objects
    without dose information are acknowledged and listed by ``Registry.ignored()``,
    not kept (unless KERMA_SCP_KEEP_NON_DOSE=true). DICOM over TLS with
    KERMA_SCP_TLS_CERT and KERMA_SCP_TLS_KEY (and KERMA_SCP_TLS_CA to require client
    certificates); the start line says whether TLS is on. Stops cleanly on SIGTERM or
    Ctrl-C: associations in progress finish, the import worker stops, and anything not
    yet imported is imported on the next start.
    """
    from pynetdicom import _config as pynetdicom_config

    from kerma.net.scp import StorageSCP

    if verbose:
        logging.getLogger("kerma").setLevel(logging.INFO)
    else:
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"  # no per-PDU debug handlers
    # hand the GIL over sooner, so network threads are not held up by the import worker
    sys.setswitchinterval(0.0005)
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
        f"TLS {scp.tls_description}; spool {scp.spool.directory}",
        highlight=False,
        soft_wrap=True,
    )
    while not stop.wait(0.5):
        pass
    console.print("stopping: finishing associations in progress", highlight=False)
    scp.stop()
    console.print(
        f"stopped: {scp.counters.stored} stored, {scp.counters.failed} failed, "
        f"{scp.worker.imported} imported (of which {scp.worker.ignored} ignored as non-dose, "
        f"{scp.worker.rejected} rejected), {len(scp.spool.pending())} left for the next start",
        highlight=False,
        soft_wrap=True,
    )


def _date(value: str | None) -> dt.date | None:
    """Parse an ISO date option."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def pull(
    pacs_aet: Annotated[
        str | None, typer.Option("--pacs-aet", help="AE title of the PACS.")
    ] = None,
    pacs_host: Annotated[str, typer.Option("--pacs-host", help="Host of the PACS.")] = "127.0.0.1",
    pacs_port: Annotated[int, typer.Option("--pacs-port", help="DICOM port of the PACS.")] = 104,
    date_from: Annotated[
        str | None, typer.Option("--from", help="First study date, YYYY-MM-DD.")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last study date, YYYY-MM-DD.")
    ] = None,
    modality: Annotated[
        list[str] | None, typer.Option("--modality", "-m", help="Modality in study (repeatable).")
    ] = None,
    get: Annotated[
        bool, typer.Option("--get", help="Retrieve by C-GET instead of C-MOVE.")
    ] = False,
    move_dest: Annotated[
        str | None,
        typer.Option("--move-dest", help="C-MOVE to this running 'kerma listen' AE title."),
    ] = None,
    aet: Annotated[
        str | None, typer.Option("--aet", help="Kerma's AE title (default KERMA_SCP_AET).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port of the temporary C-MOVE destination SCP.")
    ] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option("--dicomweb", help="Pull from this DICOMweb root instead (QIDO/WADO)."),
    ] = None,
) -> None:
    """Pull dose objects from a PACS (C-FIND + C-MOVE/C-GET, or DICOMweb) into the registry.

    Resumable: objects already in the registry are skipped.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kerma.api import Registry
    from kerma.net.pull import PacsPeer, PullCriteria, pull_dimse

    console = make_console()
    settings = get_settings()
    if aet:
        settings = settings.model_copy(update={"scp_aet": aet})
    criteria = PullCriteria(
        date_from=_date(date_from),
        date_to=_date(date_to),
        modalities=tuple(m.upper() for m in modality or ()),
    )
    registry = Registry(settings=settings)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        if dicomweb:
            from kerma.net.dicomweb import pull_dicomweb

            summary = pull_dicomweb(
                settings, dicomweb, criteria, registry=registry, progress=progress
            )
        else:
            if not pacs_aet:
                raise typer.BadParameter("--pacs-aet is required (or use --dicomweb URL)")
            peer = PacsPeer(pacs_aet, pacs_host, pacs_port, calling_ae_title=settings.scp_aet)
            summary = pull_dimse(
                settings,
                peer,
                criteria,
                registry=registry,
                method="get" if get else "move",
                move_destination=move_dest,
                port=port,
                progress=progress,
            )
    plan = summary.plan
    console.print(
        f"studies found {plan.studies_found} (nothing new in {plan.studies_skipped}); "
        f"dose objects found {plan.instances_found}, already in the registry "
        f"{plan.instances_skipped}; retrieved {summary.retrieved}, failed {summary.failed}, "
        f"imported {summary.imported}",
        highlight=False,
        soft_wrap=True,
    )
    for warning in summary.warnings[:20]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if move_dest and summary.retrieved:
        console.print(f"objects were sent to {move_dest}; that listener imports them.")
    if summary.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``listen`` and ``pull`` to the ``kerma`` command."""
    app.command("listen")(listen)
    app.command("pull")(pull)

"""``kerma listen`` (Storage SCP) and ``kerma pull`` (Query/Retrieve SCU, DICOMweb).

Thin wrappers around :class:`kerma.net.scp.StorageSCP` and :mod:`kerma.net.pull`;
settings come from ``KERMA_*`` (``KERMA_SCP_AET``, ``KERMA_SCP_PORT`` ...). The network
side never opens the registry itself: this module hands it what it needs, an importer
factory (:func:`intake_importer`, called in the import process) and, for ``pull``, a
check of which SOP Instance UIDs the registry already knows.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kerma.cli.console import make_console
from kerma.cli.ingest import FromOpt, ToOpt, parse_modalities_option

if TYPE_CHECKING:
    from kerma.config import Settings
    from kerma.net.spool import BytesImporter

console = make_console()

#: Largest TCP port number (RFC 793: 16-bit port numbers).
MAX_PORT = 65535


def intake_importer(settings: Settings) -> BytesImporter:
    """Return the ingest pipeline of ``kerma listen``'s import process and of ``kerma pull``.

    A module-level function, handed by reference to the import child process, which
    calls it once with the settings.
    It is :func:`kerma.services.intake_importer`: the pipeline with the derive hook, so
    every received object refreshes the summary of the studies it touches.
    """
    from kerma.services import intake_importer as services_intake_importer

    return services_intake_importer(settings)


def _port(value: int | None, *, allow_zero: bool = False) -> int | None:
    """Return a TCP port option, refusing numbers outside 1-65535 (0 too, if allowed)."""
    if value is None:
        return None
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_PORT:
        allowed = f"{low} to {MAX_PORT}" + (" (0: any free port)" if allow_zero else "")
        raise typer.BadParameter(f"{value} is not a TCP port: use {allowed}.")
    return value


def parse_port_option(value: int | None) -> int | None:
    """Return a ``--port`` option; a usage error names the allowed range (1 to 65535)."""
    return _port(value)


def parse_listen_port_option(value: int | None) -> int | None:
    """Return ``kerma listen --port``: 1 to 65535, or 0 for any free port."""
    return _port(value, allow_zero=True)


def listen(
    aet: Annotated[
        str | None, typer.Option("--aet", help="AE title (default KERMA_SCP_AET, KERMA).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="TCP port, 1 to 65535, or 0 for any free port (default KERMA_SCP_PORT, 11112).",
            callback=parse_listen_port_option,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to bind (default KERMA_SCP_HOST, 127.0.0.1)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every stored object.")
    ] = False,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Site (institution) this node receives for (default KERMA_SITE; see "
            "KERMA_SITE_MAP).",
        ),
    ] = None,
) -> None:
    """Run the DICOM Storage SCP: spool every object durably, import it into the registry.

    Every object is fsynced to the spool before its C-STORE is answered. Objects without dose
    information are acknowledged and listed by `kerma ignored`, with the sender's AE title
    and address, not kept (unless KERMA_SCP_KEEP_NON_DOSE=true). DICOM over TLS with
    KERMA_SCP_TLS_CERT and KERMA_SCP_TLS_KEY (and KERMA_SCP_TLS_CA to require client
    certificates); the start line says whether TLS is on. Stops cleanly on SIGTERM or
    Ctrl-C: associations in progress finish, the import worker stops, and anything not yet
    imported is imported on the next start.
    """
    from pynetdicom import _config as pynetdicom_config

    from kerma.config import get_settings
    from kerma.net.scp import StorageSCP
    from kerma.net.spool import ProcessImporter

    if verbose:
        logging.getLogger("kerma").setLevel(logging.INFO)
    else:
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"  # no per-PDU debug handlers
    # hand the GIL over sooner, so network threads are not held up by the import worker
    sys.setswitchinterval(0.0005)
    settings = get_settings()
    if site is not None:
        settings = settings.model_copy(update={"site": site})
    from kerma.services.keys import check_registry_key

    check_registry_key(settings)  # a missing or other pseudonym key stops it here

    def importer_factory() -> ProcessImporter:
        """Start the import process (on the worker thread: the SCP answers at once)."""
        importer = ProcessImporter(settings, intake_importer)
        importer.start()
        return importer

    scp = StorageSCP(
        settings, importer_factory=importer_factory, ae_title=aet, host=host, port=port
    )
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
    console.print(f"limits: {scp.limits_description}", highlight=False, soft_wrap=True)
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
    """Return the date of a validated ``--from``/``--to`` option."""
    return dt.date.fromisoformat(value) if value else None


def pull(
    pacs_aet: Annotated[
        str | None, typer.Option("--pacs-aet", help="AE title of the PACS.")
    ] = None,
    pacs_host: Annotated[str, typer.Option("--pacs-host", help="Host of the PACS.")] = "127.0.0.1",
    pacs_port: Annotated[
        int,
        typer.Option(
            "--pacs-port",
            help="DICOM port of the PACS, 1 to 65535.",
            callback=parse_port_option,
        ),
    ] = 104,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            "--modality",
            "-m",
            help=(
                "Only dose objects of this modality (repeatable): CR, CT, DX, IO, MG, NM, PT, "
                "PX, RF, XA."
            ),
            callback=parse_modalities_option,
        ),
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
        int | None,
        typer.Option(
            "--port",
            help="Port of the temporary C-MOVE destination SCP, 1 to 65535.",
            callback=parse_port_option,
        ),
    ] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option("--dicomweb", help="Pull from this DICOMweb root instead (QIDO/WADO)."),
    ] = None,
) -> None:
    """Pull dose objects from a PACS (C-FIND + C-MOVE/C-GET, or DICOMweb) into the registry.

    Resumable: objects already in the registry are skipped. With `--modality`, only studies
    of that modality are retrieved; a study holding nothing but SR objects is retrieved and
    its dose report kept only when it is of that modality. Objects are archived as the PACS
    sent them.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kerma.config import get_settings
    from kerma.net.pull import PacsPeer, PullCriteria, pull_dimse
    from kerma.services.intake import KnownInstances

    if not dicomweb and not pacs_aet:
        raise typer.BadParameter("--pacs-aet is required (or use --dicomweb URL)")
    settings = get_settings()
    if aet:
        settings = settings.model_copy(update={"scp_aet": aet})
    criteria = PullCriteria(
        date_from=_date(date_from),
        date_to=_date(date_to),
        modalities=tuple(modality or ()),
    )
    importer: BytesImporter | None = None
    reader = KnownInstances(settings)

    def importer_factory() -> BytesImporter:
        """Open the ingest pipeline once, in this process."""
        nonlocal importer
        if importer is None:
            importer = intake_importer(settings)
        return importer

    try:
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
                    settings,
                    dicomweb,
                    criteria,
                    importer_factory=importer_factory,
                    known=reader,
                    progress=progress,
                )
            else:
                assert pacs_aet is not None
                peer = PacsPeer(pacs_aet, pacs_host, pacs_port, calling_ae_title=settings.scp_aet)
                summary = pull_dimse(
                    settings,
                    peer,
                    criteria,
                    importer_factory=importer_factory,
                    known=reader,
                    method="get" if get else "move",
                    move_destination=move_dest,
                    port=port,
                    progress=progress,
                )
    finally:
        reader.close()
    plan = summary.plan
    console.print(
        f"studies found {plan.studies_found} (nothing new in {plan.studies_skipped}); "
        f"dose objects found {plan.instances_found}, already in the registry "
        f"{plan.instances_skipped}; retrieved {summary.retrieved}, failed {summary.failed}, "
        f"imported {summary.imported}",
        highlight=False,
        soft_wrap=True,
    )
    if criteria.modalities:
        wanted = ", ".join(criteria.modalities)
        console.print(
            f"modality {wanted}: {plan.studies_other_modality} studies of other modalities "
            f"not retrieved; {plan.studies_sr_only} studies holding only SR objects checked, "
            f"{summary.skipped_other_modality} of their dose reports of other modalities not kept",
            highlight=False,
            soft_wrap=True,
        )
    for warning in summary.warnings[:20]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if move_dest and summary.retrieved:
        console.print(f"objects were sent to {move_dest}; that listener imports them.")
    if summary.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``listen`` and ``pull`` to the ``kerma`` command."""
    app.command("listen")(listen)
    app.command("pull")(pull)

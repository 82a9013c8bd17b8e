"""``kerma hl7 listen|test-message|messages`` and ``kerma fhir poll`` (docs/ris.md).

Thin wrappers around :class:`kerma.services.orders.OrderIntake`, the MLLP listener
(:mod:`kerma.ris.mllp`) and the FHIR poller (:mod:`kerma.ris.fhir`). Nothing a message
identifies is printed: patients and accession numbers show as keyed hashes.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console

hl7_app = typer.Typer(
    name="hl7",
    help="Orders, results and patient updates from the RIS over HL7 v2 (MLLP).",
    no_args_is_help=True,
)
fhir_app = typer.Typer(
    name="fhir",
    help="Orders and patient weight/height from a FHIR server.",
    no_args_is_help=True,
)


def _intake():  # type: ignore[no-untyped-def]
    """Return the :class:`OrderIntake` of the configured registry (and the registry)."""
    from kerma.cli.registry import open_registry
    from kerma.config import get_settings
    from kerma.services.orders import OrderIntake

    settings = get_settings()
    registry = open_registry(settings)
    return OrderIntake(settings, session_factory=registry.session_factory), registry


@hl7_app.command("listen")
def listen(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")
    ] = 2575,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate: MLLP over TLS (KERMA_HL7_TLS_CERT)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key (KERMA_HL7_TLS_KEY).")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every message (type, ID, outcome).")
    ] = False,
) -> None:
    """Receive HL7 v2 messages over MLLP: ORM^O01, OMI^O23, ORU^R01, ADT^A08.

    Each message is kept encrypted in the archive, its accession number and patient ID
    turned into keyed hashes, and its order stored and matched to dose studies before the
    ACK (AA) is sent. A message Kerma cannot use is answered AR or AE with the reason and
    listed by `kerma hl7 messages --refused`. The mapping of fields is KERMA_HL7_MAPPING
    (see `kerma hl7 test-message`). Stops on Ctrl-C or SIGTERM.
    """
    from kerma.config import get_settings
    from kerma.ris.mllp import Hl7Listener, build_ssl_context, serve_forever

    if verbose:
        logging.getLogger("kerma").setLevel(logging.INFO)
    settings = get_settings()
    context = build_ssl_context(tls_cert or settings.hl7_tls_cert, tls_key or settings.hl7_tls_key)
    intake, registry = _intake()
    listener = Hl7Listener(intake, host=host, port=port, ssl_context=context)
    console = make_console()

    def ready(running: Hl7Listener) -> None:
        console.print(
            f"HL7 listener on {escape(host)}:{running.port}{' over TLS' if context else ''}; "
            f"mapping {escape(intake.mapping.source)}. Ctrl-C stops."
        )

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        serve_forever(listener, on_ready=ready)
    finally:
        registry.close()
    console.print(f"stopped after {listener.messages} message(s)")


@hl7_app.command("test-message")
def test_message(
    path: Annotated[Path, typer.Argument(help="A file holding one HL7 v2 message.")],
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", help="Mapping TOML to try (default KERMA_HL7_MAPPING)."),
    ] = None,
) -> None:
    """Show what a sample message yields with the site mapping (nothing is stored).

    The accession number and patient are shown as keyed hashes, as they would be stored.
    """
    from kerma.cli.registry import open_registry
    from kerma.config import get_settings
    from kerma.errors import MessageError
    from kerma.services.hl7 import load_mapping
    from kerma.services.orders import OrderIntake

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="PATH") from exc
    settings = get_settings()
    chosen = load_mapping(mapping or settings.hl7_mapping)
    registry = open_registry(settings)
    try:
        intake = OrderIntake(settings, session_factory=registry.session_factory, mapping=chosen)
        rows = intake.preview(raw)
    except MessageError as exc:
        make_console(stderr=True).print(
            f"[red]The RIS would be answered {exc.ack_code}:[/red] {escape(str(exc))}"
        )
        raise typer.Exit(1) from exc
    finally:
        registry.close()
    table = Table(title=f"What {escape(path.name)} yields", show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for row in rows:
        table.add_row(escape(row.name), escape(row.value))
    make_console().print(table)


@hl7_app.command("messages")
def messages(
    refused: Annotated[
        bool, typer.Option("--refused", help="Only the messages answered AR or AE.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N messages.")] = 50,
) -> None:
    """List received HL7 and FHIR messages: when, from which application, outcome, reason.

    The messages themselves are kept encrypted in the archive (folder ris/).
    """
    from kerma.services.orders import list_messages

    _, registry = _intake()
    try:
        rows = list_messages(registry.session_factory, only_refused=refused, limit=limit)
    finally:
        registry.close()
    console = make_console()
    if not rows:
        console.print("No messages." if not refused else "No refused messages.")
        return
    table = Table(show_header=True, header_style="bold")
    for heading in ("id", "received", "via", "from", "type", "control ID", "status", "reason"):
        table.add_column(heading, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.id),
            r.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(r.transport),
            escape(r.sending_application or ""),
            escape(r.message_type or ""),
            escape(r.message_control_id or ""),
            escape(r.status),
            escape(r.reason or ""),
        )
    console.print(table)


@fhir_app.command("poll")
def poll(
    url: Annotated[
        str,
        typer.Argument(
            help="FHIR search URL (a Bundle of ServiceRequest, Observation, Patient resources)."
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="KERMA_FHIR_TOKEN", help="Bearer token for the server."),
    ] = None,
) -> None:
    """Read orders and weight/height observations from a FHIR server, once.

    ServiceRequest (accession number: identifier of type ACSN), Observation body weight
    (LOINC 29463-7) and height (8302-2), and the Patient resources they refer to; the
    Bundle's next pages are followed. Run it from cron to poll.
    """
    from kerma.ris.fhir import poll as run_poll

    intake, registry = _intake()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        result = run_poll(intake, url, headers=headers)
    finally:
        registry.close()
    console = make_console()
    console.print(
        f"{result.pages} page(s): {result.orders} order(s) or update(s) stored, "
        f"{result.studies_updated} study(ies) updated"
    )
    for reason in result.refused:
        console.print(f"[yellow]refused:[/yellow] {escape(reason)}")
    if result.refused:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``hl7`` and ``fhir`` groups to the root app."""
    app.add_typer(hl7_app, name="hl7")
    app.add_typer(fhir_app, name="fhir")

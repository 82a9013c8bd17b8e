"""``kerma alerts outbox`` and ``kerma alerts report``: alert e-mails, significant-event report.

Thin wrappers around :mod:`kerma.services.alert_notify` and
:mod:`kerma.services.alert_report` on the registry of ``KERMA_DATABASE_URL``.
:func:`add_commands` adds both commands to the ``alerts`` Typer group (the alert CLI
calls it); :func:`register` adds them to an existing ``alerts`` group of the root app,
or makes the group when there is none yet.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.errors import KermaError

if TYPE_CHECKING:
    from kerma.services.alert_notify import AlertMessage
    from kerma.services.registry import Registry

#: Loads the message of an alert and the study's dose quantities for its report:
#: ``(registry, alert id) -> (AlertMessage, [(label, value, unit), ...])``. The alert
#: CLI passes it to :func:`add_commands`.
MessageLoader = Callable[["Registry", int], "tuple[AlertMessage, list[tuple[str, float, str]]]"]


def _when(value: dt.datetime | None) -> str:
    """Format a time of the outbox listing (UTC, to the minute)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if value is not None else ""


def outbox(
    retry: Annotated[
        bool,
        typer.Option("--retry", help="Make every waiting e-mail due now (skip the back-off)."),
    ] = False,
    deliver: Annotated[
        bool, typer.Option("--deliver", help="Send the e-mails that are due, then list.")
    ] = False,
    digest_now: Annotated[
        bool,
        typer.Option("--digest-now", help="With the daily digest: send today's digest too."),
    ] = False,
    status: Annotated[
        str | None, typer.Option("--status", help="List only 'pending' or 'sent' e-mails.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="List at most this many rows.")] = 50,
) -> None:
    """List the alert e-mails (waiting first, with attempts and last error); retry, send.

    Each alert is e-mailed once per recipient. An e-mail the server did not accept is
    retried after 1, 2, 4 ... minutes (up to `KERMA_ALERT_MAIL_RETRY_MAX_S`). Exit code
    1 when an e-mail failed in this run.
    """
    from kerma.cli.registry import open_registry
    from kerma.config import get_settings
    from kerma.services import alert_notify

    if status not in (None, "pending", "sent"):
        raise typer.BadParameter(f"{status!r}: give 'pending' or 'sent'.", param_hint="--status")
    settings = get_settings()
    console = make_console()
    failed = 0
    with open_registry(settings) as registry:
        if retry:
            with registry.session() as session:
                count = alert_notify.retry_now(session)
            console.print(f"{count} waiting e-mail(s) due now")
        if deliver:
            result = alert_notify.deliver_pending(
                registry.session_factory, settings, flush_digest=digest_now
            )
            if not result.configured:
                console.print(
                    "KERMA_SMTP_HOST is not set: e-mails stay in the outbox "
                    f"({result.pending} waiting)."
                )
            else:
                console.print(
                    f"sent {result.sent} e-mail(s), {result.failed} failed, "
                    f"{result.pending} waiting"
                )
                for error in result.errors:
                    console.print(f"[red]failed:[/red] {escape(error)}", soft_wrap=True)
            failed = result.failed
        with registry.session(write=False) as session:
            entries = alert_notify.list_outbox(session, status=status, limit=limit)
    table = Table(title=f"Alert e-mails ({len(entries)} shown)")
    for header in (
        "alert",
        "recipient",
        "status",
        "attempts",
        "next attempt (UTC)",
        "sent (UTC)",
        "error",
    ):
        table.add_column(header, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.alert_id),
            escape(e.recipient),
            e.status,
            str(e.attempts),
            _when(e.next_attempt_at) if e.status == "pending" else "",
            _when(e.sent_at),
            escape(e.last_error or ""),
        )
    console.print(table)
    if failed:
        raise typer.Exit(1)


def _report_command(load_message: MessageLoader | None) -> Callable[..., None]:
    """Return the ``report`` command, loading alerts through ``load_message``."""

    def report(
        alert_id: Annotated[
            int | None, typer.Argument(help="The alert (closed, notified to the authority).")
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="File to write (default report-<id>).")
        ] = None,
        fmt: Annotated[str, typer.Option("--format", help="pdf or html.")] = "pdf",
        message_file: Annotated[
            Path | None,
            typer.Option(
                "--message",
                help="Render from an alert message saved as JSON instead of the registry.",
            ),
        ] = None,
    ) -> None:
        """Write the significant-event report of an alert (PDF or HTML) for the authority.

        Only for an alert closed as notified to the authority. The report holds the
        exposure, DRL and threshold with sources, the patient's age band, sex and
        pseudonym, the evaluation, the outcome and the full review history.
        """
        from kerma.services.alert_notify import AlertMessage
        from kerma.services.alert_report import render_report

        if fmt not in ("pdf", "html"):
            raise typer.BadParameter(f"{fmt!r}: give pdf or html.", param_hint="--format")
        extra: list[tuple[str, float, str]] = []
        if message_file is not None:
            try:
                data = json.loads(message_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise KermaError(
                    f"Unable to read the alert message {message_file}: {exc}."
                ) from exc
            message = AlertMessage.from_dict(data.get("message", data))
            extra = [(str(q[0]), float(q[1]), str(q[2])) for q in data.get("quantities", [])]
        elif alert_id is not None and load_message is not None:
            from kerma.cli.registry import open_registry

            with open_registry() as registry:
                message, extra = load_message(registry, alert_id)
        elif alert_id is not None:
            raise KermaError(
                f"Unable to load alert {alert_id}: this Kerma has no alert records; "
                "give --message FILE.json."
            )
        else:
            raise typer.BadParameter("give an ALERT_ID or --message FILE.json.")
        data_out = render_report(message, extra, fmt=fmt)
        target = out or Path(f"report-{message.alert_id}.{fmt}")
        target.write_bytes(data_out)
        make_console().print(f"wrote {escape(str(target))} ({len(data_out)} bytes)")

    return report


def add_commands(alerts_app: typer.Typer, load_message: MessageLoader | None = None) -> None:
    """Add ``outbox`` and ``report`` to the ``alerts`` group.

    Parameters
    ----------
    alerts_app : typer.Typer
        The ``kerma alerts`` group.
    load_message : callable, optional
        ``(registry, alert id) -> (AlertMessage, [(label, value, unit), ...])`` for
        ``kerma alerts report ALERT_ID``; without it the report reads ``--message``.
    """
    alerts_app.command("outbox")(outbox)
    alerts_app.command("report")(_report_command(load_message))


def register(app: typer.Typer) -> None:
    """Add the commands to the root's ``alerts`` group (made when it does not exist)."""
    for group in app.registered_groups:
        if group.name == "alerts" and group.typer_instance is not None:
            names = {c.name for c in group.typer_instance.registered_commands}
            if "outbox" not in names:
                add_commands(group.typer_instance)
            return
    alerts_app = typer.Typer(
        name="alerts", help="High-dose alerts: e-mails and reports.", no_args_is_help=True
    )
    add_commands(alerts_app)
    app.add_typer(alerts_app, name="alerts")

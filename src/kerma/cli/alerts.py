"""``kerma alerts``: high-dose alerts, their review and the tamper-evident review trail.

Thin wrappers around :class:`kerma.Registry` (:mod:`kerma.services.alerts`) on the
registry of ``KERMA_DATABASE_URL``: ``list``, ``show``, ``review``, ``note``, ``close``,
``recheck``, ``verify`` and ``rules`` (``docs/alerts.md``). Values are shown in display
units (:data:`kerma.units.QUANTITIES`: KAP in Gy·cm², Ka,r in mGy). The reviewer is
``--user`` or the OS user.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import open_registry, parse_date_option
from kerma.config import get_settings
from kerma.units import QUANTITIES

alerts_app = typer.Typer(
    name="alerts",
    help="High-dose alerts: list, show, review, note, close, recheck, verify, rules.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

UserOpt = Annotated[
    str | None, typer.Option("--user", "-u", help="Reviewer name (default: the OS user).")
]
AlertIdArg = Annotated[int, typer.Argument(help="Alert id (see `kerma alerts list`).")]


def _display(quantity: str, value: Any) -> str:
    """Return a canonical value in its display unit with the unit (``"512 Gy·cm²"``)."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    known = QUANTITIES.get(quantity)
    if known is None:
        return f"{float(value):.4g}"
    return f"{float(value) * known.factor:.4g} {known.display_unit}"


def _date(value: Any) -> str:
    """Format a date or date-time cell."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:16]


@alerts_app.command("list")
def list_alerts(
    state: Annotated[
        str | None,
        typer.Option("--state", help="open, under_review or closed."),
    ] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Rule id.")] = None,
    modality: Annotated[
        str | None, typer.Option("--modality", help="Modality family: CT, RF/XA, DX, MG, NM.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            "--from",
            help="First study date, YYYY-MM-DD.",
            callback=parse_date_option,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", "--to", help="Last study date, YYYY-MM-DD.", callback=parse_date_option
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows per page.")] = 50,
    page: Annotated[int, typer.Option("--page", min=1, help="Page number.")] = 1,
) -> None:
    """List alerts, newest study first, with filters."""
    from kerma.services.alerts import AlertState

    states = [s.value for s in AlertState]
    if state is not None and state not in states:
        raise typer.BadParameter(
            f"{state!r} is not an alert state; use {', '.join(states)}.", param_hint="'--state'"
        )
    console = make_console()
    registry = open_registry(get_settings())
    filters: dict[str, Any] = {
        "state": state,
        "rule_id": rule,
        "modality_family": modality.upper() if modality else None,
        "date_from": dt.date.fromisoformat(since) if since else None,
        "date_to": dt.date.fromisoformat(until) if until else None,
    }
    try:
        frame = registry.alerts(**filters, limit=limit, offset=(page - 1) * limit)
        total = registry.count_alerts(**filters)
    finally:
        registry.close()
    table = Table(title=f"Alerts ({total} matching; page {page})")
    for name in ("id", "state", "rule", "study date", "modality", "device", "exam", "value"):
        table.add_column(name, overflow="fold")
    table.add_column("threshold")
    for row in frame.itertuples(index=False):
        state_text = row.state + (f" ({row.outcome})" if row.outcome else "")
        table.add_row(
            str(row.alert_id),
            escape(state_text),
            escape(row.rule_id),
            _date(row.study_date),
            escape(str(row.modality_family or "")),
            escape(str(row.device_name or "")),
            escape(str(row.standard_exam or "")),
            _display(row.quantity, row.value),
            _display(row.quantity, row.threshold),
        )
    console.print(table)


@alerts_app.command("show")
def show(alert_id: AlertIdArg) -> None:
    """Show one alert: rule, values, threshold and its source, study, the studies of its
    window (a patient's or group rule's; every site), review history."""
    console = make_console()
    registry = open_registry(get_settings())
    try:
        alert = registry.alert(alert_id)
    finally:
        registry.close()
    quantity = alert["quantity"]
    lines = [
        f"[bold]Alert {alert['alert_id']}[/bold]: {escape(alert['rule_title'])}",
        f"rule {escape(alert['rule_id'])} (pack {escape(alert['pack'])}, version "
        f"{alert['rule_version']})",
        f"state: {alert['state']}" + (f", outcome: {alert['outcome']}" if alert["outcome"] else ""),
        f"value: {_display(quantity, alert['value'])} ({quantity}); threshold: "
        f"{_display(quantity, alert['threshold'])}",
        f"source: {escape(alert['threshold_source'])}",
        f"study: {_date(alert['study_date'])} {escape(str(alert['modality'] or ''))} "
        f"{escape(str(alert['exam'] or ''))} on {escape(str(alert['device_name'] or ''))}",
        f"study instance UID: {alert['study_instance_uid'] or '—'}",
        f"patient: pseudonym {alert['pseudonym_short'] or '—'}, {alert['age_band']}, "
        f"sex {alert['sex'] or '—'}",
        f"subject: {alert['subject_kind']} ({escape(alert['subject_key'])})",
    ]
    for line in lines:
        console.print(line, highlight=False)
    if alert["window_studies"]:
        window = Table(title="Studies in the window")
        for name in ("study id", "date", "modality", "exam", "device", "study instance UID"):
            window.add_column(name, overflow="fold")
        if quantity != "count":
            window.add_column(quantity, justify="right")
        for w in alert["window_studies"]:
            cells = [
                str(w["study_id"]),
                _date(w["study_date"]),
                escape(str(w["modality"] or "")),
                escape(str(w["standard_exam"] or "")),
                escape(str(w["device_name"] or "")),
                str(w["study_instance_uid"]),
            ]
            window.add_row(
                *cells, *([_display(quantity, w["value"])] if quantity != "count" else [])
            )
        console.print(window)
    table = Table(title="Review history")
    for name in ("time (UTC)", "user", "action", "state", "text"):
        table.add_column(name, overflow="fold")
    for entry in alert["history_entries"]:
        table.add_row(
            _date(entry["at"]),
            escape(entry["user"]),
            entry["action"],
            entry["state"] + (f" ({entry['outcome']})" if entry["outcome"] else ""),
            escape(entry["text"]),
        )
    console.print(table)


@alerts_app.command("review")
def review(
    alert_id: AlertIdArg,
    note: Annotated[str, typer.Option("--note", "-m", help="Note to keep with it.")] = "",
    user: UserOpt = None,
) -> None:
    """Put an open alert under review."""
    registry = open_registry(get_settings())
    try:
        registry.review_alert(alert_id, user=user, note=note)
    finally:
        registry.close()
    make_console().print(f"alert {alert_id} is under review")


@alerts_app.command("note")
def note(
    alert_id: AlertIdArg,
    text: Annotated[str, typer.Argument(help="The note.")],
    user: UserOpt = None,
) -> None:
    """Add a note to an alert's history (any state)."""
    registry = open_registry(get_settings())
    try:
        registry.note_alert(alert_id, text, user=user)
    finally:
        registry.close()
    make_console().print(f"note added to alert {alert_id}")


@alerts_app.command("close")
def close(
    alert_id: AlertIdArg,
    outcome: Annotated[
        str,
        typer.Option(
            "--outcome",
            help="no_action, optimisation or notified_to_authority (significant event).",
        ),
    ],
    justification: Annotated[
        str, typer.Option("--justification", "-j", help="Why (mandatory, kept in the history).")
    ],
    user: UserOpt = None,
) -> None:
    """Close an alert with an outcome and a justification."""
    registry = open_registry(get_settings())
    try:
        registry.close_alert(alert_id, outcome=outcome, justification=justification, user=user)
    finally:
        registry.close()
    make_console().print(f"alert {alert_id} closed ({outcome})")


@alerts_app.command("recheck")
def recheck(
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule id.")] = None,
    notify: Annotated[
        bool,
        typer.Option(
            "--notify",
            help="Announce the alerts this recheck creates (e-mail); default: none.",
        ),
    ] = False,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Put the work on the job queue in chunks for `kerma worker` (PostgreSQL "
            "only) instead of running it here.",
        ),
    ] = False,
    chunk_size: Annotated[
        int | None,
        typer.Option("--chunk-size", min=1, help="With --queue: studies per job (100)."),
    ] = None,
) -> None:
    """Evaluate the rules on every study again (after rules changed); no duplicates.

    With `--queue` the studies are cut into jobs of `--chunk-size` that `kerma worker`
    runs on any number of nodes (PostgreSQL).
    """
    from kerma.cli.jobs import queue_chunk_size

    chunk_size = queue_chunk_size(queue=queue, chunk_size=chunk_size)
    if queue:
        from kerma.cli.jobs import print_enqueued
        from kerma.services.jobs import enqueue_recheck, require_postgresql

        require_postgresql(get_settings(), serial="'kerma alerts recheck'")
        registry = open_registry(get_settings())
        try:
            queued = enqueue_recheck(registry, chunk_size=chunk_size, rule_id=rule, notify=notify)
        finally:
            registry.close()
        print_enqueued(queued)
        return
    registry = open_registry(get_settings())
    try:
        with Progress(
            TextColumn("recheck"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("studies", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = registry.recheck_alerts(rule_id=rule, progress=progress, notify=notify)
    finally:
        registry.close()
    make_console().print(
        f"{result.studies} studies evaluated: {len(result.new)} new alerts, "
        f"{len(result.updated)} updated"
    )


@alerts_app.command("verify")
def verify() -> None:
    """Recompute the review trail's hash chain; exit 1 at the first broken entry."""
    registry = open_registry(get_settings())
    try:
        result = registry.verify_alerts()
    finally:
        registry.close()
    console = make_console()
    if result.ok:
        console.print(f"review trail intact: {result.entries} entries verified")
        return
    console.print(
        f"[bold red]review trail broken[/bold red]: {escape(result.reason)} "
        f"(alert {result.alert_id}; {result.entries} entries read)",
        highlight=False,
    )
    raise typer.Exit(1)


@alerts_app.command("rules")
def rules() -> None:
    """List the rules in force with threshold and source."""
    registry = open_registry(get_settings())
    try:
        frame = registry.alert_rules()
    finally:
        registry.close()
    table = Table(title=f"Alert rules in force ({len(frame)})")
    for name in ("rule", "pack", "modalities", "threshold", "basis", "source"):
        table.add_column(name, overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(
            escape(row.rule_id),
            escape(row.pack),
            escape(row.modalities),
            escape(row.threshold),
            escape(row.basis),
            escape(row.source),
        )
    make_console().print(table)


#: Module that adds the e-mail outbox and report commands to the group, when installed
#: (the notification work of issue #12 lives there; its ``register`` finds this group).
MAIL_COMMANDS_MODULE = "kerma.cli.alerts_mail"


def register(app: typer.Typer) -> None:
    """Add the ``alerts`` group to the ``kerma`` command (with the mail commands, if any)."""
    app.add_typer(alerts_app, name="alerts")
    if importlib.util.find_spec(MAIL_COMMANDS_MODULE) is not None:
        mail = importlib.import_module(MAIL_COMMANDS_MODULE)
        if "outbox" not in {c.name for c in alerts_app.registered_commands}:
            mail.add_commands(alerts_app, load_message=_report_message)


def _report_message(registry: Any, alert_id: int) -> Any:
    """Load an alert's report message (the services are imported only when it runs)."""
    from kerma.services.alerts import report_message

    return report_message(registry, alert_id)

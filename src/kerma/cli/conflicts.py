"""``kerma conflicts``: SOP Instance UIDs held in several versions, and their decisions.

``list`` the open conflicts, ``show`` one (its versions and the values in which they
differ, side by side), ``resolve`` it (keep a version, with a reason; logged), ``log``
the decisions made. Each command is one call of :mod:`kerma.services.conflicts`
through :class:`kerma.Registry`.

May import ``kerma.cli``, ``kerma.services``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import fmt, open_registry

if TYPE_CHECKING:
    from kerma.services.conflicts import DecisionRow

conflicts_app = typer.Typer(
    help="Copies of one SOP Instance UID with different content: list, compare, decide.",
    no_args_is_help=True,
)

UidArg = Annotated[str, typer.Argument(help="The SOP Instance UID in conflict.")]


def _when(value: dt.datetime | None) -> str:
    """Return a UTC timestamp to the minute (empty for ``None``)."""
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _value(value: Any) -> str:
    """Return one value of a version for the comparison table."""
    if value is None:
        return "(none)"
    return fmt(value, digits=6)


#: Characters of a long text value shown around the first place the versions differ.
TEXT_WINDOW = 64


def _cut_texts(values: list[Any]) -> list[Any]:
    """Return long text values cut to :data:`TEXT_WINDOW` around their first difference."""
    texts = [v for v in values if isinstance(v, str)]
    if len(texts) != len(values) or max(len(t) for t in texts) <= TEXT_WINDOW:
        return values
    first = texts[0]
    start = min(
        (
            next((i for i, (a, b) in enumerate(zip(first, t, strict=False)) if a != b), None)
            or min(len(first), len(t))
            for t in texts[1:]
        ),
        default=0,
    )
    start = max(0, start - TEXT_WINDOW // 4)
    end = start + TEXT_WINDOW
    return [("…" if start else "") + t[start:end] + ("…" if end < len(t) else "") for t in texts]


def _default_user() -> str:
    """Return the login name of the user running the command (``unknown`` if none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or password database
        return "unknown"


@conflicts_app.command("list")
def list_(
    include_decided: Annotated[
        bool, typer.Option("--all", help="Also list conflicts already decided.")
    ] = False,
) -> None:
    """List the SOP Instance UIDs held in several versions (open conflicts first)."""
    console = make_console()
    registry = open_registry()
    try:
        rows = registry.conflicts(include_decided=include_decided)
    finally:
        registry.close()
    table = Table(
        title=f"Conflicts ({len(rows)})",
        show_header=True,
        header_style="bold",
        caption_justify="left",
    )
    for heading in (
        "SOP Instance UID",
        "state",
        "versions",
        "current",
        "study date",
        "modality",
        "device",
        "opened (UTC)",
        "decided (UTC)",
    ):
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(
            escape(row.sop_instance_uid),
            "open" if row.is_open else "decided",
            str(row.number_of_versions),
            f"{row.current_version}" + (" (unconfirmed)" if row.is_open else ""),
            fmt(row.study_date),
            escape(row.modality or ""),
            escape(row.device_name),
            _when(row.opened_at),
            _when(row.decided_at),
        )
    if rows:
        table.caption = (
            "Compare with kerma conflicts show UID; decide with kerma conflicts resolve."
        )
    console.print(table)


def _decisions_table(title: str, decisions: list[DecisionRow], *, with_uid: bool) -> Table:
    """Return the table of logged decisions."""
    table = Table(title=title, show_header=True, header_style="bold")
    if with_uid:
        table.add_column("SOP Instance UID", overflow="fold")
    for heading in ("decided (UTC)", "kept", "before", "by", "reason"):
        table.add_column(heading, overflow="fold")
    for d in decisions:
        cells = [
            _when(d.decided_at),
            str(d.version_kept),
            str(d.version_before),
            escape(d.decided_by),
            escape(d.reason),
        ]
        table.add_row(*([escape(d.sop_instance_uid)] if with_uid else []), *cells)
    return table


@conflicts_app.command("show")
def show(sop_instance_uid: UidArg) -> None:
    """Show the versions of a SOP Instance UID and the values in which they differ."""
    console = make_console()
    registry = open_registry()
    try:
        detail = registry.conflict(sop_instance_uid)
    finally:
        registry.close()
    state = (
        "open: the study's totals use the current version, unconfirmed"
        if detail.is_open
        else "decided"
    )
    console.print(
        f"[bold]{escape(detail.sop_instance_uid)}[/bold]: {len(detail.versions)} versions, "
        f"{state} (study id {detail.study_id})",
        highlight=False,
    )
    versions = Table(title="Versions", show_header=True, header_style="bold")
    for heading in ("version", "current", "received (UTC)", "by", "AE title", "source", "archive"):
        versions.add_column(heading, overflow="fold")
    for v in detail.versions:
        versions.add_row(
            str(v.version),
            ("yes (unconfirmed)" if detail.is_open else "yes") if v.is_current else "",
            _when(v.received_at),
            v.transport,
            escape(v.calling_ae_title or ""),
            escape(v.source or ""),
            escape(v.archive_path),
        )
    console.print(versions)
    diff = Table(title="Differing values", show_header=True, header_style="bold")
    diff.add_column("field", overflow="fold")
    for v in detail.versions:
        diff.add_column(
            f"version {v.version}" + (" (current)" if v.is_current else ""), overflow="fold"
        )
    for name, values in detail.differences:
        diff.add_row(escape(name), *(escape(_value(x)) for x in _cut_texts(values)))
    console.print(diff)
    if detail.decisions:
        console.print(_decisions_table("Decisions", detail.decisions, with_uid=False))
    if detail.is_open:
        console.print(
            f"Decide with: kerma conflicts resolve {escape(detail.sop_instance_uid)} "
            "--keep VERSION --reason TEXT",
            highlight=False,
        )


@conflicts_app.command("resolve")
def resolve(
    sop_instance_uid: UidArg,
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="The version to keep (kerma conflicts show).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the decision log).")],
    user: Annotated[
        str | None,
        typer.Option("--user", help="Who decides (default: the login name running the command)."),
    ] = None,
) -> None:
    """Keep one version: the study totals follow it, and the decision is logged."""
    console = make_console()
    registry = open_registry()
    try:
        detail = registry.resolve_conflict(
            sop_instance_uid, keep=keep, reason=reason, user=user or _default_user()
        )
    finally:
        registry.close()
    last = detail.decisions[-1]
    console.print(
        f"{escape(detail.sop_instance_uid)}: version {last.version_kept} kept (was "
        f"{last.version_before}) by {escape(last.decided_by)} at {_when(last.decided_at)} "
        "UTC; the study totals were derived again and the decision logged.",
        highlight=False,
    )


@conflicts_app.command("log")
def log(
    sop_instance_uid: Annotated[
        str | None, typer.Argument(help="Only this SOP Instance UID.")
    ] = None,
) -> None:
    """List the decisions made on conflicts, by users and by the rule (oldest first)."""
    console = make_console()
    registry = open_registry()
    try:
        decisions = registry.conflict_decisions(sop_instance_uid)
    finally:
        registry.close()
    console.print(_decisions_table(f"Decisions ({len(decisions)})", decisions, with_uid=True))


def register(app: typer.Typer) -> None:
    """Add ``kerma conflicts`` to the root app."""
    app.add_typer(conflicts_app, name="conflicts")

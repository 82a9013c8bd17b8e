"""``kerma import``, ``rejects``, ``ignored`` and ``reprocess``.

Thin wrappers around :class:`kerma.Registry`; the registry is chosen by
``KERMA_DATABASE_URL`` and the archive by ``KERMA_ARCHIVE_DIR``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kerma.cli.console import make_console
from kerma.config import get_settings


def _registry() -> Any:
    """Return the registry of the current settings (migrated on first use)."""
    from kerma.api import Registry

    return Registry(settings=get_settings())


def _fmt(value: Any, digits: int = 4) -> str:
    """Format a cell: numbers to ``digits`` significant figures, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, pd.Timestamp):
        return str(value.strftime("%Y-%m-%d"))
    return str(value)


def import_(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (recursive).")],
) -> None:
    """Import DICOM dose objects into the registry (idempotent: a second run adds nothing).

    A path that does not exist is a usage error: nothing is imported (exit code 2), so a
    mistyped path never leaves a half import.
    """
    from kerma.ingest.sources import count_files, find_missing

    console = make_console()
    missing = find_missing(paths)
    if missing:
        err = make_console(stderr=True)
        for path in missing:
            err.print(
                f"[red]error:[/red] {escape(str(path))}: no such file or folder", soft_wrap=True
            )
        err.print(
            "Nothing was imported. Correct the path"
            + ("s" if len(missing) > 1 else "")
            + " and run kerma import again.",
            highlight=False,
        )
        raise typer.Exit(2)
    reg = _registry()
    total = count_files(paths)
    with Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("import", total=total)
        summary = reg.import_paths(paths, progress=lambda _o: progress.advance(task))
    table = Table(title="Import", show_header=True, header_style="bold")
    table.add_column("outcome")
    table.add_column("objects", justify="right")
    table.add_row("objects read", str(summary.objects_read))
    for (kind, modality), n in sorted(summary.imported.items()):
        table.add_row(f"imported {kind} {modality}", str(n))
    table.add_row("imported (total)", str(summary.n_imported))
    table.add_row("already present", str(summary.already_present))
    table.add_row("superseded on arrival (older report)", str(summary.superseded))
    table.add_row("earlier reports superseded", str(summary.replaced))
    table.add_row("rejected", str(summary.rejected))
    console.print(table)
    if summary.rejected:
        reasons = Table(title="Rejections", show_header=True, header_style="bold")
        reasons.add_column("objects", justify="right")
        reasons.add_column("reason")
        for reason, n in summary.rejections_by_reason.most_common():
            reasons.add_row(str(n), reason)
        console.print(reasons)
        console.print("List them with [bold]kerma rejects[/bold]; they are kept in the archive.")
    reg.close()
    if summary.objects_read == 0 or summary.unreadable == summary.objects_read:
        raise typer.Exit(1)


def _limit_note(shown: int, total: int) -> str | None:
    """Return the caption of a listing cut to its newest rows, or ``None`` when all are shown."""
    if shown >= total:
        return None
    return f"showing the newest {shown} of {total}; use --limit N (0 = all)"


def _count_rejects(reg: Any) -> int:
    """Return how many rejected objects the registry lists."""
    from sqlalchemy import func, select

    from kerma.db.models import RejectedObject

    with reg.session(write=False) as session:
        return int(session.scalar(select(func.count(RejectedObject.id))) or 0)


def rejects(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Newest rows to show (0 = all).")
    ] = 50,
) -> None:
    """List rejected objects: when, file, SOP Instance UID and reason."""
    console = make_console()
    reg = _registry()
    frame = reg.rejects(limit=limit or None)
    total = _count_rejects(reg) if limit and len(frame) == limit else len(frame)
    reg.close()
    if frame.empty:
        console.print("No rejected objects.")
        return
    table = Table(
        title="Rejected objects",
        caption=_limit_note(len(frame), total),
        caption_justify="left",
        show_header=True,
        header_style="bold",
    )
    for column in ("when", "file", "SOP Instance UID", "reason"):
        table.add_column(column, overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(
            row.rejected_at.strftime("%Y-%m-%d %H:%M:%S"),
            _fmt(row.file_name),
            _fmt(row.sop_instance_uid),
            _fmt(row.reason),
        )
    console.print(table)


def ignored(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Newest rows to show (0 = all).")
    ] = 50,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write every ignored object to this CSV file.")
    ] = None,
) -> None:
    """List objects acknowledged by the network intake but not kept: they hold no dose information.

    The Storage SCP, STOW-RS and ``kerma pull`` receive whole studies; with
    KERMA_SCP_KEEP_NON_DOSE off (the default) an object without dose information
    (an image without dose attributes, a non-dose SR) is acknowledged, recorded here
    and not archived. Counts by modality and SOP class come first, then the newest rows.
    """
    import pydicom.uid

    console = make_console()
    reg = _registry()
    frame = reg.ignored()
    reg.close()
    if out is not None:
        frame.to_csv(out, index=False)
        console.print(
            f"{len(frame)} ignored objects written to {escape(str(out))}", highlight=False
        )
    if frame.empty:
        console.print("No ignored objects.")
        return

    def sop_class_name(value: Any) -> str:
        """Return the SOP class's name from pydicom's UID dictionary, or the UID."""
        if not isinstance(value, str) or not value:
            return ""
        name = pydicom.uid.UID(value).name
        return name if name != value else value

    frame = frame.assign(sop_class=frame["sop_class_uid"].map(sop_class_name))
    counts = (
        frame.fillna({"modality": ""})
        .groupby(["modality", "sop_class"], dropna=False)
        .size()
        .sort_values(ascending=False, kind="stable")
    )
    console.print(
        f"[bold]{len(frame)} ignored objects[/bold] (no dose information; acknowledged, not kept)",
        highlight=False,
    )
    totals = Table(title="By modality and SOP class", show_header=True, header_style="bold")
    totals.add_column("modality")
    totals.add_column("SOP class", overflow="fold")
    totals.add_column("objects", justify="right")
    for (modality, sop_class), n in counts.items():
        totals.add_row(_fmt(modality), _fmt(sop_class), str(n))
    console.print(totals)
    newest = frame.head(limit) if limit else frame
    table = Table(
        title=f"Newest {len(newest)}",
        caption=_limit_note(len(newest), len(frame)),
        caption_justify="left",
        show_header=True,
        header_style="bold",
    )
    # Rich crops a table whose minimum widths exceed the console instead of folding it,
    # so only fixed widths that fit are set: a UID (up to 64 characters) stays on one
    # line when the console leaves room for source and reason beside it; every other
    # column folds to what is left.
    table.add_column("received", no_wrap=True)
    table.add_column("modality", overflow="fold")
    table.add_column("SOP class", overflow="fold", max_width=24)
    is_wide = console.width >= IGNORED_WIDE_TABLE
    if is_wide:
        table.add_column("SOP Instance UID", overflow="fold", width=64)
    else:
        table.add_column("SOP Instance UID", overflow="fold", ratio=1)
    table.add_column("source", overflow="fold", ratio=1)
    table.add_column("reason", overflow="fold", ratio=2)
    for row in newest.itertuples(index=False):
        table.add_row(
            row.received_at.strftime("%Y-%m-%d %H:%M:%S") if pd.notna(row.received_at) else "",
            _fmt(row.modality),
            _fmt(row.sop_class),
            _fmt(row.sop_instance_uid),
            _fmt(row.source),
            _fmt(row.reason),
        )
    console.print(table)


#: Console width (columns) from which ``kerma ignored`` keeps whole UIDs on one line:
#: received 19 + modality 8 + SOP class 24 + UID 64 + source 20 + reason 30, plus the
#: borders and padding of six columns (19).
IGNORED_WIDE_TABLE = 184


def reprocess() -> None:
    """Re-extract every archived object with the current extractors and update the registry."""
    console = make_console()
    reg = _registry()
    with console.status("reprocessing the archive"):
        result = reg.reprocess()
    reg.close()
    table = Table(title="Reprocess", show_header=True, header_style="bold")
    table.add_column("outcome")
    table.add_column("objects", justify="right")
    table.add_row("dose reports updated", str(result.reports))
    table.add_row("dose reports the current extractors reject (kept)", str(result.reports_failing))
    table.add_row("rejected objects now imported", str(result.rejected_now_imported))
    table.add_row("rejected objects still rejected", str(result.rejected_still))
    table.add_row("missing from the archive", str(result.missing_from_archive))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ingest and registry commands to the root app."""
    app.command("import")(import_)
    app.command("rejects")(rejects)
    app.command("ignored")(ignored)
    app.command("reprocess")(reprocess)

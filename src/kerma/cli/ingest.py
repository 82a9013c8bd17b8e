"""``kerma import``, ``rejects``, ``ignored`` and ``reprocess``.

Thin wrappers around :class:`kerma.Registry` and :mod:`kerma.services.intake`; the
registry is chosen by ``KERMA_DATABASE_URL`` and the archive by ``KERMA_ARCHIVE_DIR``.
pandas, SQLAlchemy and the pipeline are imported where a command uses them, so that
loading this module (``kerma.cli.analysis`` takes its option types from here) is cheap.
"""

from __future__ import annotations

import csv as csv_module
import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.config import get_settings
from kerma.files import open_private
from kerma.records import DOSE_MODALITIES

if TYPE_CHECKING:
    from kerma.services.intake import RejectFilter


def _modality_error(value: str) -> typer.BadParameter:
    """Return the usage error of a modality Kerma does not know."""
    return typer.BadParameter(
        f"{value!r} is not a modality Kerma reads dose objects of; use one of "
        f"{', '.join(DOSE_MODALITIES)}."
    )


def parse_modality_option(value: str | None) -> str | None:
    """Return a ``--modality`` option in upper case, refusing modalities Kerma does not read.

    Parameters
    ----------
    value : str or None
        The option as typed.

    Returns
    -------
    str or None
        The modality, upper case.

    Raises
    ------
    typer.BadParameter
        When it is not one of :data:`DOSE_MODALITIES` (a usage error naming them).
    """
    if value is None:
        return None
    text = value.strip().upper()
    if text not in DOSE_MODALITIES:
        raise _modality_error(value)
    return text


def parse_modalities_option(values: list[str] | None) -> list[str] | None:
    """Return a repeatable ``--modality`` option in upper case (see :func:`parse_modality_option`).

    Raises
    ------
    typer.BadParameter
        When one is not one of :data:`DOSE_MODALITIES`.
    """
    if not values:
        return values
    return [m for m in (parse_modality_option(v) for v in values) if m is not None]


ModalityOpt = Annotated[
    str | None,
    typer.Option(
        "--modality",
        "-m",
        help=f"Modality: {', '.join(DOSE_MODALITIES)}.",
        callback=parse_modality_option,
    ),
]


def parse_date_option(value: str | None) -> str | None:
    """Return a date option (``--from``, ``--to``) unchanged when it is a YYYY-MM-DD date.

    Parameters
    ----------
    value : str or None
        The option as typed; ``None`` when not given.

    Returns
    -------
    str or None
        ``value``.

    Raises
    ------
    typer.BadParameter
        When ``value`` is not a calendar date written YYYY-MM-DD (a usage error, exit
        code 2, naming the option).
    """
    if value is None:
        return None
    text = value.strip()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        dt.date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-01-31."
        ) from exc
    return text


FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="First study date, YYYY-MM-DD.", callback=parse_date_option),
]
ToOpt = Annotated[
    str | None,
    typer.Option("--to", help="Last study date, YYYY-MM-DD.", callback=parse_date_option),
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", "-d", help="Part of the device, station or model name.")
]
NonPatientOpt = Annotated[
    bool, typer.Option("--include-non-patient", help="Include QA and phantom studies.")
]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Also write all rows to this CSV file.")]


def _registry() -> Any:
    """Return the registry of the current settings (migrated on first use)."""
    from kerma.services.registry import Registry

    return Registry(settings=get_settings())


def _fmt(value: Any, digits: int = 4) -> str:
    """Format a cell: numbers to ``digits`` significant figures, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dt.datetime | dt.date):  # pandas' Timestamp is a datetime
        return "" if value != value else value.strftime("%Y-%m-%d")  # NaT != NaT
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """Return ``"1 file"`` / ``"3 files"``."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def import_(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (recursive).")],
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="Worker processes importing at once (PostgreSQL or SQLite; default 1).",
        ),
    ] = 1,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Site (institution) these objects belong to, unless KERMA_SITE_MAP names "
            "their Institution Name (default: KERMA_SITE, else the Institution Name).",
        ),
    ] = None,
) -> None:
    """Import DICOM dose objects into the registry (idempotent: a second run adds nothing).

    Files that are not DICOM at all (sidecar JSON files, notes, an index) are skipped and
    counted, neither archived nor listed. A DICOM object that cannot be read is rejected and
    kept in the archive (`kerma rejects`); importing it again does not list it again.

    A path that does not exist is a usage error: nothing is imported (exit code 2), so a
    mistyped path never leaves a half import. An empty folder, or one without any DICOM
    file, is reported (exit code 1).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from kerma.services.intake import count_files, find_missing
    from kerma.services.parallel import ParallelImporter

    console = make_console()
    err = make_console(stderr=True)
    missing = find_missing(paths)
    if missing:
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
    total = count_files(paths)
    if total == 0:
        where = ", ".join(str(p) for p in paths)
        err.print(
            f"[red]error:[/red] nothing to import: {escape(where)} "
            f"{'holds' if len(paths) == 1 else 'hold'} no files (hidden files are not read).",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    settings = get_settings()
    if site is not None:
        settings = settings.model_copy(update={"site": site})
    with (
        ParallelImporter(settings, workers=workers) as importer,
        Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("import", total=total)
        summary = importer.import_paths(paths, progress=lambda n: progress.advance(task, n))
    not_dicom = summary.skipped_not_dicom
    table = Table(title="Import", show_header=True, header_style="bold")
    table.add_column("outcome")
    table.add_column("objects", justify="right")
    table.add_row("files read", str(summary.objects_read))
    table.add_row("skipped: not DICOM", str(not_dicom))
    for (kind, modality), n in sorted(summary.imported.items()):
        table.add_row(f"imported {kind} {modality}", str(n))
    table.add_row("imported (total)", str(summary.n_imported))
    table.add_row("already present", str(summary.already_present))
    table.add_row("superseded on arrival (older report)", str(summary.superseded))
    table.add_row("earlier reports superseded", str(summary.replaced))
    table.add_row(
        "conflict: new version held", str(summary.conflicts - summary.conflicts_already_held)
    )
    table.add_row("conflict: version already held", str(summary.conflicts_already_held))
    table.add_row("rejected: new", str(summary.rejected_new))
    table.add_row("rejected: already listed", str(summary.rejected_already_listed))
    console.print(table)
    if summary.conflicts:
        new_versions = summary.conflicts - summary.conflicts_already_held
        console.print(
            f"conflicts: {new_versions} new, {summary.conflicts_already_held} already held. "
            "Copies of stored SOP Instance UIDs with other content are kept as versions and "
            "their studies marked in conflict; compare and decide with "
            "[bold]kerma conflicts list[/bold] / [bold]show[/bold] / [bold]resolve[/bold].",
            highlight=False,
        )
    if not_dicom:
        console.print(
            f"skipped {_count(not_dicom, 'non-DICOM file')} (not archived, not listed)",
            highlight=False,
        )
    if summary.rejected_new:
        reasons = Table(title="New rejections", show_header=True, header_style="bold")
        reasons.add_column("objects", justify="right")
        reasons.add_column("reason")
        for reason, n in summary.new_rejections_by_reason.most_common():
            reasons.add_row(str(n), escape(reason))
        console.print(reasons)
    if summary.rejected:
        console.print(
            f"rejected: {summary.rejected_new} new, {summary.rejected_already_listed} already "
            "listed. List them with [bold]kerma rejects[/bold]; they are kept in the archive.",
            highlight=False,
        )
    dicom_read = summary.objects_read - not_dicom
    if dicom_read == 0:
        err.print(
            f"[red]error:[/red] no DICOM file found among {_count(summary.objects_read, 'file')}"
            " (all skipped as not DICOM).",
            highlight=False,
        )
        raise typer.Exit(1)
    if summary.unreadable == dicom_read:
        raise typer.Exit(1)


def _size(n_bytes: int) -> str:
    """Return a size in bytes, kB or MB (decimal units)."""
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    if n_bytes < 1_000_000:
        return f"{n_bytes / 1e3:.1f} kB"
    return f"{n_bytes / 1e6:.1f} MB"


def _limit_note(shown: int, total: int) -> str | None:
    """Return the caption of a listing cut to its newest rows, or ``None`` when all are shown."""
    if shown >= total:
        return None
    return f"showing the newest {shown} of {total}; use --limit N (0 = all)"


def _parse_day(value: str | None) -> dt.date | None:
    """Return the date of a validated ``--since``/``--until`` option."""
    return dt.date.fromisoformat(value) if value else None


ReasonOpt = Annotated[
    str | None,
    typer.Option(
        "--reason",
        "-r",
        help=(
            "Only rejections of this reason group (conflict, strict, implausible, unreadable, "
            "not-dose, reader-error, other), or whose reason contains this text (a reason "
            "copied from the import summary, where `<file>` and `<uid>` stand for any text)."
        ),
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="First day of rejection, YYYY-MM-DD (UTC).", callback=parse_date_option
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Last day of rejection, YYYY-MM-DD (UTC, included).",
        callback=parse_date_option,
    ),
]


def _reject_filter(reason: str | None, since: str | None, until: str | None) -> RejectFilter:
    """Return the filter of the ``rejects`` options; refuse an empty date range."""
    from kerma.services.intake import RejectFilter

    first, last = _parse_day(since), _parse_day(until)
    if first and last and last < first:
        raise typer.BadParameter(
            f"--until {last} is before --since {first}: no day is in that range."
        )
    return RejectFilter(reason=reason, since=first, until=last)


#: Columns of the ``kerma rejects`` CSV: (field of ``RejectedRow`` or ``reason_group``, header).
REJECT_CSV_COLUMNS: tuple[str, ...] = (
    "rejected_at",
    "file_name",
    "sop_instance_uid",
    "sop_class_uid",
    "reason_group",
    "reason",
    "archive_sha256",
    "archive_path",
)


def _write_rejects_csv(path: Path, rows: Iterable[Any]) -> int:
    """Write rejected objects to a CSV file (UTF-8, one header row); return the rows written."""
    from kerma.services.intake import reason_group

    n = 0
    with open_private(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv_module.writer(fh)
        writer.writerow(REJECT_CSV_COLUMNS)
        for row in rows:
            values = {
                "rejected_at": row.rejected_at.isoformat(),
                "reason_group": reason_group(row.reason),
            }
            writer.writerow(
                [
                    values[c]
                    if c in values
                    else ("" if getattr(row, c) is None else getattr(row, c))
                    for c in REJECT_CSV_COLUMNS
                ]
            )
            n += 1
    return n


rejects_app = typer.Typer(
    name="rejects",
    help="List rejected objects (filter by reason and date, write CSV), or purge them.",
    invoke_without_command=True,
    rich_markup_mode="markdown",
)


@rejects_app.callback()
def rejects(
    ctx: typer.Context,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Newest rows to show (0 = all).")
    ] = 50,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write every matching rejection to this CSV file."),
    ] = None,
) -> None:
    """List rejected objects: when, source, SOP Instance UID, reason group and reason.

    Rejected objects are kept in the archive. `kerma rejects purge` removes those a user has
    dealt with, with the same filters.
    """
    if ctx.invoked_subcommand is not None:
        return
    from kerma.services.intake import count_rejects, iter_rejects, list_rejects, reason_group

    console = make_console()
    where = _reject_filter(reason, since, until)
    reg = _registry()
    try:
        with reg.session(write=False) as session:
            if out is not None:
                n_written = _write_rejects_csv(out, iter_rejects(session, where=where))
                console.print(
                    f"{_count(n_written, 'rejected object')} written to {escape(str(out))}",
                    highlight=False,
                )
            rows = list_rejects(session, where=where, limit=limit or None)
            total = count_rejects(session, where=where) if limit and len(rows) == limit else None
    finally:
        reg.close()
    if not rows:
        console.print(
            "No rejected objects."
            if where.describe() == "all"
            else f"No rejected objects match ({where.describe()}).",
            highlight=False,
        )
        return
    table = Table(
        title="Rejected objects" + ("" if where.describe() == "all" else f" ({where.describe()})"),
        caption=_limit_note(len(rows), total if total is not None else len(rows)),
        caption_justify="left",
        show_header=True,
        header_style="bold",
    )
    table.add_column("when (UTC)", no_wrap=True)
    for column in ("source", "SOP Instance UID", "group", "reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.rejected_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(_fmt(row.file_name)),
            _fmt(row.sop_instance_uid),
            reason_group(row.reason),
            escape(row.reason),
        )
    console.print(table)


@rejects_app.command("purge")
def purge(
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove rejected objects a user has dealt with: their listing and their archived bytes.

    Takes the same filters as `kerma rejects` (without one, every rejected object). Archived
    bytes that a stored report uses are kept. Asks for confirmation unless `--yes` is given,
    then says what it removed.
    """
    from kerma.services.intake import count_rejects, delete_rejects, remove_archived_files

    console = make_console()
    where = _reject_filter(reason, since, until)
    reg = _registry()
    try:
        with reg.session(write=False) as session:
            n = count_rejects(session, where=where)
        if n == 0:
            console.print(f"No rejected objects match ({where.describe()}); nothing removed.")
            return
        described = "" if where.describe() == "all" else f" ({where.describe()})"
        if not yes and not typer.confirm(
            f"Remove {_count(n, 'rejected object')}{described} from the listing and "
            "delete their archived bytes?"
        ):
            console.print("Nothing removed.")
            raise typer.Exit(1)
        with reg.session(write=True) as session:
            result = delete_rejects(session, where=where)
        remove_archived_files(reg.settings.archive_dir, result)
    finally:
        reg.close()
    console.print(
        f"removed {_count(result.listings_removed, 'rejected object')}{described} from the "
        f"listing and {_count(result.files_removed, 'archived file')} "
        f"({_size(result.bytes_removed)}) from {escape(str(reg.settings.archive_dir))}"
        + (
            f"; kept {_count(result.kept_in_use, 'archived file')} that stored reports use"
            if result.kept_in_use
            else ""
        )
        + (
            f"; {_count(result.files_missing, 'archived file')} already gone"
            if result.files_missing
            else ""
        ),
        highlight=False,
        soft_wrap=True,
    )
    for failure in result.failed:
        console.print(f"[yellow]warning:[/yellow] not deleted: {escape(failure)}", soft_wrap=True)
    if result.failed:
        raise typer.Exit(1)


#: Columns of the ``kerma ignored`` CSV (fields of ``IgnoredRow``).
IGNORED_CSV_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "sop_class_uid",
    "study_instance_uid",
    "series_instance_uid",
    "modality",
    "reason",
    "source",
    "received_at",
)


def _write_ignored_csv(path: Path, rows: Iterator[Any]) -> int:
    """Write ignored objects to a CSV file (UTF-8, one header row); return the rows written."""
    n = 0
    with open_private(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv_module.writer(fh)
        writer.writerow(IGNORED_CSV_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row.received_at.isoformat()
                    if c == "received_at"
                    else ("" if getattr(row, c) is None else getattr(row, c))
                    for c in IGNORED_CSV_COLUMNS
                ]
            )
            n += 1
    return n


def _sop_class_name(value: str | None) -> str:
    """Return a SOP class's name from pydicom's UID dictionary, or the UID."""
    if not value:
        return ""
    from pydicom.uid import UID

    name = UID(value).name
    return str(name) if name != value else value


def ignored(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Newest rows to show (0 = all).")
    ] = 50,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write every ignored object to this CSV file.")
    ] = None,
) -> None:
    """List objects acknowledged by the network intake but not kept: they hold no dose information.

    The Storage SCP, STOW-RS and `kerma pull` receive whole studies; with
    KERMA_SCP_KEEP_NON_DOSE off (the default) an object without dose information (an image
    without dose attributes, a non-dose SR) is acknowledged, recorded here and not archived.
    Counts by modality and SOP class come first, then the newest rows, each with where it
    came from: the sender's AE title and address (or the file, relative to the folder
    imported).
    """
    from kerma.services.intake import count_ignored, ignored_by_kind, iter_ignored, list_ignored

    console = make_console()
    reg = _registry()
    try:
        with reg.session(write=False) as session:
            if out is not None:
                n_written = _write_ignored_csv(out, iter_ignored(session))
                console.print(
                    f"{n_written} ignored objects written to {escape(str(out))}", highlight=False
                )
            total = count_ignored(session)
            kinds = ignored_by_kind(session)
            newest = list_ignored(session, limit=limit or None)
    finally:
        reg.close()
    if total == 0:
        console.print("No ignored objects.")
        return
    console.print(
        f"[bold]{total} ignored objects[/bold] (no dose information; acknowledged, not kept)",
        highlight=False,
    )
    totals = Table(title="By modality and SOP class", show_header=True, header_style="bold")
    totals.add_column("modality")
    totals.add_column("SOP class", overflow="fold")
    totals.add_column("objects", justify="right")
    for modality, sop_class, n in kinds:
        totals.add_row(_fmt(modality), _sop_class_name(sop_class), str(n))
    console.print(totals)
    table = Table(
        title=f"Newest {len(newest)}",
        caption=_limit_note(len(newest), total),
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
    if console.width >= IGNORED_WIDE_TABLE:
        table.add_column("SOP Instance UID", overflow="fold", width=64)
    else:
        table.add_column("SOP Instance UID", overflow="fold", ratio=1)
    table.add_column("source", overflow="fold", ratio=1)
    table.add_column("reason", overflow="fold", ratio=2)
    for row in newest:
        table.add_row(
            row.received_at.strftime("%Y-%m-%d %H:%M:%S") if row.received_at else "",
            _fmt(row.modality),
            _sop_class_name(row.sop_class_uid),
            _fmt(row.sop_instance_uid),
            escape(_fmt(row.source)),
            escape(_fmt(row.reason)),
        )
    console.print(table)


#: Console width (columns) from which ``kerma ignored`` keeps whole UIDs on one line:
#: received 19 + modality 8 + SOP class 24 + UID 64 + source 20 + reason 30, plus the
#: borders and padding of six columns (19).
IGNORED_WIDE_TABLE = 184


def reprocess(
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
    """Re-extract every archived object with the current extractors and update the registry.

    With `--queue` the work is cut into jobs of `--chunk-size` studies (and rejected
    objects) that `kerma worker` runs on any number of nodes (PostgreSQL).
    """
    from kerma.cli.jobs import queue_chunk_size

    chunk_size = queue_chunk_size(queue=queue, chunk_size=chunk_size)
    console = make_console()
    if queue:
        from kerma.cli.jobs import print_enqueued
        from kerma.services.jobs import enqueue_reprocess, require_postgresql

        require_postgresql(get_settings(), serial="'kerma reprocess'")
        with _registry() as reg:
            print_enqueued(enqueue_reprocess(reg, chunk_size=chunk_size))
        return
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
    table.add_row("conflicting copies now held as versions", str(result.rejected_now_held))
    table.add_row("missing from the archive", str(result.missing_from_archive))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ingest and registry commands to the root app."""
    app.command("import")(import_)
    app.add_typer(rejects_app, name="rejects")
    app.command("ignored")(ignored)
    app.command("reprocess")(reprocess)

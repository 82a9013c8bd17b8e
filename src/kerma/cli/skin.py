"""``kerma skin-dose``: fluoroscopy peak skin dose (PySkinDose) or Ka,r, with SRDL flags.

A thin wrapper around :func:`kerma.services.skin.estimate_study_skin_doses` (through
:meth:`kerma.Registry.estimate_skin_doses`) on the registry of ``KERMA_DATABASE_URL``:
computes the estimates that are missing, prints a Rich table (display units from
:data:`kerma.units.QUANTITIES`: Ka,r in mGy, KAP in Gy·cm²) and writes every row to a
CSV file with ``--out`` (canonical names and units unless ``--units display``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import UnitsOpt, open_registry, parse_date_option
from kerma.config import get_settings
from kerma.services.skin import DEFAULT_TIMEOUT_S, MAPS_DIR, METHOD_KAR, METHOD_PYSKINDOSE
from kerma.units import QUANTITIES

#: Method labels of the table (the title explains them).
SHORT_METHODS = {METHOD_PYSKINDOSE: "PSD", METHOD_KAR: "Ka,r"}


def _fmt(value: Any, digits: int = 3) -> str:
    """Format one cell: numbers to ``digits`` significant digits, missing as ``—``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return escape(str(value))


def skin_dose(
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="Study Instance UID (repeat for several studies)."),
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
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute",
            help="Replace all stored estimates (without it, only missing ones and Ka,r "
            "fallbacks that may now work: PySkinDose installed since, or timed out).",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1.0, help="Time limit of one PySkinDose run (s)."),
    ] = DEFAULT_TIMEOUT_S,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write all rows to this CSV.")
    ] = None,
    units: UnitsOpt = "canonical",
) -> None:
    """Peak skin dose of fluoroscopy studies (PySkinDose), else Ka,r; NCRP 168 SRDL flags.

    PySkinDose runs on the archived RDSR of each RF/XA study that has no estimate yet
    (or whose Ka,r fallback was only for want of PySkinDose or time); where it cannot
    (unsupported device, missing geometry), the reference point air kerma total (Ka,r)
    is given, labelled as not a skin dose, with the reason.
    """
    from kerma.services.tables import write_frame_csv

    console = make_console()
    settings = get_settings()
    registry = open_registry(settings)
    try:
        with Progress(
            TextColumn("PySkinDose"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("studies", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            frame = registry.estimate_skin_doses(
                study_instance_uids=study or None,
                since=dt.date.fromisoformat(since) if since else None,
                until=dt.date.fromisoformat(until) if until else None,
                recompute=recompute,
                timeout_s=timeout,
                progress=progress,
            )
    finally:
        registry.close()
    _print(console, frame, Path(settings.archive_dir))
    if out is not None:
        write_frame_csv(frame, out, units=units)  # type: ignore[arg-type]
        console.print(f"wrote {len(frame)} rows to {escape(str(out))}")


def _display(name: str, value: Any) -> Any:
    """Return a canonical value in the display unit of its quantity (missing stays missing)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return value
    return float(value) * QUANTITIES[name].factor


def _print(console: Console, frame: pd.DataFrame, archive_dir: Path) -> None:
    """Print the skin dose table, its numbered notes and the count line.

    Reasons and SRDL texts are long, so the table shows note numbers and each distinct
    text is printed once below it (the CSV of ``--out`` has them in full).
    """
    table = Table(
        title="Fluoroscopy skin dose (PSD: peak skin dose by PySkinDose; Ka,r: reference "
        "point air kerma total, not a skin dose; SRDL: NCRP Report 168 follow-up level)",
        title_justify="left",
    )
    doses = ("peak_skin_dose_mgy", "dose_rp_total_gy", "dap_total_gym2")
    headers = (
        "date",
        "device",
        "exam",
        "method",
        *(f"{QUANTITIES[d].label}\n({QUANTITIES[d].display_unit})" for d in doses),
    )
    for header in headers:
        table.add_column(
            header,
            overflow="fold",
            justify="right" if "(" in header else "left",
            no_wrap=header == "date",
        )
    table.add_column("SRDL")
    table.add_column("notes")
    table.add_column("map")
    notes: dict[str, int] = {}

    def note(text: str) -> str:
        """Return the note number of ``text`` (``""`` for no text)."""
        if not text:
            return ""
        return str(notes.setdefault(text, len(notes) + 1))

    for row in frame.to_dict("records"):
        date = row["study_date"]
        srdl = note(row["srdl_reasons"]) if row["srdl_exceeded"] else ""
        numbers = [n for n in (note(row["reason"] or ""), srdl) if n]
        map_path = row["map_path"]
        table.add_row(
            "—" if pd.isna(date) else f"{date:%Y-%m-%d}",
            _fmt(row["device_name"]),
            _fmt(row["standard_exam"]),
            SHORT_METHODS.get(row["method"], _fmt(row["method"])),
            *(_fmt(_display(d, row[d])) for d in doses),
            "[bold red]YES[/]" if row["srdl_exceeded"] else "no",
            ",".join(numbers) or "—",
            Path(map_path).suffix.lstrip(".") if isinstance(map_path, str) else "—",
        )
    console.print(table)
    for text, number in notes.items():
        console.print(f"[{number}] {escape(text)}", highlight=False)
    n_psd = int((frame["method"] == METHOD_PYSKINDOSE).sum())
    n_now = int(frame["is_computed_now"].sum()) if "is_computed_now" in frame else 0
    console.print(
        f"{len(frame)} studies: {n_psd} peak skin dose by PySkinDose, "
        f"{len(frame) - n_psd} Ka,r fallback; {int(frame['srdl_exceeded'].sum())} at or "
        f"above an NCRP 168 SRDL (computed now: {n_now}, stored before: {len(frame) - n_now})",
        highlight=False,
    )
    if frame["map_path"].notna().any():
        console.print(
            f"maps: {escape(str(archive_dir / MAPS_DIR))}/<study_instance_uid>.<map>",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add ``skin-dose`` to the ``kerma`` command."""
    app.command("skin-dose")(skin_dose)

"""``kerma inspect``: print what would be extracted, storing nothing (EXTRACTION.md)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kerma.cli.console import make_console
from kerma.config import get_settings
from kerma.records import DoseReport
from kerma.services.inspect import empty_folders, inspect_files


class OutputFormat(StrEnum):
    """Output formats of ``kerma inspect``."""

    json = "json"
    jsonl = "jsonl"
    table = "table"


def inspect(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="json, jsonl or table.")
    ] = OutputFormat.table,
) -> None:
    """Print what Kerma extracts from DICOM objects, without storing anything."""
    console = make_console()
    err = Console(stderr=True)
    records: list[dict[str, Any]] = []
    n_read = n_rejected = 0
    for folder in empty_folders(paths):
        err.print(f"{folder}: the folder holds no files; nothing to inspect", soft_wrap=True)
    for item in inspect_files(paths=paths, settings=get_settings()):
        result = item.result
        if result is None:
            err.print(f"[red]error:[/red] {item.path}: no such file or folder")
            continue
        n_read += 1
        record = result.to_dict()
        if record["status"] == "rejected":
            n_rejected += 1
        if output_format is OutputFormat.jsonl:
            sys.stdout.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        elif output_format is OutputFormat.json:
            records.append(record)
        else:
            _print_table(console, result if isinstance(result, DoseReport) else None, record)
    if output_format is OutputFormat.json:
        sys.stdout.write(json.dumps(records, ensure_ascii=False, indent=1, allow_nan=False) + "\n")
    if n_rejected:
        err.print(f"{n_rejected} of {n_read} objects rejected")
    if n_read == 0:
        err.print("No file was read: nothing to inspect.")
        raise typer.Exit(1)


def _print_table(console: Console, report: DoseReport | None, record: dict[str, Any]) -> None:
    """Print one object as a short Rich table."""
    if report is None:
        console.print(f"[red]rejected[/red] {record['file']}: {record['reject_reason']}")
        return
    s, d = report.study, report.device
    console.print(
        f"[bold]{record['file']}[/bold]  {report.kind}  {s.modality or '?'}  "
        f"{s.study_date or ''}  {d.manufacturer or ''} {d.manufacturer_model_name or ''}"
    )
    table = Table(show_header=True, header_style="bold")
    columns = [
        "acquisition_protocol",
        "ctdivol_mgy",
        "dlp_mgycm",
        "dap_gym2",
        "dose_rp_gy",
        "agd_mgy",
        "kvp_kv",
        "administered_activity_mbq",
    ]
    present = [c for c in columns if any(getattr(e, c) is not None for e in report.events)]
    for c in present:
        table.add_column(c)
    for e in report.events:
        table.add_row(*(_fmt(getattr(e, c)) for c in present))
    if present:
        console.print(table)
    for w in report.warnings:
        console.print(f"  [yellow]warning:[/yellow] {w}")


def _fmt(value: Any) -> str:
    """Format a cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the root app."""
    app.command("inspect")(inspect)

"""``kerma patient``: find a patient's studies and cumulative dose from a typed ID.

A thin wrapper around :meth:`kerma.Registry.patient` (:mod:`kerma.services.patients`):
the keyed pseudonym of the typed ID is computed with the registry's key; nothing typed
is stored or logged.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import STUDY_TABLE, display, fmt, open_registry
from kerma.config import get_settings
from kerma.records import display_pseudonym
from kerma.units import QUANTITIES

#: Cumulative columns shown under the studies: (column, header).
CUMULATIVE_TABLE: tuple[tuple[str, str], ...] = (
    ("patient", "patient"),
    ("number_of_studies", "studies"),
    ("number_of_ct_exams", "CT exams"),
    ("ct_dlp_total_mgycm", QUANTITIES["ct_dlp_total_mgycm"].display_label),
    ("ct_effective_dose_msv", QUANTITIES["ct_effective_dose_msv"].display_label),
    ("number_of_fluoro_studies", "fluoro studies"),
    (
        "fluoro_studies_dose_rp_total_gy",
        QUANTITIES["fluoro_studies_dose_rp_total_gy"].display_label,
    ),
    ("fluoro_studies_dap_total_gym2", QUANTITIES["fluoro_studies_dap_total_gym2"].display_label),
)


def patient(
    patient_id: Annotated[
        str | None,
        typer.Argument(help="Patient ID (0010,0020) exactly as the images carry it."),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option(
            "--issuer", help="Issuer of Patient ID (0010,0021), when the images carry one."
        ),
    ] = None,
    accession: Annotated[
        str | None,
        typer.Option("--accession", "-a", help="Accession Number (0008,0050)."),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, help="Cumulative window in days (default: setting, 365)."),
    ] = None,
) -> None:
    """Show the studies and cumulative dose of one patient, found by Patient ID or accession.

    Kerma stores only keyed pseudonyms: the pseudonym of the ID you type is computed with
    the registry's key (`KERMA_PSEUDONYM_KEY` or `<archive>/pseudonym.key`) and looked up.
    Tables show the pseudonym's short form (`P-…`), the same in every command.
    """
    if not patient_id and not accession:
        raise typer.BadParameter(
            "give a PATIENT_ID, an --accession number, or both.", param_hint="'PATIENT_ID'"
        )
    console = make_console()
    settings = get_settings()
    registry = open_registry(settings)
    try:
        record = registry.patient(
            patient_id, issuer=issuer, accession=accession, window_days=window
        )
    finally:
        registry.close()
    studies = record.studies.to_dict("records")
    names = ", ".join(record.display_names) or "no patient ID"
    noun = "study" if len(studies) == 1 else "studies"
    table = Table(
        title=f"Patient {escape(names)}: {len(studies)} {noun}",
        show_header=True,
        header_style="bold",
    )
    columns = [("number", "#")]
    columns += [
        (name, heading or f"{QUANTITIES[name].label}\n({QUANTITIES[name].display_unit})")
        for name, heading in STUDY_TABLE
        if name != "patient"  # in the title
        and (heading is not None or any(fmt(r.get(name)) for r in studies))
    ]
    for _, heading in columns:
        table.add_column(heading, overflow="fold")
    for number, row in enumerate(studies, start=1):
        row["number"] = number
        table.add_row(*(escape(fmt(display(name, row.get(name)))) for name, _ in columns))
    console.print(table)
    # whole, on lines of their own: to copy into a PACS search
    for number, row in enumerate(studies, start=1):
        console.print(f"#{number} Study Instance UID {row['study_instance_uid']}", soft_wrap=True)
    cumulative = record.cumulative.to_dict("records")
    if not cumulative:
        console.print("No CT or fluoroscopy dose for this patient: no cumulative dose.")
        return
    first = cumulative[0]
    summary = Table(
        title=f"Cumulative dose over {record.window_days} days, "
        f"{fmt(first['window_start'])} to {fmt(first['window_end'])} "
        "(effective dose: k × DLP, population-level estimate)",
        show_header=True,
        header_style="bold",
    )
    shown = [
        (name, heading)
        for name, heading in CUMULATIVE_TABLE
        if any(fmt(r.get(name)) not in ("", "0") for r in cumulative) or name == "patient"
    ]
    for _, heading in shown:
        summary.add_column(heading, overflow="fold")
    for row in cumulative:
        row["patient"] = row.get("patient") or display_pseudonym(row.get("patient_pseudonym"))
        summary.add_row(*(escape(fmt(display(name, row.get(name)))) for name, _ in shown))
    console.print(summary)


def register(app: typer.Typer) -> None:
    """Add ``patient`` to the root app."""
    app.command("patient")(patient)

"""``kerma quality``: image quality beside dose (issue #17).

Thin wrappers around :mod:`kerma.services.quality` on the registry of
``KERMA_DATABASE_URL``: ``ei`` (deviation index distribution per room, detector,
protocol, body part or month), ``vendor`` (vendor exposure indices under their names),
``rejects`` (reject rates), ``import-rejects`` (a DR system's reject-log CSV with a
TOML column mapping) and ``noise`` (global noise level of CT series). Each prints a
Rich table and writes every row to ``--csv`` when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import (
    CsvOpt,
    DeviceOpt,
    FromOpt,
    ModalityOpt,
    NonPatientOpt,
    ProtocolOpt,
    ToOpt,
    build_filter,
    open_registry,
)
from kerma.files import open_private
from kerma.units import GYM2_TO_GYCM2

quality_app = typer.Typer(
    help="Image quality beside dose: exposure/deviation index, rejects, CT noise.",
    no_args_is_help=True,
)

ByOpt = Annotated[
    str,
    typer.Option(
        "--by",
        help="Group by, comma-separated: room, detector, protocol, body_part, month.",
    ),
]


def _cell(value: Any) -> str:
    """Format one cell: numbers to 3 significant digits, missing values empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return escape(str(value))


#: Columns the tables show in display units, as every Kerma table (README "Python API"):
#: canonical name → (header, factor). ``--csv`` keeps the canonical names and units.
DISPLAY_COLUMNS: dict[str, tuple[str, float]] = {
    "dap_rejected_gym2": ("KAP rejected (Gy·cm²)", GYM2_TO_GYCM2),
    "agd_rejected_mgy": ("AGD rejected (mGy)", 1.0),
}


def _show(
    frame: pd.DataFrame, title: str, csv: Path | None, columns: list[str] | None = None
) -> None:
    """Print ``frame`` as a table (``columns`` only, doses in display units) and write all
    of it to ``csv`` (canonical names and units)."""
    console = make_console()
    if csv is not None:
        with open_private(csv, "w", newline="", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False)
        make_console(stderr=True).print(f"wrote {len(frame)} rows to {escape(str(csv))}")
    if frame.empty:
        console.print(f"{title}: nothing in the registry for this selection.")
        return
    converted = {c: frame[c] * factor for c, (_, factor) in DISPLAY_COLUMNS.items() if c in frame}
    frame = frame.assign(**converted).rename(columns={c: DISPLAY_COLUMNS[c][0] for c in converted})
    columns = [DISPLAY_COLUMNS[c][0] if c in converted else c for c in columns or frame.columns]
    table = Table(title=title)
    shown = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in frame[shown].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _groups(by: str) -> list[str]:
    """Return the grouping keys of ``--by``."""
    groups = [g.strip() for g in by.split(",") if g.strip()]
    if not groups:
        raise typer.BadParameter("give at least one group, e.g. --by room")
    return groups


@quality_app.command("ei")
def ei(
    by: ByOpt = "room,detector,protocol,body_part",
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    protocol: ProtocolOpt = None,
    include_non_patient: NonPatientOpt = False,
    csv: CsvOpt = None,
) -> None:
    """Deviation index (IEC 62494-1) per group: distribution, share outside ±1 and ±3.

    DI is the device's (0018,1413) or TID 10003 'Deviation Index', else
    10·log10(EI/EI_T) from the exposure index and its target. The ±1 and ±3 action
    ranges are AAPM Report 116's. Use --by month for the trend per month.
    """
    from kerma.services.quality import exposure_index_summary

    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        protocol=protocol,
        include_non_patient=include_non_patient,
    )
    groups = _groups(by)
    with open_registry() as registry, registry.session(write=False) as session:
        try:
            frame = exposure_index_summary(session, group_by=groups, flt=flt)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--by") from exc
    columns = [*groups, "n_events", "n_di", "n_di_calculated", "mean_di"]
    columns += ["share_outside_1", "share_outside_3", "n_vendor_index"]
    _show(frame, "Deviation index (IEC 62494-1)", csv, columns)


@quality_app.command("vendor")
def vendor(
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    include_non_patient: NonPatientOpt = False,
    csv: CsvOpt = None,
) -> None:
    """Vendor exposure indices (S value, EI, EXI, lgM ...) per room, under their own names.

    These are not the IEC exposure index and never enter a deviation index.
    """
    from kerma.services.quality import vendor_indices

    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        include_non_patient=include_non_patient,
    )
    with open_registry() as registry, registry.session(write=False) as session:
        frame = vendor_indices(session, flt=flt)
    _show(frame, "Vendor exposure indices (not IEC EI)", csv)


@quality_app.command("rejects")
def rejects(
    by: Annotated[
        str, typer.Option("--by", help="Group by, comma-separated: room, body_part, reason, month.")
    ] = "room",
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    include_non_patient: NonPatientOpt = False,
    csv: CsvOpt = None,
) -> None:
    """Reject rates: images marked 'Rejected for Quality Reasons' and reject-log rows.

    Registry rows count image headers (DX, CR, MG) received and those a KOS (or a
    reject-log row with their SOP Instance UID) marks rejected; reject-log rows count
    the imported log. The KAP of rejected exposures stays in the patient's and room's
    dose (they were irradiated) and is shown here in Gy·cm² (``--csv``: dap_rejected_gym2,
    Gy·m²).
    """
    from kerma.services.quality import pending_rejections, reject_rates

    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        include_non_patient=include_non_patient,
    )
    groups = _groups(by)
    with open_registry() as registry, registry.session(write=False) as session:
        try:
            frame = reject_rates(session, group_by=groups, flt=flt)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--by") from exc
        pending = pending_rejections(session)
    _show(frame, "Reject rates", csv)
    if pending:
        make_console(stderr=True).print(
            f"{pending} rejected SOP Instance UIDs have no image in the registry yet; they "
            "count once their images arrive."
        )


@quality_app.command("import-rejects")
def import_rejects(
    file: Annotated[Path, typer.Argument(help="Reject-log CSV exported by a DR system.")],
    mapping: Annotated[
        Path, typer.Option("--mapping", help="TOML column mapping (docs/quality.md).")
    ],
) -> None:
    """Import a reject-log CSV with a column mapping (once per file, by its SHA-256)."""
    from kerma.services.quality import import_reject_log, load_reject_log_mapping

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"Unable to read {file}: {exc}", param_hint="FILE") from exc
    spec = load_reject_log_mapping(mapping)
    with open_registry() as registry, registry.session() as session:
        result = import_reject_log(session, data=data, mapping=spec)
    console = make_console()
    if result.already_imported:
        console.print(f"{escape(str(file))} was imported already (same content); nothing added.")
        return
    for problem in result.problems:
        make_console(stderr=True).print(f"{escape(str(file))}: {escape(problem)}")
    console.print(
        f"{result.n_rows} rows imported from {escape(str(file))} ({escape(spec.name)}): "
        f"{result.n_rejected} rejected, {result.n_marked} linked to images by SOP Instance UID"
    )


@quality_app.command("noise")
def noise(
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Part of the protocol or series description.")
    ] = None,
    station: Annotated[
        str | None, typer.Option("--station", help="Part of the station name.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest series shown.")] = 200,
    csv: CsvOpt = None,
) -> None:
    """Global noise level (HU) of measured CT series, with protocol, CTDIvol and Dw.

    Christianson et al., AJR 2015;205:W93-W99: mode of the local standard deviation in
    soft tissue (0-100 HU) over the series' axial images.
    """
    from kerma.services.filters import as_date
    from kerma.services.quality import noise_by_series

    with open_registry() as registry, registry.session(write=False) as session:
        frame = noise_by_series(
            session,
            date_from=as_date(date_from),
            date_to=as_date(date_to),
            protocol=protocol,
            station=station,
            limit=limit,
        )
    columns = ["study_date", "station_name", "protocol_name", "series_description", "n_images"]
    columns += ["ctdivol_mgy", "water_equivalent_diameter_mm", "global_noise_hu"]
    _show(frame, "CT global noise level (HU)", csv, columns)


def register(app: typer.Typer) -> None:
    """Add the ``quality`` group to the ``kerma`` command."""
    app.add_typer(quality_app, name="quality")

"""``kerma studies`` and ``kerma summary``, and the study-filter options every command shares.

Thin wrappers around :mod:`kerma.services` through :class:`kerma.Registry` (the
registry of ``KERMA_DATABASE_URL``). Tables show display units from the one label
table (:data:`kerma.units.QUANTITIES`: KAP in Gy·cm², Ka,r in mGy); CSV files carry the
canonical names and units unless ``--units display``.

Module-level imports stay light (no pandas, no analysis): ``kerma studies`` answers a
page in well under a second.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.config import Settings, get_settings
from kerma.records import display_pseudonym
from kerma.services.filters import DOSE_RANGE_QUANTITIES, SEXES, StudyFilter
from kerma.units import QUANTITIES

if TYPE_CHECKING:
    from kerma.services.registry import Registry


def parse_date_option(value: str | None) -> str | None:
    """Return a date option (``--from``, ``--to``) unchanged when it is a YYYY-MM-DD date.

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


#: Unit of each band option.
BAND_UNITS: dict[str, str] = {"age": "years", "weight": "kg"}


def parse_band(text: str | None, unit: str = "") -> tuple[float | None, float | None] | None:
    """Parse a band ``"MIN-MAX"`` (either side may be empty) into numbers.

    Raises
    ------
    typer.BadParameter
        When ``text`` is not two numbers (or empty sides) around ``-``, or MIN ≥ MAX.
    """
    if text is None:
        return None
    low, sep, high = text.strip().partition("-")
    try:
        if not sep or not (low.strip() or high.strip()):
            raise ValueError(text)
        band = (float(low) if low.strip() else None, float(high) if high.strip() else None)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not a band MIN-MAX in {unit}: e.g. 0-18, 18- or -16 (MIN "
            "included, MAX excluded)."
        ) from exc
    if band[0] is not None and band[1] is not None and band[0] >= band[1]:
        raise typer.BadParameter(f"{text!r}: MIN must be below MAX.")
    return band


def _check_band(param: typer.CallbackParam, value: str | None) -> str | None:
    """Return ``--age``/``--weight`` unchanged when :func:`parse_band` can parse it."""
    parse_band(value, BAND_UNITS.get(str(param.name), ""))
    return value


def parse_dose_range(text: str | None) -> tuple[str, float | None, float | None] | None:
    """Parse ``QUANTITY:MIN-MAX`` (canonical units, both ends included) of ``--dose``.

    Raises
    ------
    typer.BadParameter
        When the quantity is not a study dose column or the range is not numbers.
    """
    if text is None:
        return None
    quantity, sep, band = text.partition(":")
    quantity = quantity.strip()
    if not sep or quantity not in DOSE_RANGE_QUANTITIES:
        raise typer.BadParameter(
            f"{text!r} is not QUANTITY:MIN-MAX; QUANTITY is one of "
            f"{', '.join(DOSE_RANGE_QUANTITIES)} (canonical units), e.g. "
            "ct_dlp_total_mgycm:500- or dap_total_gym2:0-0.01."
        )
    low, dash, high = band.strip().partition("-")
    try:
        if not dash:
            raise ValueError(band)
        return (
            quantity,
            float(low) if low.strip() else None,
            float(high) if high.strip() else None,
        )
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: MIN-MAX must be numbers, e.g. 100-500.") from exc


def _check_dose(value: str | None) -> str | None:
    """Return ``--dose`` unchanged when :func:`parse_dose_range` can parse it."""
    parse_dose_range(value)
    return value


def _check_sex(value: str | None) -> str | None:
    """Return ``--sex`` upper-cased when it is M, F or O."""
    if value is None:
        return None
    if value.strip().upper() not in SEXES:
        raise typer.BadParameter(f"{value!r} is not a sex; use one of {', '.join(SEXES)}.")
    return value.strip().upper()


def _check_units(value: str) -> str:
    """Return ``--units`` when it is canonical or display."""
    if value not in ("canonical", "display"):
        raise typer.BadParameter(f"{value!r} is not canonical or display.")
    return value


def _check_modality(value: str | None) -> str | None:
    """Refuse a modality that no dose object has (usage error naming the allowed ones)."""
    from kerma.cli.ingest import DOSE_MODALITIES

    if value is None:
        return value
    wrong = [
        m for m in re.split(r"[,\s]+", value.strip()) if m and m.upper() not in DOSE_MODALITIES
    ]
    if wrong:
        raise typer.BadParameter(
            f"{', '.join(repr(m) for m in wrong)} is not a dose modality; use "
            f"{', '.join(DOSE_MODALITIES)} (several comma-separated)."
        )
    return value


ModalityOpt = Annotated[
    str | None,
    typer.Option(
        "--modality",
        "-m",
        help="Modality, or several comma-separated (CT, DX, MG, RF, XA, NM ...).",
        callback=_check_modality,
    ),
]
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
StudyExamOpt = Annotated[
    str | None, typer.Option("--exam", "-e", help="Standard exam of the study (exact name).")
]
ProtocolOpt = Annotated[
    str | None, typer.Option("--protocol", help="Part of an acquisition protocol of the study.")
]
DescriptionOpt = Annotated[
    str | None, typer.Option("--description", help="Part of the study description.")
]
AgeOpt = Annotated[
    str | None,
    typer.Option("--age", help="Age band MIN-MAX (years, max excluded).", callback=_check_band),
]
WeightOpt = Annotated[
    str | None,
    typer.Option("--weight", help="Weight band MIN-MAX (kg, max excluded).", callback=_check_band),
]
SexOpt = Annotated[str | None, typer.Option("--sex", help="M, F or O.", callback=_check_sex)]
DoseOpt = Annotated[
    str | None,
    typer.Option(
        "--dose",
        help="Dose range QUANTITY:MIN-MAX in canonical units, e.g. ct_dlp_total_mgycm:500-.",
        callback=_check_dose,
    ),
]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Also write all rows to this CSV file.")]
UnitsOpt = Annotated[
    str,
    typer.Option(
        "--units",
        help="CSV units: canonical (names as stored: dap_total_gym2 in Gy·m²) or display "
        "(labels with display units: 'KAP total (Gy·cm²)').",
        callback=_check_units,
    ),
]


SiteOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--site",
        help="Only studies of this site (institution; repeat for several; see kerma sites).",
    ),
]


def build_filter(
    *,
    modality: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    device: str | None = None,
    exam: str | None = None,
    protocol: str | None = None,
    description: str | None = None,
    age: str | None = None,
    weight: str | None = None,
    sex: str | None = None,
    dose: str | None = None,
    include_non_patient: bool = False,
    conflicts: bool = False,
    flagged: bool = False,
    site: list[str] | None = None,
) -> StudyFilter:
    """Return the :class:`~kerma.db.filters.StudyFilter` of the command-line options.

    ``conflicts`` selects only the studies in conflict (``has_conflict``).
    """
    age_band = parse_band(age, "years") or (None, None)
    weight_band = parse_band(weight, "kg") or (None, None)
    dose_range = parse_dose_range(dose) or (None, None, None)
    return StudyFilter(
        modalities=modality or (),  # type: ignore[arg-type]
        date_from=date_from,  # type: ignore[arg-type]
        date_to=date_to,  # type: ignore[arg-type]
        device_name=device,
        standard_exams=exam or (),  # type: ignore[arg-type]
        protocol=protocol,
        study_description=description,
        age_min_years=age_band[0],
        age_max_years=age_band[1],
        weight_min_kg=weight_band[0],
        weight_max_kg=weight_band[1],
        sex=sex,
        dose_quantity=dose_range[0],
        dose_min=dose_range[1],
        dose_max=dose_range[2],
        include_non_patient=include_non_patient,
        has_conflict=True if conflicts else None,
        flagged=flagged,
        site_names=tuple(site or ()),
    )


def check_sites(registry: Registry, site: list[str] | None) -> None:
    """Refuse ``--site`` names that are not sites, listing the sites (exit 2).

    Without this an unknown site would select no study and the command would print an
    empty table as if the site had no dose data.

    Raises
    ------
    typer.BadParameter
        When a name is not a site (:meth:`kerma.Registry.site_ids`).
    """
    from kerma.errors import NotFoundError

    if not site:
        return
    try:
        registry.site_ids(site)
    except NotFoundError as exc:
        raise typer.BadParameter(escape(str(exc)), param_hint="'--site'") from exc


def check_names_match(registry: Registry, flt: StudyFilter) -> None:
    """Refuse a ``--device`` text or ``--exam`` name that names nothing in the registry.

    Called when a listing selected no study, so that a misspelt room or exam is a usage
    error naming what is there (as ``kerma drl`` does), not an empty table read as "no
    dose data".

    Raises
    ------
    typer.BadParameter
        When no device name, station or model contains the ``--device`` text, or no
        study is mapped to an ``--exam`` name (``kerma exams`` lists the mapping).
    """
    from kerma.errors import NotFoundError
    from kerma.services.analytics import check_device_filter
    from kerma.services.exams import exam_counts

    with registry.session(write=False) as session:
        try:
            check_device_filter(session, flt)
        except NotFoundError as exc:
            raise typer.BadParameter(escape(str(exc)), param_hint="'--device'") from exc
        if not flt.standard_exams:
            return
        known = set(exam_counts(session)["standard_exam"].dropna())
    missing = [exam for exam in flt.standard_exams if exam not in known]
    if missing:
        raise typer.BadParameter(
            escape(
                f"no study is mapped to {', '.join(map(repr, missing))}; the standard exams "
                f"in the registry are: {', '.join(sorted(known)) or '(none)'} "
                "(`kerma exams` lists the rules)."
            ),
            param_hint="'--exam'",
        )


def open_registry(settings: Settings | None = None) -> Registry:
    """Return the registry of the settings (migrated, summary derived), saying when it derives."""
    from kerma.services.registry import Registry

    registry = Registry(settings=settings or get_settings())
    if registry.derived_on_open:
        make_console(stderr=True).print(
            f"derived the summary columns of {registry.derived_on_open} studies "
            "(first use after an upgrade)"
        )
    return registry


def fmt(value: Any, digits: int = 4) -> str:
    """Format a cell: numbers to ``digits`` significant figures, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d")
    return str(value)


def display(name: str, value: Any) -> Any:
    """Return a canonical value of quantity ``name`` in its display unit."""
    quantity = QUANTITIES.get(name)
    if quantity is None or value is None or isinstance(value, str):
        return value
    return float(value) * quantity.factor


def limit_note(shown: int, total: int, *, sort: str | None = None) -> str | None:
    """Return the caption of a listing cut to its first rows, or ``None`` when all are shown.

    Without ``sort`` the rows are the newest; with it, the first in ``sort``'s order.
    """
    if shown >= total:
        return None
    which = f"first {shown} of {total} by {sort}" if sort else f"newest {shown} of {total}"
    return f"showing the {which}; use --limit N (0 = all) or --page N"


def page_note(*, page: int, offset: int, shown: int, total: int, sort: str | None) -> str | None:
    """Return the caption of page ``page`` of a studies listing (rows ``offset`` + 1 ...).

    Raises
    ------
    typer.BadParameter
        When ``page`` is past the last page (no row on it), naming the last page.
    """
    if page == 1:
        return limit_note(shown, total, sort=sort)
    if shown == 0:
        last = max(1, -(-total // max(offset // (page - 1), 1)))
        raise typer.BadParameter(
            f"page {page} is past the last page, {last} ({total} studies match).",
            param_hint="'--page'",
        )
    return f"page {page}: rows {offset + 1}-{offset + shown} of {total}"


#: Columns of the ``kerma studies`` table: (column, header or ``None`` for its display
#: label from the label table).
#: Columns of the studies table that are never wrapped (a date, a short pseudonym).
NO_WRAP_COLUMNS = frozenset({"study_date", "patient"})

STUDY_TABLE: tuple[tuple[str, str | None], ...] = (
    ("study_date", "date"),
    ("patient", "patient"),
    ("modalities", "modality"),
    ("device_name", "device"),
    ("study_description", "description"),
    ("number_of_events", "events"),
    ("ct_dlp_total_mgycm", None),
    ("dap_total_gym2", None),
    ("dose_rp_total_gy", None),
    ("fluoro_time_total_s", None),
    ("agd_total_left_mgy", None),
    ("agd_total_right_mgy", None),
    ("administered_activity_total_mbq", None),
)


def studies(
    site: SiteOpt = None,
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    exam: StudyExamOpt = None,
    protocol: ProtocolOpt = None,
    description: DescriptionOpt = None,
    age: AgeOpt = None,
    weight: WeightOpt = None,
    sex: SexOpt = None,
    dose: DoseOpt = None,
    include_non_patient: NonPatientOpt = False,
    conflicts: Annotated[
        bool,
        typer.Option(
            "--conflicts",
            help="Only studies in conflict: a report's SOP Instance UID arrived again with "
            "other content and both versions are held (see kerma conflicts).",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Newest rows to show (0 = all).")
    ] = 50,
    page: Annotated[
        int, typer.Option("--page", min=1, help="Page of --limit rows to show (1 = newest).")
    ] = 1,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            help="Sort by columns, e.g. 'dap_total_gym2:desc' or 'device_name,study_date' "
            "(default: newest first).",
        ),
    ] = None,
    csv: CsvOpt = None,
    units: UnitsOpt = "canonical",
    flagged: Annotated[
        bool,
        typer.Option(
            "--flagged",
            help="Only studies flagged for review: a value outside its plausibility range "
            "or not a number (each shown with the reason).",
        ),
    ] = False,
) -> None:
    """List studies with their dose totals (display units: KAP in Gy·cm², Ka,r in mGy)."""
    from kerma.errors import UnknownColumnError
    from kerma.services.studies import write_studies_csv

    console = make_console()
    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        exam=exam,
        protocol=protocol,
        description=description,
        age=age,
        weight=weight,
        sex=sex,
        dose=dose,
        include_non_patient=include_non_patient,
        conflicts=conflicts,
        flagged=flagged,
        site=site,
    )
    registry = open_registry()
    flags = None
    try:
        check_sites(registry, site)
        try:
            shown = registry.list_studies(
                flt, sort=sort, limit=limit or None, offset=(page - 1) * limit if limit else 0
            )
        except UnknownColumnError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--sort'") from exc
        if csv is not None:
            with registry.session(write=False) as session:
                n = write_studies_csv(session, path=csv, flt=flt, units=units)  # type: ignore[arg-type]
            console.print(f"{n} studies written to {escape(str(csv))}")
        if flagged:
            flags = registry.plausibility_flags(study_ids=[r["study_id"] for r in shown.rows])
        empty = shown.total == 0 and _registry_is_empty(registry)
        if shown.total == 0 and not empty:
            check_names_match(registry, flt)
    finally:
        registry.close()
    if empty:
        console.print(empty_registry_note(registry.settings.database_url))
        return
    rows = shown.rows if sort else list(reversed(shown.rows))  # newest at the bottom
    total = shown.total
    table = Table(
        title=f"Studies ({total})",
        caption=page_note(page=page, offset=shown.offset, shown=len(rows), total=total, sort=sort),
        caption_justify="left",
        show_header=True,
        header_style="bold",
    )
    columns = [
        (name, heading or f"{QUANTITIES[name].label}\n({QUANTITIES[name].display_unit})")
        for name, heading in STUDY_TABLE
        if heading is not None or any(r.get(name) is not None for r in rows)
    ]
    if any(r.get("has_conflict") for r in rows):
        columns.append(("has_conflict", "conflict"))
    for name, heading in columns:
        # a date or a pseudonym broken over two lines is misread: never wrap them
        whole = name in NO_WRAP_COLUMNS
        table.add_column(heading, overflow="fold", no_wrap=whole, min_width=10 if whole else None)
    if flags is not None:
        table.add_column("flagged for review", overflow="fold")
        reasons = flags.groupby("study_id")["message"].apply(list).to_dict()
    for row in rows:
        row["patient"] = display_pseudonym(row.get("patient_pseudonym"))
        cells = [escape(_cell(name, row)) for name, _ in columns]
        if flags is not None:
            cells.append(escape("\n".join(reasons.get(row["study_id"], []))))
        table.add_row(*cells)
    console.print(table)


def _registry_is_empty(registry: Registry) -> bool:
    """Return whether the registry holds no study at all (QA studies included)."""
    every = StudyFilter(include_non_patient=True)
    return registry.list_studies(every, limit=1).total == 0


def empty_registry_note(database_url: str) -> str:
    """Return what to do when the registry at ``database_url`` holds no study yet."""
    return (
        f"The registry {escape(database_url)} holds no study yet. Import dose objects with "
        "kerma import PATH, or try the demo: kerma demo (once), then "
        "export KERMA_DATABASE_URL=sqlite:///kerma-demo.db KERMA_ARCHIVE_DIR=kerma-demo-archive"
    )


def _cell(name: str, row: Any) -> str:
    """Return one cell of the ``kerma studies`` table (a conflict shows as ``open``)."""
    if name == "has_conflict":
        return "open (totals unconfirmed)" if row.get(name) else ""
    return fmt(display(name, row.get(name)))


def summary(
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    exam: StudyExamOpt = None,
    protocol: ProtocolOpt = None,
    description: DescriptionOpt = None,
    age: AgeOpt = None,
    weight: WeightOpt = None,
    sex: SexOpt = None,
    dose: DoseOpt = None,
    include_non_patient: NonPatientOpt = False,
    csv: CsvOpt = None,
    units: UnitsOpt = "canonical",
) -> None:
    """Median and quartiles of the main dose quantity per modality, device and protocol."""
    from kerma.services.tables import write_frame_csv

    console = make_console()
    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        exam=exam,
        protocol=protocol,
        description=description,
        age=age,
        weight=weight,
        sex=sex,
        dose=dose,
        include_non_patient=include_non_patient,
    )
    registry = open_registry()
    try:
        frame = registry.summary(flt=flt)
    finally:
        registry.close()
    if csv is not None:
        n = write_frame_csv(frame, csv, units=units)  # type: ignore[arg-type]
        console.print(f"{n} rows written to {escape(str(csv))}")
    if frame.empty:
        console.print("No irradiation events match.")
        return
    table = Table(title="Dose summary", show_header=True, header_style="bold")
    for heading in ("modality", "device", "protocol", "quantity", "studies", "events"):
        table.add_column(heading, overflow="fold")
    for heading in ("median", "25th pct", "75th pct"):
        table.add_column(heading, justify="right")
    for row in frame.to_dict("records"):
        quantity = row["quantity"]
        table.add_row(
            escape(str(row["modality"])),
            escape(str(row["device_name"])),
            escape(str(row["acquisition_protocol"])),
            escape(QUANTITIES[quantity].display_label),
            str(row["number_of_studies"]),
            str(row["number_of_events"]),
            fmt(display(quantity, row["median"])),
            fmt(display(quantity, row["p25"])),
            fmt(display(quantity, row["p75"])),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``studies`` and ``summary`` to the root app."""
    app.command("studies")(studies)
    app.command("summary")(summary)

"""``kerma exams``, ``kerma drl`` (and ``kerma drl sets``), ``kerma stats``, ``kerma cumulative``.

Thin wrappers around :mod:`kerma.services` through :class:`kerma.Registry` (the
registry of ``KERMA_DATABASE_URL``): the commands hold no SQL and no analysis
workflow. Before a command that uses standard exams, studies mapped with other exam
rules than those in force are mapped again (``--stored`` skips it), and the command
says so. Every command prints a Rich table in display units (KAP in Gy·cm², Ka,r in
mGy, from :data:`kerma.units.QUANTITIES`) and writes every row to a CSV file with
``--out``, in canonical names and units unless ``--units display``.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kerma.cli.console import make_console
from kerma.cli.registry import (
    AgeOpt,
    DeviceOpt,
    FromOpt,
    SexOpt,
    SiteOpt,
    ToOpt,
    UnitsOpt,
    WeightOpt,
    build_filter,
    check_sites,
    open_registry,
    parse_date_option,
)
from kerma.config import Settings, get_settings
from kerma.errors import NotFoundError
from kerma.records import display_pseudonym
from kerma.services.analytics import (
    NO_COEFFICIENT_NOTE,
    PERIODS,
    SAMPLE_QUANTITIES,
    STATUS_ABOVE,
    STATUS_BELOW,
    STATUS_INSUFFICIENT,
    STATUS_NEEDS_INDICATION,
    STATUS_NO_DRL,
    STATUS_NO_EDITION,
    drl_sets,
    drl_sets_coverage,
)
from kerma.services.tables import display_frame, write_frame_csv
from kerma.units import QUANTITIES

if TYPE_CHECKING:
    from kerma.services.registry import Registry

#: Modality families of the sample frame (``kerma.analysis.frames.modality_family``).
MODALITY_FAMILIES: tuple[str, ...] = ("CT", "DX", "MG", "RF/XA")

#: Groupings ``kerma stats --by`` lists (any other non-quantity column of the sample
#: frame, docs/analysis.md §3, is accepted too).
GROUPINGS: tuple[str, ...] = (
    "standard_exam",
    "device_name",
    "station_name",
    "period",
    "modality_family",
    "patient_sex",
    "view",
    "laterality",
    "study_description",
)


def _check_family(value: str | None) -> str | None:
    """Return ``--modality`` as given when it is a modality family, else a usage error."""
    if value is not None and value not in MODALITY_FAMILIES:
        raise typer.BadParameter(
            f"{value!r} is not a modality family; use one of {', '.join(MODALITY_FAMILIES)}."
        )
    return value


FamilyOpt = Annotated[
    str | None,
    typer.Option(
        "--modality", "-m", help="Modality family: CT, DX, MG or RF/XA.", callback=_check_family
    ),
]
ExamOpt = Annotated[str | None, typer.Option("--exam", "-e", help="Standard exam name.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write all rows to this CSV.")]
RulesOpt = Annotated[
    bool,
    typer.Option(
        "--rules/--stored",
        help="Re-map studies mapped with other exam rules than those in force first "
        "(default), or use the stored mapping as it is.",
    ),
]

drl_app = typer.Typer(
    help="Compare rooms with diagnostic reference levels (ICRP 135); `kerma drl sets` "
    "lists the DRL sets.",
    no_args_is_help=False,
)


def _registry(settings: Settings) -> Registry:
    """Return the registry of ``KERMA_DATABASE_URL``."""
    return open_registry(settings)


def _fmt(value: Any, digits: int = 3) -> str:
    """Format one cell: numbers to ``digits`` significant digits, missing as ``—``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return escape(str(value))  # rule patterns such as 'sch[aä]del' are not Rich markup


def _remap(registry: Registry, use_rules: bool) -> None:
    """Map again the studies mapped with other exam rules, and say so (``--rules``)."""
    if not use_rules:
        return
    result = registry.ensure_exams_current()
    if result.studies_remapped:
        make_console(stderr=True).print(
            f"exam rules changed since the stored mapping (rules {result.fingerprint}): "
            f"re-mapped {result.studies_remapped} studies ({result.distinct_tuples} distinct "
            f"descriptions), {result.studies_changed} changed exam",
            highlight=False,
        )


def _bad_selection(exc: NotFoundError) -> typer.BadParameter:
    """Return the usage error of a device or exam that selects nothing."""
    hint = "'--device' / '-d'" if str(exc).startswith("no device") else "'--exam' / '-e'"
    text = str(exc)
    return typer.BadParameter(escape(text), param_hint=hint)


def print_frame(
    frame: pd.DataFrame,
    title: str,
    columns: dict[str, str] | None = None,
    *,
    styles: dict[str, dict[str, str]] | None = None,
    caption: str | None = None,
) -> None:
    """Print ``frame`` as a Rich table with ``columns`` ({column: header}).

    ``styles`` maps a column to {cell value: Rich style}, e.g. ``{"status": {"above":
    "bold red"}}``; ``caption`` is printed under the table. Cells wrap at spaces and
    split a word only when the console is too narrow for the longest words
    (:func:`_column_widths`).
    """
    columns = columns or {c: c for c in frame.columns}
    styles = styles or {}
    rows = []
    for record in frame[list(columns)].to_dict("records"):
        cells = []
        for column in columns:
            cell = _fmt(record[column])
            style = styles.get(column, {}).get(str(record[column]))
            cells.append(f"[{style}]{cell}[/]" if style else cell)
        rows.append(cells)
    console = make_console()
    widths = _column_widths(
        list(columns.values()),
        [True] * len(columns),
        rows,
        console.width - 3 * len(columns) - 1,  # a line and 2 spaces per column, one edge
        list(columns),
    )
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for index, header in enumerate(columns.values()):
        table.add_column(header, overflow="fold", width=widths[index])
    for cells in rows:
        table.add_row(*cells)
    console.print(table)


def _write(frame: pd.DataFrame, out: Path | None, units: str = "canonical") -> None:
    """Write ``frame`` to CSV when ``out`` is given and say so."""
    if out is not None:
        write_frame_csv(frame, out, units=units)  # type: ignore[arg-type]
        make_console().print(f"wrote {len(frame)} rows to {out}")


def _families(family: str | None) -> tuple[str, ...]:
    """Return the modality families of ``--modality`` (all when not given)."""
    return (family,) if family else MODALITY_FAMILIES


# ----------------------------------------------------------------------------- exams


def exams(
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Map every study again with the rules in force and derive its summary "
            "again (normally automatic when the rules change).",
        ),
    ] = False,
    show_rules: Annotated[bool, typer.Option("--show-rules/--no-rules")] = True,
    out: OutOpt = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="With --apply: map here, and put the derive of every study on the job "
            "queue in chunks for `kerma worker` (PostgreSQL only).",
        ),
    ] = False,
    chunk_size: Annotated[
        int | None,
        typer.Option("--chunk-size", min=1, help="With --queue: studies per job (100)."),
    ] = None,
) -> None:
    """List the standard-exam rules, the exam → study counts and unmapped descriptions."""
    from kerma.cli.jobs import queue_chunk_size
    from kerma.services.exams import exam_counts, study_exams_frame, unmapped_descriptions

    chunk_size = queue_chunk_size(queue=queue, chunk_size=chunk_size)
    settings = get_settings()
    if queue:
        from kerma.services.jobs import require_postgresql

        if not apply:
            raise typer.BadParameter("--queue goes with --apply", param_hint="--queue")
        require_postgresql(settings, serial="'kerma exams --apply'")
    registry = _registry(settings)
    try:
        rules = registry.exam_rules
        make_console().print(f"rules from: {', '.join(rules.sources)}")
        if show_rules:
            print_frame(rules.to_frame(), "Standard-exam rules (first match wins)")
        if apply and queue:
            from kerma.cli.jobs import print_enqueued
            from kerma.services.jobs import enqueue_derive

            result = registry.apply_exams(derive=False)
            make_console().print(f"mapped: {result.studies_changed} studies updated")
            print_enqueued(enqueue_derive(registry, chunk_size=chunk_size))
        elif apply:
            result = registry.apply_exams()
            make_console().print(f"applied: {result.studies_changed} studies updated")
        else:
            _remap(registry, True)
        with registry.session(write=False) as session:
            mappings = exam_counts(session)
            unmapped = unmapped_descriptions(session)
            mapped = study_exams_frame(session) if out is not None else None
    finally:
        registry.close()
    print_frame(mappings, "Standard exams", {"standard_exam": "exam", "n_studies": "studies"})
    print_frame(
        unmapped,
        "Unmapped study descriptions",
        {"modality": "modality", "study_description": "description", "n_studies": "studies"},
    )
    if mapped is not None:
        _write(mapped, out)


# ------------------------------------------------------------------------------- drl


@drl_app.command("sets")
def drl_sets_command(
    out: OutOpt = None,
    coverage: Annotated[
        bool,
        typer.Option(
            "--coverage",
            help="Per set: modalities and exams covered, editions, and the share of rows "
            "at each verification grade (primary, reproduction, secondary, unverified).",
        ),
    ] = False,
) -> None:
    """List the DRL sets Kerma knows (packaged and site tables)."""
    settings = get_settings()
    if coverage:
        _print_coverage(drl_sets_coverage(settings=settings), settings)
        _write(drl_sets_coverage(settings=settings), out)
        return
    sets = drl_sets(settings=settings)
    print_frame(
        sets,
        f"DRL sets (selected: {settings.drl_set}; KERMA_DRL_SET)",
        {
            "drl_region": "region",
            "drl_source": "source",
            "drl_year": "year",
            "n_rows": "rows",
            "modalities": "modalities",
            "statuses": "status",
            "verification": "verification",
        },
    )
    _write(sets, out)


def _percent(share: Any) -> str:
    """Return a 0-1 share as a whole percentage, ``"—"`` for 0."""
    return "—" if not share else f"{100 * float(share):.0f}%"


def _print_coverage(coverage: pd.DataFrame, settings: Settings) -> None:
    """Print ``kerma drl sets --coverage``: one row per set with grade shares."""
    shown = coverage.assign(
        **{
            column: coverage[column].map(_percent)
            for column in coverage.columns
            if column.startswith("share_")
        }
    )
    total = coverage["n_rows"].sum()
    print_frame(
        shown,
        f"DRL set coverage (selected: {settings.drl_set}; KERMA_DRL_SET)",
        {
            "drl_region": "set",
            "modalities": "modalities",
            "n_exams": "exams",
            "editions": "editions (validity)",
            "n_rows": "rows",
            "share_primary": "primary",
            "share_primary-reproduction": "reproduction",
            "share_secondary": "secondary",
            "share_unverified": "unverified",
            "share_site": "site",
        },
        caption=f"{len(coverage)} sets, {total} DRL values (one per published row and "
        "quantity). Grades: kerma/reference/SOURCES.md; --out writes the exam lists too.",
    )


@drl_app.callback(invoke_without_command=True)
def drl(
    ctx: typer.Context,
    drl_set: Annotated[
        str | None, typer.Option("--set", help="DRL set(s), e.g. EU or UK,EU (default: setting).")
    ] = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    family: FamilyOpt = None,
    device: DeviceOpt = None,
    site: SiteOpt = None,
    exam: ExamOpt = None,
    local: Annotated[bool, typer.Option("--local", help="Also print local DRLs.")] = False,
    periods: Annotated[
        bool,
        typer.Option("--periods", help="Also flag rooms above the DRL in consecutive periods."),
    ] = False,
    use_rules: RulesOpt = True,
    out: OutOpt = None,
    units: UnitsOpt = "canonical",
) -> None:
    """Compare each room's typical value (median) with the national DRL (ICRP 135).

    Values are compared in canonical units (KAP in Gy·m², Ka,r in Gy); the table shows
    KAP in Gy·cm² and Ka,r in mGy.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = get_settings()
    flt = build_filter(date_from=date_from, date_to=date_to, device=device, site=site)
    registry = _registry(settings)
    # the set an admin chose in the browser (kept in the registry), else KERMA_DRL_SET
    chosen = drl_set or registry.settings.drl_set
    try:
        check_sites(registry, site)
        _remap(registry, use_rules)
        try:
            outcome = registry.drl(
                flt,
                drl_set=chosen,
                families=_families(family),
                exam=exam,
                local=local,
                periods=periods,
            )
        except NotFoundError as exc:
            raise _bad_selection(exc) from exc
    finally:
        registry.close()
    result = outcome.comparison
    if result.empty:
        make_console().print(
            f"No DRL comparison (set {escape(chosen)}): {escape(outcome.empty_reason or '')}"
        )
        _write(result, out, units)
        return
    _print_drl_table(result, chosen, settings)
    if local and outcome.local is not None:
        print_frame(
            display_frame(outcome.local, rename=False),
            "Local DRLs: 75th percentile of room medians (ICRP 135)",
            {
                "modality_family": "modality",
                "standard_exam": "exam",
                "quantity": "quantity",
                "unit": "unit",
                "n_rooms": "rooms",
                "n": "n",
                "n_studies": "patients",
                "local_drl": "local DRL",
                "median_of_room_medians": "median of room medians",
            },
        )
    if periods and outcome.period_summary is not None and not outcome.period_summary.empty:
        summary = outcome.period_summary
        flagged = display_frame(summary[summary["periods_above"] > 0], rename=False)
        print_frame(
            flagged,
            f"Rooms above the DRL by {settings.drl_period} (consistently = "
            f"≥ {settings.drl_consecutive_periods} consecutive)",
            {
                "standard_exam": "exam",
                "device_name": "room",
                "quantity": "quantity",
                "periods_above": "periods above",
                "longest_run_above": "longest run",
                "last_period": "last period",
                "last_status": "last status",
                "consistently_above": "consistently above",
            },
        )
    _write(result, out, units)


#: Rich styles of the DRL statuses.
STATUS_STYLES: dict[str, str] = {
    STATUS_ABOVE: "bold red",
    STATUS_BELOW: "green",
    STATUS_INSUFFICIENT: "yellow",
    STATUS_NO_DRL: "dim",
    STATUS_NEEDS_INDICATION: "magenta",
    STATUS_NO_EDITION: "dim",
}


def _exam_label(exam: str, indication: str, band: str, view: str) -> str:
    """Return the exam cell: exam, the DRL row's indication when not in the name, band, view."""
    label = exam
    if indication and indication.lower() not in exam.lower():
        label += f" ({indication})"
    if band:
        label += f" [{band}]"
    if view:
        label += f" {view}"
    return label


def _print_drl_table(result: pd.DataFrame, chosen: str, settings: Settings) -> None:
    """Print the DRL comparison: exam, room, n, patients, typical value, DRL, status.

    ``n`` counts the values (projections, views or studies) whose median is the typical
    value; ``patients`` counts the distinct studies they come from, the sample that
    ICRP 135's minimum applies to. The unknown-age column says in its header whether
    its samples are in ``n`` (``KERMA_DRL_UNKNOWN_AGE=adult``) or were excluded
    (``exclude``). Columns that must stay legible (status, room, numbers) are not
    wrapped; exam, quantity and source wrap at word boundaries. Rows with a note
    (fallback to another DRL row, missing clinical indication) are
    marked with a number that the notes under the table explain.
    """
    notes: dict[str, int] = {}
    marks = []
    for note in result["note"]:
        if note:
            notes.setdefault(str(note), len(notes) + 1)
        marks.append(f" [{notes[str(note)]}]" if note else "")
    shown = display_frame(result, rename=False)
    result = result.assign(quantity_label=shown["quantity"], unit=shown["unit"])
    result = result.assign(
        typical_value=[
            # below the ICRP 135 minimum the median is shown anyway, in parentheses
            t if pd.notna(t) or pd.isna(m) else f"({_fmt(m)})"
            for t, m in zip(shown["typical_value"], shown["sample_median"], strict=True)
        ],
        drl_value=shown["drl_value"],
    )
    shown = result.assign(
        exam=[
            _exam_label(e, i, b, v) + m
            for e, i, b, v, m in zip(
                result["standard_exam"],
                result["clinical_indication"],
                result["band_label"],
                result["view"],
                marks,
                strict=True,
            )
        ],
        drl_cited=[
            _edition(region, year, ref, status, valid_from, valid_to)
            for region, year, ref, status, valid_from, valid_to in zip(
                result["drl_region"],
                result["drl_year"],
                result["source_ref"],
                result["drl_status"],
                result["drl_valid_from"],
                result["drl_valid_to"],
                strict=True,
            )
        ],
        room=result["device_name"].map(_room_label),
        what=[f"{q} {u}" for q, u in zip(result["quantity_label"], result["unit"], strict=True)],
    )
    excluded = settings.drl_unknown_age == "exclude"
    no_age_header = "no age (excl.)" if excluded else "no age (in n)"
    policy = (
        "excluded: not in n, patients or the typical value"
        if excluded
        else "compared as adults: counted in n and patients"
    )
    rooms = shown.drop_duplicates("device_name")
    sources = shown[shown["drl_cited"] != ""].drop_duplicates("drl_cited")
    renamed = [
        f"{escape(r)} = {escape(str(d))}"
        for r, d in zip(rooms["room"], rooms["device_name"], strict=True)
        if r != d
    ]
    caption_lines = [
        *(["rooms: " + "; ".join(renamed)] if renamed else []),
        "DRL sources (kerma/reference/SOURCES.md): "
        + "; ".join(
            f"{escape(c)} = {escape(str(src))}, {_int_text(y)}, {escape(str(g))}"
            for c, src, y, g in zip(
                sources["drl_cited"],
                sources["drl_source"],
                sources["drl_year"],
                sources["drl_verification"],
                strict=True,
            )
        ),
        "DRL source: the table (region, edition year, source key) each row compares with; "
        "'superseded' marks an edition replaced by a newer one; dates: the edition's "
        "validity, each study being compared with the edition in force on its date.",
        "typical (median) in parentheses: the median of a sample below the ICRP 135 "
        "minimum (insufficient sample), shown but not compared.",
        "n: values (one per CT or fluoroscopy study, per radiography projection, per "
        "mammography view); patients: the studies they come from, which the minimum "
        "sample counts (ICRP 135).",
        f"{no_age_header}: values of unknown patient age, {policy} "
        f"(KERMA_DRL_UNKNOWN_AGE={settings.drl_unknown_age}); children are compared "
        "only with paediatric DRLs.",
        *(f"[{number}] {escape(note)}" for note, number in notes.items()),
    ]
    table = Table(
        title=f"DRL comparison — set {chosen}; typical value = room median (ICRP 135), "
        f"minimum sample {settings.drl_min_sample} (mammography "
        f"{settings.drl_min_sample_mammography})",
        title_justify="left",
        caption="\n".join(caption_lines),
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    # column: (header, wraps at spaces, right-justified)
    layout: dict[str, tuple[str, bool, bool]] = {
        "exam": ("exam", True, False),
        "room": ("room", False, False),
        "what": ("quantity", True, False),
        "n": ("n", False, True),
        "n_studies": ("patients", False, True),
        "n_unknown_age": (no_age_header.replace(" (", "\n("), False, True),
        "typical_value": ("typical\n(median)", False, True),
        "drl_value": ("DRL", False, True),
        "drl_cited": ("DRL source", True, False),
        "status": ("status", True, False),
    }
    rows: list[tuple[list[str], bool]] = []
    records = shown[list(layout)].to_dict("records")
    for index, record in enumerate(records):
        cells = [_fmt(record[c]) for c in layout]
        if index and records[index - 1]["exam"] == record["exam"]:
            cells[0] = ""  # the exam is printed once per section
        style = STATUS_STYLES.get(str(record["status"]))
        if style:
            cells[-1] = f"[{style}]{cells[-1]}[/]"
        last_of_exam = index + 1 == len(records) or records[index + 1]["exam"] != record["exam"]
        rows.append((cells, last_of_exam))
    console = make_console()
    widths = _column_widths(
        [header for header, _, _ in layout.values()],
        [wraps for _, wraps, _ in layout.values()],
        [cells for cells, _ in rows],
        # no outer edge (show_edge, pad_edge off): a line and 2 spaces between columns
        console.width - 3 * (len(layout) - 1),
        list(layout),
        maximum={"exam": 32, "room": 24, "status": 34},
        minimum={"status": len(STATUS_INSUFFICIENT)},  # one line
        hyphenated=frozenset({"exam"}),
    )
    for index, (header, _, right) in enumerate(layout.values()):
        table.add_column(
            header,
            overflow="fold",
            width=widths[index],
            justify="right" if right else "left",
        )
    for cells, last_of_exam in rows:
        # Rich breaks lines only at spaces: break exam names after a hyphen too
        exam_lines = textwrap.wrap(Text.from_markup(cells[0]).plain, widths[0])
        cells[0] = escape("\n".join(exam_lines))
        table.add_row(*cells, end_section=last_of_exam)
    console.print(table)


def _column_widths(
    headers: list[str],
    wraps: list[bool],
    rows: list[list[str]],
    available: int,
    names: list[str],
    *,
    maximum: dict[str, int] | None = None,
    minimum: dict[str, int] | None = None,
    hyphenated: frozenset[str] = frozenset(),
) -> list[int]:
    """Return column widths (characters) whose sum fits ``available`` without splitting words.

    ``available`` is the console width less borders and padding. Every column starts at
    its widest cell or header (at most ``maximum[name]``); while the total exceeds
    ``available``, the wrapping column with the most room above its floor gives one
    character. The floor is the column's longest word (in ``hyphenated`` columns, the
    longest part after splitting at hyphens too), or ``minimum[name]`` when larger;
    unwrapped columns keep their width. When even the floors do not fit, the largest
    floors are lowered until they do, so only the longest words (regular expressions,
    long identifiers) are folded.
    """
    maximum = maximum or {}
    minimum = minimum or {}

    def cell_len(text: str) -> int:
        return max((Text.from_markup(line).cell_len for line in text.split("\n")), default=0)

    def word_len(text: str, hyphens: bool = False) -> int:
        plain = Text.from_markup(text).plain
        words = re.split(r"\s+|(?<=\w-)(?=\w)" if hyphens else r"\s+", plain)
        return max((len(word) for word in words), default=0)

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in headers]
    widths, floors = [], []
    for name, header, wrap, cells in zip(names, headers, wraps, columns, strict=True):
        natural = max([cell_len(header), *(cell_len(c) for c in cells)])
        widths.append(min(natural, maximum.get(name, natural)))
        hyphens = name in hyphenated
        words = max(
            [word_len(header), *(word_len(c, hyphens) for c in cells), minimum.get(name, 0)]
        )
        floors.append(min(widths[-1], words) if wrap else widths[-1])
    while sum(floors) > max(available, len(floors)):  # fold the longest words only
        floors[floors.index(max(floors))] -= 1
    while sum(widths) > available:
        slack = [w - f for w, f in zip(widths, floors, strict=True)]
        widest = max(range(len(widths)), key=lambda i: (slack[i], widths[i]))
        widths[widest] -= 1
    return widths


def _cite(region: Any, year: Any, source_ref: Any, grade: Any = None) -> str:
    """Return a short citation: region, year, first source key (SOURCES.md), grade."""
    if region is None or (isinstance(region, float) and pd.isna(region)):
        return ""
    key = str(source_ref).split(";")[0] if isinstance(source_ref, str) else ""
    year_text = "" if year is None or pd.isna(year) else f" {int(year)}"
    grade_text = f" ({grade})" if isinstance(grade, str) and grade else ""
    return f"{region}{year_text} {key}{grade_text}".strip()


def _room_label(device_name: Any) -> str:
    """Return the room label: the device's display name (unique, ``kerma devices``)."""
    return str(device_name)


def _edition(
    region: Any,
    year: Any,
    source_ref: Any,
    status: Any,
    valid_from: Any = None,
    valid_to: Any = None,
) -> str:
    """Return which DRL table and edition a row compares with, e.g. ``DE 2010 BFS2010
    (superseded, 2010-07-28–2016-07-14)``; ``""`` for a row without DRL.

    The validity period is the edition's ``valid_from``/``valid_to`` (the studies it
    was compared with lie in it; #16).
    """
    cited = _cite(region, year, source_ref)
    if not cited:
        return cited
    qualifiers = []
    if isinstance(status, str) and status and status != "current":
        qualifiers.append(status)
    start = pd.Timestamp(valid_from).date().isoformat() if _is_date(valid_from) else ""
    end = pd.Timestamp(valid_to).date().isoformat() if _is_date(valid_to) else ""
    if start or end:
        qualifiers.append(f"{start or '…'}–{end or '…'}")
    return f"{cited} ({', '.join(qualifiers)})" if qualifiers else cited


def _is_date(value: Any) -> bool:
    """Return whether ``value`` is a date (not None, NaN or NaT)."""
    return (
        value is not None
        and not (isinstance(value, float) and math.isnan(value))
        and (pd.notna(value))
    )


def _int_text(value: Any) -> str:
    """Return a year as text, ``""`` when missing."""
    return "" if value is None or pd.isna(value) else str(int(value))


# ----------------------------------------------------------------------------- stats

#: Numeric sample columns ``kerma stats -q`` accepts besides ``SAMPLE_QUANTITIES``.
EXTRA_QUANTITIES: tuple[str, ...] = ("kvp_kv", "compression_thickness_mm", "ssde_size_mm")


def _check_choice(
    allowed: tuple[str, ...], what: str, *, many: bool = False
) -> Callable[[str | None], str | None]:
    """Return an option callback refusing values outside ``allowed`` (comma lists if ``many``)."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        given = [v.strip() for v in value.split(",")] if many else [value]
        wrong = [v for v in given if v not in allowed]
        if wrong or (many and not any(given)):
            raise typer.BadParameter(
                f"{', '.join(repr(w) for w in wrong) or repr(value)} is not "
                f"{'a ' + what if len(wrong) < 2 else what + 's'}; use "
                f"{'a comma-separated list of ' if many else 'one of '}"
                f"{', '.join(allowed)}."
            )
        return value

    return check


def _no_values_reason(quantity: str) -> str:
    """Return why ``kerma stats`` has no row for ``quantity`` and what to do."""
    if quantity == "ssde_mgy":
        return (
            "ssde_mgy: no CT study in the selection has a patient size, so there is no "
            "SSDE (AAPM 204/220). SSDE needs the water-equivalent diameter in the RDSR "
            "(TID 10013), the patient's AP and lateral dimensions, or the study's CT axial "
            "images or localizers imported into Kerma (`kerma import <image folder>`); "
            "see docs/analysis.md §6."
        )
    if quantity == "effective_dose_msv":
        return f"effective_dose_msv: no CT study in the selection ({NO_COEFFICIENT_NOTE})."
    return (
        f"{quantity}: no value in the selected studies (check --modality, --exam, "
        "--from/--to and the other filters)."
    )


def stats(
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Comma-separated grouping: " + ", ".join(GROUPINGS) + ".",
            callback=_check_choice(
                (*GROUPINGS, "device_id", "sample_level", "ssde_size_source"),
                "grouping",
                many=True,
            ),
        ),
    ] = "standard_exam,device_name",
    period: Annotated[
        str,
        typer.Option(
            "--period",
            help="Period of the 'period' column: month, quarter, year, week.",
            callback=_check_choice(tuple(PERIODS), "period"),
        ),
    ] = "month",
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    family: FamilyOpt = None,
    device: DeviceOpt = None,
    site: SiteOpt = None,
    exam: ExamOpt = None,
    age: AgeOpt = None,
    weight: WeightOpt = None,
    sex: SexOpt = None,
    quantity: Annotated[
        str | None,
        typer.Option(
            "--quantity",
            "-q",
            help="Comma-separated quantity columns: " + ", ".join(SAMPLE_QUANTITIES) + ".",
            callback=_check_choice((*SAMPLE_QUANTITIES, *EXTRA_QUANTITIES), "quantity", many=True),
        ),
    ] = None,
    use_rules: RulesOpt = True,
    out: OutOpt = None,
    units: UnitsOpt = "canonical",
) -> None:
    """Print n, mean, median, p25/p75/p95 per group of each dose quantity.

    Statistics are computed in canonical units (``--out`` writes them so); the table
    shows KAP in Gy·cm² and Ka,r in mGy.
    """
    settings = get_settings()
    flt = build_filter(
        date_from=date_from,
        date_to=date_to,
        device=device,
        age=age,
        weight=weight,
        sex=sex,
        site=site,
    )
    groups = [g.strip() for g in by.split(",") if g.strip()]
    wanted = [q.strip() for q in quantity.split(",")] if quantity else None
    registry = _registry(settings)
    try:
        check_sites(registry, site)
        _remap(registry, use_rules)
        try:
            outcome = registry.statistics(
                flt,
                by=groups,
                period=period,
                families=_families(family),
                exam=exam,
                quantities=wanted,
            )
        except NotFoundError as exc:
            raise _bad_selection(exc) from exc
    finally:
        registry.close()
    result = outcome.table
    console = make_console()
    if outcome.n_samples == 0:
        console.print("No studies match the filters.")
    elif result.empty and wanted:
        console.print("No statistics: no quantity asked for has a value in the selection.")
    else:
        print_frame(
            display_frame(result, rename=False),
            "Dose statistics (linear percentiles; non-patient studies excluded)",
            {g: g for g in groups}
            | {
                "quantity": "quantity",
                "unit": "unit",
                "n": "n",
                "mean": "mean",
                "median": "median",
                "p25": "p25",
                "p75": "p75",
                "p95": "p95",
            },
        )
    for name in wanted or []:
        if outcome.n_samples == 0 or name in set(result["quantity"]):
            continue
        console.print(f"no statistics for {escape(_no_values_reason(name))}")
    shows_effective_dose = wanted is None or "effective_dose_msv" in wanted
    if shows_effective_dose and outcome.families - {"CT"}:
        console.print(f"effective dose: CT only ({NO_COEFFICIENT_NOTE})")
    _write(result, out, units)


# ------------------------------------------------------------------------ cumulative


def cumulative(
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, help="Window in days, 1 or more (default: setting, 365)."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Last day of the window, YYYY-MM-DD (default: latest study).",
            callback=parse_date_option,
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Rows to print.")] = 20,
    use_rules: RulesOpt = True,
    out: OutOpt = None,
    units: UnitsOpt = "canonical",
) -> None:
    """Print each patient's cumulative CT and fluoroscopy dose over a rolling window."""
    settings = get_settings()
    days = window or settings.cumulative_window_days
    registry = _registry(settings)
    try:
        _remap(registry, use_rules)
        result = registry.cumulative(window_days=days, as_of=as_of)
    finally:
        registry.close()
    shown = display_frame(result.head(top), rename=False).assign(
        patient_pseudonym=lambda f: f["patient_pseudonym"].map(display_pseudonym)
    )
    print_frame(
        shown,
        f"Cumulative dose per patient over {days} days (effective dose: k × DLP, "
        "population-level estimate)",
        {
            "patient_pseudonym": "patient",
            "window_end": "window end",
            "number_of_studies": "studies",
            "number_of_ct_exams": "CT exams",
        }
        | {
            name: QUANTITIES[name].display_label
            for name in (
                "ct_dlp_total_mgycm",
                "ct_effective_dose_msv",
                "fluoro_studies_dose_rp_total_gy",
                "fluoro_studies_dap_total_gym2",
            )
        },
    )
    if result.empty:
        end = as_of or "the latest study's date"
        make_console().print(
            f"No patient has CT or fluoroscopy dose in the {days} days up to {end}: give "
            "another end with --as-of YYYY-MM-DD or a longer --window (the window ends at "
            "the latest study of any modality by default).",
            soft_wrap=True,
        )
    _write(result, out, units)


def register(app: typer.Typer) -> None:
    """Add ``exams``, ``drl``, ``stats`` and ``cumulative`` to the ``kerma`` command."""
    app.command("exams")(exams)
    app.add_typer(drl_app, name="drl")
    app.command("stats")(stats)
    app.command("cumulative")(cumulative)

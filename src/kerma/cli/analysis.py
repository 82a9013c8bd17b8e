"""``kerma exams``, ``kerma drl`` (and ``kerma drl sets``), ``kerma stats``, ``kerma cumulative``.

Thin wrappers around :mod:`kerma.analysis` on the frames of :class:`kerma.Registry`;
the registry is chosen by ``KERMA_DATABASE_URL``. Every command prints a Rich table and
writes every row to a CSV file with ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kerma.analysis.cumulative import cumulative_dose
from kerma.analysis.drl import compare_by_period, compare_with_drls, local_drls
from kerma.analysis.effective_dose import NO_COEFFICIENT_NOTE, ct_effective_dose
from kerma.analysis.exams import (
    assign_study_exams,
    load_exam_rules,
    summarise_mapping,
    write_standard_exams,
)
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import list_drl_sets, load_drls, select_drls
from kerma.analysis.stats import add_period, dose_statistics, filter_samples
from kerma.config import Settings, get_settings

console = Console(width=160)

FromOpt = Annotated[str | None, typer.Option("--from", help="First study date, YYYY-MM-DD.")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last study date, YYYY-MM-DD.")]
FamilyOpt = Annotated[
    str | None, typer.Option("--modality", "-m", help="Modality family: CT, DX, MG or RF/XA.")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", "-d", help="Part of the device, station or model name.")
]
ExamOpt = Annotated[str | None, typer.Option("--exam", "-e", help="Standard exam name.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write all rows to this CSV.")]
RulesOpt = Annotated[
    bool,
    typer.Option(
        "--rules/--stored",
        help="Map standard exams with the rules now (default) or use the stored mapping.",
    ),
]

drl_app = typer.Typer(
    help="Compare rooms with diagnostic reference levels (ICRP 135); `kerma drl sets` "
    "lists the DRL sets.",
    no_args_is_help=False,
)


def _registry(settings: Settings) -> Any:
    """Return the registry of ``KERMA_DATABASE_URL``."""
    from kerma.api import Registry

    return Registry(settings=settings)


def _fmt(value: Any, digits: int = 3) -> str:
    """Format one cell: numbers to ``digits`` significant digits, missing as ``—``."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return escape(str(value))  # rule patterns such as 'sch[aä]del' are not Rich markup


def print_frame(frame: pd.DataFrame, title: str, columns: dict[str, str] | None = None) -> None:
    """Print ``frame`` as a Rich table with ``columns`` ({column: header})."""
    columns = columns or {c: c for c in frame.columns}
    table = Table(title=title, title_justify="left", show_lines=False)
    for header in columns.values():
        table.add_column(header, overflow="fold")
    for record in frame[list(columns)].to_dict("records"):
        table.add_row(*(_fmt(record[c]) for c in columns))
    console.print(table)


def _write(frame: pd.DataFrame, out: Path | None) -> None:
    """Write ``frame`` to CSV when ``out`` is given and say so."""
    if out is not None:
        frame.to_csv(out, index=False)
        console.print(f"wrote {len(frame)} rows to {out}")


def _samples(
    settings: Settings,
    *,
    date_from: str | None,
    date_to: str | None,
    use_rules: bool,
) -> pd.DataFrame:
    """Return the dose samples of the registry (non-patient studies excluded)."""
    registry = _registry(settings)
    try:
        events = registry.events(date_from=date_from, date_to=date_to)
        studies = registry.studies(date_from=date_from, date_to=date_to)
    finally:
        registry.close()
    rules = load_exam_rules(settings.exam_rules_path) if use_rules else None
    return build_dose_samples(events, studies=studies, rules=rules)


# ----------------------------------------------------------------------------- exams


def exams(
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Write the mapping to the stored studies (study table)."),
    ] = False,
    show_rules: Annotated[bool, typer.Option("--show-rules/--no-rules")] = True,
    out: OutOpt = None,
) -> None:
    """List the standard-exam rules, the exam → study counts and unmapped descriptions."""
    settings = get_settings()
    rules = load_exam_rules(settings.exam_rules_path)
    console.print(f"rules from: {', '.join(rules.sources)}")
    if show_rules:
        print_frame(rules.to_frame(), "Standard-exam rules (first match wins)")
    registry = _registry(settings)
    try:
        studies = registry.studies(include_non_patient=True)
        events = registry.events(include_non_patient=True)
        mapped = assign_study_exams(studies, events, rules)
        mappings, unmapped = summarise_mapping(studies, mapped)
        print_frame(mappings, "Standard exams", {"standard_exam": "exam", "n_studies": "studies"})
        print_frame(
            unmapped,
            "Unmapped study descriptions",
            {"modality": "modality", "study_description": "description", "n_studies": "studies"},
        )
        if apply:
            changed = write_standard_exams(registry, mapped)
            console.print(f"applied: {changed} studies updated")
    finally:
        registry.close()
    _write(mapped, out)


# ------------------------------------------------------------------------------- drl


@drl_app.command("sets")
def drl_sets(out: OutOpt = None) -> None:
    """List the DRL sets Kerma knows (packaged and site tables)."""
    settings = get_settings()
    sets = list_drl_sets(load_drls(extra_paths=settings.drl_extra_paths))
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
    exam: ExamOpt = None,
    local: Annotated[bool, typer.Option("--local", help="Also print local DRLs.")] = False,
    periods: Annotated[
        bool,
        typer.Option("--periods", help="Also flag rooms above the DRL in consecutive periods."),
    ] = False,
    use_rules: RulesOpt = True,
    out: OutOpt = None,
) -> None:
    """Compare each room's typical value (median) with the national DRL (ICRP 135)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = get_settings()
    chosen = drl_set or settings.drl_set
    drls = select_drls(load_drls(extra_paths=settings.drl_extra_paths), chosen)
    samples = _samples(settings, date_from=date_from, date_to=date_to, use_rules=use_rules)
    samples = filter_samples(
        samples, modality_family=family, device=_device_ids(samples, device), standard_exam=exam
    )
    result = compare_with_drls(
        samples,
        drls,
        min_sample=settings.drl_min_sample,
        min_sample_mammography=settings.drl_min_sample_mammography,
    )
    shown = result.assign(
        exam=result["standard_exam"]
        + result["clinical_indication"].map(lambda s: f" ({s})" if s else "")
        + result["band_label"].map(lambda s: f" [{s}]" if s else "")
        + result["view"].map(lambda s: f" {s}" if s else ""),
        drl_cited=[
            _cite(region, year, ref)
            for region, year, ref in zip(
                result["drl_region"], result["drl_year"], result["source_ref"], strict=True
            )
        ],
        what=[
            f"{QUANTITY_LABELS.get(q, q)} ({u})"
            for q, u in zip(result["quantity"], result["unit"], strict=True)
        ],
    )
    print_frame(
        shown,
        f"DRL comparison — set {chosen}; typical value = room median (ICRP 135), "
        f"minimum sample {settings.drl_min_sample} (mammography "
        f"{settings.drl_min_sample_mammography})",
        {
            "exam": "exam",
            "device_name": "room",
            "what": "quantity",
            "n": "n",
            "typical_value": "typical (median)",
            "drl_value": "DRL",
            "status": "status",
            "drl_cited": "DRL source",
            "drl_verification": "grade",
        },
    )
    if local:
        print_frame(
            local_drls(
                samples,
                min_sample=settings.drl_min_sample,
                min_sample_mammography=settings.drl_min_sample_mammography,
            ),
            "Local DRLs: 75th percentile of room medians (ICRP 135)",
        )
    if periods:
        _, summary = compare_by_period(
            samples,
            drls,
            period=settings.drl_period,
            consecutive=settings.drl_consecutive_periods,
            min_sample=settings.drl_min_sample,
            min_sample_mammography=settings.drl_min_sample_mammography,
        )
        if not summary.empty:
            flagged = summary[summary["periods_above"] > 0]
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
    _write(result, out)


#: Short names of DRL quantities for tables.
QUANTITY_LABELS = {
    "dlp_mgycm": "DLP",
    "ctdivol_mgy": "CTDIvol",
    "kap_gycm2": "KAP",
    "agd_mgy": "AGD",
    "ka_r_mgy": "Ka,r",
}


def _cite(region: Any, year: Any, source_ref: Any) -> str:
    """Return a short citation: region, year and the first source key (SOURCES.md)."""
    if region is None or (isinstance(region, float) and pd.isna(region)):
        return ""
    key = str(source_ref).split(";")[0] if isinstance(source_ref, str) else ""
    year_text = "" if year is None or pd.isna(year) else f" {int(year)}"
    return f"{region}{year_text} {key}".strip()


def _device_ids(samples: pd.DataFrame, device: str | None) -> list[str] | None:
    """Return the device ids whose name contains ``device`` (case-insensitive)."""
    if device is None:
        return None
    names = samples["device_name"].astype(str).str.contains(device, case=False, regex=False)
    return [str(d) for d in samples.loc[names, "device_id"].unique()] or ["<none>"]


# ----------------------------------------------------------------------------- stats


def _band(text: str | None) -> tuple[float | None, float | None] | None:
    """Parse a band ``"MIN-MAX"`` (either side may be empty) into numbers."""
    if text is None:
        return None
    low, _, high = text.partition("-")
    return (float(low) if low.strip() else None, float(high) if high.strip() else None)


def stats(
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Comma-separated grouping: standard_exam, device_name, period, "
            "patient_sex, view ...",
        ),
    ] = "standard_exam,device_name",
    period: Annotated[
        str, typer.Option("--period", help="Period of the 'period' column: month, quarter, year.")
    ] = "month",
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    family: FamilyOpt = None,
    device: DeviceOpt = None,
    exam: ExamOpt = None,
    age: Annotated[
        str | None, typer.Option("--age", help="Age band MIN-MAX (years, max excluded).")
    ] = None,
    weight: Annotated[
        str | None, typer.Option("--weight", help="Weight band MIN-MAX (kg).")
    ] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="M, F or O.")] = None,
    quantity: Annotated[
        str | None, typer.Option("--quantity", "-q", help="Comma-separated quantity columns.")
    ] = None,
    use_rules: RulesOpt = True,
    out: OutOpt = None,
) -> None:
    """Print n, mean, median, p25/p75/p95 per group of each dose quantity."""
    settings = get_settings()
    samples = _samples(settings, date_from=date_from, date_to=date_to, use_rules=use_rules)
    samples = ct_effective_dose(samples)
    samples = filter_samples(
        samples,
        modality_family=family,
        device=_device_ids(samples, device),
        standard_exam=exam,
        age_years=_band(age),
        weight_kg=_band(weight),
        sex=sex,
    )
    groups = [g.strip() for g in by.split(",") if g.strip()]
    if "period" in groups:
        samples = add_period(samples, period)
    quantities = [q.strip() for q in quantity.split(",")] if quantity else None
    result = dose_statistics(samples, groups, quantities)
    print_frame(
        result,
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
    if samples["modality_family"].ne("CT").any():
        console.print(f"effective dose: CT only ({NO_COEFFICIENT_NOTE})")
    _write(result, out)


# ------------------------------------------------------------------------ cumulative


def cumulative(
    window: Annotated[
        int | None, typer.Option("--window", help="Window in days (default: setting, 365).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Last day of the window (default: latest study).")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Rows to print.")] = 20,
    use_rules: RulesOpt = True,
    out: OutOpt = None,
) -> None:
    """Print each patient's cumulative CT and fluoroscopy dose over a rolling window."""
    settings = get_settings()
    days = window or settings.cumulative_window_days
    samples = ct_effective_dose(
        _samples(settings, date_from=None, date_to=as_of, use_rules=use_rules)
    )
    result = cumulative_dose(samples, window_days=days, as_of=as_of)
    shown = result.head(top).assign(
        patient_pseudonym=lambda f: f["patient_pseudonym"].astype(str).str[:12] + "…"
    )
    print_frame(
        shown,
        f"Cumulative dose per patient over {days} days (effective dose: k × DLP, "
        "population-level estimate)",
        {
            "patient_pseudonym": "patient (pseudonym)",
            "window_end": "window end",
            "number_of_studies": "studies",
            "number_of_ct_exams": "CT exams",
            "ct_dlp_total_mgycm": "DLP (mGy·cm)",
            "ct_effective_dose_msv": "E (mSv)",
            "fluoro_ka_r_total_mgy": "Ka,r (mGy)",
            "fluoro_kap_total_gycm2": "KAP (Gy·cm²)",
        },
    )
    _write(result, out)


def register(app: typer.Typer) -> None:
    """Add ``exams``, ``drl``, ``stats`` and ``cumulative`` to the ``kerma`` command."""
    app.command("exams")(exams)
    app.add_typer(drl_app, name="drl")
    app.command("stats")(stats)
    app.command("cumulative")(cumulative)

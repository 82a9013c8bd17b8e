"""``kerma export``: the export command group (CSV, XLSX, survey, Parquet, FHIR, de-identified).

``csv``, ``xlsx``, ``survey`` and ``parquet`` are defined here; each is a thin call
into :mod:`kerma.export` (which reads through :mod:`kerma.services`). Heavy imports
(pandas, XlsxWriter, pyarrow) happen inside the commands, so ``kerma --version`` and
``kerma export --help`` stay cheap. The modules of :data:`EXPORT_MODULES` add their
subcommands to :data:`export_app` (``kerma.cli.export_fhir``: FHIR and the
de-identified research export).

May import ``kerma.cli``, ``kerma.services``, ``kerma.export`` and the plain layers.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from kerma.cli.main import RICH_MARKUP_MODE
from kerma.cli.registry import (
    AgeOpt,
    DescriptionOpt,
    DeviceOpt,
    DoseOpt,
    FromOpt,
    ModalityOpt,
    NonPatientOpt,
    ProtocolOpt,
    SexOpt,
    SiteOpt,
    StudyExamOpt,
    ToOpt,
    WeightOpt,
    build_filter,
    check_sites,
    open_registry,
)
from kerma.errors import KermaError, OutputPathError

#: The ``kerma export`` group; subcommands are added by :func:`register`.
export_app = typer.Typer(
    name="export",
    help="Export dose data: CSV, XLSX, national DRL surveys, Parquet, FHIR, de-identified.",
    no_args_is_help=True,
    rich_markup_mode=RICH_MARKUP_MODE,
)

#: Modules that add more subcommands to :data:`export_app`: each has
#: ``register_export(group: typer.Typer) -> None`` (``kerma.cli.export_fhir`` adds
#: ``fhir`` and ``deid``). A module that does not exist is skipped.
EXPORT_MODULES: tuple[str, ...] = ("kerma.cli.export_fhir",)

_extended: list[bool] = []


def register(app: typer.Typer) -> None:
    """Add the ``export`` group, with the subcommands of :data:`EXPORT_MODULES`, to ``app``."""
    import importlib
    import importlib.util

    if not _extended:
        _extended.append(True)
        for name in EXPORT_MODULES:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name).register_export(export_app)
    app.add_typer(export_app, name="export")


@export_app.callback()
def _export() -> None:
    """Export dose data: CSV, XLSX, national DRL surveys, Parquet, FHIR, de-identified."""


#: What to do after an error number of writing an export (:func:`writing_to`).
_ADVICE: dict[int, str] = {
    errno.ENOENT: "give --out a path in a folder that exists and can hold files",
    errno.EACCES: "give --out a path in a folder you can write to",
    errno.EPERM: "give --out a path in a folder you can write to",
    errno.EROFS: "give --out a path on a disk that is not read-only",
    errno.ENOSPC: "free some space, or give --out a path on another disk",
    errno.EDQUOT: "free some space, or give --out a path on another disk",
    errno.EISDIR: "give --out a file name, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: give --out a path in a folder",
    errno.EEXIST: "a file of that name is in the way: give --out another path",
}


def _is_output(filename: object, out: Path) -> bool:
    """Return whether a failing file name is ``out``, inside it, one of its folders, or a
    file of its set (``export.csv`` writes ``export_summary.csv`` beside it)."""
    if not isinstance(filename, str | os.PathLike):
        return False
    path, target = Path(os.path.abspath(filename)), Path(os.path.abspath(out))
    return (
        path == target
        or target in path.parents
        or path in target.parents
        or (path.parent == target.parent and path.name.startswith(target.stem))
    )


@contextmanager
def writing_to(out: Path, *, folder: bool = False) -> Iterator[None]:
    """Turn a failure to write the export at ``out`` into a one-line error.

    Before the work, a file export whose folder does not exist is refused (a folder
    export, ``folder=True``, creates its missing folders). During it, an ``OSError``
    on ``out`` (or a file in or beside it, or one of its folders) becomes
    :class:`~kerma.errors.OutputPathError`, which ``kerma.cli.main`` prints as
    ``error: Unable to write PATH: REASON; WHAT TO DO`` (exit 2); other errors pass.

    Parameters
    ----------
    out : pathlib.Path
        The ``--out`` path: a file, a set's name (CSV), or a folder (``folder=True``).
    folder : bool, optional
        ``out`` is a folder the export creates.

    Raises
    ------
    kerma.errors.OutputPathError
        Naming the path that could not be written and what to do.
    """
    parent = Path(os.path.abspath(out)).parent
    if not folder and parent.exists() and not parent.is_dir():
        raise OutputPathError(
            f"Unable to write {out}: {parent} is a file, not a folder; give --out a path "
            "in a folder."
        )
    if not folder and not parent.is_dir():
        raise OutputPathError(
            f"Unable to write {out}: the folder {parent} does not exist; create it, or "
            "give --out a path in a folder that exists."
        )
    try:
        yield
    except KermaError:
        raise
    except OSError as exc:
        if not _is_output(exc.filename, out):
            raise
        if folder and Path(out).is_file():
            message = (
                f"Unable to write {out}: it is a file, and this export is a folder; give "
                "--out the name of a folder (new or existing)."
            )
        else:
            advice = _ADVICE.get(exc.errno or 0, "give --out another path")
            message = f"Unable to write {exc.filename}: {exc.strerror or exc}; {advice}."
        raise OutputPathError(message) from exc


def _check_sheet_units(value: str) -> str:
    """Return ``--units`` when it is display or canonical."""
    if value not in ("display", "canonical"):
        raise typer.BadParameter(f"{value!r} is not display or canonical.")
    return value


SheetUnitsOpt = Annotated[
    str,
    typer.Option(
        "--units",
        help="display (KAP in Gy·cm², Ka,r in mGy; default) or canonical (as stored: "
        "Gy·m², Gy). The unit is in every column header.",
        callback=_check_sheet_units,
    ),
]


def _progress(total_label: str, unit: str = "studies") -> Any:
    """Return a Rich progress bar on standard error counting ``unit``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from kerma.cli.console import make_console

    return Progress(
        f"[bold]{total_label}",
        BarColumn(),
        MofNCompleteColumn(),
        unit,
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        transient=False,
    )


def _spreadsheet(kind: str, out: Path, flt: Any, units: str) -> None:
    """Run one CSV or XLSX export with a progress bar and say what was written."""
    from rich.markup import escape

    from kerma.cli.console import make_console
    from kerma.export import tabular

    with writing_to(out):
        files, n = _write_spreadsheet(kind, out, flt, units, tabular)
    console = make_console()
    if n == 0 or (n is None and not any(_rows_beyond_header(p) for p in files)):
        console.print("No study matches the filter (the files hold headers only).")
    if n is not None:
        console.print(f"{n} studies written to {escape(str(out))}")
    else:
        for path in files:
            console.print(f"written {escape(str(path))}")


def _write_spreadsheet(
    kind: str, out: Path, flt: Any, units: str, tabular: Any
) -> tuple[list[Path], int | None]:
    """Write the CSV set or XLSX workbook; return the files and the study count (XLSX)."""
    registry = open_registry()
    try:
        check_sites(registry, list(flt.site_names))
        with _progress(f"kerma export {kind}") as bar:
            task = bar.add_task(kind, total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if kind == "xlsx":
                n = tabular.write_xlsx(registry, out, flt=flt, units=units, progress=progress)  # type: ignore[arg-type]
                files = [out]
            else:
                paths = tabular.write_csv(registry, out, flt=flt, units=units, progress=progress)  # type: ignore[arg-type]
                files = list(paths.values())
                n = None
    finally:
        registry.close()
    return files, n


def _rows_beyond_header(path: Path) -> bool:
    """Return whether a CSV file has a row after its header."""
    with path.open(encoding="utf-8-sig") as stream:
        return sum(1 for _ in zip(range(2), stream, strict=False)) > 1


OutFileOpt = Annotated[Path, typer.Option("--out", "-o", help="File to write.")]


@export_app.command("xlsx")
def xlsx(
    out: OutFileOpt,
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
    units: SheetUnitsOpt = "display",
    site: SiteOpt = None,
) -> None:
    """Write an XLSX workbook: a summary, and per modality a study-per-row sheet (events
    to the right: E1 Protocol, E1 CTDIvol (mGy) …) and an event-per-row sheet.

    Written in constant memory: any number of studies.
    """
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
        site=site,
    )
    _spreadsheet("xlsx", out, flt, units)


@export_app.command("csv")
def csv(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Name of the set: export.csv writes export_summary.csv, "
            "export_CT_studies.csv, export_CT_events.csv …",
        ),
    ],
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
    units: SheetUnitsOpt = "display",
    site: SiteOpt = None,
) -> None:
    """Write CSV files: a summary, and per modality a study-per-row and an event-per-row file."""
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
        site=site,
    )
    _spreadsheet("csv", out, flt, units)


#: Survey forms of ``kerma export survey --form``.
SURVEY_FORMS: tuple[str, ...] = ("uk-ct", "generic")


def _check_form(value: str) -> str:
    """Return ``--form`` when it is a known survey form."""
    if value not in SURVEY_FORMS:
        raise typer.BadParameter(f"{value!r} is not a survey form; use {', '.join(SURVEY_FORMS)}.")
    return value


def _check_dap_unit(value: str) -> str:
    """Return ``--dap-unit`` when it is a KAP unit a survey may ask for."""
    from kerma.export.survey import DAP_UNITS

    if value not in DAP_UNITS:
        raise typer.BadParameter(
            f"{value!r} is not a KAP unit; use one of {', '.join(DAP_UNITS)} (UCUM)."
        )
    return value


@export_app.command("survey")
def survey(
    out: OutFileOpt,
    form: Annotated[
        str,
        typer.Option(
            "--form",
            help="uk-ct: the UK national CT dose survey's fields; generic: every modality, "
            "n/median/mean of each DRL quantity.",
            callback=_check_form,
        ),
    ] = "generic",
    dap_unit: Annotated[
        str,
        typer.Option(
            "--dap-unit",
            help="KAP unit of the generic form (UCUM): Gy.cm2, mGy.cm2, cGy.cm2, dGy.cm2, uGy.m2.",
            callback=_check_dap_unit,
        ),
    ] = "Gy.cm2",
    modality: ModalityOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    device: DeviceOpt = None,
    exam: StudyExamOpt = None,
    age: AgeOpt = None,
    weight: WeightOpt = None,
    sex: SexOpt = None,
    site: SiteOpt = None,
) -> None:
    """National DRL survey: per standard exam and room, n, median and mean of each DRL
    quantity and the median patient weight (unit in every header)."""
    from rich.markup import escape

    from kerma.cli.console import make_console
    from kerma.export import survey as forms

    flt = build_filter(
        modality=modality,
        date_from=date_from,
        date_to=date_to,
        device=device,
        exam=exam,
        age=age,
        weight=weight,
        sex=sex,
        site=site,
    )
    with writing_to(out):
        registry = open_registry()
        try:
            check_sites(registry, site)
            if form == "uk-ct":
                n = forms.write_uk_ct_survey(registry, out, flt=flt)
            else:
                n = forms.write_generic_survey(registry, out, flt=flt, dap_unit=dap_unit)
        finally:
            registry.close()
    make_console().print(f"{n} exam and room rows written to {escape(str(out))}")


@export_app.command("parquet")
def parquet(
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder (created if missing).")],
    full: Annotated[
        bool, typer.Option("--full", help="Rewrite every month, not only the changed ones.")
    ] = False,
) -> None:
    """Parquet of every study and event, partitioned by month (study_month=YYYY-MM),
    for DuckDB, pandas or Spark; a second run rewrites only the months that changed."""
    from rich.markup import escape

    from kerma.cli.console import make_console
    from kerma.export.parquet import write_parquet

    with writing_to(out, folder=True):
        registry = open_registry()
        try:
            with _progress("kerma export parquet", "months") as bar:
                task = bar.add_task("parquet", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                result = write_parquet(registry, out, full=full, progress=progress)
        finally:
            registry.close()
    make_console().print(
        f"{escape(str(out))}: {len(result.months_written)} months written "
        f"({result.studies} studies, {result.events} events), {result.months_unchanged} "
        f"unchanged, {len(result.months_removed)} removed"
    )

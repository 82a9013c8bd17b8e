"""``kerma demo``: write synthetic dose reports and import them into a fresh demo registry.

A thin wrapper around :func:`kerma.demo.generator.iter_demo_studies` and
:class:`kerma.Registry`. The demo registry is separate from the user's: by default
``sqlite:///kerma-demo.db`` with its archive in ``./kerma-demo-archive``, both deleted
and recreated on every run; ``kerma.db`` is never touched.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shlex
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from kerma.cli.console import make_console
from kerma.errors import ConfigurationError
from kerma.units import QUANTITIES

#: Objects one import worker process takes at a time.
IMPORT_CHUNK = 25

#: Default demo registry, files and archive (relative to the working directory).
DEFAULT_DATABASE_URL = "sqlite:///kerma-demo.db"
DEFAULT_OUT_DIR = Path("kerma-demo-data")
DEFAULT_ARCHIVE_DIR = Path("kerma-demo-archive")

_MODALITY_NAMES = {"CT": "CT", "RF": "fluoroscopy", "DX": "radiography", "MG": "mammography"}


def demo(
    studies: Annotated[
        int, typer.Option("--studies", "-n", min=0, help="Number of studies to generate.")
    ] = 1000,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the generated DICOM files.")
    ] = DEFAULT_OUT_DIR,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 1,
    database: Annotated[
        str,
        typer.Option(
            "--database",
            help="Registry URL for the demo. The default SQLite file is deleted and "
            "recreated on each run; another existing SQLite file is refused.",
        ),
    ] = DEFAULT_DATABASE_URL,
    no_import: Annotated[
        bool, typer.Option("--no-import", help="Only write the files; do not import them.")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Processes that write and import (default: CPU count, max 4)."
        ),
    ] = min(4, os.cpu_count() or 1),
) -> None:
    """Generate synthetic CT, fluoroscopy, radiography and mammography dose reports; import them.

    The demo department has three CT rooms (Siemens, GE, Canon), a cardiac cath lab, a
    fluoroscopy room, a radiography room and a mammography unit, with log-normal dose
    distributions per protocol, a few QA phantom scans, and one CT room set up with
    higher doses. All names and IDs are synthetic. The default 1,000 studies give most
    rooms the ICRP 135 minimum sample of 20 per standard exam, so ``kerma drl`` on the
    demo registry compares rooms with the DRLs.
    """
    console = make_console()
    archive_dir = None if no_import else _fresh_registry(database)  # refuse before writing
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("DEMO-*.dcm"):  # only files an earlier demo run wrote
        old.unlink()
    paths: list[Path] = []
    by_modality: Counter[str] = Counter()
    n_qa = 0
    with _progress(console, "writing dose reports") as progress:
        task = progress.add_task("write", total=studies)
        for study in _write_studies(out, studies=studies, seed=seed, workers=workers):
            paths.append(study.path)
            by_modality[study.modality] += 1
            n_qa += study.is_qa
            progress.advance(task)
    parts = ", ".join(f"{n} {_MODALITY_NAMES.get(m, m)}" for m, n in sorted(by_modality.items()))
    console.print(
        f"Wrote {len(paths)} X-Ray Radiation Dose SRs to [bold]{out}[/bold] "
        f"({parts}; {n_qa} QA phantom studies), seed {seed}."
    )
    if archive_dir is None:
        return
    import_demo(paths, database=database, archive_dir=archive_dir, console=console, workers=workers)


def _write_studies(out: Path, *, studies: int, seed: int, workers: int) -> Iterator[Any]:
    """Yield the demo studies in order, written by ``workers`` processes."""
    from kerma.demo.generator import iter_demo_studies, write_demo_study

    if workers <= 1 or studies < 4 * IMPORT_CHUNK:
        yield from iter_demo_studies(out, studies=studies, seed=seed)
        return
    write = partial(write_demo_study, out, seed=seed, end_date=dt.date.today(), studies=studies)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(write, range(studies), chunksize=16)


def _import_chunk(database: str, archive_dir: Path, paths: list[Path]) -> list[Any]:
    """Import ``paths`` in a worker process; return their outcomes."""
    from kerma.api import Registry
    from kerma.config import get_settings

    settings = get_settings(database_url=database, archive_dir=archive_dir)
    outcomes: list[Any] = []
    with Registry(database, settings=settings) as registry:
        registry.import_paths(paths, progress=outcomes.append)
    return outcomes


def _import_parallel(
    registry: Any,
    paths: list[Path],
    *,
    database: str,
    archive_dir: Path,
    workers: int,
    advance: Any,
) -> Any:
    """Import ``paths`` with ``workers`` processes (one transaction per object each).

    The registry's schema and pseudonym key exist before the workers start, so every
    worker uses the same key. Returns the merged
    :class:`~kerma.ingest.pipeline.ImportSummary`.
    """
    from kerma.ingest.pipeline import ImportSummary

    registry.importer  # noqa: B018 (creates the archive and the pseudonym key once)
    summary = ImportSummary()
    chunks = [paths[i : i + IMPORT_CHUNK] for i in range(0, len(paths), IMPORT_CHUNK)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[list[Any]]] = {
            pool.submit(_import_chunk, database, archive_dir, chunk) for chunk in chunks
        }
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes = future.result()
                for outcome in outcomes:
                    summary.add(outcome)
                advance(len(outcomes))
    return summary


def import_demo(
    paths: list[Path], *, database: str, archive_dir: Path, console: Console, workers: int = 1
) -> None:
    """Import ``paths`` into the demo registry and print the counts and dose summary.

    Parameters
    ----------
    paths : list of pathlib.Path
        The generated files.
    database : str
        SQLAlchemy URL of the demo registry (emptied first by :func:`_fresh_registry`).
    archive_dir : pathlib.Path
        Archive folder of the demo registry.
    console : rich.console.Console
        Where to print.
    workers : int, optional
        Import processes (default 1: in this process). SQLite serialises the writes;
        decoding, the larger part of the work, runs in parallel.
    """
    from kerma.api import Registry
    from kerma.config import get_settings

    settings = get_settings(database_url=database, archive_dir=archive_dir)
    with Registry(database, settings=settings) as registry:
        with _progress(console, "importing") as progress:
            task = progress.add_task("import", total=len(paths))
            if workers > 1 and len(paths) >= 4 * IMPORT_CHUNK:
                result = _import_parallel(
                    registry,
                    paths,
                    database=database,
                    archive_dir=archive_dir,
                    workers=workers,
                    advance=lambda n: progress.advance(task, n),
                )
            else:
                result = registry.import_paths(paths, progress=lambda _o: progress.advance(task))
        _print_import(console, result)
        events = registry.events()
        studies = registry.studies()
        frame = registry.summary()
    _print_study_statistics(console, events, studies)
    _print_summary(console, frame)
    _print_next_steps(console, database, archive_dir)


def _print_next_steps(console: Console, database: str, archive_dir: Path) -> None:
    """Print where the demo registry is and the commands to explore it.

    Each command is printed on a line of its own and never wrapped (``soft_wrap``), so
    that a copy and paste of a narrow terminal still runs against the demo registry
    and not the default ``./kerma.db``.
    """
    console.print(
        f"Demo registry: [bold]{escape(database)}[/bold] (archive {escape(str(archive_dir))})."
        " Explore it with the commands below (QA phantom studies are left out of the"
        " statistics; add --include-non-patient), and compare the rooms with the EU DRLs"
        " (ICRP 135) with kerma drl:"
    )
    for command in (
        f"export KERMA_DATABASE_URL={shlex.quote(database)}"
        f" KERMA_ARCHIVE_DIR={shlex.quote(str(archive_dir))}",
        "kerma studies",
        "kerma drl",
    ):
        console.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)


def _fresh_registry(database: str) -> Path:
    """Delete the demo SQLite file and archive so the import starts empty; return the archive.

    Only the default demo database (or a SQLite file named ``kerma-demo*``) is deleted;
    another existing SQLite file is refused, and a server database is used as it is.

    Raises
    ------
    ConfigurationError
        When ``database`` is an existing SQLite file other than the demo default.
    """
    archive_dir = DEFAULT_ARCHIVE_DIR
    url = make_url(database)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        db_path = Path(url.database)
        if (
            db_path.exists()
            and database != DEFAULT_DATABASE_URL
            and not db_path.name.startswith("kerma-demo")
        ):
            raise ConfigurationError(
                f"Unable to run the demo into {database}: the file {db_path} exists and the "
                "demo needs a fresh registry. Give a new file name, or omit --database to use "
                f"{DEFAULT_DATABASE_URL}."
            )
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    if archive_dir.exists():
        shutil.rmtree(archive_dir)
    return archive_dir


def _progress(console: Console, label: str) -> Progress:
    """Return a transient Rich progress bar labelled ``label``."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _print_import(console: Console, result: Any) -> None:
    """Print the counts of an :class:`~kerma.ingest.pipeline.ImportSummary`."""
    table = Table(title="Import", show_header=True, header_style="bold")
    table.add_column("outcome")
    table.add_column("objects", justify="right")
    table.add_row("objects read", str(result.objects_read))
    for (kind, modality), n in sorted(result.imported.items()):
        table.add_row(f"imported {kind} {modality}", str(n))
    table.add_row("already present", str(result.already_present))
    table.add_row("rejected", str(result.rejected))
    console.print(table)
    for reason, n in result.rejections_by_reason.most_common(5):
        console.print(f"[yellow]rejected ({n}):[/yellow] {reason}")


def _fmt(value: Any) -> str:
    """Format a statistic to 3 significant figures (empty when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


#: Study-level DRL quantities shown by ``kerma demo``: (sample column, label).
STUDY_QUANTITIES: tuple[tuple[str, str], ...] = (
    ("ct_dlp_total_mgycm", "DLP (mGy·cm)"),
    ("ctdivol_mean_mgy", "CTDIvol (mGy)"),
    ("dap_total_gym2", "KAP (Gy·cm²)"),
    ("dap_gym2", "KAP (Gy·cm²)"),
    ("agd_mgy", "AGD (mGy)"),
)


def _print_study_statistics(console: Console, events: Any, studies: Any) -> None:
    """Print the DRL quantities per examination and room (patients only).

    Uses :func:`kerma.analysis.frames.build_dose_samples` (CT: per study; fluoroscopy:
    KAP per procedure; radiography: KAP per projection) and
    :func:`kerma.analysis.stats.dose_statistics`; one table per quantity.
    """
    from kerma.analysis.frames import build_dose_samples
    from kerma.analysis.stats import dose_statistics

    if events.empty:
        return
    samples = build_dose_samples(events, studies=studies)
    labels = dict(STUDY_QUANTITIES)
    stats = dose_statistics(
        samples,
        by=["modality_family", "study_description", "station_name"],
        quantities=[q for q in labels if q in samples.columns],
    )
    order = {q: i for i, q in enumerate(labels)}
    stats = stats.assign(_order=stats["quantity"].map(order)).sort_values(
        ["modality_family", "_order", "study_description", "station_name"]
    )
    for (family, quantity), group in stats.groupby(["modality_family", "quantity"], sort=False):
        per = "per projection" if quantity in {"dap_gym2", "agd_mgy"} else "per examination"
        factor = QUANTITIES[str(quantity)].factor  # canonical -> display unit
        table = Table(
            title=f"{family}: {labels[str(quantity)]} {per}",
            show_header=True,
            header_style="bold",
        )
        table.add_column("examination", overflow="fold")
        table.add_column("room")
        for header in ("n", "median", "p25", "p75"):
            table.add_column(header, justify="right")
        for row in group.itertuples(index=False):
            table.add_row(
                str(row.study_description),
                str(row.station_name),
                str(row.n),
                _fmt(row.median * factor),
                _fmt(row.p25 * factor),
                _fmt(row.p75 * factor),
            )
        console.print(table)


def _print_summary(console: Console, frame: Any) -> None:
    """Print :meth:`kerma.Registry.summary`: one table per device, a row per protocol."""
    if frame.empty:
        console.print("No irradiation events in the demo registry.")
        return
    console.print(
        "[bold]Dose per irradiation event[/bold] by room and acquisition protocol "
        "(patients only; as [bold]kerma summary[/bold]):"
    )
    for (modality, device), group in frame.groupby(["modality", "device_name"], sort=True):
        table = Table(title=f"{modality}: {device}", show_header=True, header_style="bold")
        table.add_column("protocol", overflow="fold")
        table.add_column("quantity")
        for header in ("studies", "events", "median", "25th pct", "75th pct"):
            table.add_column(header, justify="right")
        for row in group.itertuples(index=False):
            table.add_row(
                str(row.acquisition_protocol),
                QUANTITIES[row.quantity].display_label,
                str(row.number_of_studies),
                str(row.number_of_values),
                _fmt(row.median * QUANTITIES[row.quantity].factor),
                _fmt(row.p25 * QUANTITIES[row.quantity].factor),
                _fmt(row.p75 * QUANTITIES[row.quantity].factor),
            )
        console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command("demo")(demo)

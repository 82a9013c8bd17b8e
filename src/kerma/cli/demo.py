"""``kerma demo``: write synthetic dose reports and import them into a fresh demo registry.

A thin wrapper around :func:`kerma.demo.generator.write_demo_study` and
:class:`kerma.Registry`. The demo registry is separate from the user's: by default
``sqlite:///kerma-demo.db`` with its archive in ``./kerma-demo-archive``, both deleted
and recreated on every run; ``kerma.db`` is never touched.

How the work is shared: the studies are cut into chunks of :data:`CHUNK_STUDIES`; each
worker process (``--workers``) takes the next chunk, writes its files and imports them
through the registry's normal import path (archive, extraction, one transaction per
object) with the one :class:`kerma.Registry` it opened at start. Writing and importing
thus overlap, the processes stay busy until the last chunk (a PCI report costs about 25
times a chest radiograph, so small chunks handed out on demand balance the load), and
nothing is set up per chunk. SQLite serialises the short write transactions; reading and
extraction, the larger part, run in parallel. The tables printed at the end come from
one read of the registry's events and studies.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import multiprocessing
import os
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from kerma.cli.console import make_console
from kerma.errors import ConfigurationError
from kerma.units import QUANTITIES

if TYPE_CHECKING:
    from kerma.services.imports import ImportOutcome, ImportSummary
    from kerma.services.registry import Registry

#: Studies a worker process writes and imports at a time (see the module docstring).
CHUNK_STUDIES = 10

#: Default demo registry, files and archive (relative to the working directory).
DEFAULT_DATABASE_URL = "sqlite:///kerma-demo.db"
DEFAULT_OUT_DIR = Path("kerma-demo-data")
DEFAULT_ARCHIVE_DIR = Path("kerma-demo-archive")

_MODALITY_NAMES = {"CT": "CT", "RF": "fluoroscopy", "DX": "radiography", "MG": "mammography"}


def demo(
    studies: Annotated[
        int, typer.Option("--studies", "-n", min=1, help="Number of studies to generate.")
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
    higher doses. All names and IDs are synthetic. The default 1,000 studies give every
    room and exam that has an EU DRL the ICRP 135 minimum sample (20 patients; 50 for
    mammography), so ``kerma drl`` on the demo registry compares rooms with the DRLs.
    """
    console = make_console()
    archive_dir = None if no_import else _fresh_registry(database)  # refuse before writing
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("DEMO-*.dcm"):  # only files an earlier demo run wrote
        old.unlink()
    run = DemoRun(
        out=out,
        studies=studies,
        seed=seed,
        end_date=dt.date.today(),
        database=None if archive_dir is None else database,
        archive_dir=archive_dir,
    )
    if archive_dir is not None:
        _prepare_registry(database, archive_dir)
    result = run_demo(run, workers=workers, console=console)
    parts = ", ".join(
        f"{n} {_MODALITY_NAMES.get(m, m)}" for m, n in sorted(result.by_modality.items())
    )
    console.print(
        f"Wrote {result.n_written} X-Ray Radiation Dose SRs to [bold]{out}[/bold] "
        f"({parts}; {result.n_qa} QA phantom studies), seed {seed}."
    )
    if archive_dir is None or result.summary is None:
        return
    _print_import(console, result.summary)
    print_registry_tables(database, archive_dir, console)
    _print_next_steps(console, database, archive_dir)


@dataclass(frozen=True)
class DemoRun:
    """What one ``kerma demo`` run writes and where it imports (sent to each worker).

    ``database`` and ``archive_dir`` are ``None`` when the files are only written.
    """

    out: Path
    studies: int
    seed: int
    end_date: dt.date
    database: str | None
    archive_dir: Path | None


@dataclass(frozen=True)
class StudyDone:
    """One study written (and imported), as a worker reports it to the main process."""

    path: Path
    modality: str
    is_qa: bool
    outcome: ImportOutcome | None  # None when not imported


@dataclass
class DemoResult:
    """Counts of a demo run: files written by modality, QA studies, the import summary."""

    n_written: int
    by_modality: Counter[str]
    n_qa: int
    summary: ImportSummary | None  # None when not imported


class _Worker:
    """Writes and imports chunks of studies; one per process, set up once."""

    def __init__(self, run: DemoRun) -> None:
        from kerma.demo.generator import write_demo_study

        self.run = run
        self._write = write_demo_study
        self.registry: Registry | None = None
        if run.database is not None and run.archive_dir is not None:
            from kerma.config import get_settings
            from kerma.services.registry import Registry

            settings = get_settings(database_url=run.database, archive_dir=run.archive_dir)
            self.registry = Registry(run.database, settings=settings)

    def write_and_import(self, indices: Sequence[int]) -> list[StudyDone]:
        """Write studies ``indices``, import their files, and return what happened."""
        run = self.run
        written = [
            self._write(run.out, index, seed=run.seed, end_date=run.end_date, studies=run.studies)
            for index in indices
        ]
        outcomes: list[ImportOutcome] = []  # one per file, in the order given

        if self.registry is not None:
            self.registry.import_paths([s.path for s in written], progress=outcomes.append)
        found: list[ImportOutcome | None] = list(outcomes) or [None] * len(written)
        return [
            StudyDone(s.path, s.modality, s.is_qa, outcome)
            for s, outcome in zip(written, found, strict=True)
        ]

    def close(self) -> None:
        """Close the registry's database connections."""
        if self.registry is not None:
            self.registry.close()


#: The worker of this process (set by :func:`_start_worker` in each worker process).
_WORKER: _Worker | None = None


def _start_worker(run: DemoRun, log_levels: dict[str, int]) -> None:
    """Set up this worker process: logging as in the main process, one :class:`_Worker`."""
    global _WORKER
    logging.basicConfig(
        level=log_levels.get("", logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name, level in log_levels.items():
        logging.getLogger(name or None).setLevel(level)
    _WORKER = _Worker(run)


def _work(indices: Sequence[int]) -> list[StudyDone]:
    """Write and import ``indices`` in a worker process."""
    if _WORKER is None:  # pragma: no cover - the pool's initializer sets it
        raise RuntimeError("Unable to write demo studies: the worker process was not set up")
    return _WORKER.write_and_import(indices)


def _chunks(studies: int) -> list[range]:
    """Return the study indices cut into chunks of :data:`CHUNK_STUDIES`."""
    return [range(i, min(i + CHUNK_STUDIES, studies)) for i in range(0, studies, CHUNK_STUDIES)]


def _pool_context() -> multiprocessing.context.BaseContext:
    """Return the process start method: ``fork`` on Linux, else ``spawn``.

    ``fork`` starts a worker in milliseconds with every module already imported.
    :func:`iter_demo_run` starts all workers before the caller starts a thread (Rich's
    progress bar), because forking a process that runs threads can deadlock. macOS and
    Windows spawn fresh interpreters (their default).
    """
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def iter_demo_run(run: DemoRun, *, workers: int) -> Generator[StudyDone, None, None]:
    """Write (and import) the studies of ``run``; iterate over them as they are done.

    The worker processes start when this function is called, before it returns, so
    that the caller may start threads afterwards (see :func:`_pool_context`).

    Parameters
    ----------
    run : DemoRun
        What to write and where to import it. The registry must exist already
        (:func:`_prepare_registry`), so that every worker uses the same pseudonym key.
    workers : int
        Worker processes; 1 (or a run of fewer than two chunks) works in this process.

    Returns
    -------
    generator of StudyDone
        Each study, in the order the chunks finish. Closing the generator early cancels
        the chunks not started.

    Raises
    ------
    OSError
        When a file or the archive cannot be written (on iteration).
    """
    chunks = _chunks(run.studies)
    if workers <= 1 or len(chunks) < 2:
        return _iter_in_process(run, chunks)
    from kerma.demo.generator import write_demo_study  # noqa: F401 (idem)
    from kerma.services.registry import Registry  # noqa: F401 (imported once, inherited by forks)

    log_levels = {
        name: logging.getLogger(name or None).level for name in ("", "pydicom", "py.warnings")
    }
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)),
        mp_context=_pool_context(),
        initializer=_start_worker,
        initargs=(run, log_levels),
    )
    futures = [pool.submit(_work, chunk) for chunk in chunks]  # starts every worker now
    return _iter_pool(pool, futures)


def _iter_in_process(run: DemoRun, chunks: list[range]) -> Generator[StudyDone, None, None]:
    """Write (and import) ``chunks`` in this process."""
    worker = _Worker(run)
    try:
        for chunk in chunks:
            yield from worker.write_and_import(chunk)
    finally:
        worker.close()


def _iter_pool(
    pool: ProcessPoolExecutor, futures: list[Future[list[StudyDone]]]
) -> Generator[StudyDone, None, None]:
    """Yield the studies of ``futures`` as they finish; shut ``pool`` down at the end."""
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_demo(run: DemoRun, *, workers: int, console: Console) -> DemoResult:
    """Write (and import) the studies of ``run`` with a progress bar; return the counts.

    Raises
    ------
    OSError
        When a file or the archive cannot be written.
    """
    from kerma.services.imports import ImportSummary

    summary = ImportSummary() if run.database is not None else None
    by_modality: Counter[str] = Counter()
    n_qa = 0
    label = "writing dose reports" if summary is None else "writing and importing dose reports"
    done = iter_demo_run(run, workers=workers)  # before the progress bar's thread starts
    try:
        with _progress(console, label) as progress:
            task = progress.add_task("run", total=run.studies)
            for study in done:
                by_modality[study.modality] += 1
                n_qa += study.is_qa
                if summary is not None and study.outcome is not None:
                    summary.add(study.outcome)
                progress.advance(task)
    finally:
        done.close()
    return DemoResult(sum(by_modality.values()), by_modality, n_qa, summary)


def _prepare_registry(database: str, archive_dir: Path) -> None:
    """Create the demo registry's schema, archive and pseudonym key before workers start.

    Every worker then opens the same schema and reads the same key. The connections are
    closed before any worker process starts.
    """
    from kerma.config import get_settings
    from kerma.services.registry import Registry

    settings = get_settings(database_url=database, archive_dir=archive_dir)
    with Registry(database, settings=settings) as registry:
        registry.importer  # noqa: B018 (creates the archive and the pseudonym key once)


def print_registry_tables(database: str, archive_dir: Path, console: Console) -> None:
    """Print the demo registry's dose tables: per exam and room, then per protocol.

    The first tables are :meth:`kerma.Registry.statistics` of the DRL samples per
    modality family, examination (study description) and room (QA phantom studies left
    out); the per-protocol table is :meth:`kerma.Registry.summary`, as ``kerma
    summary`` shows it.
    """
    from kerma.config import get_settings
    from kerma.services.registry import Registry

    settings = get_settings(database_url=database, archive_dir=archive_dir)
    with Registry(database, settings=settings) as registry:
        stats = registry.statistics(
            by=("modality_family", "study_description", "station_name"),
            quantities=[q for q, _ in STUDY_QUANTITIES],
        ).table
        frame = registry.summary()
    _print_study_statistics(console, stats)
    _print_summary(console, frame)


def _kerma_command() -> str:
    """Return how to call ``kerma`` from here, for the printed next steps.

    ``kerma`` when it is on the PATH, else the path of the running environment's script
    (``.venv/bin/kerma`` after the README's first command, whose virtual environment is
    not activated).
    """
    if shutil.which("kerma"):
        return "kerma"
    script = Path(sys.executable).parent / "kerma"
    try:
        shown = os.path.relpath(script)
    except ValueError:  # another drive (Windows)
        shown = str(script)
    if shown.startswith(".."):  # not below the working folder: the full path reads better
        shown = str(script)
    return shlex.quote(shown)


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
    kerma = _kerma_command()
    for command in (
        f"export KERMA_DATABASE_URL={shlex.quote(database)}"
        f" KERMA_ARCHIVE_DIR={shlex.quote(str(archive_dir))}",
        f"{kerma} studies",
        f"{kerma} drl",
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


def _print_study_statistics(console: Console, stats: Any) -> None:
    """Print the DRL quantities per examination and room (patients only).

    ``stats`` is :meth:`kerma.Registry.statistics` grouped by modality family, study
    description and station (CT: per study; fluoroscopy: KAP per procedure;
    radiography: KAP per projection); one table per quantity.
    """
    if stats.empty:
        return
    labels = dict(STUDY_QUANTITIES)
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


#: ``kerma demo --help``: one line per paragraph (the terminal wraps it), no markup.
DEMO_HELP = (
    "Generate synthetic CT, fluoroscopy, radiography and mammography dose reports and "
    "import them into a fresh demo registry.\n\n"
    "The demo department has three CT rooms (Siemens, GE, Canon), a cardiac cath lab, a "
    "fluoroscopy room, a radiography room and a mammography unit, with log-normal dose "
    "distributions per protocol, a few QA phantom scans, and one CT room set up with higher "
    "doses. All names and IDs are synthetic. The default 1,000 studies give every room and "
    "exam that has an EU DRL the ICRP 135 minimum sample (20 patients; 50 for mammography), "
    "so kerma drl on the demo registry compares the rooms with the DRLs."
)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command("demo", help=DEMO_HELP)(demo)

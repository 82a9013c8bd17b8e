"""``kerma worker`` and ``kerma jobs``: the job queue of distributed whole-registry work.

``kerma reprocess --queue`` and ``kerma alerts recheck --queue`` put the work on the
queue in chunks (:mod:`kerma.services.jobs`); ``kerma worker`` runs it on any number of
nodes; ``kerma jobs`` shows the jobs per status and the failed ones with their error,
``kerma jobs retry`` queues failed jobs again and ``kerma jobs clean`` deletes finished
ones (both through procrastinate's own job manager).
PostgreSQL only (``docs/scaling.md``, "Distributed re-processing").
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.main import RICH_MARKUP_MODE
from kerma.config import get_settings

if TYPE_CHECKING:
    from kerma.services.jobs import Enqueued, JobSummary
    from kerma.services.registry import Registry


#: Studies per job when ``--queue`` is given without ``--chunk-size``.
DEFAULT_CHUNK_SIZE = 100


def queue_chunk_size(*, queue: bool, chunk_size: int | None) -> int:
    """Return the studies per job of a ``--queue`` run (``--chunk-size`` or 100).

    Raises
    ------
    typer.BadParameter
        When ``--chunk-size`` is given without ``--queue`` (it would be ignored: the
        serial command has no chunks).
    """
    if chunk_size is not None and not queue:
        raise typer.BadParameter(
            "--chunk-size sizes the jobs of --queue; without --queue the work runs here "
            "in one pass. Add --queue, or leave --chunk-size out.",
            param_hint="'--chunk-size'",
        )
    return chunk_size or DEFAULT_CHUNK_SIZE


def print_enqueued(result: Enqueued) -> None:
    """Say how many jobs a command queued, per task, and what runs them."""
    parts = ", ".join(f"{n} {name}" for name, n in result.jobs.items())
    jobs = "job" if result.total == 1 else "jobs"
    them = "it" if result.total == 1 else "them"
    make_console().print(
        f"queued {result.total} {jobs} ({parts}); run {them} with `kerma worker` on any node"
    )


class _WithoutTraceback(logging.Filter):
    """Drop the traceback of a log record (procrastinate logs one per failed job).

    The error itself stays in the line and in ``kerma jobs``; ``KERMA_DEBUG=1`` keeps
    the tracebacks (no traceback reaches a user otherwise, ``kerma.cli.main``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return ``True`` (keep the record) after removing its traceback."""
        record.exc_info = None
        record.exc_text = None
        return True


def worker(
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=1, help="Jobs this worker runs at once."),
    ] = 1,
    until_empty: Annotated[
        bool,
        typer.Option(
            "--until-empty",
            "--once",
            help="Stop when no job is left to start (default: wait for jobs until Ctrl-C "
            "or SIGTERM).",
        ),
    ] = False,
) -> None:
    """Run the queued jobs (`--queue` of `reprocess`, `alerts recheck`, `exams --apply`).

    Runs until Ctrl-C or SIGTERM (the jobs running are finished first), or with
    `--until-empty` until the queue has no job left to start. Start one on each node;
    PostgreSQL only. With `--until-empty` it exits 1 when a job it ran failed
    ("N of M jobs failed; see kerma jobs"), so cron can tell; 0 otherwise.
    """
    from kerma.services.jobs import SERIAL_COMMANDS, job_summary, require_postgresql, run_worker
    from kerma.services.registry import Registry

    settings = get_settings()
    require_postgresql(settings, serial=SERIAL_COMMANDS)
    if os.environ.get("KERMA_DEBUG") != "1":
        logging.getLogger("procrastinate.worker").addFilter(_WithoutTraceback())
    registry = Registry(settings=settings)
    try:
        run = run_worker(registry, concurrency=concurrency, wait=not until_empty)
        summary = job_summary(registry)
    finally:
        registry.close()
    _print_summary(summary, failed=False)
    if until_empty and run.failed:
        jobs = "job" if run.ran == 1 else "jobs"
        make_console(stderr=True).print(
            f"{run.failed} of {run.ran} {jobs} failed; see kerma jobs", soft_wrap=True
        )
        raise typer.Exit(1)


#: The ``kerma jobs`` group: alone it shows the queue; ``retry`` and ``clean`` change it.
jobs_app = typer.Typer(
    name="jobs",
    help="Show the queued jobs; retry failed ones; clean finished ones.",
    rich_markup_mode=RICH_MARKUP_MODE,
)


@jobs_app.callback(invoke_without_command=True)
def jobs(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Failed jobs shown (newest first).")
    ] = 20,
) -> None:
    """Show the queued jobs per task and status, and the failed jobs with their error.

    `kerma jobs retry` puts failed jobs back on the queue; `kerma jobs clean` deletes
    finished ones. PostgreSQL only.
    """
    if ctx.invoked_subcommand is not None:
        return
    from kerma.services.jobs import job_summary

    registry = _open_queue()
    try:
        summary = job_summary(registry, failed_limit=limit)
    finally:
        registry.close()
    _print_summary(summary, failed=True)


def _open_queue() -> Registry:
    """Return the registry after refusing one that is not on PostgreSQL (no queue).

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is on SQLite (the message names the serial commands).
    """
    from kerma.services.jobs import SERIAL_COMMANDS, require_postgresql
    from kerma.services.registry import Registry

    settings = get_settings()
    require_postgresql(settings, serial=SERIAL_COMMANDS)
    return Registry(settings=settings)


@jobs_app.command("retry")
def retry(
    job_ids: Annotated[
        list[int] | None,
        typer.Argument(
            help="Ids of failed jobs (the `job` column of `kerma jobs`).",
            min=1,
            metavar="JOB_ID...",
        ),
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Retry every failed job.")
    ] = False,
) -> None:
    """Put failed jobs back on the queue; the next `kerma worker` runs them again.

    Fix the cause first (`kerma jobs` shows each job's error). A job is a chunk of
    idempotent work, so running it again is safe.
    """
    from kerma.services.jobs import retry_jobs

    if bool(job_ids) == all_failed:
        raise typer.BadParameter(
            "give the ids of the failed jobs to retry, or --all-failed for every one (not both).",
            param_hint="JOB_ID... / '--all-failed'",
        )
    registry = _open_queue()
    try:
        retried = retry_jobs(registry, job_ids=None if all_failed else job_ids)
    finally:
        registry.close()
    console = make_console()
    if not retried:
        console.print("no failed jobs to retry")
        return
    ids = ", ".join(str(i) for i in retried)
    console.print(f"{len(retried)} failed jobs queued again ({ids}); run them with `kerma worker`")


@jobs_app.command("clean")
def clean(
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            min=0,
            metavar="DAYS",
            help="Delete the jobs finished more than DAYS days ago (0: every finished job).",
        ),
    ],
) -> None:
    """Delete succeeded and failed jobs finished more than `--older-than` days ago.

    Jobs waiting or running stay; so do newer finished ones. The errors of the deleted
    failed jobs go with them.
    """
    from kerma.services.jobs import clean_jobs

    registry = _open_queue()
    try:
        removed = clean_jobs(registry, older_than_days=older_than)
    finally:
        registry.close()
    make_console().print(
        f"{removed} finished jobs older than {older_than} days deleted (succeeded and failed)"
    )


def _print_summary(summary: JobSummary, *, failed: bool) -> None:
    """Print the jobs per task and status (and the failed jobs when ``failed``)."""
    console = make_console()
    if not summary.counts:
        console.print("no jobs in the queue")
        return
    statuses = sorted({s for _, s, _ in summary.counts})
    table = Table(title="Jobs", header_style="bold")
    table.add_column("task")
    for status in statuses:
        table.add_column(status, justify="right")
    per_task: dict[str, dict[str, int]] = {}
    for task, status, n in summary.counts:
        per_task.setdefault(task, {})[status] = n
    for task, counts in per_task.items():
        table.add_row(task, *(str(counts.get(s, 0)) for s in statuses))
    console.print(table)
    if not failed or not summary.failed:
        return
    errors = Table(title="Failed jobs", header_style="bold")
    errors.add_column("job", justify="right")
    errors.add_column("task")
    errors.add_column("range")
    errors.add_column("attempts", justify="right")
    errors.add_column("error", overflow="fold", ratio=1)
    for job in summary.failed:
        errors.add_row(
            str(job.job_id),
            job.task_name,
            escape(job_range(job.task_name, job.args)),
            str(job.attempts),
            escape(job.error or "(no error recorded)"),
        )
    console.print(errors)


def job_range(task_name: str, args: dict[str, Any]) -> str:
    """Return what a job works on, readable: ``studies 1-100``, ``rejected objects from 5``.

    ``args`` are the job's keyword arguments (``first_study_id``/``last_study_id`` of a
    reprocess chunk, ``first_id``/``last_id`` of the others, ``last`` ``None``: to the
    end); a recheck's ``rule_id`` and ``notify`` follow ("rule X", "with notifications").
    Arguments of another shape are shown as ``name=value``.
    """
    from kerma.services.jobs import REPROCESS_REJECTED

    rest = {k: v for k, v in args.items() if v is not None}
    first = rest.pop("first_study_id", rest.pop("first_id", None))
    last = rest.pop("last_study_id", rest.pop("last_id", None))
    parts = []
    if first is not None:
        what = "rejected objects" if task_name == REPROCESS_REJECTED else "studies"
        parts.append(f"{what} {first}-{last}" if last is not None else f"{what} from {first}")
    rule = rest.pop("rule_id", None)
    if rule is not None:
        parts.append(f"rule {rule}")
    if rest.pop("notify", False):
        parts.append("with notifications")
    parts += [f"{k}={v}" for k, v in rest.items() if v is not False]
    return ", ".join(parts)


def register(app: typer.Typer) -> None:
    """Add ``worker`` and the ``jobs`` group (``retry``, ``clean``) to the root app."""
    app.command("worker")(worker)
    app.add_typer(jobs_app, name="jobs")

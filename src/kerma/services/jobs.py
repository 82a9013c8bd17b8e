"""Whole-registry work distributed over several nodes: procrastinate's job queue (#15).

``kerma reprocess --queue`` and ``kerma alerts recheck --queue`` cut the work into jobs
of ``chunk_size`` studies (or rejected objects) by id range and put them on the queue;
``kerma worker`` on any number of machines runs them. The queue is procrastinate (MIT),
a PostgreSQL-backed job queue: its tables live in the registry database (migration
``0020_job_queue``), so the queue needs PostgreSQL; on SQLite the serial commands do the
same work in one process.

Each job calls the same :class:`~kerma.services.registry.Registry` method as the serial
command, on its range (:meth:`Registry.reprocess_reports`,
:meth:`Registry.reprocess_rejected`, :meth:`Registry.refresh_derived`,
:meth:`Registry.recheck_alerts`); each is idempotent, so a chunk run twice (a retried
or re-queued job) changes nothing more. A job that raises is marked ``failed`` by
procrastinate, its error is kept in ``job_failure`` (:func:`job_summary`, ``kerma
jobs``), and the other jobs go on. :func:`retry_jobs` (``kerma jobs retry``) puts failed
jobs back on the queue and :func:`clean_jobs` (``kerma jobs clean``) deletes old finished
ones, both through procrastinate's own ``JobManager``.

May import ``kerma.db``, ``kerma.services``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from kerma.db import jobs as store
from kerma.errors import JobQueueError, NotFoundError

if TYPE_CHECKING:
    import procrastinate

    from kerma.config import Settings
    from kerma.services.registry import Registry

logger = logging.getLogger(__name__)

#: The procrastinate queue Kerma's jobs go to (and its workers read).
QUEUE = "kerma"

#: Studies (or rejected objects) per job by default: a job takes seconds to a minute,
#: so a stopped worker loses little and the jobs spread evenly over the workers.
DEFAULT_CHUNK_SIZE = 100

#: Task names, as stored in ``procrastinate_jobs.task_name``.
REPROCESS_REPORTS = "kerma.reprocess_reports"
REPROCESS_REJECTED = "kerma.reprocess_rejected"
DERIVE = "kerma.derive"
RECHECK_ALERTS = "kerma.recheck_alerts"

#: Job priority of the report chunks of a reprocess: fetched before the rejected
#: objects' chunks (priority 0), as the serial reprocess handles reports first.
REPORTS_PRIORITY = 1

#: The serial commands that do the queue's work in one process (named on SQLite).
SERIAL_COMMANDS = "'kerma reprocess' or 'kerma alerts recheck'"

#: Key of the worker's registry in procrastinate's ``additional_context``.
_REGISTRY = "registry"

#: Key of the worker's :class:`WorkerRun` (its jobs counted) in ``additional_context``.
_RUN = "run"


@dataclass
class WorkerRun:
    """The jobs one :func:`run_worker` call ran, counted as they end.

    Attributes
    ----------
    ran : int
        Jobs this worker started (a job retried later counts again in that run).
    failed : int
        Of those, the jobs whose task raised (procrastinate marked them ``failed``).
    """

    ran: int = 0
    failed: int = 0
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    def count(self, *, failed: bool) -> None:
        """Count one job that ended (thread-safe: the worker's jobs run in threads)."""
        with self._lock:
            self.ran += 1
            self.failed += int(failed)


def require_postgresql(settings: Settings, *, serial: str) -> str:
    """Return the registry's URL as a libpq connection string, or refuse SQLite.

    Parameters
    ----------
    settings : Settings
        ``database_url`` is the registry.
    serial : str
        The command that does the same work in one process, quoted (named in the
        message), e.g. ``"'kerma reprocess'"``.

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        raise JobQueueError(
            f"Unable to use a job queue: a job queue needs PostgreSQL, and this registry is "
            f"on {url.get_backend_name()} (KERMA_DATABASE_URL); without a queue, {serial} "
            "does the same work in this process (docs/scaling.md, 'Distributed "
            "re-processing')."
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(settings: Settings, *, pool_size: int = 2) -> procrastinate.App:
    """Return a procrastinate app on the registry's PostgreSQL with Kerma's tasks.

    Parameters
    ----------
    settings : Settings
        The registry (``database_url``, PostgreSQL).
    pool_size : int, optional
        Most connections the app's pool opens (a worker needs its concurrency plus one
        for LISTEN/NOTIFY).

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    import procrastinate

    conninfo = require_postgresql(settings, serial=SERIAL_COMMANDS)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=conninfo, min_size=1, max_size=max(2, pool_size)
        )
    )
    for name, func in _TASKS.items():
        app.task(name=name, queue=QUEUE, pass_context=True)(func)
    return app


# -- the tasks (run by ``kerma worker``) ---------------------------------------------------


#: Longest error text kept per failed job (characters).
MAX_ERROR_CHARS = 2000


def _error_text(exc: BaseException) -> str:
    """Return an error as ``Type: first line of its message``, capped.

    Only the first line: a database error's later lines repeat the SQL statement and its
    parameters, which ``kerma jobs`` must not show.
    """
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:MAX_ERROR_CHARS]


@contextmanager
def _job(context: Any) -> Iterator[Registry]:
    """Yield the worker's registry; record the error of a job that raises, then re-raise.

    The job is counted in the worker's :class:`WorkerRun`, as failed when it raised.
    """
    registry: Registry = context.additional_context[_REGISTRY]
    run: WorkerRun | None = context.additional_context.get(_RUN)
    try:
        yield registry
    except Exception as exc:
        if run is not None:
            run.count(failed=True)
        # the error, not the traceback (DEBUG): `kerma jobs` shows it again
        logger.error("job %s (%s) failed: %s", context.job.id, context.job.task_name, exc)
        logger.debug("job %s traceback", context.job.id, exc_info=True)
        with registry.session() as session:
            store.record_failure(
                session,
                job_id=int(context.job.id),
                task_name=str(context.job.task_name),
                error=_error_text(exc),
            )
        raise
    if run is not None:
        run.count(failed=False)


def _reprocess_reports(
    context: Any, *, first_study_id: int, last_study_id: int | None
) -> dict[str, int]:
    """Job: re-extract the reports of a range of studies and derive those studies."""
    with _job(context) as registry:
        summary = registry.reprocess_reports(
            first_study_id=first_study_id, last_study_id=last_study_id
        )
    return dataclasses.asdict(summary)


def _reprocess_rejected(context: Any, *, first_id: int, last_id: int | None) -> dict[str, int]:
    """Job: try a range of rejected objects again."""
    with _job(context) as registry:
        summary = registry.reprocess_rejected(first_id=first_id, last_id=last_id)
    return dataclasses.asdict(summary)


def _derive(context: Any, *, first_id: int, last_id: int | None) -> int:
    """Job: derive the summary columns of a range of studies again."""
    with _job(context) as registry:
        return registry.refresh_derived(first_id=first_id, last_id=last_id)


def _recheck_alerts(
    context: Any,
    *,
    first_id: int,
    last_id: int | None,
    rule_id: str | None = None,
    notify: bool = False,
) -> dict[str, int]:
    """Job: evaluate the alert rules on a range of studies again."""
    with _job(context) as registry:
        result = registry.recheck_alerts(
            rule_id=rule_id, notify=notify, first_id=first_id, last_id=last_id
        )
    return {"studies": result.studies, "new": len(result.new), "updated": len(result.updated)}


_TASKS: dict[str, Callable[..., Any]] = {
    REPROCESS_REPORTS: _reprocess_reports,
    REPROCESS_REJECTED: _reprocess_rejected,
    DERIVE: _derive,
    RECHECK_ALERTS: _recheck_alerts,
}


# -- enqueueing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    """Jobs put on the queue by one command.

    Attributes
    ----------
    jobs : dict of str to int
        Jobs per task name.
    """

    jobs: dict[str, int]

    @property
    def total(self) -> int:
        """Return the number of jobs."""
        return sum(self.jobs.values())


def _ranges(registry: Registry, table: Any, chunk_size: int) -> list[dict[str, int | None]]:
    """Return the id ranges of a table as job arguments; the last range has no end.

    The open end covers rows added after the command (e.g. by a running import).
    """
    if chunk_size < 1:
        raise ValueError(f"Unable to cut the work into jobs: chunk size {chunk_size} is < 1.")
    with registry.session(write=False) as session:
        ranges = store.id_ranges(session, table=table, size=chunk_size)
    out: list[dict[str, int | None]] = [{"first": a, "last": b} for a, b in ranges]
    if out:
        out[-1]["last"] = None
    return out


def _defer(registry: Registry, batches: list[tuple[str, int, list[dict[str, Any]]]]) -> Enqueued:
    """Put ``(task name, priority, job arguments)`` batches on the queue (one insert each)."""
    require_postgresql(registry.settings, serial=SERIAL_COMMANDS)
    app = make_app(registry.settings)
    counts: dict[str, int] = {}
    with app.open():
        for name, priority, args in batches:
            if args:
                app.tasks[name].configure(priority=priority).batch_defer(*args)
            counts[name] = counts.get(name, 0) + len(args)
    logger.info("queued %s", counts)
    return Enqueued(jobs=counts)


def enqueue_reprocess(registry: Registry, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Enqueued:
    """Queue ``kerma reprocess`` as jobs: reports by study id range, then rejected objects.

    Each report job re-extracts the reports of ``chunk_size`` studies and derives those
    studies (:meth:`Registry.reprocess_reports`); each rejected job tries ``chunk_size``
    rejected objects again (:meth:`Registry.reprocess_rejected`). The report jobs have
    the higher priority, so workers take them first.

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    from kerma.db.models import RejectedObject, Study

    require_postgresql(registry.settings, serial="'kerma reprocess'")
    studies = [
        {"first_study_id": r["first"], "last_study_id": r["last"]}
        for r in _ranges(registry, Study, chunk_size)
    ]
    rejected = [
        {"first_id": r["first"], "last_id": r["last"]}
        for r in _ranges(registry, RejectedObject, chunk_size)
    ]
    return _defer(
        registry,
        [(REPROCESS_REPORTS, REPORTS_PRIORITY, studies), (REPROCESS_REJECTED, 0, rejected)],
    )


def enqueue_derive(registry: Registry, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Enqueued:
    """Queue the refresh of every study's derived values, ``chunk_size`` studies a job.

    Each job is :meth:`Registry.refresh_derived` on its range (summary columns, exams,
    event groups: :func:`kerma.services.derive.refresh_studies`), the second step of
    ``kerma exams --apply``.

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    from kerma.db.models import Study

    require_postgresql(registry.settings, serial="'kerma exams --apply'")
    args = [
        {"first_id": r["first"], "last_id": r["last"]} for r in _ranges(registry, Study, chunk_size)
    ]
    return _defer(registry, [(DERIVE, 0, args)])


def enqueue_recheck(
    registry: Registry,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rule_id: str | None = None,
    notify: bool = False,
) -> Enqueued:
    """Queue ``kerma alerts recheck`` as jobs of ``chunk_size`` studies by id range.

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    kerma.errors.NotFoundError
        When ``rule_id`` is not a rule in force.
    """
    from kerma.db.models import Study

    require_postgresql(registry.settings, serial="'kerma alerts recheck'")
    if rule_id is not None and registry.alert_context.rules.get(rule_id) is None:
        raise NotFoundError(
            f"Unable to recheck rule {rule_id!r}: no such rule in force (see 'kerma alerts rules')."
        )
    args = [
        {"first_id": r["first"], "last_id": r["last"], "rule_id": rule_id, "notify": notify}
        for r in _ranges(registry, Study, chunk_size)
    ]
    return _defer(registry, [(RECHECK_ALERTS, 0, args)])


# -- workers and status ------------------------------------------------------------------------


def run_worker(registry: Registry, *, concurrency: int = 1, wait: bool = True) -> WorkerRun:
    """Run Kerma's jobs until stopped (SIGINT/SIGTERM), or until the queue is empty.

    Parameters
    ----------
    registry : Registry
        The registry the jobs work on (shared by the worker's threads).
    concurrency : int, optional
        Jobs run at once by this worker (threads; default 1). Each is one database
        connection; past the node's cores more only waits.
    wait : bool, optional
        ``True`` (default): wait for new jobs until stopped; on SIGINT/SIGTERM the jobs
        running are finished first. ``False``: stop when no job is left to start.

    Returns
    -------
    WorkerRun
        How many jobs this worker ran and how many of them failed (``kerma worker
        --until-empty`` exits 1 when any failed, so cron can tell).

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    if concurrency < 1:
        raise ValueError(f"Unable to run a worker: concurrency {concurrency} is < 1.")
    require_postgresql(registry.settings, serial=SERIAL_COMMANDS)
    app = make_app(registry.settings, pool_size=concurrency + 2)
    run = WorkerRun()
    app.run_worker(
        queues=[QUEUE],
        concurrency=concurrency,
        wait=wait,
        additional_context={_REGISTRY: registry, _RUN: run},
        install_signal_handlers=True,
    )
    return run


@dataclass(frozen=True)
class JobSummary:
    """The queue's state for ``kerma jobs``.

    Attributes
    ----------
    counts : list of (str, str, int)
        ``(task name, status, jobs)``; status is procrastinate's (``todo``, ``doing``,
        ``succeeded``, ``failed``, ``cancelled``, ``aborting``, ``aborted``).
    failed : list of FailedJob
        The newest failed jobs with the error their task raised.
    """

    counts: list[tuple[str, str, int]]
    failed: list[store.FailedJob]


def job_summary(registry: Registry, *, failed_limit: int = 50) -> JobSummary:
    """Return the jobs per task and status, and the newest failed jobs with their error.

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    require_postgresql(registry.settings, serial=SERIAL_COMMANDS)
    with registry.session(write=False) as session:
        return JobSummary(
            counts=store.status_counts(session),
            failed=store.failed_jobs(session, limit=failed_limit),
        )


# -- retry and clean ---------------------------------------------------------------------------

#: Final states :func:`clean_jobs` removes (procrastinate's ``succeeded`` and ``failed``).
CLEANED_STATUSES = ("succeeded", "failed")


def retry_jobs(registry: Registry, *, job_ids: Sequence[int] | None = None) -> list[int]:
    """Put failed jobs back on the queue, to run again on the next ``kerma worker``.

    Each job goes from ``failed`` to ``todo``, to run now, through procrastinate's own
    :meth:`procrastinate.manager.JobManager.retry_job_by_id` (SQL function
    ``procrastinate_retry_job_v2``, which also adds one to the job's ``attempts``). A
    job is a chunk of idempotent work (module docstring), so running it again is safe.

    Parameters
    ----------
    registry : Registry
        The registry on PostgreSQL whose queue holds the jobs.
    job_ids : sequence of int, optional
        The jobs to retry (ids shown by ``kerma jobs``); ``None``: every failed job of
        Kerma's queue.

    Returns
    -------
    list of int
        The ids of the jobs put back on the queue, in ascending order (empty when
        ``job_ids`` is ``None`` and no job failed).

    Raises
    ------
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL, or a job of ``job_ids`` does not exist
        or has not failed (nothing is retried then; the message names each).
    """
    from procrastinate.exceptions import ConnectorException
    from procrastinate.utils import utcnow

    require_postgresql(registry.settings, serial=SERIAL_COMMANDS)
    app = make_app(registry.settings)
    with app.open():
        manager = app.job_manager
        failed = {int(job.id) for job in manager.list_jobs(queue=QUEUE, status="failed") if job.id}
        wanted = sorted(failed if job_ids is None else set(job_ids))
        problems = []
        for job_id in wanted:
            if job_id in failed:
                continue
            found = manager.list_jobs(id=job_id, queue=QUEUE)
            state = _state_text(found[0].status) if found else "does not exist"
            problems.append(f"job {job_id} {state}")
        if problems:
            raise JobQueueError(
                f"Unable to retry: {', '.join(problems)}; only failed jobs can be retried "
                "('kerma jobs' lists them, 'kerma jobs retry --all-failed' retries them all)."
            )
        for job_id in wanted:
            try:
                manager.retry_job_by_id(job_id, retry_at=utcnow())
            except ConnectorException as exc:  # retried meanwhile by another command
                raise JobQueueError(
                    f"Unable to retry job {job_id}: {_error_text(exc.__cause__ or exc)}. "
                    "Run 'kerma jobs' to see its state now."
                ) from exc
    logger.info("retried jobs %s", wanted)
    return wanted


#: How a retry refusal says a job's procrastinate status ("job 7 has succeeded").
_STATE_TEXTS = {
    "todo": "is waiting",
    "doing": "is running",
    "succeeded": "has succeeded",
    "cancelled": "was cancelled",
    "aborting": "is being aborted",
    "aborted": "was aborted",
}


def _state_text(status: Any) -> str:
    """Return ``status`` (procrastinate's ``Status`` or its text) as words after "job N"."""
    name = str(getattr(status, "value", status))
    return _STATE_TEXTS.get(name, f"is {name}")


def clean_jobs(registry: Registry, *, older_than_days: int) -> int:
    """Delete Kerma's finished jobs (succeeded or failed) older than ``older_than_days``.

    Through procrastinate's own :meth:`procrastinate.manager.JobManager.delete_old_jobs`
    (the query of its builtin ``remove_old_jobs`` task): a job is old when its last
    event (``procrastinate_events.at``: deferred, started, failed, succeeded, retried)
    is more than ``older_than_days`` × 24 hours ago. Jobs waiting or running
    (``todo``, ``doing``) stay whatever their age. Their events and recorded errors
    (``job_failure``) go with them (``ON DELETE CASCADE``).

    Parameters
    ----------
    registry : Registry
        The registry on PostgreSQL whose queue holds the jobs.
    older_than_days : int
        Age in days (>= 0; 0 deletes every finished job).

    Returns
    -------
    int
        The number of jobs deleted.

    Raises
    ------
    ValueError
        When ``older_than_days`` is negative.
    kerma.errors.JobQueueError
        When the registry is not on PostgreSQL.
    """
    import asyncio

    if older_than_days < 0:
        raise ValueError(f"Unable to clean jobs: {older_than_days} days is < 0.")
    require_postgresql(registry.settings, serial=SERIAL_COMMANDS)
    app = make_app(registry.settings)

    async def delete() -> None:
        """Run procrastinate's deletion (asynchronous only in procrastinate 3.10)."""
        async with app.open_async():
            await app.job_manager.delete_old_jobs(
                nb_hours=older_than_days * 24, queue=QUEUE, include_failed=True
            )

    with registry.session(write=False) as session:
        before = store.finished_job_ids(session, queue=QUEUE, statuses=CLEANED_STATUSES)
    asyncio.run(delete())
    with registry.session(write=False) as session:
        after = store.finished_job_ids(session, queue=QUEUE, statuses=CLEANED_STATUSES)
    removed = len(before - after)
    logger.info("removed %d finished jobs older than %d days", removed, older_than_days)
    return removed

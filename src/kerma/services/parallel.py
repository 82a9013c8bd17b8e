"""Import with several worker processes into one registry (``kerma import --workers N``).

The files of the paths are cut into chunks of :data:`CHUNK_FILES`; each worker
process opens its own :class:`~kerma.services.registry.Registry` (its own database
connections) and imports the chunks it is given, one object per transaction, exactly
as a single process does. Nothing is coordinated in Python: two workers (or two
machines) that store the same object, study, device or patient at once are kept apart
by the database's unique constraints and the ingest's insert-or-read-back
(:mod:`kerma.db.queries`, :meth:`kerma.ingest.pipeline.Importer.import_bytes`), and the
reports of one study are reconciled one at a time under the study's row lock
(``docs/scaling.md``). The result is the registry a serial import makes.

At most ``2 × workers`` chunks are in flight, so a folder of a million files is never
a list of a million paths.

May import ``kerma.services``, ``kerma.ingest``, ``kerma.config``.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from os import PathLike
from typing import TYPE_CHECKING

from kerma.config import Settings
from kerma.ingest.pipeline import ImportSummary
from kerma.ingest.sources import FileSource, iter_sources

if TYPE_CHECKING:
    from kerma.services.registry import Registry

logger = logging.getLogger(__name__)

#: Files a worker imports per task: large enough that handing out work costs nothing
#: next to importing it (~5-20 ms per object), small enough that workers finish together.
CHUNK_FILES = 16


def merge_summaries(into: ImportSummary, other: ImportSummary) -> None:
    """Add the counts of ``other`` to ``into`` (examples up to the summary's limit)."""
    from kerma.ingest.pipeline import MAX_EXAMPLES

    into.objects_read += other.objects_read
    into.imported.update(other.imported)
    into.already_present += other.already_present
    into.superseded += other.superseded
    into.replaced += other.replaced
    into.rejected += other.rejected
    into.rejected_already_listed += other.rejected_already_listed
    into.unreadable += other.unreadable
    into.rejections_by_reason.update(other.rejections_by_reason)
    into.new_rejections_by_reason.update(other.new_rejections_by_reason)
    room = MAX_EXAMPLES - len(into.rejection_examples)
    into.rejection_examples.extend(other.rejection_examples[: max(room, 0)])
    into.ignored += other.ignored
    into.skipped.update(other.skipped)
    into.conflicts += other.conflicts
    into.conflicts_already_held += other.conflicts_already_held


def _chunks(sources: Iterator[FileSource], size: int) -> Iterator[list[tuple[str, str]]]:
    """Yield ``(path, origin)`` lists of at most ``size`` files."""
    chunk: list[tuple[str, str]] = []
    for found in sources:
        chunk.append((str(found.path), found.origin))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


#: The registry of this worker process (set by :func:`_start_worker`).
_REGISTRY: Registry | None = None


def _start_worker(settings: Settings, log_level: int) -> None:
    """Set up a worker process: logging as in the parent, its own registry."""
    global _REGISTRY
    from kerma.services.registry import Registry

    logging.getLogger().setLevel(log_level)
    _REGISTRY = Registry(settings=settings)


def _import_chunk(chunk: list[tuple[str, str]], keep_non_dose: bool) -> ImportSummary:
    """Import one chunk of files in a worker process; return its counts."""
    if _REGISTRY is None:  # pragma: no cover - the pool's initializer sets it
        raise RuntimeError("Unable to import: the worker process was not set up")
    importer = _REGISTRY.importer
    summary = ImportSummary()
    for path, origin in chunk:
        summary.add(
            importer.import_file(path, keep_non_dose=keep_non_dose, origin=origin, source=origin)
        )
    return summary


def _pool_context() -> multiprocessing.context.BaseContext:
    """Return ``fork`` on Linux (workers start with every module imported), else ``spawn``."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _ready() -> bool:
    """Return ``True`` (a no-op task that makes every worker process start)."""
    return True


class ParallelImporter:
    """Worker processes importing into the registry of ``settings``; a context manager.

    The registry is opened (schema migrated, pseudonym key made) in this process first
    and closed again, then the worker processes are started, all before this returns:
    start it before any thread (e.g. a Rich progress bar), since forking a process that
    runs threads can deadlock.

    Parameters
    ----------
    settings : Settings
        The registry (``database_url``, ``archive_dir``, key).
    workers : int
        Worker processes (at least 1; 1 imports in this process, no pool).

    Raises
    ------
    ValueError
        When ``workers`` is below 1.
    """

    def __init__(self, settings: Settings, *, workers: int) -> None:
        from kerma.services.registry import Registry

        if workers < 1:
            raise ValueError(f"Unable to import with {workers} workers: give at least 1.")
        self.settings = settings
        self.workers = workers
        self._registry: Registry | None = None
        self._pool: ProcessPoolExecutor | None = None
        registry = Registry(settings=settings)
        if workers == 1:
            self._registry = registry
            return
        registry.importer  # noqa: B018 (archive folder and pseudonym key made once, here)
        registry.close()
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_pool_context(),
            initializer=_start_worker,
            initargs=(settings, logging.getLogger().level),
        )
        self._pool.submit(_ready).result()  # with fork, the first task starts all workers

    def __enter__(self) -> ParallelImporter:
        """Return the importer (closed on exit)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the workers (or close the in-process registry)."""
        self.close()

    def close(self) -> None:
        """Stop the worker processes, or close the in-process registry."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def import_paths(
        self,
        paths: Iterable[str | PathLike[str]],
        *,
        progress: Callable[[int], None] | None = None,
        keep_non_dose: bool = True,
    ) -> ImportSummary:
        """Import files and folders (recursively) with the workers; return the counts.

        Parameters
        ----------
        paths : iterable of path-like
            Files and folders, as :meth:`kerma.Registry.import_paths`.
        progress : callable, optional
            Called with the number of objects handled, each time some are.
        keep_non_dose : bool, optional
            As :meth:`kerma.Registry.import_paths`.

        Returns
        -------
        ImportSummary
            The counts of all workers together.

        Raises
        ------
        OSError
            When the archive cannot be written (from the worker that failed).
        sqlalchemy.exc.SQLAlchemyError
            When the database fails beyond the importer's retries.
        """
        if self._registry is not None:
            return self._registry.import_paths(
                list(paths),
                progress=(lambda _o: progress(1)) if progress is not None else None,
                keep_non_dose=keep_non_dose,
            )
        pool = self._pool
        assert pool is not None
        total = ImportSummary()
        pending: set[Future[ImportSummary]] = set()

        def collect(done: set[Future[ImportSummary]]) -> None:
            for future in done:
                part = future.result()
                merge_summaries(total, part)
                if progress is not None:
                    progress(part.objects_read)

        for chunk in _chunks(iter_sources(paths), CHUNK_FILES):
            pending.add(pool.submit(_import_chunk, chunk, keep_non_dose))
            if len(pending) >= 2 * self.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
        return total

"""The durable spool of received objects and the worker that imports it.

Every object that arrives over the network (C-STORE, C-GET sub-operation, STOW-RS,
WADO-RS) is first written to ``<archive_dir>/incoming/<sha256>.dcm`` and fsynced
(the file, then the folder) **before** the peer is told it was stored. A worker
thread then imports the spooled files with :meth:`kerma.Registry.import_paths` and
removes each spool file only after its import returned; an import that fails for
an infrastructure reason (database down) leaves the file where it is and is
retried. On start-up the worker first imports whatever a previous run left in the
spool, so a crash or a ``kill -9`` loses nothing that was acknowledged.

Objects that the receiving side cannot even decode are written to
``<archive_dir>/quarantine/`` for inspection. Whether an object holds dose
information is decided by the import, not here: with ``keep_non_dose=False`` the
import records an object without dose information in ``ignored_object`` and does
not keep it.

May import ``kerma.config`` and ``kerma.errors``; the registry is passed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Suffix of the spooled files.
SPOOL_SUFFIX = ".dcm"


def fsync_directory(directory: Path) -> None:
    """Flush the entries of ``directory`` (new, renamed or removed files) to disk.

    Parameters
    ----------
    directory : pathlib.Path
        The folder.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A folder of received objects, each written atomically and durably.

    Parameters
    ----------
    archive_dir : pathlib.Path
        Kerma's archive folder (``settings.archive_dir``); the spool is its
        ``incoming/`` subfolder and undecodable objects go to ``quarantine/``.

    Notes
    -----
    A file is written under a temporary name beginning with ``.``, fsynced, renamed
    to ``<sha256>.dcm`` and the folder fsynced. A crash before the rename leaves a
    temporary file, which :meth:`clean_temporary` removes (it was never
    acknowledged); a file with its final name is always complete.

    Objects written at the same time by several associations share folder fsyncs
    (group commit, :meth:`sync_directory`): each :meth:`put` returns only after a
    folder fsync that *started after its own rename* has completed, so every object
    is durable before it is acknowledged, but 20 concurrent writers need far fewer
    than 20 folder fsyncs.
    """

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = Path(archive_dir)
        self.directory = self.archive_dir / "incoming"
        self.quarantine_dir = self.archive_dir / "quarantine"
        self.directory.mkdir(parents=True, exist_ok=True)
        fsync_directory(self.directory.parent)
        self._sync = threading.Condition()
        self._sync_requested = 0  # tickets handed out to writers, in order
        self._sync_durable = 0  # every ticket up to this one is covered by a folder fsync
        self._sync_running = False
        self.directory_fsyncs = 0

    def sync_directory(self) -> None:
        """Make every entry renamed into the spool before this call durable (group commit).

        The caller takes a ticket; if no folder fsync is running, it runs one covering
        every ticket handed out so far, otherwise it waits for the running one to end
        and then for one that covers its ticket. A failing fsync raises in the thread
        that ran it; waiting threads then run their own.

        Raises
        ------
        OSError
            When the folder could not be flushed.
        """
        with self._sync:
            self._sync_requested += 1
            ticket = self._sync_requested
            while self._sync_durable < ticket:
                if self._sync_running:
                    self._sync.wait()
                    continue
                self._sync_running = True
                covers = self._sync_requested
                self._sync.release()
                try:
                    fsync_directory(self.directory)
                finally:  # on failure, the exception leaves with the lock held by `with`
                    self._sync.acquire()
                    self._sync_running = False
                    self._sync.notify_all()
                self.directory_fsyncs += 1
                self._sync_durable = max(self._sync_durable, covers)

    def put(self, data: bytes | Sequence[bytes]) -> Path:
        """Write an object durably and return its spool path.

        Parameters
        ----------
        data : bytes or sequence of bytes
            The encoded DICOM object (Part 10 file), possibly in chunks.

        Returns
        -------
        pathlib.Path
            ``<archive_dir>/incoming/<sha256>.dcm``; the same path for the same bytes.

        Raises
        ------
        OSError
            When the object could not be written and flushed to disk.
        """
        chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        path = self.directory / f"{digest.hexdigest()}{SPOOL_SUFFIX}"
        if path.exists():
            # the same bytes were spooled (file fsynced before its rename); the writer
            # may still be waiting for its folder fsync, so wait for one as well
            self.sync_directory()
            return path
        tmp = self.directory / f".{uuid.uuid4().hex}.tmp"
        try:
            with tmp.open("wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.sync_directory()
        return path

    def pending(self) -> list[Path]:
        """Return the spooled files waiting for import, oldest first."""
        entries = [
            e
            for e in os.scandir(self.directory)
            if e.is_file() and e.name.endswith(SPOOL_SUFFIX) and not e.name.startswith(".")
        ]
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        return [Path(e.path) for e in entries]

    def remove(self, path: Path) -> None:
        """Remove a spool file after its import committed (missing files are ignored)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def clean_temporary(self) -> int:
        """Remove temporary files of writes that never finished; return how many."""
        removed = 0
        for entry in os.scandir(self.directory):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def quarantine(self, data: bytes, *, name: str) -> Path | None:
        """Keep an object that could not be decoded, for inspection (best effort).

        Parameters
        ----------
        data : bytes
            The bytes as received.
        name : str
            A file name stem (e.g. the Affected SOP Instance UID of the request).

        Returns
        -------
        pathlib.Path or None
            Where it was written, or ``None`` when writing failed.
        """
        safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in name)[:100] or "object"
        path = self.quarantine_dir / f"{safe}-{hashlib.sha256(data).hexdigest()[:16]}.dcm"
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError:
            logger.exception("Unable to keep an undecodable object in %s", self.quarantine_dir)
            return None
        return path


class PathImporter(Protocol):
    """What the worker needs of the registry: ``import_paths`` (see kerma.Registry)."""

    def import_paths(
        self, paths: Iterable[Path], *, progress: Any = None, keep_non_dose: bool = True
    ) -> Any:
        """Import files; return a summary (``ImportSummary`` or :class:`ImportCounts`)."""
        ...


@dataclass(frozen=True)
class ImportCounts:
    """Counts of one ``import_paths`` call, as returned across a process boundary.

    Attributes
    ----------
    objects_read : int
        Files handled.
    n_imported : int
        Objects newly stored.
    ignored : int
        Objects without dose information, recorded in ``ignored_object`` and not kept
        (``keep_non_dose=False``).
    rejected : int
        Objects rejected (kept in the archive, listed by ``kerma rejects``).
    """

    objects_read: int = 0
    n_imported: int = 0
    ignored: int = 0
    rejected: int = 0

    @classmethod
    def from_summary(cls, summary: Any, *, default_read: int = 0) -> ImportCounts:
        """Return the counts of an ``ImportSummary`` (missing fields count 0)."""
        if isinstance(summary, ImportCounts):
            return summary
        return cls(
            objects_read=int(getattr(summary, "objects_read", default_read)),
            n_imported=int(getattr(summary, "n_imported", 0)),
            ignored=int(getattr(summary, "ignored", 0)),
            rejected=int(getattr(summary, "rejected", 0)),
        )


class SpoolWorker(threading.Thread):
    """Import spooled files into the registry, in batches, on its own thread.

    Parameters
    ----------
    spool : Spool
        The spool to drain.
    registry_factory : callable
        Returns the registry (called once, on the worker thread, so that opening
        the database never delays the network service).
    keep_non_dose : bool, optional
        Passed to ``import_paths``: when ``True``, objects that hold no dose
        information are rejected and kept in the archive; when ``False`` (default,
        ``settings.scp_keep_non_dose``) the import records them in ``ignored_object``
        (``Registry.ignored()``) and does not keep them. The decision is the import's
        (its extractor raising ``NotADoseReportError``), never the network side's.
    batch_size : int, optional
        Largest number of files given to one ``import_paths`` call. Default 128.
    retry_delay_s : float, optional
        Wait before retrying a failed import, in seconds. Default 5.
    max_attempts : int, optional
        A file whose import raised this many times while other imports succeeded is
        moved to the quarantine folder. Default 5.

    Attributes
    ----------
    imported : int
        Spool files handled by the import (stored, already present, rejected or
        ignored) and removed from the spool.
    ignored, rejected : int
        Of those, objects without dose information (not kept) and rejected objects,
        as the import summaries report them.
    quarantined : int
        Files whose import kept failing, moved to the quarantine folder.

    Notes
    -----
    ``import_paths`` records a bad object as a rejection and returns; it raises only
    when the archive or the database fails. The batch is then retried one file at a
    time, so one poisonous file cannot stop the others.
    """

    def __init__(
        self,
        spool: Spool,
        registry_factory: Callable[[], PathImporter],
        *,
        keep_non_dose: bool = False,
        batch_size: int = 128,
        retry_delay_s: float = 5.0,
        max_attempts: int = 5,
    ) -> None:
        super().__init__(name="kerma-spool-worker", daemon=True)
        self.spool = spool
        self._registry_factory = registry_factory
        self._registry: PathImporter | None = None
        self.keep_non_dose = keep_non_dose
        self.batch_size = batch_size
        self.retry_delay_s = retry_delay_s
        self.max_attempts = max_attempts
        self._queue: queue.Queue[Path] = queue.Queue()
        self._retry: dict[Path, tuple[int, float]] = {}
        self._stop_event = threading.Event()
        self._idle = threading.Event()
        self._lock = threading.Lock()
        self._in_queue = 0
        self.imported = 0
        self.ignored = 0
        self.rejected = 0
        self.quarantined = 0
        removed = spool.clean_temporary()
        if removed:
            logger.info("Removed %d unfinished temporary spool files", removed)
        leftovers = spool.pending()
        if leftovers:
            logger.info("Importing %d objects left in %s", len(leftovers), spool.directory)
        for path in leftovers:
            self.submit(path)

    def submit(self, path: Path) -> None:
        """Queue a spooled file for import."""
        with self._lock:
            self._in_queue += 1
            self._idle.clear()
        self._queue.put(path)

    @property
    def backlog(self) -> int:
        """Number of files queued, waiting for a retry, or being imported."""
        with self._lock:
            return self._in_queue

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted file was handled; return whether it was."""
        with self._lock:
            if self._in_queue == 0:
                return True
        return self._idle.wait(timeout)

    def stop(self, *, timeout: float | None = 60.0) -> None:
        """Stop after the file being imported; files still queued stay in the spool."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
        if isinstance(self._registry, ProcessImporter):
            self._registry.close()

    def run(self) -> None:
        """Import queued files until :meth:`stop` is called."""
        while not self._stop_event.is_set():
            batch = self._due_retries()
            try:
                batch.append(self._queue.get(timeout=0.1 if batch else 0.2))
            except queue.Empty:
                if not batch:
                    continue
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._handle(batch)

    def _due_retries(self) -> list[Path]:
        """Return the files whose retry time has come."""
        now = time.monotonic()
        return [p for p, (_, due) in self._retry.items() if due <= now]

    def _done(self, paths: list[Path]) -> None:
        """Forget handled files and update the backlog."""
        for path in paths:
            self._retry.pop(path, None)
        with self._lock:
            self._in_queue -= len(paths)
            if self._in_queue <= 0:
                self._in_queue = 0
                self._idle.set()

    def _handle(self, batch: list[Path]) -> None:
        """Import a batch, remove what was handled, retry what failed."""
        to_import = [p for p in batch if p.exists()]
        if len(to_import) < len(batch):  # already imported (e.g. the same bytes twice)
            present = set(to_import)
            self._done([p for p in batch if p not in present])
        if not to_import:
            return
        try:
            self._import(to_import)
        except Exception:
            logger.exception(
                "Unable to import a batch of %d spooled objects; retrying one by one",
                len(to_import),
            )
        else:
            self._finish(to_import)
            return
        any_success = False
        failed: list[Path] = []
        for path in to_import:
            if self._stop_event.is_set():
                return  # left in the spool: imported on the next start
            try:
                self._import([path])
            except Exception:
                logger.exception("Unable to import spooled object %s", path.name)
                failed.append(path)
            else:
                any_success = True
                self._finish([path])
        for path in failed:
            attempts = self._retry.get(path, (0, 0.0))[0] + 1
            if any_success and attempts >= self.max_attempts:
                self._quarantine(path)
            else:
                self._retry[path] = (attempts, time.monotonic() + self.retry_delay_s)

    def _import(self, paths: list[Path]) -> None:
        """Import files with the registry (created on first use) and count the outcomes."""
        if self._registry is None:
            self._registry = self._registry_factory()
        summary = self._registry.import_paths(paths, keep_non_dose=self.keep_non_dose)
        counts = ImportCounts.from_summary(summary, default_read=len(paths))
        with self._lock:
            self.ignored += counts.ignored
            self.rejected += counts.rejected
        if counts.ignored:
            logger.info("%d objects without dose information recorded as ignored", counts.ignored)

    def _finish(self, paths: list[Path]) -> None:
        """Remove imported files from the spool."""
        for path in paths:
            self.spool.remove(path)
        self.imported += len(paths)
        self._done(paths)

    def _quarantine(self, path: Path) -> None:
        """Move a file whose import keeps failing out of the spool, for inspection."""
        target = self.spool.quarantine_dir / path.name
        try:
            self.spool.quarantine_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError:
            logger.exception("Unable to move %s to %s", path, self.spool.quarantine_dir)
            self._retry[path] = (0, time.monotonic() + self.retry_delay_s)
            return
        self.quarantined += 1
        logger.error("Import of %s kept failing; moved to %s", path.name, target)
        self._done([path])


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- import in a child process --------------------------------------------------------------

_child_registry: Any = None

#: Niceness added to the import process (``os.nice``): on a machine with few cores the
#: network threads, which must answer each C-STORE, get the CPU first; the import
#: catches up whenever they are idle (what is not imported yet is safe in the spool).
IMPORT_NICENESS = 10


def _init_child(settings_json: str) -> None:
    """Open the registry once in the child process (runs the migrations if needed)."""
    global _child_registry
    import signal as _signal

    with contextlib.suppress(OSError):
        os.nice(IMPORT_NICENESS)

    from kerma.api import Registry
    from kerma.config import Settings

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the parent decides when to stop
    parent = os.getppid()

    def watch_parent() -> None:
        """Exit when the parent dies (e.g. SIGKILL): what is not committed stays spooled."""
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, name="kerma-parent-watch", daemon=True).start()
    if sys.platform.startswith("linux"):  # and let the kernel stop us with the parent
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, _signal.SIGTERM)  # PR_SET_PDEATHSIG
    _child_registry = Registry(settings=Settings.model_validate_json(settings_json))


def _import_in_child(paths: list[str], keep_non_dose: bool = True) -> ImportCounts:
    """Import files with the child's registry; return the counts of its summary."""
    if not paths:
        return ImportCounts()
    summary = _child_registry.import_paths(paths, keep_non_dose=keep_non_dose)
    return ImportCounts.from_summary(summary, default_read=len(paths))


class ProcessImporter:
    """Run :meth:`kerma.Registry.import_paths` in a child process.

    The DICOM network threads of the SCP then never wait for the Python GIL held by
    extraction and database work (which costs far more CPU per object than
    receiving it), and the child runs at a lower priority (:data:`IMPORT_NICENESS`),
    so on a small machine the import takes the CPU the network threads leave idle.
    Same interface as the registry for :class:`SpoolWorker`.

    Parameters
    ----------
    settings : kerma.config.Settings
        Passed to the child, which opens ``kerma.Registry(settings=settings)``.
    """

    def __init__(self, settings: Any) -> None:
        self._settings_json = settings.model_dump_json()
        self._executor: Any = None

    def start(self) -> None:
        """Start the child process and open its registry (waits until it is ready)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_child,
                initargs=(self._settings_json,),
            )
            self._executor.submit(_import_in_child, []).result()

    def import_paths(
        self, paths: Iterable[Path], *, progress: Any = None, keep_non_dose: bool = True
    ) -> ImportCounts:
        """Import files in the child; return its counts; raise what the import raised.

        Parameters
        ----------
        paths : iterable of pathlib.Path
            Spooled files.
        progress : None
            Not supported across the process boundary (ignored).
        keep_non_dose : bool, optional
            See :meth:`kerma.Registry.import_paths`. Default ``True``.
        """
        from concurrent.futures.process import BrokenProcessPool

        self.start()
        try:
            future = self._executor.submit(_import_in_child, [str(p) for p in paths], keep_non_dose)
            return ImportCounts.from_summary(future.result())
        except BrokenProcessPool:
            logger.error("The import process died; starting a new one")
            self.close()
            raise

    def close(self) -> None:
        """Stop the child process (after the import in progress)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

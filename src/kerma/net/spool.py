"""The durable spool of received objects and the worker that imports it.

Every object that arrives over the network (C-STORE, C-GET sub-operation) is first
written with :meth:`Spool.put` to a pre-created *slot* file in
``<archive_dir>/incoming/``, followed by where it came from (its *origin*: the peer's
AE title and address) and a footer (magic, object length, origin length, SHA-256),
and the slot is fsynced **before** the peer is told it was stored: one device flush
per object, because the slot's name was made durable ahead of time (see
:class:`Spool` for the argument). STOW-RS parts and WADO-RS responses are streamed to
a temporary file, given the same origin and footer, fsynced and renamed to
``<sha256>.dcm`` (then the folder is fsynced).

A worker thread then imports the spooled objects and removes each spool file only
after its import returned; an import that fails for an infrastructure reason
(database down) leaves the file where it is and is retried. The import reads each
spool file once and hands its bytes, the SHA-256 from its footer and its origin to
the pipeline (``Importer.import_bytes``): the object is never copied to a scratch
file and never hashed a second time, so an object received by the SCP is written
twice in all, once to the spool and once to the archive. On start-up the worker
first imports whatever a previous run left in the spool (complete slots and
``<sha256>.dcm`` files; torn slots, never acknowledged, are discarded), so a crash or
a ``kill -9`` loses nothing that was acknowledged.

Objects that the receiving side cannot even decode are written to
``<archive_dir>/quarantine/`` for inspection. Whether an object holds dose
information is decided by the import, not here: with ``keep_non_dose=False`` the
import records an object without dose information in ``ignored_object`` and does
not keep it.

Never imports ``kerma.api``, ``kerma.db`` or ``kerma.services``: the importer is passed
in (:class:`SpoolWorker` takes a factory; :class:`ProcessImporter` a module-level
factory function that the child process calls with the settings). May import
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import queue
import re
import shutil
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kerma.errors import ImportChildError, SlotError
from kerma.files import create_private_file, make_private_dirs, private_opener, write_private_bytes

logger = logging.getLogger(__name__)

#: Suffix of spooled files written by a rename (``<sha256>.dcm``: STOW-RS, WADO-RS, and
#: plain files of earlier versions).
SPOOL_SUFFIX = ".dcm"

#: Suffix of slot files (``<instance>-<n>.slot``), written by :meth:`Spool.put`.
SLOT_SUFFIX = ".slot"

#: Names of slots: ``<instance>-<n>.slot``, and the ``<instance>-<n>.dcm`` link that
#: :meth:`Spool.put` adds once the slot is complete.
SLOT_NAME = re.compile(r"[0-9a-f]{16}-[0-9]{8}\.(?:slot|dcm)")

#: Suffix of the lock file each live :class:`Spool` holds (``.<instance>.lock``).
LOCK_SUFFIX = ".lock"

#: Prefix of the folders where earlier versions copied slots for import (removed at
#: recovery; the import now reads the slot itself).
SCRATCH_PREFIX = ".import-"

#: First field of the footer written by earlier versions (no origin).
SLOT_MAGIC = b"KERMASLT"

#: Footer of earlier versions: magic, object length (bytes), SHA-256 of the object.
FOOTER = struct.Struct("<8sQ32s")

#: Size of :data:`FOOTER` in bytes (48).
FOOTER_SIZE = FOOTER.size

#: First field of the footer written now.
FRAME_MAGIC = b"KERMASL2"

#: Footer after the object and its origin: magic, object length (bytes), origin length
#: (bytes of UTF-8), SHA-256 of the object.
FRAME_FOOTER = struct.Struct("<8sQI32s")

#: Size of :data:`FRAME_FOOTER` in bytes (52).
FRAME_FOOTER_SIZE = FRAME_FOOTER.size

#: Longest origin kept, in bytes of UTF-8 (an AE title and an address need far fewer).
MAX_ORIGIN_BYTES = 1024

#: A SHA-256 digest as a spool file name (``<sha256>.dcm``) carries it.
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")

#: Slots created per folder fsync.
SLOT_BATCH = 64

#: The pool is refilled (in the background) when fewer slots than this are free.
SLOT_LOW_WATER = 24


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


@dataclass(frozen=True)
class Footer:
    """What the footer of a spool file records.

    Attributes
    ----------
    length : int
        Length of the object in bytes (it starts the file).
    origin : str or None
        Where the object came from (``None`` in files of earlier versions).
    sha256 : str
        SHA-256 of the object, 64 lowercase hex digits.
    """

    length: int
    origin: str | None
    sha256: str


@dataclass(frozen=True)
class SpooledObject:
    """An object read back from the spool for import.

    Attributes
    ----------
    data : bytes
        The object as received (Part 10: preamble, file meta, data set as sent).
    sha256 : str
        Its SHA-256, 64 lowercase hex digits (from the footer: not computed again).
    origin : str or None
        Where it came from, e.g. ``C-STORE from CT01 at 10.1.2.3``; ``None`` for a
        file of an earlier version that did not record it.
    """

    data: bytes
    sha256: str
    origin: str | None


def pack_footer(length: int, digest: bytes, origin: str | None) -> bytes:
    """Return the origin (UTF-8) and the footer to write after an object.

    Parameters
    ----------
    length : int
        Length of the object in bytes.
    digest : bytes
        Its SHA-256 (32 bytes).
    origin : str or None
        Where it came from (cut to :data:`MAX_ORIGIN_BYTES`).

    Returns
    -------
    bytes
        The origin's UTF-8 bytes followed by :data:`FRAME_FOOTER`.
    """
    text = (origin or "").encode("utf-8", "replace")[:MAX_ORIGIN_BYTES]
    return text + FRAME_FOOTER.pack(FRAME_MAGIC, length, len(text), digest)


def _unpack_tail(tail: bytes, size: int) -> tuple[int, int, bytes] | None:
    """Return (object length, origin length, digest) of a footer ending a file of ``size``."""
    if len(tail) >= FRAME_FOOTER_SIZE:
        magic, length, n_origin, digest = FRAME_FOOTER.unpack_from(
            tail, len(tail) - FRAME_FOOTER_SIZE
        )
        if magic == FRAME_MAGIC and length + n_origin + FRAME_FOOTER_SIZE == size:
            return length, n_origin, digest
    if len(tail) >= FOOTER_SIZE:
        magic, length, digest = FOOTER.unpack_from(tail, len(tail) - FOOTER_SIZE)
        if magic == SLOT_MAGIC and length + FOOTER_SIZE == size:
            return length, 0, digest
    return None


def parse_slot(data: bytes) -> bytes:
    """Return the object held by the bytes of a slot file, checking its footer and hash.

    Parameters
    ----------
    data : bytes
        The whole slot file.

    Returns
    -------
    bytes
        The object as received, without its origin and footer.

    Raises
    ------
    SlotError
        When the footer is missing, its magic is wrong, or the lengths or SHA-256 it
        records do not match the bytes before it (a write that never completed).
    """
    return parse_frame(data).data


def parse_frame(data: bytes) -> SpooledObject:
    """Return the object and origin held by the bytes of a spool file, checking its hash.

    Parameters
    ----------
    data : bytes
        The whole file (object, origin, footer; or object and footer of earlier versions).

    Returns
    -------
    SpooledObject
        The object, its SHA-256 and origin.

    Raises
    ------
    SlotError
        When the footer is missing, its magic is wrong, or the lengths or SHA-256 it
        records do not match the bytes before it (a write that never completed).
    """
    if len(data) < FOOTER_SIZE:
        raise SlotError(f"it holds {len(data)} bytes, fewer than a footer ({FOOTER_SIZE})")
    tail = data[-FRAME_FOOTER_SIZE:]
    found = _unpack_tail(tail, len(data))
    if found is None:
        if SLOT_MAGIC in tail or FRAME_MAGIC in tail:
            raise SlotError("the lengths its footer records do not match its size")
        raise SlotError("its footer magic is missing")
    length, n_origin, digest = found
    content = data[:length]
    if hashlib.sha256(content).digest() != digest:
        raise SlotError("the SHA-256 of its content differs from the one in its footer")
    origin = data[length : length + n_origin].decode("utf-8", "replace") if n_origin else None
    return SpooledObject(content, digest.hex(), origin)


def read_footer(path: Path) -> Footer | None:
    """Return the footer of a spool file, or ``None`` when it has none (no hash check).

    Only the end of the file (footer and origin) is read.

    Parameters
    ----------
    path : pathlib.Path
        A spool file.

    Returns
    -------
    Footer or None
        Lengths, origin and SHA-256; ``None`` for a file without a valid footer.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - FRAME_FOOTER_SIZE))
        found = _unpack_tail(fh.read(FRAME_FOOTER_SIZE), size)
        if found is None:
            return None
        length, n_origin, digest = found
        origin = None
        if n_origin:
            fh.seek(length)
            origin = fh.read(n_origin).decode("utf-8", "replace")
    return Footer(length, origin, digest.hex())


def read_spooled(path: Path) -> SpooledObject:
    """Read a spool file for import: the object, its SHA-256 and origin.

    A file with a footer (slots, and the ``<sha256>.dcm`` files of STOW-RS and
    DICOMweb pull) gives its object without origin and footer, the SHA-256 the footer
    records (not computed again: the spool hashed the object when it arrived, and
    :meth:`Spool.recover` checks the hash of slots a crash left behind) and its
    origin. A plain file of an earlier version (``<sha256>.dcm`` without footer) is
    returned whole, with the digest its name carries.

    Parameters
    ----------
    path : pathlib.Path
        A spool file.

    Returns
    -------
    SpooledObject
        What to import.

    Raises
    ------
    SlotError
        When a slot has no valid footer (a torn write), or the file is shorter than
        its footer says.
    OSError
        When the file cannot be read.
    """
    footer = read_footer(path)
    if footer is None:
        if is_slot(path):
            raise SlotError(f"spool slot {path.name} has no valid footer")
        data = path.read_bytes()
        stem = path.name.removesuffix(SPOOL_SUFFIX)
        digest = stem if _SHA256_NAME.fullmatch(stem) else hashlib.sha256(data).hexdigest()
        return SpooledObject(data, digest, None)
    with path.open("rb") as fh:
        data = fh.read(footer.length)
    if len(data) != footer.length:
        raise SlotError(f"spool file {path.name} is shorter than its footer records")
    return SpooledObject(data, footer.sha256, footer.origin)


def is_slot(path: Path) -> bool:
    """Return whether ``path`` is named like a slot (object + footer), either name."""
    return SLOT_NAME.fullmatch(path.name) is not None


def has_footer(path: Path) -> bool:
    """Return whether a spool file ends with a footer whose magic and lengths match (no hash)."""
    try:
        return read_footer(path) is not None
    except (OSError, struct.error):
        return False


class Spool:
    """A folder of received objects, each durable before :meth:`put` returns.

    Parameters
    ----------
    archive_dir : pathlib.Path
        Kerma's archive folder (``settings.archive_dir``); the spool is its
        ``incoming/`` subfolder and undecodable objects go to ``quarantine/``.

    Attributes
    ----------
    directory_fsyncs : int
        Folder fsyncs run to make new slot names durable (one per batch of
        :data:`SLOT_BATCH` slots).
    file_fsyncs : int
        Slot fsyncs run by :meth:`put` (one per object).

    Notes
    -----
    **Durability with one flush per object.** POSIX ``fsync(fd)`` returns only
    after all data *and metadata* of the open file (its size included: "synchronized
    I/O file integrity completion", XBD 3.382 and XSH ``fsync``) have reached the
    storage device; it does not cover the directory entry that names the file, which
    needs an fsync of the folder. Renaming a new file into place therefore costs two
    flushes. The spool moves the second one off the per-object path:

    1. Ahead of time, a background thread creates a batch of :data:`SLOT_BATCH` empty
       *slot* files (``<instance>-<n>.slot``) and fsyncs the folder once, so their
       names are durable before any of them is used (refilled when fewer than
       :data:`SLOT_LOW_WATER` are free; a :meth:`put` that finds none creates a batch
       itself).
    2. :meth:`put` takes a free slot, writes the object followed by a footer
       (:data:`SLOT_MAGIC`, the object's length and its SHA-256), fsyncs the slot and
       returns. Only then does the caller acknowledge the object. After the fsync it
       also hard-links the slot as ``<instance>-<n>.dcm``, so that ``incoming/*.dcm``
       still lists exactly the objects waiting for import; that link is not needed
       for durability (not fsynced; either name is found after a crash).
    3. After a crash a slot is either empty (free), or ends with a valid footer whose
       length and hash match the bytes before it (complete: its fsync may or may not
       have returned, either way it is imported), or anything else (a write that
       never completed, hence never acknowledged: discarded, logged at INFO). The
       hash makes this independent of how a filesystem orders or tears unsynced
       writes. A slot that has its ``.dcm`` link but fails the check was fsynced
       before the link was made, so the disk damaged it: it is quarantined, not
       discarded.

    Slots are never reused: the worker deletes a slot after its import committed
    (no fsync needed; a slot that reappears after a crash is imported again, which
    the registry's de-duplication by SOP Instance UID makes a no-op). The same bytes
    put twice make two slots, stored once.

    Each :class:`Spool` names its slots with its own instance id and holds a
    ``flock`` on ``.<instance>.lock`` while it lives; :meth:`recover` discards empty
    or torn slots only of instances whose lock is free (a process that died), so
    several processes (``kerma listen``, ``kerma serve``) can share a spool.

    Files written by earlier versions (``<sha256>.dcm``, fsynced then renamed, as
    :class:`~kerma.net.dicomweb.SpooledPartWriter` still does for STOW-RS) are
    complete by construction and are imported as they are.
    """

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = Path(archive_dir)
        self.directory = self.archive_dir / "incoming"
        self.quarantine_dir = self.archive_dir / "quarantine"
        make_private_dirs(self.directory)
        fsync_directory(self.directory.parent)
        self.instance = uuid.uuid4().hex[:16]
        self._sync = threading.Condition()
        self._sync_requested = 0  # tickets handed out to writers, in order
        self._sync_durable = 0  # every ticket up to this one is covered by a folder fsync
        self._sync_running = False
        self.directory_fsyncs = 0
        self.file_fsyncs = 0
        self._pool = threading.Condition()
        self._free: collections.deque[Path] = collections.deque()
        self._next_slot = 0
        self._refilling = False
        self._lock_fh: Any = None
        self._refiller: threading.Thread | None = None
        self._refill_wanted = threading.Event()
        self._closing = threading.Event()

    # -- folder fsyncs ----------------------------------------------------------------------

    def sync_directory(self) -> None:
        """Make every entry created or renamed before this call durable (group commit).

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

    # -- the pool of slots ------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        """Number of empty slots ready for :meth:`put` (their names already durable)."""
        with self._pool:
            return len(self._free)

    def _start(self) -> None:
        """Take this instance's lock and start the refill thread (caller holds the pool)."""
        if self._lock_fh is None:
            staging = self.directory / f".{self.instance}.locking"
            fh = open(staging, "wb", opener=private_opener)  # noqa: SIM115 (kept open)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            os.replace(staging, self.directory / f".{self.instance}{LOCK_SUFFIX}")
            self._lock_fh = fh
        if self._refiller is None or not self._refiller.is_alive():
            self._closing.clear()
            self._refiller = threading.Thread(
                target=self._refill_loop, name="kerma-spool-slots", daemon=True
            )
            self._refiller.start()

    def _refill_loop(self) -> None:
        """Create a batch of slots whenever the pool runs low, until :meth:`close`."""
        while not self._closing.is_set():
            if not self._refill_wanted.wait(0.5):
                continue
            self._refill_wanted.clear()
            if self._closing.is_set():
                return
            try:
                self._refill()
            except OSError:
                logger.exception("Unable to create spool slots in %s", self.directory)

    def _refill(self) -> None:
        """Create :data:`SLOT_BATCH` empty slots, fsync the folder once, add them to the pool.

        Only one refill runs at a time; a caller that finds one running waits for it.

        Raises
        ------
        OSError
            When the slots could not be created or their names flushed to disk.
        """
        with self._pool:
            if self._refilling:
                while self._refilling:
                    self._pool.wait()
                return
            self._refilling = True
            first = self._next_slot
            self._next_slot += SLOT_BATCH
        created: list[Path] = []
        try:
            for n in range(first, first + SLOT_BATCH):
                path = self.directory / f"{self.instance}-{n:08d}{SLOT_SUFFIX}"
                os.close(create_private_file(path))
                created.append(path)
            self.sync_directory()
        except BaseException:
            for path in created:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        finally:
            with self._pool:
                self._refilling = False
                self._pool.notify_all()
        with self._pool:
            self._free.extend(created)
            self._pool.notify_all()

    def _take_slot(self) -> Path:
        """Return an empty slot whose name is durable (creating a batch if none is free)."""
        with self._pool:
            self._start()
            while not self._free:
                if not self._refilling:
                    self._pool.release()
                    try:
                        self._refill()
                    finally:
                        self._pool.acquire()
                else:
                    self._pool.wait()
            slot = self._free.popleft()
            if len(self._free) < SLOT_LOW_WATER and not self._refilling:
                self._refill_wanted.set()
            return slot

    def close(self) -> None:
        """Stop the refill thread, delete the free slots and release the instance lock.

        A later :meth:`put` starts again (new slots, lock taken again).
        """
        self._closing.set()
        self._refill_wanted.set()
        refiller = self._refiller
        if refiller is not None and refiller is not threading.current_thread():
            refiller.join(10)
        with self._pool:
            while self._refilling:
                self._pool.wait()
            free, self._free = list(self._free), collections.deque()
            for path in free:
                with contextlib.suppress(OSError):
                    path.unlink()
            if self._lock_fh is not None:
                with contextlib.suppress(OSError):
                    (self.directory / f".{self.instance}{LOCK_SUFFIX}").unlink()
                self._lock_fh.close()
                self._lock_fh = None
            self._refiller = None

    # -- writing ----------------------------------------------------------------------------

    def put(self, data: bytes | Sequence[bytes], *, origin: str | None = None) -> Path:
        """Write an object durably (one fsync of its slot) and return its spool path.

        The slot holds the object, its origin and a footer (:func:`pack_footer`); the
        object is hashed once, here, and the import uses that digest.

        Parameters
        ----------
        data : bytes or sequence of bytes
            The encoded DICOM object (Part 10 file), possibly in chunks.
        origin : str, optional
            Where it came from (e.g. ``C-STORE from CT01 at 10.1.2.3``), kept with it.

        Returns
        -------
        pathlib.Path
            ``<archive_dir>/incoming/<instance>-<n>.dcm``: a hard link, added after the
            fsync, to the slot ``<instance>-<n>.slot`` that holds the object and its
            footer (the slot itself where hard links are not supported); a new slot
            for every call. Neither name is a plain DICOM file: the worker reads the
            object without its origin and footer (:func:`read_spooled`).

        Raises
        ------
        OSError
            When the object could not be written and flushed to disk (the slot is
            deleted: nothing was acknowledged).
        """
        chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        digest = hashlib.sha256()
        length = 0
        for chunk in chunks:
            digest.update(chunk)
            length += len(chunk)
        footer = pack_footer(length, digest.digest(), origin)
        slot = self._take_slot()
        try:
            fd = os.open(slot, os.O_WRONLY)
            try:
                buffers = [*chunks, footer]
                written = os.writev(fd, buffers)
                if written != length + len(footer):  # short write: finish it chunk by chunk
                    os.lseek(fd, 0, os.SEEK_SET)
                    for chunk in buffers:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                slot.unlink()
            raise
        self.file_fsyncs += 1
        committed = slot.with_suffix(SPOOL_SUFFIX)
        try:
            os.link(slot, committed)
        except OSError:  # a filesystem without hard links: the slot name alone will do
            logger.debug("Unable to link %s to %s", slot.name, committed.name, exc_info=True)
            return slot
        return committed

    # -- reading ----------------------------------------------------------------------------

    def _live_instances(self) -> set[str]:
        """Return the instances whose lock is held (this one included); drop dead locks."""
        live = {self.instance}
        for entry in os.scandir(self.directory):
            if not (entry.name.startswith(".") and entry.name.endswith(LOCK_SUFFIX)):
                continue
            instance = entry.name[1 : -len(LOCK_SUFFIX)]
            if instance == self.instance:
                continue
            try:
                with open(entry.path, "rb") as fh:
                    try:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        live.add(instance)
                        continue
                    os.unlink(entry.path)  # its process is gone; nobody else uses the name
            except FileNotFoundError:
                continue
        return live

    def pending(self) -> list[Path]:
        """Return the spooled objects waiting for import, oldest first.

        Old-format ``<sha256>.dcm`` files, and slots that end with a footer whose
        magic and length match (the hash is checked when the slot is read for import),
        each once (by its ``.dcm`` link when it has one).
        """
        entries: dict[str, os.DirEntry[str]] = {}
        for e in os.scandir(self.directory):
            if e.name.startswith(".") or not e.is_file():
                continue
            path = Path(e.path)
            if is_slot(path):
                if path.stem in entries and path.suffix == SLOT_SUFFIX:
                    continue
                if path.suffix == SPOOL_SUFFIX or has_footer(path):
                    entries[path.stem] = e
            elif e.name.endswith(SPOOL_SUFFIX):
                entries[e.name] = e
        listed = []
        for e in entries.values():
            with contextlib.suppress(FileNotFoundError):
                listed.append((e.stat().st_mtime_ns, e.name, Path(e.path)))
        return [path for _, _, path in sorted(listed)]

    def recover(self) -> list[Path]:
        """Sort out what earlier runs left in the spool; return what must be imported.

        Slots of instances that are gone (lock free or missing): empty ones are
        deleted; torn ones (footer missing or not matching, written by a put that
        never returned, so never acknowledged) are deleted and logged at INFO;
        complete ones are returned. Complete slots of live instances are returned too
        (importing twice is harmless); their empty or torn slots are left alone. Old
        ``<sha256>.dcm`` files are returned as they are. Folders of import copies left
        by earlier versions are removed.

        Returns
        -------
        list of pathlib.Path
            Spooled objects to import, oldest first.
        """
        live = self._live_instances()
        for entry in os.scandir(self.directory):
            instance = entry.name[len(SCRATCH_PREFIX) :]
            if entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir() and instance not in live:
                shutil.rmtree(entry.path, ignore_errors=True)
        keep = []
        for path in self.pending():
            if not is_slot(path):
                keep.append(path)
                continue
            try:
                parse_slot(path.read_bytes())
            except SlotError as exc:
                if path.suffix == SPOOL_SUFFIX:  # linked after its fsync: the disk changed it
                    logger.error("Spool slot %s is damaged (%s); quarantined", path.name, exc)
                    self._quarantine_slot(path)
                elif self._slot_instance(path) not in live:
                    logger.info("Discarding spool slot %s (never acknowledged): %s", path.name, exc)
                    self.remove(path)
                continue
            except FileNotFoundError:
                continue
            keep.append(path)
        kept = {p.stem for p in keep}
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(SLOT_SUFFIX) or entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if not is_slot(path) or self._slot_instance(path) in live or path.stem in kept:
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            if size == 0:
                self.remove(path)
            elif not has_footer(path):
                logger.info("Discarding spool slot %s (never acknowledged): torn write", path.name)
                self.remove(path)
        return keep

    def _quarantine_slot(self, path: Path) -> None:
        """Move a damaged slot to the quarantine folder, for inspection (best effort)."""
        with contextlib.suppress(OSError):
            make_private_dirs(self.quarantine_dir)
            os.replace(path, self.quarantine_dir / path.name)
            self.remove(path)

    @staticmethod
    def _slot_instance(path: Path) -> str:
        """Return the instance id in a slot's name."""
        return path.name.rsplit("-", 1)[0]

    def remove(self, path: Path) -> None:
        """Remove a spool file after its import committed (missing files are ignored).

        For a slot, both its names (``.dcm`` link and ``.slot``) are removed.
        """
        names = [path.with_suffix(SPOOL_SUFFIX), path.with_suffix(SLOT_SUFFIX)]
        for name in names if is_slot(path) else [path]:
            with contextlib.suppress(FileNotFoundError):
                name.unlink()

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
            write_private_bytes(path, data)
        except OSError:
            logger.exception("Unable to keep an undecodable object in %s", self.quarantine_dir)
            return None
        return path


class BytesImporter(Protocol):
    """What the spool needs of the ingest pipeline (``kerma.ingest.pipeline.Importer``)."""

    def import_bytes(
        self,
        data: bytes,
        *,
        sha256: str | None = None,
        source: str = "bytes",
        origin: str | None = None,
        keep_non_dose: bool = True,
        modalities: Collection[str] | None = None,
    ) -> Any:
        """Import one object; return its outcome (``status`` is an ``ImportStatus``)."""
        ...


class SpoolImporter(Protocol):
    """Imports spool files: :class:`InProcessImporter` or :class:`ProcessImporter`."""

    def import_spooled(
        self,
        paths: Sequence[Path],
        *,
        keep_non_dose: bool = True,
        modalities: Collection[str] | None = None,
    ) -> ImportCounts:
        """Import spool files; return the counts; raise when the archive or database fails."""
        ...


@dataclass(frozen=True)
class ImportCounts:
    """Counts of the import of spool files, as returned across a process boundary.

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
    skipped : int
        Objects neither kept nor listed: dose objects of a modality not asked for
        (``kerma pull -m``).
    conflict : int
        Objects held as a version of a stored SOP Instance UID with other content
        (``kerma conflicts``).
    """

    objects_read: int = 0
    n_imported: int = 0
    ignored: int = 0
    rejected: int = 0
    skipped: int = 0
    conflict: int = 0

    def __add__(self, other: ImportCounts) -> ImportCounts:
        """Return the sums of two counts."""
        return ImportCounts(
            *(
                getattr(self, f.name) + getattr(other, f.name)
                for f in dataclasses.fields(ImportCounts)
            )
        )


#: ``ImportOutcome.status`` values (``kerma.ingest.pipeline.ImportStatus``, a StrEnum)
#: counted by :func:`import_spooled_files`.
_STORED_STATUSES = frozenset({"imported", "superseded"})


def import_spooled_files(
    importer: BytesImporter,
    paths: Sequence[Path],
    *,
    keep_non_dose: bool = True,
    modalities: Collection[str] | None = None,
) -> ImportCounts:
    """Import spool files with the pipeline, one read of each file and no copy.

    Each file is read once (:func:`read_spooled`) and its bytes are handed to
    ``importer.import_bytes`` with the SHA-256 recorded in its footer (so they are not
    hashed again) and its origin (where it came from; the spool file name otherwise).

    Parameters
    ----------
    importer : BytesImporter
        The ingest pipeline (``kerma.ingest.pipeline.Importer``).
    paths : sequence of pathlib.Path
        Spool files.
    keep_non_dose : bool, optional
        See ``Importer.import_bytes``. Default ``True``.
    modalities : collection of str, optional
        See ``Importer.import_bytes``. Default: every modality.

    Returns
    -------
    ImportCounts
        The counts of the outcomes.

    Raises
    ------
    SlotError
        When a slot has no valid footer.
    OSError
        When a spool file cannot be read or the archive written.
    sqlalchemy.exc.SQLAlchemyError
        When the database fails (what was imported before stays imported).
    """
    counts = {
        "objects_read": 0,
        "n_imported": 0,
        "ignored": 0,
        "rejected": 0,
        "skipped": 0,
        "conflict": 0,
    }
    for path in paths:
        spooled = read_spooled(path)
        origin = spooled.origin or f"spool file {path.name} (origin not recorded)"
        outcome = importer.import_bytes(
            spooled.data,
            sha256=spooled.sha256,
            source=origin,
            origin=origin,
            keep_non_dose=keep_non_dose,
            modalities=modalities,
        )
        del spooled
        counts["objects_read"] += 1
        status = str(outcome.status)
        if status in _STORED_STATUSES:
            counts["n_imported"] += 1
        elif status in counts:
            counts[status] += 1
    return ImportCounts(**counts)


class InProcessImporter:
    """Import spool files in this process, with an ingest ``Importer``.

    Parameters
    ----------
    importer : BytesImporter
        The ingest pipeline.
    """

    def __init__(self, importer: BytesImporter) -> None:
        self.importer = importer

    def import_spooled(
        self,
        paths: Sequence[Path],
        *,
        keep_non_dose: bool = True,
        modalities: Collection[str] | None = None,
    ) -> ImportCounts:
        """Import spool files; see :func:`import_spooled_files`."""
        return import_spooled_files(
            self.importer, paths, keep_non_dose=keep_non_dose, modalities=modalities
        )


def as_spool_importer(importer: SpoolImporter | BytesImporter) -> SpoolImporter:
    """Return ``importer`` if it imports spool files, else wrap it in :class:`InProcessImporter`."""
    if hasattr(importer, "import_spooled"):
        return importer  # type: ignore[return-value]
    return InProcessImporter(importer)  # type: ignore[arg-type]


class SpoolWorker(threading.Thread):
    """Import spooled files into the registry, in batches, on its own thread.

    Parameters
    ----------
    spool : Spool
        The spool to drain.
    importer_factory : callable
        Returns the importer: a :class:`SpoolImporter` (:class:`ProcessImporter`), or
        the ingest pipeline itself (``kerma.ingest.pipeline.Importer``, run in this
        process through :class:`InProcessImporter`). Called once, on the worker
        thread, so that opening the database never delays the network service.
    keep_non_dose : bool, optional
        When ``True``, objects that hold no dose information are rejected and kept in
        the archive; when ``False`` (default, ``settings.scp_keep_non_dose``) the
        import records them in ``ignored_object`` (``kerma ignored``) and does not
        keep them. The decision is the import's (its extractor raising
        ``NotADoseReportError``), never the network side's.
    modalities : collection of str, optional
        Keep only dose objects of these modalities (``kerma pull -m``); see
        ``Importer.import_bytes``. Default: every modality.
    batch_size : int, optional
        Largest number of files given to one import call. Default 128.
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
    ignored, rejected, skipped : int
        Of those, objects without dose information (not kept), rejected objects, and
        objects of another modality (not kept, ``modalities``), as the import counts.
    quarantined : int
        Files whose import kept failing, moved to the quarantine folder.

    Notes
    -----
    The import records a bad object as a rejection and returns; it raises only when
    the archive or the database fails. The batch is then retried one file at a time,
    so one poisonous file cannot stop the others.
    """

    def __init__(
        self,
        spool: Spool,
        importer_factory: Callable[[], SpoolImporter | BytesImporter],
        *,
        keep_non_dose: bool = False,
        modalities: Collection[str] | None = None,
        batch_size: int = 128,
        retry_delay_s: float = 5.0,
        max_attempts: int = 5,
    ) -> None:
        super().__init__(name="kerma-spool-worker", daemon=True)
        self.spool = spool
        self._importer_factory = importer_factory
        self._importer: SpoolImporter | None = None
        self.keep_non_dose = keep_non_dose
        self.modalities = frozenset(m.upper() for m in modalities) if modalities else None
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
        self.skipped = 0
        self.quarantined = 0
        removed = spool.clean_temporary()
        if removed:
            logger.info("Removed %d unfinished temporary spool files", removed)
        leftovers = spool.recover()
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
        if isinstance(self._importer, ProcessImporter):
            self._importer.close()
        self.spool.close()

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
        torn = [p for p in to_import if self._is_torn(p)]
        if torn:
            self._done(torn)
            to_import = [p for p in to_import if p not in torn]
        if not to_import:
            return
        try:
            self._import(to_import)
        except Exception:  # the import thread's boundary: the files stay, are retried
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
            except Exception:  # the import thread's boundary: the file stays, is retried
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

    def _is_torn(self, path: Path) -> bool:
        """Return whether a queued slot lacks its footer; if so, move it to quarantine.

        Slots are queued only once complete, so this means the disk changed them
        (the hash is checked when the slot is read for import).
        """
        if not is_slot(path) or has_footer(path) or not path.exists():
            return False
        target = self.spool.quarantine_dir / path.name
        with contextlib.suppress(OSError):
            make_private_dirs(self.spool.quarantine_dir)
            os.replace(path, target)
            self.spool.remove(path)  # its other name
        logger.error("Spool slot %s has no valid footer; moved to %s", path.name, target)
        return True

    def _import(self, paths: list[Path]) -> None:
        """Import files with the importer (created on first use) and count the outcomes."""
        if self._importer is None:
            self._importer = as_spool_importer(self._importer_factory())
        counts = self._importer.import_spooled(
            paths, keep_non_dose=self.keep_non_dose, modalities=self.modalities
        )
        with self._lock:
            self.ignored += counts.ignored
            self.rejected += counts.rejected
            self.skipped += counts.skipped
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
            make_private_dirs(self.spool.quarantine_dir)
            os.replace(path, target)
            self.spool.remove(path)  # a slot's other name
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

#: The child process's pipeline, opened once by :func:`_init_child`.
_child_importer: Any = None

#: Niceness added to the import process (``os.nice``): on a machine with few cores the
#: network threads, which must answer each C-STORE, get the CPU first; the import
#: catches up whenever they are idle (what is not imported yet is safe in the spool).
IMPORT_NICENESS = 10


def _init_child(settings_json: str, factory: Callable[[Any], BytesImporter]) -> None:
    """Open the pipeline once in the child process (runs the migrations if needed)."""
    global _child_importer
    import signal as _signal

    from kerma.config import Settings

    with contextlib.suppress(OSError):
        os.nice(IMPORT_NICENESS)

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
    _child_importer = factory(Settings.model_validate_json(settings_json))


def _import_in_child(
    paths: list[str],
    keep_non_dose: bool = True,
    modalities: tuple[str, ...] | None = None,
) -> ImportCounts:
    """Import spool files with the child's pipeline; return the counts.

    The boundary of the import process: any failure is logged with its traceback (in
    the child's log) and raised again as :class:`ImportChildError`, which pickles
    whatever the failure was, so the parent retries the files.
    """
    if not paths:
        return ImportCounts()
    try:
        return import_spooled_files(
            _child_importer,
            [Path(p) for p in paths],
            keep_non_dose=keep_non_dose,
            modalities=modalities,
        )
    except Exception as exc:  # the import process's boundary (STYLE.md B6)
        logger.exception("Unable to import %d spooled objects", len(paths))
        raise ImportChildError(
            f"Unable to import {len(paths)} spooled objects: {type(exc).__name__}: {exc}"
        ) from None


class ProcessImporter:
    """Import spool files in a child process, with a pipeline the child opens itself.

    The DICOM network threads of the SCP then never wait for the Python GIL held by
    extraction and database work (which costs far more CPU per object than
    receiving it), and the child runs at a lower priority (:data:`IMPORT_NICENESS`),
    so on a small machine the import takes the CPU the network threads leave idle.
    Only spool file names cross the process boundary: the child reads each file.

    Parameters
    ----------
    settings : kerma.config.Settings
        Passed to the child (as JSON).
    factory : callable
        A module-level function (pickled by reference) that the child calls once with
        the settings to get its pipeline (``kerma.ingest.pipeline.Importer``), e.g.
        ``kerma.services.intake_importer``.
    """

    def __init__(self, settings: Any, factory: Callable[[Any], BytesImporter]) -> None:
        self._settings_json = settings.model_dump_json()
        self._factory = factory
        self._executor: Any = None

    def start(self) -> None:
        """Start the child process and open its pipeline (waits until it is ready)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_child,
                initargs=(self._settings_json, self._factory),
            )
            self._executor.submit(_import_in_child, []).result()

    def import_spooled(
        self,
        paths: Sequence[Path],
        *,
        keep_non_dose: bool = True,
        modalities: Collection[str] | None = None,
    ) -> ImportCounts:
        """Import spool files in the child; return its counts; raise when it failed.

        Parameters
        ----------
        paths : sequence of pathlib.Path
            Spool files.
        keep_non_dose : bool, optional
            See ``Importer.import_bytes``. Default ``True``.
        modalities : collection of str, optional
            See ``Importer.import_bytes``.

        Raises
        ------
        ImportChildError
            When the import failed in the child (the files stay in the spool).
        concurrent.futures.process.BrokenProcessPool
            When the child died (a new one is started on the next call).
        """
        from concurrent.futures.process import BrokenProcessPool

        self.start()
        wanted = tuple(sorted(modalities)) if modalities else None
        try:
            future = self._executor.submit(
                _import_in_child, [str(p) for p in paths], keep_non_dose, wanted
            )
            result: ImportCounts = future.result()
        except BrokenProcessPool:
            logger.error("The import process died; starting a new one")
            self.close()
            raise
        return result

    def close(self) -> None:
        """Stop the child process (after the import in progress)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

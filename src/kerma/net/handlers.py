"""pynetdicom event handlers of Kerma's Storage SCP: C-STORE and C-ECHO.

:func:`handle_store` follows the staged pattern of pynetdicom's
``apps/qrscp/handlers.py``: a series of small try blocks, each with its own log line
and its own DIMSE status (:mod:`kerma.net.status`):

1. take the encoded data set as sent (no re-encoding) and encode its file meta
   information (:class:`FileMetaEncoder`) — failure: 0xC210;
2. decode the start of the data set, in the transfer syntax of its presentation
   context, to check (0008,0016) 'SOP Class UID' and (0008,0018) 'SOP Instance UID'
   (:func:`check_dataset`) — failure (not DICOM, truncated): 0xC210, and the bytes are
   kept in ``<archive_dir>/quarantine/``; an object whose content tree breaks the
   reader (an SR nested hundreds of levels deep) passes this check and is rejected
   by the import, which keeps it in the archive (``kerma rejects``);
3. write preamble, file meta and data set to a pre-created spool slot (its name
   already durable), with the object's origin (the peer's AE title and address,
   :func:`peer_origin`) and a footer, and fsync the slot
   (:meth:`kerma.net.spool.Spool.put`: one device flush per object) — failure (disk
   full, I/O error): 0xA700;
4. queue it for import and return 0x0000.

Limits (:class:`IntakeLimits`, from the settings; docs/network.md "Limits"): a data
set larger than ``max_object_bytes`` is not kept in memory as it arrives
(:class:`BoundedDataSet` counts and drops what passes the limit) and is refused with
0xA700 and an Error Comment; a deflated data set is inflated in bounded steps
(:mod:`kerma.dicom.inflate`) and refused with 0xA700 when it inflates beyond
``max_inflated_bytes`` (its compressed bytes are kept in ``quarantine/``); a PDU longer
than :data:`MAX_PDU_BYTES` (a peer ignoring the negotiated maximum length) ends the
connection (:func:`guard_association`).

The import itself runs later on the spool worker, so a slow or failing database
never makes a modality wait or lose an object. Logs name SOP Instance UIDs and AE
titles, never patient names or IDs.

May import ``kerma.net.spool`` and ``kerma.net.status``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from kerma.config import DEFAULT_MAX_INFLATED_BYTES, DEFAULT_MAX_OBJECT_BYTES, Settings
from kerma.dicom.inflate import inflate, inflate_head, inflated_size
from kerma.errors import ObjectTooLargeError
from kerma.net import status
from kerma.net.spool import Spool

logger = logging.getLogger(__name__)

#: Preamble and prefix of a DICOM Part 10 file (PS3.10 Section 7.1).
PREAMBLE = b"\x00" * 128 + b"DICM"

#: Sleep of pynetdicom's DUL reactor between events, in seconds (pynetdicom: 0.001),
#: for an association that is the only one receiving objects: the reactor polls its
#: socket, so this is latency added to every C-STORE of a single sender.
DUL_LOOP_DELAY_S = 0.0002

#: Longest DUL reactor sleep of an association receiving objects while others do too,
#: in seconds: with n busy associations each sleeps n x :data:`DUL_LOOP_DELAY_S` up to
#: this (pynetdicom's default), since concurrency, not latency, then sets throughput.
DUL_LOOP_DELAY_BUSY_MAX_S = 0.001

#: DUL reactor sleep of an association that received nothing for
#: :data:`BUSY_WINDOW_S`, in seconds. Every open association polls; measured with 10
#: idle associations, ``kerma listen`` used 69 % of a CPU at 0.2 ms and 30 % at 1 ms.
DUL_LOOP_DELAY_IDLE_S = 0.005

#: An association counts as busy for this long after its last C-STORE, in seconds.
BUSY_WINDOW_S = 0.5


#: Largest PDU the SCP receives, in bytes: its Maximum Length Receive (PS3.8 D.3.3.1,
#: sent in the A-ASSOCIATE-AC) and the longest PDU read from a peer at all (PS3.8 9.3.1
#: gives the PDU length as 4 bytes, so a peer could announce 4 GiB that would be read
#: whole into memory). A PDU longer than this closes the connection.
MAX_PDU_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class IntakeLimits:
    """Size limits of received objects (docs/network.md "Limits").

    Attributes
    ----------
    max_object_bytes : int
        Largest data set received (C-STORE) or part (STOW-RS, WADO-RS), in bytes.
    max_inflated_bytes : int
        Largest inflated data set of a Deflated Explicit VR Little Endian object.
    """

    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        """Return the limits of ``settings.max_object_bytes`` and ``max_inflated_bytes``."""
        return cls(settings.max_object_bytes, settings.max_inflated_bytes)


#: Size beyond which a received data set is held in a temporary file instead of
#: memory, in bytes (:class:`BoundedDataSet`): dose reports and single images stay in
#: memory; a large object costs memory only when it is read back to be spooled, and
#: one over ``max_object_bytes`` costs no more than this.
SPILL_BYTES = 16 * 1024 * 1024


class BoundedDataSet(BytesIO):
    """The buffer of a received DIMSE data set: spilled to disk when large, capped.

    pynetdicom writes each P-DATA fragment of a message's data set to a ``BytesIO``
    (``DIMSEMessage.data_set``) and the C-STORE handler reads it with ``getvalue()``.
    This one keeps up to ``spill_bytes`` in memory, then moves what it holds to an
    anonymous temporary file in ``spill_dir`` (removed when closed, also after a
    crash) and appends there; once the total passes ``max_bytes`` it drops what it
    holds and only counts the rest. A data set over the limit therefore never
    occupies more than ``spill_bytes`` of memory, whatever its size, and the C-STORE
    handler refuses it (:func:`handle_store`).

    Parameters
    ----------
    max_bytes : int
        The largest data set kept, in bytes (``max_object_bytes``).
    spill_dir : pathlib.Path, optional
        Folder of the temporary file (the spool folder: the disk that takes the
        objects); default the system's temporary folder.
    spill_bytes : int, optional
        Size held in memory before spilling (:data:`SPILL_BYTES`).
    """

    def __init__(
        self, max_bytes: int, *, spill_dir: Path | None = None, spill_bytes: int = SPILL_BYTES
    ) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.spill_dir = spill_dir
        self.spill_bytes = spill_bytes
        self.received = 0
        self.overflow = False
        self._file: BinaryIO | None = None

    @property
    def spilled(self) -> bool:
        """Whether the data set is held in a temporary file."""
        return self._file is not None

    def write(self, data: Any) -> int:  # type: ignore[override]
        """Append ``data``, or count and drop it once the data set is over the limit.

        Raises
        ------
        OSError
            When the temporary file cannot be created or written (pynetdicom then
            aborts the association: nothing was acknowledged).
        """
        size = len(data)
        self.received += size
        if self.overflow:
            return size
        if self.received > self.max_bytes:
            self.overflow = True
            self.release()
            return size
        if self._file is not None:
            return self._file.write(data)
        if self.received > self.spill_bytes:
            # closed by release(); pynetdicom keeps the buffer past this call
            self._file = tempfile.TemporaryFile(dir=self.spill_dir)  # noqa: SIM115
            with super().getbuffer() as held:
                self._file.write(held)
            self.seek(0)
            self.truncate(0)
            return self._file.write(data)
        return super().write(data)

    def getvalue(self) -> bytes:
        """Return the data set (read back from the temporary file when spilled)."""
        if self._file is None:
            return super().getvalue()
        self._file.seek(0)
        return self._file.read()

    def release(self) -> None:
        """Free the memory and remove the temporary file (the data set is gone)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.seek(0)
        self.truncate(0)


def guard_association(
    assoc: Any,
    limits: IntakeLimits,
    *,
    spill_dir: Path | None = None,
    max_pdu_bytes: int = MAX_PDU_BYTES,
) -> None:
    """Bound what an association holds in memory while it receives.

    - Every DIMSE message it receives collects its data set in a
      :class:`BoundedDataSet` of ``limits.max_object_bytes`` (pynetdicom's DIMSE
      provider creates the message on its first P-DATA; here it is created first,
      with this buffer).
    - A PDU whose length field exceeds ``max_pdu_bytes`` is not read: the socket read
      fails and pynetdicom closes the connection (Evt17).

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        A new association (``evt.EVT_CONN_OPEN``, or just after ``AE.associate``).
    limits : IntakeLimits
        The object size limit.
    spill_dir : pathlib.Path, optional
        Where large data sets are held while they arrive (:class:`BoundedDataSet`).
    max_pdu_bytes : int, optional
        Longest PDU read (:data:`MAX_PDU_BYTES`).
    """
    from pynetdicom.dimse_messages import DIMSEMessage

    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def receive_primitive(primitive: Any) -> None:
        if dimse.message is None:
            dimse.message = DIMSEMessage()
            dimse.message.data_set = BoundedDataSet(limits.max_object_bytes, spill_dir=spill_dir)
        receive(primitive)

    dimse.receive_primitive = receive_primitive
    sock = getattr(assoc.dul, "socket", None)
    if sock is None:
        return
    recv = sock.recv

    def bounded_recv(nr_bytes: int) -> Any:
        if nr_bytes > max_pdu_bytes:
            logger.warning(
                "Closing the connection of %s: it sent a PDU of %d bytes (longest read: %d)",
                _calling_aet_of(assoc),
                nr_bytes,
                max_pdu_bytes,
            )
            raise OSError(f"PDU of {nr_bytes} bytes is longer than {max_pdu_bytes}")
        return recv(nr_bytes)

    sock.recv = bounded_recv


def _calling_aet_of(assoc: Any) -> str:
    """Return the peer's AE title and address of an association (for logs)."""
    try:
        return f"{str(assoc.requestor.ae_title).strip() or '?'} at {assoc.requestor.address}"
    except AttributeError:
        return "?"


def refusal(code: int, comment: str) -> Dataset:
    """Return a C-STORE response status with an Error Comment (PS3.7 C.4.1.1.4).

    Parameters
    ----------
    code : int
        The status (:mod:`kerma.net.status`).
    comment : str
        (0000,0902) 'Error Comment', cut to its 64 characters (LO).
    """
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


@dataclass
class StoreCounters:
    """Counts of C-STORE outcomes since the SCP started (thread-safe increments)."""

    stored: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, stored: int = 0, failed: int = 0) -> None:
        """Increment the counters."""
        with self._lock:
            self.stored += stored
            self.failed += failed


#: What pydicom raises when the start of a received object cannot be decoded (bytes
#: that are not DICOM, a truncated element, a value of the wrong form).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OverflowError,
    AttributeError,
    NotImplementedError,
    struct.error,
    zlib.error,
)

#: A UID as PS3.5 Section 9.1 allows it: digits and dots, at most 64 characters.
_UID_PATTERN = re.compile(r"[0-9.]{1,64}")

#: Tag, VR and length field of (0002,0003) 'Media Storage SOP Instance UID' in
#: explicit VR little endian (PS3.10 Section 7.1), before its value.
_MEDIA_STORAGE_SOP_INSTANCE_UID_HEADER = b"\x02\x00\x03\x00UI"


class FileMetaEncoder:
    """Encode the File Meta Information of received objects, cached by their form.

    The first object of each (SOP Class UID, Transfer Syntax UID, length of the SOP
    Instance UID) is encoded with pynetdicom's ``create_file_meta`` and
    ``encode_file_meta`` (pydicom's ``write_file_meta_info``); later ones reuse those
    bytes with their own (0002,0003) 'Media Storage SOP Instance UID' put in place,
    which keeps every length and the group length unchanged. Encoding through pydicom
    costs about 0.3 ms of CPU per object, a tenth of what the SCP spends on one small
    RDSR (``benchmarks/scp_throughput.py``); the cached form costs microseconds.
    A SOP Instance UID that is not digits and dots (at most 64) is always encoded by
    pydicom, which warns about it.
    """

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str, int], tuple[bytes, int]] = {}

    def encode(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
        """Return the encoded File Meta Information (from (0002,0000) on, no preamble).

        Parameters
        ----------
        sop_class_uid : str
            (0002,0002) 'Media Storage SOP Class UID' (the request's Affected SOP Class UID).
        sop_instance_uid : str
            (0002,0003) 'Media Storage SOP Instance UID' (the Affected SOP Instance UID).
        transfer_syntax : str
            (0002,0010) 'Transfer Syntax UID' of the presentation context.

        Returns
        -------
        bytes
            The same bytes as pynetdicom's ``encode_file_meta(create_file_meta(...))``.
        """
        if not _UID_PATTERN.fullmatch(sop_instance_uid):
            return self._encode(sop_class_uid, sop_instance_uid, transfer_syntax)
        key = (sop_class_uid, transfer_syntax, len(sop_instance_uid))
        template = self._templates.get(key)
        if template is None:
            encoded = self._encode(sop_class_uid, "9" * len(sop_instance_uid), transfer_syntax)
            offset = encoded.index(_MEDIA_STORAGE_SOP_INSTANCE_UID_HEADER) + 8
            template = self._templates[key] = (encoded, offset)
        encoded, offset = template
        value = sop_instance_uid.encode("ascii")
        return b"".join((encoded[:offset], value, encoded[offset + len(value) :]))

    @staticmethod
    def _encode(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
        """Encode with pynetdicom/pydicom (no cache)."""
        meta = create_file_meta(
            sop_class_uid=uid.UID(sop_class_uid),
            sop_instance_uid=uid.UID(sop_instance_uid),
            transfer_syntax=uid.UID(transfer_syntax),
        )
        return bytes(encode_file_meta(meta))


#: The encoder used by :func:`handle_store` (its cache is shared by all associations).
FILE_META_ENCODER = FileMetaEncoder()


class AssociationActivity:
    """Tune the polling of pynetdicom's DUL reactor to how busy each association is.

    pynetdicom's DUL reactor polls its socket, sleeping ``dul._run_loop_delay`` between
    checks (1 ms by default). A short sleep lowers the latency of every C-STORE of a
    lone sender; many short-sleeping associations burn CPU even when idle, which on a
    small shared machine slows everything, the network threads included. The C-STORE
    handler records each association's last object (:meth:`mark`); :meth:`tune`
    (called every 0.1 s by :class:`~kerma.net.scp.StorageSCP`) then gives a lone busy
    association :data:`DUL_LOOP_DELAY_S`, several busy ones a longer sleep (up to
    :data:`DUL_LOOP_DELAY_BUSY_MAX_S`) and idle ones :data:`DUL_LOOP_DELAY_IDLE_S`.
    """

    def __init__(self) -> None:
        self._last_store: dict[int, float] = {}
        self._lock = threading.Lock()

    def mark(self, assoc: Any) -> None:
        """Record that ``assoc`` received an object now (thread-safe)."""
        with self._lock:
            self._last_store[id(assoc)] = time.monotonic()

    def tune(self, assocs: list[Any]) -> None:
        """Set the DUL reactor sleep of each open association; forget closed ones."""
        now = time.monotonic()
        with self._lock:
            alive = {id(a) for a in assocs}
            for key in [k for k in self._last_store if k not in alive]:
                del self._last_store[key]
            for key in alive:  # a new association counts as busy for its first window
                self._last_store.setdefault(key, now)
            busy = {k for k, t in self._last_store.items() if now - t < BUSY_WINDOW_S}
        busy_delay = min(DUL_LOOP_DELAY_BUSY_MAX_S, DUL_LOOP_DELAY_S * max(1, len(busy)))
        for assoc in assocs:
            delay = busy_delay if id(assoc) in busy else DUL_LOOP_DELAY_IDLE_S
            with contextlib.suppress(AttributeError):
                assoc.dul._run_loop_delay = delay


def _calling_aet(event: Any) -> str:
    """Return the calling AE title of the event's association (for logs)."""
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return "?"


def peer_origin(event: Any) -> tuple[str, str]:
    """Return the peer's AE title and where an object it sends comes from.

    On an association the peer requested (a modality or a PACS sending C-STORE to the
    SCP) the origin is ``C-STORE from <calling AE title> at <address>``; on one Kerma
    requested (the C-STORE sub-operations of a C-GET) it is ``C-GET from <called AE
    title> at <address>:<port>``. This is what ``kerma ignored`` and ``kerma rejects``
    show as the object's source.

    Parameters
    ----------
    event : pynetdicom.events.Event
        A C-STORE event.

    Returns
    -------
    tuple of str
        ``(ae_title, origin)``; ``"?"`` for what pynetdicom does not tell.
    """
    assoc = getattr(event, "assoc", None)
    try:
        if assoc is not None and assoc.is_requestor:
            peer = assoc.acceptor
            ae_title = str(peer.ae_title).strip() or "?"
            return ae_title, f"C-GET from {ae_title} at {peer.address}:{peer.port}"
        peer = assoc.requestor  # type: ignore[union-attr]
        ae_title = str(peer.ae_title).strip() or "?"
        return ae_title, f"C-STORE from {ae_title} at {peer.address}"
    except AttributeError:
        return "?", "C-STORE from an unknown peer"


def _after_sop_instance_uid(tag: Any, vr: Any, length: Any) -> bool:
    """Stop reading after (0008,0018) 'SOP Instance UID' (a ``read_partial`` callback)."""
    return bool(tag > 0x00080018)


def _uids_of(ds: Any) -> tuple[str, str]:
    """Return (0008,0016) and (0008,0018) of a partly decoded dataset, or raise ValueError."""
    try:
        sop_class_uid = str(ds.SOPClassUID)
        sop_instance_uid = str(ds.SOPInstanceUID)
    except AttributeError as exc:
        raise ValueError(
            "it has no (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID"
        ) from exc
    if not sop_class_uid or not sop_instance_uid:
        raise ValueError("its (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID is empty")
    return sop_class_uid, sop_instance_uid


def check_encoded_dataset(encoded: bytes) -> tuple[str, str]:
    """Decode the start of a Part 10 object and return its SOP Class and Instance UIDs.

    Only the file meta and the elements up to (0008,0018) 'SOP Instance UID' are
    decoded, so the check costs the same for every object; the content tree is read
    later by the import, which rejects (and keeps) an object it cannot read.

    Parameters
    ----------
    encoded : bytes
        The object with preamble and file meta information.

    Returns
    -------
    tuple of str
        ``(sop_class_uid, sop_instance_uid)``.

    Raises
    ------
    ValueError
        When the start of the dataset cannot be decoded or lacks either UID.

    See Also
    --------
    check_dataset : the same check of a data set without file meta (what C-STORE sends).
    """
    try:
        ds = read_partial(BytesIO(encoded), stop_when=_after_sop_instance_uid)
        return _uids_of(ds)
    except RecursionError as exc:
        raise ValueError("its sequences are nested too deeply to decode") from exc
    except ValueError:
        raise
    except DECODE_ERRORS as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def check_dataset(
    dataset: bytes,
    transfer_syntax: str,
    *,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> tuple[str, str]:
    """Decode the start of a C-STORE data set and return its SOP Class and Instance UIDs.

    The data set is read as pynetdicom received it (no preamble, no file meta), in the
    transfer syntax of its presentation context, up to (0008,0018) 'SOP Instance UID'
    only. A deflated data set is inflated in bounded steps: its inflated size is
    counted without keeping it (:func:`kerma.dicom.inflate.inflated_size`), then only
    its start is inflated to be read.

    Parameters
    ----------
    dataset : bytes
        The encoded data set (``event.encoded_dataset(include_meta=False)``).
    transfer_syntax : str
        The transfer syntax UID of the presentation context.
    max_inflated_bytes : int, optional
        Largest inflated size of a deflated data set (``settings.max_inflated_bytes``).

    Returns
    -------
    tuple of str
        ``(sop_class_uid, sop_instance_uid)``.

    Raises
    ------
    ObjectTooLargeError
        When a deflated data set inflates to more than ``max_inflated_bytes``.
    ValueError
        When the start of the data set cannot be decoded or lacks either UID.
    """
    ts = uid.UID(transfer_syntax)
    try:
        if ts.is_deflated:
            inflated_size((dataset,), max_bytes=max_inflated_bytes, name="the data set")
            head = inflate_head(dataset)
            try:
                return _read_uids(head, ts)
            except DECODE_ERRORS:  # e.g. the UIDs lie beyond the head
                dataset, _ = inflate(dataset, max_bytes=max_inflated_bytes)
        return _read_uids(dataset, ts)
    except ObjectTooLargeError:
        raise
    except RecursionError as exc:
        raise ValueError("its sequences are nested too deeply to decode") from exc
    except ValueError:
        raise
    except DECODE_ERRORS as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def _read_uids(dataset: bytes, ts: uid.UID) -> tuple[str, str]:
    """Read a data set up to (0008,0018) and return its SOP Class and Instance UIDs."""
    ds = read_dataset(
        BytesIO(dataset), ts.is_implicit_VR, ts.is_little_endian, stop_when=_after_sop_instance_uid
    )
    return _uids_of(ds)


def handle_store(
    event: Any,
    spool: Spool,
    submit: Callable[[Path], None],
    counters: StoreCounters | None = None,
    activity: AssociationActivity | None = None,
    limits: IntakeLimits | None = None,
) -> int | Dataset:
    """Handle a C-STORE request (``evt.EVT_C_STORE``): spool the object durably.

    Parameters
    ----------
    event : pynetdicom.events.Event
        The C-STORE event; ``event.request`` holds the encoded dataset and
        ``event.file_meta`` its file meta information.
    spool : kerma.net.spool.Spool
        Where the object is written and fsynced before success is returned.
    submit : callable
        Queues the spooled path for import (the spool worker's ``submit``).
    counters : StoreCounters, optional
        Updated with the outcome.
    activity : AssociationActivity, optional
        Told that the event's association received an object.
    limits : IntakeLimits, optional
        Size limits (default :class:`IntakeLimits` defaults); the data set was
        collected in a :class:`BoundedDataSet` when the association is guarded
        (:func:`guard_association`).

    Returns
    -------
    int or pydicom.dataset.Dataset
        0x0000 when the object is on disk; 0xC210 when it cannot be decoded;
        0xA700 when it cannot be written; a status data set of 0xA700 with an Error
        Comment when it is larger than ``max_object_bytes`` or inflates beyond
        ``max_inflated_bytes``.

    References
    ----------
    PS3.4 Annex B.2.3 (C-STORE statuses); pynetdicom ``doc_handle_store``.
    """
    request = event.request
    affected_uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
    calling, origin = peer_origin(event)
    if activity is not None:
        activity.mark(event.assoc)
    limits = limits if limits is not None else IntakeLimits()
    received = getattr(request, "DataSet", None)
    if isinstance(received, BoundedDataSet):
        size, over = received.received, received.overflow
    else:  # an association without guard_association: the whole data set is here
        size = _buffer_size(received)
        over = size > limits.max_object_bytes
    if over:
        logger.error(
            "Refused C-STORE %s from %s: the data set is %d bytes, more than max_object_bytes (%d)",
            affected_uid,
            calling,
            size,
            limits.max_object_bytes,
        )
        if counters is not None:
            counters.add(failed=1)
        return refusal(status.OUT_OF_RESOURCES, f"Object exceeds {limits.max_object_bytes} bytes")
    try:
        dataset = event.encoded_dataset(include_meta=False)
        if isinstance(received, BoundedDataSet):
            received.release()  # the data set is in ``dataset`` now
        transfer_syntax = str(event.context.transfer_syntax)
        file_meta = FILE_META_ENCODER.encode(
            str(request.AffectedSOPClassUID), affected_uid, transfer_syntax
        )
        chunks = (PREAMBLE, file_meta, dataset)
    except Exception:
        logger.exception("Unable to read the C-STORE data set of %s from %s", affected_uid, calling)
        if counters is not None:
            counters.add(failed=1)
        return status.CANNOT_UNDERSTAND

    try:
        _, sop_instance_uid = check_dataset(
            dataset, transfer_syntax, max_inflated_bytes=limits.max_inflated_bytes
        )
    except ObjectTooLargeError:
        kept = spool.quarantine(b"".join(chunks), name=affected_uid or "unknown")
        logger.error(
            "Refused C-STORE %s from %s: its deflated data set inflates to more than "
            "max_inflated_bytes (%d); kept in %s",
            affected_uid,
            calling,
            limits.max_inflated_bytes,
            kept,
        )
        if counters is not None:
            counters.add(failed=1)
        return refusal(
            status.OUT_OF_RESOURCES, f"Inflated data set exceeds {limits.max_inflated_bytes} bytes"
        )
    except ValueError as exc:
        kept = spool.quarantine(b"".join(chunks), name=affected_uid or "unknown")
        logger.error(
            "Unable to decode the C-STORE data set %s from %s: %s; kept in %s",
            affected_uid,
            calling,
            exc,
            kept,
        )
        if counters is not None:
            counters.add(failed=1)
        return status.CANNOT_UNDERSTAND
    if affected_uid and sop_instance_uid != affected_uid:
        logger.warning(
            "C-STORE from %s: Affected SOP Instance UID %s differs from the data set's %s",
            calling,
            affected_uid,
            sop_instance_uid,
        )

    try:
        path = spool.put(chunks, origin=origin)
    except OSError:
        logger.exception(
            "Unable to write %s from %s to %s", sop_instance_uid, calling, spool.directory
        )
        if counters is not None:
            counters.add(failed=1)
        return status.OUT_OF_RESOURCES

    submit(path)
    if counters is not None:
        counters.add(stored=1)
    logger.info("Stored %s from %s", sop_instance_uid, calling)
    return status.SUCCESS


def _buffer_size(buffer: Any) -> int:
    """Return the size of a received data set buffer (a ``BytesIO``), 0 when unknown."""
    try:
        return int(buffer.getbuffer().nbytes)
    except (AttributeError, BufferError, ValueError):
        return 0


def handle_open(
    event: Any, limits: IntakeLimits | None = None, spill_dir: Path | None = None
) -> None:
    """Handle a new connection (``evt.EVT_CONN_OPEN``): disable Nagle's algorithm.

    Each C-STORE response is a small write; with Nagle's algorithm on, it can wait for
    the peer's delayed acknowledgement (tens of milliseconds per object). The DUL
    reactor starts with the short sleep :data:`DUL_LOOP_DELAY_S`;
    :class:`AssociationActivity` lengthens it once the association idles. With
    ``limits``, the association is guarded (:func:`guard_association`; large data
    sets are held in ``spill_dir``).
    """
    if limits is not None:
        guard_association(event.assoc, limits, spill_dir=spill_dir)
    try:
        sock = event.assoc.dul.socket.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom's DUL reactor sleeps this long between events (default 1 ms)
        event.assoc.dul._run_loop_delay = DUL_LOOP_DELAY_S
    except (AttributeError, OSError):
        logger.debug("Unable to set TCP_NODELAY on a new connection", exc_info=True)


def handle_echo(event: Any) -> int:
    """Handle a C-ECHO request (``evt.EVT_C_ECHO``): always success (0x0000)."""
    logger.debug("C-ECHO from %s", _calling_aet(event))
    return status.SUCCESS

"""pynetdicom event handlers of Kerma's Storage SCP: C-STORE and C-ECHO.

:func:`handle_store` follows the staged pattern of pynetdicom's
``apps/qrscp/handlers.py``: a series of small try blocks, each with its own log line
and its own DIMSE status (:mod:`kerma.net.status`):

1. take the encoded dataset as sent (no re-encoding) — failure: 0xC210;
2. decode its start to check (0008,0016) 'SOP Class UID' and (0008,0018)
   'SOP Instance UID' — failure (not DICOM, truncated): 0xC210, and the bytes are
   kept in ``<archive_dir>/quarantine/``; an object whose content tree breaks the
   reader (an SR nested hundreds of levels deep) passes this check and is rejected
   by the import, which keeps it in the archive (``kerma rejects``);
3. write it to the spool and fsync it (:meth:`kerma.net.spool.Spool.put`) —
   failure (disk full, I/O error): 0xA700;
4. queue it for import and return 0x0000.

The import itself runs later on the spool worker, so a slow or failing database
never makes a modality wait or lose an object. Logs name SOP Instance UIDs and AE
titles, never patient names or IDs.

May import ``kerma.net.spool`` and ``kerma.net.status``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.filereader import read_partial

from kerma.net import status
from kerma.net.spool import Spool

logger = logging.getLogger(__name__)

#: Sleep of pynetdicom's DUL reactor between events, in seconds (pynetdicom: 0.001).
DUL_LOOP_DELAY_S = 0.0002


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


def _calling_aet(event: Any) -> str:
    """Return the calling AE title of the event's association (for logs)."""
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return "?"


def _after_sop_instance_uid(tag: Any, vr: Any, length: Any) -> bool:
    """Stop reading after (0008,0018) 'SOP Instance UID' (a ``read_partial`` callback)."""
    return bool(tag > 0x00080018)


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
    """
    try:
        ds = read_partial(BytesIO(encoded), stop_when=_after_sop_instance_uid)
        sop_class_uid = str(ds.SOPClassUID)
        sop_instance_uid = str(ds.SOPInstanceUID)
    except RecursionError as exc:
        raise ValueError("its sequences are nested too deeply to decode") from exc
    except AttributeError as exc:
        raise ValueError(
            "it has no (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID"
        ) from exc
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    if not sop_class_uid or not sop_instance_uid:
        raise ValueError("its (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID is empty")
    return sop_class_uid, sop_instance_uid


def handle_store(
    event: Any,
    spool: Spool,
    submit: Callable[[Path], None],
    counters: StoreCounters | None = None,
) -> int:
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

    Returns
    -------
    int
        0x0000 when the object is on disk; 0xC210 when it cannot be decoded;
        0xA700 when it cannot be written.

    References
    ----------
    PS3.4 Annex B.2.3 (C-STORE statuses); pynetdicom ``doc_handle_store``.
    """
    request = event.request
    affected_uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
    calling = _calling_aet(event)
    try:
        encoded = event.encoded_dataset()
    except Exception:
        logger.exception("Unable to read the C-STORE data set of %s from %s", affected_uid, calling)
        if counters is not None:
            counters.add(failed=1)
        return status.CANNOT_UNDERSTAND

    try:
        _, sop_instance_uid = check_encoded_dataset(encoded)
    except ValueError as exc:
        kept = spool.quarantine(encoded, name=affected_uid or "unknown")
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
        path = spool.put(encoded)
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


def handle_open(event: Any) -> None:
    """Handle a new connection (``evt.EVT_CONN_OPEN``): disable Nagle's algorithm.

    Each C-STORE response is a small write; with Nagle's algorithm on, it can wait for
    the peer's delayed acknowledgement (tens of milliseconds per object).
    """
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

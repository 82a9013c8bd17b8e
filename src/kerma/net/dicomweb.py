"""DICOMweb: pull with QIDO-RS / WADO-RS, and the STOW-RS store step.

:class:`DicomwebQueryClient` implements :class:`kerma.net.pull.QueryClient` with
``dicomweb_client.DICOMwebClient`` (``search_for_studies``, ``search_for_series``,
``search_for_instances``). :func:`pull_dicomweb` retrieves the planned instances by
WADO-RS asking for the stored transfer syntax (``Accept: multipart/related;
type="application/dicom"; transfer-syntax=*``, PS3.18 8.7.3.5) and streams the
response's parts to the spool as they arrive, byte for byte: the archive keeps the
objects as the PACS holds them, never decoded and re-encoded.

:class:`StowReceiver` parses a ``multipart/related`` body as it arrives and streams
each part to the spool, checks it and fsyncs it (:func:`finish_part`): the storage
step of the STOW-RS endpoint (:mod:`kerma.web.routes.dicomweb`), before its response,
and of a WADO-RS retrieval. :func:`store_response` builds the PS3.18 Store Instances
Response.

May import ``kerma.config``, ``kerma.errors`` and ``kerma.net``.
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_partial, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian
from python_multipart.decoders import Base64Decoder, QuotedPrintableDecoder

from kerma.config import Settings
from kerma.dicom.inflate import inflate_head, inflated_size
from kerma.errors import ObjectTooLargeError
from kerma.files import make_private_dirs, private_opener
from kerma.net import status
from kerma.net.handlers import DECODE_ERRORS, IntakeLimits
from kerma.net.pull import (
    ImporterFactory,
    KnownInstances,
    ProgressCallback,
    PullCriteria,
    PullError,
    PullSummary,
    RetrieveItem,
    _nothing_known,
    drain_worker,
    plan_pull,
)
from kerma.net.spool import SPOOL_SUFFIX, Spool, SpoolWorker, fsync_directory, pack_footer

logger = logging.getLogger(__name__)


def _json_to_dict(item: dict[str, Any]) -> dict[str, Any]:
    """Return a DICOM JSON object (PS3.18 F.2) as a keyword dict (values as text)."""
    ds = Dataset.from_json(item)
    out: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.VR == "SQ":
            continue
        out[elem.keyword] = [str(v) for v in elem.value] if elem.VM > 1 else str(elem.value or "")
    return out


class DicomwebQueryClient:
    """QIDO-RS queries with dicomweb-client.

    Parameters
    ----------
    url : str
        DICOMweb service root, e.g. ``http://pacs:8042/dicom-web``.

    Attributes
    ----------
    session : requests.Session
        The HTTP session of the queries (``dicomweb_client.session_utils``), used for
        the WADO-RS retrievals too.
    """

    def __init__(self, url: str) -> None:
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import create_session

        self.url = url.rstrip("/")
        self.session = create_session()
        self.client = DICOMwebClient(url=self.url, session=self.session)

    def find_studies(self, criteria: PullCriteria, *, by_modality: bool) -> list[dict[str, Any]]:
        """Return the studies matching the date range (and ModalitiesInStudy)."""
        filters: dict[str, Any] = {}
        if criteria.study_date:
            filters["StudyDate"] = criteria.study_date
        if by_modality and criteria.modalities:
            filters["ModalitiesInStudy"] = ",".join(criteria.modalities)
        try:
            found = self.client.search_for_studies(
                search_filters=filters, fields=["ModalitiesInStudy", "StudyDate"]
            )
        except (OSError, ValueError) as exc:  # requests errors are OSErrors
            raise PullError(f"Unable to query {self.url}: {type(exc).__name__}: {exc}.") from exc
        return [_json_to_dict(item) for item in found]

    def find_series(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Return the series of a study."""
        found = self.client.search_for_series(
            study_instance_uid=study_instance_uid,
            fields=["NumberOfSeriesRelatedInstances", "SeriesDescription"],
        )
        return [_json_to_dict(item) for item in found]

    def find_instances(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[dict[str, Any]]:
        """Return the instances of a series."""
        found = self.client.search_for_instances(
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            fields=["SOPClassUID", "InstanceNumber"],
        )
        return [_json_to_dict(item) for item in found]


#: Accept header of a WADO-RS retrieval: the objects in the transfer syntax the origin
#: server holds them in, unchanged (PS3.18 8.7.3.5.2, ``transfer-syntax=*``).
WADO_ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: Accept header used when a server refuses ``transfer-syntax=*`` (406): its default
#: transfer syntax (Explicit VR Little Endian), which may be a re-encoding.
WADO_ACCEPT_DEFAULT = 'multipart/related; type="application/dicom"'

#: Bytes of a WADO-RS response read at a time.
WADO_CHUNK_BYTES = 1024 * 1024

#: Seconds to wait for a WADO-RS server to answer (connect, read).
WADO_TIMEOUT_S = (20.0, 300.0)


def parse_content_type(content_type: str) -> email.message.EmailMessage:
    """Return a message holding only the Content-Type header, to read its parameters."""
    message = email.message.EmailMessage()
    message["Content-Type"] = content_type
    return message


def _wado_url(root: str, item: RetrieveItem) -> str:
    """Return the WADO-RS URL of an instance, or of a series (PS3.18 10.4.1)."""
    url = f"{root}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}"
    return f"{url}/instances/{item.sop_instance_uid}" if item.sop_instance_uid else url


def retrieve_to_spool(
    session: Any,
    url: str,
    spool: Spool,
    worker: SpoolWorker,
    *,
    origin: str,
    limits: IntakeLimits | None = None,
) -> list[StoredPart]:
    """Retrieve objects by WADO-RS and stream each one, as sent, to the spool.

    Parameters
    ----------
    session : requests.Session
        The HTTP session.
    url : str
        WADO-RS URL of an instance or a series.
    spool : Spool
        Where the objects are written (fsynced) before they are queued for import.
    worker : SpoolWorker
        Imports them.
    origin : str
        Where they came from, kept with each (e.g. ``WADO-RS http://pacs/dicom-web``).
    limits : IntakeLimits, optional
        Per-object size limits (as for STOW-RS); an object over ``max_object_bytes``
        ends the retrieval with :class:`~kerma.errors.ObjectTooLargeError`.

    Returns
    -------
    list of StoredPart
        One per object received (``failure_reason`` set when it could not be kept).

    Raises
    ------
    OSError
        When the server cannot be reached or answers with an error status
        (``requests`` errors are ``OSError``).
    ValueError
        When the response is not a DICOM object or a well-formed multipart body.
    """
    response = session.get(
        url, headers={"Accept": WADO_ACCEPT_AS_STORED}, stream=True, timeout=WADO_TIMEOUT_S
    )
    if response.status_code == 406:  # the server cannot send objects as it holds them
        response.close()
        logger.warning("%s refused transfer-syntax=*; retrieving in its default syntax", url)
        response = session.get(
            url, headers={"Accept": WADO_ACCEPT_DEFAULT}, stream=True, timeout=WADO_TIMEOUT_S
        )
    with response:
        response.raise_for_status()
        message = parse_content_type(response.headers.get("Content-Type", ""))
        media = message.get_content_type()
        chunks = response.iter_content(WADO_CHUNK_BYTES)
        if media == "multipart/related":
            boundary = message.get_boundary()
            if not boundary:
                raise ValueError("the multipart response has no boundary parameter")
            part_type = message.get_param("type")
            receiver = StowReceiver(
                boundary,
                spool,
                worker,
                root_type=str(part_type) if part_type else None,
                origin=origin,
                limits=limits,
            )
            try:
                for chunk in chunks:
                    receiver.feed(chunk)
                return receiver.finish()
            except BaseException:
                receiver.abort()
                raise
        if media in STOW_PART_MEDIA_TYPES:  # a bare object, as some servers send
            writer = SpooledPartWriter(spool, limits)
            try:
                for chunk in chunks:
                    writer.write(chunk)
            except BaseException:
                writer.discard()
                raise
            return [finish_part(writer, worker, origin=origin)]
        raise ValueError(f"the response is {media or 'of no media type'}, not DICOM")


def pull_dicomweb(
    settings: Settings,
    url: str,
    criteria: PullCriteria,
    *,
    importer_factory: ImporterFactory,
    known: KnownInstances = _nothing_known,
    progress: ProgressCallback | None = None,
) -> PullSummary:
    """Query a DICOMweb service (QIDO-RS) and retrieve its dose objects (WADO-RS).

    The objects are retrieved in the transfer syntax the server holds them in and
    spooled byte for byte (:func:`retrieve_to_spool`), so the archive holds what the
    server sent.

    Parameters
    ----------
    settings : Settings
        ``archive_dir`` (spool) and ``scp_keep_non_dose``.
    url : str
        DICOMweb service root.
    criteria : PullCriteria
        Dates and modalities.
    importer_factory : callable
        Returns the importer of the objects retrieved (see :func:`kerma.net.pull.pull_dimse`).
    known : callable, optional
        Returns which of the SOP Instance UIDs it is given are already in the registry.
    progress : callable, optional
        Called with ``(phase, done, total)``.

    Returns
    -------
    PullSummary
        The counts.

    Raises
    ------
    PullError
        When the service cannot be queried.
    """
    client = DicomwebQueryClient(url)
    plan = plan_pull(client, criteria, known=known, progress=progress)
    summary = PullSummary(plan=plan)
    if not plan.items:
        return summary
    spool = Spool(settings.archive_dir)
    worker = SpoolWorker(
        spool,
        importer_factory,
        keep_non_dose=settings.scp_keep_non_dose,
        modalities=criteria.modalities or None,
    )
    worker.start()
    origin = f"WADO-RS {client.url}"
    try:
        for done, item in enumerate(plan.items, start=1):
            what = item.sop_instance_uid or item.series_instance_uid
            try:
                parts = retrieve_to_spool(
                    client.session,
                    _wado_url(client.url, item),
                    spool,
                    worker,
                    origin=origin,
                    limits=IntakeLimits.from_settings(settings),
                )
            except (OSError, ValueError) as exc:  # requests errors are OSErrors
                summary.failed += 1
                summary.warnings.append(f"Unable to retrieve {what}: {type(exc).__name__}: {exc}")
                logger.warning(summary.warnings[-1])
            else:
                for part in parts:
                    if part.failure_reason is None:
                        summary.retrieved += 1
                    else:
                        summary.failed += 1
                        summary.warnings.append(
                            f"Unable to keep an object of {what}: status "
                            f"0x{part.failure_reason:04X}"
                        )
            if progress is not None:
                progress("retrieve", done, len(plan.items))
        summary.imported = drain_worker(worker, progress)
        summary.skipped_other_modality = worker.skipped
    finally:
        worker.stop()
    return summary


# -- STOW-RS -------------------------------------------------------------------------------

#: Media types of a part that is stored (PS3.18 10.5.1.1; octet-stream from lax senders).
STOW_PART_MEDIA_TYPES = frozenset({"application/dicom", "application/octet-stream"})

#: Largest preamble (RFC 2046 5.1.1: text before the first boundary) skipped, in bytes.
MAX_PREAMBLE_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredPart:
    """The outcome of one part of a STOW-RS request."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure_reason: int | None = None
    #: refused for a size limit (max_object_bytes, max_inflated_bytes): HTTP 413
    too_large: bool = False


class SpooledPartWriter:
    """Write one received object to a temporary file in the spool folder, hashing it.

    The file is ``<archive_dir>/incoming/.<uuid>.tmp``, the name
    :meth:`kerma.net.spool.Spool.clean_temporary` removes after a crash (such a file
    was never acknowledged). :meth:`commit` appends the object's origin and footer
    (:func:`kerma.net.spool.pack_footer`, as :meth:`kerma.net.spool.Spool.put` writes
    with bytes held in memory; here the object never is), fsyncs the file and renames
    it to ``<sha256>.dcm``. The object is hashed once, as it is written.

    Parameters
    ----------
    spool : Spool
        The spool the object goes to.
    limits : IntakeLimits, optional
        :meth:`write` refuses to go past ``max_object_bytes``; :meth:`read_uids`
        refuses a deflated data set that inflates beyond ``max_inflated_bytes``.

    Raises
    ------
    OSError
        When the temporary file cannot be created.
    """

    def __init__(self, spool: Spool, limits: IntakeLimits | None = None) -> None:
        self.spool = spool
        self.limits = limits if limits is not None else IntakeLimits()
        self.path = spool.directory / f".{uuid.uuid4().hex}.tmp"
        self._digest = hashlib.sha256()
        self._fh: BinaryIO | None = open(self.path, "wb", opener=private_opener)  # noqa: SIM115
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data``; return its length.

        Raises
        ------
        ObjectTooLargeError
            When the object would pass ``limits.max_object_bytes`` (nothing is written;
            :meth:`discard` it).
        OSError
            When the data cannot be written (disk full, I/O error).
        """
        assert self._fh is not None, "write after commit or discard"
        if self.size + len(data) > self.limits.max_object_bytes:
            raise ObjectTooLargeError(
                f"Unable to store the object: it is larger than "
                f"{self.limits.max_object_bytes:,} bytes (max_object_bytes).",
                limit_bytes=self.limits.max_object_bytes,
            )
        self._fh.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Hand the written data to the operating system (readable by :meth:`read_uids`)."""
        if self._fh is not None:
            self._fh.flush()

    def read_uids(self, *, with_study: bool = False) -> tuple[str, str, str | None]:
        """Decode the start of the object and return its UIDs.

        Only the file meta and the elements up to (0008,0018) 'SOP Instance UID' (or
        (0020,000D) 'Study Instance UID' when ``with_study``) are read, as in
        :func:`kerma.net.handlers.check_encoded_dataset`. A deflated data set is first
        inflated in bounded steps and counted (:func:`kerma.dicom.inflate.inflated_size`),
        then only its start is inflated to be read; pydicom's reader would inflate it
        whole.

        Returns
        -------
        tuple
            ``(sop_class_uid, sop_instance_uid, study_instance_uid or None)``.

        Raises
        ------
        ObjectTooLargeError
            When a deflated data set inflates to more than ``limits.max_inflated_bytes``.
        ValueError
            When the start cannot be decoded or lacks the SOP Class or Instance UID.
        """
        last = 0x0020000D if with_study else 0x00080018

        def stop(tag: Any, vr: Any, length: Any) -> bool:
            return bool(tag > last)

        self.flush()
        try:
            with self.path.open("rb") as fh:
                ds = self._read_deflated_head(fh, stop)
                if ds is None:
                    fh.seek(0)
                    ds = read_partial(fh, stop_when=stop)
            sop_class_uid = str(ds.get("SOPClassUID", ""))
            sop_instance_uid = str(ds.get("SOPInstanceUID", ""))
            study = str(ds.get("StudyInstanceUID", "")) if with_study else None
        except ObjectTooLargeError:
            raise
        except RecursionError as exc:
            raise ValueError("its sequences are nested too deeply to decode") from exc
        except DECODE_ERRORS as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
        if not sop_class_uid or not sop_instance_uid:
            raise ValueError("it has no (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID")
        return sop_class_uid, sop_instance_uid, study

    def _read_deflated_head(self, fh: BinaryIO, stop: Any) -> Dataset | None:
        """Return the start of a deflated object read in bounded memory, else ``None``.

        ``None`` when the object is not deflated, or its UIDs lie beyond the inflated
        head (then pydicom reads it: its inflated size is known to be within the limit).

        Raises
        ------
        ObjectTooLargeError
            When it inflates to more than ``limits.max_inflated_bytes``.
        """
        try:
            read_preamble(fh, False)
            meta = _read_file_meta_info(fh)
        except DECODE_ERRORS:
            return None
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return None
        offset = fh.tell()
        fh.seek(offset)
        inflated_size(
            iter(lambda: fh.read(WADO_CHUNK_BYTES), b""),
            max_bytes=self.limits.max_inflated_bytes,
            name="the part",
        )
        fh.seek(offset)
        head = inflate_head(iter(lambda: fh.read(64 * 1024), b""))
        try:
            ds = read_dataset(BytesIO(head), False, True, stop_when=stop)
        except DECODE_ERRORS:
            return None
        if "SOPInstanceUID" not in ds:
            return None
        ds.file_meta = meta
        return ds

    def commit(self, *, origin: str | None = None) -> Path:
        """Add origin and footer, fsync, rename to ``<sha256>.dcm``, fsync the folder.

        Parameters
        ----------
        origin : str, optional
            Where the object came from (e.g. ``STOW-RS from 10.1.2.3``).

        Returns
        -------
        pathlib.Path
            The spool file, to queue for import.

        Raises
        ------
        OSError
            When the object could not be flushed to disk (the temporary file is removed).
        """
        assert self._fh is not None, "commit after commit or discard"
        digest = self._digest.digest()
        path = self.spool.directory / f"{digest.hex()}{SPOOL_SUFFIX}"
        try:
            self._fh.write(pack_footer(self.size, digest, origin))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            if path.exists():  # the same bytes were spooled (and fsynced) before
                self.path.unlink()
                return path
            os.replace(self.path, path)
        except BaseException:
            self.discard()
            raise
        fsync_directory(self.spool.directory)
        return path

    def quarantine(self, *, name: str) -> Path | None:
        """Move the object to ``<archive_dir>/quarantine/`` for inspection (best effort)."""
        target = self.spool.quarantine_dir / f"{name}-{self._digest.hexdigest()[:16]}.dcm"
        try:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            make_private_dirs(self.spool.quarantine_dir)
            os.replace(self.path, target)
        except OSError:
            logger.exception("Unable to keep an undecodable object in %s", target.parent)
            self.discard()
            return None
        return target

    def discard(self) -> None:
        """Close and remove the temporary file (nothing was acknowledged)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        with contextlib.suppress(OSError):
            self.path.unlink()


def finish_part(
    writer: SpooledPartWriter,
    worker: SpoolWorker,
    *,
    study_instance_uid: str | None = None,
    origin: str | None = None,
) -> StoredPart:
    """Check a fully received part, commit it to the spool (fsynced) and queue its import.

    Parameters
    ----------
    writer : SpooledPartWriter
        The part, written to its temporary file.
    worker : SpoolWorker
        Imports it (with the worker's ``keep_non_dose``, i.e. ``settings.scp_keep_non_dose``).
    study_instance_uid : str, optional
        For ``POST /studies/{study}``: the part must belong to this study.
    origin : str, optional
        Where it came from, kept with it (``STOW-RS from <client>``, ``WADO-RS <url>``).

    Returns
    -------
    StoredPart
        With ``failure_reason`` (a :mod:`kerma.net.status` code) when it failed: 0xC000
        when its start cannot be decoded (the bytes are kept in ``quarantine/``), 0x0122
        when it belongs to another study, 0xA700 when it could not be written to disk.
    """
    try:
        sop_class_uid, sop_instance_uid, study = writer.read_uids(
            with_study=study_instance_uid is not None
        )
    except ObjectTooLargeError as exc:
        logger.error("STOW-RS part refused: %s", exc)
        writer.quarantine(name="inflate-limit")
        return StoredPart(None, None, status.OUT_OF_RESOURCES, too_large=True)
    except ValueError as exc:
        logger.error("STOW-RS part cannot be decoded: %s", exc)
        writer.quarantine(name="stow")
        return StoredPart(None, None, status.CANNOT_UNDERSTAND_GENERIC)
    except OSError:
        logger.exception("Unable to read back a STOW-RS part from the spool")
        writer.discard()
        return StoredPart(None, None, status.OUT_OF_RESOURCES)
    if study_instance_uid is not None and study != study_instance_uid:
        writer.discard()
        return StoredPart(sop_class_uid, sop_instance_uid, status.SOP_CLASS_NOT_SUPPORTED)
    try:
        path = writer.commit(origin=origin)
    except OSError:
        logger.exception("Unable to write STOW-RS object %s to the spool", sop_instance_uid)
        return StoredPart(sop_class_uid, sop_instance_uid, status.OUT_OF_RESOURCES)
    worker.submit(path)
    logger.info("Stored %s (%s)", sop_instance_uid, origin or "DICOMweb")
    return StoredPart(sop_class_uid, sop_instance_uid)


class StowReceiver:
    """Parse a ``multipart/related`` STOW-RS body as it arrives and spool each part.

    The body is given in chunks to :meth:`feed` and parsed incrementally by
    ``python_multipart.MultipartParser`` (the parser behind FastAPI's forms, which
    works for any multipart body given its boundary). Each ``application/dicom`` part
    is streamed to a temporary file in the spool folder
    (:class:`SpooledPartWriter`), then checked, fsynced and queued for import by
    :func:`finish_part` as soon as its closing boundary is read; memory holds at most
    one chunk, whatever the size of the body or of a part.

    A preamble before the first boundary (RFC 2046 5.1.1) is skipped; a part with
    ``Content-Transfer-Encoding: base64`` or ``quoted-printable`` is decoded on the
    fly; a part of another media type is skipped; a part without a Content-Type
    takes the request's ``type`` parameter.

    Parameters
    ----------
    boundary : str
        The ``boundary`` parameter of the request's Content-Type.
    spool : Spool
        Where the parts are written.
    worker : SpoolWorker
        Imports them.
    study_instance_uid : str, optional
        For ``POST /studies/{study}``: the parts must belong to this study.
    root_type : str, optional
        The ``type`` parameter of the request (media type of parts without one).
    origin : str, optional
        Where the parts come from, kept with each (``STOW-RS from <client>``).
    limits : IntakeLimits, optional
        Per-part limits: a part passing ``max_object_bytes`` is dropped as it arrives
        and :meth:`feed` raises :class:`~kerma.errors.ObjectTooLargeError` (reading
        stops: HTTP 413); a deflated part inflating beyond ``max_inflated_bytes`` fails
        with 0xA700 and ``too_large``.

    Notes
    -----
    A part is acknowledged only in the response, but it is spooled (and imported) as
    soon as it is complete: if the body later turns out to be malformed, the parts
    before the error are imported all the same, and sending them again is harmless
    (the import is idempotent by SOP Instance UID).
    """

    def __init__(
        self,
        boundary: str,
        spool: Spool,
        worker: SpoolWorker,
        *,
        study_instance_uid: str | None = None,
        root_type: str | None = None,
        origin: str | None = None,
        limits: IntakeLimits | None = None,
    ) -> None:
        from python_multipart.multipart import MultipartParser

        self.origin = origin
        self.limits = limits if limits is not None else IntakeLimits()
        self.boundary = boundary.encode("latin-1")
        self.spool = spool
        self.worker = worker
        self.study_instance_uid = study_instance_uid
        self.root_type = (root_type or "application/dicom").lower()
        self.stored: list[StoredPart] = []
        self.skipped = 0
        self.is_complete = False
        self._head = b""
        self._in_body = False
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._writer: SpooledPartWriter | None = None
        self._sink: Any = None
        self._failure: int | None = None
        self._parser = MultipartParser(
            self.boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # -- feeding --------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse the next chunk of the body (blocking file I/O: run it off the event loop).

        Raises
        ------
        ObjectTooLargeError
            When a part passes ``limits.max_object_bytes`` (it is dropped and recorded
            as failed with 0xA700; stop reading the body).
        ValueError
            When the body is not a well-formed multipart body with this boundary.
        """
        from python_multipart.exceptions import MultipartParseError

        if not self._in_body:
            data = self._skip_preamble(data)
            if not data:
                return
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise ValueError(f"the multipart body is malformed ({exc})") from exc

    def _skip_preamble(self, data: bytes) -> bytes:
        """Return the body from its first boundary on (``b""`` while it is not found yet)."""
        self._head += data
        delimiter = b"--" + self.boundary
        start = 0
        while (found := self._head.find(delimiter, start)) != -1:
            if found == 0 or self._head[found - 1 : found] == b"\n":
                self._in_body = True
                rest, self._head = self._head[found:], b""
                return rest
            start = found + 1
        if len(self._head) > MAX_PREAMBLE_BYTES:
            raise ValueError(f"no boundary {self.boundary.decode('latin-1')!r} in the body")
        return b""

    def finish(self) -> list[StoredPart]:
        """Return the outcome of every stored part once the whole body was fed.

        Raises
        ------
        ValueError
            When the body ended before its closing boundary, or held no
            ``application/dicom`` part.
        """
        if not self.is_complete:
            self.abort()
            if not self._in_body:
                raise ValueError(f"no boundary {self.boundary.decode('latin-1')!r} in the body")
            raise ValueError("the body ends before its closing boundary")
        if not self.stored:
            raise ValueError("no application/dicom part")
        return self.stored

    def abort(self) -> None:
        """Remove the part being received, if any (the request failed or was cut)."""
        if self._writer is not None:
            self._writer.discard()
            self._writer = None
        self._sink = None

    # -- python-multipart callbacks -------------------------------------------------------

    def _on_part_begin(self) -> None:
        """Start a part: forget the previous one's headers."""
        self._headers = {}
        self._field.clear()
        self._value.clear()
        self._failure = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        """Collect a header name (may come in pieces)."""
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        """Collect a header value (may come in pieces)."""
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        """Keep one header, names in lower case."""
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        """Open the part's temporary file, or skip a part of another media type."""
        media = self._headers.get("content-type", self.root_type).split(";")[0].strip().lower()
        if media not in STOW_PART_MEDIA_TYPES:
            self.skipped += 1
            logger.info("STOW-RS part of media type %r skipped", media)
            return
        try:
            self._writer = SpooledPartWriter(self.spool, self.limits)
        except OSError:
            logger.exception("Unable to create a spool file for a STOW-RS part")
            self._failure = status.OUT_OF_RESOURCES
            return
        encoding = self._headers.get("content-transfer-encoding", "binary").lower()
        if encoding == "base64":
            self._sink = Base64Decoder(self._writer)
        elif encoding == "quoted-printable":
            self._sink = QuotedPrintableDecoder(self._writer)
        else:
            self._sink = self._writer

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        """Write a piece of the part to its file (no copy for binary parts)."""
        sink = self._sink
        if sink is None:
            return
        if sink is self._writer:
            piece: bytes | memoryview = memoryview(data)[start:end]
        elif isinstance(sink, Base64Decoder):
            # MIME base64 is broken into lines (RFC 2045 6.8); the decoder wants them joined
            piece = data[start:end].translate(None, b" \t\r\n")
        else:
            piece = data[start:end]
        try:
            sink.write(piece)
        except ObjectTooLargeError as exc:
            logger.error("STOW-RS part refused: %s", exc)
            self.abort()
            self.stored.append(StoredPart(None, None, status.OUT_OF_RESOURCES, too_large=True))
            raise
        except OSError:
            logger.exception("Unable to write a STOW-RS part to the spool")
            self.abort()
            self._failure = status.OUT_OF_RESOURCES
        except ValueError as exc:  # python_multipart.exceptions.DecodeError
            logger.error("STOW-RS part cannot be decoded: %s", exc)
            self.abort()
            self._failure = status.CANNOT_UNDERSTAND_GENERIC

    def _on_part_end(self) -> None:
        """Check, commit and queue the part that just ended."""
        writer, sink = self._writer, self._sink
        self._writer = self._sink = None
        if self._failure is not None:
            self.stored.append(StoredPart(None, None, self._failure))
            return
        if writer is None:
            return  # skipped part
        try:
            if sink is not writer:
                sink.finalize()
        except (OSError, ValueError) as exc:
            logger.error("STOW-RS part cannot be decoded: %s", exc)
            writer.discard()
            self.stored.append(StoredPart(None, None, status.CANNOT_UNDERSTAND_GENERIC))
            return
        self.stored.append(
            finish_part(
                writer,
                self.worker,
                study_instance_uid=self.study_instance_uid,
                origin=self.origin,
            )
        )

    def _on_end(self) -> None:
        """Note that the closing boundary was read."""
        self.is_complete = True


def store_response(parts: list[StoredPart], *, retrieve_url: str | None = None) -> dict[str, Any]:
    """Return the PS3.18 Store Instances Response (DICOM JSON) of stored parts.

    ``ReferencedSOPSequence`` (0008,1199) lists the stored instances and
    ``FailedSOPSequence`` (0008,1198) the others with their Failure Reason (0008,1197).
    """
    ds = Dataset()
    if retrieve_url:
        ds.RetrieveURL = retrieve_url
    referenced, failed = [], []
    for part in parts:
        item = Dataset()
        item.ReferencedSOPClassUID = part.sop_class_uid or ""
        item.ReferencedSOPInstanceUID = part.sop_instance_uid or ""
        if part.failure_reason is None:
            referenced.append(item)
        else:
            item.FailureReason = part.failure_reason
            failed.append(item)
    if referenced:
        ds.ReferencedSOPSequence = referenced
    if failed:
        ds.FailedSOPSequence = failed
    return ds.to_json_dict()

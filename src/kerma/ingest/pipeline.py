"""The ingest pipeline: archive -> read -> extract -> reconcile -> store, one object at a time.

Each object is handled on its own and in its own transaction: it is either fully in the
registry or not at all, and one bad object never stops a batch. Objects are streamed:
a parsed dataset is dropped as soon as its record is extracted, and a batch keeps only
counters (:class:`ImportSummary`), so memory does not grow with the number of objects.

Outcomes: ``imported``; ``superseded`` (stored, but an existing report already holds
all its irradiation events); ``already-present`` (same SOP Instance UID and the same
content: no-op); ``rejected`` (with a reason, kept in the archive, listed in
``rejected_object``), which includes a *conflicting duplicate* (same SOP Instance UID as
a stored report but different extracted content, e.g. another study date: the first
copy stays in the registry, the new one is archived and listed so a physicist hears of
it; a copy that differs only in encoding, such as another transfer syntax, is
``already-present``); ``ignored`` (only with
``keep_non_dose=False``: a readable object without dose information, not archived,
listed in ``ignored_object`` with where it came from); ``skipped`` (not kept, not
listed: a file that is not DICOM at all, such as a sidecar JSON file or notes in an
imported folder, or, with ``modalities``, a dose object of another modality).

A rejection of bytes that are already listed (the same file imported again) updates
the listing and is counted as *already listed*, not as a new rejection.

An object is hashed once: a caller that received it and hashed it already (the spool
of the network intake) passes the SHA-256 to :meth:`Importer.import_bytes`, which
archives the bytes under it without hashing them again; nothing is written anywhere
but the archive.

Every CT image (CT Image Storage, Enhanced CT Image Storage) also gets a
``patient_size_measurement`` row, in the same transaction as its report, rejection or
ignored row: the water-equivalent diameter of an axial image (AAPM Report 220) or the
patient width on a localizer (:mod:`kerma.dicom.size`). Only CT images have their
pixel data read.

May import ``kerma.dicom``, ``kerma.db``, ``kerma.records``, ``kerma.errors``,
``kerma.config`` and ``kerma.ingest``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import re
import struct
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kerma import __version__
from kerma.config import Settings
from kerma.db import queries
from kerma.db.models import DoseReport as DoseReportRow
from kerma.db.models import IrradiationEvent as EventRow
from kerma.db.models import RejectedObject, Study
from kerma.db.session import session_scope
from kerma.dicom.extract import read_and_extract
from kerma.dicom.reader import DicomObject
from kerma.dicom.size import PatientSize, is_ct_image, measure_patient_size
from kerma.errors import IngestWarning
from kerma.ingest.archive import Archive, ArchivedObject, sha256_of
from kerma.ingest.pseudonym import Pseudonymizer
from kerma.ingest.reconcile import event_key, reconcile_study
from kerma.ingest.sources import is_dicom, iter_sources
from kerma.records import EVENT_SCALAR_FIELDS, DoseReport, PatientIdentity, Rejection

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Version written to ``dose_report.extractor_version``.
EXTRACTOR_VERSION = __version__

#: How many times a transaction is retried after a lock timeout or deadlock.
MAX_ATTEMPTS = 4

#: Rejection examples kept by a summary (the counts are complete).
MAX_EXAMPLES = 50

#: Differing fields named in the reason of a conflicting copy (the rest are counted).
MAX_DIFFERENCES_SHOWN = 3

#: What reading a quirky object, measuring it, or a bug of an extractor may raise
#: (pydicom decoding errors, values of the wrong type, missing keys or items,
#: arithmetic on odd values, pixel data without a decoder, too deep a tree): the object
#: is rejected with the error named (or its measurement skipped) and the batch goes on.
#: Infrastructure failures (``OSError``, database errors, ``MemoryError``) are not in
#: it: they stop the import, whose object stays where it came from and is retried.
READER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
    NotImplementedError,
    RuntimeError,
    AssertionError,
    EOFError,
    struct.error,
)

#: Keys of an extracted record (``DoseReport.to_dict()``) that describe the file or its
#: transfer rather than the dose data; left out when two copies of one SOP Instance UID
#: are compared.
TRANSFER_KEYS = frozenset({"file", "status", "warnings"})


class ImportStatus(StrEnum):
    """What happened to one object."""

    IMPORTED = "imported"
    SUPERSEDED = "superseded"
    ALREADY_PRESENT = "already-present"
    REJECTED = "rejected"
    IGNORED = "ignored"
    SKIPPED = "skipped"


class SkipKind(StrEnum):
    """Why an object was skipped (``ImportOutcome.kind`` of a ``skipped`` outcome)."""

    NOT_DICOM = "not-dicom"
    OTHER_MODALITY = "other-modality"


@dataclass(frozen=True)
class ImportOutcome:
    """The result of importing one object.

    Attributes
    ----------
    source : str
        The file name as given (or the ``source`` of :meth:`Importer.import_bytes`).
    status : ImportStatus
        What happened.
    sop_instance_uid, kind, modality : str or None
        Of the object, when known; for a ``skipped`` outcome ``kind`` is a
        :class:`SkipKind` and for a rejection of bytes that are not readable DICOM
        ``"unreadable"``.
    reason : str or None
        Why it was rejected (``status`` ``rejected``), ignored (``ignored``) or
        skipped (``skipped``).
    archive_sha256 : str or None
        Archive key of its bytes (``None`` when the file could not be read at all, and
        for ignored objects, which are not archived).
    dose_report_id, study_id : int or None
        Rows written or found.
    number_of_events : int
        Irradiation events the object holds.
    superseded_reports : int
        Earlier reports of the study that this one superseded.
    already_listed : bool
        For a rejection: the same bytes were already listed as rejected (an import
        of the same file again), so this is not a new rejection.
    """

    source: str
    status: ImportStatus
    sop_instance_uid: str | None = None
    kind: str | None = None
    modality: str | None = None
    reason: str | None = None
    archive_sha256: str | None = None
    dose_report_id: int | None = None
    study_id: int | None = None
    number_of_events: int = 0
    superseded_reports: int = 0
    already_listed: bool = False

    @property
    def is_stored(self) -> bool:
        """Whether the object is in the registry after this call."""
        return self.status in {
            ImportStatus.IMPORTED,
            ImportStatus.SUPERSEDED,
            ImportStatus.ALREADY_PRESENT,
        }


_UID_RE = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def reason_group(outcome: ImportOutcome) -> str:
    """Return the rejection reason without file name and UIDs, for grouping."""
    reason = outcome.reason or "unknown"
    if outcome.source:
        reason = reason.replace(outcome.source, "<file>")
    return _UID_RE.sub("<uid>", reason)


@dataclass
class ImportSummary:
    """Counts of a batch import (bounded memory: no per-object list beyond examples).

    Attributes
    ----------
    objects_read : int
        Objects handled (files found, or byte strings given).
    imported : collections.Counter
        Imported objects by (kind, modality), superseded-on-arrival ones included.
    already_present : int
        Objects whose SOP Instance UID was in the registry already (no-op).
    superseded : int
        Objects stored but superseded at once (an older report arriving late).
    replaced : int
        Earlier reports that newly imported objects superseded.
    rejected : int
        Objects rejected (new rejections and those already listed).
    rejected_already_listed : int
        Of those, objects whose bytes were already listed as rejected (the same
        file imported again): the listing is updated, not added to.
    unreadable : int
        Rejected objects that were not readable DICOM at all.
    rejections_by_reason : collections.Counter
        Rejection reasons (file names and UIDs masked) and their counts.
    new_rejections_by_reason : collections.Counter
        The same, of the rejections that were not listed before.
    rejection_examples : list of (str, str)
        The first :data:`MAX_EXAMPLES` (file, reason) pairs.
    ignored : int
        Readable objects without dose information that were not kept
        (``keep_non_dose=False`` only; listed in ``ignored_object``).
    skipped : collections.Counter
        Objects neither kept nor listed, by :class:`SkipKind`: files that are not
        DICOM at all (``not-dicom``), dose objects of a modality not asked for
        (``other-modality``).
    """

    objects_read: int = 0
    imported: Counter[tuple[str, str]] = field(default_factory=Counter)
    already_present: int = 0
    superseded: int = 0
    replaced: int = 0
    rejected: int = 0
    rejected_already_listed: int = 0
    unreadable: int = 0
    rejections_by_reason: Counter[str] = field(default_factory=Counter)
    new_rejections_by_reason: Counter[str] = field(default_factory=Counter)
    rejection_examples: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def n_imported(self) -> int:
        """Objects newly stored (including those superseded on arrival)."""
        return sum(self.imported.values())

    @property
    def rejected_new(self) -> int:
        """Objects rejected that were not listed as rejected before."""
        return self.rejected - self.rejected_already_listed

    @property
    def skipped_not_dicom(self) -> int:
        """Files skipped because they are not DICOM at all."""
        return self.skipped[SkipKind.NOT_DICOM]

    def add(self, outcome: ImportOutcome) -> None:
        """Count one outcome."""
        self.objects_read += 1
        if outcome.status in {ImportStatus.IMPORTED, ImportStatus.SUPERSEDED}:
            self.imported[(outcome.kind or "?", outcome.modality or "?")] += 1
            self.replaced += outcome.superseded_reports
            if outcome.status is ImportStatus.SUPERSEDED:
                self.superseded += 1
        elif outcome.status is ImportStatus.ALREADY_PRESENT:
            self.already_present += 1
        elif outcome.status is ImportStatus.IGNORED:
            self.ignored += 1
        elif outcome.status is ImportStatus.SKIPPED:
            self.skipped[outcome.kind or SkipKind.NOT_DICOM] += 1
        else:
            self.rejected += 1
            if outcome.already_listed:
                self.rejected_already_listed += 1
            if outcome.kind == "unreadable":
                self.unreadable += 1
            self.rejections_by_reason[reason_group(outcome)] += 1
            if not outcome.already_listed:
                self.new_rejections_by_reason[reason_group(outcome)] += 1
            if len(self.rejection_examples) < MAX_EXAMPLES:
                self.rejection_examples.append((outcome.source, outcome.reason or ""))


@dataclass
class ReprocessSummary:
    """Counts of :meth:`Importer.reprocess`.

    Attributes
    ----------
    reports : int
        Dose reports re-extracted and updated.
    reports_failing : int
        Dose reports that the current extractors reject (kept unchanged).
    rejected_now_imported : int
        Previously rejected objects that now import (their rejection is cleared).
    rejected_still : int
        Previously rejected objects still rejected (reason updated).
    missing_from_archive : int
        Rows whose archived file is missing.
    """

    reports: int = 0
    reports_failing: int = 0
    rejected_now_imported: int = 0
    rejected_still: int = 0
    missing_from_archive: int = 0


class _Unreadable(Rejection):
    """A rejection of bytes that are not readable DICOM at all."""


@dataclass
class _NotDose(Rejection):
    """A readable object that holds no dose information (``NotADoseReportError``)."""

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    size: PatientSize | None = None


@dataclass
class _Extracted:
    """An extracted record with what the identity gave, the identity itself dropped."""

    report: DoseReport
    pseudonym: str | None
    is_non_patient: bool
    size: PatientSize | None = None
    accession_pseudonym: str | None = None


class Importer:
    """Import objects into one registry database and archive.

    Thread-safe: every call opens its own sessions.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions (:func:`kerma.db.session.make_session_factory` with ``write=True``).
    settings : Settings
        ``strict`` turns extraction warnings into rejections.
    archive : Archive
        Where objects are kept.
    pseudonymizer : Pseudonymizer
        Pseudonym key and non-patient patterns.
    derive : callable, optional
        Called as ``derive(session, study_ids)`` inside each object's transaction with
        the ids of the studies it touched (also those a CT image's size measurement
        touches); ``kerma.services`` passes ``services.derive.refresh_studies``.
    """

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: Settings,
        archive: Archive,
        pseudonymizer: Pseudonymizer,
        derive: Callable[[Session, set[int]], object] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.archive = archive
        self.pseudonymizer = pseudonymizer
        self.derive = derive

    def _derive(self, session: Session, study_ids: set[int], size: PatientSize | None) -> None:
        """Run the ``derive`` hook for the touched studies (and those of a size's study UID)."""
        if self.derive is None:
            return
        if size is not None:
            study_ids = study_ids | queries.study_ids_for_uid(
                session, study_instance_uid=size.study_instance_uid
            )
        if study_ids:
            self.derive(session, study_ids)

    # -- public entry points -------------------------------------------------------------

    def import_paths(
        self,
        paths: Iterable[str | PathLike[str]],
        *,
        progress: Callable[[ImportOutcome], None] | None = None,
        keep_non_dose: bool = True,
    ) -> ImportSummary:
        """Import files and folders (recursively); see :meth:`import_file`.

        Files that are not DICOM at all (sidecar JSON files, notes, an index) are
        skipped and counted (``summary.skipped``), neither archived nor listed.

        Parameters
        ----------
        paths : iterable of path-like
            Files and folders, in order.
        progress : callable, optional
            Called with each object's outcome.
        keep_non_dose : bool, optional
            Archive and reject objects without dose information (default ``True``);
            ``False`` lists them in ``ignored_object`` instead (see :meth:`import_bytes`),
            with their path relative to the folder given as where they came from.

        Returns
        -------
        ImportSummary
            The counts.

        Raises
        ------
        OSError
            When the archive cannot be written.
        """
        summary = ImportSummary()
        for found in iter_sources(paths):
            outcome = self.import_file(found.path, keep_non_dose=keep_non_dose, origin=found.origin)
            summary.add(outcome)
            if progress is not None:
                progress(outcome)
        return summary

    def import_file(
        self,
        path: str | PathLike[str],
        *,
        keep_non_dose: bool = True,
        origin: str | None = None,
    ) -> ImportOutcome:
        """Import one file; a file that cannot be read is rejected (not archived).

        ``keep_non_dose`` and ``origin`` as :meth:`import_bytes` (``source`` is the
        path as given).

        Raises
        ------
        OSError
            When the archive cannot be written.
        """
        name = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            reason = (
                f"Unable to read {name}: {exc.strerror or exc}. Check the path and permissions."
            )
            return ImportOutcome(name, ImportStatus.REJECTED, reason=reason, kind="unreadable")
        return self.import_bytes(data, source=name, origin=origin, keep_non_dose=keep_non_dose)

    def import_bytes(
        self,
        data: bytes,
        *,
        sha256: str | None = None,
        source: str = "bytes",
        origin: str | None = None,
        keep_non_dose: bool = True,
        modalities: Collection[str] | None = None,
    ) -> ImportOutcome:
        """Archive, extract, reconcile and store one object held in memory.

        The bytes are archived exactly as given (the sender's bytes) and nothing else
        is written; they are hashed at most once (not at all when ``sha256`` is given).

        Parameters
        ----------
        data : bytes
            The DICOM object (Part 10 file, or a bare dataset).
        sha256 : str, optional
            The SHA-256 of ``data`` (64 lowercase hex digits) when the caller has it
            already (the spool computed it when the object arrived); the bytes are
            then not hashed again. Default: computed here.
        source : str, optional
            Its name, kept with a rejection (``rejected_object.file_name``). Default
            ``"bytes"``.
        origin : str, optional
            Where it came from, kept with an ignored object (``ignored_object.source``):
            e.g. the calling AE title and address of a C-STORE, or a path relative to
            an imported folder. Default ``source``.
        keep_non_dose : bool, optional
            What to do with a readable object that holds no dose information (the
            extractor raises :class:`~kerma.errors.NotADoseReportError`, e.g. an MR
            image or a CT image without CTDIvol): ``True`` (default) archives it and
            rejects it with the reason, as ``kerma import`` does; ``False`` does not
            archive it and writes an ``ignored_object`` row (SOP, Study and Series
            Instance UIDs, SOP class, modality, reason, origin) instead, status
            ``ignored`` (for a Storage SCP that receives whole studies). Unreadable
            or malformed objects are archived and rejected either way. Objects are
            archived before anything is stored in both cases.
        modalities : collection of str, optional
            Keep only dose objects of these modalities (upper case, e.g. ``{"CT"}``):
            a dose object whose report modality and event modalities are all other
            ones is skipped (``skipped``, kind ``other-modality``), neither archived
            nor listed. For ``kerma pull -m``: a dose report of a study that holds
            nothing but SR objects tells its modality only once it is read. Default:
            every modality.

        Returns
        -------
        ImportOutcome
            What happened. A bad object is rejected with a reason, never raised. Bytes
            that are not DICOM at all (:func:`kerma.ingest.sources.is_dicom`) are
            ``skipped`` (kind ``not-dicom``), neither archived nor listed.

        Raises
        ------
        OSError
            When the archive cannot be written (nothing was acknowledged or stored).
        sqlalchemy.exc.SQLAlchemyError
            When the database fails (the object stays archived; import it again).
        """
        if not is_dicom(data):
            return ImportOutcome(
                source,
                ImportStatus.SKIPPED,
                kind=SkipKind.NOT_DICOM,
                reason=f"{source} is not a DICOM file (no DICM prefix and no SOP Class UID)",
            )
        origin = origin or source
        # non-dose objects and other modalities may be dropped, so they are archived only
        # once that is decided
        wanted = frozenset(m.upper() for m in modalities) if modalities else None
        archived = (
            self.archive.store(data, sha256=sha256) if keep_non_dose and wanted is None else None
        )
        if archived is not None:
            sha256 = archived.sha256
        elif sha256 is None:
            sha256 = sha256_of(data)
        with session_scope(self.session_factory) as session:
            row = queries.get_dose_report_by_sha256(session, sha256=sha256)
            if row is not None:
                return ImportOutcome(
                    source,
                    ImportStatus.ALREADY_PRESENT,
                    sop_instance_uid=row.sop_instance_uid,
                    kind=row.kind,
                    archive_sha256=sha256,
                    dose_report_id=row.id,
                    study_id=row.study_id,
                )
        result = self._extract(data, source)
        if wanted is not None and isinstance(result, _Extracted):
            found = _report_modalities(result.report)
            if found and not found & wanted:
                return ImportOutcome(
                    source,
                    ImportStatus.SKIPPED,
                    sop_instance_uid=result.report.sop_instance_uid,
                    kind=SkipKind.OTHER_MODALITY,
                    modality=result.report.study.modality,
                    reason=(
                        f"{source} is a dose object of {', '.join(sorted(found))}, not of "
                        f"{', '.join(sorted(wanted))}"
                    ),
                )
        if not keep_non_dose and isinstance(result, _NotDose) and result.sop_instance_uid:
            return self._ignore(result, origin)
        if archived is None:
            archived = self.archive.store(data, sha256=sha256)
        del data
        if isinstance(result, Rejection):
            return self._reject(result, archived, source)
        return self._store_new(result, archived, source)

    # -- steps -----------------------------------------------------------------------------

    def _extract(self, data: bytes, source: str) -> _Extracted | Rejection:
        """Read and extract one object; return its record or the rejection.

        The object is decoded once (:func:`kerma.dicom.extract.read_and_extract`: decode
        and truncation check in one pass); a CT image (dose header or not) also gets its
        patient size measured on the same decode (its pixel data added, not re-read).
        """
        result, obj = self._extract_record(data, source)
        if obj is not None:
            if isinstance(result, _Extracted) and is_ct_image(result.report.sop_class_uid):
                result.size = self._measure(obj, result.report.sop_instance_uid)
            elif isinstance(result, _NotDose) and is_ct_image(result.sop_class_uid):
                result.size = self._measure(obj, result.sop_instance_uid)
        return result

    def _measure(self, obj: DicomObject, sop_instance_uid: str | None) -> PatientSize | None:
        """Return the patient size measured on a CT image, or ``None`` with a warning.

        Never raises: a measurement must not fail an import (e.g. compressed pixel
        data without a decoder installed).
        """
        measured: PatientSize | None = None
        reason: str | None = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = measure_patient_size(obj.with_pixels())
        except READER_ERRORS as exc:  # a measurement must not stop an import (STYLE.md B6)
            logger.debug("patient size traceback", exc_info=True)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            measured, reason = result.size, result.reason
        if measured is None:
            message = (
                f"Patient size not measured on CT image {sop_instance_uid}: {reason}. It is "
                "imported without it; SSDE of its study uses another size source if any."
            )
            logger.warning(message)
            warnings.warn(message, IngestWarning, stacklevel=2)
        return measured

    def _extract_record(
        self, data: bytes, source: str
    ) -> tuple[_Extracted | Rejection, DicomObject | None]:
        """Read and extract one object's dose record; return it (or the rejection) and the
        object read."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = read_and_extract(data, name=source)
        obj = got.obj
        ids = (got.sop_class_uid, got.sop_instance_uid)
        if got.outcome == "unreadable":
            reason = (got.reason or "").replace("<stream>", source)
            return _Unreadable(reason=reason, file=source), obj
        if got.outcome == "truncated":
            assert obj is not None
            return _Unreadable(
                f"Unable to read {source}: the file is incomplete ({obj.truncation}); it was "
                "probably cut short in transfer or on disk. Send or copy it again; the partial "
                "object is kept in the archive.",
                source,
                *ids,
            ), obj
        if got.outcome == "not-dose":
            return _NotDose(
                got.reason or "",
                source,
                *ids,
                study_instance_uid=got.study_instance_uid,
                series_instance_uid=got.series_instance_uid,
                modality=got.modality,
            ), obj
        if got.outcome == "rejected":
            return Rejection(got.reason or "", source, *ids), obj
        if got.outcome == "reader-error" or got.report is None:
            exc = got.error
            return Rejection(
                f"Unable to extract dose data from {source}: internal reader error "
                f"({type(exc).__name__}: {exc}). The object is kept in the archive; "
                "run 'kerma reprocess' after upgrading Kerma, and report it if it persists.",
                source,
                *ids,
            ), obj
        report = got.report
        if not report.sop_instance_uid:
            return Rejection(
                f"Unable to import {source}: it has no (0008,0018) 'SOP Instance UID', so it "
                "cannot be told apart from other objects. Fix the sending device.",
                source,
                report.sop_class_uid,
            ), obj
        if self.settings.strict and report.warnings:
            return Rejection(
                f"Rejected in strict mode (KERMA_STRICT): {source} "
                f"({report.sop_instance_uid}) read with warnings: " + "; ".join(report.warnings),
                source,
                report.sop_class_uid,
                report.sop_instance_uid,
            ), obj
        identity = report.identity
        extracted = _Extracted(
            report=report,
            pseudonym=self.pseudonymizer.pseudonym(identity),
            is_non_patient=self.pseudonymizer.is_non_patient(
                identity, report.study.study_description
            ),
            accession_pseudonym=self.pseudonymizer.accession_pseudonym(
                report.study.accession_number
            ),
        )
        report.identity = PatientIdentity()  # identity goes no further than this
        if not self.settings.accession_in_clear:  # nor the clear accession number
            report.study.accession_number = None
        return extracted, obj

    def _reject(self, rejection: Rejection, archived: ArchivedObject, source: str) -> ImportOutcome:
        """Record a rejection (one row per archived object) and return its outcome.

        The outcome says whether the bytes were listed as rejected already.
        """

        def work(session: Session) -> bool:
            listed = queries.get_rejected_object(session, sha256=archived.sha256) is not None
            queries.add_rejected_object(
                session,
                sha256=archived.sha256,
                archive_path=archived.relative_path,
                file_name=source,
                reason=rejection.reason,
                sop_class_uid=rejection.sop_class_uid,
                sop_instance_uid=rejection.sop_instance_uid,
            )
            if isinstance(rejection, _NotDose) and rejection.size is not None:
                _add_size(session, rejection.size)
                self._derive(session, set(), rejection.size)
            return listed

        already_listed = self._run(work)
        logger.info("rejected %s (%s)", rejection.sop_instance_uid or archived.sha256, source)
        return ImportOutcome(
            source,
            ImportStatus.REJECTED,
            sop_instance_uid=rejection.sop_instance_uid,
            kind="unreadable" if isinstance(rejection, _Unreadable) else None,
            reason=rejection.reason,
            archive_sha256=archived.sha256,
            already_listed=already_listed,
        )

    def _ignore(self, item: _NotDose, source: str) -> ImportOutcome:
        """Record a readable object without dose data as ignored (not archived).

        ``source`` is where it came from (``ignored_object.source``).
        """
        sop_uid = item.sop_instance_uid
        assert sop_uid is not None

        def work(session: Session) -> None:
            queries.add_ignored_object(
                session,
                sop_instance_uid=sop_uid,
                sop_class_uid=item.sop_class_uid,
                study_instance_uid=item.study_instance_uid,
                series_instance_uid=item.series_instance_uid,
                modality=item.modality,
                reason=item.reason,
                source=source,
            )
            if item.size is not None:
                _add_size(session, item.size)
                self._derive(session, set(), item.size)

        self._run(work)
        logger.info("ignored %s (no dose information)", sop_uid)
        return ImportOutcome(
            source,
            ImportStatus.IGNORED,
            sop_instance_uid=sop_uid,
            modality=item.modality,
            reason=item.reason,
        )

    def _conflict_reason(
        self,
        existing: DoseReportRow,
        item: _Extracted,
        archived: ArchivedObject,
        source: str,
    ) -> str | None:
        """Return why a copy of a stored SOP Instance UID is rejected, or ``None`` if equal.

        The copies are compared by what Kerma extracts from them, not byte for byte or
        element by element: the new copy's record (``DoseReport.to_dict()``) against the
        stored report's ``content``, leaving out what describes the file or its transfer
        (``file``, ``status`` and the reading ``warnings``, which depend on the transfer
        syntax and VR encoding; a warning that matters changes a value). The same object
        sent in another transfer syntax (e.g. ``storescu -xi``, Implicit VR Little
        Endian, where private elements become UN) is therefore the same object. A
        different patient (pseudonym of Patient ID and issuer) is a difference too.

        When the stored ``content`` was written by another extractor version, the first
        copy is re-extracted from the archive so that both sides come from this version.
        """
        if existing.archive_sha256 == archived.sha256:
            return None
        new = _comparable(item.report.to_dict())
        stored: dict[str, Any] | None = existing.content
        if existing.extractor_version != EXTRACTOR_VERSION or stored is None:
            stored = self._stored_content(existing) or stored
        differences = _content_differences(_comparable(stored or {}), new)
        patient = existing.study.patient if existing.study is not None else None
        if item.pseudonym and patient is not None and patient.pseudonym != item.pseudonym:
            differences.insert(0, "patient (pseudonymised Patient ID and issuer)")
        if not differences:
            return None
        shown = "; ".join(differences[:MAX_DIFFERENCES_SHOWN])
        if len(differences) > MAX_DIFFERENCES_SHOWN:
            shown += f"; and {len(differences) - MAX_DIFFERENCES_SHOWN} more"
        first = existing.source or existing.archive_path
        received = existing.received_at.strftime("%Y-%m-%d %H:%M") if existing.received_at else "?"
        return (
            f"Not imported: {source} has the same SOP Instance UID {existing.sop_instance_uid} "
            f"as an object already in the registry ({first}, received {received}) but "
            f"different content ({shown}). The registry keeps the first copy; this copy is "
            f"kept in the archive ({archived.relative_path}; the first copy is "
            f"{existing.archive_path}). First check both copies with 'kerma inspect' (the "
            "archive paths are relative to KERMA_ARCHIVE_DIR). A corrected object should "
            "carry a new SOP Instance UID: if this copy is the corrected one, have the "
            "device or PACS send it again with a new SOP Instance UID."
        )

    def _stored_content(self, existing: DoseReportRow) -> dict[str, Any] | None:
        """Return the record of a stored report re-extracted from its archived copy.

        ``None`` when the archived copy is missing or no longer extracts.
        """
        try:
            data = self.archive.read(existing.archive_path)
        except OSError:
            return None
        result, _ = self._extract_record(data, existing.source or existing.archive_path)
        if not isinstance(result, _Extracted):
            return None
        content: dict[str, Any] = result.report.to_dict()
        return content

    def _store_new(self, item: _Extracted, archived: ArchivedObject, source: str) -> ImportOutcome:
        """Store a new report in one transaction and reconcile its study."""
        report = item.report
        sop_uid = report.sop_instance_uid
        assert sop_uid is not None

        def work(session: Session) -> ImportOutcome:
            existing = queries.get_dose_report(session, sop_instance_uid=sop_uid)
            if existing is not None:
                return self._present_or_conflict(session, existing, item, archived, source)
            study = self._study_for(session, item)
            row = DoseReportRow(
                sop_instance_uid=sop_uid,
                archive_sha256=archived.sha256,
                archive_path=archived.relative_path,
                source=source,
                received_at=dt.datetime.now(dt.UTC),
                study_id=study.id,
            )
            _fill_report_row(row, report)
            session.add(row)
            session.flush()
            _sync_events(session, row, study, report, is_new=True)
            if item.size is not None:
                _add_size(session, item.size)
            plan = reconcile_study(session, study=study)
            self._derive(session, {study.id}, item.size)
            queries.delete_rejected_object(session, sha256=archived.sha256)
            superseded = sum(
                1 for r, by in plan.superseded_by.items() if by == row.id and r != row.id
            )
            status = (
                ImportStatus.SUPERSEDED
                if plan.superseded_by.get(row.id) is not None
                else ImportStatus.IMPORTED
            )
            return ImportOutcome(
                source,
                status,
                sop_instance_uid=sop_uid,
                kind=str(report.kind),
                modality=report.study.modality,
                archive_sha256=archived.sha256,
                dose_report_id=row.id,
                study_id=study.id,
                number_of_events=len(report.events),
                superseded_reports=superseded,
            )

        try:
            outcome = self._run(work)
        except IntegrityError as exc:
            # another worker stored the same SOP Instance UID between our check and commit
            race = exc

            def again(session: Session) -> ImportOutcome:
                existing = queries.get_dose_report(session, sop_instance_uid=sop_uid)
                if existing is None:
                    raise race
                return self._present_or_conflict(session, existing, item, archived, source)

            outcome = self._run(again)
        logger.info("%s %s (%s)", outcome.status, sop_uid, report.kind)
        return outcome

    def _present_or_conflict(
        self,
        session: Session,
        existing: DoseReportRow,
        item: _Extracted,
        archived: ArchivedObject,
        source: str,
    ) -> ImportOutcome:
        """Return ``already-present`` for a copy of a stored object, or reject a conflict.

        A conflicting copy (same SOP Instance UID, different content) is recorded in
        ``rejected_object`` with the reason, in ``session``; the stored copy is kept.
        """
        reason = self._conflict_reason(existing, item, archived, source)
        if reason is None:
            return ImportOutcome(
                source,
                ImportStatus.ALREADY_PRESENT,
                sop_instance_uid=existing.sop_instance_uid,
                kind=existing.kind,
                archive_sha256=archived.sha256,
                dose_report_id=existing.id,
                study_id=existing.study_id,
            )
        listed = queries.get_rejected_object(session, sha256=archived.sha256) is not None
        queries.add_rejected_object(
            session,
            sha256=archived.sha256,
            archive_path=archived.relative_path,
            file_name=source,
            reason=reason,
            sop_class_uid=item.report.sop_class_uid,
            sop_instance_uid=existing.sop_instance_uid,
        )
        logger.warning(
            "conflicting copy of %s rejected (stored copy kept)", existing.sop_instance_uid
        )
        return ImportOutcome(
            source,
            ImportStatus.REJECTED,
            sop_instance_uid=existing.sop_instance_uid,
            kind=str(item.report.kind),
            modality=item.report.study.modality,
            reason=reason,
            archive_sha256=archived.sha256,
            study_id=existing.study_id,
            already_listed=listed,
        )

    def _study_for(
        self, session: Session, item: _Extracted, touched: set[int] | None = None
    ) -> Study:
        """Return the (locked) study of a report, with its attributes filled in.

        Missing attributes are filled from the report; when reprocessing (``touched``
        given), the first report of each study overwrites them instead, so a better
        extractor corrects old values.
        """
        report = item.report
        device = queries.get_or_create_device(session, info=report.device)
        study_uid = report.study.study_instance_uid
        if not study_uid:
            report.warn("no Study Instance UID; the object is filed as a study of its own")
            study_uid = report.sop_instance_uid
        assert study_uid is not None
        study = queries.get_or_create_study(session, study_instance_uid=study_uid, device=device)
        values = _study_values(report)
        overwrite = touched is not None and study.id not in touched
        if overwrite:
            for name, value in values.items():
                if value is not None:
                    setattr(study, name, value)
            study.is_non_patient = item.is_non_patient
            if not self.settings.accession_in_clear:
                study.accession_number = None
        else:
            queries.fill_study(study, values)
            study.is_non_patient = bool(study.is_non_patient) or item.is_non_patient
        if item.accession_pseudonym and (overwrite or study.accession_pseudonym is None):
            study.accession_pseudonym = item.accession_pseudonym
        if item.pseudonym and (overwrite or study.patient_id is None):
            study.patient_id = queries.get_or_create_patient(session, pseudonym=item.pseudonym).id
        return study

    def _run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction; retry on lock timeouts and deadlocks."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with session_scope(self.session_factory) as session:
                    return work(session)
            except OperationalError:
                if attempt == MAX_ATTEMPTS:
                    raise
                logger.warning("database busy; retrying (attempt %d)", attempt + 1)
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    # -- reprocess -------------------------------------------------------------------------

    def reprocess(self, *, progress: Callable[[str], None] | None = None) -> ReprocessSummary:
        """Re-extract every archived object with the current extractors, in place.

        Dose reports are re-extracted and their events rebuilt, and every study they
        touch is reconciled again; previously rejected objects that now read are
        imported and their rejection cleared; those still rejected get the current
        reason. Running it twice gives the same rows.

        Parameters
        ----------
        progress : callable, optional
            Called with the archive SHA-256 of each object handled.

        Returns
        -------
        ReprocessSummary
            The counts.
        """
        summary = ReprocessSummary()
        touched: set[int] = set()
        for report_id in self._iter_ids(DoseReportRow.id):
            self._reprocess_report(report_id, touched, summary, progress)
        for rejected_id in self._iter_ids(RejectedObject.id):
            self._reprocess_rejected(rejected_id, summary, progress)
        return summary

    def _iter_ids(self, column: Any, batch_size: int = 500) -> Iterator[int]:
        """Yield the ids of a table in ascending order, a batch at a time (keyset paging)."""
        last = 0
        while True:
            with session_scope(self.session_factory) as session:
                stmt = select(column).where(column > last).order_by(column).limit(batch_size)
                batch = list(session.scalars(stmt))
            if not batch:
                return
            yield from batch
            last = batch[-1]

    def _reprocess_report(
        self,
        report_id: int,
        touched: set[int],
        summary: ReprocessSummary,
        progress: Callable[[str], None] | None,
    ) -> None:
        """Re-extract one stored report and rebuild its rows in one transaction."""
        with session_scope(self.session_factory) as session:
            row = session.get(DoseReportRow, report_id)
            if row is None:
                return
            rel, sha, source = row.archive_path, row.archive_sha256, row.source or row.archive_path
        if progress is not None:
            progress(sha)
        try:
            data = self.archive.read(rel)
        except OSError:
            logger.warning("archived object %s is missing; report %s kept", rel, report_id)
            summary.missing_from_archive += 1
            return
        result = self._extract(data, source)
        del data
        if isinstance(result, Rejection):
            logger.warning("report %s now fails extraction; kept unchanged", report_id)
            summary.reports_failing += 1
            return

        def work(session: Session) -> int | None:
            row = session.get(DoseReportRow, report_id)
            if row is None:
                return None
            old_study_id = row.study_id
            study = self._study_for(session, result, touched)
            row.study_id = study.id
            _fill_report_row(row, result.report)
            _sync_events(session, row, study, result.report)
            if result.size is not None:
                _add_size(session, result.size)
            reconcile_study(session, study=study)
            touched_now = {study.id}
            if old_study_id != study.id:
                old = session.get(Study, old_study_id)
                if old is not None:
                    if old.dose_reports:
                        reconcile_study(session, study=old)
                        touched_now.add(old_study_id)
                    else:
                        session.delete(old)
            self._derive(session, touched_now, result.size)
            return study.id

        study_id = self._run(work)
        if study_id is not None:
            touched.add(study_id)  # after commit: a retried transaction still overwrites
            summary.reports += 1

    def _reprocess_rejected(
        self, rejected_id: int, summary: ReprocessSummary, progress: Callable[[str], None] | None
    ) -> None:
        """Try a rejected object again: import it when it now reads, else update the reason."""
        with session_scope(self.session_factory) as session:
            rejected = session.get(RejectedObject, rejected_id)
            if rejected is None:
                return
            archived = ArchivedObject(rejected.archive_sha256, rejected.archive_path)
            source = rejected.file_name or rejected.archive_path
        if progress is not None:
            progress(archived.sha256)
        try:
            data = self.archive.read(archived.relative_path)
        except OSError:
            summary.missing_from_archive += 1
            return
        result = self._extract(data, source)
        del data
        if isinstance(result, Rejection):
            self._reject(result, archived, source)
            summary.rejected_still += 1
            return
        outcome = self._store_new(result, archived, source)
        if outcome.status is ImportStatus.REJECTED:  # a conflicting copy stays rejected
            summary.rejected_still += 1
            return
        if outcome.status is ImportStatus.ALREADY_PRESENT:
            self._run(
                lambda session: queries.delete_rejected_object(session, sha256=archived.sha256)
            )
        summary.rejected_now_imported += 1


# -- row builders ------------------------------------------------------------------------------


def _report_modalities(report: DoseReport) -> frozenset[str]:
    """Return the modalities a dose report is of: its own and its events' (upper case)."""
    found = {report.study.modality or ""}
    found.update(getattr(event, "modality", None) or "" for event in report.events)
    return frozenset(m.strip().upper() for m in found if m and m.strip())


def _add_size(session: Session, size: PatientSize) -> None:
    """Write (or update) the ``patient_size_measurement`` row of a CT image."""
    queries.add_patient_size_measurement(
        session,
        sop_instance_uid=size.sop_instance_uid,
        study_instance_uid=size.study_instance_uid,
        series_instance_uid=size.series_instance_uid,
        image_type=size.image_type,
        size_mm=size.size_mm,
        table_position_mm=size.table_position_mm,
        method=size.method,
        direction=size.direction,
    )


def _text(ds: Any, keyword: str) -> str | None:
    """Return a top-level string attribute stripped, or ``None``."""
    try:
        value = ds.get(keyword)
    except READER_ERRORS:
        return None
    text = str(value).strip() if value is not None else ""
    return text or None


def _clean(value: Any) -> Any:
    """Return ``value`` safe for every database: no NUL characters, no NaN or infinity."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _sum(values: Iterable[float | None]) -> float | None:
    """Return the sum of the values that are not ``None`` (``None`` when there are none)."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _study_values(report: DoseReport) -> dict[str, Any]:
    """Return the study columns held by a report."""
    s = report.study
    study_date = None
    if s.study_date:
        try:
            study_date = dt.date.fromisoformat(s.study_date)
        except ValueError:
            report.warn(f"study date {s.study_date!r} is not a date; left empty")
    values = {
        "accession_number": s.accession_number,
        "study_date": study_date,
        "study_time": s.study_time,
        "study_description": s.study_description,
        "requested_procedure_description": s.requested_procedure_description,
        "procedure_reported": s.procedure_reported,
        "modality": s.modality,
        "patient_age_years": s.patient_age_years,
        "patient_sex": s.patient_sex,
        "patient_weight_kg": s.patient_weight_kg,
        "patient_size_m": s.patient_size_m,
    }
    return {k: _clean(v) if not isinstance(v, dt.date) else v for k, v in values.items()}


def _fill_report_row(row: DoseReportRow, report: DoseReport) -> None:
    """Set the columns of a ``dose_report`` row from the extracted record."""
    acc = report.accumulated
    planes = acc.planes
    row.sop_class_uid = report.sop_class_uid
    row.series_instance_uid = report.series_instance_uid
    row.kind = str(report.kind)
    row.extractor_version = EXTRACTOR_VERSION
    row.warnings = _clean(list(report.warnings))
    row.content = _clean(report.to_dict())
    row.number_of_events = len(report.events)
    row.ct_dlp_total_mgycm = _clean(acc.ct_dlp_total_mgycm)
    row.dap_total_gym2 = _clean(_sum(p.dap_total_gym2 for p in planes))
    row.dose_rp_total_gy = _clean(_sum(p.dose_rp_total_gy for p in planes))
    row.fluoro_time_total_s = _clean(_sum(p.fluoro_time_total_s for p in planes))
    # AGD is never summed across breasts (each breast is its own organ): the report's
    # AGD is the larger of its per-breast accumulated values (TID 10005 by laterality),
    # else the value it gives for both breasts
    breasts = [v for v in (acc.agd_total_left_mgy, acc.agd_total_right_mgy) if v is not None]
    row.agd_total_mgy = _clean(max(breasts) if breasts else acc.agd_total_both_mgy)


def _sync_events(
    session: Session,
    row: DoseReportRow,
    study: Study,
    report: DoseReport,
    *,
    is_new: bool = False,
) -> None:
    """Make the ``irradiation_event`` rows of a report match the record, one per event.

    Existing rows are updated in place by position (their ids stay), extra rows are
    added or deleted; every event starts current, :func:`reconcile_study` decides. A
    report stored for the first time (``is_new``) has no rows yet: its events are
    inserted with one multi-row INSERT, without loading the (empty) collection or
    building ORM objects (the reconciler reads the events back with SQL).
    """
    rows: list[dict[str, Any]] = []
    for index, event in enumerate(report.events):
        values: dict[str, Any] = {
            name: _clean(getattr(event, name)) for name in EVENT_SCALAR_FIELDS
        }
        if values.get("modality") is None:
            values["modality"] = report.study.modality
        values.update(
            dose_report_id=row.id,
            study_id=study.id,
            event_index=index,
            event_key=event_key(event, report.kind),
            is_current=True,
            xray_sources=_as_dicts(event.xray_sources),
            xray_filters=_as_dicts(event.xray_filters),
        )
        rows.append(values)
    if is_new:
        if rows:
            session.execute(insert(EventRow), rows)
        return
    existing = {e.event_index: e for e in row.events} if row.id is not None else {}
    for values in rows:
        target = existing.pop(values["event_index"], None)
        if target is None:
            session.add(EventRow(**values))
        else:
            for name, value in values.items():
                setattr(target, name, value)
    for extra in existing.values():
        session.delete(extra)
    session.flush()


def _comparable(content: dict[str, Any]) -> dict[str, Any]:
    """Return an extracted record as stored (JSON types, cleaned), transfer keys left out."""
    cleaned = json.loads(json.dumps(_clean(content), default=str))
    if isinstance(cleaned.get("study"), dict):  # kept in clear or not: a setting
        cleaned["study"].pop("accession_number", None)
    return {k: v for k, v in cleaned.items() if k not in TRANSFER_KEYS}


def _content_differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Return the fields in which two extracted records differ, as ``"name a vs b"``.

    In record order (top level, study, device, accumulated, events); floats equal
    within a relative 1e-9 (a database round trip) count as equal.
    """
    a, b = _flatten(first), _flatten(second)
    out: list[str] = []
    n_a, n_b = len(first.get("events") or []), len(second.get("events") or [])
    if n_a != n_b:
        out.append(f"number of events {n_a} vs {n_b}")
    for path in list(a) + [p for p in b if p not in a]:
        x, y = a.get(path), b.get(path)
        if _same_value(x, y):
            continue
        out.append(f"{_field_label(path)} {_show_pair(x, y)}")
    return out


def _flatten(value: Any, path: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], Any]:
    """Return the leaves of a JSON value by their path (dict keys and list indices)."""
    if isinstance(value, dict):
        out: dict[tuple[str | int, ...], Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, (*path, key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, (*path, index)))
        return out
    return {path: None if value == [] else value}


def _same_value(x: Any, y: Any) -> bool:
    """Return whether two leaf values are equal (floats to a relative 1e-9)."""
    if isinstance(x, float | int) and isinstance(y, float | int):
        if isinstance(x, bool) or isinstance(y, bool):
            return x == y
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
    return bool(x == y)


def _field_label(path: tuple[str | int, ...]) -> str:
    """Return a readable field name: ``study_date``, ``event 3 dose_rp_gy``, ``plane 1 ...``."""
    parts: list[str] = []
    keys = list(path)
    if keys and keys[0] in {"study", "device", "accumulated"}:
        keys = keys[1:]
    i = 0
    while i < len(keys):
        key = keys[i]
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        if key in {"events", "planes"} and isinstance(nxt, int):
            parts.append(f"{'event' if key == 'events' else 'plane'} {nxt + 1}")
            i += 2
            continue
        if isinstance(key, int):
            parts[-1] += f"[{key}]"
        else:
            parts.append(str(key))
        i += 1
    return " ".join(parts)


def _show_pair(x: Any, y: Any, width: int = 64) -> str:
    """Return ``"x vs y"``; strings over ``width`` (a UID fits) cut around the difference."""
    if isinstance(x, str) and isinstance(y, str) and max(len(x), len(y)) > width:
        pairs = enumerate(zip(x, y, strict=False))
        start = next((i for i, (c, d) in pairs if c != d), min(len(x), len(y)))
        start = max(0, start - width // 4)

        def cut(text: str) -> str:
            piece = text[start : start + width]
            return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")

        return f"{cut(x)!r} vs {cut(y)!r}"

    def show(v: Any) -> str:
        return "(none)" if v is None else str(v)

    return f"{show(x)} vs {show(y)}"


def _as_dicts(items: list[Any] | None) -> list[dict[str, Any]] | None:
    """Return dataclass items (X-ray sources, filters) as JSON-ready dicts, or ``None``."""
    return _clean([dataclasses.asdict(x) for x in items]) if items else None

"""The ingest pipeline: archive -> read -> extract -> reconcile -> store, one object at a time.

Each object is handled on its own and in its own transaction: it is either fully in the
registry or not at all, and one bad object never stops a batch. Objects are streamed:
a parsed dataset is dropped as soon as its record is extracted, and a batch keeps only
counters (:class:`ImportSummary`), so memory does not grow with the number of objects.

Outcomes: ``imported``; ``superseded`` (stored, but an existing report already holds
all its irradiation events); ``already-present`` (same SOP Instance UID and the same
content: no-op); ``conflict`` (same SOP Instance UID as a stored report but different
extracted content, e.g. another study date or dose value: the copy is archived and held
as a *version* of the report, ``report_version``, and the study marked as in conflict;
the registry keeps counting the current version, the first one received, until a user
or the conflict rule decides; a copy that differs only in encoding, such as another
transfer syntax, is ``already-present``, and a version already held is not added
again); ``rejected`` (with a reason, kept in the archive, listed in
``rejected_object``); ``ignored`` (only with
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
from kerma.db import conflicts as conflict_queries
from kerma.db import quality as quality_queries
from kerma.db import queries
from kerma.db import sites as site_queries
from kerma.db.models import DoseReport as DoseReportRow
from kerma.db.models import IrradiationEvent as EventRow
from kerma.db.models import RejectedObject, ReportConflict, ReportVersion, Study
from kerma.db.partitions import move_study_events, study_month
from kerma.db.session import session_scope
from kerma.dicom.extract import read_and_extract, too_large_reason
from kerma.dicom.noise import ImageNoise, measure_image_noise
from kerma.dicom.quality import RejectionNote, parse_rejection_note
from kerma.dicom.reader import DicomObject
from kerma.dicom.size import PatientSize, is_ct_image, measure_patient_size
from kerma.errors import ConfigurationError, ConflictError, IngestWarning, NotFoundError
from kerma.ingest.archive import Archive, ArchivedObject, sha256_of
from kerma.ingest.plausibility import Action, Finding, check_report, load_ranges, rejection_reason
from kerma.ingest.pseudonym import Pseudonymizer
from kerma.ingest.reconcile import event_key, reconcile_study
from kerma.ingest.sites import site_name
from kerma.ingest.sources import is_dicom, iter_sources
from kerma.ingest.versions import (
    RULE_DECIDER,
    ConflictRule,
    VersionOrigin,
    device_versions,
    transport_of,
)
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
    CONFLICT = "conflict"
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
        of the same file again), so this is not a new rejection. For a conflict: the
        version was held already (same bytes or same content), none was added.
    version : int or None
        For a conflict: the version number the object is held as.
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
    version: int | None = None

    @property
    def is_stored(self) -> bool:
        """Whether the object is in the registry after this call (held versions count)."""
        return self.status in {
            ImportStatus.IMPORTED,
            ImportStatus.SUPERSEDED,
            ImportStatus.ALREADY_PRESENT,
            ImportStatus.CONFLICT,
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
    conflicts : int
        Objects held as a version of a stored SOP Instance UID with other content
        (new versions and those held already).
    conflicts_already_held : int
        Of those, objects whose version was held already (no version added).
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
    conflicts: int = 0
    conflicts_already_held: int = 0

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
        elif outcome.status is ImportStatus.CONFLICT:
            self.conflicts += 1
            if outcome.already_listed:
                self.conflicts_already_held += 1
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
    rejected_now_held : int
        Previously rejected conflicting copies (Kerma before 0009) now held as versions.
    missing_from_archive : int
        Rows whose archived file is missing.
    """

    reports: int = 0
    reports_failing: int = 0
    rejected_now_imported: int = 0
    rejected_still: int = 0
    rejected_now_held: int = 0
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
    noise: ImageNoise | None = None
    #: a KOS 'Rejected for Quality Reasons' (issue #17): stored, not rejected
    rejection_note: RejectionNote | None = None


@dataclass
class _Extracted:
    """An extracted record with what the identity gave, the identity itself dropped."""

    report: DoseReport
    pseudonym: str | None
    is_non_patient: bool
    size: PatientSize | None = None
    noise: ImageNoise | None = None
    has_identity: bool = True  # False for an object without Patient ID and name

    #: Values outside their plausibility range (flags only: rejections are not stored).
    findings: list[Finding] = field(default_factory=list)

    accession_pseudonym: str | None = None

    #: The site the object belongs to (:func:`kerma.ingest.sites.site_name`).
    site_name: str | None = None


#: ``ImportOutcome.kind`` of a stored KOS 'Rejected for Quality Reasons' (issue #17).
REJECTION_NOTE_KIND = "kos-rejection"

#: Session ``info`` key of the study ids an object's transaction touched.
_TOUCHED_KEY = "kerma_touched_study_ids"


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
    after_commit : callable, optional
        Called as ``after_commit(study_ids)`` after that transaction committed, with the
        same ids (``kerma.services`` passes the alert evaluation). An exception it
        raises is logged and never fails the import.
    """

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: Settings,
        archive: Archive,
        pseudonymizer: Pseudonymizer,
        derive: Callable[[Session, set[int]], object] | None = None,
        after_commit: Callable[[set[int]], object] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.archive = archive
        self.pseudonymizer = pseudonymizer
        self.derive = derive
        self.after_commit = after_commit
        #: The plausibility table in force (shipped rows, a site's file over them).
        self.plausibility = load_ranges(settings.plausibility)

    def _derive(self, session: Session, study_ids: set[int], size: PatientSize | None) -> None:
        """Run the ``derive`` hook for the touched studies (and those of a size's study UID).

        The ids are also kept on the session for the ``after_commit`` hook (:meth:`_run`).
        """
        if self.derive is None and self.after_commit is None:
            return
        if size is not None:
            study_ids = study_ids | queries.study_ids_for_uid(
                session, study_instance_uid=size.study_instance_uid
            )
        if not study_ids:
            return
        if self.after_commit is not None:
            session.info.setdefault(_TOUCHED_KEY, set()).update(study_ids)
        if self.derive is not None:
            self.derive(session, study_ids)

    def _after_commit(self, study_ids: set[int] | None) -> None:
        """Run the ``after_commit`` hook; log (never raise) what it raises."""
        if self.after_commit is None or not study_ids:
            return
        try:
            self.after_commit(set(study_ids))
        except Exception:  # boundary: a post-commit step never fails an import
            logger.exception("after-commit step failed for studies %s", sorted(study_ids))

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
            outcome = self.import_file(
                found.path, keep_non_dose=keep_non_dose, origin=found.origin, source=found.origin
            )
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
        source: str | None = None,
    ) -> ImportOutcome:
        """Import one file; a file that cannot be read is rejected (not archived).

        A file larger than ``settings.max_object_bytes`` is rejected without being read
        (kind ``too-large``; the file stays where it is); a deflated one that inflates
        beyond ``settings.max_inflated_bytes`` is archived and rejected with the reason.
        ``keep_non_dose``, ``origin`` and ``source`` as :meth:`import_bytes`; ``source``
        defaults to the path as given. :meth:`import_paths` passes the path relative to
        the folder given (the file's name for a file given by itself): folders are often
        named after patients, and ``source`` is stored (``dose_report.source``,
        ``rejected_object.file_name``) and quoted in rejection reasons.

        Raises
        ------
        OSError
            When the archive cannot be written.
        """
        name = source or str(path)
        try:
            size = Path(path).stat().st_size
            if size > self.settings.max_object_bytes:
                reason = too_large_reason(name, size, self.settings.max_object_bytes)
                return ImportOutcome(name, ImportStatus.REJECTED, reason=reason, kind="too-large")
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
        if isinstance(result, _NotDose) and result.rejection_note is not None:
            if archived is None:
                archived = self.archive.store(data, sha256=sha256)
            return self._store_rejection_note(result.rejection_note, archived, source)
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
                result.noise = self._measure_noise(obj)
            elif isinstance(result, _NotDose) and is_ct_image(result.sop_class_uid):
                result.size = self._measure(obj, result.sop_instance_uid)
                result.noise = self._measure_noise(obj)
            elif isinstance(result, _NotDose):
                try:
                    result.rejection_note = parse_rejection_note(obj.dataset)
                except READER_ERRORS as exc:  # a quirky KOS stays a non-dose object
                    logger.warning("KOS %s not read: %s", result.sop_instance_uid, exc)
        return result

    def _measure_noise(self, obj: DicomObject) -> ImageNoise | None:
        """Return the local-noise histogram of an axial CT image, or ``None`` (never raises)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = measure_image_noise(obj.with_pixels())
        except READER_ERRORS as exc:  # a measurement must not stop an import (STYLE.md B6)
            logger.debug("noise measurement failed: %s", exc, exc_info=True)
            return None
        if result.noise is None:
            logger.debug("noise not measured: %s", result.reason)
        return result.noise

    def _store_rejection_note(
        self, note: RejectionNote, archived: ArchivedObject, source: str
    ) -> ImportOutcome:
        """Store the images a KOS 'Rejected for Quality Reasons' marks (issue #17).

        The referenced SOP Instance UIDs are kept as they are: an image received before
        or after the note is rejected once both are in. The KOS stays in the archive.
        """

        def work(session: Session) -> int | None:
            if quality_queries.has_rejection_note(session, marked_by_uid=note.sop_instance_uid):
                return None
            return quality_queries.add_rejected_instances(
                session,
                marked_by_uid=note.sop_instance_uid,
                source="kos",
                reason=note.reason,
                instances=[
                    (
                        i.sop_instance_uid,
                        i.study_instance_uid or note.study_instance_uid,
                        i.series_instance_uid,
                    )
                    for i in note.instances
                ],
                archive_sha256=archived.sha256,
            )

        added = self._run(work)
        logger.info(
            "rejection note %s: %s images marked rejected (%s)",
            note.sop_instance_uid,
            len(note.instances),
            source,
        )
        return ImportOutcome(
            source,
            ImportStatus.IMPORTED if added is not None else ImportStatus.ALREADY_PRESENT,
            sop_instance_uid=note.sop_instance_uid,
            kind=REJECTION_NOTE_KIND,
            modality="KO",
            archive_sha256=archived.sha256,
            number_of_events=0,
        )

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
            got = read_and_extract(
                data, name=source, max_inflated_bytes=self.settings.max_inflated_bytes
            )
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
        findings = check_report(report, self.plausibility)
        if any(f.action is Action.REJECT for f in findings):
            return Rejection(
                rejection_reason(source, report.sop_instance_uid, findings),
                source,
                report.sop_class_uid,
                report.sop_instance_uid,
            ), obj
        for finding in findings:
            report.warn(finding.message)
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
            has_identity=bool(identity.patient_id or identity.patient_name),
            findings=findings,
            accession_pseudonym=self.pseudonymizer.accession_pseudonym(
                report.study.accession_number
            ),
            site_name=site_name(report, self.settings),  # before identifying text goes
        )
        report.identity = PatientIdentity()  # identity goes no further than this
        if not self.settings.accession_in_clear:  # nor the clear accession number
            report.study.accession_number = None
        drop_identifying_text(report, self.settings.identifying_attributes)
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
            if isinstance(rejection, _NotDose) and rejection.noise is not None:
                _add_noise(session, rejection.noise)
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
            if item.noise is not None:
                _add_noise(session, item.noise)
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

    def _differences(
        self,
        stored: dict[str, Any] | None,
        stored_pseudonym: str | None,
        item: _Extracted,
    ) -> list[str]:
        """Return how a new copy differs from a stored version (empty: the same object).

        The copies are compared by what Kerma extracts from them, not byte for byte or
        element by element: the new copy's record (``DoseReport.to_dict()``) against the
        stored ``content``, leaving out what describes the file or its transfer
        (``file``, ``status`` and the reading ``warnings``, which depend on the transfer
        syntax and VR encoding; a warning that matters changes a value). The same object
        sent in another transfer syntax (e.g. ``storescu -xi``, Implicit VR Little
        Endian, where private elements become UN) is therefore the same object. A
        different patient (pseudonym of Patient ID and issuer) is a difference too.
        """
        new = _comparable(item.report.to_dict())
        differences = _content_differences(_comparable(stored or {}), new)
        if item.pseudonym and stored_pseudonym and stored_pseudonym != item.pseudonym:
            differences.insert(0, "patient (pseudonymised Patient ID and issuer)")
        return differences

    def _current_content(self, existing: DoseReportRow) -> dict[str, Any] | None:
        """Return the stored report's record, re-extracted when another extractor wrote it.

        When the stored ``content`` was written by another extractor version, the stored
        copy is re-extracted from the archive so that both sides come from this version.
        """
        stored: dict[str, Any] | None = existing.content
        if existing.extractor_version != EXTRACTOR_VERSION or stored is None:
            stored = self._stored_content(existing) or stored
        return stored

    @staticmethod
    def _conflict_reason(
        existing: DoseReportRow, differences: list[str], source: str, version: int
    ) -> str:
        """Return what the outcome of a held version says (the differing fields named)."""
        shown = "; ".join(differences[:MAX_DIFFERENCES_SHOWN])
        if len(differences) > MAX_DIFFERENCES_SHOWN:
            shown += f"; and {len(differences) - MAX_DIFFERENCES_SHOWN} more"
        first = existing.source or existing.archive_path
        return (
            f"Held as version {version}: {source} has the same SOP Instance UID "
            f"{existing.sop_instance_uid} as the report in the registry ({first}) but "
            f"different content ({shown}). Both versions are kept and the study is in "
            "conflict; its totals use the current version until a decision. Compare them "
            f"with 'kerma conflicts show {existing.sop_instance_uid}' and decide with "
            "'kerma conflicts resolve'."
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
            _flag(session, study, row, item.findings, is_new=True)
            if item.noise is not None:
                _add_noise(session, item.noise)
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

        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                outcome = self._run(work)
                break
            except IntegrityError:
                # another process stored the same SOP Instance UID (or the same study,
                # device, patient or group) between our look-up and our commit: the
                # database refused the duplicate, and the object is handled again on
                # what it stored, as if it had arrived second (issue #15)
                if attempt == MAX_ATTEMPTS:
                    raise
                logger.info("%s raced another process; handling it again", sop_uid)
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
        """Return ``already-present`` for a copy of a stored object, or hold a new version.

        A copy whose extracted content equals the current version (or, when the UID is
        in conflict, any held version) adds nothing. Otherwise the copy is held as a new
        ``report_version``, the conflict opened (its first version made from the stored
        report) and the study marked; the registry keeps counting the current version.
        With ``KERMA_CONFLICT_RULE=prefer-device-association`` the rule then decides
        (:meth:`_apply_rule`). All in ``session``.
        """
        conflict_queries.lock_report(session, dose_report_id=existing.id)
        conflict = conflict_queries.get_conflict(
            session, sop_instance_uid=existing.sop_instance_uid
        )
        same_bytes = existing.archive_sha256 == archived.sha256
        patient = existing.study.patient if existing.study is not None else None
        differences = (
            []
            if same_bytes
            else self._differences(
                self._current_content(existing), patient.pseudonym if patient else None, item
            )
        )
        if not differences:
            return ImportOutcome(
                source,
                ImportStatus.ALREADY_PRESENT,
                sop_instance_uid=existing.sop_instance_uid,
                kind=existing.kind,
                archive_sha256=archived.sha256,
                dose_report_id=existing.id,
                study_id=existing.study_id,
            )
        held = self._held_version(conflict, item, archived) if conflict is not None else None
        if held is None:
            if conflict is None:
                conflict = self._open_conflict(session, existing)
            held = self._add_version(session, conflict, item, archived, source)
            conflict.is_open = True
            existing.study.has_conflict = True
            already = False
            logger.warning(
                "conflicting copy of %s held as version %d; study %s in conflict",
                existing.sop_instance_uid,
                held.version,
                existing.study_id,
            )
            self._apply_rule(session, conflict, existing, {held.version: item})
        else:
            already = True
        queries.delete_rejected_object(session, sha256=archived.sha256)  # held, not rejected
        return ImportOutcome(
            source,
            ImportStatus.CONFLICT,
            sop_instance_uid=existing.sop_instance_uid,
            kind=str(item.report.kind),
            modality=item.report.study.modality,
            reason=self._conflict_reason(existing, differences, source, held.version),
            archive_sha256=archived.sha256,
            dose_report_id=existing.id,
            study_id=existing.study_id,
            number_of_events=len(item.report.events),
            already_listed=already,
            version=held.version,
        )

    def _held_version(
        self, conflict: ReportConflict, item: _Extracted, archived: ArchivedObject
    ) -> ReportVersion | None:
        """Return the held version of the same bytes or the same content, or ``None``."""
        for version in conflict.versions:
            if version.archive_sha256 == archived.sha256:
                return version
        for version in conflict.versions:
            if not self._differences(version.content, version.patient_pseudonym, item):
                return version
        return None

    def _open_conflict(self, session: Session, existing: DoseReportRow) -> ReportConflict:
        """Open the conflict of a stored report: its current content becomes version 1."""
        conflict = conflict_queries.add_conflict(
            session, report=existing, opened_at=dt.datetime.now(dt.UTC)
        )
        content = _clean(self._current_content(existing) or {})
        patient = existing.study.patient if existing.study is not None else None
        transport, ae_title = transport_of(existing.source)
        conflict_queries.add_version(
            session,
            conflict=conflict,
            is_current=True,
            archive_sha256=existing.archive_sha256,
            archive_path=existing.archive_path,
            source=existing.source,
            transport=str(transport),
            calling_ae_title=ae_title,
            received_at=existing.received_at,
            study_instance_uid=(content.get("study") or {}).get("study_instance_uid")
            or existing.study.study_instance_uid,
            device_observer_uid=(content.get("device") or {}).get("device_observer_uid"),
            patient_pseudonym=patient.pseudonym if patient is not None else None,
            content=content,
        )
        return conflict

    def _add_version(
        self,
        session: Session,
        conflict: ReportConflict,
        item: _Extracted,
        archived: ArchivedObject,
        source: str,
    ) -> ReportVersion:
        """Hold a new copy as the next version of ``conflict`` (not current)."""
        report = item.report
        transport, ae_title = transport_of(source)
        return conflict_queries.add_version(
            session,
            conflict=conflict,
            is_current=False,
            archive_sha256=archived.sha256,
            archive_path=archived.relative_path,
            source=source,
            transport=str(transport),
            calling_ae_title=ae_title,
            received_at=dt.datetime.now(dt.UTC),
            study_instance_uid=report.study.study_instance_uid,
            device_observer_uid=report.device.device_observer_uid,
            patient_pseudonym=item.pseudonym,
            content=_clean(report.to_dict()),
        )

    def _apply_rule(
        self,
        session: Session,
        conflict: ReportConflict,
        row: DoseReportRow,
        extracted: dict[int, _Extracted],
    ) -> bool:
        """Let ``KERMA_CONFLICT_RULE`` decide an open conflict; return whether it did.

        ``prefer-device-association`` keeps the one version that arrived by C-STORE from
        the study's device (:func:`kerma.ingest.versions.device_versions`) and logs the
        decision; with none or several such versions, or with ``manual``, the conflict
        stays open for a user. ``extracted`` holds records already extracted, by version.
        """
        if self.settings.conflict_rule != ConflictRule.PREFER_DEVICE_ASSOCIATION:
            return False
        device = row.study.device
        origins = [
            VersionOrigin(v.version, v.transport, v.calling_ae_title, v.device_observer_uid)
            for v in conflict.versions
        ]
        chosen = device_versions(
            origins,
            device_observer_uid=device.device_observer_uid,
            station_name=device.station_name,
        )
        if len(chosen) != 1:
            logger.info(
                "conflict of %s left open: %d versions from the device's association",
                conflict.sop_instance_uid,
                len(chosen),
            )
            return False
        version = chosen[0]
        how = next(v for v in conflict.versions if v.version == version)
        reason = (
            f"version {version} arrived by C-STORE from the study's device "
            f"({how.calling_ae_title or 'AE title not known'}; Device Observer UID "
            f"{how.device_observer_uid or 'not given'}); the other versions did not "
            "(KERMA_CONFLICT_RULE=prefer-device-association)"
        )
        self._keep_version(
            session,
            conflict,
            row,
            version,
            method="rule",
            decided_by=RULE_DECIDER,
            reason=reason,
            extracted=extracted.get(version),
        )
        return True

    def _keep_version(
        self,
        session: Session,
        conflict: ReportConflict,
        row: DoseReportRow,
        version: int,
        *,
        method: str,
        decided_by: str,
        reason: str,
        extracted: _Extracted | None = None,
    ) -> set[int]:
        """Make ``version`` the current one, close the conflict and log the decision.

        When it is not the current version, the report row is rebuilt from the version's
        archived object (values, events, study; the study's attributes follow the kept
        version), its studies reconciled and derived again. Returns the ids of the
        studies touched.

        Raises
        ------
        ConflictError
            When the version is not held, or its archived copy is missing or does not
            extract any more.
        """
        chosen = next((v for v in conflict.versions if v.version == version), None)
        if chosen is None:
            held = ", ".join(str(v.version) for v in conflict.versions)
            raise ConflictError(
                f"Unable to keep version {version} of {conflict.sop_instance_uid}: it holds "
                f"versions {held}. List them with 'kerma conflicts show "
                f"{conflict.sop_instance_uid}'."
            )
        current = next((v for v in conflict.versions if v.is_current), None)
        before = current.version if current is not None else version
        touched = {row.study_id}
        if chosen is not current:
            item = extracted or self._extract_version(chosen)
            touched |= self._switch_report(session, row, item, chosen)
            if current is not None:
                current.is_current = False
            chosen.is_current = True
        now = dt.datetime.now(dt.UTC)
        conflict.is_open = False
        conflict.decided_at = now
        conflict_queries.add_decision(
            session,
            sop_instance_uid=conflict.sop_instance_uid,
            version_kept=version,
            version_before=before,
            archive_sha256_kept=chosen.archive_sha256,
            method=method,
            decided_by=decided_by,
            reason=reason,
            decided_at=now,
        )
        conflict_queries.refresh_has_conflict(session, study_ids=touched)
        logger.info(
            "conflict of %s decided (%s): version %d kept",
            conflict.sop_instance_uid,
            method,
            version,
        )
        return touched

    def _extract_version(self, version: ReportVersion) -> _Extracted:
        """Return the record of a held version, extracted again from its archived object.

        Raises
        ------
        ConflictError
            When the archived copy is missing or no longer extracts.
        """
        try:
            data = self.archive.read(version.archive_path)
        except OSError as exc:
            raise ConflictError(
                f"Unable to keep version {version.version}: its archived copy "
                f"{version.archive_path} cannot be read ({exc.strerror or exc}). Restore the "
                "archive (KERMA_ARCHIVE_DIR) and try again."
            ) from exc
        result, _ = self._extract_record(data, version.source or version.archive_path)
        if not isinstance(result, _Extracted):
            raise ConflictError(
                f"Unable to keep version {version.version}: its archived copy "
                f"{version.archive_path} no longer extracts ({result.reason})."
            )
        return result

    def _switch_report(
        self, session: Session, row: DoseReportRow, item: _Extracted, version: ReportVersion
    ) -> set[int]:
        """Rebuild a report row from another version; return the studies touched."""
        old_study_id = row.study_id
        study = self._study_for(session, item, set())  # the kept version's attributes
        row.study_id = study.id
        row.archive_sha256 = version.archive_sha256
        row.archive_path = version.archive_path
        row.source = version.source
        row.received_at = version.received_at
        _fill_report_row(row, item.report)
        _sync_events(session, row, study, item.report)
        _flag(session, study, row, item.findings)  # the kept version's plausibility flags
        reconcile_study(session, study=study)
        touched = {study.id}
        if old_study_id != study.id:
            old = session.get(Study, old_study_id)
            if old is not None:
                session.expire(old, ["dose_reports"])
                if old.dose_reports:
                    reconcile_study(session, study=old)
                    touched.add(old_study_id)
                else:
                    session.delete(old)
                    session.flush()
        self._derive(session, touched, None)
        return touched

    def resolve_conflict(
        self,
        *,
        sop_instance_uid: str,
        keep: int,
        reason: str,
        decided_by: str,
    ) -> set[int]:
        """Keep one version of a SOP Instance UID in conflict, by a user's decision.

        In one transaction: the kept version becomes the report the registry counts
        (values, events, study totals and summary columns derived again), the conflict
        is closed and the decision appended to ``conflict_decision``. Keeping the
        current version confirms it (logged the same way).

        Parameters
        ----------
        sop_instance_uid : str
            The SOP Instance UID in conflict.
        keep : int
            The version to keep (``kerma conflicts show`` numbers them; 1 = first).
        reason : str
            Why (kept in the log; required).
        decided_by : str
            Who decided (a user name).

        Returns
        -------
        set of int
            Ids of the studies touched.

        Raises
        ------
        NotFoundError
            When the SOP Instance UID has no held versions.
        ConflictError
            When the version is not held, the reason is empty, or the version's archived
            copy is missing or no longer extracts.
        """
        if not reason.strip():
            raise ConflictError(
                f"Unable to resolve the conflict of {sop_instance_uid}: give a reason "
                "(--reason); it is kept in the decision log."
            )

        def work(session: Session) -> set[int]:
            report = queries.get_dose_report(session, sop_instance_uid=sop_instance_uid)
            if report is not None:  # versions are read under the report's lock
                conflict_queries.lock_report(session, dose_report_id=report.id)
            conflict = conflict_queries.get_conflict(session, sop_instance_uid=sop_instance_uid)
            if conflict is None:
                raise NotFoundError(
                    f"Unable to resolve {sop_instance_uid}: no versions of this SOP Instance "
                    "UID are held. List the conflicts with 'kerma conflicts list'."
                )
            row = session.get(DoseReportRow, conflict.dose_report_id)
            assert row is not None
            return self._keep_version(
                session,
                conflict,
                row,
                keep,
                method="user",
                decided_by=decided_by,
                reason=reason.strip(),
            )

        return self._run(work)

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
        if item.site_name:
            site_id = site_queries.get_or_create_site(session, name=item.site_name).id
            if device.site_id is None:
                device.site_id = site_id
            if study.site_id is None:
                study.site_id = site_id
        values = _study_values(report)
        dated = study.study_date
        overwrite = touched is not None and study.id not in touched
        if overwrite:
            for name, value in values.items():
                if value is not None:
                    setattr(study, name, value)
            # an object without identity (e.g. a de-identified archive copy) cannot tell
            # a phantom by its patient name: it keeps what the original import found
            study.is_non_patient = item.is_non_patient or (
                not item.has_identity and bool(study.is_non_patient)
            )
            if not self.settings.accession_in_clear:
                study.accession_number = None
        else:
            queries.fill_study(study, values)
            study.is_non_patient = bool(study.is_non_patient) or item.is_non_patient
        if item.accession_pseudonym and (overwrite or study.accession_pseudonym is None):
            study.accession_pseudonym = item.accession_pseudonym
        if item.pseudonym and (overwrite or study.patient_id is None):
            study.patient_id = queries.get_or_create_patient(session, pseudonym=item.pseudonym).id
        if study.study_date != dated:  # its events move to the new month (partition)
            move_study_events(session, study_id=study.id, study_date=study.study_date)
        return study

    def _run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction; retry on lock timeouts and deadlocks."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with session_scope(self.session_factory) as session:
                    result = work(session)
                    touched = session.info.pop(_TOUCHED_KEY, None)
                self._after_commit(touched)
                return result
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
            _flag(session, study, row, result.findings)
            if result.noise is not None:
                _add_noise(session, result.noise)
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
        if isinstance(result, _NotDose) and result.rejection_note is not None:
            # a KOS 'Rejected for Quality Reasons' stored before Kerma read them (#17)
            self._store_rejection_note(result.rejection_note, archived, source)
            self._run(
                lambda session: queries.delete_rejected_object(session, sha256=archived.sha256)
            )
            summary.rejected_now_imported += 1
            return
        if isinstance(result, Rejection):
            self._reject(result, archived, source)
            summary.rejected_still += 1
            return
        outcome = self._store_new(result, archived, source)
        if outcome.status is ImportStatus.REJECTED:
            summary.rejected_still += 1
            return
        if outcome.status is ImportStatus.CONFLICT:  # its rejection row is gone
            summary.rejected_now_held += 1
            return
        if outcome.status is ImportStatus.ALREADY_PRESENT:
            self._run(
                lambda session: queries.delete_rejected_object(session, sha256=archived.sha256)
            )
        summary.rejected_now_imported += 1


# -- identifying free text ---------------------------------------------------------------------

#: Free-text fields of a record that a site may mark as identifying
#: (``KERMA_IDENTIFYING_ATTRIBUTES``), by the DICOM attribute keyword they are read
#: from (``Comment``: the SR 'Comment' (DCM 121106) of an irradiation event; the
#: acquisition protocol of an RDSR event (DCM 125203) goes with ``ProtocolName``).
IDENTIFYING_FIELDS: dict[str, tuple[str, str]] = {
    "AccessionNumber": ("study", "accession_number"),
    "StudyDescription": ("study", "study_description"),
    "SeriesDescription": ("study", "series_description"),
    "RequestedProcedureDescription": ("study", "requested_procedure_description"),
    "StationName": ("device", "station_name"),
    "InstitutionName": ("device", "institution_name"),
    "ProtocolName": ("event", "acquisition_protocol"),
    "Comment": ("event", "comment"),
}


def check_identifying_attributes(keywords: Iterable[str]) -> None:
    """Refuse a ``KERMA_IDENTIFYING_ATTRIBUTES`` entry that names no attribute.

    A misspelt keyword would silently keep what the site meant to drop. Valid are DICOM
    attribute keywords (PS3.6, as pydicom knows them) and the keys of
    :data:`IDENTIFYING_FIELDS` (``Comment``).

    Raises
    ------
    ConfigurationError
        Naming the unknown entries and the stored fields that can be listed.
    """
    from pydicom.datadict import tag_for_keyword

    unknown = [k for k in keywords if k not in IDENTIFYING_FIELDS and tag_for_keyword(k) is None]
    if unknown:
        raise ConfigurationError(
            f"KERMA_IDENTIFYING_ATTRIBUTES names no DICOM attribute: {', '.join(unknown)}. "
            "Use DICOM keywords as PS3.6 spells them; the stored free text that can be "
            f"listed is {', '.join(IDENTIFYING_FIELDS)}."
        )


def drop_identifying_text(report: DoseReport, keywords: Iterable[str]) -> None:
    """Empty the fields of ``report`` read from attributes a site marks as identifying.

    Called after the pseudonym and the non-patient flag are computed (which may read
    the study description), so neither the registry nor ``dose_report.content`` holds
    them. Keywords without a stored field (e.g. ``OperatorsName``: Kerma stores no
    person names) change nothing here.

    Parameters
    ----------
    report : DoseReport
        The extracted record, changed in place.
    keywords : iterable of str
        ``KERMA_IDENTIFYING_ATTRIBUTES``.
    """
    for keyword in keywords:
        where = IDENTIFYING_FIELDS.get(keyword)
        if where is None:
            continue
        part, name = where
        if part == "event":
            for event in report.events:
                setattr(event, name, None)
        else:
            setattr(getattr(report, part), name, None)


# -- row builders ------------------------------------------------------------------------------


def _report_modalities(report: DoseReport) -> frozenset[str]:
    """Return the modalities a dose report is of: its own and its events' (upper case)."""
    found = {report.study.modality or ""}
    found.update(getattr(event, "modality", None) or "" for event in report.events)
    return frozenset(m.strip().upper() for m in found if m and m.strip())


def _flag(
    session: Session,
    study: Study,
    row: DoseReportRow,
    findings: list[Finding],
    *,
    is_new: bool = False,
) -> None:
    """Store the plausibility flags of a report (replacing earlier ones) and log them.

    A report stored for the first time (``is_new``) has none to replace: nothing is
    written unless it has flags (no statement on the import's hot path).
    """
    flags = [
        {
            "quantity": f.quantity,
            "location": f.where,
            "value": f.value if math.isfinite(f.value) else None,
            "value_text": f.value_text,
            "range_min": f.range.min if f.range is not None else None,
            "range_max": f.range.max if f.range is not None else None,
            "source": f.range.source if f.range is not None else None,
            "message": f.message,
        }
        for f in findings
        if f.action is Action.FLAG
    ]
    assert row.id is not None
    if is_new and not flags:
        return
    queries.replace_plausibility_flags(
        session, study_id=study.id, dose_report_id=row.id, flags=flags
    )
    if flags:
        logger.warning(
            "study %s flagged for review: %d implausible value(s) in %s",
            study.id,
            len(flags),
            row.sop_instance_uid,
        )


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


def _add_noise(session: Session, noise: ImageNoise) -> None:
    """Write (or replace) the ``ct_image_noise`` row of a CT image (issue #17)."""
    study_date: dt.date | None = None
    if noise.study_date:
        try:
            study_date = dt.datetime.strptime(noise.study_date[:8], "%Y%m%d").date()
        except ValueError:
            study_date = None
    values = dataclasses.asdict(noise)
    values.update(study_date=study_date, measured_at=dt.datetime.now(dt.UTC))
    quality_queries.upsert_image_noise(session, values=values)


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
    month = study_month(study.study_date)  # the partition key on PostgreSQL
    for index, event in enumerate(report.events):
        values: dict[str, Any] = {
            name: _clean(getattr(event, name)) for name in EVENT_SCALAR_FIELDS
        }
        if values.get("modality") is None:
            values["modality"] = report.study.modality
        values.update(
            dose_report_id=row.id,
            study_id=study.id,
            study_month=month,
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


def differing_fields(contents: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Return the fields in which versions of one object differ, with each version's value.

    For ``kerma conflicts show``: the versions' extracted records side by side.

    Parameters
    ----------
    contents : list of dict
        Extracted records (``report_version.content``), in version order.

    Returns
    -------
    list of (str, list)
        ``(field label, [value of each version])`` for each field (record order: top
        level, study, device, accumulated, events; labels as ``event 3 dose_rp_gy``)
        whose values are not all equal (floats to a relative 1e-9); ``None`` where a
        version lacks the field. ``number of events`` comes first when it differs.
    """
    flat = [_flatten(_comparable(c)) for c in contents]
    out: list[tuple[str, list[Any]]] = []
    counts = [len(c.get("events") or []) for c in contents]
    if len(set(counts)) > 1:
        out.append(("number of events", list(counts)))
    paths: dict[tuple[str | int, ...], None] = {}
    for leaves in flat:
        paths.update(dict.fromkeys(leaves))
    for path in paths:
        values = [leaves.get(path) for leaves in flat]
        if all(_same_value(values[0], v) for v in values[1:]):
            continue
        out.append((_field_label(path), values))
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

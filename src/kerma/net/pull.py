"""Pull dose objects from a PACS: C-FIND, then C-MOVE or C-GET (or QIDO-RS/WADO-RS).

The plan (:func:`plan_pull`) is the same for DIMSE and DICOMweb; only the query
client differs (:class:`DimseQueryClient`, :class:`kerma.net.dicomweb.DicomwebQueryClient`,
both :class:`QueryClient`):

1. studies by date range and modality, at study level (``ModalitiesInStudy``, with
   ``SR`` added to the modalities asked for, since a study that holds only its dose
   report has modality SR); a PACS that returns no study, or studies without
   ``ModalitiesInStudy``, is asked again without it and the studies are filtered by
   their series' modalities;
2. the series of each study; in every SR series the instances whose SOP class can
   hold a dose report (X-Ray, Enhanced X-Ray and Radiopharmaceutical Radiation Dose
   SR, Enhanced and Comprehensive SR) — an SR series that lists no instance is
   retrieved whole; in series of modalities whose dose lives in image headers (DX,
   CR, MG, PX, IO, NM, PT) one image per series; in small CT series (a vendor dose
   screen) their secondary-capture images;
3. objects whose SOP Instance UID is already in the registry (stored, rejected, or
   ignored as holding no dose information) are skipped, so a second run only fetches
   what is new.

The objects retrieved are spooled and imported like everything the SCP receives
(:mod:`kerma.net.spool`).

May import ``kerma.config``, ``kerma.net`` and (lazily) ``kerma.api`` / ``kerma.db.models``
through :meth:`kerma.Registry.session`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from kerma.config import Settings
from kerma.errors import KermaError
from kerma.net import status
from kerma.net.handlers import StoreCounters, handle_store
from kerma.net.spool import Spool, SpoolWorker

logger = logging.getLogger(__name__)

#: SOP classes that can hold a dose report (case C14, C17).
DOSE_REPORT_SOP_CLASSES: frozenset[str] = frozenset(
    {
        uid.XRayRadiationDoseSRStorage,
        uid.EnhancedXRayRadiationDoseSRStorage,
        uid.RadiopharmaceuticalRadiationDoseSRStorage,
        uid.EnhancedSRStorage,
        uid.ComprehensiveSRStorage,
    }
)

#: Modalities whose dose information is in image headers: one image per series.
HEADER_MODALITIES: frozenset[str] = frozenset({"DX", "CR", "MG", "PX", "IO", "NM", "PT"})

#: Largest CT series searched for a vendor dose screen (secondary capture).
DOSE_SCREEN_MAX_IMAGES = 5

#: Storage SOP classes proposed for C-GET (dose SRs and the header modalities).
GET_STORAGE_SOP_CLASSES: tuple[str, ...] = (
    *sorted(DOSE_REPORT_SOP_CLASSES),
    uid.ComputedRadiographyImageStorage,
    uid.DigitalXRayImageStorageForPresentation,
    uid.DigitalXRayImageStorageForProcessing,
    uid.DigitalMammographyXRayImageStorageForPresentation,
    uid.DigitalMammographyXRayImageStorageForProcessing,
    uid.DigitalIntraOralXRayImageStorageForPresentation,
    uid.BreastTomosynthesisImageStorage,
    uid.NuclearMedicineImageStorage,
    uid.PositronEmissionTomographyImageStorage,
    uid.EnhancedPETImageStorage,
    uid.SecondaryCaptureImageStorage,
    uid.CTImageStorage,
    uid.XRayAngiographicImageStorage,
    uid.XRayRadiofluoroscopicImageStorage,
)

#: Transfer syntaxes accepted for C-GET sub-operations.
GET_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGLosslessSV1,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
)


class PullError(KermaError):
    """The PACS could not be queried or asked to send."""


@dataclass(frozen=True)
class PullCriteria:
    """What to pull.

    Attributes
    ----------
    date_from, date_to : datetime.date or None
        Study date range, both ends included.
    modalities : tuple of str
        Modalities of interest (``ModalitiesInStudy``); empty = all.
    """

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    modalities: tuple[str, ...] = ()

    @property
    def study_date(self) -> str:
        """The DICOM date-range matching key, e.g. ``20240101-20240131`` ('' = any)."""
        if self.date_from is None and self.date_to is None:
            return ""
        start = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        end = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return f"{start}-{end}" if start != end else start


@dataclass(frozen=True)
class RetrieveItem:
    """One retrieval: an instance (``sop_instance_uid`` set) or a whole series."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str | None = None
    modality: str | None = None

    @property
    def level(self) -> str:
        """The Query/Retrieve level: ``IMAGE`` or ``SERIES``."""
        return "IMAGE" if self.sop_instance_uid else "SERIES"


@dataclass
class PullPlan:
    """What :func:`plan_pull` found and decided."""

    studies_found: int = 0
    studies_skipped: int = 0
    instances_found: int = 0
    instances_skipped: int = 0
    items: list[RetrieveItem] = field(default_factory=list)


@dataclass
class PullSummary:
    """What a pull did."""

    plan: PullPlan
    retrieved: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)
    imported: int = 0


ProgressCallback = Callable[[str, int, int], None]


class QueryClient(Protocol):
    """Study, series and instance queries against a PACS (DIMSE or DICOMweb).

    Each method returns plain dicts keyed by DICOM keyword; multi-valued attributes
    (``ModalitiesInStudy``) are lists; missing attributes are absent or empty.
    """

    def find_studies(self, criteria: PullCriteria, *, by_modality: bool) -> list[dict[str, Any]]:
        """Return the studies matching the criteria (``by_modality`` uses ModalitiesInStudy)."""
        ...

    def find_series(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Return the series of a study with ``Modality`` and ``NumberOfSeriesRelatedInstances``."""
        ...

    def find_instances(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[dict[str, Any]]:
        """Return the instances of a series with ``SOPClassUID`` and ``InstanceNumber``."""
        ...


def _as_list(value: Any) -> list[str]:
    """Return a multi-valued attribute as a list of upper-case strings."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip().upper() for v in value.split("\\") if v.strip()]
    return [str(v).strip().upper() for v in value if str(v).strip()]


def _instance_number(item: dict[str, Any]) -> int:
    """Return an instance's number for sorting (missing numbers last)."""
    try:
        return int(item.get("InstanceNumber") or 1 << 30)
    except (TypeError, ValueError):
        return 1 << 30


def plan_pull(
    client: QueryClient,
    criteria: PullCriteria,
    *,
    known_sop_instance_uids: set[str] | frozenset[str] = frozenset(),
    progress: ProgressCallback | None = None,
) -> PullPlan:
    """Query the PACS and decide what to retrieve (see the module docstring).

    Parameters
    ----------
    client : QueryClient
        DIMSE or DICOMweb queries.
    criteria : PullCriteria
        Dates and modalities.
    known_sop_instance_uids : set of str, optional
        Objects already in the registry; they are not retrieved again.
    progress : callable, optional
        Called with ``("query", studies done, studies found)``.

    Returns
    -------
    PullPlan
        The items to retrieve and the counts.
    """
    plan = PullPlan()
    wanted = {m.upper() for m in criteria.modalities}
    if wanted:
        # dose reports live in SR series: a study that holds only SR objects matches too,
        # since its modality is known only once its report is read
        wanted.add("SR")
        criteria = dataclasses.replace(criteria, modalities=tuple(sorted(wanted)))
    studies = client.find_studies(criteria, by_modality=bool(wanted))
    filter_by_series = False
    if wanted and not studies:
        logger.info("No study matched ModalitiesInStudy; filtering by series modality instead")
        studies = client.find_studies(criteria, by_modality=False)
        filter_by_series = True
    plan.studies_found = len(studies)
    for done, study in enumerate(studies, start=1):
        study_uid = str(study.get("StudyInstanceUID") or "")
        if not study_uid:
            continue
        series = client.find_series(study_uid)
        in_study = set(_as_list(study.get("ModalitiesInStudy")))
        if wanted and (filter_by_series or not in_study):
            in_study = {str(s.get("Modality") or "").upper() for s in series}
            if not in_study & wanted:
                plan.studies_found -= 1
                continue
        before = len(plan.items)
        for item in _plan_study(client, study_uid, series, known_sop_instance_uids, plan):
            plan.items.append(item)
        if len(plan.items) == before:
            plan.studies_skipped += 1
        if progress is not None:
            progress("query", done, len(studies))
    return plan


def _plan_study(
    client: QueryClient,
    study_uid: str,
    series: list[dict[str, Any]],
    known: set[str] | frozenset[str],
    plan: PullPlan,
) -> Iterator[RetrieveItem]:
    """Yield the retrievals of one study."""
    for s in series:
        series_uid = str(s.get("SeriesInstanceUID") or "")
        modality = str(s.get("Modality") or "").upper()
        if not series_uid:
            continue
        if modality == "SR":
            instances = client.find_instances(study_uid, series_uid)
            if not instances:
                logger.info("SR series %s lists no instance; retrieving it whole", series_uid)
                yield RetrieveItem(study_uid, series_uid, None, modality)
                continue
            chosen = [
                i
                for i in instances
                if not i.get("SOPClassUID") or str(i["SOPClassUID"]) in DOSE_REPORT_SOP_CLASSES
            ]
        elif modality in HEADER_MODALITIES:
            instances = client.find_instances(study_uid, series_uid)
            chosen = sorted(instances, key=_instance_number)[:1]
        elif modality in {"CT", "OT", "SC"} and _is_small(s):
            instances = client.find_instances(study_uid, series_uid)
            chosen = [
                i
                for i in instances
                if str(i.get("SOPClassUID") or "").startswith(uid.SecondaryCaptureImageStorage)
            ]
        else:
            continue
        for instance in chosen:
            sop_uid = str(instance.get("SOPInstanceUID") or "")
            if not sop_uid:
                continue
            plan.instances_found += 1
            if sop_uid in known:
                plan.instances_skipped += 1
                continue
            yield RetrieveItem(study_uid, series_uid, sop_uid, modality)


def _is_small(series: dict[str, Any]) -> bool:
    """Return whether a series is small enough to hold a dose screen (or its size is unknown)."""
    try:
        return int(series.get("NumberOfSeriesRelatedInstances") or 0) <= DOSE_SCREEN_MAX_IMAGES
    except (TypeError, ValueError):
        return True


def known_sop_instance_uids(registry: Any) -> set[str]:
    """Return the SOP Instance UIDs the registry already knows: stored, rejected or ignored.

    Ignored objects (``ignored_object``: received over the network, holding no dose
    information, not kept when ``KERMA_SCP_KEEP_NON_DOSE`` is off) count as known, so
    a second pull does not fetch them again.

    Parameters
    ----------
    registry : kerma.Registry
        The registry (read through :meth:`kerma.Registry.session`).

    Returns
    -------
    set of str
        SOP Instance UIDs of ``dose_report``, ``rejected_object`` and ``ignored_object``.
    """
    from sqlalchemy import select

    from kerma.db.models import DoseReport, IgnoredObject, RejectedObject

    known: set[str] = set()
    with registry.session(write=False) as session:
        known.update(session.scalars(select(DoseReport.sop_instance_uid)))
        known.update(
            u for u in session.scalars(select(RejectedObject.sop_instance_uid)) if u is not None
        )
        known.update(session.scalars(select(IgnoredObject.sop_instance_uid)))
    known.discard("")
    return known


# -- DIMSE -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacsPeer:
    """A remote Query/Retrieve SCP."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "KERMA"


def _result_to_dict(ds: Dataset) -> dict[str, Any]:
    """Return the attributes of a C-FIND identifier as a keyword dict (values as text)."""
    out: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.VR == "SQ":
            continue
        value = elem.value
        if elem.VM > 1:
            out[elem.keyword] = [str(v) for v in value]
        else:
            out[elem.keyword] = "" if value is None else str(value)
    return out


class DimseQueryClient:
    """C-FIND queries (Study Root) over one association.

    Parameters
    ----------
    peer : PacsPeer
        The PACS.

    Raises
    ------
    PullError
        When the association is refused or a query fails.
    """

    def __init__(self, peer: PacsPeer) -> None:
        self.peer = peer
        ae = AE(ae_title=peer.calling_ae_title)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        self.assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not self.assoc.is_established:
            raise PullError(
                f"Unable to query {peer.ae_title} at {peer.host}:{peer.port}: the association "
                "was refused or timed out. Check the AE titles, host and port, and that the "
                f"PACS knows the calling AE title {peer.calling_ae_title}."
            )

    def close(self) -> None:
        """Release the association."""
        if self.assoc.is_established:
            self.assoc.release()

    def __enter__(self) -> DimseQueryClient:
        """Return the client."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the association."""
        self.close()

    def _find(self, identifier: Dataset) -> list[dict[str, Any]]:
        """Run one C-FIND and return its matches."""
        results = []
        for rsp, ds in self.assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            if rsp is None or "Status" not in rsp:
                raise PullError(f"Unable to query {self.peer.ae_title}: no response (timeout).")
            code = int(rsp.Status)
            if status.is_pending(code) and ds is not None:
                results.append(_result_to_dict(ds))
            elif not status.is_pending(code) and code != status.SUCCESS:
                raise PullError(
                    f"Unable to query {self.peer.ae_title}: C-FIND failed with status 0x{code:04X}."
                )
        return results

    def find_studies(self, criteria: PullCriteria, *, by_modality: bool) -> list[dict[str, Any]]:
        """Return the studies matching the date range (and ModalitiesInStudy)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.StudyDate = criteria.study_date
        ds.AccessionNumber = ""
        ds.ModalitiesInStudy = list(criteria.modalities) if by_modality else ""
        return self._find(ds)

    def find_series(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Return the series of a study."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_instance_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.SeriesDescription = ""
        ds.NumberOfSeriesRelatedInstances = ""
        return self._find(ds)

    def find_instances(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> list[dict[str, Any]]:
        """Return the instances of a series."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study_instance_uid
        ds.SeriesInstanceUID = series_instance_uid
        ds.SOPInstanceUID = ""
        ds.SOPClassUID = ""
        ds.InstanceNumber = ""
        return self._find(ds)


def _identifier(item: RetrieveItem) -> Dataset:
    """Return the C-MOVE/C-GET identifier of one retrieval."""
    ds = Dataset()
    ds.QueryRetrieveLevel = item.level
    ds.StudyInstanceUID = item.study_instance_uid
    ds.SeriesInstanceUID = item.series_instance_uid
    if item.sop_instance_uid:
        ds.SOPInstanceUID = item.sop_instance_uid
    return ds


def _count_final(rsp: Dataset, summary: PullSummary, item: RetrieveItem) -> None:
    """Count the sub-operations of a final C-MOVE/C-GET response."""
    code = int(rsp.Status)
    completed = int(rsp.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(rsp.get("NumberOfFailedSuboperations", 0) or 0)
    warning = int(rsp.get("NumberOfWarningSuboperations", 0) or 0)
    if code == status.SUCCESS and completed == 0 and failed == 0 and warning == 0:
        completed = 1 if item.sop_instance_uid else 0
    summary.retrieved += completed + warning
    if code not in (status.SUCCESS,) and not status.is_warning(code):
        summary.failed += max(failed, 1)
        summary.warnings.append(
            f"retrieval of {item.sop_instance_uid or item.series_instance_uid} "
            f"ended with status 0x{code:04X}"
        )
    else:
        summary.failed += failed


def _retrieve(
    assoc: Any,
    items: list[RetrieveItem],
    summary: PullSummary,
    send: Callable[[Dataset], Iterable[tuple[Dataset, Dataset | None]]],
    progress: ProgressCallback | None,
) -> None:
    """Send one C-MOVE or C-GET per item on ``assoc`` and count the outcomes."""
    for done, item in enumerate(items, start=1):
        if not assoc.is_established:
            summary.failed += len(items) - done + 1
            summary.warnings.append("the PACS closed the association")
            break
        final: Dataset | None = None
        for rsp, _ in send(_identifier(item)):
            if rsp is None or "Status" not in rsp:
                break
            if not status.is_pending(int(rsp.Status)):
                final = rsp
        if final is None:
            summary.failed += 1
            summary.warnings.append(f"no final response for {item.sop_instance_uid}")
        else:
            _count_final(final, summary, item)
        if progress is not None:
            progress("retrieve", done, len(items))


def pull_dimse(
    settings: Settings,
    peer: PacsPeer,
    criteria: PullCriteria,
    *,
    registry: Any,
    method: str = "move",
    move_destination: str | None = None,
    port: int | None = None,
    progress: ProgressCallback | None = None,
) -> PullSummary:
    """Query a PACS and retrieve its dose objects by C-MOVE or C-GET into the registry.

    Parameters
    ----------
    settings : Settings
        ``archive_dir`` (spool), ``scp_aet``/``scp_host``/``scp_port`` (the temporary
        C-MOVE destination) and ``scp_keep_non_dose``.
    peer : PacsPeer
        The PACS.
    criteria : PullCriteria
        Dates and modalities.
    registry : kerma.Registry
        Where the objects go; also tells which ones are already there.
    method : {"move", "get"}, optional
        C-MOVE (default) or C-GET.
    move_destination : str, optional
        AE title of a running ``kerma listen`` to move to. When ``None``, Kerma starts
        a temporary Storage SCP with AE title ``settings.scp_aet`` on ``port`` (default
        ``settings.scp_port``), which the PACS must know as a C-MOVE destination.
    port : int, optional
        Port of the temporary SCP.
    progress : callable, optional
        Called with ``(phase, done, total)``; phases ``query``, ``retrieve``, ``import``.

    Returns
    -------
    PullSummary
        Counts; ``imported`` counts objects handed to the registry.

    Raises
    ------
    PullError
        When the PACS cannot be reached or refuses the query or retrieval.
    """
    known = known_sop_instance_uids(registry)
    with DimseQueryClient(peer) as client:
        plan = plan_pull(client, criteria, known_sop_instance_uids=known, progress=progress)
    summary = PullSummary(plan=plan)
    if not plan.items:
        return summary
    spool = Spool(settings.archive_dir)
    if method == "get":
        worker = SpoolWorker(spool, lambda: registry, keep_non_dose=settings.scp_keep_non_dose)
        worker.start()
        try:
            _get(peer, plan.items, summary, spool, worker, progress)
            summary.imported = drain_worker(worker, progress)
        finally:
            worker.stop()
        return summary
    if method != "move":
        raise ValueError(f"Unable to pull: unknown method {method!r} (use 'move' or 'get').")
    if move_destination:
        _move(peer, plan.items, summary, move_destination, progress)
        return summary
    from kerma.net.scp import StorageSCP

    scp = StorageSCP(settings, registry_factory=lambda: registry, port=port)
    scp.start()
    try:
        _move(peer, plan.items, summary, scp.ae_title, progress)
        summary.imported = drain_worker(scp.worker, progress)
    finally:
        scp.stop(grace_s=10)
    return summary


def drain_worker(worker: SpoolWorker, progress: ProgressCallback | None) -> int:
    """Wait until the worker imported everything spooled; return how many it imported."""
    total = worker.backlog + worker.imported
    while not worker.wait_idle(0.5):
        if progress is not None:
            progress("import", worker.imported, max(total, worker.imported))
    if progress is not None:
        progress("import", worker.imported, max(total, worker.imported))
    return worker.imported


def _move(
    peer: PacsPeer,
    items: list[RetrieveItem],
    summary: PullSummary,
    destination: str,
    progress: ProgressCallback | None,
) -> None:
    """Retrieve items by C-MOVE to ``destination``."""
    ae = AE(ae_title=peer.calling_ae_title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        raise PullError(f"Unable to ask {peer.ae_title} for a C-MOVE: association refused.")
    try:
        _retrieve(
            assoc,
            items,
            summary,
            lambda ds: assoc.send_c_move(
                ds, destination, StudyRootQueryRetrieveInformationModelMove
            ),
            progress,
        )
    finally:
        if assoc.is_established:
            assoc.release()


def _get(
    peer: PacsPeer,
    items: list[RetrieveItem],
    summary: PullSummary,
    spool: Spool,
    worker: SpoolWorker,
    progress: ProgressCallback | None,
) -> None:
    """Retrieve items by C-GET; the C-STORE sub-operations go to the spool."""
    ae = AE(ae_title=peer.calling_ae_title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in GET_STORAGE_SOP_CLASSES:
        ae.add_requested_context(sop_class, list(GET_TRANSFER_SYNTAXES))
    roles: list[Any] = [build_role(c, scp_role=True) for c in GET_STORAGE_SOP_CLASSES]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    counters = StoreCounters()
    handlers: list[Any] = [(evt.EVT_C_STORE, handle_store, [spool, worker.submit, counters])]
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, ext_neg=roles, evt_handlers=handlers
    )
    if not assoc.is_established:
        raise PullError(f"Unable to ask {peer.ae_title} for a C-GET: association refused.")
    try:
        _retrieve(
            assoc,
            items,
            summary,
            lambda ds: assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet),
            progress,
        )
    finally:
        if assoc.is_established:
            assoc.release()

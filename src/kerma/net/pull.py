"""Pull dose objects from a PACS: C-FIND, then C-MOVE or C-GET (or QIDO-RS/WADO-RS).

The plan (:func:`plan_pull`) is the same for DIMSE and DICOMweb; only the query
client differs (:class:`DimseQueryClient`, :class:`kerma.net.dicomweb.DicomwebQueryClient`,
both :class:`QueryClient`):

1. studies by date range and modality, at study level (``ModalitiesInStudy``, with
   ``SR`` added to the modalities asked for, since a study that holds only its dose
   report has modality SR); a PACS that returns no study, or studies without
   ``ModalitiesInStudy``, is asked again without it and the studies' modalities are
   taken from their series;
2. with modalities asked for (``kerma pull -m CT``), a study is kept when its
   modalities (those of its series: a PACS may answer ``ModalitiesInStudy`` with only
   the modalities that matched) name one of them, and also when it holds nothing but
   SR and other
   non-image objects (:data:`NON_IMAGE_MODALITIES`): such a study's dose report tells
   its modality only once it is read, so it is retrieved and the import keeps it only
   when it is of a modality asked for (``Importer.import_bytes(modalities=...)``). A
   study whose image modalities are all other ones (a DX study with its RDSR) is not
   retrieved at all;
3. the series of each study; in every SR series the instances whose SOP class can
   hold a dose report (X-Ray, Enhanced X-Ray and Radiopharmaceutical Radiation Dose
   SR, Enhanced and Comprehensive SR) — an SR series that lists no instance is
   retrieved whole; in series of modalities whose dose lives in image headers (DX,
   CR, MG, PX, IO, NM, PT) one image per series, when that modality is asked for; in
   small CT series (a vendor dose screen) their secondary-capture images, when CT is;
4. objects whose SOP Instance UID is already in the registry (stored, rejected, or
   ignored as holding no dose information) are skipped, so a second run only fetches
   what is new. The caller says which are (a :data:`KnownInstances` callable), so this
   module never reads the registry itself.

The objects retrieved are spooled and imported like everything the SCP receives
(:mod:`kerma.net.spool`), with their bytes as the PACS sent them.

May import ``kerma.config``, ``kerma.errors`` and ``kerma.net``; never ``kerma.api``,
``kerma.db`` or ``kerma.services`` (the importer and the known-instances check are
passed in by the CLI).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
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
from kerma.errors import PullError
from kerma.net import status
from kerma.net.handlers import (
    MAX_PDU_BYTES,
    IntakeLimits,
    StoreCounters,
    handle_open,
    handle_store,
)
from kerma.net.spool import BytesImporter, Spool, SpoolImporter, SpoolWorker

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

#: Modalities of objects that are not images of an acquisition (PS3.3 C.7.3.1.1.1):
#: structured reports, key object selections, presentation states, documents, and
#: "other". A study holding only these tells no acquisition modality; its dose report
#: is read to find it.
NON_IMAGE_MODALITIES: frozenset[str] = frozenset({"SR", "KO", "PR", "DOC", "OT", ""})

#: Returns those of the given SOP Instance UIDs that are already in the registry
#: (stored, rejected or ignored).
KnownInstances = Callable[[Collection[str]], Collection[str]]

#: Returns the importer of the objects retrieved (see :class:`kerma.net.spool.SpoolWorker`).
ImporterFactory = Callable[[], SpoolImporter | BytesImporter]


def _nothing_known(uids: Collection[str]) -> Collection[str]:
    """Return no UID: nothing is in the registry yet (the default of :func:`plan_pull`)."""
    return ()


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
    """One retrieval: an instance (``sop_instance_uid`` set) or a whole series.

    ``modality_unknown`` marks the dose reports of a study that holds only SR and
    other non-image objects, retrieved for a pull of some modalities: their modality
    is known only once they are read.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str | None = None
    modality: str | None = None
    modality_unknown: bool = False

    @property
    def level(self) -> str:
        """The Query/Retrieve level: ``IMAGE`` or ``SERIES``."""
        return "IMAGE" if self.sop_instance_uid else "SERIES"


@dataclass
class PullPlan:
    """What :func:`plan_pull` found and decided.

    Attributes
    ----------
    studies_found : int
        Studies of the dates and modalities asked for.
    studies_skipped : int
        Of those, studies with nothing new to retrieve.
    studies_other_modality : int
        Studies the PACS returned (for their SR) whose image modalities are all other
        than those asked for: not retrieved, not counted in ``studies_found``.
    studies_sr_only : int
        Studies holding only SR and other non-image objects, whose dose reports are
        retrieved and kept only when of a modality asked for (modalities asked only).
    instances_found, instances_skipped : int
        Dose objects found, and those already in the registry.
    items : list of RetrieveItem
        What to retrieve.
    """

    studies_found: int = 0
    studies_skipped: int = 0
    studies_other_modality: int = 0
    studies_sr_only: int = 0
    instances_found: int = 0
    instances_skipped: int = 0
    items: list[RetrieveItem] = field(default_factory=list)


@dataclass
class PullSummary:
    """What a pull did.

    Attributes
    ----------
    plan : PullPlan
        What was found and planned.
    retrieved, failed : int
        Objects retrieved, and retrievals that failed.
    warnings : list of str
        What went wrong, one line each.
    imported : int
        Objects handed to the import (stored, already present, rejected, ignored or
        skipped).
    skipped_other_modality : int
        Of those, dose reports of SR-only studies that turned out to be of another
        modality than asked for: not kept.
    """

    plan: PullPlan
    retrieved: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)
    imported: int = 0
    skipped_other_modality: int = 0


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
    known: KnownInstances = _nothing_known,
    progress: ProgressCallback | None = None,
) -> PullPlan:
    """Query the PACS and decide what to retrieve (see the module docstring).

    Parameters
    ----------
    client : QueryClient
        DIMSE or DICOMweb queries.
    criteria : PullCriteria
        Dates and modalities.
    known : callable, optional
        Returns which of the SOP Instance UIDs it is given (those of one study at a
        time) are already in the registry; they are not retrieved again. Default: none.
    progress : callable, optional
        Called with ``("query", studies done, studies found)``.

    Returns
    -------
    PullPlan
        The items to retrieve and the counts.
    """
    plan = PullPlan()
    wanted = frozenset(m.upper() for m in criteria.modalities)
    if wanted:
        # dose reports live in SR series: a study that holds only SR objects matches too,
        # since its modality is known only once its report is read
        criteria = dataclasses.replace(criteria, modalities=tuple(sorted(wanted | {"SR"})))
    studies = client.find_studies(criteria, by_modality=bool(wanted))
    filter_by_series = False
    if wanted and not studies:
        logger.info("No study matched ModalitiesInStudy; filtering by series modality instead")
        studies = client.find_studies(criteria, by_modality=False)
        filter_by_series = True
    for done, study in enumerate(studies, start=1):
        if progress is not None:
            progress("query", done, len(studies))
        study_uid = str(study.get("StudyInstanceUID") or "")
        if not study_uid:
            continue
        series = client.find_series(study_uid)
        # the series tell the study's modalities; a PACS may answer ModalitiesInStudy with
        # only those that matched the query (Orthanc answers "SR" for a DX + SR study)
        in_study = {str(s.get("Modality") or "").upper() for s in series} - {""}
        if not in_study and not filter_by_series:
            in_study = set(_as_list(study.get("ModalitiesInStudy")))
        if wanted:
            image_modalities = in_study - NON_IMAGE_MODALITIES
            if image_modalities and not image_modalities & wanted:
                plan.studies_other_modality += 1
                continue
            if not image_modalities:
                plan.studies_sr_only += 1
        plan.studies_found += 1
        chosen = list(_plan_study(client, study_uid, series, wanted))
        if wanted and not in_study - NON_IMAGE_MODALITIES:
            chosen = [dataclasses.replace(item, modality_unknown=True) for item in chosen]
        plan.instances_found += sum(1 for item in chosen if item.sop_instance_uid)
        uids = [item.sop_instance_uid for item in chosen if item.sop_instance_uid]
        present = set(known(uids)) if uids else set()
        new = [item for item in chosen if item.sop_instance_uid not in present]
        plan.instances_skipped += len(chosen) - len(new)
        if not new:
            plan.studies_skipped += 1
        plan.items.extend(new)
    return plan


def _plan_study(
    client: QueryClient,
    study_uid: str,
    series: list[dict[str, Any]],
    wanted: frozenset[str],
) -> Iterator[RetrieveItem]:
    """Yield the retrievals of one study (header series only of ``wanted`` modalities)."""
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
        elif modality in HEADER_MODALITIES and (not wanted or modality in wanted):
            instances = client.find_instances(study_uid, series_uid)
            chosen = sorted(instances, key=_instance_number)[:1]
        elif modality in {"CT", "OT", "SC"} and (not wanted or "CT" in wanted) and _is_small(s):
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
            if sop_uid:
                yield RetrieveItem(study_uid, series_uid, sop_uid, modality)


def _is_small(series: dict[str, Any]) -> bool:
    """Return whether a series is small enough to hold a dose screen (or its size is unknown)."""
    try:
        return int(series.get("NumberOfSeriesRelatedInstances") or 0) <= DOSE_SCREEN_MAX_IMAGES
    except (TypeError, ValueError):
        return True


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
    importer_factory: ImporterFactory,
    known: KnownInstances = _nothing_known,
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
    importer_factory : callable
        Returns the importer of the objects retrieved: the ingest pipeline
        (``kerma.ingest.pipeline.Importer``) or a :class:`~kerma.net.spool.SpoolImporter`.
    known : callable, optional
        Returns which of the SOP Instance UIDs it is given are already in the registry
        (stored, rejected or ignored); those are not retrieved. Default: none.
    method : {"move", "get"}, optional
        C-MOVE (default) or C-GET.
    move_destination : str, optional
        AE title of a running ``kerma listen`` to move to. When ``None``, Kerma starts
        a temporary Storage SCP with AE title ``settings.scp_aet`` on ``port`` (default
        ``settings.scp_port``), which the PACS must know as a C-MOVE destination. With
        modalities asked for, the dose reports of SR-only studies are not moved there
        (that listener would keep them whatever their modality); a warning says how many.
    port : int, optional
        Port of the temporary SCP.
    progress : callable, optional
        Called with ``(phase, done, total)``; phases ``query``, ``retrieve``, ``import``.

    Returns
    -------
    PullSummary
        Counts; ``imported`` counts objects handed to the import.

    Raises
    ------
    PullError
        When the PACS cannot be reached or refuses the query or retrieval.
    ValueError
        When ``method`` is neither ``"move"`` nor ``"get"``.
    """
    if method not in {"move", "get"}:
        raise ValueError(f"Unable to pull: unknown method {method!r} (use 'move' or 'get').")
    with DimseQueryClient(peer) as client:
        plan = plan_pull(client, criteria, known=known, progress=progress)
    summary = PullSummary(plan=plan)
    modalities = criteria.modalities or None
    if move_destination and modalities:
        unknown = [item for item in plan.items if item.modality_unknown]
        if unknown:
            plan.items = [item for item in plan.items if not item.modality_unknown]
            summary.warnings.append(
                f"{len(unknown)} dose reports of studies holding only SR objects were not "
                f"moved to {move_destination}: their modality is known only once read, and "
                "that listener would keep them whatever it is. Pull without --move-dest to "
                "retrieve them and keep those of the modalities asked for."
            )
    if not plan.items:
        return summary
    spool = Spool(settings.archive_dir)
    if method == "get":
        worker = SpoolWorker(
            spool,
            importer_factory,
            keep_non_dose=settings.scp_keep_non_dose,
            modalities=modalities,
        )
        worker.start()
        try:
            _get(
                peer,
                plan.items,
                summary,
                spool,
                worker,
                progress,
                IntakeLimits.from_settings(settings),
            )
            summary.imported = drain_worker(worker, progress)
            summary.skipped_other_modality = worker.skipped
        finally:
            worker.stop()
        return summary
    if move_destination:
        _move(peer, plan.items, summary, move_destination, progress)
        return summary
    from kerma.net.scp import StorageSCP

    scp = StorageSCP(settings, importer_factory=importer_factory, port=port, modalities=modalities)
    scp.start()
    try:
        _move(peer, plan.items, summary, scp.ae_title, progress)
        summary.imported = drain_worker(scp.worker, progress)
        summary.skipped_other_modality = scp.worker.skipped
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
    limits: IntakeLimits,
) -> None:
    """Retrieve items by C-GET; the C-STORE sub-operations go to the spool.

    The association is guarded (:func:`kerma.net.handlers.guard_association`): an
    object over ``limits`` is refused (0xA700) as by the Storage SCP.
    """
    ae = AE(ae_title=peer.calling_ae_title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in GET_STORAGE_SOP_CLASSES:
        ae.add_requested_context(sop_class, list(GET_TRANSFER_SYNTAXES))
    roles: list[Any] = [build_role(c, scp_role=True) for c in GET_STORAGE_SOP_CLASSES]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    counters = StoreCounters()
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [spool, worker.submit, counters, None, limits]),
        (evt.EVT_CONN_OPEN, handle_open, [limits, spool.directory]),
    ]
    ae.maximum_pdu_size = MAX_PDU_BYTES
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

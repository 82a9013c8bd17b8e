"""DICOMweb: pull with QIDO-RS / WADO-RS (dicomweb-client), and the STOW-RS store step.

:class:`DicomwebQueryClient` implements :class:`kerma.net.pull.QueryClient` with
``dicomweb_client.DICOMwebClient`` (``search_for_studies``, ``search_for_series``,
``search_for_instances``); :func:`pull_dicomweb` retrieves the planned instances with
``retrieve_instance`` (or ``retrieve_series``) and spools them like the SCP does.

:func:`store_parts` is the storage step of the STOW-RS endpoint
(:mod:`kerma.web.routes.dicomweb`): each part is checked, written and fsynced to the
spool before the response, and the result is a PS3.18 Store Instances Response.

May import ``kerma.config`` and ``kerma.net``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset

from kerma.config import Settings
from kerma.net import status
from kerma.net.handlers import check_encoded_dataset
from kerma.net.pull import (
    ProgressCallback,
    PullCriteria,
    PullError,
    PullSummary,
    drain_worker,
    known_sop_instance_uids,
    plan_pull,
)
from kerma.net.spool import Spool, SpoolWorker

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
    """

    def __init__(self, url: str) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = url
        self.client = DICOMwebClient(url=url)

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
        except Exception as exc:
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


def encode_dataset(ds: Dataset) -> bytes:
    """Return a dataset as a Part 10 file (file meta added when missing)."""
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta = meta
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def pull_dicomweb(
    settings: Settings,
    url: str,
    criteria: PullCriteria,
    *,
    registry: Any,
    progress: ProgressCallback | None = None,
) -> PullSummary:
    """Query a DICOMweb service (QIDO-RS) and retrieve its dose objects (WADO-RS).

    Parameters
    ----------
    settings : Settings
        ``archive_dir`` (spool) and ``scp_keep_non_dose``.
    url : str
        DICOMweb service root.
    criteria : PullCriteria
        Dates and modalities.
    registry : kerma.Registry
        Where the objects go; also tells which ones are already there.
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
    plan = plan_pull(
        client,
        criteria,
        known_sop_instance_uids=known_sop_instance_uids(registry),
        progress=progress,
    )
    summary = PullSummary(plan=plan)
    if not plan.items:
        return summary
    spool = Spool(settings.archive_dir)
    worker = SpoolWorker(spool, lambda: registry, keep_non_dose=settings.scp_keep_non_dose)
    worker.start()
    try:
        for done, item in enumerate(plan.items, start=1):
            try:
                if item.sop_instance_uid:
                    datasets = [
                        client.client.retrieve_instance(
                            item.study_instance_uid,
                            item.series_instance_uid,
                            item.sop_instance_uid,
                        )
                    ]
                else:
                    datasets = client.client.retrieve_series(
                        item.study_instance_uid, item.series_instance_uid
                    )
                for ds in datasets:
                    worker.submit(spool.put(encode_dataset(ds)))
                    summary.retrieved += 1
            except Exception as exc:
                summary.failed += 1
                summary.warnings.append(
                    f"Unable to retrieve {item.sop_instance_uid or item.series_instance_uid}: "
                    f"{type(exc).__name__}: {exc}"
                )
                logger.warning(summary.warnings[-1])
            if progress is not None:
                progress("retrieve", done, len(plan.items))
        summary.imported = drain_worker(worker, progress)
    finally:
        worker.stop()
    return summary


# -- STOW-RS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPart:
    """The outcome of one part of a STOW-RS request."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure_reason: int | None = None


def store_part(
    data: bytes, spool: Spool, worker: SpoolWorker, *, study_instance_uid: str | None = None
) -> StoredPart:
    """Check one ``application/dicom`` part, spool it (fsynced) and queue its import.

    Parameters
    ----------
    data : bytes
        The Part 10 object.
    spool : Spool
        Where it is written.
    worker : SpoolWorker
        Imports it.
    study_instance_uid : str, optional
        For ``POST /studies/{study}``: the part must belong to this study.

    Returns
    -------
    StoredPart
        With ``failure_reason`` (a :mod:`kerma.net.status` code) when it failed.
    """
    try:
        sop_class_uid, sop_instance_uid = check_encoded_dataset(data)
    except ValueError as exc:
        logger.error("STOW-RS part cannot be decoded: %s", exc)
        spool.quarantine(data, name="stow")
        return StoredPart(None, None, status.CANNOT_UNDERSTAND_GENERIC)
    if study_instance_uid is not None:
        ds = pydicom.dcmread(
            BytesIO(data), stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
        )
        if str(ds.get("StudyInstanceUID", "")) != study_instance_uid:
            return StoredPart(sop_class_uid, sop_instance_uid, status.SOP_CLASS_NOT_SUPPORTED)
    try:
        path = spool.put(data)
    except OSError:
        logger.exception("Unable to write STOW-RS object %s to the spool", sop_instance_uid)
        return StoredPart(sop_class_uid, sop_instance_uid, status.OUT_OF_RESOURCES)
    worker.submit(path)
    logger.info("Stored %s (STOW-RS)", sop_instance_uid)
    return StoredPart(sop_class_uid, sop_instance_uid)


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

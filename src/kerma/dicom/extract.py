"""Classify a DICOM object and extract its dose record: ``Dataset -> DoseReport``.

Classification is by content, not by file name or vendor (DESIGN.md "Extract is pure"):

1. a dataset with an SR content tree whose root concept is 'X-Ray Radiation Dose
   Report' (DCM 113701) is read with TID 10011 (CT) when its 'Procedure reported' is
   CT or it holds 'CT Acquisition' (DCM 113819) containers, else with TID 10001
   (projection X-ray: RF, XA, DX, MG); 'Radiopharmaceutical Radiation Dose Report'
   (DCM 113500) is read with TID 10021. The SOP class may be X-Ray Radiation Dose SR,
   Enhanced X-Ray Radiation Dose SR, Radiopharmaceutical Radiation Dose SR or a
   Comprehensive/Enhanced SR; a missing Content Template Sequence is a warning;
2. any other SR is rejected as not a dose report;
3. a vendor CT dose screen (secondary capture) is read by :mod:`kerma.dicom.dose_sheet`;
4. an image is read by :mod:`kerma.dicom.headers` (rejected when it holds no dose data).

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.dicom``.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.sr.codedict import codes

from kerma.dicom.common import fill_common, get_text
from kerma.dicom.content import (
    children,
    code_value,
    concept_of,
    describe,
    find,
    is_any_concept,
    is_concept,
    sequence_items,
    uid_value,
)
from kerma.dicom.inflate import DEFAULT_MAX_INFLATED_BYTES, DEFAULT_MAX_OBJECT_BYTES
from kerma.dicom.integrity import MAX_DEPTH, TOO_DEEP
from kerma.dicom.reader import (
    READ_WARNINGS_ATTRIBUTE,
    DicomObject,
    drop_undecodable,
    read_bytes,
)
from kerma.dicom.tree import ContentItem, content_tree
from kerma.errors import IngestError, NotADoseReportError, UnreadableObjectError
from kerma.records import DoseReport, Rejection, ReportKind

logger = logging.getLogger(__name__)

#: The procedure codes of 'Procedure reported' (DCM 121058) that mean CT (CID 10000).
CT_PROCEDURES = (codes.SCT.ComputedTomography,)


def read_dataset(
    source: str | PathLike[str] | BinaryIO, *, stop_before_pixels: bool = True
) -> Dataset:
    """Read a DICOM file (Part 10, or a bare dataset as some archives hold them).

    The bytes are read by :func:`kerma.dicom.reader.read_bytes` (one pass, the SR
    content tree kept for the template readers); a file cut short reads as far as it
    goes (use :func:`read_object` to be told where it is cut).

    Parameters
    ----------
    source : str, path-like or binary file
        The file (a stream is read from its current position).
    stop_before_pixels : bool, optional
        Skip Pixel Data (dose extraction does not need it). Default ``True``.

    Raises
    ------
    UnreadableObjectError
        When the file is not DICOM or cannot be decoded.
    """
    if isinstance(source, str | PathLike):
        name = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise UnreadableObjectError(f"Unable to read {name}: {exc.strerror or exc}.") from exc
    else:
        name = getattr(source, "name", "<stream>")
        data = source.read()
    obj = read_bytes(data, name=str(name), with_pixels=not stop_before_pixels)
    if "SOPClassUID" not in obj.dataset:
        raise UnreadableObjectError(
            f"Unable to read {name}: it has no (0008,0016) 'SOP Class UID'; it may be "
            "truncated or not a DICOM object."
        )
    return obj.dataset


def read_with_pydicom(
    source: str | PathLike[str] | BinaryIO, *, stop_before_pixels: bool = True
) -> Dataset:
    """Read a DICOM file with :func:`pydicom.dcmread` (no truncation check).

    The fallback of :func:`kerma.dicom.reader.read_bytes` for what its walk does not read:
    a bare dataset without the ``DICM`` preamble (as some archives hold them), Explicit
    VR Big Endian, unexpected structures.

    Parameters
    ----------
    source : str, path-like or binary file
        The file.
    stop_before_pixels : bool, optional
        Skip Pixel Data (dose extraction does not need it). Default ``True``.

    Raises
    ------
    UnreadableObjectError
        When the file is not DICOM, is truncated, or cannot be decoded.
    """
    name = (
        str(source) if isinstance(source, str | PathLike) else getattr(source, "name", "<stream>")
    )
    try:
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            if hasattr(source, "seek"):
                source.seek(0)  # type: ignore[union-attr]
            ds = pydicom.dcmread(source, force=True, stop_before_pixels=stop_before_pixels)
            if "SOPClassUID" not in ds:
                raise UnreadableObjectError(
                    f"Unable to read {name}: it is not a DICOM file (no DICM preamble and no "
                    "SOP Class UID). Check that the file is a DICOM object."
                ) from None
        # touch the elements so a truncated file fails here, not half-way through reading
        if "SOPClassUID" not in ds:
            raise UnreadableObjectError(
                f"Unable to read {name}: it has no (0008,0016) 'SOP Class UID'; it may be "
                "truncated or not a DICOM object."
            )
    except UnreadableObjectError:
        raise
    except RecursionError as exc:
        raise UnreadableObjectError(
            f"Unable to read {name}: its sequences are nested too deeply to decode."
        ) from exc
    except (
        InvalidDicomError,
        BytesLengthException,
        struct.error,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        LookupError,
        AttributeError,
        OverflowError,
        NotImplementedError,
    ) as exc:  # what pydicom raises for bytes it cannot decode (kerma.dicom.decode_errors)
        raise UnreadableObjectError(
            f"Unable to read {name}: the DICOM data could not be decoded "
            f"({type(exc).__name__}: {exc}); the file may be truncated or corrupt."
        ) from exc
    return ds


def is_sr(ds: Dataset) -> bool:
    """Return whether ``ds`` carries an SR content tree (root CONTAINER with concept)."""
    return ds.get("ValueType") == "CONTAINER" and "ConceptNameCodeSequence" in ds


def extract_dataset(ds: Dataset, *, file: str | None = None) -> DoseReport:
    """Return the dose record of a DICOM dataset.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The object.
    file : str, optional
        Its path, kept on the record for reporting.

    Returns
    -------
    DoseReport
        Values in canonical units; reading problems in ``warnings``.

    Raises
    ------
    NotADoseReportError
        When the object holds no dose information.
    IngestError
        When a required value cannot be determined.
    """
    sop_instance_uid = get_text(ds, "SOPInstanceUID")
    try:
        try:
            report = _extract_any(ds, file=file)
        except (NotImplementedError, BytesLengthException):
            # a value pydicom decodes only when read (an element inside a sequence with
            # an unknown VR or a wrong length): leave such elements out and read again
            if not drop_undecodable(ds, deep=True):
                raise
            report = _extract_any(ds, file=file)
    except IngestError as exc:
        if exc.sop_instance_uid is None:
            exc.sop_instance_uid = sop_instance_uid
        raise
    except RecursionError as exc:
        # Malformed, not "without dose": it must be rejected and kept, never ignored.
        raise UnreadableObjectError(
            f"Unable to read SR {sop_instance_uid}: its content tree is nested too deeply "
            "(more levels than the reader can follow); the object is malformed. Kept in the "
            "archive for inspection; ask the vendor for a conformant object.",
            sop_instance_uid=sop_instance_uid,
        ) from exc
    return report


def _extract_any(ds: Dataset, *, file: str | None) -> DoseReport:
    """Return the record of an SR, a dose screen or an image header (see
    :func:`extract_dataset`), with the warnings of reading the object."""
    if is_sr(ds):
        report = _extract_sr(ds, file=file)
    else:
        from kerma.dicom import dose_sheet, headers

        if dose_sheet.is_dose_sheet(ds):
            report = DoseReport(kind=ReportKind.DOSE_SHEET_CT, file=file)
            fill_common(ds, report)
            dose_sheet.read_dose_sheet(ds, report)
        else:
            report = DoseReport(kind=ReportKind.HEADER_DX, file=file)
            fill_common(ds, report)
            headers.read_image_header(ds, report)  # sets kind; raises NotADoseReportError
    for warning in ds.__dict__.get(READ_WARNINGS_ATTRIBUTE, ()):
        report.warn(warning)
    return report


def _extract_sr(ds: Dataset, *, file: str | None) -> DoseReport:
    """Dispatch an SR to its template reader by root concept."""
    tree = content_tree(ds)
    root = concept_of(tree)
    uid = get_text(ds, "SOPInstanceUID")
    if is_concept(root, codes.DCM.XRayRadiationDoseReport):
        kind = _xray_kind(tree)
        report = DoseReport(kind=kind, file=file)
        fill_common(ds, report)
        _check_template(ds, report, "10011" if kind is ReportKind.RDSR_CT else "10001")
        read_observer_context(children(tree), report)
        if kind is ReportKind.RDSR_CT:
            from kerma.dicom.ct import read_ct_report

            report.study.modality = "CT"
            read_ct_report(ds, report, root=tree)
        else:
            from kerma.dicom.projection import read_projection_report

            read_projection_report(ds, report, root=tree)
        report.study.procedure_reported = _procedure_reported(tree)
        return report
    if is_concept(root, codes.DCM.RadiopharmaceuticalRadiationDoseReport):
        from kerma.dicom.radiopharmaceutical import read_radiopharmaceutical_report

        report = DoseReport(kind=ReportKind.RDSR_RADIOPHARMACEUTICAL, file=file)
        fill_common(ds, report)
        _check_template(ds, report, "10021")
        read_observer_context(children(tree), report)
        read_radiopharmaceutical_report(ds, report, root=tree)
        return report
    from kerma.dicom.codes import SIEMENS_RADIATION_SUMMARY_REPORT

    if is_concept(root, SIEMENS_RADIATION_SUMMARY_REPORT):
        # Siemens ARCADIS private dose summary (study totals, no events): projection
        from kerma.dicom.projection import read_projection_report

        report = DoseReport(kind=ReportKind.RDSR_PROJECTION, file=file)
        fill_common(ds, report)
        read_projection_report(ds, report, root=tree)
        return report
    title = describe(root) if root else "no concept name"
    raise NotADoseReportError(
        f"SR {uid} is not a dose report because its document title is {title}, not "
        "'X-Ray Radiation Dose Report' (DCM 113701) or 'Radiopharmaceutical Radiation Dose "
        "Report' (DCM 113500); it holds no dose information.",
        sop_instance_uid=uid,
    )


def _procedure_reported(root: ContentItem) -> str | None:
    """Return the Code Meaning of 'Procedure reported' (DCM 121058), or ``None``."""
    code = code_value(find(children(root), codes.DCM.ProcedureReported))
    return code.meaning or None if code else None


def _xray_kind(root: ContentItem) -> ReportKind:
    """Decide TID 10011 (CT) or TID 10001 (projection) for an X-Ray Radiation Dose Report."""
    items = children(root)
    procedure = code_value(find(items, codes.DCM.ProcedureReported))
    if procedure is not None:
        if is_any_concept(procedure, CT_PROCEDURES):
            return ReportKind.RDSR_CT
        return ReportKind.RDSR_PROJECTION
    if find(items, codes.DCM.CTAcquisition) or find(items, codes.DCM.CTAccumulatedDoseData):
        return ReportKind.RDSR_CT
    return ReportKind.RDSR_PROJECTION


def _check_template(ds: Dataset, report: DoseReport, tid: str) -> None:
    """Warn when the root Content Template Sequence is missing or names another TID."""
    seq = sequence_items(ds, "ContentTemplateSequence")
    if not seq:
        report.warn(
            f"no ContentTemplateSequence; template inferred as TID {tid} from the root concept"
        )
        return
    found = str(seq[0].get("TemplateIdentifier", "")).strip()
    if found and found != tid:
        report.warn(f"Content Template Sequence names TID {found}; read as TID {tid}")


def read_observer_context(items: list[ContentItem], report: DoseReport) -> None:
    """Read the device observer (TID 1002/1004) at the root: 'Device Observer UID'."""
    uid = uid_value(find(items, codes.DCM.DeviceObserverUID))
    if uid:
        report.device.device_observer_uid = uid


@dataclass
class Extraction:
    """What reading and extracting one object gave: its record, or why there is none.

    Attributes
    ----------
    report : DoseReport or None
        The record (``None`` when rejected).
    reason : str or None
        Why there is no record, in words a physicist understands.
    outcome : {'ok', 'unreadable', 'truncated', 'not-dose', 'rejected', 'reader-error'}
        ``unreadable``: not DICOM or not decodable; ``truncated``: cut short (``reason``
        says where); ``not-dose``: a readable object without dose information;
        ``rejected``: a dose object whose required values cannot be read;
        ``reader-error``: a bug in a reader (``error`` holds the exception).
    sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid, modality
        Identifiers of the object, when it could be read.
    error : Exception or None
        The exception behind ``reason``.
    obj : DicomObject or None
        The object read (for a second use of the same decode, e.g. the patient size of
        a CT image: :meth:`kerma.dicom.reader.DicomObject.with_pixels`).
    """

    report: DoseReport | None = None
    reason: str | None = None
    outcome: str = "ok"
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    error: Exception | None = None
    obj: DicomObject | None = field(default=None, repr=False)

    def rejection(self, file: str) -> Rejection:
        """Return the :class:`Rejection` of an object without a record."""
        return Rejection(
            reason=self.reason or "not read",
            file=file,
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
        )


def read_and_extract(
    data: bytes, *, name: str, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> Extraction:
    """Read an object from its bytes once and extract its dose record.

    The one read shared by ``kerma inspect`` and the import pipeline: the bytes are
    decoded and checked for truncation in one pass (:func:`kerma.dicom.reader.read_bytes`),
    then classified and extracted (:func:`extract_dataset`). Never raises for a bad
    object: every failure is an :class:`Extraction` with the reason.

    Parameters
    ----------
    data : bytes
        The object (Part 10 file bytes).
    name : str
        How messages name it (path or source).
    max_inflated_bytes : int, optional
        Largest inflated data set of a deflated object (``settings.max_inflated_bytes``);
        a larger one is ``unreadable`` with the reason.

    Returns
    -------
    Extraction
        The record, or the outcome and reason.
    """
    try:
        obj = read_bytes(data, name=name, max_inflated_bytes=max_inflated_bytes)
    except IngestError as exc:
        return Extraction(reason=str(exc), outcome="unreadable", error=exc)
    ds = obj.dataset
    result = Extraction(
        sop_class_uid=get_text(ds, "SOPClassUID"),
        sop_instance_uid=get_text(ds, "SOPInstanceUID"),
        obj=obj,
    )
    if obj.truncation == TOO_DEEP:
        result.outcome = "unreadable"
        result.reason = (
            f"Unable to read {name}: its sequences are nested more than {MAX_DEPTH} levels "
            "deep, far beyond any dose report template (TID 10011 nests 4 levels); the "
            "object is malformed. It is kept; ask the sender for a conformant object."
        )
        return result
    if obj.truncation is not None:
        result.outcome = "truncated"
        result.reason = (
            f"Unable to read {name}: the file is incomplete ({obj.truncation}); it was "
            "probably cut short in transfer or on disk. Send or copy it again."
        )
        return result
    try:
        result.report = extract_dataset(ds, file=name)
    except NotADoseReportError as exc:
        result.outcome, result.reason, result.error = "not-dose", str(exc), exc
        result.study_instance_uid = get_text(ds, "StudyInstanceUID")
        result.series_instance_uid = get_text(ds, "SeriesInstanceUID")
        result.modality = get_text(ds, "Modality")
    except IngestError as exc:
        result.outcome, result.reason, result.error = "rejected", str(exc), exc
    except Exception as exc:  # boundary of one object's extraction: a bug in an extractor
        # must not stop a batch (DESIGN.md); the object is kept, rejected as "reader-error"
        logger.warning("extractor failed on %s: %s: %s", name, type(exc).__name__, exc)
        logger.debug("extractor traceback", exc_info=True)
        result.outcome, result.error = "reader-error", exc
        result.reason = (
            f"Unable to extract dose data: internal reader error ({type(exc).__name__}: "
            f"{exc}). The object is kept; please report it to the Kerma developers."
        )
    return result


def read_object(data: bytes, *, name: str = "<bytes>", with_pixels: bool = False) -> DicomObject:
    """Read an object from its bytes: the dataset and where it is cut short, if it is.

    See :func:`kerma.dicom.reader.read_bytes`.
    """
    return read_bytes(data, name=name, with_pixels=with_pixels)


def inspect_path(
    path: str | Path,
    *,
    display_name: str | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> DoseReport | Rejection:
    """Return the dose record of a file, or a :class:`Rejection` with the reason.

    Never raises for a bad file: every failure becomes a rejection a physicist can read.
    A file larger than ``max_object_bytes`` is not read (:func:`too_large_reason`); a
    deflated one that inflates beyond ``max_inflated_bytes`` is rejected.
    """
    name = display_name or str(path)
    try:
        size = Path(path).stat().st_size
        if size > max_object_bytes:
            return Rejection(reason=too_large_reason(name, size, max_object_bytes), file=name)
        data = Path(path).read_bytes()  # read once: decoded and checked for truncation
    except OSError as exc:
        return Rejection(reason=f"Unable to read {name}: {exc.strerror or exc}.", file=name)
    return inspect_bytes(data, name=name, max_inflated_bytes=max_inflated_bytes)


def too_large_reason(name: str, size: int, max_object_bytes: int) -> str:
    """Return the reject reason of a file larger than ``max_object_bytes`` (not read)."""
    return (
        f"Unable to read {name}: the file is {size:,} bytes, more than the "
        f"{max_object_bytes:,} bytes this registry accepts (max_object_bytes); it was "
        "not read or archived. Raise KERMA_MAX_OBJECT_BYTES if the object is genuine."
    )


def inspect_bytes(
    data: bytes, *, name: str = "<bytes>", max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> DoseReport | Rejection:
    """Return the dose record of an object's bytes, or a :class:`Rejection` with the reason."""
    result = read_and_extract(data, name=name, max_inflated_bytes=max_inflated_bytes)
    if result.report is not None:
        return result.report
    return result.rejection(name)

"""De-identification of dose objects for research: DICOM PS3.15 Annex E, Basic Profile.

The Basic Application Level Confidentiality Profile (PS3.15 Annex E, Table E.1-1) with
two selectable options, applied to the header *and* inside the SR content tree:

- **Retain Longitudinal Temporal Information with Modified Dates** (E.3.6,
  ``retain_dates_modified``): every date and date-time the table lists (and the DATE /
  DATETIME content items) is shifted by a whole number of days, the same for every
  object of one patient (a keyed hash of Issuer + Patient ID picks the offset, 1 to
  3,650 days back), so intervals are kept. Without the option the table's action
  applies (dates emptied, removed or replaced by a dummy).
- **Retain Device Identity** (E.3.7, ``retain_device_identity``): the attributes of
  :data:`DEVICE_IDENTITY_KEYWORDS` and the TID 1004 device observer content items are
  kept; without it they are emptied, removed or (UIDs) replaced.

The table is data (:data:`BASIC_PROFILE`, read from ``ps3_15_table_e1_1.csv`` beside
this module, whose README gives its source and edition). Actions: ``X`` remove, ``Z``
empty, ``D`` dummy, ``U`` keyed UID; for the combined actions the one that keeps the
object valid whatever the attribute's Type in its IOD is taken, since a Type 1/2
attribute must stay present: ``X/Z`` → ``Z``, ``X/D`` and ``Z/D`` → ``D``, ``X/Z/D`` →
``Z``, ``X/Z/U*`` → the sequence's UIDs replaced.

**The content tree.** The Basic Profile's action for (0040,A730) 'Content Sequence' is
``D`` (PS3.15 2026c): a library that treats the sequence as one value replaces or
empties it, and so the dose values (``dicom-anonymizer`` 2.1.0 removes every
MeasuredValueSequence of a CT RDSR). Kerma instead applies the table recursively
inside the tree, which is what the Clean Structured Content Option (E.3.9) asks:
(0040,A123) 'Person Name' of PNAME items, (0040,A121) 'Date', (0040,A120) 'DateTime',
(0040,A122) 'Time' and (0040,A124) 'UID' of UIDREF items take their table actions,
identifying TEXT items (device observer name, serial number and location; person and
organisation identifiers; :data:`IDENTIFYING_TEXT_CONCEPTS`) get a dummy value, and
everything else — NUM MeasuredValueSequence (the DS bytes), units, codes, CODE items —
is left untouched, bit for bit.

Why not a library: ``dicognito`` 0.19 (MIT) keeps the numbers but follows its own list
rather than Table E.1-1, shifts dates by a random offset and has no Retain Device
Identity option; ``deid`` 0.4 (MIT) without a recipe removes the UIDs Kerma needs to
reconcile objects (Study Instance UID emptied); ``dicom-anonymizer`` 2.1.0 (BSD) empties
the content tree (above). Checked on ``CT-RDSR-Siemens_Flash-TAP-SS.dcm``.

**UIDs** become ``2.25.<int>`` (PS3.5 B.2): the first 128 bits of HMAC-SHA-256(key,
UID), so the same key maps the same UID to the same UID across objects, studies and
runs, and the SOP, Series and Study Instance UIDs of the objects of one study still
refer to one another.

Private attributes are removed (the Retain Safe Private Option is not offered).

May import ``kerma.services`` (types of :mod:`kerma.services.research`) and pydicom.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import hashlib
import hmac
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

if TYPE_CHECKING:
    from kerma.services.research import ResearchStudy

__all__ = [
    "BASIC_PROFILE",
    "DEVICE_IDENTITY_KEYWORDS",
    "IDENTIFYING_TEXT_CONCEPTS",
    "DeidOptions",
    "Deidentifier",
    "ProfileRow",
    "ResearchExportResult",
    "basic_profile",
    "uid_for",
    "write_research_export",
]

#: The CSV of PS3.15 Table E.1-1 (Basic Profile column), packaged beside this module.
TABLE_FILE = "ps3_15_table_e1_1.csv"

#: Attributes kept by the Retain Device Identity Option (PS3.15 Table E.1-1, column
#: "Retain Device Identity Option", action ``K``; E.3.7).
DEVICE_IDENTITY_KEYWORDS: frozenset[str] = frozenset(
    {
        "CassetteID",
        "DetectorID",
        "DeviceDescription",
        "DeviceSerialNumber",
        "DeviceUID",
        "GantryID",
        "GeneratorID",
        "PerformedStationAETitle",
        "PerformedStationGeographicLocationCodeSequence",
        "PerformedStationName",
        "PerformedStationNameCodeSequence",
        "PlateID",
        "ScheduledProcedureStepLocation",
        "ScheduledStationAETitle",
        "ScheduledStationGeographicLocationCodeSequence",
        "ScheduledStationName",
        "ScheduledStationNameCodeSequence",
        "ScheduledStudyLocation",
        "ScheduledStudyLocationAETitle",
        "SourceSerialNumber",
        "StationName",
        "XRayDetectorID",
        "XRayDetectorLabel",
    }
)

#: TID 1004 'Device Observer Identifying Attributes' concepts (DCM), kept with the
#: Retain Device Identity Option: UID, name, manufacturer, model, serial number,
#: physical location (PS3.16 TID 1004).
DEVICE_OBSERVER_CONCEPTS: frozenset[str] = frozenset(
    {"121012", "121013", "121014", "121015", "121016", "121017"}
)

#: TID 1021 'Device Participant' concepts (DCM) that identify one device, as its header's
#: Station Name and Device Serial Number do: 113877 Device Name, 113880 Device Serial
#: Number (the x-ray source and detector of a projection or CT RDSR); kept with the Retain
#: Device Identity Option, given a dummy value without it (manufacturer and model stay).
DEVICE_PARTICIPANT_CONCEPTS: frozenset[str] = frozenset({"113877", "113880"})

#: TEXT content items that identify a person, an organisation or (without the device
#: option) a device, and so get a dummy value (Clean Structured Content, E.3.9): DCM
#: 121013 Device Observer Name, 121016 Device Observer Serial Number, 121017 Device
#: Observer Physical Location, 121009 Person Observer's Organization Name, 113871
#: Person ID, 113872 Person ID Issuer, 113873 Organization Name (PS3.16 TID 1004,
#: TID 1003, TID 1020), and :data:`DEVICE_PARTICIPANT_CONCEPTS`.
IDENTIFYING_TEXT_CONCEPTS: frozenset[str] = frozenset(
    {"121013", "121016", "121017", "121009", "113871", "113872", "113873"}
    | DEVICE_PARTICIPANT_CONCEPTS
)

#: Dates the Modified Dates option does not keep: the birth date identifies (Table
#: E.1-1 keeps its action Z; the age at the study is (0010,1010) 'Patient's Age').
NEVER_SHIFTED: frozenset[str] = frozenset({"PatientBirthDate", "PatientBirthTime"})

#: Dummy values by VR for action ``D`` (PS3.15 E.1.1: "a non-zero length value that may
#: be a dummy value and consistent with the VR").
DUMMY_BY_VR: dict[str, str] = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMOUS",
    "DS": "0",
    "IS": "0",
    "UI": "2.25.0",
}
_TEXT_DUMMY = "ANONYMOUS"
#: VRs without a text dummy: action D empties them.
_BINARY_VRS = frozenset(
    {"OB", "OW", "UN", "OF", "OD", "OL", "OV", "SL", "SS", "UL", "US", "FL", "FD"}
)

#: DCM codes of the de-identification method (PS3.16 CID 7050).
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_structured": ("113104", "Clean Structured Content Option"),
    "dates_modified": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "device": ("113109", "Retain Device Identity Option"),
}


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: tag (``(gggg,eeee)``, ``xx`` for repeating groups), keyword,
    VR, Basic Profile action and attribute name."""

    tag: str
    keyword: str
    vr: str
    action: str
    name: str

    def matches(self, tag: BaseTag) -> bool:
        """Return whether ``tag`` is this row's attribute (repeating groups included)."""
        group, element = self.tag[1:5], self.tag[6:10]
        if group.endswith("xx"):
            return f"{tag.group:04X}"[:2] == group[:2] and f"{tag.element:04X}" == element.upper()
        return f"({tag.group:04X},{tag.element:04X})" == self.tag


@cache
def basic_profile() -> tuple[ProfileRow, ...]:
    """Return PS3.15 Table E.1-1 (Basic Profile column) as rows, read from the package.

    References
    ----------
    DICOM PS3.15 2026c, Annex E, Table E.1-1 "Application Level Confidentiality Profile
    Attributes" (``kerma/export/README.md`` names how the CSV was made).
    """
    text = resources.files("kerma.export").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    return tuple(
        ProfileRow(r["tag"], r["keyword"], r["vr"], r["basic_profile"], r["name"])
        for r in csv.DictReader(io.StringIO(text))
    )


#: Table E.1-1 (Basic Profile), one row per attribute (see :func:`basic_profile`).
BASIC_PROFILE = basic_profile()


@cache
def _actions() -> tuple[dict[int, ProfileRow], tuple[ProfileRow, ...]]:
    """Return the rows by tag, and the repeating-group rows."""
    by_tag: dict[int, ProfileRow] = {}
    repeating = []
    for row in basic_profile():
        if "xx" in row.tag:
            repeating.append(row)
        else:
            by_tag[int(row.tag[1:5] + row.tag[6:10], 16)] = row
    return by_tag, tuple(repeating)


def _row_for(tag: BaseTag) -> ProfileRow | None:
    """Return the table row of ``tag``, or ``None`` when the table does not list it."""
    by_tag, repeating = _actions()
    row = by_tag.get(int(tag))
    if row is not None:
        return row
    return next((r for r in repeating if r.matches(tag)), None)


def uid_for(key: bytes, uid: str) -> str:
    """Return the replacement of ``uid``: ``2.25.`` + the first 128 bits of its HMAC.

    Parameters
    ----------
    key : bytes
        The research key.
    uid : str
        The original UID (trailing padding ignored).

    Returns
    -------
    str
        A UID of at most 44 characters under the ``2.25`` root (PS3.5 B.2).
    """
    digest = hmac.new(key, b"uid\x00" + uid.strip("\x00 ").encode("ascii"), hashlib.sha256)
    return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))


@dataclass(frozen=True)
class DeidOptions:
    """The options of the Basic Profile that Kerma offers (PS3.15 E.3).

    Attributes
    ----------
    retain_dates_modified : bool
        Retain Longitudinal Temporal Information with Modified Dates (E.3.6).
    retain_device_identity : bool
        Retain Device Identity (E.3.7).
    """

    retain_dates_modified: bool = False
    retain_device_identity: bool = False


@dataclass
class Deidentifier:
    """Apply the Basic Profile (Table E.1-1) to data sets, with one research key.

    Parameters
    ----------
    key : bytes
        The research key: the same key gives the same UIDs, date offsets and patient
        pseudonyms across runs.
    options : DeidOptions, optional
        The options chosen (default: neither).

    Examples
    --------
    >>> d = Deidentifier(b"k" * 32)
    >>> d.uid("1.2.3") == d.uid("1.2.3") and d.uid("1.2.3").startswith("2.25.")
    True
    """

    key: bytes
    options: DeidOptions = field(default_factory=DeidOptions)

    def uid(self, uid: str) -> str:
        """Return the replacement UID of ``uid`` (:func:`uid_for`)."""
        return uid_for(self.key, uid)

    def patient_pseudonym(self, identity: str) -> str:
        """Return the research pseudonym of a patient: 32 hex digits of a keyed hash.

        ``identity`` is the registry pseudonym of the patient, or for an object outside
        a registry Issuer of Patient ID + ``\\`` + Patient ID.
        """
        message = b"patient\x00" + identity.encode("utf-8")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    def date_offset_days(self, identity: str) -> int:
        """Return the patient's date shift in days (-3,650 to -1), keyed by ``identity``."""
        message = b"date\x00" + identity.encode("utf-8")
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return -(1 + int.from_bytes(digest[:8], "big") % 3650)

    # -- the data set --------------------------------------------------------------------

    def deidentify(self, ds: Dataset, *, identity: str | None = None) -> Dataset:
        """Return a de-identified copy of ``ds`` (the original is not changed).

        Parameters
        ----------
        ds : pydicom.dataset.Dataset
            A dose object (header or SR), with or without file meta.
        identity : str, optional
            Who the patient is for the keyed pseudonym and date shift: the registry
            pseudonym (so objects and the CSV agree). Default: Issuer of Patient ID +
            ``\\`` + Patient ID of ``ds``.

        Returns
        -------
        pydicom.dataset.Dataset
            The copy: Table E.1-1 actions applied in the header and the content tree,
            private attributes removed, (0010,0020) 'Patient ID' and (0010,0010)
            'Patient's Name' set to the research pseudonym (action Z allows a dummy
            value; a consistent one keeps one patient's studies together), (0012,0062)
            'Patient Identity Removed' YES, (0012,0063) / (0012,0064) the method and
            its codes, (0028,0303) 'Longitudinal Temporal Information Modified'.
        """
        if identity is None:
            identity = _identity_of(ds)
        offset = self.date_offset_days(identity)
        pseudonym = self.patient_pseudonym(identity)
        return self._deidentify_in_place(copy.deepcopy(ds), offset, pseudonym)

    def _deidentify_in_place(self, out: Dataset, offset: int, pseudonym: str) -> Dataset:
        """De-identify ``out`` itself (see :meth:`deidentify`) and return it."""
        self._clean(out, offset)
        out.PatientID = pseudonym
        out.PatientName = pseudonym
        out.PatientIdentityRemoved = "YES"
        codes = [_METHOD_CODES["basic"], _METHOD_CODES["clean_structured"]]
        if self.options.retain_dates_modified:
            codes.append(_METHOD_CODES["dates_modified"])
        if self.options.retain_device_identity:
            codes.append(_METHOD_CODES["device"])
        # (0012,0063) is LO (64 characters): the codes of (0012,0064) say it in full
        out.DeidentificationMethod = "Kerma PS3.15 Basic Profile" + "".join(
            f" +{value}" for value, _ in codes[1:]
        )
        out.DeidentificationMethodCodeSequence = Sequence([_dcm_code(*c) for c in codes])
        out.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.options.retain_dates_modified else "REMOVED"
        )
        meta = getattr(out, "file_meta", None)
        if meta is not None:
            new_meta = FileMetaDataset()
            new_meta.update(meta)
            if "SOPInstanceUID" in out:
                new_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
            out.file_meta = new_meta
        return out

    def deidentify_bytes(self, data: bytes, *, identity: str | None = None) -> bytes:
        """Return the de-identified Part 10 file of the Part 10 file ``data``.

        Raises
        ------
        pydicom.errors.InvalidDicomError
            When ``data`` is not a DICOM file.
        """
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
        if identity is None:
            identity = _identity_of(ds)
        out = self._deidentify_in_place(
            ds, self.date_offset_days(identity), self.patient_pseudonym(identity)
        )
        buffer = io.BytesIO()
        out.save_as(buffer, enforce_file_format=False)
        return buffer.getvalue()

    def _clean(self, ds: Dataset, offset_days: int) -> None:
        """Apply the table to every element of ``ds``, recursively (in place)."""
        is_text_item = str(ds.get("ValueType", "")) == "TEXT"
        concept = _concept_value(ds)
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private:
                del ds[tag]  # no Retain Safe Private Option (E.3.10)
                continue
            row = _row_for(tag)
            keyword = elem.keyword
            if row is None:
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._clean(item, offset_days)
                elif is_text_item and keyword == "TextValue" and concept:
                    self._clean_text_item(ds, concept)
                continue
            if self.options.retain_device_identity and (
                keyword in DEVICE_IDENTITY_KEYWORDS or concept in DEVICE_OBSERVER_CONCEPTS
            ):
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._clean(item, offset_days)
                continue
            self._apply(ds, elem, row.action, offset_days)

    def _clean_text_item(self, ds: Dataset, concept: str) -> None:
        """Give an identifying TEXT content item a dummy value (Clean Structured Content)."""
        if concept not in IDENTIFYING_TEXT_CONCEPTS:
            return
        if self.options.retain_device_identity and (
            concept in DEVICE_OBSERVER_CONCEPTS or concept in DEVICE_PARTICIPANT_CONCEPTS
        ):
            return
        ds.TextValue = _TEXT_DUMMY

    def _apply(self, ds: Dataset, elem: DataElement, action: str, offset_days: int) -> None:
        """Apply one Table E.1-1 action to ``elem`` of ``ds``."""
        vr = elem.VR
        if vr == "SQ":
            if action == "X":
                del ds[elem.tag]
            elif action == "Z" or (elem.keyword != "ContentSequence" and action == "X/Z"):
                elem.value = Sequence()
            else:
                # D, X/D, Z/D, X/Z/D, X/Z/U* of a sequence: clean its items (the content
                # tree: Clean Structured Content; other sequences: each nested attribute
                # takes its own action)
                for item in elem.value:
                    self._clean(item, offset_days)
            return
        if (
            vr in ("DA", "DT")
            and self.options.retain_dates_modified
            and elem.keyword not in NEVER_SHIFTED
        ):
            elem.value = _shift(elem.value, vr, offset_days)
            return
        if vr == "TM" and self.options.retain_dates_modified:
            return  # a whole-day shift keeps the time of day (E.3.6)
        if action == "U" or (action == "X/Z/U*" and vr == "UI"):
            if elem.value:
                if elem.VM > 1:
                    elem.value = [self.uid(str(v)) for v in elem.value]
                else:
                    elem.value = self.uid(str(elem.value))
            return
        if action == "X":
            del ds[elem.tag]
        elif action in ("Z", "X/Z", "X/Z/D", "X/Z/U*"):
            elem.value = None if vr != "SQ" else Sequence()
        else:  # D, X/D, Z/D
            if vr == "UI":
                elem.value = self.uid(str(elem.value)) if elem.value else None
            elif vr in _BINARY_VRS:
                elem.value = None
            else:
                elem.value = DUMMY_BY_VR.get(vr, _TEXT_DUMMY)


def _identity_of(ds: Dataset) -> str:
    """Return Issuer of Patient ID + ``\\`` + Patient ID of ``ds`` (the default identity)."""
    issuer = str(ds.get("IssuerOfPatientID", "") or "")
    return issuer + "\\" + str(ds.get("PatientID", "") or "")


def _concept_value(ds: Dataset) -> str:
    """Return the code value of an item's (0040,A043) 'Concept Name Code Sequence', or ''."""
    seq = ds.get("ConceptNameCodeSequence")
    if not seq:
        return ""
    return str(seq[0].get("CodeValue", "") or "")


def _shift(value: object, vr: str, offset_days: int) -> object:
    """Return DA/DT ``value`` (possibly multi-valued) moved by ``offset_days`` days."""
    if value in (None, ""):
        return value
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [_shift(v, vr, offset_days) for v in value]
    text = str(value).strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return DUMMY_BY_VR[vr]  # unreadable: cannot shift, so replace
    shifted = (day + dt.timedelta(days=offset_days)).strftime("%Y%m%d")
    return shifted + text[8:] if vr == "DT" else shifted


def _dcm_code(value: str, meaning: str) -> Dataset:
    """Return a code item of scheme DCM."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def tags_in(ds: Dataset) -> Iterable[tuple[BaseTag, DataElement]]:
    """Yield (tag, element) of every element of ``ds``, nested ones included."""
    for elem in ds.iterall():
        yield Tag(elem.tag), elem


# -- the research export -------------------------------------------------------------------

#: Columns of the research CSV: the research pseudonym and UID, then what the registry
#: derived (canonical units in the names; ``docs/research-export.md``).
RESEARCH_CSV_COLUMNS: tuple[str, ...] = (
    "patient_pseudonym",
    "study_instance_uid",
    "study_date",
    "modality",
    "standard_exam",
    "manufacturer",
    "manufacturer_model_name",
    "device_name",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "number_of_events",
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "ssde_mgy",
    "effective_dose_msv",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "administered_activity_total_mbq",
    "number_of_objects",
)


@dataclass
class ResearchExportResult:
    """What :func:`write_research_export` wrote.

    Attributes
    ----------
    studies : int
        Rows of the CSV.
    objects : int
        De-identified files written.
    failures : list of str
        One message per object that could not be read or de-identified (kept out).
    """

    studies: int = 0
    objects: int = 0
    failures: list[str] = field(default_factory=list)


def write_research_export(
    studies: Iterable[ResearchStudy],
    *,
    out_dir: Path,
    deidentifier: Deidentifier,
    progress: Callable[[int], None] | None = None,
) -> ResearchExportResult:
    """Write the de-identified objects and the CSV of ``studies`` into ``out_dir``.

    Parameters
    ----------
    studies : iterable of ResearchStudy
        From :func:`kerma.services.research.iter_research_studies` (streamed).
    out_dir : pathlib.Path
        Created if missing: ``<research study UID>/<research SOP Instance UID>.dcm`` per
        object and ``studies.csv`` (:data:`RESEARCH_CSV_COLUMNS`); files 0600, new
        folders 0700 (:mod:`kerma.files`), like Kerma's other exports.
    deidentifier : Deidentifier
        The key and options.
    progress : callable, optional
        Called with 1 after each study.

    Returns
    -------
    ResearchExportResult
        Counts and the failures (an unreadable or undecodable object is reported and
        left out; the batch goes on).
    """
    from pydicom.errors import InvalidDicomError

    from kerma.files import make_private_dirs, open_private, write_private_bytes

    make_private_dirs(out_dir)
    result = ResearchExportResult()
    with open_private(out_dir / "studies.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RESEARCH_CSV_COLUMNS)
        for item in studies:
            study = item.study
            identity = str(study.get("patient_pseudonym") or "")
            uid = deidentifier.uid(str(study["study_instance_uid"]))
            written = 0
            for obj in item.objects:
                sop = obj.report["sop_instance_uid"]
                if obj.data is None:
                    result.failures.append(f"{sop}: {obj.error}")
                    continue
                try:
                    data = deidentifier.deidentify_bytes(obj.data, identity=identity)
                except (InvalidDicomError, ValueError, TypeError, KeyError) as exc:
                    result.failures.append(f"{sop}: Unable to de-identify: {exc}")
                    continue
                folder = make_private_dirs(out_dir / uid)
                write_private_bytes(folder / f"{deidentifier.uid(sop)}.dcm", data)
                written += 1
            result.objects += written
            writer.writerow(_csv_row(study, identity, uid, written, deidentifier))
            result.studies += 1
            if progress is not None:
                progress(1)
    return result


def _csv_row(
    study: dict[str, Any], identity: str, uid: str, written: int, deidentifier: Deidentifier
) -> list[Any]:
    """Return one CSV row of a study (dates shifted or left out, device per the option)."""
    date = study.get("study_date")
    if date is not None and deidentifier.options.retain_dates_modified:
        shifted = date + dt.timedelta(days=deidentifier.date_offset_days(identity))
        date_text = shifted.isoformat()
    else:
        date_text = ""
    values = dict(study)
    values.update(
        patient_pseudonym=deidentifier.patient_pseudonym(identity),
        study_instance_uid=uid,
        study_date=date_text,
        number_of_objects=written,
    )
    if not deidentifier.options.retain_device_identity:
        values["device_name"] = ""
    return ["" if values.get(c) is None else values.get(c) for c in RESEARCH_CSV_COLUMNS]

"""De-identification of an object before it is archived (``KERMA_ARCHIVE_MODE=deidentified``).

Removes the attributes that identify the patient, following the patient-identity rows
of DICOM PS3.15 Annex E Table E.1-1 (Basic Application Level Confidentiality Profile):
every Person Name (PN) element anywhere in the data set, including PNAME content items
of an SR tree (patient, physicians, operators, persons observing), the non-PN patient
identification attributes of :data:`PATIENT_IDENTITY_KEYWORDS`, and the site's
identifying attributes (``KERMA_IDENTIFYING_ATTRIBUTES``), wherever they are nested.
Patient age, sex, size and weight are kept (dose calculations need them: SSDE, DRL
weight bands), as are the device attributes (institution, station: Kerma identifies the
device by them, and they describe a room, not a patient) and the UIDs and dates
(reprocessing and reconciliation need them). The result is therefore *not* a fully
de-identified object in the sense of the Basic Profile (which would also replace UIDs
and dates); it is an archive copy without patient identity. (0012,0062) 'Patient
Identity Removed' is set to YES and (0012,0063) 'De-identification Method' names what
was done.

This module must not import ``kerma.db``, ``kerma.ingest`` or any interface package.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterable

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

#: Patient identification attributes other than names (PS3.15 Annex E Table E.1-1,
#: Basic Profile action D/Z/X, Patient and Patient Study modules), plus the accession
#: number (Table E.1-1: Z), which the RIS links to the patient.
PATIENT_IDENTITY_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "MedicalRecordLocator",
        "PatientComments",
        "AdditionalPatientHistory",
        "EthnicGroup",
        "Occupation",
        "PatientReligiousPreference",
        "MilitaryRank",
        "BranchOfService",
        "CountryOfResidence",
        "RegionOfResidence",
        "PatientInsurancePlanCodeSequence",
        "PatientPrimaryLanguageCodeSequence",
        "ResponsibleOrganization",
        "MedicalAlerts",
        "Allergies",
        "PatientState",
        "SpecialNeeds",
        "PregnancyStatus",
        "LastMenstrualDate",
        "SmokingStatus",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "ReferencedPatientSequence",
        "ReferencedPatientPhotoSequence",
    }
)

#: What reading or writing a damaged object may raise; such an object is kept encrypted.
DEIDENTIFY_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
    NotImplementedError,
    RuntimeError,
    EOFError,
    struct.error,
)

#: What (0012,0063) 'De-identification Method' says (LO: at most 64 characters).
METHOD = "Kerma: PS3.15 E.1-1 patient identity and person names removed"


def deidentify_dataset(ds: Dataset, identifying: Iterable[str] = ()) -> int:
    """Remove patient identity from ``ds`` in place; return how many elements were removed.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The object (its nested sequences too).
    identifying : iterable of str
        Further attribute keywords to remove (``KERMA_IDENTIFYING_ATTRIBUTES``).

    Returns
    -------
    int
        Elements removed.
    """
    keywords = PATIENT_IDENTITY_KEYWORDS | set(identifying)
    removed = 0

    def visit(dataset: Dataset) -> None:
        nonlocal removed
        for elem in list(dataset):
            if elem.VR == "PN" or elem.keyword in keywords:
                del dataset[elem.tag]
                removed += 1
            elif elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item)

    visit(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    return removed


def deidentify_bytes(data: bytes, identifying: Iterable[str] = ()) -> bytes | None:
    """Return the object in ``data`` without patient identity, or ``None`` when unreadable.

    The object is written back in its own transfer syntax, with its file meta
    information when it had some (a bare data set stays bare).

    Parameters
    ----------
    data : bytes
        A DICOM object (Part 10 file or bare data set).
    identifying : iterable of str
        Further attribute keywords to remove.

    Returns
    -------
    bytes or None
        The de-identified object; ``None`` when pydicom cannot read it, or does not
        write it back byte for byte before anything is removed (damaged, truncated or
        unusually encoded objects), so that nothing but identity is ever lost (the
        caller then keeps it encrypted).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's lenient-decoding warnings quote values
        return _deidentify(data, identifying)


def _deidentify(data: bytes, identifying: Iterable[str]) -> bytes | None:
    """Do :func:`deidentify_bytes` (warnings handled by the caller)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        unchanged = io.BytesIO()
        ds.save_as(unchanged, enforce_file_format=False)
        if unchanged.getvalue() != bytes(data):
            # pydicom does not write this object back as it came (truncated, damaged,
            # or encoded in a way it normalises): de-identifying would lose more than
            # the identity, so the caller keeps it encrypted
            return None
        deidentify_dataset(ds, identifying)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)  # as read: preamble and meta if present
    except DEIDENTIFY_ERRORS:
        return None
    return out.getvalue()

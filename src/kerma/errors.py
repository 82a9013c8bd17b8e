"""The exception hierarchy of Kerma (STYLE.md B6): every error Kerma raises on purpose.

::

    KermaError(Exception)
    ├── ConfigurationError                  a setting is missing or invalid
    ├── IngestError(KermaError, ValueError) an object cannot be taken in; sop_instance_uid
    │   ├── NotADoseReportError             no dose information (SOP class, root concept)
    │   └── UnreadableObjectError           not DICOM, truncated, or undecodable
    │       ├── ObjectTooLargeError         over max_object_bytes / max_inflated_bytes
    │       └── TruncatedError              the bytes end before the elements do
    ├── UnknownColumnError(KermaError, ValueError)  a sort key that is not a column
    ├── ArchiveDecryptionError(KermaError, OSError) an archive file does not decrypt
    ├── NotFoundError(KermaError, LookupError)      a requested record does not exist
    ├── ConflictError                       a held conflict cannot be decided as asked
    ├── AlertReviewError(KermaError, ValueError)    a review action not allowed in that state
    ├── AlertMessageError(KermaError, ValueError)   an alert message is malformed
    ├── ReportNotAllowedError               a significant-event report for another outcome
    ├── AccountError(KermaError, ValueError)        a user or token change not allowed
    ├── PullError                           the PACS could not be queried or asked to send
    ├── JobQueueError                       no job queue here (SQLite) or not set up
    ├── OutputPathError(KermaError, OSError)        an export cannot be written where asked
    └── SpoolError                          the Storage SCP's spool
        ├── SlotError(SpoolError, ValueError)       a spool slot is torn or not a slot
        └── ImportChildError                the import process failed; files are retried
    IngestWarning(UserWarning)              raised only by lenient decoding

Messages follow "Unable to <action>: <reason>." and name the SOP Instance UID, the
concept (as ``'Mean CTDIvol' (DCM 113830)``) and the TID where they apply.

This module must not import anything else from Kerma.
"""

from __future__ import annotations


class KermaError(Exception):
    """Base class of every error Kerma raises on purpose."""


class ConfigurationError(KermaError):
    """A setting is missing or invalid."""


class IngestError(KermaError, ValueError):
    """An object cannot be taken into the registry.

    Parameters
    ----------
    message : str
        What was wrong, in words a physicist understands, and what to do.
    sop_instance_uid : str, optional
        The SOP Instance UID of the object, when known.
    """

    def __init__(self, message: str, *, sop_instance_uid: str | None = None) -> None:
        super().__init__(message)
        self.sop_instance_uid = sop_instance_uid


class NotADoseReportError(IngestError):
    """The object holds no dose information (wrong SOP class, root concept or no dose data)."""


class UnreadableObjectError(IngestError):
    """The file is not DICOM, is truncated, or pydicom cannot decode it."""


class ObjectTooLargeError(UnreadableObjectError):
    """The object, or its inflated data set, is larger than the configured limit.

    Raised for a file or received object over ``max_object_bytes``, and for a deflated
    data set (Deflated Explicit VR Little Endian, PS3.5 A.5) that inflates beyond
    ``max_inflated_bytes`` (kerma.config); see docs/network.md "Limits".

    Parameters
    ----------
    message : str
        What was too large, the limit and the setting to raise it.
    limit_bytes : int, optional
        The limit that was exceeded, in bytes.
    """

    def __init__(
        self,
        message: str,
        *,
        limit_bytes: int | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(message, sop_instance_uid=sop_instance_uid)
        self.limit_bytes = limit_bytes


class TruncatedError(UnreadableObjectError):
    """The byte stream ends before its elements do (a file cut short in transfer or on disk).

    Raised by Kerma's one-pass DICOM walkers (:mod:`kerma.dicom.reader`,
    :mod:`kerma.dicom.integrity`) at the byte where the data stops; the reader turns it
    into a rejection that says where the object was cut.
    """


class UnknownColumnError(KermaError, ValueError):
    """A sort key or output column that is not a listed column (``kerma studies --sort``)."""


class PullError(KermaError):
    """The PACS could not be queried or asked to send (``kerma pull``)."""


class JobQueueError(KermaError):
    """The job queue cannot be used: the registry is on SQLite, or its queue schema is missing.

    The serial commands (``kerma reprocess``, ``kerma alerts recheck``) do the same work
    in one process without a queue (``docs/scaling.md``, "Distributed re-processing").
    """


class OutputPathError(KermaError, OSError):
    """An export cannot be written at the path it was given (``kerma export ... --out``).

    The message names the path, the operating system's reason and what to do; the
    ``OSError`` it stands for is its ``__cause__``.
    """


class SpoolError(KermaError):
    """The Storage SCP's spool could not take or hand over an object."""


class SlotError(SpoolError, ValueError):
    """A spool slot does not hold a complete object (torn write, or not a slot at all)."""


class ImportChildError(SpoolError):
    """The import in the child process failed; the spool file stays and is retried."""


class ArchiveDecryptionError(KermaError, OSError):
    """An encrypted archive file does not decrypt with the registry's key, or is damaged.

    An ``OSError`` too: callers that treat an unreadable archive file as missing keep
    doing so.
    """


class NotFoundError(KermaError, LookupError):
    """A requested record does not exist."""


class SiteAccessError(KermaError, PermissionError):
    """A user asked for a record of a site they are not assigned to (issue #15).

    The web layer answers 403; the message names the record, never its content.
    """


class ConflictError(KermaError):
    """A decision on a conflict (versions of one SOP Instance UID) cannot be applied.

    For example: the version asked for is not held, no reason was given, or the
    version's archived copy is missing or no longer extracts.
    """


class AlertReviewError(KermaError, ValueError):
    """A review action on an alert is not allowed.

    For example closing a closed alert, an unknown outcome, or a missing justification;
    the message says which and what to do.
    """


class AccountError(KermaError, ValueError):
    """A user or API-token change cannot be made; the message says why (issue #13).

    For example: the name is taken, the password is too short, the role is unknown, or
    the change would leave no active admin.
    """


class IngestWarning(UserWarning):
    """A quirky but readable object: raised only by lenient decoding."""


class AlertMessageError(KermaError, ValueError):
    """An alert message (e-mail, significant-event report) cannot be built from its data."""


class ReportNotAllowedError(KermaError):
    """A significant-event report was asked for an alert not notified to the authority."""


class MessageError(KermaError, ValueError):
    """An HL7 v2 message or FHIR resource that cannot be used (docs/ris.md).

    ``ack_code`` is the HL7 acknowledgment code it leads to (HL7 Table 0008): ``AR``
    when the message itself is refused (not HL7, unsupported type), ``AE`` when its
    content is in error (no accession number and no patient ID, a unit not known).
    ``error_code`` is the HL7 Table 0357 code of ERR-3. The message never quotes a
    value of the message (it may identify the patient).
    """

    def __init__(self, message: str, *, ack_code: str = "AE", error_code: str = "207") -> None:
        super().__init__(message)
        self.ack_code = ack_code
        self.error_code = error_code

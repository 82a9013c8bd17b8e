"""The exception hierarchy of Kerma (STYLE.md B6).

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


class MissingContentError(IngestError):
    """A required content item is missing.

    Parameters
    ----------
    message : str
        The message.
    concept : str, optional
        The missing concept as ``'Mean CTDIvol' (DCM 113830)``.
    tid : str, optional
        The template, e.g. ``'TID 10013'``.
    """

    def __init__(
        self,
        message: str,
        *,
        sop_instance_uid: str | None = None,
        concept: str | None = None,
        tid: str | None = None,
    ) -> None:
        super().__init__(message, sop_instance_uid=sop_instance_uid)
        self.concept = concept
        self.tid = tid


class UnitError(IngestError):
    """A value is given in a unit that cannot be converted to the canonical one."""

    def __init__(
        self,
        message: str,
        *,
        found: str | None = None,
        expected: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(message, sop_instance_uid=sop_instance_uid)
        self.found = found
        self.expected = expected


class DuplicateInstanceError(KermaError):
    """The SOP Instance UID is already in the registry (an idempotent no-op for ingest)."""


class NotFoundError(KermaError, LookupError):
    """A requested record does not exist."""


class AlertReviewError(KermaError, ValueError):
    """A review action on an alert is not allowed.

    For example closing a closed alert, an unknown outcome, or a missing justification;
    the message says which and what to do.
    """


class IngestWarning(UserWarning):
    """A quirky but readable object: raised only by lenient decoding."""

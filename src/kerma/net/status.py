"""Named DIMSE status codes that Kerma's network services return.

Values and categories follow PS3.4 Annex B.2.3 (Storage Service Class) and PS3.7
Annex C; pynetdicom documents them in ``pynetdicom._handlers.doc_handle_store``.
The same codes are used as Failure Reason (0008,1197) in STOW-RS responses (PS3.18
Table I.2-1).

This module must not import anything else from Kerma.
"""

from __future__ import annotations

#: Success: the object is on disk (fsynced) and will be imported.
SUCCESS = 0x0000

#: Failure, "Refused: Out of Resources": the object could not be written to disk
#: (disk full, permission denied, I/O error) or the SCP is shutting down.
OUT_OF_RESOURCES = 0xA700

#: Failure, "Error: Data Set does not match SOP Class": the dataset's (0008,0016)
#: 'SOP Class UID' differs from the Affected SOP Class UID of the request.
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900

#: Failure, "Error: Cannot understand": the dataset could not be decoded (it lacks a
#: readable (0008,0016) 'SOP Class UID' or (0008,0018) 'SOP Instance UID').
CANNOT_UNDERSTAND = 0xC210

#: Failure, "Error: Cannot understand" (generic, PS3.18 STOW-RS): the part of a
#: multipart request is not a DICOM object.
CANNOT_UNDERSTAND_GENERIC = 0xC000

#: Failure, "Referenced SOP Class not supported" (PS3.18 STOW-RS) — used for the
#: store of an instance into a study it does not belong to.
SOP_CLASS_NOT_SUPPORTED = 0x0122

#: Warning, used in C-MOVE/C-GET responses: sub-operations complete, one or more failed.
SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000

#: Pending statuses of C-FIND/C-MOVE/C-GET responses.
PENDING = (0xFF00, 0xFF01)

#: Status of a cancelled C-FIND/C-MOVE/C-GET.
CANCEL = 0xFE00


def is_success(status: int) -> bool:
    """Return whether ``status`` is a success (0x0000)."""
    return status == SUCCESS


def is_pending(status: int) -> bool:
    """Return whether ``status`` is a pending status (0xFF00 or 0xFF01)."""
    return status in PENDING


def is_warning(status: int) -> bool:
    """Return whether ``status`` is a warning (0x0001, 0xB000-0xBFFF)."""
    return status == 0x0001 or 0xB000 <= status <= 0xBFFF

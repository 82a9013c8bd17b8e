"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``.

The request body is ``multipart/related; type="application/dicom"`` (PS3.18 10.5).
Each part is written and fsynced to the spool before the response is sent
(:func:`kerma.net.dicomweb.store_part`); the import follows on the app's worker. The
response is the Store Instances Response in DICOM JSON: 200 when every instance was
stored, 202 when some failed, 409 when none was stored; 415 for another media type.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kerma.net.dicomweb import StoredPart, store_part, store_response

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """Return the ``application/dicom`` parts of a multipart/related body.

    Parameters
    ----------
    content_type : str
        The request's Content-Type (with its ``boundary``).
    body : bytes
        The request body.

    Raises
    ------
    ValueError
        When the body is not multipart or holds no part.
    """
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("the body is not multipart")
    parts = []
    for part in message.iter_parts():
        media = part.get_content_type()
        if media not in {"application/dicom", "application/octet-stream"}:
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            parts.append(payload)
    if not parts:
        raise ValueError("no application/dicom part")
    return parts


def accepts_media_type(content_type: str) -> bool:
    """Return whether a Content-Type is ``multipart/related`` of ``application/dicom`` parts.

    The ``type`` parameter may be absent (parts are then checked one by one).
    """
    message = email.message.EmailMessage()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/related":
        return False
    part_type = message.get_param("type")
    return part_type is None or str(part_type).lower() == "application/dicom"


async def _store(request: Request, study_instance_uid: str | None) -> Response:
    """Store the parts of a STOW-RS request and build the response."""
    content_type = request.headers.get("content-type", "")
    if not accepts_media_type(content_type):
        return JSONResponse(
            {"detail": 'Expected multipart/related; type="application/dicom".'}, status_code=415
        )
    body = await request.body()
    try:
        parts = split_multipart(content_type, body)
    except ValueError as exc:
        return JSONResponse({"detail": f"Unable to read the request: {exc}."}, status_code=400)
    spool, worker = request.app.state.spool, request.app.state.worker

    def store_all() -> list[StoredPart]:
        return [
            store_part(data, spool, worker, study_instance_uid=study_instance_uid) for data in parts
        ]

    stored = await run_in_threadpool(store_all)
    content: dict[str, Any] = store_response(stored)
    n_failed = sum(1 for s in stored if s.failure_reason is not None)
    code = 200 if n_failed == 0 else (409 if n_failed == len(stored) else 202)
    return JSONResponse(content, status_code=code, media_type=DICOM_JSON)


@router.post("/studies", summary="Store instances (STOW-RS)")
async def store_instances(request: Request) -> Response:
    """Store DICOM instances sent as multipart/related (PS3.18 10.5)."""
    return await _store(request, None)


@router.post("/studies/{study_instance_uid}", summary="Store instances of one study (STOW-RS)")
async def store_study_instances(study_instance_uid: str, request: Request) -> Response:
    """Store DICOM instances that belong to the study ``study_instance_uid``."""
    return await _store(request, study_instance_uid)

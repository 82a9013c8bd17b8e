"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``.

The request body is ``multipart/related; type="application/dicom"`` (PS3.18 10.5).
It is read as it arrives (``request.stream()``) and parsed incrementally
(:class:`kerma.net.dicomweb.StowReceiver`): each part is streamed to a temporary file
in the spool, checked, fsynced and queued on the app's import worker before the
response is sent, so a body of any size is received in bounded memory. The import
follows on the worker, with ``settings.scp_keep_non_dose`` as for the Storage SCP;
each object keeps its origin (``STOW-RS from <client address>``), which ``kerma
ignored`` and ``kerma rejects`` show.

The response is the Store Instances Response in DICOM JSON: 200 when every instance
was stored, 202 when some failed, 409 when none was stored; 415 for another media
type; 400 for a body that is not a well-formed multipart body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from kerma.net.dicomweb import StowReceiver, parse_content_type, store_response

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"

#: Bytes of the body handed to the parser at a time (chunks of the ASGI server are
#: gathered up to this size, so the parser's thread is not woken for every 64 KiB).
FEED_SIZE = 1024 * 1024


def accepts_media_type(content_type: str) -> bool:
    """Return whether a Content-Type is ``multipart/related`` of ``application/dicom`` parts.

    The ``type`` parameter may be absent (parts are then checked one by one).
    """
    message = parse_content_type(content_type)
    if message.get_content_type() != "multipart/related":
        return False
    part_type = message.get_param("type")
    return part_type is None or str(part_type).lower() == "application/dicom"


def _bad_request(reason: str) -> JSONResponse:
    """Return the 400 response of a body that cannot be read."""
    return JSONResponse({"detail": f"Unable to read the request: {reason}."}, status_code=400)


async def _store(request: Request, study_instance_uid: str | None) -> Response:
    """Stream the parts of a STOW-RS request to the spool and build the response."""
    content_type = request.headers.get("content-type", "")
    if not accepts_media_type(content_type):
        return JSONResponse(
            {"detail": 'Expected multipart/related; type="application/dicom".'}, status_code=415
        )
    message = parse_content_type(content_type)
    boundary = message.get_boundary()
    if not boundary:
        return _bad_request("the Content-Type has no boundary parameter")
    part_type = message.get_param("type")
    client = request.client.host if request.client is not None else "an unknown client"
    try:
        receiver = StowReceiver(
            boundary,
            request.app.state.spool,
            request.app.state.worker,
            study_instance_uid=study_instance_uid,
            root_type=str(part_type) if part_type else None,
            origin=f"STOW-RS from {client}",
        )
    except ValueError as exc:  # a boundary python-multipart refuses (e.g. > 70 characters)
        return _bad_request(f"the boundary cannot be used ({exc})")
    pending: list[bytes] = []
    n_pending = 0
    try:
        async for chunk in request.stream():
            pending.append(chunk)
            n_pending += len(chunk)
            if n_pending >= FEED_SIZE:
                data = b"".join(pending)
                pending.clear()
                n_pending = 0
                await run_in_threadpool(receiver.feed, data)
        if pending:
            await run_in_threadpool(receiver.feed, b"".join(pending))
            pending.clear()
        stored = await run_in_threadpool(receiver.finish)
    except ValueError as exc:
        receiver.abort()
        return _bad_request(str(exc))
    except ClientDisconnect:
        receiver.abort()
        logger.warning("STOW-RS client disconnected before the end of its request")
        return Response(status_code=400)
    except BaseException:
        receiver.abort()  # closes and removes the part being received; no await here
        raise
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

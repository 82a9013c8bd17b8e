"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``.

The request body is ``multipart/related; type="application/dicom"`` (PS3.18 10.5).
It is read as it arrives (``request.stream()``) and parsed incrementally
(:class:`kerma.net.dicomweb.StowReceiver`): each part is streamed to a temporary file
in the spool, checked, fsynced and queued on the app's import worker before the
response is sent, so a body of any size is received in bounded memory. The import
follows on the worker, with ``settings.scp_keep_non_dose`` as for the Storage SCP;
each object keeps its origin (``STOW-RS from <client address>``), which ``kerma
ignored`` and ``kerma rejects`` show.

Clients authenticate with an API token of at least the physicist role
(``Authorization: Bearer <token>``, ``kerma tokens add``); without one the answer is
401, with a lower role 403 (docs/security.md). A browser session may post too, with
its CSRF token in the ``X-CSRF-Token`` header. Each request that was read to its end is
audited (``dicomweb.stow``: the token, the client address, how many stored and failed).

The response is the Store Instances Response in DICOM JSON: 200 when every instance
was stored, 202 when some failed, 409 when none was stored; 415 for another media
type; 400 for a body that is not a well-formed multipart body.

Limits (``settings``; docs/network.md "Limits"): 413 Payload Too Large when the body
is larger than ``stow_max_request_bytes`` (by its Content-Length, before anything is
read, or as it arrives), when a part is larger than ``max_object_bytes`` (reading
stops there) or when a deflated part inflates beyond ``max_inflated_bytes``; the 413
body is ``{"detail": <why>, "response": <Store Instances Response of the parts read
so far, the refused one with Failure Reason 0xA700>}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from kerma.errors import ObjectTooLargeError
from kerma.net.dicomweb import StowReceiver, parse_content_type, store_response
from kerma.net.handlers import IntakeLimits
from kerma.web.security import Role, audit, require_role

logger = logging.getLogger(__name__)

#: STOW-RS senders need a token (or a session) with at least the physicist role.
router = APIRouter(
    prefix="/dicomweb", tags=["dicomweb"], dependencies=[Depends(require_role(Role.physicist))]
)

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


def _too_large(detail: str, stored: list[Any] | None = None) -> JSONResponse:
    """Return the 413 response: ``{"detail": ..., "response": <Store Instances Response>}``.

    ``response`` is the DICOM JSON Store Instances Response of the parts read before
    the refusal (stored ones, and the refused one with Failure Reason 0xA700).
    """
    return JSONResponse(
        {"detail": detail, "response": store_response(stored or [])}, status_code=413
    )


def _declared_length(request: Request) -> int | None:
    """Return the request's Content-Length, or ``None`` when absent or not a number."""
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


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
    settings = request.app.state.settings
    max_body = settings.stow_max_request_bytes
    declared = _declared_length(request)
    if declared is not None and declared > max_body:
        logger.warning("STOW-RS from %s refused: a body of %d bytes", client, declared)
        return _too_large(
            f"The request body of {declared:,} bytes is larger than the {max_body:,} bytes "
            "this registry accepts (stow_max_request_bytes)."
        )
    try:
        receiver = StowReceiver(
            boundary,
            request.app.state.spool,
            request.app.state.worker,
            study_instance_uid=study_instance_uid,
            root_type=str(part_type) if part_type else None,
            origin=f"STOW-RS from {client}",
            limits=IntakeLimits.from_settings(settings),
        )
    except ValueError as exc:  # a boundary python-multipart refuses (e.g. > 70 characters)
        return _bad_request(f"the boundary cannot be used ({exc})")
    pending: list[bytes] = []
    n_pending = n_total = 0
    try:
        async for chunk in request.stream():
            n_total += len(chunk)
            if n_total > max_body:
                receiver.abort()
                logger.warning("STOW-RS from %s refused: body over %d bytes", client, max_body)
                return _too_large(
                    f"The request body is larger than the {max_body:,} bytes this registry "
                    "accepts (stow_max_request_bytes).",
                    receiver.stored,
                )
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
    except ObjectTooLargeError:
        receiver.abort()
        return _too_large(
            f"A part is larger than the {settings.max_object_bytes:,} bytes this registry "
            "accepts for one object (max_object_bytes).",
            receiver.stored,
        )
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
    if any(s.too_large for s in stored):
        return _too_large(
            "A deflated part inflates to more than the "
            f"{settings.max_inflated_bytes:,} bytes this registry accepts "
            "(max_inflated_bytes).",
            stored,
        )
    content: dict[str, Any] = store_response(stored)
    n_failed = sum(1 for s in stored if s.failure_reason is not None)
    code = 200 if n_failed == 0 else (409 if n_failed == len(stored) else 202)
    await run_in_threadpool(
        audit,
        request,
        getattr(request.state, "principal", None),
        "dicomweb.stow",
        study_instance_uid or "",
        {"stored": len(stored) - n_failed, "failed": n_failed},
    )
    return JSONResponse(content, status_code=code, media_type=DICOM_JSON)


@router.post("/studies", summary="Store instances (STOW-RS)")
async def store_instances(request: Request) -> Response:
    """Store DICOM instances sent as multipart/related (PS3.18 10.5)."""
    return await _store(request, None)


@router.post("/studies/{study_instance_uid}", summary="Store instances of one study (STOW-RS)")
async def store_study_instances(study_instance_uid: str, request: Request) -> Response:
    """Store DICOM instances that belong to the study ``study_instance_uid``."""
    return await _store(request, study_instance_uid)

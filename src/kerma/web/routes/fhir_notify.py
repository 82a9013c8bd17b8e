"""FHIR in: ``POST /fhir/notify``, a FHIR subscription's notifications (docs/ris.md).

A FHIR server with a Subscription (rest-hook channel, full-resource payload) POSTs a
notification Bundle whenever a matching resource changes; a body of ServiceRequest,
Observation (body weight, height) and Patient resources is handed to
:meth:`kerma.services.orders.OrderIntake.receive_fhir` (kept encrypted, pseudonymised,
stored, matched to dose studies) before the answer is sent: 200 with
``{"status": "accepted", "orders": n, "studies_updated": m}``, or 422 with the reason
for a body that cannot be used (it is kept and listed by ``kerma hl7 messages``).
The caller must hold the ``physicist`` role (a user or an API token).
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kerma.web.security import Principal, Role, require_role

router = APIRouter(prefix="/fhir", tags=["fhir"])

#: Largest notification body read, in bytes.
MAX_NOTIFICATION_BYTES = 16 * 1024 * 1024

_LOCK = threading.Lock()


def _intake(request: Request) -> Any:
    """Return the app's :class:`OrderIntake` (opened on first use)."""
    from kerma.services.orders import OrderIntake

    with _LOCK:
        intake = getattr(request.app.state, "order_intake", None)
        if intake is None:
            intake = OrderIntake(request.app.state.settings)
            request.app.state.order_intake = intake
        return intake


@router.post("/notify")
async def notify(
    request: Request,
    principal: Annotated[Principal, Depends(require_role(Role.physicist))],
) -> JSONResponse:
    """Receive a FHIR subscription notification (or any Bundle of orders/observations)."""
    body = await request.body()
    if len(body) > MAX_NOTIFICATION_BYTES:
        return JSONResponse({"detail": "The notification is too large."}, status_code=413)
    intake = await run_in_threadpool(_intake, request)
    receipt = await run_in_threadpool(intake.receive_fhir, body, transport="fhir-notify")
    if receipt.ack_code != "AA":
        return JSONResponse({"status": "refused", "detail": receipt.reason}, status_code=422)
    return JSONResponse(
        {
            "status": "accepted",
            "orders": len(receipt.order_ids),
            "studies_updated": len(receipt.studies_updated),
        }
    )

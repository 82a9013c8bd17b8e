"""``GET /api/v1/studies/{study_uid}/fhir``: the HL7 FHIR Radiation Dose Summary of a study.

The same Bundle as ``kerma export fhir`` (:func:`kerma.export.fhir.build_bundle` of
:func:`kerma.services.dose_summary.dose_summaries`), as ``application/fhir+json``, for
a physicist or higher; each export is written to the audit log.

May import ``kerma.services``, ``kerma.export`` and ``kerma.web``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from kerma.web.security import Principal, Role, audit, require_role

if TYPE_CHECKING:
    from kerma.services.registry import Registry

router = APIRouter(prefix="/api/v1/studies", tags=["fhir"])

_lock = threading.Lock()


def _registry(request: Request) -> Registry:
    """Return the app's registry (opened on first use with the app's settings)."""
    state = request.app.state
    with _lock:
        registry = getattr(state, "registry", None)
        if registry is None:
            from kerma.services.registry import Registry

            registry = Registry(settings=state.settings)
            state.registry = registry
    return registry


@router.get(
    "/{study_uid}/fhir",
    response_class=JSONResponse,
    responses={
        200: {"content": {"application/fhir+json": {}}, "description": "A FHIR R4 Bundle."},
        404: {"description": "No study with that Study Instance UID."},
    },
)
def study_fhir(
    study_uid: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_role(Role.physicist))],
) -> JSONResponse:
    """Return the FHIR R4 Radiation Dose Summary Bundle (type collection) of one study."""
    from kerma.errors import NotFoundError
    from kerma.export.fhir import build_bundle
    from kerma.services.dose_summary import dose_summaries

    registry = _registry(request)
    try:
        with registry.session(write=False) as session:
            summaries = dose_summaries(session, study_instance_uid=study_uid)
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    bundle = build_bundle(summaries)
    audit(
        request,
        principal,
        "export.fhir",
        study_uid,
        {"resources": len(bundle["entry"]), "observations": len(summaries)},
    )
    return JSONResponse(bundle, media_type="application/fhir+json")

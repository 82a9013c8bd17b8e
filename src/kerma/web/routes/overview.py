"""The overview page (``/``): studies per month, open alerts, DRL status, last contact.

Every number comes from one service call (:mod:`kerma.services.dashboard`,
:mod:`kerma.services.alerts`); viewers and above may see it (aggregates only).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kerma.services import dashboard
from kerma.services.filters import StudyFilter
from kerma.web import charts
from kerma.web.deps import ReadSession, RegistryDep
from kerma.web.security import Principal, Role, require_role
from kerma.web.templating import render

router = APIRouter(tags=["pages"])

#: Days without an object after which a device is shown as silent.
SILENT_AFTER_DAYS = 7


@router.get("/", response_class=HTMLResponse, summary="Overview")
def overview(
    request: Request,
    session: ReadSession,
    registry: RegistryDep,
    user: Annotated[Principal, Depends(require_role(Role.viewer))],
) -> HTMLResponse:
    """Render the overview (registry-wide aggregates cached per registry state)."""
    cache = request.app.state.cache
    settings = registry.settings
    fingerprint = registry.context.fingerprint
    per_month = cache.get(
        session, ("per_month",), lambda: dashboard.studies_per_month(session, flt=StudyFilter())
    )
    status = cache.get(
        session,
        ("drl_status", fingerprint, settings.drl_set),
        lambda: dashboard.drl_status(session, settings=settings),
    )
    contacts = cache.get(session, ("contacts",), lambda: dashboard.device_contacts(session))
    return render(
        request,
        "overview.html",
        {
            "per_month_chart": cache.get(
                session, ("per_month_chart",), lambda: charts.studies_per_month(per_month)
            ),
            "n_studies": int(per_month["n_studies"].sum()) if len(per_month) else 0,
            "alert_counts": dashboard.alert_counts(session),
            "drl": status,
            "contacts": contacts,
            "silent_after_days": SILENT_AFTER_DAYS,
            "label": dashboard.quantity_label,
        },
    )

"""The overview page (``/``): studies per month, open alerts, DRL status, last contact.

Every number comes from one service call (:mod:`kerma.services.dashboard`,
:mod:`kerma.services.alerts`); viewers and above may see it (aggregates only), of
their sites only when they are restricted to sites (issue #15).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from kerma.services import dashboard
from kerma.services.filters import StudyFilter
from kerma.services.sites import allowed_site_ids, narrow_filter
from kerma.web import charts
from kerma.web.deps import ReadSession, RegistryDep
from kerma.web.security import Principal, Role, require_role
from kerma.web.templating import render

logger = logging.getLogger(__name__)

router = APIRouter(tags=["pages"])

#: Days without an object after which a device is shown as silent.
SILENT_AFTER_DAYS = 7


def overview_aggregates(
    app: Any, session: Session, registry: Any, principal: Principal | None = None
) -> dict[str, Any]:
    """Return the overview's aggregates through the app's cache.

    Studies per month (and its chart), the DRL status by room and exam and the devices'
    last contact: computed once per registry state and site set (``app.state.cache``),
    so only the first request after an import pays for them (``docs/web.md``). A
    principal restricted to sites (issue #15) gets its sites' numbers only, cached
    under its site set; ``None`` or an unrestricted principal, the whole registry's.
    """
    cache = app.state.cache
    settings = registry.settings
    fingerprint = registry.context.fingerprint
    site_ids = allowed_site_ids(principal)
    flt = narrow_filter(StudyFilter(), principal)
    per_month = cache.get(
        session,
        ("per_month", site_ids),
        lambda: dashboard.studies_per_month(session, flt=flt),
    )
    return {
        "per_month": per_month,
        "per_month_chart": cache.get(
            session, ("per_month_chart", site_ids), lambda: charts.studies_per_month(per_month)
        ),
        "drl": cache.get(
            session,
            ("drl_status", fingerprint, settings.drl_set, site_ids),
            lambda: dashboard.drl_status(
                session, settings=settings, flt=flt if site_ids is not None else None
            ),
        ),
        "contacts": cache.get(
            session,
            ("contacts", site_ids),
            lambda: dashboard.device_contacts(session, site_ids=site_ids),
        ),
    }


def warm(app: Any) -> None:
    """Compute the overview's aggregates once (``kerma serve`` runs this at start-up, in a
    thread, so that the first visitor does not wait for them); errors are logged only."""
    try:
        from kerma.web.deps import open_registry

        registry = open_registry(app)
        with registry.session(write=False) as session:
            overview_aggregates(app, session, registry)
    except Exception:  # a warm-up must never stop the server; the page will say why
        logger.exception("could not prepare the overview at start-up")
    finally:
        app.state.warmed.set()  # GET /health: overview_ready


@router.get("/", response_class=HTMLResponse, summary="Overview")
def overview(
    request: Request,
    session: ReadSession,
    registry: RegistryDep,
    user: Annotated[Principal, Depends(require_role(Role.viewer))],
) -> HTMLResponse:
    """Render the overview (aggregates of the user's sites, cached per registry state)."""
    values = overview_aggregates(request.app, session, registry, user)
    per_month = values["per_month"]
    return render(
        request,
        "overview.html",
        {
            "per_month_chart": values["per_month_chart"],
            "n_studies": int(per_month["n_studies"].sum()) if len(per_month) else 0,
            "alert_counts": dashboard.alert_counts(session, site_ids=allowed_site_ids(user)),
            "drl": values["drl"],
            "contacts": values["contacts"],
            "silent_after_days": SILENT_AFTER_DAYS,
            "label": dashboard.quantity_label,
        },
    )

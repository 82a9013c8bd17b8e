"""Alert pages: the queue (``/alerts``), one alert with its history and review form, the
review actions (POST, CSRF-checked, audited) and the significant-event report (PDF).

Everything goes through :mod:`kerma.services.alerts` (the review trail is the
services' hash-chained history) and :mod:`kerma.services.alert_report`. Physicists
and admins only; a user restricted to sites sees and reviews the alerts of those
sites, and a patient's cumulative alert one study of whose window is of those sites
(:func:`kerma.services.sites.check_alert_site`, issue #15); of such an alert it sees
the studies of those sites only (:func:`kerma.services.sites.get_alert_for`), and a
review by a contributing site is marked ``[site NAME]`` in the history. The
significant-event report stays with the site of the study that crossed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from kerma.errors import AlertReviewError, ReportNotAllowedError
from kerma.services import alerts as alert_service
from kerma.services.dashboard import AlertFilter
from kerma.services.sites import (
    check_alert_site,
    get_alert_for,
    narrow_alert_filter,
    reviewer_site_note,
)
from kerma.web.deps import FilterError, ReadSession, RegistryDep
from kerma.web.security import Principal, Role, audit, require_role, verify_csrf
from kerma.web.templating import render

router = APIRouter(tags=["pages"])

Physicist = Annotated[Principal, Depends(require_role(Role.physicist))]
STATES = ("open", "under_review", "closed")
OUTCOMES = tuple(o.value for o in alert_service.AlertOutcome)


@router.get("/alerts", response_class=HTMLResponse, summary="Alert queue")
def queue(
    request: Request,
    session: ReadSession,
    user: Physicist,
    state: Annotated[str, Query()] = "open",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    """Render one page of alerts in a review state (default: open), newest study first."""
    per_page = 50
    if state and state != "all" and state not in STATES:
        raise FilterError(f"alert state {state!r} is not one of {', '.join(STATES)} or all.")
    flt = narrow_alert_filter(AlertFilter(state=state if state in STATES else None), user)
    frame = alert_service.list_alerts(
        session, flt=flt, limit=per_page, offset=(page - 1) * per_page
    )
    total = alert_service.count_alerts(session, flt=flt)
    return render(
        request,
        "alerts.html",
        {
            "alerts": frame.to_dict("records"),
            "state": state,
            "states": STATES,
            "number": page,
            "pages": max(1, -(-total // per_page)),
            "total": total,
        },
    )


def _alert_page(
    request: Request,
    session: Session,
    alert_id: int,
    user: Principal,
    *,
    error: str | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render one alert with its window's studies (of ``user``'s sites), history, forms.

    Raises
    ------
    kerma.errors.SiteAccessError
        When the alert is of a site ``user`` may not see (403).
    """
    alert = get_alert_for(session, alert_id, user)
    return render(
        request,
        "alert.html",
        {"a": alert, "outcomes": OUTCOMES, "error": error, "message": message},
        status_code=status_code,
    )


@router.get("/alerts/{alert_id}", response_class=HTMLResponse, summary="One alert")
def alert_detail(
    request: Request, alert_id: int, session: ReadSession, user: Physicist
) -> HTMLResponse:
    """Render one alert: values, threshold and source, window's studies, history, review form.

    A patient's cumulative alert lists the window's studies of the user's sites and
    counts those of other sites (issue #15).
    """
    return _alert_page(request, session, alert_id, user)


def _act(
    request: Request,
    registry: object,
    user: Principal,
    alert_id: int,
    action: str,
    detail: dict[str, str],
) -> Response:
    """Run one review action in its own transaction; audit it; show the alert again.

    An alert of a site the user may not see is refused (403, issue #15).
    """
    try:
        with registry.session(write=True) as session:  # type: ignore[attr-defined]
            check_alert_site(session, alert_id, user)
            site = reviewer_site_note(session, alert_id, user)
            note = detail.get("note", "")
            if action == "review":
                alert_service.review_alert(
                    session, alert_id, user=user.username, note=f"{site}{note}".strip()
                )
            elif action == "note":
                alert_service.add_note(
                    session,
                    alert_id,
                    user=user.username,
                    text=f"{site}{note}" if note.strip() else note,
                )
            else:
                justification = detail.get("justification", "")
                alert_service.close_alert(
                    session,
                    alert_id,
                    user=user.username,
                    outcome=detail.get("outcome", ""),
                    justification=(
                        f"{site}{justification}" if justification.strip() else justification
                    ),
                )
    except AlertReviewError as exc:
        with registry.session(write=False) as session:  # type: ignore[attr-defined]
            return _alert_page(request, session, alert_id, user, error=str(exc), status_code=400)
    audit(request, user, f"alert.{action}", f"alert:{alert_id}", detail)
    return RedirectResponse(f"/alerts/{alert_id}", status_code=303)


@router.post("/alerts/{alert_id}/review", dependencies=[Depends(verify_csrf)], summary="Review")
def review(
    request: Request,
    alert_id: int,
    registry: RegistryDep,
    user: Physicist,
    note: Annotated[str, Form()] = "",
) -> Response:
    """Put an open alert under review (with an optional note)."""
    return _act(request, registry, user, alert_id, "review", {"note": note})


@router.post("/alerts/{alert_id}/note", dependencies=[Depends(verify_csrf)], summary="Add a note")
def note(
    request: Request,
    alert_id: int,
    registry: RegistryDep,
    user: Physicist,
    note: Annotated[str, Form()] = "",
) -> Response:
    """Append a note to the alert's history."""
    return _act(request, registry, user, alert_id, "note", {"note": note})


@router.post("/alerts/{alert_id}/close", dependencies=[Depends(verify_csrf)], summary="Close")
def close(
    request: Request,
    alert_id: int,
    registry: RegistryDep,
    user: Physicist,
    outcome: Annotated[str, Form()] = "",
    justification: Annotated[str, Form()] = "",
) -> Response:
    """Close the alert with an outcome and a justification (both required)."""
    return _act(
        request,
        registry,
        user,
        alert_id,
        "close",
        {"outcome": outcome, "justification": justification},
    )


@router.get("/alerts/{alert_id}/report.pdf", summary="Significant-event report (PDF)")
def report(request: Request, alert_id: int, session: ReadSession, user: Physicist) -> Response:
    """Return the significant-event report of an alert notified to the authority; audited."""
    from kerma.services.alert_report import render_report

    check_alert_site(session, alert_id, user, crossing_only=True)
    message, quantities = alert_service.report_message(session, alert_id)
    try:
        pdf = render_report(message, quantities, "pdf")
    except ReportNotAllowedError as exc:
        return _alert_page(request, session, alert_id, user, error=str(exc), status_code=409)
    audit(request, user, "export.alert_report", f"alert:{alert_id}")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="kerma-alert-{alert_id}.pdf"'},
    )

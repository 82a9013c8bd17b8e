"""Admin pages: standard-exam rules (with a trial against stored descriptions), the DRL
sets, alert rules, DICOM nodes and their last contact, rejected and ignored objects.

Read through the services (:mod:`kerma.services.dashboard`, ``analytics``, ``alerts``,
``intake``); admins only. Users, tokens and the audit log are the security pages'.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from kerma.errors import ConfigurationError
from kerma.services import alerts as alert_service
from kerma.services import analytics, dashboard, intake
from kerma.web.deps import ReadSession, RegistryDep
from kerma.web.security import Principal, Role, audit, require_role
from kerma.web.templating import render

router = APIRouter(tags=["pages"])

Admin = Annotated[Principal, Depends(require_role(Role.admin))]

#: Rule fields a trial pattern may be matched on (``kerma.analysis.exams.RULE_FIELDS``).
TRIAL_FIELDS = (
    "text",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
)


@router.get("/admin", response_class=HTMLResponse, summary="Administration")
def admin_home(
    request: Request, session: ReadSession, registry: RegistryDep, user: Admin
) -> HTMLResponse:
    """Render the configuration in force: DRL set, exam rules, alert rules, DICOM nodes."""
    settings = registry.settings
    return render(
        request,
        "admin.html",
        {
            "settings": settings,
            "drl_sets": analytics.drl_sets(settings=settings).to_dict("records"),
            "alert_rules": alert_service.rules_table(registry.alert_context).to_dict("records"),
            "contacts": dashboard.device_contacts(session).to_dict("records"),
            "n_rejected": intake.count_rejects(session),
            "n_ignored": intake.count_ignored(session),
        },
    )


@router.get("/admin/exam-rules", response_class=HTMLResponse, summary="Standard-exam rules")
def exam_rules(
    request: Request,
    session: ReadSession,
    registry: RegistryDep,
    user: Admin,
    exam: Annotated[str, Query()] = "",
    pattern: Annotated[str, Query()] = "",
    modality: Annotated[str, Query()] = "",
    field: Annotated[str, Query()] = "text",
) -> HTMLResponse:
    """Render the rules in force and, when a pattern is given, what a trial rule would map."""
    rules = registry.exam_rules
    context: dict[str, object] = {
        "rules": rules.to_frame().to_dict("records"),
        "sources": rules.sources,
        "fingerprint": rules.fingerprint,
        "fields": TRIAL_FIELDS,
        "form": {"exam": exam, "pattern": pattern, "modality": modality, "field": field},
        "trial": None,
    }
    if pattern or exam:
        if field not in TRIAL_FIELDS:
            error = {"error": f"Unknown field {field!r}."}
            return render(request, "exam_rules.html", context | error, status_code=400)
        try:
            context["trial"] = dashboard.try_exam_rule(
                session, exam=exam, pattern=pattern, modality=modality, field_name=field
            )
        except ConfigurationError as exc:
            return render(
                request, "exam_rules.html", context | {"error": str(exc)}, status_code=400
            )
        audit(
            request,
            user,
            "config.exam_rule_trial",
            exam,
            {"pattern": pattern, "modality": modality},
        )
    return render(request, "exam_rules.html", context)


@router.get("/admin/intake", response_class=HTMLResponse, summary="Rejected and ignored objects")
def rejected(
    request: Request,
    session: ReadSession,
    user: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> HTMLResponse:
    """Render the newest rejected and ignored objects (at most ``limit`` of each)."""
    return render(
        request,
        "intake.html",
        {
            "rejects": intake.list_rejects(session, limit=limit),
            "n_rejected": intake.count_rejects(session),
            "ignored": intake.list_ignored(session, limit=limit),
            "n_ignored": intake.count_ignored(session),
            "limit": limit,
        },
    )

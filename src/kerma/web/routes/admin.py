"""Admin pages: standard-exam rules (with a trial against stored descriptions), the DRL
sets, alert rules, DICOM nodes and their last contact, rejected and ignored objects.

Read through the services (:mod:`kerma.services.dashboard`, ``analytics``, ``alerts``,
``intake``); admins only. Users, tokens and the audit log are the security pages'.
The forms change the configuration kept in the registry
(:mod:`kerma.services.web_config`): site exam rules (the stored studies are mapped
again at once), the DRL set, alert rules enabled/disabled and their thresholds; each
change is audited (``config.exam_rule``, ``config.drl_set``, ``config.alert_rule``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from kerma.errors import ConfigurationError
from kerma.services import alerts as alert_service
from kerma.services import analytics, dashboard, intake, web_config
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

#: Levels of a rule (``kerma.analysis.exams.ExamRule.level``).
LEVELS = ("both", "study", "event")


def _alert_rule_rows(registry: object) -> list[dict[str, object]]:
    """Return every rule of the packs with its override and what is in force."""
    settings = registry.base_settings  # type: ignore[attr-defined]
    packs = alert_service.make_context(settings).rules
    in_force = registry.alert_context.rules  # type: ignore[attr-defined]
    with registry.session(write=False) as session:  # type: ignore[attr-defined]
        overrides = web_config.stored_alert_overrides(session)
    rows = []
    for rule in packs.rules:
        current = in_force.get(rule.rule_id)
        override = overrides.get(rule.rule_id, {})
        rows.append(
            {
                "rule_id": rule.rule_id,
                "pack": rule.pack,
                "title": rule.title,
                "kind": rule.kind,
                "unit": rule.unit,
                "enabled": current is not None,
                "threshold_in_force": (current or rule).threshold_text,
                "pack_threshold": rule.threshold_text,
                "threshold": override.get("threshold", ""),
                "factor": override.get("factor", ""),
                "editable": (
                    "threshold"
                    if rule.kind in web_config.THRESHOLD_KINDS
                    else "factor"
                    if rule.kind in web_config.FACTOR_KINDS
                    else ""
                ),
                "source": rule.source,
            }
        )
    return rows


def _admin_page(
    request: Request,
    registry: object,
    *,
    message: str = "",
    error: str = "",
    status: int = 200,
) -> Response:
    """Render the admin home page (after a change: with its message or error)."""
    settings = registry.settings  # type: ignore[attr-defined]
    with registry.session(write=False) as session:  # type: ignore[attr-defined]
        contacts = dashboard.device_contacts(session).to_dict("records")
        n_rejected = intake.count_rejects(session)
        n_ignored = intake.count_ignored(session)
        stored_set = web_config.stored_drl_set(session)
    return render(
        request,
        "admin.html",
        {
            "settings": settings,
            "base_drl_set": registry.base_settings.drl_set,  # type: ignore[attr-defined]
            "stored_drl_set": stored_set,
            "drl_sets": analytics.drl_sets(settings=settings).to_dict("records"),
            "alert_rules": _alert_rule_rows(registry),
            "contacts": contacts,
            "n_rejected": n_rejected,
            "n_ignored": n_ignored,
            "message": message,
            "error": error,
        },
        status_code=status,
    )


@router.get("/admin", response_class=HTMLResponse, summary="Administration")
def admin_home(request: Request, registry: RegistryDep, user: Admin) -> Response:
    """Render the configuration in force: DRL set, alert rules, DICOM nodes."""
    return _admin_page(request, registry)


@router.post("/admin/drl-set", include_in_schema=False)
def save_drl_set(
    request: Request,
    registry: RegistryDep,
    user: Admin,
    drl_set: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Store the DRL set(s) the pages, the API and the alerts use (empty: the setting)."""
    try:
        with registry.session() as session:
            chosen = web_config.save_drl_set(session, drl_set, settings=registry.base_settings)
    except ConfigurationError as exc:
        return _admin_page(request, registry, error=str(exc), status=400)
    registry.reload_config()
    audit(request, user, "config.drl_set", chosen or "(setting)", {"drl_set": chosen})
    message = (
        f"DRL set {chosen} in use."
        if chosen
        else f"DRL set choice removed: KERMA_DRL_SET ({registry.settings.drl_set}) in use."
    )
    return _admin_page(request, registry, message=message)


@router.post("/admin/alert-rules/{rule_id}", include_in_schema=False)
def save_alert_rule(
    request: Request,
    registry: RegistryDep,
    user: Admin,
    rule_id: str,
    enabled: Annotated[str, Form(max_length=8)] = "",
    threshold: Annotated[str, Form(max_length=64)] = "",
    factor: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Enable/disable an alert rule and replace its threshold or factor (empty: the pack's).

    Applies to studies evaluated from now on (new objects, ``kerma alerts recheck``).
    """
    packs = alert_service.make_context(registry.base_settings).rules
    try:
        with registry.session() as session:
            override = web_config.save_alert_override(
                session,
                rules=packs,
                rule_id=rule_id,
                enabled=enabled.lower() in {"on", "1", "yes", "true"},
                threshold=threshold,
                factor=factor,
            )
    except ConfigurationError as exc:
        return _admin_page(request, registry, error=str(exc), status=400)
    registry.reload_config()
    audit(request, user, "config.alert_rule", rule_id, {"override": override})
    state = "disabled" if override.get("enabled") is False else "enabled"
    changed = ", ".join(f"{k} {v:g}" for k, v in override.items() if k != "enabled")
    return _admin_page(
        request,
        registry,
        message=f"Alert rule {rule_id} {state}" + (f" ({changed})." if changed else "."),
    )


def _exam_rules_context(session: object, registry: object) -> dict[str, object]:
    """Return what the exam-rules page shows besides its forms."""
    rules = registry.exam_rules  # type: ignore[attr-defined]
    return {
        "rules": rules.to_frame().to_dict("records"),
        "sources": rules.sources,
        "fingerprint": rules.fingerprint,
        "fields": TRIAL_FIELDS,
        "levels": LEVELS,
        "site_rules": web_config.site_exam_rule_rows(session),  # type: ignore[arg-type]
        "trial": None,
        "remap": None,
    }


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
    context = _exam_rules_context(session, registry)
    context["form"] = {"exam": exam, "pattern": pattern, "modality": modality, "field": field}
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


def _after_rule_change(
    request: Request, registry: object, message: str, form: dict[str, str]
) -> Response:
    """Re-map the stored studies with the new rules and render the page with the counts."""
    registry.reload_config()  # type: ignore[attr-defined]
    remap = registry.ensure_exams_current()  # type: ignore[attr-defined]
    with registry.session(write=False) as session:  # type: ignore[attr-defined]
        context = _exam_rules_context(session, registry)
    context |= {"form": form, "remap": remap, "message": message}
    return render(request, "exam_rules.html", context)


@router.post("/admin/exam-rules", include_in_schema=False)
def save_exam_rule(
    request: Request,
    registry: RegistryDep,
    user: Admin,
    name: Annotated[str, Form(max_length=128)] = "",
    exam: Annotated[str, Form(max_length=256)] = "",
    pattern: Annotated[str, Form(max_length=1024)] = "",
    field: Annotated[str, Form(max_length=64)] = "text",
    modality: Annotated[str, Form(max_length=256)] = "",
    level: Annotated[str, Form(max_length=8)] = "both",
    exclude: Annotated[str, Form(max_length=1024)] = "",
    rule_id: Annotated[str, Form(max_length=16)] = "",
    position: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Add (no ``rule_id``) or change a site exam rule, then map the stored studies again."""
    form = {"exam": exam, "pattern": pattern, "modality": modality, "field": field}
    try:
        if rule_id.strip() and not rule_id.strip().isdigit():
            raise ConfigurationError(f"Rule id {rule_id!r} is not a number.")
        if position.strip() and not position.strip().isdigit():
            raise ConfigurationError(f"Position {position!r} is not a whole number.")
        with registry.session() as session:
            doc = web_config.save_exam_rule(
                session,
                name=name,
                exam=exam,
                pattern=pattern,
                field=field,
                modality=modality,
                level=level,
                exclude=exclude,
                rule_id=int(rule_id) if rule_id.strip() else None,
                position=int(position) if position.strip() else None,
                user=user.username,
            )
    except ConfigurationError as exc:
        with registry.session(write=False) as session:
            context = _exam_rules_context(session, registry)
        context |= {"form": form, "error": str(exc)}
        return render(request, "exam_rules.html", context, status_code=400)
    audit(
        request,
        user,
        "config.exam_rule",
        doc["name"],
        {"change": "edited" if rule_id.strip() else "added", "rule": doc},
    )
    verb = "changed" if rule_id.strip() else "added"
    return _after_rule_change(request, registry, f"Site rule {doc['name']} {verb}.", form)


@router.post("/admin/exam-rules/{rule_id}/delete", include_in_schema=False)
def delete_exam_rule(
    request: Request, registry: RegistryDep, user: Admin, rule_id: int
) -> Response:
    """Delete a site exam rule, then map the stored studies again."""
    form = {"exam": "", "pattern": "", "modality": "", "field": "text"}
    try:
        with registry.session() as session:
            name = web_config.delete_exam_rule(session, rule_id=rule_id)
    except ConfigurationError as exc:
        with registry.session(write=False) as session:
            context = _exam_rules_context(session, registry)
        context |= {"form": form, "error": str(exc)}
        return render(request, "exam_rules.html", context, status_code=404)
    audit(request, user, "config.exam_rule", name, {"change": "deleted", "id": rule_id})
    return _after_rule_change(request, registry, f"Site rule {name} deleted.", form)


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

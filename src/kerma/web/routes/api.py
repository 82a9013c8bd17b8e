"""The JSON API under ``/api/v1``: studies, events, statistics, DRL comparison, alerts.

The same service calls as the pages (``kerma.services``), the same study filter
(:func:`kerma.web.deps.study_filter`); lists are paginated (``page``, ``per_page``) and
say their ``total``. FastAPI publishes the OpenAPI description at ``/openapi.json``
(``/docs`` renders it). Machine clients authenticate with a token
(:func:`kerma.web.security.require_role`); aggregates need the viewer role, per-study
data the physicist role (and are audited).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from kerma.services import alerts as alert_service
from kerma.services import analytics, dashboard
from kerma.services import studies as study_service
from kerma.services.dashboard import AlertFilter
from kerma.services.sites import check_study_site, get_alert_for, narrow_alert_filter
from kerma.web.deps import FilterDep, ReadSession, RegistryDep, refuse_unknown_query
from kerma.web.routes.studies import count_cached
from kerma.web.security import Principal, Role, audit, require_role

router = APIRouter(prefix="/api/v1", tags=["api"], dependencies=[Depends(refuse_unknown_query)])

Viewer = Annotated[Principal, Depends(require_role(Role.viewer))]
Physicist = Annotated[Principal, Depends(require_role(Role.physicist))]


class Page(BaseModel):
    """One page of a listing: ``items`` (canonical names and units), ``total`` of all pages."""

    total: int
    page: int
    per_page: int
    items: list[dict[str, Any]]


class Table(BaseModel):
    """A table of results: ``rows`` (canonical names and units) and what they describe."""

    rows: list[dict[str, Any]]
    n_samples: int | None = None
    note: str | None = None


class StudyOut(BaseModel):
    """One study (:data:`kerma.services.studies.STUDY_COLUMNS_WITH_SITE`: the listing
    columns and ``site``) and its current events."""

    study: dict[str, Any]
    events: list[dict[str, Any]]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return a frame's rows as JSON-ready dicts (NaN → null, dates ISO 8601).

    Calendar dates (columns named ``*_date``, e.g. ``study_date``) are written as dates,
    ``"2026-12-02"``; date-times keep their time (pandas writes every date as a
    date-time, ``"2026-12-02T00:00:00.000"``, otherwise).
    """
    frame = frame.copy()
    for name in frame.columns:
        if str(name).endswith("_date"):
            values = pd.to_datetime(frame[name], errors="coerce")
            frame[name] = values.dt.strftime("%Y-%m-%d").where(values.notna(), None)
    return list(json.loads(frame.to_json(orient="records", date_format="iso")))


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return service rows JSON-ready (via pandas, so NaN and numpy values convert)."""
    return records(pd.DataFrame.from_records(rows)) if rows else []


@router.get("/studies", response_model=Page, summary="Studies (filtered, sorted, paginated)")
def list_studies(
    request: Request,
    session: ReadSession,
    flt: FilterDep,
    user: Physicist,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 50,
    sort: Annotated[
        str, Query(description="e.g. study_date:desc,device_name")
    ] = "study_date:desc,study_time:desc",
) -> Page:
    """Return one page of the studies the filter selects (the study browser's filters).

    Each item: :data:`kerma.services.studies.STUDY_COLUMNS_WITH_SITE` (``site``: the
    study's site name, ``null`` for a study of no site).
    """
    result = study_service.list_studies(
        session,
        flt=flt,
        sort=sort,
        limit=per_page,
        offset=(page - 1) * per_page,
        columns=study_service.STUDY_COLUMNS_WITH_SITE,
        count=False,
    )
    total = count_cached(request, session, flt)
    return Page(total=total, page=page, per_page=per_page, items=_plain(result.rows))


@router.get("/studies/{study_id}", response_model=StudyOut, summary="One study and its events")
def get_study(request: Request, study_id: int, session: ReadSession, user: Physicist) -> StudyOut:
    """Return a study and its current irradiation events; audited as a study view."""
    detail = study_service.get_study_or_raise(session, study_id=study_id)
    check_study_site(session, study_id, user)
    audit(request, user, "study.view", f"study:{study_id}", {"via": "api"})
    return StudyOut(study=_plain([detail.study])[0], events=_plain(detail.events))


@router.get("/studies/{study_id}/events", response_model=Table, summary="Events of a study")
def study_events(request: Request, study_id: int, session: ReadSession, user: Physicist) -> Table:
    """Return the current irradiation events of a study (canonical units); audited."""
    detail = study_service.get_study_or_raise(session, study_id=study_id)
    check_study_site(session, study_id, user)
    audit(request, user, "study.view", f"study:{study_id}", {"via": "api", "what": "events"})
    return Table(rows=_plain(detail.events), n_samples=len(detail.events))


@router.get("/statistics", response_model=Table, summary="Dose statistics per group")
def statistics(
    session: ReadSession,
    flt: FilterDep,
    user: Viewer,
    by: Annotated[str, Query(description="Comma-separated grouping columns.")] = (
        "standard_exam,device_name"
    ),
) -> Table:
    """Return n, mean, std, min, p25, median, p75, p95, max per group and quantity."""
    exam = flt.standard_exams[0] if len(flt.standard_exams) == 1 else None
    result = analytics.statistics(
        session, flt=flt, by=[b.strip() for b in by.split(",") if b.strip()], exam=exam
    )
    return Table(rows=records(result.table), n_samples=result.n_samples)


@router.get("/drl", response_model=Table, summary="DRL comparison per room and exam")
def drl(session: ReadSession, registry: RegistryDep, flt: FilterDep, user: Viewer) -> Table:
    """Compare each room's typical value with the configured national DRL set (ICRP 135)."""
    s = registry.settings
    exam = flt.standard_exams[0] if len(flt.standard_exams) == 1 else None
    result = analytics.compare_drls(
        session,
        flt=flt,
        drl_set=s.drl_set,
        exam=exam,
        drl_extra_paths=s.drl_extra_paths,
        min_sample=s.drl_min_sample,
        min_sample_mammography=s.drl_min_sample_mammography,
        unknown_age=s.drl_unknown_age,
    )
    return Table(
        rows=records(result.comparison), n_samples=result.n_samples, note=result.empty_reason
    )


@router.get("/overview/studies-per-month", response_model=Table, summary="Studies per month")
def studies_per_month(session: ReadSession, flt: FilterDep, user: Viewer) -> Table:
    """Return studies per month and modality (the overview's chart)."""
    return Table(rows=records(dashboard.studies_per_month(session, flt=flt)))


@router.get("/alerts", response_model=Page, summary="Alerts (paginated)")
def list_alerts(
    session: ReadSession,
    user: Physicist,
    state: Annotated[str | None, Query(description="open, under_review or closed")] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Page:
    """Return one page of alerts, newest study first."""
    flt = narrow_alert_filter(AlertFilter(state=state or None), user)
    frame = alert_service.list_alerts(
        session, flt=flt, limit=per_page, offset=(page - 1) * per_page
    )
    total = alert_service.count_alerts(session, flt=flt)
    return Page(total=total, page=page, per_page=per_page, items=records(frame))


@router.get("/alerts/{alert_id}", response_model=dict[str, Any], summary="One alert")
def get_alert(alert_id: int, session: ReadSession, user: Physicist) -> dict[str, Any]:
    """Return one alert with its context, window's studies and review history.

    403 for another site's alert; a patient's alert over several sites lists the
    window's studies of the caller's sites and counts the others
    (``window_studies_other_sites``; :func:`kerma.services.sites.get_alert_for`).
    """
    alert = get_alert_for(session, alert_id, user)
    alert.pop("history", None)  # tuples; ``history_entries`` holds the same as objects
    return dict(jsonable_encoder(alert))

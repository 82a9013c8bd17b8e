"""The analysis page of one standard exam (``/analysis``) and its charts' data as CSV.

Box plots per room with the DRL line and the local typical value, a histogram, the
median per month, dose against weight or water-equivalent diameter and the workload by
weekday and hour, all from one call of :func:`kerma.services.dashboard.analyse_exam`
(the samples of that exam only). Aggregates: viewers may see them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from kerma.errors import NotFoundError
from kerma.services import dashboard
from kerma.web import charts
from kerma.web.deps import FilterDep, ReadSession, RegistryDep
from kerma.web.security import Principal, Role, audit, require_role
from kerma.web.templating import render

router = APIRouter(tags=["pages"])


def analysis_charts(result: dashboard.ExamAnalysis) -> dict[str, str]:
    """Return the five figures (JSON) of an exam's analysis."""
    return {
        "boxes": charts.boxes(
            result.boxes, result.quantity, result.drl_value, result.typical_value
        ),
        "histogram": charts.histogram(result.histogram, result.quantity),
        "monthly": charts.monthly(result.monthly, result.quantity),
        "scatter": charts.scatter(result.scatter, result.quantity, result.x_axis),
        "workload": charts.workload(result.workload),
    }


@router.get("/analysis", response_class=HTMLResponse, summary="Analysis per standard exam")
def analysis_page(
    request: Request,
    session: ReadSession,
    registry: RegistryDep,
    flt: FilterDep,
    user: Annotated[Principal, Depends(require_role(Role.viewer))],
    quantity: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    """Render the charts of the chosen exam (``exam``; default the most frequent)."""
    exams = request.app.state.cache.get(
        session,
        ("exams", flt.site_ids),
        lambda: dashboard.exam_choices(session, site_ids=flt.site_ids),
    )
    exam = flt.standard_exams[0] if flt.standard_exams else (exams[0][0] if exams else None)
    context: dict[str, object] = {
        "exams": exams,
        "exam": exam,
        "params": dict(request.query_params),
    }
    if exam is None:
        return render(
            request,
            "analysis.html",
            context
            | {
                "error": "No study is mapped to a "
                "standard exam yet: import studies, or see Admin → exam rules."
            },
        )
    try:
        result = request.app.state.cache.get(
            session,
            ("analysis", exam, quantity or None, flt, 2000),
            lambda: dashboard.analyse_exam(
                session, exam=exam, settings=registry.settings, quantity=quantity or None, flt=flt
            ),
        )
    except (NotFoundError, ValueError) as exc:
        return render(request, "analysis.html", context | {"error": str(exc)}, status_code=404)
    query = request.url.query
    figures = request.app.state.cache.get(
        session, ("analysis charts", exam, quantity or None, flt), lambda: analysis_charts(result)
    )
    context |= {
        "a": result,
        "query": query if "exam=" in query else f"exam={exam}&{query}",
        "label": dashboard.quantity_label,
        "display": charts.display,
        "charts": figures,
    }
    return render(request, "analysis.html", context)


@router.get("/analysis/{chart}.csv", summary="Data of one analysis chart (CSV)")
def chart_csv(
    request: Request,
    chart: str,
    session: ReadSession,
    registry: RegistryDep,
    flt: FilterDep,
    user: Annotated[Principal, Depends(require_role(Role.viewer))],
    quantity: Annotated[str | None, Query()] = None,
) -> Response:
    """Return the data of one chart (canonical units in the column names); audited."""
    if not flt.standard_exams:
        raise NotFoundError("Give the standard exam (exam=...) of the chart.")
    exam = flt.standard_exams[0]
    result = request.app.state.cache.get(
        session,
        ("analysis", exam, quantity or None, flt, None),
        lambda: dashboard.analyse_exam(
            session,
            exam=exam,
            settings=registry.settings,
            quantity=quantity or None,
            flt=flt,
            scatter_limit=None,
        ),
    )
    frame = dashboard.chart_frame(result, chart)
    audit(request, user, "export.chart_csv", chart, {"query": str(request.query_params)})
    return Response(
        frame.to_csv(index=False),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="kerma-{chart}.csv"'},
    )

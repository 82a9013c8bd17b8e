"""Study pages: the browser (``/studies``), its CSV (``/studies.csv``), the study detail.

The browser's filters are :func:`kerma.web.deps.study_filter` (the API's too); paging,
sorting and counting run in the database (:func:`kerma.services.studies.list_studies`),
the CSV is streamed in batches (:func:`kerma.services.studies.iter_studies`). The study
detail, the CSV and the originals need the physicist role and are audited.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from kerma.services import dashboard
from kerma.services import studies as study_service
from kerma.services.filters import DOSE_RANGE_QUANTITIES, StudyFilter
from kerma.services.sites import allowed_site_ids, check_study_site, site_choices
from kerma.web.deps import FilterDep, ReadSession, RegistryDep
from kerma.web.security import Principal, Role, audit, require_role
from kerma.web.templating import render

router = APIRouter(tags=["pages"])

#: Columns of the browser table (names of :data:`kerma.services.studies.STUDY_COLUMNS`).
BROWSER_COLUMNS: tuple[str, ...] = (
    "study_date",
    "study_time",
    "modality",
    "device_name",
    "study_description",
    "standard_exam",
    "acquisition_protocols",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "number_of_events",
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "is_non_patient",
)

PAGE_SIZES = (25, 50, 100, 200)

#: Default order, newest first: the order of the index ``ix_study_date_time_id``, so a
#: late page is an index walk (``docs/performance.md``).
DEFAULT_SORT = "study_date:desc,study_time:desc"


def count_cached(request: Request, session: Any, flt: StudyFilter) -> int:
    """Return how many studies ``flt`` selects, cached per registry state (the count reads
    every matching study, the page only 50: at 10⁶ events it is most of a page's time;
    ``docs/web.md``)."""
    return int(
        request.app.state.cache.get(
            session, ("count", flt), lambda: study_service.count_studies(session, flt=flt)
        )
    )


def filter_query(request: Request, **changes: Any) -> str:
    """Return the request's query string with ``changes`` applied (``None`` removes a key)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return urlencode(params)


@router.get("/studies", response_class=HTMLResponse, summary="Study browser")
def browse(
    request: Request,
    session: ReadSession,
    flt: FilterDep,
    user: Annotated[Principal, Depends(require_role(Role.physicist))],
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
    sort: Annotated[str, Query()] = DEFAULT_SORT,
) -> HTMLResponse:
    """Render one page of the studies the filter selects."""
    try:
        result = study_service.list_studies(
            session,
            flt=flt,
            sort=sort,
            limit=per_page,
            offset=(page - 1) * per_page,
            columns=("study_id", *BROWSER_COLUMNS),
            count=False,
        )
    except ValueError as exc:
        return render(request, "error.html", {"error": str(exc)}, status_code=400)
    total = count_cached(request, session, flt)
    result = dataclasses.replace(result, total=total)
    pages = max(1, -(-total // per_page))
    return render(
        request,
        "studies.html",
        {
            "page": result,
            "columns": BROWSER_COLUMNS,
            "number": page,
            "pages": pages,
            "per_page": per_page,
            "page_sizes": PAGE_SIZES,
            "sort": sort,
            "params": dict(request.query_params),
            "query": lambda **c: filter_query(request, **c),
            "dose_quantities": DOSE_RANGE_QUANTITIES,
            "exams": request.app.state.cache.get(
                session,
                ("exams", flt.site_ids),
                lambda: dashboard.exam_choices(session, site_ids=flt.site_ids),
            ),
            "devices": dashboard.device_choices(session, site_ids=allowed_site_ids(user)),
            "sites": site_choices(session, user),
            "label": dashboard.quantity_label,
        },
    )


def csv_lines(rows: Iterator[dict[str, Any]], columns: tuple[str, ...]) -> Iterator[str]:
    """Yield the CSV text of ``rows`` (header first) in chunks of about 500 rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for n, row in enumerate(rows, start=1):
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def stream_studies_csv(registry: Any, flt: StudyFilter, name: str) -> StreamingResponse:
    """Return a streamed CSV of every study ``flt`` selects (its own read session)."""
    columns = tuple(c for c in study_service.STUDY_COLUMNS if c != "accession_number")

    def body() -> Iterator[str]:
        with registry.session(write=False) as session:
            rows = study_service.iter_studies(session, flt=flt, columns=columns)
            yield from csv_lines(rows, columns)

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/studies.csv", summary="CSV of the study browser's filter")
def studies_csv(
    request: Request,
    registry: RegistryDep,
    flt: FilterDep,
    user: Annotated[Principal, Depends(require_role(Role.physicist))],
) -> StreamingResponse:
    """Stream every study of the filter as CSV (canonical names and units); audited."""
    audit(request, user, "export.studies_csv", "studies", {"query": str(request.query_params)})
    return stream_studies_csv(registry, flt, "kerma-studies.csv")


@router.get("/studies/{study_id}", response_class=HTMLResponse, summary="Study detail")
def study_detail(
    request: Request,
    study_id: int,
    session: ReadSession,
    registry: RegistryDep,
    user: Annotated[Principal, Depends(require_role(Role.physicist))],
) -> HTMLResponse:
    """Render one study: device, events, totals, DRL comparison, derived values, alerts."""
    detail = study_service.get_study_or_raise(session, study_id=study_id)
    check_study_site(session, study_id, user)
    audit(request, user, "study.view", f"study:{study_id}")
    study = detail.study
    comparison = dashboard.study_drl_comparison(
        session, study_id=study_id, settings=registry.settings
    )
    alerts = dashboard.study_alerts(session, study_id=study_id)
    skin = dashboard.study_skin_dose(session, study_id=study_id)
    return render(
        request,
        "study.html",
        {
            "s": study,
            "events": detail.events,
            "event_columns": dashboard.event_columns(detail.events),
            "comparison": comparison,
            "alerts": alerts,
            "skin": skin,
            "originals": dashboard.study_originals(session, study_id=study_id),
            "label": dashboard.quantity_label,
        },
    )


@router.get("/studies/{study_id}/originals/{dose_report_id}", summary="Archived original")
def original(
    request: Request,
    study_id: int,
    dose_report_id: int,
    session: ReadSession,
    registry: RegistryDep,
    user: Annotated[Principal, Depends(require_role(Role.physicist))],
) -> Response:
    """Download a dose report as received (decrypted from the archive); audited."""
    check_study_site(session, study_id, user)
    name, data = dashboard.read_original(
        session, settings=registry.settings, study_id=study_id, dose_report_id=dose_report_id
    )
    audit(request, user, "export.original", f"dose_report:{dose_report_id}", {"study_id": study_id})
    return Response(
        data,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/studies/{study_id}/skin-dose-map", summary="Stored skin-dose map")
def skin_map(
    request: Request,
    study_id: int,
    session: ReadSession,
    registry: RegistryDep,
    user: Annotated[Principal, Depends(require_role(Role.physicist))],
) -> Response:
    """Download the stored skin-dose map of a fluoroscopy study; audited."""
    check_study_site(session, study_id, user)
    name, data = dashboard.read_skin_map(session, settings=registry.settings, study_id=study_id)
    audit(request, user, "export.skin_dose_map", f"study:{study_id}")
    media = "image/png" if name.endswith(".png") else "application/octet-stream"
    return Response(
        data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )

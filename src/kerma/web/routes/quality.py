"""Quality views (issue #17): JSON API under ``/api/v1/quality`` and the ``/quality`` page.

Every route is one call of :mod:`kerma.services.quality` (the same as ``kerma quality``)
and depends on :func:`kerma.web.security.require_role`: aggregates and scatter points
(no study detail) need ``viewer``. May import ``kerma.services`` and ``kerma.web``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from kerma.services.filters import StudyFilter
from kerma.web.deps import refuse_unknown_query
from kerma.web.security import Principal, Role, require_role
from kerma.web.templating import render

logger = logging.getLogger(__name__)

api = APIRouter(
    prefix="/api/v1/quality", tags=["quality"], dependencies=[Depends(refuse_unknown_query)]
)
pages = APIRouter(tags=["quality"])

Viewer = Annotated[Principal, Depends(require_role(Role.viewer))]
FromQ = Annotated[dt.date | None, Query(alias="from", description="First study date.")]
ToQ = Annotated[dt.date | None, Query(alias="to", description="Last study date.")]
ModalityQ = Annotated[str | None, Query(description="Modality or comma-separated list.")]
DeviceQ = Annotated[str | None, Query(description="Part of the device, station or model name.")]
ProtocolQ = Annotated[str | None, Query(description="Part of an acquisition protocol.")]


@contextmanager
def _session(request: Request) -> Iterator[Session]:
    """Yield a read session of the app's registry (:func:`kerma.web.deps.open_registry`)."""
    from kerma.web.deps import open_registry

    with open_registry(request.app).session(write=False) as session:
        yield session


def _filter(
    date_from: dt.date | None,
    date_to: dt.date | None,
    modality: str | None,
    device: str | None,
    protocol: str | None = None,
) -> StudyFilter:
    """Return the study filter of the query parameters."""
    try:
        return StudyFilter(
            modalities=modality or (),  # type: ignore[arg-type]
            date_from=date_from,
            date_to=date_to,
            device_name=device,
            protocol=protocol,
        )
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return the rows of a frame as JSON-ready dicts (NaN as null)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return jsonable_encoder(clean.to_dict("records"))


def _groups(by: str) -> list[str]:
    """Return the grouping keys of ``by``."""
    return [g.strip() for g in by.split(",") if g.strip()]


@api.get("/ei")
def ei_summary(
    request: Request,
    _: Viewer,
    by: str = "room,detector,protocol,body_part",
    date_from: FromQ = None,
    date_to: ToQ = None,
    modality: ModalityQ = None,
    device: DeviceQ = None,
    protocol: ProtocolQ = None,
) -> list[dict[str, Any]]:
    """Deviation index distribution per group (``kerma quality ei``)."""
    from kerma.services.quality import exposure_index_summary

    flt = _filter(date_from, date_to, modality, device, protocol)
    with _session(request) as session:
        try:
            frame = exposure_index_summary(session, group_by=_groups(by), flt=flt)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
    return _records(frame)


@api.get("/vendor")
def vendor_summary(
    request: Request,
    _: Viewer,
    date_from: FromQ = None,
    date_to: ToQ = None,
    modality: ModalityQ = None,
    device: DeviceQ = None,
) -> list[dict[str, Any]]:
    """Vendor exposure indices per room, under their names (``kerma quality vendor``)."""
    from kerma.services.quality import vendor_indices

    with _session(request) as session:
        frame = vendor_indices(session, flt=_filter(date_from, date_to, modality, device))
    return _records(frame)


@api.get("/rejects")
def reject_summary(
    request: Request,
    _: Viewer,
    by: str = "room",
    date_from: FromQ = None,
    date_to: ToQ = None,
    modality: ModalityQ = None,
    device: DeviceQ = None,
) -> list[dict[str, Any]]:
    """Reject rates per group (``kerma quality rejects``)."""
    from kerma.services.quality import reject_rates

    flt = _filter(date_from, date_to, modality, device)
    with _session(request) as session:
        try:
            frame = reject_rates(session, group_by=_groups(by), flt=flt)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
    return _records(frame)


@api.get("/noise")
def noise_summary(
    request: Request,
    _: Viewer,
    date_from: FromQ = None,
    date_to: ToQ = None,
    protocol: ProtocolQ = None,
    station: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Global noise level of CT series (``kerma quality noise``)."""
    from kerma.services.quality import noise_by_series

    with _session(request) as session:
        frame = noise_by_series(
            session,
            date_from=date_from,
            date_to=date_to,
            protocol=protocol,
            station=station,
            limit=limit,
            offset=offset,
        )
    return _records(frame)


@api.get("/points")
def dose_di_points(
    request: Request,
    _: Viewer,
    date_from: FromQ = None,
    date_to: ToQ = None,
    modality: ModalityQ = None,
    device: DeviceQ = None,
    protocol: ProtocolQ = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 5000,
) -> list[dict[str, Any]]:
    """The newest exposures with a DI and their dose (the page's scatter)."""
    from kerma.services.quality import dose_di_points as points

    flt = _filter(date_from, date_to, modality, device, protocol)
    with _session(request) as session:
        frame = points(session, flt=flt, limit=limit)
    return _records(frame)


def _drl_by_room(request: Request, flt: StudyFilter) -> dict[str, str]:
    """Return per room a short DRL status ("2 of 5 above"), empty when not comparable."""
    from kerma.web.deps import open_registry

    registry = open_registry(request.app)
    try:
        result = registry.drl(flt)
    except (ValueError, LookupError) as exc:  # a comparison it cannot make: say so
        logger.info("DRL comparison not shown on the quality page: %s", exc)
        return {}
    frame = result.comparison
    if frame.empty or "device_name" not in frame or "status" not in frame:
        return {}
    out: dict[str, str] = {}
    for room, group in frame.groupby("device_name"):
        compared = group[group["status"].isin(["above", "below"])]
        above = int((compared["status"] == "above").sum())
        out[str(room)] = f"{above} of {len(compared)} above" if len(compared) else "not compared"
    return out


@pages.get("/quality", response_class=HTMLResponse)
def quality_page(
    request: Request,
    _: Viewer,
    date_from: FromQ = None,
    date_to: ToQ = None,
    modality: ModalityQ = None,
    device: DeviceQ = None,
    protocol: ProtocolQ = None,
) -> HTMLResponse:
    """The quality dashboard: dose vs DI, dose vs noise, reject rate beside DRL status."""
    from kerma.services.quality import (
        dose_di_points as points,
    )
    from kerma.services.quality import (
        exposure_index_summary,
        noise_by_series,
        reject_rates,
    )
    from kerma.web.quality_charts import dose_di_figure, dose_noise_figure

    flt = _filter(date_from, date_to, modality, device, protocol)
    with _session(request) as session:
        di_points = points(session, flt=flt)
        summary = exposure_index_summary(session, group_by=["protocol"], flt=flt)
        series = noise_by_series(
            session, date_from=date_from, date_to=date_to, protocol=protocol, station=device
        )
        rejects = reject_rates(session, group_by=["room"], flt=flt)
    drl = _drl_by_room(request, flt)
    rejects = rejects.assign(drl_status=rejects["room"].map(drl).fillna("—"))
    return render(
        request,
        "quality.html",
        {
            "filters": {
                "from": date_from or "",
                "to": date_to or "",
                "modality": modality or "",
                "device": device or "",
                "protocol": protocol or "",
            },
            "di_figure": json.loads(dose_di_figure(di_points).to_json())
            if not di_points.empty
            else None,
            "noise_figure": json.loads(dose_noise_figure(series).to_json())
            if series["global_noise_hu"].notna().any()
            else None,
            "di_summary": _records(summary),
            "rejects": _records(rejects),
            "n_points": len(di_points),
            "n_series": len(series),
        },
    )

"""Dependencies of the pages and the JSON API: the registry, sessions, the study filter.

One :class:`kerma.Registry` per application (``app.state.registry``, opened on first
use), a read or write session per request, and :func:`study_filter` — the one
translation of query parameters (pages, CSV download and ``/api/v1/studies`` alike) into
:class:`kerma.services.filters.StudyFilter`.

May import ``kerma.services`` (DESIGN.md "Layers").
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from kerma.services.filters import DOSE_MODALITIES, DOSE_RANGE_QUANTITIES, StudyFilter
from kerma.web.security import Principal, Role, require_role

_registry_lock = threading.Lock()


def get_registry(request: Request) -> Any:
    """Return the application's registry (:class:`kerma.Registry`), opened on first use."""
    return open_registry(request.app)


def open_registry(app: Any) -> Any:
    """Return ``app``'s registry, opening it on first use (thread-safe)."""
    registry = getattr(app.state, "registry", None)
    if registry is None:
        with _registry_lock:
            registry = getattr(app.state, "registry", None)
            if registry is None:
                from kerma.services.registry import Registry

                registry = Registry(settings=app.state.settings)
                app.state.registry = registry
    return registry


RegistryDep = Annotated[Any, Depends(get_registry)]


def read_session(registry: RegistryDep) -> Iterator[Session]:
    """Yield a read-only session for one request."""
    with registry.session(write=False) as session:
        yield session


def write_session(registry: RegistryDep) -> Iterator[Session]:
    """Yield a writing session for one request (committed when the route returns)."""
    with registry.session(write=True) as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session)]
WriteSession = Annotated[Session, Depends(write_session)]


def _text(value: str | None) -> str | None:
    """Return a stripped text or ``None`` when empty."""
    return value.strip() or None if value is not None else None


class FilterError(ValueError):
    """A study filter parameter a physicist must correct (shown on the page, 400 in the API)."""


def study_filter(
    principal: Annotated[Principal, Depends(require_role(Role.viewer))],
    registry: RegistryDep,
    modality: Annotated[str | None, Query(description="Modality, e.g. CT or CT,DX.")] = None,
    date_from: Annotated[str | None, Query(description="First study date, YYYY-MM-DD.")] = None,
    date_to: Annotated[str | None, Query(description="Last study date, YYYY-MM-DD.")] = None,
    device_id: Annotated[str | None, Query(description="Device (room) id.")] = None,
    device: Annotated[str | None, Query(description="Part of a device/station name.")] = None,
    exam: Annotated[str | None, Query(description="Standard exam (exact).")] = None,
    protocol: Annotated[str | None, Query(description="Part of an acquisition protocol.")] = None,
    description: Annotated[str | None, Query(description="Part of the study description.")] = None,
    age_min: Annotated[str | None, Query(description="Age band minimum, years (included).")] = None,
    age_max: Annotated[str | None, Query(description="Age band maximum, years (excluded).")] = None,
    sex: Annotated[str | None, Query(description="M, F or O.")] = None,
    weight_min: Annotated[str | None, Query(description="Weight minimum, kg (included).")] = None,
    weight_max: Annotated[str | None, Query(description="Weight maximum, kg (excluded).")] = None,
    dose_quantity: Annotated[
        str | None, Query(description=f"Dose column: {', '.join(DOSE_RANGE_QUANTITIES)}.")
    ] = None,
    dose_min: Annotated[str | None, Query(description="Dose minimum, canonical unit.")] = None,
    dose_max: Annotated[str | None, Query(description="Dose maximum, canonical unit.")] = None,
    dose_unit: Annotated[
        str | None,
        Query(
            description="Unit of dose_min/dose_max: canonical (default: KAP Gy·m², Ka,r Gy, "
            "as the API's values) or display (as the pages show them: KAP Gy·cm², Ka,r mGy)."
        ),
    ] = None,
    has_alert: Annotated[str | None, Query(description="yes, no or empty (either).")] = None,
    include_qa: Annotated[bool, Query(description="Also QA / phantom studies.")] = False,
    site: Annotated[
        str | None, Query(description="Site name (kerma sites list), any case.")
    ] = None,
) -> StudyFilter:
    """Return the :class:`StudyFilter` of the request's query parameters.

    Empty parameters are ignored (an empty form field selects everything). The filter is
    narrowed to the sites the request's principal may see
    (:func:`kerma.services.sites.narrow_filter`, issue #15): ``site`` naming another
    site than a restricted principal's selects no study.

    Raises
    ------
    FilterError
        When a value is not valid (not a date, not a number, unknown sex or quantity),
        or ``site`` is not a site (the message names the sites the principal may see,
        as ``kerma studies --site`` does).
    """
    alert = _text(has_alert)
    has = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
    if alert is not None and alert.lower() not in has:
        raise FilterError(f"has_alert {alert!r} is not yes or no.")
    wrong = [m for m in re.split(r"[,\s]+", _text(modality) or "") if m]
    wrong = [m for m in wrong if m.upper() not in DOSE_MODALITIES]
    if wrong:
        raise FilterError(
            f"modality {', '.join(map(repr, wrong))} is not a dose modality; use "
            f"{', '.join(DOSE_MODALITIES)} (several comma-separated)."
        )
    room = _text(device_id)
    if room is not None and not room.isdigit():
        raise FilterError(f"device_id {room!r} is not a device number.")
    dose_q = _text(dose_quantity)
    lo, hi = _text(dose_min), _text(dose_max)
    unit = (_text(dose_unit) or "canonical").lower()
    if unit not in ("canonical", "display"):
        raise FilterError(f"dose_unit {dose_unit!r} is not canonical or display.")
    if unit == "display" and dose_q is not None:
        lo, hi = _from_display(dose_q, lo), _from_display(dose_q, hi)
    site_ids = _site_ids(registry, _text(site), principal)
    try:
        flt = StudyFilter(
            site_ids=site_ids,
            modalities=_text(modality) or (),  # type: ignore[arg-type]
            date_from=_text(date_from),  # type: ignore[arg-type]
            date_to=_text(date_to),  # type: ignore[arg-type]
            device_ids=(int(room),) if room is not None else (),
            device_name=_text(device),
            standard_exams=_text(exam) or (),  # type: ignore[arg-type]
            protocol=_text(protocol),
            study_description=_text(description),
            age_min_years=_text(age_min),  # type: ignore[arg-type]
            age_max_years=_text(age_max),  # type: ignore[arg-type]
            sex=_text(sex),
            weight_min_kg=_text(weight_min),  # type: ignore[arg-type]
            weight_max_kg=_text(weight_max),  # type: ignore[arg-type]
            dose_quantity=dose_q if (lo is not None or hi is not None) else None,
            dose_min=lo,  # type: ignore[arg-type]
            dose_max=hi,  # type: ignore[arg-type]
            has_alert=has[alert.lower()] if alert is not None else None,
            include_non_patient=include_qa,
        )
    except ValueError as exc:
        raise FilterError(str(exc)) from exc
    from kerma.services.sites import narrow_filter

    return narrow_filter(flt, principal)


def _site_ids(registry: Any, name: str | None, principal: Principal) -> tuple[int, ...] | None:
    """Return the ids of the site ``name`` for the filter (``None``: no ``site`` asked).

    Raises
    ------
    FilterError
        When ``name`` is not a site (:func:`kerma.services.sites.site_id_for`).
    """
    if name is None:
        return None
    from kerma.errors import NotFoundError
    from kerma.services.sites import site_id_for

    with registry.session(write=False) as session:
        try:
            return (site_id_for(session, name, principal),)
        except NotFoundError as exc:
            raise FilterError(str(exc)) from exc


def _from_display(quantity: str, text: str | None) -> str | None:
    """Return a dose bound typed in ``quantity``'s display unit in its canonical unit
    (``kerma.units.QUANTITIES``: KAP Gy·cm² → Gy·m²); text that is not a number is
    returned as it is, for :class:`StudyFilter` to refuse with its message."""
    from kerma.units import get_quantity

    q = get_quantity(quantity)
    if text is None or q is None:
        return text
    try:
        return repr(float(text) / q.factor)
    except ValueError:
        return text


def refuse_unknown_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (a JSON API dependency).

    A misspelt filter (``modalty=CT``) would otherwise be ignored and the answer would
    hold every study; the API answers 400 naming the parameter and the route's own.

    Raises
    ------
    FilterError
        When a query parameter is not one of the route's.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    pending = [dependant]  # the route's dependency tree (fastapi Dependant dataclasses)
    while pending:
        current = pending.pop()
        known.update(param.alias for param in current.query_params)
        pending.extend(current.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise FilterError(
            f"Unknown query parameter(s) {', '.join(unknown)}; this endpoint takes: "
            f"{', '.join(sorted(known)) or 'none'}."
        )


FilterDep = Annotated[StudyFilter, Depends(study_filter)]

"""Jinja2 templates of the web pages: :data:`templates` and :func:`render`.

Every page template extends ``base.html`` (blocks ``title`` and ``content``); ``render``
passes the request, its principal (``user``) and the CSRF token (``csrf_token``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from kerma.units import QUANTITIES, display_unit, to_display
from kerma.web.security import csrf_token

TEMPLATE_DIR = Path(__file__).with_name("templates")
templates = Jinja2Templates(directory=str(TEMPLATE_DIR))


def _finalize(value: Any) -> Any:
    """Show a missing value of a DataFrame cell (NaN, pandas 3 keeps absent strings of a
    ``str`` column as NaN, and so ``{{ r.station_name or "" }}`` would print "nan") as "–"."""
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return "–"
    return value


templates.env.finalize = _finalize


def display_label(name: str) -> str:
    """Return a quantity's label in its display unit (``"KAP total (Gy·cm²)"``), as the
    command line's tables show it; other names unchanged."""
    quantity = QUANTITIES.get(name)
    return quantity.display_label if quantity is not None else name


#: Unit suffixes of Kerma's column names (DESIGN.md: names carry units) and how a
#: column heading writes them.
_UNIT_SUFFIXES: dict[str, str] = {
    "_deg": "°",
    "_gy": "Gy",
    "_gym2": "Gy·m²",
    "_kv": "kV",
    "_m2": "m²",
    "_ma": "mA",
    "_mas": "mAs",
    "_mbq": "MBq",
    "_mgy": "mGy",
    "_mgycm": "mGy·cm",
    "_ml": "mL",
    "_mm": "mm",
    "_s": "s",
}


def column_heading(name: str) -> str:
    """Return a column's heading: a quantity's display label (:func:`display_label`),
    else its words with the unit of its suffix in brackets (``pulse_width_s`` →
    ``"pulse width (s)"``)."""
    label = display_label(name)
    if label != name:
        return label
    stem, _, suffix = name.rpartition("_")
    unit = _UNIT_SUFFIXES.get(f"_{suffix}")
    if stem and unit is not None:
        return f"{stem.replace('_', ' ')} ({unit})"
    return name.replace("_", " ")


def display_value(name: str, value: Any) -> Any:
    """Return a canonical value of quantity ``name`` in its display unit (KAP Gy·m² →
    Gy·cm², Ka,r Gy → mGy); other names, missing values and text unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return to_display(name, value)


#: Page tables show dose values as ``kerma drl``, ``kerma studies`` and ``kerma alerts`` do
#: (display units; ``dunit`` the unit of ``dval``'s value).
templates.env.globals.update(
    dlabel=display_label, dval=display_value, dunit=display_unit, heading=column_heading
)


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render template ``name`` with ``context`` plus ``user`` and ``csrf_token``."""
    values: dict[str, Any] = {
        "user": getattr(request.state, "principal", None),
        "csrf_token": csrf_token(request),
    }
    values.update(context or {})
    return templates.TemplateResponse(request, name, values, status_code=status_code)

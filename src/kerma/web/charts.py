"""Plotly figures of the dashboard, as JSON for ``Plotly.newPlot`` in the page.

Pure functions from the services' frames to figure JSON; the page loads plotly.js from
the installed ``plotly`` package (``/static/vendor``), never from a CDN. Values are shown
in display units (:data:`kerma.units.QUANTITIES`).

Figures are written as plotly.js figure dicts (traces with their ``type``, a layout) and
serialised by ``plotly.io.json.to_json_plotly``, not built from ``plotly.graph_objects``:
plotly.js draws the same figure, and the server does not hold plotly's Python figure
validators (about 28 MiB resident once the overview's chart is built; docs/web.md
"Memory"). The theme is plotly's ``plotly_white`` template, read from the package.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly
from plotly.colors import make_colorscale, sequential
from plotly.io.json import to_json_plotly

from kerma.units import QUANTITIES

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MARGIN: dict[str, Any] = {"l": 60, "r": 20, "t": 40, "b": 60}
_HEIGHT = 380


@functools.cache
def _template() -> dict[str, Any]:
    """Return plotly's ``plotly_white`` template (``plotly/package_data/templates``)."""
    path = Path(plotly.__file__).parent / "package_data" / "templates" / "plotly_white.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _layout(title: str, **axes: Any) -> dict[str, Any]:
    """Return a layout: the title, the common template, margins and height, and ``axes``
    (``xaxis``/``yaxis`` dicts, or ``xaxis_title``/``yaxis_title`` strings)."""
    layout: dict[str, Any] = {
        "template": _template(),
        "margin": _MARGIN,
        "height": _HEIGHT,
        "title": {"text": title},
    }
    for axis in ("xaxis", "yaxis"):
        spec = dict(axes.pop(axis, {}))
        if (text := axes.pop(f"{axis}_title", None)) is not None:
            spec["title"] = {"text": text}
        if spec:
            layout[axis] = spec
    layout.update(axes)
    return layout


def _values(values: Any) -> list[Any]:
    """Return a column, array or sequence as a plain list (NaN kept; to_json_plotly
    writes it as null)."""
    if isinstance(values, pd.Series | pd.Index):
        return list(values.tolist())
    return list(values)


def display(name: str) -> tuple[float, str]:
    """Return (factor from canonical to display unit, "label (display unit)") of a quantity."""
    q = QUANTITIES.get(name)
    if q is None:
        return 1.0, name
    return q.factor, f"{q.label} ({q.display_unit})"


def _json(data: list[dict[str, Any]], layout: dict[str, Any]) -> str:
    """Return the figure as JSON for the page."""
    # "</" escaped so that no text in the figure can end the page's <script> element
    return str(to_json_plotly({"data": data, "layout": layout})).replace("</", "<\\/")


def studies_per_month(frame: pd.DataFrame) -> str:
    """Stacked bars: studies per month (x) and modality (colour)."""
    data = [
        {
            "type": "bar",
            "x": _values(rows["month"]),
            "y": _values(rows["n_studies"]),
            "name": str(modality) or "?",
        }
        for modality, rows in frame.groupby("modality", sort=True)
    ]
    return _json(data, _layout("Studies per month", barmode="stack"))


def boxes(frame: pd.DataFrame, quantity: str, drl: float | None, typical: float | None) -> str:
    """Box plots per room from precomputed statistics, with the DRL and typical value lines."""
    factor, label = display(quantity)
    data = []
    for row in frame.itertuples():
        name = f"{row.device_name} (n={row.n})"
        data.append(
            {
                "type": "box",
                "name": name,
                "x": [name],
                "q1": [row.q1 * factor],
                "median": [row.median * factor],
                "q3": [row.q3 * factor],
                "lowerfence": [row.lower_fence * factor],
                "upperfence": [row.upper_fence * factor],
                "showlegend": False,
            }
        )
    shapes, annotations = [], []
    for value, text, dash in ((drl, "DRL", "dash"), (typical, "local typical value", "dot")):
        if value is not None:  # a horizontal line across the plot, labelled top left
            y = value * factor
            shapes.append(
                {
                    "type": "line",
                    "xref": "x domain",
                    "x0": 0,
                    "x1": 1,
                    "yref": "y",
                    "y0": y,
                    "y1": y,
                    "line": {"dash": dash},
                }
            )
            annotations.append(
                {
                    "text": f"{text} {y:.4g}",
                    "showarrow": False,
                    "xref": "x domain",
                    "x": 0,
                    "xanchor": "left",
                    "yref": "y",
                    "y": y,
                    "yanchor": "bottom",
                }
            )
    layout = _layout(f"{label} per room", yaxis_title=label)
    if shapes:
        layout.update(shapes=shapes, annotations=annotations)
    return _json(data, layout)


def histogram(frame: pd.DataFrame, quantity: str) -> str:
    """The precomputed histogram as a filled step outline over its bin edges.

    Bins of positive doses are log-spaced (:func:`kerma.services.dashboard`), so the dose
    axis is logarithmic then: every bin has the same width on screen, as it was made.
    Bins that reach zero or below (linear bins) keep a linear axis.
    """
    factor, label = display(quantity)
    edges = [*(frame["bin_from"] * factor), *(frame["bin_to"].iloc[-1:] * factor)]
    counts = [*frame["n"], *frame["n"].iloc[-1:]]  # the last edge closes the last step
    trace = {
        "type": "scatter",
        "x": edges,
        "y": counts,
        "mode": "lines",
        "line": {"shape": "hv"},
        "fill": "tozeroy",
        "hovertemplate": "from %{x:.4g}: %{y} samples<extra></extra>",
    }
    log_axis = len(frame) > 0 and bool((frame["bin_from"] > 0).all())
    layout = _layout(
        f"Distribution of {label}",
        xaxis={"type": "log"} if log_axis else {},
        xaxis_title=label,
        yaxis_title="samples",
    )
    return _json([trace], layout)


def monthly(frame: pd.DataFrame, quantity: str) -> str:
    """Median per month (line), with the number of samples in the hover."""
    factor, label = display(quantity)
    trace = {
        "type": "scatter",
        "x": _values(frame["month"]),
        "y": _values(frame["median"] * factor),
        "mode": "lines+markers",
        "text": [f"n={n}" for n in frame["n"]],
    }
    return _json([trace], _layout(f"Median {label} per month", yaxis_title=label))


def scatter(frame: pd.DataFrame, quantity: str, x_axis: str) -> str:
    """Dose against weight (kg) or water-equivalent diameter (mm), one colour per room."""
    factor, label = display(quantity)
    x_label = "patient weight (kg)" if x_axis == "patient_weight_kg" else "patient size Dw (mm)"
    data = [
        {
            "type": "scatter",
            "x": _values(rows["x"]),
            "y": _values(rows["y"] * factor),
            "mode": "markers",
            "name": str(room),
            "marker": {"size": 5, "opacity": 0.6},
        }
        for room, rows in frame.groupby("device_name", sort=True)
    ]
    layout = _layout(f"{label} against {x_label}", xaxis_title=x_label, yaxis_title=label)
    return _json(data, layout)


def workload(frame: pd.DataFrame) -> str:
    """Heat map of studies per weekday and hour."""
    grid = frame.pivot(index="weekday", columns="hour", values="n_studies").reindex(range(7))
    trace = {
        "type": "heatmap",
        "z": grid.to_numpy().tolist(),
        "x": list(grid.columns),
        "y": list(WEEKDAYS),
        # plotly's colour-brewer Blues (light to dark), not plotly.js's own "Blues" name
        "colorscale": make_colorscale(sequential.Blues),
    }
    return _json([trace], _layout("Workload by weekday and hour", xaxis_title="hour"))

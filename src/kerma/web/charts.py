"""Plotly figures of the dashboard, as JSON for ``Plotly.newPlot`` in the page.

Pure functions from the services' frames to figure JSON (``plotly.io.to_json``); the
page loads plotly.js from the installed ``plotly`` package (``/static/vendor``), never
from a CDN. Values are shown in display units (:data:`kerma.units.QUANTITIES`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from kerma.units import QUANTITIES

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 40, "b": 60},
    "height": 380,
}


def display(name: str) -> tuple[float, str]:
    """Return (factor from canonical to display unit, "label (display unit)") of a quantity."""
    q = QUANTITIES.get(name)
    if q is None:
        return 1.0, name
    return q.factor, f"{q.label} ({q.display_unit})"


def _json(fig: go.Figure) -> str:
    """Return the figure as JSON for the page."""
    # "</" escaped so that no text in the figure can end the page's <script> element
    return str(pio.to_json(fig, validate=False)).replace("</", "<\\/")


def studies_per_month(frame: pd.DataFrame) -> str:
    """Stacked bars: studies per month (x) and modality (colour)."""
    fig = go.Figure()
    for modality, rows in frame.groupby("modality", sort=True):
        fig.add_bar(x=rows["month"], y=rows["n_studies"], name=str(modality) or "?")
    fig.update_layout(barmode="stack", title="Studies per month", **_LAYOUT)
    return _json(fig)


def boxes(frame: pd.DataFrame, quantity: str, drl: float | None, typical: float | None) -> str:
    """Box plots per room from precomputed statistics, with the DRL and typical value lines."""
    factor, label = display(quantity)
    fig = go.Figure()
    for row in frame.itertuples():
        fig.add_trace(
            go.Box(
                name=f"{row.device_name} (n={row.n})",
                x=[f"{row.device_name} (n={row.n})"],
                q1=[row.q1 * factor],
                median=[row.median * factor],
                q3=[row.q3 * factor],
                lowerfence=[row.lower_fence * factor],
                upperfence=[row.upper_fence * factor],
                showlegend=False,
            )
        )
    for value, text, dash in ((drl, "DRL", "dash"), (typical, "local typical value", "dot")):
        if value is not None:
            fig.add_hline(
                y=value * factor,
                line_dash=dash,
                annotation_text=f"{text} {value * factor:.4g}",
                annotation_position="top left",
            )
    fig.update_layout(title=f"{label} per room", yaxis_title=label, **_LAYOUT)
    return _json(fig)


def histogram(frame: pd.DataFrame, quantity: str) -> str:
    """The precomputed histogram as a filled step outline over its bin edges.

    Bins of positive doses are log-spaced (:func:`kerma.services.dashboard`), so the dose
    axis is logarithmic then: every bin has the same width on screen, as it was made.
    Bins that reach zero or below (linear bins) keep a linear axis.
    """
    factor, label = display(quantity)
    edges = [*(frame["bin_from"] * factor), *(frame["bin_to"].iloc[-1:] * factor)]
    counts = [*frame["n"], *frame["n"].iloc[-1:]]  # the last edge closes the last step
    fig = go.Figure(
        go.Scatter(
            x=edges,
            y=counts,
            mode="lines",
            line_shape="hv",
            fill="tozeroy",
            hovertemplate="from %{x:.4g}: %{y} samples<extra></extra>",
        )
    )
    log_axis = len(frame) > 0 and bool((frame["bin_from"] > 0).all())
    fig.update_layout(
        title=f"Distribution of {label}", xaxis_title=label, yaxis_title="samples", **_LAYOUT
    )
    if log_axis:
        fig.update_xaxes(type="log")
    return _json(fig)


def monthly(frame: pd.DataFrame, quantity: str) -> str:
    """Median per month (line), with the number of samples in the hover."""
    factor, label = display(quantity)
    fig = go.Figure(
        go.Scatter(
            x=frame["month"],
            y=frame["median"] * factor,
            mode="lines+markers",
            text=[f"n={n}" for n in frame["n"]],
        )
    )
    fig.update_layout(title=f"Median {label} per month", yaxis_title=label, **_LAYOUT)
    return _json(fig)


def scatter(frame: pd.DataFrame, quantity: str, x_axis: str) -> str:
    """Dose against weight (kg) or water-equivalent diameter (mm), one colour per room."""
    factor, label = display(quantity)
    x_label = "patient weight (kg)" if x_axis == "patient_weight_kg" else "patient size Dw (mm)"
    fig = go.Figure()
    for room, rows in frame.groupby("device_name", sort=True):
        fig.add_scatter(
            x=rows["x"],
            y=rows["y"] * factor,
            mode="markers",
            name=str(room),
            marker={"size": 5, "opacity": 0.6},
        )
    fig.update_layout(
        title=f"{label} against {x_label}", xaxis_title=x_label, yaxis_title=label, **_LAYOUT
    )
    return _json(fig)


def workload(frame: pd.DataFrame) -> str:
    """Heat map of studies per weekday and hour."""
    grid = frame.pivot(index="weekday", columns="hour", values="n_studies").reindex(range(7))
    fig = go.Figure(
        go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=list(WEEKDAYS), colorscale="Blues")
    )
    fig.update_layout(title="Workload by weekday and hour", xaxis_title="hour", **_LAYOUT)
    return _json(fig)

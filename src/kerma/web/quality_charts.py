"""Plotly figures of the quality page (issue #17): pure functions, DataFrame -> Figure.

Kept apart from the dashboard's ``charts.py`` (owned by the pages work) so both can be
merged without conflict; the functions follow the same rule: no data access here.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from kerma.units import GYM2_TO_GYCM2


def dose_di_figure(points: pd.DataFrame) -> go.Figure:
    """Return the KAP-against-DI scatter, one trace per protocol.

    Parameters
    ----------
    points : pandas.DataFrame
        :func:`kerma.services.quality.dose_di_points` (``dap_gym2`` in Gy·m², shown in
        Gy·cm²; AGD in mGy where an image has no KAP).
    """
    fig = go.Figure()
    for protocol, group in points.groupby("protocol", dropna=False, sort=True):
        kap = pd.to_numeric(group["dap_gym2"], errors="coerce") * GYM2_TO_GYCM2
        fig.add_trace(
            go.Scatter(
                x=group["deviation_index"],
                y=kap.where(kap.notna(), pd.to_numeric(group["agd_mgy"], errors="coerce")),
                mode="markers",
                name=str(protocol) or "(no protocol)",
                text=group["room"],
                hovertemplate="DI %{x:.2f}<br>dose %{y:.3g}<br>%{text}"
                "<extra>%{fullData.name}</extra>",
            )
        )
    for x in (-3, -1, 1, 3):
        fig.add_vline(x=x, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Dose against deviation index, per protocol",
        xaxis_title="Deviation index (IEC 62494-1)",
        yaxis_title="KAP (Gy·cm²) — AGD (mGy) for mammography",
        legend_title="Protocol",
    )
    return fig


def dose_noise_figure(series: pd.DataFrame) -> go.Figure:
    """Return the CTDIvol-against-global-noise scatter, one trace per protocol.

    Parameters
    ----------
    series : pandas.DataFrame
        :func:`kerma.services.quality.noise_by_series`.
    """
    fig = go.Figure()
    data = series.dropna(subset=["global_noise_hu"])
    for protocol, group in data.groupby("protocol_name", dropna=False, sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["global_noise_hu"],
                y=group["ctdivol_mgy"],
                mode="markers",
                name=str(protocol) if isinstance(protocol, str) else "(no protocol)",
                text=group["station_name"],
                hovertemplate="noise %{x:.1f} HU<br>CTDIvol %{y:.2f} mGy<br>%{text}"
                "<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        title="CTDIvol against global noise level, per protocol",
        xaxis_title="Global noise level (HU), Christianson et al. 2015",
        yaxis_title="CTDIvol (mGy)",
        legend_title="Protocol",
    )
    return fig

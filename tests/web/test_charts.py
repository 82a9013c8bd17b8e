"""The analysis page's charts (kerma.web.charts): axes and data as drawn."""

from __future__ import annotations

import json

import pandas as pd

from kerma.web import charts


def test_log_spaced_histogram_is_drawn_on_a_log_axis() -> None:
    """Log-spaced bins of positive doses: log dose axis, one step per bin over its edges,
    in display units (KAP Gy·m² → Gy·cm²)."""
    frame = pd.DataFrame(
        {"bin_from": [1e-4, 1e-3, 1e-2], "bin_to": [1e-3, 1e-2, 1e-1], "n": [3, 5, 1]}
    )
    fig = json.loads(charts.histogram(frame, "dap_gym2"))
    assert fig["layout"]["xaxis"]["type"] == "log"
    trace = fig["data"][0]
    assert trace["line"]["shape"] == "hv"
    assert trace["x"] == [1.0, 10.0, 100.0, 1000.0]
    assert trace["y"] == [3, 5, 1, 1]


def test_linear_bins_keep_a_linear_axis() -> None:
    """Bins that start at zero (a value ≤ 0 among the samples) are linear: no log axis."""
    frame = pd.DataFrame({"bin_from": [0.0, 2.0], "bin_to": [2.0, 4.0], "n": [3, 5]})
    fig = json.loads(charts.histogram(frame, "ctdivol_mgy"))
    assert fig["layout"].get("xaxis", {}).get("type") != "log"
    assert fig["data"][0]["x"] == [0.0, 2.0, 4.0]

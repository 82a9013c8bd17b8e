"""Fluoroscopy skin dose: PySkinDose peak skin dose and map where it works, else Ka,r.

`PySkinDose <https://github.com/rvbCMTS/PySkinDose>`_ (Johansson et al.; MIT) computes
the skin dose distribution on a phantom (Kerma uses its elliptic-cylinder phantom)
from the irradiation-event geometry of a fluoroscopy RDSR (TID 10003 positioner
angles, table positions, distances, collimated field, filters, Ka,r). Its geometry
model supports only a few devices (Siemens Artis/Axiom and Philips Allura families
in its normalisation settings) and it fails on many real RDSRs, so Kerma runs it in
a **separate process with a timeout** and treats any failure as "not computable".
When it cannot run (not installed, unsupported device, timeout, error), Kerma reports
the **reference point air kerma total** (Ka,r, mGy; IEC 60601-2-43 interventional
reference point, 15 cm from the isocentre towards the focal spot) *labelled as such*,
with the reason: Ka,r is not a skin dose (no backscatter, no table attenuation, no
field overlap or patient position) and usually overestimates the peak skin dose.

PySkinDose is an optional dependency (``pip install kerma[skin]``).

This module must not import ``kerma.db``, ``kerma.web`` or ``kerma.cli``.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Final

import pandas as pd

logger = logging.getLogger(__name__)

METHOD_PYSKINDOSE: Final = "peak skin dose (PySkinDose, elliptic-cylinder phantom)"
METHOD_KAR: Final = "reference point air kerma total (Ka,r) - not a skin dose"

#: Default time limit of one PySkinDose run (s).
DEFAULT_TIMEOUT_S: Final = 180.0


@dataclass
class SkinDoseResult:
    """Skin dose estimate of one fluoroscopy study.

    Attributes
    ----------
    method : str
        ``METHOD_PYSKINDOSE`` or ``METHOD_KAR``.
    peak_skin_dose_mgy : float or None
        Peak skin dose (mGy) from PySkinDose; ``None`` with the Ka,r fallback.
    ka_r_total_mgy : float or None
        Reference point air kerma total (mGy): PySkinDose's sum of event Ka,r, or the
        value given to :func:`estimate_skin_dose`.
    reason : str
        Why PySkinDose was not used (empty when it was).
    dose_map : pandas.DataFrame
        Skin dose per irradiated phantom surface point: ``x_cm``, ``y_cm``, ``z_cm``
        (PySkinDose patient coordinates), ``dose_mgy`` (empty with the fallback).
    axis_centre_cm : tuple of float
        (x, y) of the phantom's long axis (cm), to unwrap the map.
    """

    method: str
    peak_skin_dose_mgy: float | None
    ka_r_total_mgy: float | None
    reason: str = ""
    dose_map: pd.DataFrame = field(default_factory=pd.DataFrame)
    axis_centre_cm: tuple[float, float] = (0.0, 0.0)


def is_pyskindose_available() -> bool:
    """Return whether the optional ``pyskindose`` package is installed."""
    return find_spec("pyskindose") is not None


def _fallback(ka_r_total_mgy: float | None, reason: str) -> SkinDoseResult:
    """Return the Ka,r fallback result with its reason."""
    logger.info("skin dose: Ka,r fallback (%s)", reason)
    return SkinDoseResult(
        method=METHOD_KAR, peak_skin_dose_mgy=None, ka_r_total_mgy=ka_r_total_mgy, reason=reason
    )


def estimate_skin_dose(
    rdsr_path: Path | str,
    *,
    ka_r_total_mgy: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SkinDoseResult:
    """Return the peak skin dose of a fluoroscopy RDSR, or the Ka,r fallback.

    Parameters
    ----------
    rdsr_path : path
        The archived X-Ray Radiation Dose SR (the original object).
    ka_r_total_mgy : float, optional
        The study's Ka,r total (mGy) reported by the fallback.
    timeout_s : float, optional
        Time limit of the PySkinDose run in seconds (default 180).

    Returns
    -------
    SkinDoseResult
        PySkinDose peak skin dose and dose map, or Ka,r with the reason it was used.
        Never raises for a PySkinDose failure.
    """
    if not is_pyskindose_available():
        return _fallback(ka_r_total_mgy, "PySkinDose is not installed (pip install kerma[skin])")
    path = Path(rdsr_path)
    if not path.is_file():
        return _fallback(ka_r_total_mgy, f"no RDSR file at {path}")
    with tempfile.TemporaryDirectory(prefix="kerma-psd-") as work:
        out = Path(work) / "result.json"
        command = [sys.executable, "-m", "kerma.analysis.skin_dose", str(path), str(out)]
        try:
            completed = subprocess.run(
                command, cwd=work, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return _fallback(ka_r_total_mgy, f"PySkinDose did not finish within {timeout_s:g} s")
        if completed.returncode != 0 or not out.is_file():
            last = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return _fallback(ka_r_total_mgy, f"PySkinDose failed: {last[0][:200]}")
        data = json.loads(out.read_text())
    psd = data.get("psd_mgy")
    if psd is None or not math.isfinite(psd):
        return _fallback(ka_r_total_mgy, "PySkinDose returned no peak skin dose")
    return SkinDoseResult(
        method=METHOD_PYSKINDOSE,
        peak_skin_dose_mgy=float(psd),
        ka_r_total_mgy=data.get("air_kerma_mgy", ka_r_total_mgy),
        dose_map=pd.DataFrame(
            data.get("dose_map", []), columns=["x_cm", "y_cm", "z_cm", "dose_mgy"]
        ),
        axis_centre_cm=tuple(data.get("axis_centre_cm", (0.0, 0.0))),
    )


def skin_dose_fallback_frame(samples: pd.DataFrame, reason: str) -> pd.DataFrame:
    """Return the Ka,r fallback for every fluoroscopy study of a sample frame.

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame (:func:`kerma.analysis.frames.build_dose_samples`).
    reason : str
        Why no PySkinDose value is given.

    Returns
    -------
    pandas.DataFrame
        One row per RF/XA study: ``study_id``, ``device_name``, ``method``
        (``METHOD_KAR``), ``peak_skin_dose_mgy`` (NaN), ``ka_r_total_mgy`` (mGy),
        ``reason``.
    """
    fluoro = samples[samples["modality_family"] == "RF/XA"]
    return pd.DataFrame(
        {
            "study_id": fluoro["study_id"].to_numpy(),
            "device_name": fluoro["device_name"].to_numpy(),
            "method": METHOD_KAR,
            "peak_skin_dose_mgy": float("nan"),
            "ka_r_total_mgy": fluoro["ka_r_total_mgy"].to_numpy(),
            "reason": reason,
        }
    )


def skin_dose_map_figure(result: SkinDoseResult, *, title: str = "Skin dose map") -> Any:
    """Return a plotly Figure of the dose map unwrapped around the phantom axis.

    The horizontal axis is the angle around the phantom's long axis (degrees), the
    vertical axis the position along it (cm); colour is skin dose (mGy).

    Raises
    ------
    ValueError
        When the result has no dose map (the Ka,r fallback).
    """
    import plotly.graph_objects as go

    if result.dose_map.empty:
        raise ValueError(f"Unable to draw a skin dose map: {result.reason or 'no map'}.")
    points = result.dose_map
    centre_x, centre_y = result.axis_centre_cm
    angle = [
        math.degrees(math.atan2(y - centre_y, x - centre_x))
        for x, y in zip(points["x_cm"], points["y_cm"], strict=True)
    ]
    figure = go.Figure(
        go.Scatter(
            x=angle,
            y=points["z_cm"],
            mode="markers",
            marker={
                "color": points["dose_mgy"],
                "colorscale": "Jet",
                "showscale": True,
                "colorbar": {"title": "mGy"},
                "size": 6,
            },
        )
    )
    figure.update_layout(
        title=f"{title} - peak {result.peak_skin_dose_mgy:.0f} mGy ({METHOD_PYSKINDOSE})",
        xaxis_title="angle around the phantom axis (deg)",
        yaxis_title="position along the phantom (cm)",
    )
    return figure


def _run_pyskindose(rdsr_path: str, out_path: str) -> None:
    """Run PySkinDose on one RDSR and write psd, Ka,r and the dose map as JSON (child process)."""
    import numpy as np
    import pyskindose
    from pyskindose.main import main
    from pyskindose.settings import PyskindoseSettings

    settings = json.loads((Path(pyskindose.__file__).parent / "settings_example.json").read_text())
    settings["mode"] = "calculate_dose"
    settings["plot"] |= {"plot_dosemap": False, "interactivity": False, "notebook_mode": False}
    settings["corrections_db_path"] = str(Path(out_path).parent / "corrections.db")
    output = main(
        file_path=rdsr_path, settings=PyskindoseSettings(settings=settings, output_format="dict")
    )
    surface = np.asarray(output["patient"]["patient"]["r_ref"], dtype=float)
    dose_map = [
        [*surface[int(index)].tolist(), float(dose)]
        for index, dose in output.get("dose_map", [])
        if 0 <= int(index) < len(surface)
    ]
    Path(out_path).write_text(
        json.dumps(
            {
                "psd_mgy": float(output["psd"]),
                "air_kerma_mgy": float(output["air_kerma"]),
                "dose_map": dose_map,
                "axis_centre_cm": [float(surface[:, 0].mean()), float(surface[:, 1].mean())],
            }
        )
    )


if __name__ == "__main__":  # pragma: no cover - run by estimate_skin_dose in a child process
    logging.disable(logging.WARNING)
    _run_pyskindose(sys.argv[1], sys.argv[2])

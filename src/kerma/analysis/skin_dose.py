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

Over a registry, :func:`kerma.services.skin.estimate_study_skin_doses` estimates every
stored fluoroscopy study that lacks an estimate, stores it (table
``skin_dose_estimate``), writes the skin dose map under
``<archive_dir>/skin_dose_maps/`` (:func:`write_skin_dose_map`) and flags the studies
that reach an NCRP Report No. 168 (2010) substantial radiation dose level (SRDL,
thresholds from the packaged ``alert_levels.csv``, :func:`add_srdl_flags`) for patient
follow-up.

PySkinDose is an optional dependency (``pip install "kerma[skin]"``; from a source
checkout ``pip install -e ".[skin]"``).

Never touches the registry. May import ``kerma.records``, ``kerma.units``,
``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Final

import pandas as pd

from kerma.errors import ConfigurationError
from kerma.files import make_private_dirs, open_private, write_private_bytes
from kerma.units import UCUM_GY, UCUM_GYM2, UCUM_MGY, UCUM_S, conversion_factor

logger = logging.getLogger(__name__)

#: Modalities of fluoroscopy / interventional studies.
FLUORO_MODALITIES: Final = frozenset({"RF", "XA"})

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
    dose_rp_total_gy : float or None
        Reference point air kerma total (Gy): PySkinDose's sum of event Ka,r, or the
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
    dose_rp_total_gy: float | None
    reason: str = ""
    dose_map: pd.DataFrame = field(default_factory=pd.DataFrame)
    axis_centre_cm: tuple[float, float] = (0.0, 0.0)


#: Fallback reason when PySkinDose is not installed (retried once it is installed).
NOT_INSTALLED_REASON: Final = (
    'PySkinDose is not installed (pip install "kerma[skin]"; from a source checkout: '
    'pip install -e ".[skin]")'
)

#: Start of the fallback reason when PySkinDose ran out of time (always retried).
TIMEOUT_REASON_START: Final = "PySkinDose did not finish within"

#: Start of the fallback reason of an unexpected failure (``kerma.services.skin``): its
#: cause (a missing file, a full disk, a busy machine) may be gone, so it is retried.
FAILED_REASON_START: Final = "skin dose estimate failed"

#: Start of the reason of a PySkinDose error Kerma does not recognise
#: (:func:`explain_pyskindose_failure`); retried when the error is about the
#: environment (files, permissions, memory), not the RDSR.
UNKNOWN_FAILURE_START: Final = "PySkinDose failed on this RDSR"
ENVIRONMENT_ERRORS: Final = (
    "FileNotFoundError",
    "PermissionError",
    "OSError",
    "No such file",
    "MemoryError",
)

#: Start of :data:`NOT_INSTALLED_REASON` in this and earlier versions (stored reasons).
_NOT_INSTALLED_START: Final = "PySkinDose is not installed"


def is_transient_fallback(reason: str | None, *, is_installed: bool) -> bool:
    """Return whether a stored Ka,r fallback should be computed again.

    A fallback is transient when its cause may have gone since: PySkinDose was not
    installed and now is (``is_installed``), PySkinDose timed out (the machine may
    have been busy), the estimate failed unexpectedly (:data:`FAILED_REASON_START`), or
    PySkinDose failed on a file, permission or memory error (e.g. an archive path it
    could not open); these are retried on every run. Other reasons (unsupported device,
    missing geometry, no RDSR) stay until ``recompute`` or a new RDSR.

    Parameters
    ----------
    reason : str or None
        The stored ``skin_dose_estimate.reason`` (notes joined by ``"; "``).
    is_installed : bool
        Whether PySkinDose is installed now (:func:`is_pyskindose_available`).

    Returns
    -------
    bool
        ``True`` to recompute the estimate.

    Examples
    --------
    >>> is_transient_fallback(NOT_INSTALLED_REASON, is_installed=True)
    True
    >>> is_transient_fallback(NOT_INSTALLED_REASON, is_installed=False)
    False
    >>> is_transient_fallback("PySkinDose did not finish within 180 s", is_installed=False)
    True
    >>> is_transient_fallback(
    ...     "PySkinDose failed on this RDSR: FileNotFoundError: x.dcm", is_installed=True
    ... )
    True
    """
    notes = (reason or "").split("; ")
    if is_installed and any(n.startswith(_NOT_INSTALLED_START) for n in notes):
        return True
    if any(n.startswith(FAILED_REASON_START) for n in notes):
        return True
    if any(
        n.startswith(UNKNOWN_FAILURE_START) and any(e in n for e in ENVIRONMENT_ERRORS)
        for n in notes
    ):
        return True
    return any(n.startswith(TIMEOUT_REASON_START) for n in notes)


def is_pyskindose_available() -> bool:
    """Return whether the optional ``pyskindose`` package is installed."""
    return find_spec("pyskindose") is not None


def _fallback(dose_rp_total_gy: float | None, reason: str) -> SkinDoseResult:
    """Return the Ka,r fallback result with its reason."""
    logger.info("skin dose: Ka,r fallback (%s)", reason)
    return SkinDoseResult(
        method=METHOD_KAR,
        peak_skin_dose_mgy=None,
        dose_rp_total_gy=dose_rp_total_gy,
        reason=reason,
    )


def estimate_skin_dose(
    rdsr_path: Path | str,
    *,
    dose_rp_total_gy: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SkinDoseResult:
    """Return the peak skin dose of a fluoroscopy RDSR, or the Ka,r fallback.

    Parameters
    ----------
    rdsr_path : path
        The archived X-Ray Radiation Dose SR (the original object).
    dose_rp_total_gy : float, optional
        The study's Ka,r total (Gy) reported by the fallback.
    timeout_s : float, optional
        Time limit of the PySkinDose run in seconds (default 180).

    Returns
    -------
    SkinDoseResult
        PySkinDose peak skin dose and dose map, or Ka,r with the reason it was used.
        Never raises for a PySkinDose failure.
    """
    if not is_pyskindose_available():
        return _fallback(dose_rp_total_gy, NOT_INSTALLED_REASON)
    path = Path(rdsr_path)
    if not path.is_file():
        return _fallback(dose_rp_total_gy, f"no RDSR file at {path}")
    with tempfile.TemporaryDirectory(prefix="kerma-psd-") as work:
        out = Path(work) / "result.json"
        command = [sys.executable, "-m", "kerma.analysis.skin_dose", str(path), str(out)]
        try:
            completed = subprocess.run(
                command, cwd=work, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return _fallback(dose_rp_total_gy, f"{TIMEOUT_REASON_START} {timeout_s:g} s")
        if completed.returncode != 0 or not out.is_file():
            last = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return _fallback(dose_rp_total_gy, explain_pyskindose_failure(last[0]))
        data = json.loads(out.read_text())
    psd = data.get("psd_mgy")
    if psd is None or not math.isfinite(psd):
        return _fallback(dose_rp_total_gy, "PySkinDose returned no peak skin dose")
    if psd <= 0:
        air_kerma = data.get("air_kerma_mgy")
        return _fallback(
            dose_rp_total_gy,
            f"PySkinDose found no irradiated skin on its phantom (peak skin dose 0 mGy "
            f"for an event Ka,r sum of {air_kerma or 0:.3g} mGy): the beams, placed by "
            "the RDSR's table and positioner data, miss PySkinDose's standard patient "
            "(e.g. a head procedure)",
        )
    return SkinDoseResult(
        method=METHOD_PYSKINDOSE,
        peak_skin_dose_mgy=float(psd),
        dose_rp_total_gy=_mgy_to_gy(data.get("air_kerma_mgy"), dose_rp_total_gy),
        dose_map=pd.DataFrame(
            data.get("dose_map", []), columns=["x_cm", "y_cm", "z_cm", "dose_mgy"]
        ),
        axis_centre_cm=tuple(data.get("axis_centre_cm", (0.0, 0.0))),
    )


def _mgy_to_gy(value_mgy: object, default: float | None) -> float | None:
    """Return PySkinDose's air kerma (mGy) in Gy, or ``default`` when it gave none."""
    if value_mgy is None:
        return default
    return float(value_mgy) * float(conversion_factor(UCUM_MGY, UCUM_GY) or 0.0)


#: Known PySkinDose failure messages -> what they mean for a physicist.
_FAILURE_EXPLANATIONS: Final[tuple[tuple[str, str], ...]] = (
    (
        "Could not find settings for the given manufacturer and model",
        "no geometry for this device model in PySkinDose (its normalisation settings "
        "cover a few Siemens Artis/Axiom and Philips Allura models)",
    ),
    (
        "has no attribute 'ManufacturerModelName'",
        "the RDSR has no (0008,1090) 'Manufacturer's Model Name', which PySkinDose needs "
        "to choose the device geometry",
    ),
    (
        "KeyError: 'Manufacturer'",
        "the RDSR has no (0008,0070) 'Manufacturer', which PySkinDose needs to choose the "
        "device geometry",
    ),
    (
        "CollimatedFieldArea",
        "the irradiation events lack the 'Collimated Field Area' (DCM 113790) or field "
        "size PySkinDose needs for the beam geometry",
    ),
)


def explain_pyskindose_failure(message: str) -> str:
    """Return a reason a physicist understands for the last error line of PySkinDose.

    Parameters
    ----------
    message : str
        Last line of PySkinDose's error output, e.g. ``"NotImplementedError: Could not
        find settings for the given manufacturer and model (manufacturer='philips',
        model='azurion')"``.

    Returns
    -------
    str
        ``"PySkinDose cannot be used: <meaning> [<original message>]"`` for known
        failures, else ``"PySkinDose failed on this RDSR: <message>"`` (at most 200
        characters of the message).
    """
    text = message.strip()[:200]
    for pattern, meaning in _FAILURE_EXPLANATIONS:
        if pattern in text:
            return f"PySkinDose cannot be used: {meaning} [{text}]"
    return f"PySkinDose failed on this RDSR: {text}"


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
        (``METHOD_KAR``), ``peak_skin_dose_mgy`` (NaN), ``dose_rp_total_gy`` (Gy),
        ``reason``.
    """
    fluoro = samples[samples["modality_family"] == "RF/XA"]
    return pd.DataFrame(
        {
            "study_id": fluoro["study_id"].to_numpy(),
            "device_name": fluoro["device_name"].to_numpy(),
            "method": METHOD_KAR,
            "peak_skin_dose_mgy": float("nan"),
            "dose_rp_total_gy": fluoro["dose_rp_total_gy"].to_numpy(),
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


# --------------------------------------------------------------- stored studies

#: Folder of the skin dose map files, inside the archive folder.
MAPS_DIR: Final = "skin_dose_maps"

#: Short labels of the methods for tables.
METHOD_LABELS: Final[dict[str, str]] = {
    METHOD_PYSKINDOSE: "PSD (PySkinDose)",
    METHOD_KAR: "Ka,r (not skin dose)",
}

#: ``category`` of the NCRP Report 168 rows in ``alert_levels.csv``.
SRDL_CATEGORY: Final = "substantial radiation dose level (SRDL)"

#: NCRP Report 168 SRDL quantity (``alert_levels.csv`` ``quantity``) -> (column of the
#: skin dose frame, its canonical unit, which the table's unit converts to with
#: :func:`kerma.units.conversion_factor`, factor from that unit to the column's unit,
#: label). Which column each quantity applies to is code; the numbers are the table's.
SRDL_QUANTITIES: Final[dict[str, tuple[str, str, float, str]]] = {
    "Peak skin dose": ("peak_skin_dose_mgy", UCUM_MGY, 1.0, "peak skin dose"),
    "Reference air kerma Ka r (IRP)": ("dose_rp_total_gy", UCUM_GY, 1.0, "Ka,r"),
    "Kerma-area product": ("dap_total_gym2", UCUM_GYM2, 1.0, "KAP"),
    "Fluoroscopy time": ("fluoro_time_total_s", UCUM_S, 1.0, "fluoroscopy time"),
}

#: Columns of :func:`kerma.services.skin.estimate_study_skin_doses` and
#: :func:`kerma.services.skin.stored_skin_doses`.
SKIN_DOSE_COLUMNS: Final[tuple[str, ...]] = (
    "study_id",
    "study_instance_uid",
    "study_date",
    "device_name",
    "standard_exam",
    "method",
    "peak_skin_dose_mgy",
    "dose_rp_total_gy",
    "dap_total_gym2",
    "fluoro_time_total_s",
    "reason",
    "map_path",
    "dose_report_sop_instance_uid",
    "computed_at",
    "srdl_exceeded",
    "srdl_reasons",
)


def add_srdl_flags(
    frame: pd.DataFrame, *, alert_levels: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Return ``frame`` with the NCRP Report 168 substantial radiation dose level flags.

    NCRP Report No. 168 (2010) recommends patient follow-up after a fluoroscopically
    guided procedure that reaches a substantial radiation dose level (SRDL): peak skin
    dose, reference air kerma Ka,r, kerma-area product or fluoroscopy time. The
    thresholds and their comparison operator are read from the packaged
    ``alert_levels.csv`` (rows of category :data:`SRDL_CATEGORY`), not from this code.
    A missing value (e.g. no peak skin dose with the Ka,r fallback) is not flagged.

    Parameters
    ----------
    frame : pandas.DataFrame
        Any frame with the columns of :data:`SRDL_QUANTITIES` that it has:
        ``peak_skin_dose_mgy`` (mGy), ``dose_rp_total_gy`` (Gy), ``dap_total_gym2``
        (Gy·m²), ``fluoro_time_total_s`` (s).
    alert_levels : pandas.DataFrame, optional
        Thresholds in the shape of :func:`kerma.analysis.reference.load_alert_levels`;
        default the packaged table.

    Returns
    -------
    pandas.DataFrame
        A copy with ``srdl_exceeded`` (bool) and ``srdl_reasons`` (str: each level
        reached as ``"<quantity> <value> <unit> >= <threshold> <unit> (<source>,
        <year>, SRDL)"`` in the table's unit, joined with ``"; "``; empty when none).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the table has no SRDL rows, or gives an SRDL in a unit that cannot be
        converted to the column's unit.
    """
    from kerma.analysis.reference import load_alert_levels

    levels = load_alert_levels() if alert_levels is None else alert_levels
    levels = levels[levels["category"] == SRDL_CATEGORY]
    if levels.empty:
        raise ConfigurationError(
            f"Unable to flag high-dose studies: the alert-level table has no rows of "
            f"category {SRDL_CATEGORY!r} (NCRP Report 168). Reinstall Kerma with its "
            "package data."
        )
    out = frame.copy()
    reasons: list[list[str]] = [[] for _ in range(len(out))]
    for level in levels.to_dict("records"):
        spec = SRDL_QUANTITIES.get(str(level["quantity"]))
        if spec is None or spec[0] not in out.columns:
            continue
        column, canonical, to_column, label = spec
        unit = str(level["unit"])
        factor = conversion_factor(unit, canonical)
        if factor is None:
            raise ConfigurationError(
                f"Unable to apply the SRDL for {level['quantity']!r}: the alert-level table "
                f"gives it in {unit!r}, which Kerma cannot convert to {canonical!r}."
            )
        per_table_unit = factor * to_column
        threshold = float(level["threshold_value"]) * per_table_unit
        values = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype=float)
        strict = str(level["operator"]).strip() == ">"
        source = f"{level['source']}, {int(level['year'])}, SRDL"
        for index, value in enumerate(values):
            if not math.isfinite(value):
                continue
            if (value > threshold) if strict else (value >= threshold):
                reasons[index].append(
                    f"{label} {value / per_table_unit:.0f} {unit} {level['operator']} "
                    f"{float(level['threshold_value']):g} {unit} ({source})"
                )
    out["srdl_exceeded"] = [bool(r) for r in reasons]
    out["srdl_reasons"] = ["; ".join(r) for r in reasons]
    return out


@cache
def default_map_format() -> str:
    """Return ``"png"`` when Plotly's static export works (kaleido + Chrome), else ``"html"``."""
    if find_spec("kaleido") is None:
        return "html"
    import plotly.graph_objects as go

    try:
        go.Figure(go.Scatter(x=[0], y=[0])).to_image(format="png", width=40, height=40)
    except Exception as exc:  # boundary with the Chrome process kaleido drives: kaleido and
        # choreographer raise RuntimeError, OSError, ValueError and their own Exception
        # subclasses (DevtoolsProtocolError) when Chrome is missing or fails; any -> HTML
        logger.info("skin dose maps as HTML: Plotly static export unavailable (%s)", exc)
        return "html"
    return "png"


def write_skin_dose_map(
    result: SkinDoseResult,
    folder: Path | str,
    stem: str,
    *,
    title: str = "Skin dose map",
    map_format: str | None = None,
) -> Path:
    """Write the skin dose map of a PySkinDose result as PNG or HTML and return its path.

    Parameters
    ----------
    result : SkinDoseResult
        A PySkinDose result (with a dose map).
    folder : path
        Output folder, created when missing.
    stem : str
        File name without suffix (Kerma uses the Study Instance UID).
    title : str, optional
        Figure title (the peak skin dose is appended).
    map_format : {"png", "html"}, optional
        Default: PNG when Plotly's static export works (kaleido with Chrome), else
        HTML that loads ``plotly.min.js`` from the same folder (written there once);
        also HTML when the PNG export of this map fails (Chrome present but failing,
        e.g. a kaleido/Chromium version mismatch).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        When the result has no dose map (the Ka,r fallback) or the format is unknown.
    OSError
        When the file cannot be written.
    """
    chosen = map_format or default_map_format()
    if chosen not in {"png", "html"}:
        raise ValueError(f"Unable to write a skin dose map as {chosen!r}: use 'png' or 'html'.")
    figure = skin_dose_map_figure(result, title=title)
    image: bytes | None = None
    if chosen == "png":
        try:
            image = figure.to_image(format="png")
        except Exception as exc:  # the Chrome boundary of default_map_format; only when
            # the format was not asked for: a map is never lost to a failed static export
            if map_format is not None:
                raise
            logger.info("skin dose map as HTML: Plotly static export failed (%s)", exc)
            chosen = "html"
    target = Path(folder) / f"{stem}.{chosen}"
    make_private_dirs(target.parent)
    if image is not None:
        write_private_bytes(target, image)
    else:
        from plotly.offline import get_plotlyjs

        with open_private(target, "w", encoding="utf-8") as handle:
            figure.write_html(handle, include_plotlyjs="directory", full_html=True)
        bundle = target.parent / "plotly.min.js"  # what write_html copies for a path
        if not bundle.exists():
            write_private_bytes(bundle, get_plotlyjs().encode("utf-8"))
    return target


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

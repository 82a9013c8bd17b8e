"""Per-exam dose samples: irradiation-event frames in, one row per DRL sample out.

DRLs are defined per examination (CT DLP per complete examination; radiography KAP per
projection; mammography AGD per view; fluoroscopy KAP per procedure), so the analysis
functions (statistics, DRL comparison, effective dose, cumulative dose) work on a
*sample frame* built here from the irradiation events:

========== ============ ==========================================================
family     one row per  dose columns (units in the names)
========== ============ ==========================================================
``CT``     study        ``ct_dlp_total_mgycm`` (sum of event DLP), ``ctdivol_mean_mgy``
                        and ``ctdivol_max_mgy`` (over the study's events with a
                        CTDIvol > 0 that are not localisers, i.e. not 'Constant
                        Angle Acquisition'), ``ssde_mgy`` (mean SSDE of those
                        events that have a patient size, AAPM 204/220),
                        ``ssde_size_mm`` and ``ssde_size_source`` (the size
                        used: ``rdsr``, ``ap_lat``, ``image``, ``localizer``),
                        ``kvp_kv`` (median kVp of those events, first X-ray
                        source; selects the k-factor column)
``RF/XA``  study        ``dap_total_gym2`` (accumulated KAP, Gy·m²), ``dose_rp_total_gy``
                        (accumulated Ka,r, Gy: the maximum over the planes, never
                        their sum), ``fluoro_time_total_s`` when the study frame
                        gives it
``DX``     event        ``dap_gym2`` (Gy·m²), ``dose_rp_gy`` (Gy),
                        ``entrance_dose_mgy``
``MG``     event        ``agd_mgy`` (mGy), ``view`` (``CC``/``MLO``/…),
                        ``compression_thickness_mm``
========== ============ ==========================================================

For CT the patient size of the SSDE comes from the RDSR (Dw, else AP/LAT); when it
gives none, from the ``studies`` frame's ``image_size_mm`` / ``image_size_source``
(the size measured on the study's received CT images, mapped by Study Instance UID:
mean axial Dw, else the localizer effective diameter), when that frame is given.

For RF/XA the study totals are the ``studies`` frame's ``dap_total_gym2`` /
``dose_rp_total_gy`` when it is given: the device's accumulated totals (TID 10002) of
the study's current reports, which add up a study sent as several objects; the sums
over events are used when no report gives a total (Ka,r: per plane, then the larger
plane; the two planes' reference points are different points).

Every dose column is in the canonical unit its name carries (``kerma.units``); tables
convert to display units (KAP in Gy·cm², Ka,r in mGy) through ``kerma.units.QUANTITIES``.
At scale the same samples are read from the study summary columns instead
(:mod:`kerma.services.analytics`); this module is their reference implementation on
whole event frames.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
import pandas as pd

from kerma.analysis.exams import ExamRuleSet, assign_event_exams, assign_study_exams
from kerma.analysis.ssde import ssde_events
from kerma.units import QUANTITIES

logger = logging.getLogger(__name__)

#: Columns describing the sample (study and patient) carried into every sample row.
CONTEXT_COLUMNS: Final[tuple[str, ...]] = (
    "study_id",
    "study_instance_uid",
    "study_date",
    "study_description",
    "device_id",
    "device_name",
    "station_name",
    "patient_pseudonym",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
    "standard_exam",
)

#: Dose quantities of the sample frame and their canonical units (``kerma.units``).
SAMPLE_QUANTITIES: Final[dict[str, str]] = {
    name: QUANTITIES[name].unit
    for name in (
        "ct_dlp_total_mgycm",
        "ctdivol_mean_mgy",
        "ctdivol_max_mgy",
        "dap_total_gym2",
        "dose_rp_total_gy",
        "fluoro_time_total_s",
        "dap_gym2",
        "dose_rp_gy",
        "entrance_dose_mgy",
        "agd_mgy",
        "effective_dose_msv",
        "ssde_mgy",
    )
}

#: Sample-frame column compared with a DRL quantity, per modality family (DRL
#: quantities in canonical names: :func:`kerma.analysis.reference.load_drls`).
DRL_QUANTITY_COLUMNS: Final[dict[tuple[str, str], str]] = {
    ("CT", "dlp_mgycm"): "ct_dlp_total_mgycm",
    ("CT", "ctdivol_mgy"): "ctdivol_mean_mgy",
    ("DX", "dap_gym2"): "dap_gym2",
    ("DX", "esak_mgy"): "entrance_dose_mgy",
    ("RF/XA", "dap_gym2"): "dap_total_gym2",
    ("RF/XA", "dose_rp_gy"): "dose_rp_total_gy",
    ("MG", "agd_mgy"): "agd_mgy",
}

#: The main quantity per family (used to report exams for which no DRL exists).
PRIMARY_QUANTITY: Final[dict[str, str]] = {
    "CT": "dlp_mgycm",
    "DX": "dap_gym2",
    "RF/XA": "dap_gym2",
    "MG": "agd_mgy",
}

#: CT acquisition types that are localisers (excluded from per-study CTDIvol).
LOCALISER_TYPES: Final = frozenset({"constant angle acquisition"})

_FAMILY_BY_MODALITY: Final[dict[str, str]] = {
    "CT": "CT",
    "DX": "DX",
    "CR": "DX",
    "PX": "DX",
    "IO": "DX",
    "MG": "MG",
    "RF": "RF/XA",
    "XA": "RF/XA",
}

#: Report kinds whose events are always CT.
CT_KINDS: Final = frozenset({"rdsr-ct", "header-ct", "dose-sheet-ct"})

#: Study-level modality families (``study.modality_family``): the sample families and
#: ``NM`` (NM and PT administrations), in the order that picks a mixed study's family.
STUDY_FAMILY_PRIORITY: Final[tuple[str, ...]] = ("CT", "RF/XA", "MG", "DX", "NM")


def family_of(modality: object, kind: object = None) -> str | None:
    """Return the modality family of one event or study (``NM`` for NM and PT).

    ``kind`` ``rdsr-ct``, ``header-ct`` and ``dose-sheet-ct`` are always CT.
    """
    if kind is not None and str(kind) in CT_KINDS:
        return "CT"
    text = str(modality or "").upper()
    if text in ("NM", "PT"):
        return "NM"
    return _FAMILY_BY_MODALITY.get(text)


def modality_family(events: pd.DataFrame) -> pd.Series:
    """Return the modality family (``CT``, ``DX``, ``MG``, ``RF/XA`` or ``None``) per event.

    Uses the event's own ``modality``, else ``study_modality``; ``kind`` ``rdsr-ct``,
    ``header-ct`` and ``dose-sheet-ct`` are always CT. NM/PT administrations get
    ``None`` (no DRL tables for them ship).
    """
    modality = _column(events, "modality").fillna(_column(events, "study_modality"))
    family = modality.astype(str).str.upper().map(_FAMILY_BY_MODALITY)
    kind = _column(events, "kind").astype(str)
    family = family.mask(kind.isin(sorted(CT_KINDS)), "CT")
    return family.astype(object).where(family.notna(), None).rename("modality_family")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """Return ``frame[name]`` or an all-missing object column when absent."""
    if name in frame.columns:
        return frame[name]
    return pd.Series(np.nan, index=frame.index, dtype=object, name=name)


def normalise_view(view: pd.Series) -> pd.Series:
    """Return mammography views reduced to ``CC``, ``MLO`` or the view as stored.

    ``RCC``, ``LCC``, ``cranio-caudal`` → ``CC``; ``RMLO``, ``medio-lateral oblique``
    → ``MLO``; ``None`` stays ``None``.
    """
    distinct = pd.Series(view.dropna().unique(), dtype=object)  # a few views, many rows
    text = distinct.astype(str).str.upper()
    reduced = distinct.copy()
    reduced[text.str.contains(r"MLO|MEDIO.?LATERAL OBL", regex=True, na=False)] = "MLO"
    reduced[text.str.contains(r"\bR?L?CC\b|CRANIO.?CAUDAL", regex=True, na=False)] = "CC"
    mapping = dict(zip(distinct, reduced, strict=True))
    present = view.notna().to_numpy()
    values = view.to_numpy(dtype=object)
    return pd.Series(
        [mapping[v] if keep else None for v, keep in zip(values, present, strict=True)],
        index=view.index,
        dtype=object,
    )


def _context(events: pd.DataFrame) -> pd.DataFrame:
    """Return the first row per study of the context columns present in ``events``."""
    present = [c for c in CONTEXT_COLUMNS if c in events.columns]
    return events.drop_duplicates("study_id")[present].set_index("study_id", drop=False)


def _first_source_kvp(sources: object) -> float:
    """Return the kVp of the first X-ray source of a CT event (TID 10014), else NaN."""
    if isinstance(sources, list) and sources and isinstance(sources[0], dict):
        value = sources[0].get("kvp_kv")
        if value is not None:
            return float(value)
    return float("nan")


def image_sizes(studies: pd.DataFrame | None) -> dict[str, dict[object, float]]:
    """Return the image-measured patient sizes of a ``studies`` frame by size source.

    Parameters
    ----------
    studies : pandas.DataFrame or None
        ``Registry.studies()`` shape with ``study_id``, ``image_size_mm`` (mm) and
        ``image_size_source``.

    Returns
    -------
    dict
        ``{"image_dw_mm": {study_id: mm}, "localizer_size_mm": {study_id: mm}}``, the
        keyword arguments of :func:`kerma.analysis.ssde.ssde_events`; empty dicts when
        the frame or its columns are missing.
    """
    out: dict[str, dict[object, float]] = {"image_dw_mm": {}, "localizer_size_mm": {}}
    if studies is None or studies.empty or "image_size_mm" not in studies.columns:
        return out
    size = pd.to_numeric(studies["image_size_mm"], errors="coerce")
    source = _column(studies, "image_size_source")
    for label, key in (("image", "image_dw_mm"), ("localizer", "localizer_size_mm")):
        use = size.notna() & (source == label)
        out[key] = dict(zip(studies.loc[use, "study_id"], size[use].astype(float), strict=True))
    return out


def _ct_study_samples(events: pd.DataFrame, studies: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per CT study with DLP total, mean/max CTDIvol and mean SSDE."""
    ctdivol = pd.to_numeric(_column(events, "ctdivol_mgy"), errors="coerce")
    acquisition = _column(events, "ct_acquisition_type").astype(str).str.lower()
    usable = ctdivol.where((ctdivol > 0) & ~acquisition.isin(LOCALISER_TYPES))
    ssde_frame = ssde_events(events, **image_sizes(studies))
    ssde = ssde_frame["ssde_mgy"].to_numpy()
    kvp = pd.to_numeric(_column(events, "kvp_kv"), errors="coerce").fillna(
        _column(events, "xray_sources").map(_first_source_kvp)
    )
    work = pd.DataFrame(
        {
            "study_id": events["study_id"],
            "dlp_mgycm": pd.to_numeric(_column(events, "dlp_mgycm"), errors="coerce"),
            "ctdivol": usable,
            "ssde": pd.Series(ssde, index=events.index).where(usable.notna()),
            "size_mm": pd.Series(ssde_frame["size_mm"].to_numpy(), index=events.index).where(
                usable.notna()
            ),
            "size_source": pd.Series(
                ssde_frame["size_source"].to_numpy(), index=events.index, dtype=object
            ).where(usable.notna()),
            "kvp": kvp.where(usable.notna()),
        }
    )
    grouped = work.groupby("study_id", sort=False)
    out = pd.DataFrame(
        {
            "ct_dlp_total_mgycm": grouped["dlp_mgycm"].sum(min_count=1),
            "ctdivol_mean_mgy": grouped["ctdivol"].mean(),
            "ctdivol_max_mgy": grouped["ctdivol"].max(),
            "ssde_mgy": grouped["ssde"].mean(),
            "ssde_size_mm": grouped["size_mm"].mean(),
            "ssde_size_source": grouped["size_source"].agg(_first_present),
            "kvp_kv": grouped["kvp"].median(),
            "number_of_events": grouped.size(),
        }
    )
    source = out["ssde_size_source"].astype(object)
    out["ssde_size_source"] = source.where(source.notna(), None)
    return _context(events).join(out, how="inner").reset_index(drop=True)


def _first_present(values: pd.Series) -> object:
    """Return the first value that is not missing, else ``None``."""
    present = values.dropna()
    return present.iloc[0] if len(present) else None


def _plane_key(plane: pd.Series) -> pd.Series:
    """Return ``"B"`` for events on Plane B, else ``"A"`` (Plane A, single plane, unknown)."""
    return plane.astype(str).str.strip().str.casefold().eq("plane b").map({True: "B", False: "A"})


def _projection_study_samples(events: pd.DataFrame, studies: pd.DataFrame | None) -> pd.DataFrame:
    """Return one row per fluoroscopy/interventional study with KAP and Ka,r totals.

    From the events: KAP summed over all events; Ka,r summed per plane and the larger
    plane taken (a reference-point dose is never summed across planes).
    """
    work = pd.DataFrame(
        {
            "study_id": events["study_id"],
            "plane": _plane_key(_column(events, "acquisition_plane")),
            "dap": pd.to_numeric(_column(events, "dap_gym2"), errors="coerce"),
            "dose_rp": pd.to_numeric(_column(events, "dose_rp_gy"), errors="coerce"),
        }
    )
    grouped = work.groupby("study_id", sort=False)
    per_plane = work.groupby(["study_id", "plane"], sort=False)["dose_rp"].sum(min_count=1)
    out = pd.DataFrame(
        {
            "dap_total_gym2": grouped["dap"].sum(min_count=1),
            "dose_rp_total_gy": per_plane.groupby(level=0, sort=False).max(),
            "number_of_events": grouped.size(),
        }
    )
    samples = _context(events).join(out, how="inner").reset_index(drop=True)
    if studies is not None and not studies.empty:
        totals = studies.set_index("study_id")
        ids = samples["study_id"]
        for name in ("dap_total_gym2", "dose_rp_total_gy"):
            if name in totals.columns:
                reported = ids.map(pd.to_numeric(totals[name], errors="coerce"))
                samples[name] = reported.fillna(samples[name])
        if "fluoro_time_total_s" in totals.columns:
            samples["fluoro_time_total_s"] = ids.map(totals["fluoro_time_total_s"])
    return samples


def _event_samples(events: pd.DataFrame, family: str) -> pd.DataFrame:
    """Return one row per radiography or mammography event with its dose."""
    present = [c for c in CONTEXT_COLUMNS if c in events.columns]
    out = events[present].copy()
    out["event_id"] = _column(events, "event_id").to_numpy()
    if "event_standard_exam" in events.columns:
        out["standard_exam"] = events["event_standard_exam"].to_numpy()
    if family == "DX":
        out["dap_gym2"] = pd.to_numeric(_column(events, "dap_gym2"), errors="coerce")
        out["dose_rp_gy"] = pd.to_numeric(_column(events, "dose_rp_gy"), errors="coerce")
        out["entrance_dose_mgy"] = pd.to_numeric(
            _column(events, "entrance_dose_mgy"), errors="coerce"
        )
    else:
        out["agd_mgy"] = pd.to_numeric(_column(events, "agd_mgy"), errors="coerce")
        out["compression_thickness_mm"] = pd.to_numeric(
            _column(events, "compression_thickness_mm"), errors="coerce"
        )
        out["laterality"] = _column(events, "laterality").to_numpy()
    out["view"] = normalise_view(_column(events, "image_view")).to_numpy()
    return out.reset_index(drop=True)


def build_dose_samples(
    events: pd.DataFrame,
    *,
    studies: pd.DataFrame | None = None,
    rules: ExamRuleSet | None = None,
    include_non_patient: bool = False,
) -> pd.DataFrame:
    """Return the DRL sample frame (see the module docstring) from irradiation events.

    Parameters
    ----------
    events : pandas.DataFrame
        ``Registry.events()`` shape: one row per current irradiation event with ``study_id``,
        ``study_date`` (datetime64), ``device_id``, ``device_name``, ``modality``,
        ``study_modality``, ``kind``, ``standard_exam`` and the dose fields
        (``ctdivol_mgy``, ``dlp_mgycm``, ``dap_gym2`` in Gy·m², ``dose_rp_gy`` in Gy,
        ``agd_mgy``, ``image_view`` …).
    studies : pandas.DataFrame, optional
        ``Registry.studies()`` shape; its totals fill projection studies without events,
        and its ``image_size_mm`` / ``image_size_source`` give the SSDE of CT studies
        whose RDSR holds no patient size.
    rules : ExamRuleSet, optional
        When given, standard exams are (re)assigned with these rules instead of using
        the stored ``standard_exam`` column; radiography events get per-projection
        exams (``"Chest PA"``) from event-level rules.
    include_non_patient : bool, optional
        Keep QA/phantom studies (``is_non_patient``); excluded by default.

    Returns
    -------
    pandas.DataFrame
        One row per sample: ``modality_family``, ``sample_level`` (``study`` or
        ``event``), the context columns (``study_id``, ``study_date``, ``device_id``,
        ``device_name``, ``patient_*``, ``standard_exam`` …), ``event_id`` (event
        samples) and the family's dose columns in canonical units
        (``SAMPLE_QUANTITIES``: CT ``ct_dlp_total_mgycm``, ``ctdivol_mean_mgy``,
        ``ctdivol_max_mgy``, ``ssde_mgy`` with ``ssde_size_mm`` (mm) and
        ``ssde_size_source``; RF/XA ``dap_total_gym2`` (Gy·m²), ``dose_rp_total_gy``
        (Gy); DX ``dap_gym2`` (Gy·m²), ``dose_rp_gy`` (Gy); MG ``agd_mgy``, ``view``).
    """
    if events.empty:
        return pd.DataFrame(columns=["modality_family", "sample_level", *CONTEXT_COLUMNS])
    events = events.copy()
    if not include_non_patient and "is_non_patient" in events.columns:
        events = events[~events["is_non_patient"].fillna(False).astype(bool)]
    events["modality_family"] = modality_family(events)
    if rules is not None:
        study_frame = events.drop_duplicates("study_id").copy()
        study_frame["modality"] = study_frame.get("study_modality", study_frame.get("modality"))
        mapped = assign_study_exams(study_frame, events, rules).set_index("study_id")
        events["standard_exam"] = events["study_id"].map(mapped["standard_exam"])
        per_event = events["modality_family"].isin(["DX", "MG"])
        events["event_standard_exam"] = events["standard_exam"]
        if per_event.any():
            events.loc[per_event, "event_standard_exam"] = assign_event_exams(
                events[per_event], rules
            )
    parts = []
    for family, group in events.groupby("modality_family", sort=True):
        if family == "CT":
            part = _ct_study_samples(group, studies)
            level = "study"
        elif family == "RF/XA":
            part = _projection_study_samples(group, studies)
            level = "study"
        else:
            part = _event_samples(group, str(family))
            level = "event"
        part.insert(0, "sample_level", level)
        part.insert(0, "modality_family", family)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["modality_family", "sample_level", *CONTEXT_COLUMNS])
    return pd.concat(parts, ignore_index=True)

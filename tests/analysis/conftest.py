"""Builders of ``Registry.events()``-shaped frames for the analysis tests (no DICOM files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

#: Context columns of ``Registry.events()`` that the builders fill.
_CONTEXT = {
    "accession_number": None,
    "study_time": "10:00:00",
    "requested_procedure_description": None,
    "procedure_reported": None,
    "patient_size_m": None,
    "is_non_patient": False,
    "standard_exam": None,
    "manufacturer": "ACME",
    "manufacturer_model_name": "Model",
    "station_name": None,
    "institution_name": "Hospital",
    "device_serial_number": None,
    "acquisition_protocol": None,
    "target_region": None,
    "anatomical_structure": None,
    "image_view": None,
    "laterality": None,
    "ct_acquisition_type": None,
    "ctdivol_mgy": np.nan,
    "dlp_mgycm": np.nan,
    "ctdiw_phantom_type": None,
    "water_equivalent_diameter_mm": np.nan,
    "dap_gym2": np.nan,
    "dose_rp_gy": np.nan,
    "agd_mgy": np.nan,
    "entrance_dose_mgy": np.nan,
    "compression_thickness_mm": np.nan,
    "kvp_kv": np.nan,
    "xray_sources": None,
}


def make_events(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Return an events frame from per-event dicts, filling the other columns.

    Each dict needs ``study_id``, ``device`` (room name) and ``modality``; the study's
    description, date, patient and device id are derived when not given.
    """
    records = []
    for event_id, row in enumerate(rows, start=1):
        record = dict(_CONTEXT)
        study_id = int(row["study_id"])
        record |= {
            "event_id": event_id,
            "study_id": study_id,
            "study_instance_uid": f"1.2.3.{study_id}",
            "study_date": pd.Timestamp("2026-01-05") + pd.Timedelta(days=study_id % 300),
            "study_description": row.get("study_description", ""),
            "study_modality": row["modality"],
            "modality": row["modality"],
            "patient_pseudonym": f"P{study_id:06d}",
            "patient_age_years": 50.0,
            "patient_sex": "F" if study_id % 2 else "M",
            "patient_weight_kg": 75.0,
            "device_id": row["device"],
            "device_name": row["device"],
            "kind": {"CT": "rdsr-ct"}.get(row["modality"], "rdsr-projection"),
        }
        record |= {k: v for k, v in row.items() if k != "device"}
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    frame["study_date"] = pd.to_datetime(frame["study_date"])
    return frame


def make_ct_events(
    rng: np.random.Generator,
    *,
    n_studies: int,
    rooms: Sequence[str],
    exams: dict[str, tuple[str, float, float]],
    first_study_id: int = 1,
) -> pd.DataFrame:
    """Return a large CT events frame built with numpy (vectorised).

    ``exams`` maps a study description to (standard exam, CTDIvol median in mGy, scan
    length in cm). Each study has a localiser ('Constant Angle Acquisition', CTDIvol
    0.1 mGy, DLP 2 mGy·cm) and 1–3 spiral events with log-normal CTDIvol.
    """
    descriptions = list(exams)
    study_ids = np.arange(first_study_id, first_study_id + n_studies)
    study_room = rng.integers(0, len(rooms), n_studies)
    study_exam = rng.integers(0, len(descriptions), n_studies)
    n_spiral = rng.integers(1, 4, n_studies)
    n_events = n_spiral + 1
    sid = np.repeat(study_ids, n_events)
    index_in_study = np.concatenate([np.arange(k) for k in n_events])
    room = np.repeat(study_room, n_events)
    exam = np.repeat(study_exam, n_events)
    median = np.array([exams[d][1] for d in descriptions])[exam]
    length_cm = np.array([exams[d][2] for d in descriptions])[exam]
    room_factor = 1.0 + 0.15 * room
    ctdivol = median * room_factor * rng.lognormal(0.0, 0.3, sid.size)
    dlp = ctdivol * length_cm * rng.uniform(0.8, 1.2, sid.size)
    localiser = index_in_study == 0
    ctdivol[localiser] = 0.1
    dlp[localiser] = 2.0
    start = pd.Timestamp("2025-01-01")
    offsets = rng.integers(0, 365, n_studies)
    frame = pd.DataFrame(
        {
            "event_id": np.arange(1, sid.size + 1),
            "study_id": sid,
            "study_instance_uid": [f"1.2.3.{s}" for s in sid],
            "study_date": start + pd.to_timedelta(np.repeat(offsets, n_events), unit="D"),
            "study_description": np.array(descriptions, dtype=object)[exam],
            "study_modality": "CT",
            "modality": "CT",
            "patient_pseudonym": [f"P{s % (n_studies // 3 + 1):06d}" for s in sid],
            "patient_age_years": np.repeat(rng.uniform(20, 90, n_studies), n_events),
            "patient_sex": np.repeat(rng.choice(["F", "M"], n_studies), n_events),
            "patient_weight_kg": np.repeat(rng.uniform(45, 120, n_studies), n_events),
            "is_non_patient": False,
            "standard_exam": None,
            "device_id": np.array(rooms, dtype=object)[room],
            "device_name": np.array(rooms, dtype=object)[room],
            "kind": "rdsr-ct",
            "ct_acquisition_type": np.where(
                localiser, "Constant Angle Acquisition", "Spiral Acquisition"
            ),
            "ctdivol_mgy": ctdivol,
            "dlp_mgycm": dlp,
            "ctdiw_phantom_type": "IEC Body Dosimetry Phantom",
            "acquisition_protocol": np.array(descriptions, dtype=object)[exam],
        }
    )
    return frame


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator (fixed seed: reproducible tests)."""
    return np.random.default_rng(20261129)


def csv_row(stem: str, **where: str) -> pd.Series:
    """Return the one shipped reference CSV row matching ``where`` (columns as text)."""
    from kerma.analysis.reference import reference_path

    table = pd.read_csv(reference_path(f"{stem}.csv"), dtype=str, keep_default_na=False)
    mask = pd.Series(True, index=table.index)
    for column, value in where.items():
        mask &= table[column] == value
    assert mask.sum() == 1, (stem, where, int(mask.sum()))
    return table[mask].iloc[0]

"""Tests of CT effective dose k × DLP (kerma.analysis.effective_dose)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from kerma.analysis.effective_dose import (
    NO_COEFFICIENT_NOTE,
    age_group,
    ct_effective_dose,
    select_k_factor,
)
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import reference_path
from tests.analysis.conftest import make_events


def table_k(source_prefix: str, basis: str, region: str, age: str, kvp: str) -> float:
    """Return k from the packaged CSV read with the csv module (independent of pandas)."""
    with reference_path("ct_effective_dose_k_factors.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if (
                row["source"].startswith(source_prefix)
                and row["icrp_basis"] == basis
                and row["body_region"] == region
                and row["age_years"] == age
                and row["kvp"] == kvp
            ):
                return float(row["k_mSv_per_mGycm"])
    raise LookupError(region)


def _ct_sample(exam: str, dlp: float, age: float = 50.0) -> pd.DataFrame:
    """Return a one-study CT sample frame."""
    rows = [
        {
            "study_id": 1,
            "device": "CT1",
            "modality": "CT",
            "standard_exam": exam,
            "ct_acquisition_type": "Spiral Acquisition",
            "ctdivol_mgy": 10.0,
            "dlp_mgycm": dlp,
            "patient_age_years": age,
        }
    ]
    return build_dose_samples(make_events(rows))


class TestEffectiveDose:
    """E = k × DLP with the table's k."""

    def test_adult_head_icrp103(self) -> None:
        """Adult head, ICRP 103 (Lee 2012, 120 kVp): E = DLP × 0.0017."""
        k = table_k("Lee C et al.", "ICRP 103", "Head", "adult", "120")
        out = ct_effective_dose(_ct_sample("CT Head", 850.0))
        assert out.loc[0, "effective_dose_msv"] == pytest.approx(850.0 * k)
        assert out.loc[0, "k_msv_per_mgycm"] == k == 0.0017
        assert out.loc[0, "k_source_ref"] == "LEE2012-T12"
        assert "population-level" in out.loc[0, "effective_dose_method"]

    def test_adult_chest_icrp60(self) -> None:
        """Adult chest, ICRP 60 set (EUR 16262 / AAPM 96): k = 0.014."""
        k = table_k("EUR 16262", "ICRP 60", "Chest", "adult", "120 (nominal)")
        out = ct_effective_dose(_ct_sample("CT Chest", 300.0), k_set="ICRP 60")
        assert out.loc[0, "effective_dose_msv"] == pytest.approx(300.0 * k)
        assert k == 0.014

    def test_child_uses_nearest_age_column(self) -> None:
        """A 4-year-old's chest uses the 5-year column."""
        k = table_k("Lee C et al.", "ICRP 103", "Chest", "5", "120")
        out = ct_effective_dose(_ct_sample("CT Chest", 100.0, age=4.0))
        assert out.loc[0, "k_age_group"] == "5"
        assert out.loc[0, "effective_dose_msv"] == pytest.approx(100.0 * k)

    def test_neck_falls_back_to_icrp103_adult_set(self) -> None:
        """Neck (absent from Lee 2012) uses the ICRP 103 adult set (0.0051, secondary)."""
        row = select_k_factor("CT Neck")
        assert row is not None
        assert row["k_mSv_per_mGycm"] == 0.0051
        assert row["verification"] == "secondary"

    @pytest.mark.parametrize(
        ("indication_exam", "anatomical_exam"),
        [
            ("CT Head (Stroke)", "CT Head"),
            ("CT Abdomen-Pelvis (Appendicitis)", "CT Abdomen-Pelvis"),
            ("CT Chest (Lung cancer)", "CT Chest"),
        ],
    )
    def test_indication_exam_uses_its_anatomical_region(
        self, indication_exam: str, anatomical_exam: str
    ) -> None:
        """A clinical-indication exam takes the k of its anatomical exam (same DLP, same E)."""
        row = select_k_factor(indication_exam, age_years=50.0)
        expected = select_k_factor(anatomical_exam, age_years=50.0)
        assert row is not None and expected is not None
        assert row["k_mSv_per_mGycm"] == expected["k_mSv_per_mGycm"]
        assert row["body_region"] == expected["body_region"]

    def test_kvp_selects_column(self) -> None:
        """A 100 kV study uses the 100 kVp coefficient."""
        row = select_k_factor("CT Head", kvp_kv=98.0)
        assert row is not None
        assert row["kvp"] == "100"

    def test_non_ct_has_no_effective_dose(self) -> None:
        """Radiography gets NaN and the reason."""
        rows = [{"study_id": 1, "device": "DX1", "modality": "DX", "dap_gym2": 1e-5}]
        out = ct_effective_dose(build_dose_samples(make_events(rows)))
        assert np.isnan(out.loc[0, "effective_dose_msv"])
        assert out.loc[0, "effective_dose_method"] == NO_COEFFICIENT_NOTE

    def test_unknown_k_set_raises(self) -> None:
        """An unknown k-set name raises ValueError."""
        with pytest.raises(ValueError, match="Unable to use the k-set 'ICRP 26'"):
            select_k_factor("CT Head", k_set="ICRP 26")

    @pytest.mark.parametrize(
        ("age", "expected"),
        [(None, "adult"), (30.0, "adult"), (18.0, "adult"), (0.2, "0"), (2.9, "1"), (12.6, "15")],
    )
    def test_age_group(self, age: float | None, expected: str) -> None:
        """Ages map to the nearest tabulated column; 18 and over is adult."""
        assert age_group(age, ["0", "1", "5", "10", "15", "adult"]) == expected


class TestKvpFromEvents:
    """The CT sample's kVp (first X-ray source) selects the k-factor column."""

    def test_kvp_from_xray_sources(self) -> None:
        """An 80 kV head study uses the 80 kVp coefficient (Lee 2012: 0.0013)."""
        rows = [
            {
                "study_id": 1,
                "device": "CT1",
                "modality": "CT",
                "standard_exam": "CT Head",
                "ct_acquisition_type": "Spiral Acquisition",
                "ctdivol_mgy": 40.0,
                "dlp_mgycm": 600.0,
                "xray_sources": [{"identification": "A", "kvp_kv": 80.0}],
            }
        ]
        out = ct_effective_dose(build_dose_samples(make_events(rows)))
        k = table_k("Lee C et al.", "ICRP 103", "Head", "adult", "80")
        assert out.loc[0, "kvp_kv"] == 80.0
        assert out.loc[0, "k_kvp"] == "80"
        assert out.loc[0, "effective_dose_msv"] == pytest.approx(600.0 * k)

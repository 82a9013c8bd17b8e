"""Tests of kerma.analysis.stats and the per-exam sample frame (kerma.analysis.frames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerma.analysis.exams import load_exam_rules
from kerma.analysis.frames import build_dose_samples, normalise_view
from kerma.analysis.stats import add_period, dose_statistics, filter_samples, percentile
from tests.analysis.conftest import make_ct_events, make_events

ROOMS = ("CT1", "CT2", "CT3", "CT4", "CT5", "CT6")
EXAMS = {
    "CT HEAD ROUTINE": ("CT Head", 50.0, 15.0),
    "CT THORAX": ("CT Chest", 8.0, 35.0),
    "CT ABDOMEN PELVIS": ("CT Abdomen-Pelvis", 11.0, 45.0),
    "CT CHEST ABDOMEN PELVIS": ("CT Chest-Abdomen-Pelvis", 10.0, 65.0),
}


@pytest.fixture
def big_events(rng: np.random.Generator) -> pd.DataFrame:
    """About 15,000 CT events in 6,000 studies across 6 rooms."""
    return make_ct_events(rng, n_studies=6000, rooms=ROOMS, exams=EXAMS)


class TestLargeDataSet:
    """Statistics on ≥ 10,000 events agree with an independent numpy computation."""

    def test_generated_set_is_large_enough(self, big_events: pd.DataFrame) -> None:
        """The generated set has at least 10,000 events in at least 5 rooms."""
        assert len(big_events) >= 10_000
        assert big_events["device_id"].nunique() >= 5

    def test_per_study_dlp_and_ctdivol_match_numpy(self, big_events: pd.DataFrame) -> None:
        """Per-study DLP total (sum) and mean/max CTDIvol (localisers excluded) match numpy."""
        samples = build_dose_samples(big_events).set_index("study_id")
        sid = big_events["study_id"].to_numpy()
        dlp = big_events["dlp_mgycm"].to_numpy()
        ctdivol = big_events["ctdivol_mgy"].to_numpy()
        spiral = big_events["ct_acquisition_type"].to_numpy() == "Spiral Acquisition"
        size = sid.max() + 1
        dlp_sum = np.bincount(sid, weights=dlp, minlength=size)
        ct_sum = np.bincount(sid[spiral], weights=ctdivol[spiral], minlength=size)
        ct_n = np.bincount(sid[spiral], minlength=size)
        ct_max = np.zeros(size)
        np.maximum.at(ct_max, sid[spiral], ctdivol[spiral])
        ids = samples.index.to_numpy()
        np.testing.assert_allclose(samples["ct_dlp_total_mgycm"], dlp_sum[ids], rtol=1e-12)
        np.testing.assert_allclose(samples["ctdivol_mean_mgy"], ct_sum[ids] / ct_n[ids], rtol=1e-12)
        np.testing.assert_allclose(samples["ctdivol_max_mgy"], ct_max[ids], rtol=1e-12)

    def test_group_statistics_match_numpy(self, big_events: pd.DataFrame) -> None:
        """n, mean, median, p25, p75, p95 per exam and room equal numpy on the raw events."""
        rules = load_exam_rules()
        samples = build_dose_samples(big_events, rules=rules)
        result = dose_statistics(samples, ["standard_exam", "device_name"], ["ct_dlp_total_mgycm"])
        exam_of = {d: e for d, (e, _, _) in EXAMS.items()}
        sid = big_events["study_id"].to_numpy()
        dlp_sum = np.bincount(sid, weights=big_events["dlp_mgycm"].to_numpy())
        first = big_events.drop_duplicates("study_id")
        assert len(result) == len(EXAMS) * len(ROOMS)
        for row in result.itertuples():
            in_group = (first["study_description"].map(exam_of) == row.standard_exam) & (
                first["device_name"] == row.device_name
            )
            values = dlp_sum[first.loc[in_group, "study_id"].to_numpy()]
            assert row.n == values.size
            assert row.mean == pytest.approx(np.mean(values), rel=1e-12)
            assert row.median == pytest.approx(np.median(values), rel=1e-12)
            for name, q in (("p25", 25), ("p75", 75), ("p95", 95)):
                expected = np.percentile(values, q, method="linear")
                assert getattr(row, name) == pytest.approx(expected, rel=1e-12)

    def test_event_level_ctdivol_statistics_match_numpy(self, big_events: pd.DataFrame) -> None:
        """Statistics of any numeric event column by protocol agree with numpy percentiles."""
        spiral = big_events[big_events["ct_acquisition_type"] == "Spiral Acquisition"]
        result = dose_statistics(spiral, ["acquisition_protocol"], ["ctdivol_mgy"])
        for row in result.itertuples():
            values = spiral.loc[
                spiral["acquisition_protocol"] == row.acquisition_protocol, "ctdivol_mgy"
            ].to_numpy()
            assert row.p95 == pytest.approx(np.percentile(values, 95), rel=1e-12)
            assert row.std == pytest.approx(np.std(values, ddof=1), rel=1e-10)


class TestPercentileDefinition:
    """pandas' default quantile is numpy's linear percentile."""

    def test_pandas_quantile_equals_numpy_linear(self, rng: np.random.Generator) -> None:
        """Series.quantile (default) equals numpy.percentile(method='linear')."""
        values = rng.lognormal(3, 1, 101)
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            assert pd.Series(values).quantile(q) == np.percentile(values, q * 100, method="linear")
            assert percentile(values, q * 100) == np.percentile(values, q * 100)

    def test_small_sample_interpolates(self) -> None:
        """p75 of 1..4 is 3.25 (linear interpolation)."""
        frame = pd.DataFrame({"g": ["a"] * 4, "ct_dlp_total_mgycm": [1.0, 2.0, 3.0, 4.0]})
        result = dose_statistics(frame, ["g"])
        assert result.loc[0, "p75"] == 3.25
        assert result.loc[0, "median"] == 2.5


class TestFilters:
    """filter_samples and add_period."""

    def _samples(self) -> pd.DataFrame:
        """Return a small sample frame with known ages, weights, sexes and dates."""
        rows = [
            {
                "study_id": i,
                "device": "CT1" if i < 6 else "CT2",
                "modality": "CT",
                "study_description": "CT HEAD",
                "ctdivol_mgy": 40.0 + i,
                "dlp_mgycm": 600.0 + i,
                "patient_age_years": float(i * 10),
                "patient_weight_kg": 50.0 + i * 5,
                "study_date": pd.Timestamp(2026, 1 + i, 15),
                "is_non_patient": i == 9,
            }
            for i in range(10)
        ]
        return build_dose_samples(make_events(rows), include_non_patient=True)

    def test_non_patient_excluded_by_default(self) -> None:
        """QA/phantom studies are dropped unless asked for."""
        samples = self._samples()
        assert len(filter_samples(samples)) == 9
        assert len(filter_samples(samples, include_non_patient=True)) == 10

    def test_age_band_is_lower_inclusive_upper_exclusive(self) -> None:
        """An age band 20-50 keeps ages 20, 30, 40."""
        kept = filter_samples(self._samples(), age_years=(20, 50))
        assert sorted(kept["patient_age_years"]) == [20.0, 30.0, 40.0]

    def test_date_device_sex_and_weight_filters(self) -> None:
        """Date range, device, sex and weight band combine with AND."""
        samples = self._samples()
        kept = filter_samples(
            samples, date_from="2026-02-01", date_to="2026-06-30", device="CT1", sex="F"
        )
        assert sorted(kept["study_id"]) == [1, 3, 5]
        assert len(filter_samples(samples, weight_kg=(60, None))) == 7

    def test_period_by_month_and_quarter(self) -> None:
        """add_period writes ISO month and quarter labels."""
        samples = self._samples()
        assert add_period(samples, "month")["period"].iloc[0] == "2026-01"
        assert add_period(samples, "quarter")["period"].iloc[4] == "2026Q2"


class TestSampleFrame:
    """build_dose_samples per modality family."""

    def test_projection_units_are_canonical(self) -> None:
        """Fluoroscopy KAP is summed in Gy·m² and Ka,r in Gy (one plane: summed)."""
        rows = [
            {
                "study_id": 1,
                "device": "CATH",
                "modality": "XA",
                "dap_gym2": 0.002,
                "dose_rp_gy": 0.1,
            },
            {
                "study_id": 1,
                "device": "CATH",
                "modality": "XA",
                "dap_gym2": 0.003,
                "dose_rp_gy": 0.2,
            },
        ]
        samples = build_dose_samples(make_events(rows))
        assert samples.loc[0, "dap_total_gym2"] == pytest.approx(0.005)
        assert samples.loc[0, "dose_rp_total_gy"] == pytest.approx(0.3)

    def test_biplane_ka_r_is_the_larger_plane(self) -> None:
        """Ka,r is summed per plane and the larger plane taken; KAP adds up (C30)."""
        rows = [
            {
                "study_id": 1,
                "device": "BIPLANE",
                "modality": "XA",
                "acquisition_plane": plane,
                "dap_gym2": dap,
                "dose_rp_gy": kar,
            }
            for plane, dap, kar in (
                ("Plane A", 0.0002, 0.03),
                ("Plane B", 0.0001, 0.02),
                ("Plane A", 0.0003, 0.03),
                ("Plane B", 0.00015, 0.015),
            )
        ]
        samples = build_dose_samples(make_events(rows))
        assert samples.loc[0, "dap_total_gym2"] == pytest.approx(0.00075)
        assert samples.loc[0, "dose_rp_total_gy"] == pytest.approx(0.06)  # A: 0.06, B: 0.035

    def test_radiography_and_mammography_are_per_event(self) -> None:
        """DX and MG give one sample per event with KAP (Gy·m²) and AGD per view."""
        rows = [
            {"study_id": 1, "device": "DX1", "modality": "DX", "dap_gym2": 1e-5},
            {"study_id": 1, "device": "DX1", "modality": "DX", "dap_gym2": 4e-5},
            {"study_id": 2, "device": "MG1", "modality": "MG", "agd_mgy": 1.2, "image_view": "RCC"},
            {
                "study_id": 2,
                "device": "MG1",
                "modality": "MG",
                "agd_mgy": 1.5,
                "image_view": "LMLO",
            },
        ]
        samples = build_dose_samples(make_events(rows))
        dx = samples[samples["modality_family"] == "DX"]
        mg = samples[samples["modality_family"] == "MG"]
        assert dx["dap_gym2"].tolist() == pytest.approx([1e-5, 4e-5])
        assert mg["view"].tolist() == ["CC", "MLO"]
        assert mg["agd_mgy"].tolist() == [1.2, 1.5]

    def test_normalise_view(self) -> None:
        """Mammography views reduce to CC / MLO."""
        views = pd.Series(["RCC", "L MLO", "cranio-caudal", None, "ML"])
        assert normalise_view(views).tolist() == ["CC", "MLO", "CC", None, "ML"]


class TestMissingGroupKeys:
    """Rows whose group key is missing form their own group with full statistics."""

    def test_unmapped_exam_gets_percentiles(self) -> None:
        """An unmapped exam group has its median and percentiles, as numpy gives them."""
        import numpy as np
        import pandas as pd

        from kerma.analysis.stats import dose_statistics

        values = [1.0, 2.0, 3.0, 10.0]
        frame = pd.DataFrame(
            {"standard_exam": [None] * 4 + ["CT Head"], "dlp_mgycm": [*values, 5.0]}
        )
        out = dose_statistics(frame, by=["standard_exam"], quantities=["dlp_mgycm"])
        row = out[out["standard_exam"] == "(not mapped)"].iloc[0]
        assert row["n"] == 4
        assert row["median"] == np.percentile(values, 50)
        assert row["p75"] == np.percentile(values, 75)

"""Tests of the ICRP 135 DRL comparison (kerma.analysis.drl)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerma.analysis.drl import compare_by_period, compare_with_drls, local_drls
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import load_drls, select_drls
from tests.analysis.conftest import make_events

# EU set (EUCLID, EC RP 195, 2021): CT Head 'Stroke' DLP 807 mGy·cm, CTDIvol 48 mGy;
# EC RP 185 head '1 to <6 years' DLP 505 mGy·cm; EU IC (Siiskonen 2018) PCI 85 Gy·cm².
HEAD_DLP_DRL = 807.0
HEAD_CTDIVOL_DRL = 48.0
PAED_HEAD_1_6_DLP_DRL = 505.0
PCI_KAP_DRL = 85.0


def _ct_head_rows(
    room: str, dlp_values: np.ndarray, ctdivol: float, first_id: int, age: float = 50.0
) -> list[dict]:
    """Return one spiral event per study with the given DLP values (mGy·cm)."""
    return [
        {
            "study_id": first_id + i,
            "device": room,
            "modality": "CT",
            "study_description": "CT HEAD",
            "standard_exam": "CT Head",
            "ct_acquisition_type": "Spiral Acquisition",
            "ctdivol_mgy": ctdivol,
            "dlp_mgycm": float(v),
            "patient_age_years": age,
        }
        for i, v in enumerate(dlp_values)
    ]


@pytest.fixture
def eu_drls() -> pd.DataFrame:
    """The selected EU DRL set."""
    return select_drls(load_drls(), "EU")


@pytest.fixture
def head_samples() -> pd.DataFrame:
    """Room A above the head DLP DRL, room B below, room C with 15 studies only."""
    rows = _ct_head_rows("ROOM A", np.linspace(800, 1000, 25), 55.0, 1)  # median 900
    rows += _ct_head_rows("ROOM B", np.linspace(600, 800, 31), 40.0, 100)  # median 700
    rows += _ct_head_rows("ROOM C", np.linspace(1500, 1600, 15), 90.0, 200)  # n < 20
    rows += _ct_head_rows("ROOM A", np.linspace(500, 700, 21), 30.0, 300, age=3.0)  # paed 600
    return build_dose_samples(make_events(rows))


class TestCompareWithDrls:
    """Typical value = room median, compared with the national DRL (ICRP 135)."""

    def test_known_rooms_exceed_known_drls(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """Room A is above the DLP DRL, room B below, room C has an insufficient sample."""
        result = compare_with_drls(head_samples, eu_drls)
        adult = result[(result["patient_group"] == "adult") & (result["quantity"] == "dlp_mgycm")]
        status = dict(zip(adult["device_name"], adult["status"], strict=True))
        assert status == {"ROOM A": "above", "ROOM B": "below", "ROOM C": "insufficient sample"}
        typical = dict(zip(adult["device_name"], adult["typical_value"], strict=True))
        assert typical["ROOM A"] == pytest.approx(900.0)
        assert typical["ROOM B"] == pytest.approx(700.0)
        assert np.isnan(typical["ROOM C"])
        assert set(adult["drl_value"]) == {HEAD_DLP_DRL}
        assert set(adult["n"]) == {25, 31, 15}
        assert set(adult["drl_region"]) == {"EU"}
        assert adult["source_ref"].str.contains("EUCLID-RP195").all()

    def test_ctdivol_compared_in_mgy(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """CTDIvol typical value (study mean) is compared with the 48 mGy DRL."""
        result = compare_with_drls(head_samples, eu_drls)
        ctdi = result[(result["patient_group"] == "adult") & (result["quantity"] == "ctdivol_mgy")]
        status = dict(zip(ctdi["device_name"], ctdi["status"], strict=True))
        assert status["ROOM A"] == "above"  # 55 > 48
        assert status["ROOM B"] == "below"  # 40 <= 48
        assert set(ctdi["drl_value"]) == {HEAD_CTDIVOL_DRL}
        assert set(ctdi["unit"]) == {"mGy"}

    def test_paediatric_patients_use_age_band(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """3-year-olds are compared with the EU PiDRL '1 to <6 years' band (505 mGy·cm)."""
        result = compare_with_drls(head_samples, eu_drls)
        paed = result[
            (result["patient_group"] == "paediatric")
            & (result["quantity"] == "dlp_mgycm")
            & (result["band_label"] == "1 to <6 years")
        ]
        assert len(paed) == 1
        row = paed.iloc[0]
        assert row["device_name"] == "ROOM A"
        assert row["n"] == 21
        assert row["typical_value"] == pytest.approx(600.0)
        assert row["drl_value"] == PAED_HEAD_1_6_DLP_DRL
        assert row["status"] == "above"
        adult_a = result[
            (result["patient_group"] == "adult")
            & (result["device_name"] == "ROOM A")
            & (result["quantity"] == "dlp_mgycm")
        ]
        assert adult_a["n"].item() == 25  # children are not in the adult sample

    def test_minimum_sample_is_configurable(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """With a minimum of 10, room C gets a typical value and is above."""
        result = compare_with_drls(head_samples, eu_drls, min_sample=10)
        room_c = result[(result["device_name"] == "ROOM C") & (result["quantity"] == "dlp_mgycm")]
        assert room_c["status"].item() == "above"

    def test_fluoroscopy_kap_in_gycm2(self, eu_drls: pd.DataFrame) -> None:
        """PCI KAP totals (Gy·m² → Gy·cm²) are compared with the 85 Gy·cm² DRL."""
        rows = [
            {
                "study_id": i,
                "device": "CATH1",
                "modality": "XA",
                "standard_exam": "PCI",
                "dap_gym2": 0.0045,
            }
            for i in range(1, 21)
        ] + [
            {
                "study_id": i,
                "device": "CATH1",
                "modality": "XA",
                "standard_exam": "PCI",
                "dap_gym2": 0.0050,
            }
            for i in range(1, 21)
        ]
        result = compare_with_drls(build_dose_samples(make_events(rows)), eu_drls)
        row = result[result["standard_exam"] == "PCI"].iloc[0]
        assert row["typical_value"] == pytest.approx(95.0)
        assert row["drl_value"] == PCI_KAP_DRL
        assert row["status"] == "above"

    def test_mammography_needs_fifty_and_uses_view_and_thickness(self) -> None:
        """Mammography: minimum 50 per room; UG DRL by view and thickness band."""
        drls = select_drls(load_drls(), "UG")
        rows = [
            {
                "study_id": i,
                "device": "MG1",
                "modality": "MG",
                "standard_exam": "Mammography screening",
                "image_view": view,
                "agd_mgy": agd,
                "compression_thickness_mm": 50.0,
            }
            for i in range(1, 61)
            for view, agd in (("CC", 1.9), ("MLO", 1.7))
        ]
        samples = build_dose_samples(make_events(rows))
        result = compare_with_drls(samples, drls).set_index("view")
        band = result[result["band_label"] == ""]
        assert band.loc["CC", "drl_value"] == 1.78
        assert band.loc["CC", "status"] == "above"
        assert band.loc["MLO", "status"] == "below"
        assert set(result["n"]) == {60}
        few = compare_with_drls(samples[samples["study_id"] <= 40], drls)
        assert set(few["status"]) == {"insufficient sample"}

    def test_exam_without_drl_is_reported(self, eu_drls: pd.DataFrame) -> None:
        """An exam absent from the set is listed with status 'no DRL in set'."""
        rows = [
            {
                "study_id": i,
                "device": "DX1",
                "modality": "DX",
                "standard_exam": "Chest PA",
                "dap_gym2": 1e-5,
            }
            for i in range(1, 25)
        ]
        result = compare_with_drls(build_dose_samples(make_events(rows)), eu_drls)
        assert result["status"].tolist() == ["no DRL in set"]
        assert result["typical_value"].item() == pytest.approx(0.1)


class TestLocalDrls:
    """Local DRL = 75th percentile of the room medians."""

    def test_local_drl_is_p75_of_room_medians(self, rng: np.random.Generator) -> None:
        """The local DRL equals numpy's 75th percentile of the per-room medians."""
        rows = []
        medians = []
        study = 1
        for room in range(6):
            values = rng.lognormal(6.5 + 0.1 * room, 0.3, 30 + room)
            medians.append(np.median(values))
            rows += _ct_head_rows(f"R{room}", values, 50.0, study)
            study += len(values)
        rows += _ct_head_rows("SMALL", np.full(5, 5000.0), 50.0, study)
        result = local_drls(build_dose_samples(make_events(rows)), quantities=["dlp_total_mgycm"])
        row = result.iloc[0]
        assert row["n_rooms"] == 6
        assert row["local_drl"] == pytest.approx(np.percentile(medians, 75))


class TestConsecutivePeriods:
    """'Consistently above' needs adjacent periods above the DRL."""

    def test_two_consecutive_quarters_flagged(self, eu_drls: pd.DataFrame) -> None:
        """Room X above in Q1 and Q2 is flagged; room Y above in Q1 and Q3 only is not."""
        rows = []
        study = 1
        plan = {"X": (900.0, 900.0, 700.0), "Y": (900.0, 700.0, 900.0)}
        for room, levels in plan.items():
            for quarter, level in enumerate(levels):
                for k in range(20):
                    rows += _ct_head_rows(room, [level], 40.0, study)
                    rows[-1]["study_date"] = pd.Timestamp(2026, 1 + 3 * quarter, 1 + k)
                    study += 1
        samples = build_dose_samples(make_events(rows))
        per_period, summary = compare_by_period(samples, eu_drls, period="quarter", consecutive=2)
        dlp = summary[(summary["quantity"] == "dlp_mgycm") & (summary["patient_group"] == "adult")]
        flags = dict(zip(dlp["device_name"], dlp["consistently_above"], strict=True))
        assert flags == {"X": True, "Y": False}
        runs = dict(zip(dlp["device_name"], dlp["longest_run_above"], strict=True))
        assert runs == {"X": 2, "Y": 1}
        assert sorted(per_period["period"].unique()) == ["2026Q1", "2026Q2", "2026Q3"]

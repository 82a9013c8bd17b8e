"""Tests of cumulative patient dose (kerma.analysis.cumulative)."""

from __future__ import annotations

import pandas as pd
import pytest

from kerma.analysis.cumulative import cumulative_dose, rolling_cumulative_dose


def _samples() -> pd.DataFrame:
    """Patient A: CT on day 0, 200 and 400, fluoro on day 300; patient B: one CT.

    Canonical units: DLP mGy·cm, E mSv, Ka,r Gy (800 mGy), KAP Gy·m² (60 Gy·cm²).
    """
    start = pd.Timestamp("2025-01-01")
    rows = [
        ("A", 1, 0, "CT", 500.0, 5.0, None, None),
        ("A", 2, 200, "CT", 300.0, 3.0, None, None),
        ("A", 3, 300, "RF/XA", None, None, 0.8, 0.006),
        ("A", 4, 400, "CT", 100.0, 1.0, None, None),
        ("B", 5, 390, "CT", 1000.0, 15.0, None, None),
    ]
    return pd.DataFrame(
        [
            {
                "patient_pseudonym": p,
                "study_id": s,
                "study_date": start + pd.Timedelta(days=d),
                "modality_family": f,
                "ct_dlp_total_mgycm": dlp,
                "effective_dose_msv": e,
                "dose_rp_total_gy": kar,
                "dap_total_gym2": kap,
            }
            for p, s, d, f, dlp, e, kar, kap in rows
        ]
    )


class TestCumulativeDose:
    """Sums per patient over the window ending at as_of."""

    def test_window_ending_at_latest_study(self) -> None:
        """365 days ending on day 400 include days 36..400: A's studies 2, 3, 4."""
        out = cumulative_dose(_samples()).set_index("patient_pseudonym")
        a = out.loc["A"]
        assert a["number_of_ct_exams"] == 2
        assert a["ct_dlp_total_mgycm"] == pytest.approx(400.0)
        assert a["ct_effective_dose_msv"] == pytest.approx(4.0)
        assert a["fluoro_studies_dose_rp_total_gy"] == pytest.approx(0.8)  # Gy
        assert a["fluoro_studies_dap_total_gym2"] == pytest.approx(0.006)  # Gy·m²
        assert out.index[0] == "B"  # sorted by effective dose

    def test_window_length_is_configurable(self) -> None:
        """A 500-day window includes A's first CT too."""
        out = cumulative_dose(_samples(), window_days=500).set_index("patient_pseudonym")
        assert out.loc["A", "number_of_ct_exams"] == 3
        assert out.loc["A", "ct_dlp_total_mgycm"] == pytest.approx(900.0)

    def test_as_of_moves_the_window(self) -> None:
        """as_of = day 250 keeps A's studies 1 and 2 only; B has none."""
        out = cumulative_dose(_samples(), as_of=pd.Timestamp("2025-01-01") + pd.Timedelta(days=250))
        assert out["patient_pseudonym"].tolist() == ["A"]
        assert out.loc[0, "ct_effective_dose_msv"] == pytest.approx(8.0)

    def test_rolling_totals_per_study(self) -> None:
        """The trailing window at each of A's studies sums what lies within 365 days."""
        out = rolling_cumulative_dose(_samples())
        a = out[out["patient_pseudonym"] == "A"]
        assert a["ct_dlp_total_mgycm"].tolist() == pytest.approx([500.0, 800.0, 800.0, 400.0])
        assert a["number_of_ct_exams"].tolist() == [1, 2, 2, 2]

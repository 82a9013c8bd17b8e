"""Tests of fluoroscopy skin dose (kerma.analysis.skin_dose)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kerma.analysis.skin_dose import (
    METHOD_KAR,
    METHOD_PYSKINDOSE,
    estimate_skin_dose,
    is_pyskindose_available,
    skin_dose_fallback_frame,
    skin_dose_map_figure,
)

DICOM_DIR = Path(__file__).resolve().parents[3] / "shared" / "dicom"


class TestFallback:
    """Ka,r total, labelled, with the reason, when PySkinDose cannot run."""

    def test_missing_file_gives_kar_with_reason(self, tmp_path: Path) -> None:
        """A missing RDSR gives the Ka,r fallback and says why."""
        result = estimate_skin_dose(tmp_path / "absent.dcm", ka_r_total_mgy=123.0)
        assert result.method == METHOD_KAR
        assert result.peak_skin_dose_mgy is None
        assert result.ka_r_total_mgy == 123.0
        assert result.reason

    def test_not_dicom_fails_safely(self, tmp_path: Path) -> None:
        """A file PySkinDose cannot read gives the fallback, never an exception."""
        path = tmp_path / "junk.dcm"
        path.write_bytes(b"not dicom")
        result = estimate_skin_dose(path, ka_r_total_mgy=5.0, timeout_s=120)
        assert result.method == METHOD_KAR
        assert result.ka_r_total_mgy == 5.0

    def test_fallback_frame_labels_every_fluoro_study(self) -> None:
        """The sample-frame fallback lists Ka,r per RF/XA study with the method label."""
        samples = pd.DataFrame(
            {
                "modality_family": ["RF/XA", "CT"],
                "study_id": [1, 2],
                "device_name": ["CATH", "CT1"],
                "ka_r_total_mgy": [350.0, None],
            }
        )
        frame = skin_dose_fallback_frame(samples, "no archive")
        assert frame["study_id"].tolist() == [1]
        assert frame.loc[0, "method"] == METHOD_KAR
        assert frame.loc[0, "ka_r_total_mgy"] == 350.0

    def test_map_of_fallback_raises(self) -> None:
        """A fallback result has no map to draw."""
        result = estimate_skin_dose("/nonexistent.dcm")
        with pytest.raises(ValueError, match="Unable to draw a skin dose map"):
            skin_dose_map_figure(result)


@pytest.mark.slow
class TestPySkinDose:
    """PySkinDose on the Siemens Axiom example procedure shipped with PySkinDose."""

    def test_supported_device_gives_peak_skin_dose(self) -> None:
        """The peak skin dose is positive, below Ka,r, and the map peak equals it."""
        if not is_pyskindose_available():
            pytest.skip("pyskindose is not installed")
        path = DICOM_DIR / "PSD-siemens_axiom_example_procedure.dcm"
        if not path.is_file():
            pytest.skip("../shared/dicom is not beside the repository")
        expected = json.loads(
            (DICOM_DIR / "expected" / "PSD-siemens_axiom_example_procedure.json").read_text()
        )
        kar_mgy = 1000 * sum(e.get("dose_rp_gy") or 0 for e in expected["events"])
        result = estimate_skin_dose(path, timeout_s=300)
        assert result.method == METHOD_PYSKINDOSE, result.reason
        assert result.ka_r_total_mgy == pytest.approx(kar_mgy)
        assert 0 < result.peak_skin_dose_mgy < kar_mgy
        assert result.dose_map["dose_mgy"].max() == pytest.approx(result.peak_skin_dose_mgy)
        figure = skin_dose_map_figure(result)
        assert figure.data[0].marker.color is not None

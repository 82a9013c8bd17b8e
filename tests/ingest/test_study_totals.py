"""Study KAP and Ka,r totals are the device's accumulated totals (TID 10002)."""

from __future__ import annotations

import pytest

from kerma.analysis.frames import build_dose_samples
from kerma.api import Registry
from tests.conftest import DICOM_DIR

pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom is absent")

#: Philips Allura Clarity: its events sum to less KAP than its accumulated total.
ALLURA = DICOM_DIR / "PSD-philips_allura_clarity_u104.dcm"
#: 'Dose Area Product Total' of Plane A + Plane B in that file (expected/*.json), Gy·m².
ALLURA_DAP_TOTAL_GYM2 = 7.8391324289e-06 + 0.0
ALLURA_DOSE_RP_TOTAL_GY = 0.00070936639118 + 0.0


class TestProjectionStudyTotals:
    """studies() and the DRL samples use the accumulated totals, not event sums."""

    def test_studies_and_samples_use_accumulated_totals(self, registry: Registry) -> None:
        """KAP 0.0784 Gy·cm² and Ka,r 0.709 mGy, as the device reports them."""
        registry.import_paths([ALLURA])
        studies = registry.studies(include_non_patient=True)
        assert studies.iloc[0]["dap_total_gym2"] == pytest.approx(ALLURA_DAP_TOTAL_GYM2)
        assert studies.iloc[0]["dose_rp_total_gy"] == pytest.approx(ALLURA_DOSE_RP_TOTAL_GY)
        events = registry.events(include_non_patient=True)
        assert events["dap_gym2"].sum() < ALLURA_DAP_TOTAL_GYM2  # the events do not add up
        samples = build_dose_samples(events, studies=studies, include_non_patient=True)
        row = samples.iloc[0]
        assert row["dap_total_gym2"] == pytest.approx(ALLURA_DAP_TOTAL_GYM2)
        assert row["dose_rp_total_gy"] == pytest.approx(ALLURA_DOSE_RP_TOTAL_GY)

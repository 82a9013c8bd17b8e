"""Tests of kerma.units: every conversion to a canonical unit."""

from __future__ import annotations

import math

import pytest

from kerma import units


class TestConversionFactor:
    """conversion_factor() maps found units to canonical ones."""

    @pytest.mark.parametrize(
        ("found", "canonical", "factor"),
        [
            ("Gy.m2", units.UCUM_GYM2, 1.0),
            ("dGy.cm2", units.UCUM_GYM2, 1e-5),  # 1 dGy·cm² = 0.1 Gy × 1e-4 m²
            ("uGy.m2", units.UCUM_GYM2, 1e-6),
            ("mGy.cm2", units.UCUM_GYM2, 1e-7),
            ("Gy.cm2", units.UCUM_GYM2, 1e-4),
            ("mGy", units.UCUM_GY, 1e-3),
            ("Gy", units.UCUM_MGY, 1e3),
            ("mGycm", units.UCUM_MGYCM, 1.0),
            ("mGy.cm", units.UCUM_MGYCM, 1.0),
            ("ms", units.UCUM_S, 1e-3),
            ("us", units.UCUM_S, 1e-6),
            ("uA.s", units.UCUM_MAS, 1e-3),
            ("Bq", units.UCUM_MBQ, 1e-6),
            ("cm", units.UCUM_MM, 10.0),
            ("dm", units.UCUM_MM, 100.0),
        ],
        ids=lambda v: str(v),
    )
    def test_known_unit_gives_factor(self, found: str, canonical: str, factor: float) -> None:
        """A known unit converts with the physically right factor."""
        got = units.conversion_factor(found, canonical)
        assert got is not None
        assert math.isclose(got, factor, rel_tol=1e-12)

    def test_unknown_unit_gives_none(self) -> None:
        """A unit that is not of the quantity is not guessed."""
        assert units.conversion_factor("kV", units.UCUM_GYM2) is None
        assert units.conversion_factor("furlong", units.UCUM_MM) is None

    def test_micro_sign_variants_normalised(self) -> None:
        """'µGy·m²'-style spellings with µ and · are read as uGy.m2."""
        assert units.conversion_factor("µGy·m2", units.UCUM_GYM2) == pytest.approx(1e-6)

    def test_header_constants_match_definitions(self) -> None:
        """Header constants follow the PS3.3 attribute units."""
        assert units.DGYCM2_TO_GYM2 == pytest.approx(1e-5)
        assert units.DGY_TO_MGY == pytest.approx(100.0)
        assert units.GYM2_TO_GYCM2 == pytest.approx(1e4)


def test_display_unit_of_quantities_counts_and_other_names() -> None:
    """Pages show a quantity's display unit (KAP Gy·cm², Ka,r mGy), a count no unit
    (UCUM "1"), and any other name the unit it is stored in."""
    from kerma.units import display_unit

    assert display_unit("dap_total_gym2", "Gy·m²") == "Gy·cm²"
    assert display_unit("dose_rp_total_gy", "Gy") == "mGy"
    assert display_unit("ct_dlp_total_mgycm", "mGy·cm") == "mGy·cm"
    assert display_unit("count", "1") == ""
    assert display_unit("peak_window_x", "min") == "min"

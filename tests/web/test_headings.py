"""Column headings of the pages' tables (kerma.web.templating.column_heading)."""

from __future__ import annotations

import pytest

from kerma.web.templating import column_heading


@pytest.mark.parametrize(
    ("name", "heading"),
    [
        ("pulse_width_s", "pulse width (s)"),  # unit suffix in brackets
        ("distance_source_to_detector_mm", "distance source to detector (mm)"),
        ("dap_gym2", "KAP (Gy·cm²)"),  # a quantity: its display label and unit
        ("image_view", "image view"),  # no unit
    ],
)
def test_heading_names_the_unit(name: str, heading: str) -> None:
    """A heading never shows a raw unit suffix ("pulse width s")."""
    assert column_heading(name) == heading

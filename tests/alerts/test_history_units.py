"""The history text of an alert crossing is in display units (as the pages show doses)."""

from __future__ import annotations

from kerma.analysis.alerts import AlertRule
from kerma.services.alerts import _describe


def _rule(quantity: str, unit: str) -> AlertRule:
    return AlertRule(
        rule_id="t",
        pack="test",
        title="t",
        kind="threshold",
        quantity=quantity,
        operator=">",
        unit=unit,
        source="test",
        threshold=0.005,
    )


def test_kap_crossing_is_written_in_gy_cm2() -> None:
    """KAP stored in Gy·m² (0.0123 > 0.005) is written 123 Gy·cm² > 50 Gy·cm², the unit
    of the alert's value line and of `kerma studies` (regression: Gy·m² in the history)."""
    text = _describe(_rule("dap_total_gym2", "Gy·m²"), 0.0123, 0.005)
    assert text == "dap_total_gym2 123 Gy·cm² > 50 Gy·cm²"


def test_count_keeps_the_rule_unit() -> None:
    """A count of studies is a bare number (UCUM "1" is no unit to read: "4 1 > 3 1" was
    written); another quantity outside QUANTITIES keeps the rule's unit."""
    assert _describe(_rule("peak_window_x", "min"), 4, 3) == "peak_window_x 4 min > 3 min"
    assert _describe(_rule("count", "1"), 4, 3) == "count 4 > 3"

"""National DRL survey exports (issue #14, item 4): units and magnitudes by hand.

The open peer exported DAP a million times too small in one survey format. Here the
KAP of one exam and room is set to known values in Gy·m² (the registry's canonical
unit) and the survey must show the hand-computed median and mean in the unit its
header names.
"""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import update

from kerma.db.models import Study
from kerma.export import survey
from kerma.services.filters import StudyFilter
from kerma.services.registry import Registry


def _set(registry: Registry, exam: str, column: str, values: list[float]) -> list[int]:
    """Give the studies of ``exam`` these values of ``column`` (canonical unit); return ids."""
    studies = registry.list_studies(StudyFilter(standard_exams=(exam,)), limit=None).rows
    assert len(studies) == len(values), [s["study_id"] for s in studies]
    with registry.session() as session:
        for study, value in zip(studies, values, strict=True):
            session.execute(
                update(Study).where(Study.id == study["study_id"]).values({column: value})
            )
    return [s["study_id"] for s in studies]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_generic_survey_kap_in_gy_cm2_and_mgy_cm2_by_hand(fresh_registry: Registry) -> None:
    # PCI in the demo's cath lab: three studies; KAP 1.0e-4, 2.5e-4 and 9.0e-4 Gy·m²
    _set(fresh_registry, "PCI", "dap_total_gym2", [1.0e-4, 9.0e-4, 2.5e-4])
    # hand: median 2.5e-4 Gy·m² = 2.5 Gy·cm² = 2,500 mGy·cm²;
    #       mean (1.0 + 9.0 + 2.5) / 3 × 1e-4 Gy·m² = 4.1667 Gy·cm² = 4,166.7 mGy·cm²
    for unit, median, mean in (("Gy.cm2", 2.5, 4.16667), ("mGy.cm2", 2500.0, 4166.67)):
        out = io.StringIO()
        survey.write_generic_survey(fresh_registry, out, dap_unit=unit)
        rows = [r for r in _rows(out.getvalue()) if r["Standard exam"] == "PCI"]
        assert len(rows) == 1
        label = survey.DAP_UNITS[unit]
        assert rows[0]["KAP total n"] == "3"
        assert float(rows[0][f"KAP total median ({label})"]) == pytest.approx(median, rel=1e-5)
        assert float(rows[0][f"KAP total mean ({label})"]) == pytest.approx(mean, rel=1e-5)
        assert "KAP total median (Gy·m²)" not in rows[0]


def test_uk_ct_survey_fields_by_hand(fresh_registry: Registry, tmp_path) -> None:
    ids = _set(fresh_registry, "CT pulmonary angiography", "ct_dlp_total_mgycm", [0.0] * 6)
    # two rooms of three studies; give the first room's studies DLP 300, 500, 1000 mGy·cm
    studies = fresh_registry.list_studies(
        StudyFilter(standard_exams=("CT pulmonary angiography",)), limit=None
    ).rows
    rooms = sorted({s["device_name"] for s in studies})
    first = [s["study_id"] for s in studies if s["device_name"] == rooms[0]]
    assert len(first) == 3 and len(ids) == 6
    with fresh_registry.session() as session:
        for sid, dlp in zip(first, (300.0, 1000.0, 500.0), strict=True):
            session.execute(update(Study).where(Study.id == sid).values(ct_dlp_total_mgycm=dlp))
    out = tmp_path / "uk.csv"
    assert survey.write_uk_ct_survey(fresh_registry, out) >= 2
    with out.open(encoding="utf-8-sig") as f:
        rows = [r for r in csv.DictReader(f) if r["Examination"] == "CT pulmonary angiography"]
    row = next(r for r in rows if r["Scanner"] == rooms[0])
    assert list(row)[:6] == [
        "Examination",
        "Scanner",
        "Station name",
        "Audit period start",
        "Audit period end",
        "Number of patients",
    ]
    assert row["Number of patients"] == "3"
    assert float(row["Median DLP (mGy·cm)"]) == 500.0
    assert float(row["Mean DLP (mGy·cm)"]) == pytest.approx(600.0)
    assert float(row["Median CTDIvol (mGy)"]) > 0
    assert "Median patient weight (kg)" in row


def test_unit_factors_from_the_one_conversion_table() -> None:
    assert survey.unit_factor("dap_total_gym2", "Gy.cm2") == pytest.approx(1e4)
    assert survey.unit_factor("dap_total_gym2", "mGy.cm2") == pytest.approx(1e7)
    assert survey.unit_factor("dap_total_gym2", "uGy.m2") == pytest.approx(1e6)
    assert survey.unit_factor("dose_rp_total_gy", "mGy") == pytest.approx(1e3)
    assert survey.unit_factor("ct_dlp_total_mgycm", "mGy.cm") == 1.0
    with pytest.raises(ValueError, match="not a unit"):
        survey.unit_factor("dap_total_gym2", "mGy.cm")
    with pytest.raises(ValueError, match="Unable to write KAP"):
        survey.generic_fields("Gy.m2.x")

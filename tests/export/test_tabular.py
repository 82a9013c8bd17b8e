"""CSV and XLSX exports (issue #14, item 1): layout, values with units, constant memory."""

from __future__ import annotations

import csv
import io
import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import pytest

from kerma.export import tabular
from kerma.services.filters import StudyFilter
from kerma.services.registry import Registry
from tests.export.conftest import N_STUDIES


def _studies(registry: Registry, flt: StudyFilter | None = None) -> list[dict]:
    return registry.list_studies(flt or StudyFilter(), limit=None).rows


def _sheet(workbook: openpyxl.Workbook, name: str) -> list[dict]:
    rows = list(workbook[name].iter_rows(values_only=True))
    return [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]


def test_xlsx_holds_every_study_and_event_with_units(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "export.xlsx"
    studies = _studies(registry)  # patient studies (the demo has a QA study)
    assert tabular.write_xlsx(registry, out) == len(studies) >= N_STUDIES - 2
    workbook = openpyxl.load_workbook(out, read_only=False)
    assert workbook.sheetnames == [
        "Summary",
        "CT studies",
        "CT events",
        "DX studies",
        "DX events",
        "MG studies",
        "MG events",
        "RF-XA studies",
        "RF-XA events",
    ]
    by_uid = {s["study_instance_uid"]: s for s in studies}
    # CT: one row per study, DLP total in mGy·cm, events to the right
    ct = _sheet(workbook, "CT studies")
    assert len(ct) == sum(s["modality_family"] == "CT" for s in studies) >= 30
    header = next(workbook["CT studies"].iter_rows(values_only=True))
    assert header[-5:] == (
        "E4 Protocol",
        "E4 Acquisition type",
        "E4 Phantom",
        "E4 CTDIvol (mGy)",
        "E4 DLP (mGy·cm)",
    )
    for row in ct:
        study = by_uid[row["Study Instance UID"]]
        assert row["DLP total (mGy·cm)"] == pytest.approx(study["ct_dlp_total_mgycm"])
        assert row["Events"] == study["number_of_events"]
    # the event DLPs of a study add up to its DLP total
    row = ct[0]
    dlps = [row[f"E{i} DLP (mGy·cm)"] for i in range(1, 5) if row.get(f"E{i} DLP (mGy·cm)")]
    assert sum(dlps) == pytest.approx(row["DLP total (mGy·cm)"], rel=1e-4)
    # RF/XA: KAP in Gy·cm² (stored Gy·m²: × 10⁴), Ka,r in mGy (stored Gy: × 10³)
    rf = _sheet(workbook, "RF-XA studies")
    assert len(rf) == sum(s["modality_family"] == "RF/XA" for s in studies) >= 4
    for row in rf:
        study = by_uid[row["Study Instance UID"]]
        assert row["KAP total (Gy·cm²)"] == pytest.approx(study["dap_total_gym2"] * 1e4)
        assert row["Ka,r total (mGy)"] == pytest.approx(study["dose_rp_total_gy"] * 1e3)
        assert 0.01 < row["KAP total (Gy·cm²)"] < 1000  # plausible in Gy·cm², not Gy·m²
    # event-per-row sheets: every current event once
    events = sum(len(_sheet(workbook, n)) for n in workbook.sheetnames if n.endswith("events"))
    assert events == sum(s["number_of_events"] for s in studies)
    rf_events = _sheet(workbook, "RF-XA events")
    # (the totals are the reports' accumulated values, rounded by the device)
    assert sum(r["KAP (Gy·cm²)"] or 0 for r in rf_events) == pytest.approx(
        sum(r["KAP total (Gy·cm²)"] for r in rf), rel=1e-4
    )
    # summary: per family, exam, protocol and device; the events add up
    summary = _sheet(workbook, "Summary")
    assert sum(r["Events"] for r in summary) == events
    assert {r["Modality family"] for r in summary} == {"CT", "DX", "MG", "RF/XA"}


def test_xlsx_follows_the_study_filter_and_canonical_units(
    registry: Registry, tmp_path: Path
) -> None:
    out = tmp_path / "rf.xlsx"
    flt = StudyFilter(modalities=("RF",))
    assert tabular.write_xlsx(registry, out, flt=flt, units="canonical") == len(
        _studies(registry, flt)
    )
    workbook = openpyxl.load_workbook(out)
    assert workbook.sheetnames == ["Summary", "RF-XA studies", "RF-XA events"]
    rows = _sheet(workbook, "RF-XA studies")
    stored = {s["study_instance_uid"]: s["dap_total_gym2"] for s in _studies(registry, flt)}
    assert {r["Study Instance UID"]: r["KAP total (Gy·m²)"] for r in rows} == pytest.approx(stored)


def test_csv_set_has_the_same_rows(registry: Registry, tmp_path: Path) -> None:
    paths = tabular.write_csv(registry, tmp_path / "export.csv")
    names = sorted(p.name for p in paths.values())
    assert "export_summary.csv" in names and "export_RF-XA_studies.csv" in names
    with paths[("CT", "studies")].open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(s["modality_family"] == "CT" for s in _studies(registry))
    assert all(float(r["DLP total (mGy·cm)"]) > 0 for r in rows)
    stream = io.StringIO()
    studies = _studies(registry)
    assert tabular.write_csv_sheet(registry, stream, family="MG", sheet="events") == len(studies)
    mg = list(csv.DictReader(io.StringIO(stream.getvalue())))
    mg_events = sum(s["number_of_events"] for s in studies if s["modality_family"] == "MG")
    assert len(mg) == mg_events >= 16 and all(float(r["AGD (mGy)"]) > 0 for r in mg)


def test_xlsx_to_a_stream_for_a_web_download(registry: Registry, tmp_path: Path) -> None:
    stream = io.BytesIO()
    tabular.write_xlsx(registry, stream, flt=StudyFilter(modalities=("MG",)))
    workbook = openpyxl.load_workbook(io.BytesIO(stream.getvalue()))
    mg = StudyFilter(modalities=("MG",))
    assert len(_sheet(workbook, "MG events")) == sum(
        s["number_of_events"] for s in _studies(registry, mg)
    )


@pytest.mark.slow
def test_xlsx_is_written_in_constant_memory(registry: Registry, tmp_path: Path) -> None:
    """Rows stream in batches and XlsxWriter flushes each row (constant_memory).

    Three checks that fail when the export holds the data: the progress callback sees
    one batch at a time; the workbook has inline strings and no shared-string table
    (XlsxWriter's constant-memory mode); and the peak of Python allocations does not
    grow with the number of studies exported (all studies vs. a quarter of them).
    """
    calls: list[tuple[int, int]] = []
    n = len(_studies(registry))
    tabular.write_xlsx(
        registry, tmp_path / "a.xlsx", batch_size=7, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(min(d, n), n) for d in range(7, n + 7, 7)]
    with zipfile.ZipFile(tmp_path / "a.xlsx") as archive:
        assert "xl/sharedStrings.xml" not in archive.namelist()
        assert b't="inlineStr"' in archive.read("xl/worksheets/sheet2.xml")

    dates = sorted(s["study_date"] for s in _studies(registry))
    quarter = StudyFilter(date_to=dates[len(dates) // 4])

    def peak(flt: StudyFilter | None) -> int:
        tracemalloc.start()
        try:
            tabular.write_xlsx(registry, tmp_path / "m.xlsx", flt=flt, batch_size=5)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(None)  # warm-up: SQL compilation caches, imports
    small, everything = peak(quarter), peak(None)
    # measured: +0.23 MB in constant-memory mode, +1.07 MB when XlsxWriter keeps the
    # cells (constant_memory=False), for the three quarters of the studies added
    assert everything - small < 500_000, (small, everything)

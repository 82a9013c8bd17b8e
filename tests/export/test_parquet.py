"""Incremental, month-partitioned Parquet export (issue #14, item 5), read back with DuckDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import select, update

from kerma.db.models import Study
from kerma.export.parquet import MANIFEST_NAME, read_manifest, write_parquet
from kerma.services.registry import Registry


def _query(folder: Path, sql: str) -> list[tuple]:
    studies = f"read_parquet('{folder}/studies/*/*.parquet', hive_partitioning = true)"
    events = f"read_parquet('{folder}/events/*/*.parquet', hive_partitioning = true)"
    with duckdb.connect() as con:
        return con.sql(sql.format(studies=studies, events=events)).fetchall()


def test_duckdb_gives_the_medians_of_kerma_stats(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    result = write_parquet(registry, folder)
    assert result.studies == 60 and result.months_removed == []
    assert (folder / MANIFEST_NAME).exists()
    months = sorted(p.name for p in (folder / "studies").iterdir())
    assert months and all(m.startswith("study_month=20") for m in months)
    # per-exam medians of CT DLP and RF/XA KAP: DuckDB on the files = kerma stats
    stats = registry.statistics(by=["standard_exam"], families=["CT", "RF/XA"]).table
    expected = {
        (r["standard_exam"], r["quantity"]): r["median"]
        for r in stats.to_dict("records")
        if r["quantity"] in ("ct_dlp_total_mgycm", "dap_total_gym2")
        and r["standard_exam"] != "(not mapped)"  # kerma stats' label of unmapped studies
    }
    got = {}
    for quantity, family in (("ct_dlp_total_mgycm", "CT"), ("dap_total_gym2", "RF/XA")):
        rows = _query(
            folder,
            f"SELECT standard_exam, median({quantity}) FROM {{studies}} "
            f"WHERE modality_family = '{family}' AND NOT is_non_patient "
            f"AND standard_exam IS NOT NULL AND {quantity} IS NOT NULL GROUP BY standard_exam",
        )
        got.update({(exam, quantity): median for exam, median in rows})
    assert len(expected) >= 8
    assert set(got) == set(expected), (set(got) ^ set(expected), got)
    assert got == pytest.approx(expected)
    # events: one row per current event, keyed to their studies, partition column from path
    ((n_events, n_orphans, month_ok),) = _query(
        folder,
        "SELECT count(*), count(*) FILTER (WHERE study_id NOT IN (SELECT study_id FROM "
        "{studies})), bool_and(strftime(study_date, '%Y-%m') = study_month) FROM {events}",
    )
    assert n_events == result.events > 60 and n_orphans == 0 and month_ok


def test_incremental_export_rewrites_only_changed_months(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "pq"
    first = write_parquet(fresh_registry, folder)
    assert first.months_unchanged == 0 and first.months_written
    again = write_parquet(fresh_registry, folder)
    assert again.months_written == [] and again.months_unchanged == len(first.months_written)
    assert read_manifest(folder)["high_water_mark"] == first.high_water_mark

    with fresh_registry.session() as session:
        ids = session.scalars(select(Study.id).order_by(Study.id)).all()
        moved, changed = ids[0], ids[1]
        old_month = session.scalar(select(Study.study_date).where(Study.id == moved))
        # a corrected study date moves a study to another month
        session.execute(
            update(Study).where(Study.id == moved).values(study_date=dt.date(2020, 2, 14))
        )
        # an updated study (e.g. a newer report's totals) changes in place
        session.execute(
            update(Study).where(Study.id == changed).values(study_description="UPDATED")
        )
        changed_month = session.scalar(select(Study.study_date).where(Study.id == changed))
    third = write_parquet(fresh_registry, folder)
    expected = {"2020-02", old_month.strftime("%Y-%m"), changed_month.strftime("%Y-%m")}
    assert set(third.months_written) == expected
    assert third.high_water_mark > first.high_water_mark
    rows = _query(
        folder,
        "SELECT count(*), count(DISTINCT study_id), "
        f"max(study_month) FILTER (WHERE study_id = {moved}), "
        f"max(study_description) FILTER (WHERE study_id = {changed}) FROM {{studies}}",
    )
    assert rows == [(60, 60, "2020-02", "UPDATED")]

    # a study deleted: its month is rewritten without it; an emptied month is removed
    with fresh_registry.session() as session:
        session.execute(
            update(Study).where(Study.id == moved).values(study_date=dt.date(2021, 3, 1))
        )
    fourth = write_parquet(fresh_registry, folder)
    assert fourth.months_removed == ["2020-02"] and fourth.months_written == ["2021-03"]
    assert not (folder / "studies" / "study_month=2020-02").exists()
    assert _query(folder, "SELECT count(*), count(DISTINCT study_id) FROM {studies}") == [(60, 60)]


def test_an_unreadable_manifest_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="Unable to read the export manifest"):
        write_parquet(registry, tmp_path)

"""The 10M-event benchmark's registry copied as further sites (#15, item 5), at small size.

``benchmarks/query_latency.py --replicate-from BASE`` builds BASE events through the
builder and the derive code, then copies them in SQL as further sites of a hospital
group. Here: about 20,000 events copied 3 times on PostgreSQL; counts, unique keys,
every column of the first and last copies (the benchmark's own check), and what the
service layer sees per site.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text

from kerma.db.filters import StudyFilter
from kerma.db.session import make_engine
from kerma.services.registry import Registry
from tests.db_fixtures import fresh_database, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "query_latency.py"


def _benchmark() -> ModuleType:
    """Import ``benchmarks/query_latency.py`` (not a package) by its path."""
    spec = importlib.util.spec_from_file_location("query_latency", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestReplicatedRegistry:
    """A 20,000-event registry and 3 copies as sites 02-04."""

    def test_copies_are_sites_with_equal_derived_values(self, tmp_path: Path) -> None:
        """Each table holds 4 times its base rows, no key twice, each site the same sums."""
        bench = _benchmark()
        with fresh_database("postgresql", tmp_path) as url:
            replicated = bench.build(url, 80_000, 20_000, log=lambda _: None)
            assert replicated is not None
            sizes, check = replicated["sizes"], replicated["verification"]
            assert replicated["copies"] == 3
            assert 1_500 < sizes["study"] < 2_600  # about 9.6 events per study
            for table in bench.REPLICATED_TABLES:
                assert check["counts"][table] == 4 * sizes[table]
            assert check["duplicates"]["dose_report(sop_instance_uid)"] == 0
            assert check["duplicates"]["irradiation_event(study_id, event_key)"] == 0
            assert set(check["unequal_rows"].values()) == {0}
            assert len(check["unequal_rows"]) == 2 * len(bench.REPLICATED_TABLES)
            assert [row["site"] for row in check["per_site"]] == [
                "Site 01", "Site 02", "Site 03", "Site 04",
            ]  # fmt: skip

            engine = make_engine(url)
            with engine.connect() as conn:
                events = conn.execute(text("SELECT count(*) FROM irradiation_event")).scalar()
                keys = conn.execute(
                    text("SELECT count(DISTINCT device_key), count(*) FROM device")
                ).one()
                derived = conn.execute(
                    text(
                        "SELECT count(*) FROM study o JOIN study n ON n.id = o.id + :n * 3 "
                        "WHERE o.id <= :n AND n.standard_exam IS NOT DISTINCT FROM "
                        "o.standard_exam AND n.effective_dose_msv IS NOT DISTINCT FROM "
                        "o.effective_dose_msv AND n.site_id <> o.site_id"
                    ),
                    {"n": sizes["study"]},
                ).scalar()
            engine.dispose()
            assert events == 4 * sizes["irradiation_event"]
            assert 70_000 < events < 90_000
            assert keys == (4 * 24, 4 * 24)
            assert derived == sizes["study"]

            settings = make_settings(url, tmp_path, pseudonym_key=bench.BENCHMARK_KEY)
            with Registry(settings=settings) as registry:
                per_site = [
                    registry.count_studies(StudyFilter(site_names=(f"Site {k:02d}",)))
                    for k in range(1, 5)
                ]
                page = registry.list_studies(StudyFilter(site_names=("Site 03",)), limit=5)
            assert len(set(per_site)) == 1
            assert per_site[0] > 0
            assert page.total == per_site[0]
            assert len(page.rows) == 5
            assert all(row["device_name"].endswith("-S03)") for row in page.rows)

"""The DRL comparison and the statistics computed by PostgreSQL equal the sample-frame path.

The same registry is built on SQLite, where the samples are read and described by
pandas, and on PostgreSQL, where the database groups them and ranks them with
``percentile_cont`` (kerma.db.sample_aggregates) and only one row per room or group
reaches Python. Every output (comparison, local DRLs, sample count, empty reason,
statistics table) must be equal: a synthetic registry of ~3,000 events (the query
benchmark's builder, fixed seed: 24 rooms, patients of every age and some of unknown
age, MG views with thicknesses, three years of dates) compared with DRL sets that
have paediatric age bands, thickness bands and views, and editions in force on part of
the dates; and the crafted registry of eight studies (one sample per room, a study of
unknown age, a child, a QA study).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from benchmarks.query_latency import build_registry

from kerma.errors import NotFoundError
from kerma.services import analytics
from kerma.services.filters import StudyFilter
from kerma.services.registry import Registry
from tests.db_fixtures import fresh_database, make_settings
from tests.services.conftest import build_crafted

pytestmark = pytest.mark.postgres

#: Events of the synthetic registry (about 300 studies).
N_EVENTS = 3000


def _both(folder: Path, fill: Any) -> Iterator[tuple[Registry, Registry]]:
    """Yield a SQLite and a PostgreSQL registry filled alike by ``fill(url, registry)``."""
    with (
        fresh_database("sqlite", folder / "lite") as lite_url,
        fresh_database("postgresql", folder) as pg_url,
    ):
        registries = []
        for url in (lite_url, pg_url):
            registry = Registry(settings=make_settings(url, folder))
            fill(url, registry)
            registry.ensure_exams_current()
            registries.append(registry)
        assert registries[1].settings.database_url.startswith("postgresql")
        yield registries[0], registries[1]
        for registry in registries:
            registry.close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """The benchmark's synthetic registry on SQLite and on PostgreSQL."""
    folder = tmp_path_factory.mktemp("synthetic")
    (folder / "lite").mkdir()
    yield from _both(folder, lambda url, _: build_registry(url, N_EVENTS, log=lambda *a: None))


@pytest.fixture(scope="module")
def crafted_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """The crafted registry of tests/services/conftest.py on SQLite and on PostgreSQL."""
    folder = tmp_path_factory.mktemp("crafted")
    (folder / "lite").mkdir()
    yield from _both(folder, lambda _, registry: build_crafted(registry))


def _drl(registry: Registry, **options: Any) -> analytics.DrlResult:
    """Return the DRL comparison of a registry (the service function, read session)."""
    with registry.read_session() as session:
        return analytics.compare_drls(session, **options)


def _stats(registry: Registry, **options: Any) -> analytics.StatisticsResult:
    """Return the statistics of a registry (the service function, read session)."""
    with registry.read_session() as session:
        return analytics.statistics(session, **options)


def _assert_frames_equal(lite: pd.DataFrame | None, pg: pd.DataFrame | None) -> None:
    """Assert two output frames are equal: values (floats to 1e-9 relative), dtypes, order."""
    if lite is None or pg is None:
        assert lite is None and pg is None
        return
    pd.testing.assert_frame_equal(lite, pg, check_exact=False, rtol=1e-9)


def _assert_same_comparison(lite: analytics.DrlResult, pg: analytics.DrlResult) -> None:
    """Assert two DRL results are equal."""
    _assert_frames_equal(lite.comparison, pg.comparison)
    _assert_frames_equal(lite.local, pg.local)
    _assert_frames_equal(lite.per_period, pg.per_period)
    _assert_frames_equal(lite.period_summary, pg.period_summary)
    assert (lite.n_samples, lite.empty_reason, lite.drl_set) == (
        pg.n_samples,
        pg.empty_reason,
        pg.drl_set,
    )


DRL_CASES = {
    "EU defaults": {"drl_set": "EU"},
    "EU small sample, local": {"drl_set": "EU", "min_sample": 3, "local": True},
    "UK then EU, exclude unknown age": {"drl_set": "UK,EU", "min_sample": 2,
                                        "unknown_age": "exclude"},
    "AU editions": {"drl_set": "AU", "min_sample": 2},
    "DE editions ended": {"drl_set": "DE", "min_sample": 2},
    "UG thickness bands and views": {"drl_set": "UG", "min_sample": 2, "min_sample_mammography": 3},
    "FR from 2019": {"drl_set": "FR", "min_sample": 2, "local": True},
    "dates": {"drl_set": "EU", "min_sample": 2,
              "flt": StudyFilter(date_from=dt.date(2024, 3, 1), date_to=dt.date(2025, 2, 28))},
    "device": {"drl_set": "EU", "min_sample": 1, "flt": StudyFilter(device_name="CT 2")},
    "modality": {"drl_set": "EU", "min_sample": 2, "flt": StudyFilter(modalities=("MG",))},
    "family DX": {"drl_set": "EU", "min_sample": 2, "families": ("DX",)},
    "age band": {"drl_set": "EU", "min_sample": 1,
                 "flt": StudyFilter(age_min_years=1, age_max_years=16)},
    "site without studies": {"drl_set": "EU", "flt": StudyFilter(site_names=("Elsewhere",))},
    "quarters": {"drl_set": "EU", "min_sample": 2, "periods": True},
    "AU months, consecutive 1": {"drl_set": "AU", "min_sample": 1, "periods": True,
                                 "period": "month", "consecutive": 1},
    "UG years, one exam family": {"drl_set": "UG", "min_sample": 2, "min_sample_mammography": 2,
                                  "periods": True, "period": "year", "families": ("MG",)},
}  # fmt: skip


class TestDrlComparisonInDatabase:
    """PostgreSQL's per-room aggregates give the sample-frame comparison."""

    @pytest.mark.parametrize("options", DRL_CASES.values(), ids=DRL_CASES.keys())
    def test_comparison_equals_sample_frame_path(
        self, synthetic: tuple[Registry, Registry], options: dict[str, Any]
    ) -> None:
        """Comparison, local DRLs, sample count and empty reason are equal on both backends."""
        lite, pg = (_drl(r, **options) for r in synthetic)
        _assert_same_comparison(lite, pg)
        if "site_names" not in repr(options.get("flt")):
            assert len(pg.comparison) > 0
        if options.get("periods"):
            assert len(pg.per_period) > 0
            assert pg.period_summary["periods_above"].sum() > 0

    def test_statuses_cover_every_branch(self, synthetic: tuple[Registry, Registry]) -> None:
        """The cases above reach above, below, insufficient and the no-DRL statuses."""
        seen: set[str] = set()
        for options in DRL_CASES.values():
            seen |= set(_drl(synthetic[1], **options).comparison["status"])
        assert {
            analytics.STATUS_ABOVE,
            analytics.STATUS_BELOW,
            analytics.STATUS_INSUFFICIENT,
            analytics.STATUS_NO_DRL,
            analytics.STATUS_NO_EDITION,
        } <= seen

    def test_one_exam_equals_sample_frame_path(self, synthetic: tuple[Registry, Registry]) -> None:
        """With ``exam`` the comparison and the sample count are of that exam only."""
        exam = str(_drl(synthetic[0]).comparison["standard_exam"].iloc[0])
        lite, pg = (_drl(r, exam=exam, min_sample=2, local=True) for r in synthetic)
        _assert_same_comparison(lite, pg)
        assert set(pg.comparison["standard_exam"]) == {exam}

    def test_unknown_exam_raises_the_same_error(self, synthetic: tuple[Registry, Registry]) -> None:
        """An exam no sample has raises NotFoundError listing the exams, on both backends."""
        messages = []
        for registry in synthetic:
            with pytest.raises(NotFoundError, match="is mapped to the exam 'CT Knee'") as err:
                _drl(registry, exam="CT Knee", families=("CT",))
            messages.append(str(err.value))
        assert messages[0] == messages[1]
        assert "of modality CT" in messages[0]

    @pytest.mark.parametrize("min_sample", [1, 20])
    @pytest.mark.parametrize("unknown_age", ["adult", "exclude"])
    def test_one_sample_per_room_equals(
        self, crafted_pair: tuple[Registry, Registry], min_sample: int, unknown_age: str
    ) -> None:
        """One sample per room, unknown age, a child: the same rows on both backends."""
        options = {"min_sample": min_sample, "unknown_age": unknown_age, "local": True,
                   "periods": True}  # fmt: skip
        lite, pg = (_drl(r, **options) for r in crafted_pair)
        _assert_same_comparison(lite, pg)
        assert set(pg.comparison["patient_group"]) == {"adult", "paediatric"}
        assert pg.comparison["n_unknown_age"].sum() >= 1  # the DX study of unknown age

    @pytest.mark.parametrize(
        ("options", "reason"),
        [
            ({"flt": StudyFilter(study_description="QA", include_non_patient=True),
              "families": ("CT",)}, "1 CT studies match the filter, but none is mapped"),
            ({"flt": StudyFilter(date_from=dt.date(2030, 1, 1))},
             "no study in the filter has CT/DX/MG/RF/XA dose values"),
        ],
        ids=["unmapped QA study", "no study"],
    )  # fmt: skip
    def test_empty_reason_equals(
        self, crafted_pair: tuple[Registry, Registry], options: dict[str, Any], reason: str
    ) -> None:
        """Without a comparison row both backends give the same reason (counted in SQL)."""
        lite, pg = (_drl(r, **options) for r in crafted_pair)
        _assert_same_comparison(lite, pg)
        assert pg.comparison.empty
        assert str(pg.empty_reason).startswith(reason)


STATS_CASES = {
    "exam and room": {},
    "no grouping": {"by": ()},
    "month": {"by": ("period",)},
    "quarter and family": {"by": ("period", "modality_family"), "period": "quarter"},
    "week": {"by": ("period",), "period": "week"},
    "year and level": {"by": ("period", "sample_level"), "period": "year"},
    "view and laterality": {"by": ("view", "laterality")},
    "sex and description": {"by": ("patient_sex", "study_description")},
    "station and id": {"by": ("station_name", "device_id")},
    "SSDE size source": {"by": ("standard_exam", "ssde_size_source")},
    "exam only": {"by": ("standard_exam",)},
    "quantities": {"quantities": ["agd_mgy", "dap_gym2", "ct_dlp_total_mgycm"]},
    "MG only": {"families": ("MG",), "by": ("standard_exam", "view")},
    "filters": {"flt": StudyFilter(date_from=dt.date(2024, 6, 1), device_name="DR",
                                   sex="F", weight_min_kg=60)},
    "nothing": {"flt": StudyFilter(site_names=("Elsewhere",))},
}  # fmt: skip


class TestStatisticsInDatabase:
    """PostgreSQL's grouped statistics give the sample-frame table."""

    @pytest.mark.parametrize("options", STATS_CASES.values(), ids=STATS_CASES.keys())
    def test_statistics_equal_sample_frame_path(
        self, synthetic: tuple[Registry, Registry], options: dict[str, Any]
    ) -> None:
        """Table, sample count and families are equal on both backends."""
        lite, pg = (_stats(r, **options) for r in synthetic)
        _assert_frames_equal(lite.table, pg.table)
        assert (lite.n_samples, lite.families) == (pg.n_samples, pg.families)
        if "site_names" not in repr(options.get("flt")):
            assert len(pg.table) > 0

    def test_one_exam_equals_sample_frame_path(self, synthetic: tuple[Registry, Registry]) -> None:
        """With ``exam`` only that exam's samples are described."""
        exam = str(_stats(synthetic[0]).table["standard_exam"].iloc[-1])
        lite, pg = (_stats(r, exam=exam, by=("device_name", "view")) for r in synthetic)
        _assert_frames_equal(lite.table, pg.table)
        assert lite.n_samples == pg.n_samples > 0

    def test_percentiles_are_linear_interpolation(
        self, synthetic: tuple[Registry, Registry]
    ) -> None:
        """The database's median and p95 are numpy's linear percentiles of the samples."""
        pg = _stats(synthetic[1], by=("standard_exam",), families=("CT",)).table
        row = pg[pg["quantity"] == "ct_dlp_total_mgycm"].iloc[0]
        with synthetic[0].read_session() as session:
            samples = analytics.dose_samples(session, families=("CT",))
        values = samples.loc[
            samples["standard_exam"] == row["standard_exam"], "ct_dlp_total_mgycm"
        ].dropna()
        assert row["n"] == len(values) > 1
        assert row["median"] == pytest.approx(values.median(), rel=1e-12)
        assert row["p95"] == pytest.approx(values.quantile(0.95), rel=1e-12)

    @pytest.mark.parametrize("by", [("standard_exam", "device_name"), ("period",), ()])
    def test_one_sample_per_group_equals(
        self, crafted_pair: tuple[Registry, Registry], by: tuple[str, ...]
    ) -> None:
        """One value per group (std missing), unknown sex and exam: equal on both backends."""
        lite, pg = (_stats(r, by=by) for r in crafted_pair)
        _assert_frames_equal(lite.table, pg.table)
        assert (lite.n_samples, lite.families) == (pg.n_samples, pg.families)


SUMMARY_CASES = {
    "whole registry": {},
    "date from": {"date_from": "2024-01-01"},
    "date window": {"date_from": "2024-03-01", "date_to": "2025-02-28"},
    "one month": {"date_from": "2024-06-01", "date_to": "2024-06-30"},
    "device": {"device": "CT 2"},
    "modality and dates": {"modality": "DX", "date_from": "2024-01-01"},
    "with non-patient": {"include_non_patient": True},
    "with non-patient and dates": {"include_non_patient": True, "date_from": "2024-01-01"},
    "nothing": {"flt": StudyFilter(site_names=("Elsewhere",))},
}  # fmt: skip


class TestSummaryInDatabase:
    """PostgreSQL's summary per (modality, device, protocol) equals SQLite's."""

    @pytest.mark.parametrize("options", SUMMARY_CASES.values(), ids=SUMMARY_CASES.keys())
    def test_summary_equals_sqlite(
        self, synthetic: tuple[Registry, Registry], options: dict[str, Any]
    ) -> None:
        """Rows, counts and percentiles are equal on both backends."""
        lite, pg = (r.summary(**options) for r in synthetic)
        _assert_frames_equal(lite, pg)
        if "flt" not in options:
            assert len(pg) > 0

    def test_percentiles_are_linear_interpolation(
        self, synthetic: tuple[Registry, Registry]
    ) -> None:
        """A filtered group's median and quartiles are numpy's linear percentiles."""
        lite, pg = synthetic
        frame = pg.summary(modality="CT", date_from="2024-01-01")
        row = frame[frame["quantity"] == "dlp_mgycm"].iloc[0]
        events = lite.events(modality="CT", date_from="2024-01-01")
        mask = (events["device_name"] == row["device_name"]) & (
            events["acquisition_protocol"] == row["acquisition_protocol"]
        )
        values = events.loc[mask, "dlp_mgycm"].dropna()
        assert row["number_of_values"] == len(values) > 1
        assert row["median"] == pytest.approx(values.median(), rel=1e-12)
        assert row["p25"] == pytest.approx(values.quantile(0.25), rel=1e-12)
        assert row["p75"] == pytest.approx(values.quantile(0.75), rel=1e-12)

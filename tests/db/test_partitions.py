"""Irradiation events partitioned by study month (revision 0019, ``kerma.db.partitions``).

On both back ends: the migration keeps every event and fills ``study_month``; a
reprocess that changes a study's date, or a later report that gives a date, moves the
study's events. On PostgreSQL: the rows sit in their month's partition, ``kerma db
partitions`` makes months ahead and empties DEFAULT of dated months, concurrently, and
a one-month filter reads one partition (EXPLAIN).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from kerma.db.filters import StudyFilter
from kerma.db.migrate import downgrade, upgrade
from kerma.db.models import Study
from kerma.db.partitions import (
    UNDATED_STUDY_MONTH,
    add_months,
    ensure_partitions,
    is_partitioned,
    list_partitions,
    partition_name,
    study_month,
)
from kerma.db.session import make_engine, make_session_factory
from tests.conftest import DICOM_DIR
from tests.db_fixtures import fresh_database, make_settings
from tests.ingest.helpers import dump_tables

needs_shared = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="needs ../shared/dicom")

CT_FILE = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
PARTITION_RE = re.compile(r"irradiation_event_(?:y\d{4}m\d{2}|default)")


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """URL of a fresh PostgreSQL database (skipped without a server)."""
    with fresh_database("postgresql", tmp_path) as url:
        yield url


def _events(engine: sa.Engine) -> list[dict[str, Any]]:
    """Return every event row (all columns), by id."""
    return dump_tables(engine)["irradiation_event"]


def _partition_of_rows(engine: sa.Engine) -> dict[int, str]:
    """Return ``{event id: partition holding it}`` (PostgreSQL)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, tableoid::regclass::text FROM irradiation_event"))
        return {int(i): str(p) for i, p in rows}


def _file_month(path: Path) -> dt.date:
    """Return the first day of the month of (0008,0020) 'Study Date' of a DICOM file."""
    value = pydicom.dcmread(path, stop_before_pixels=True).StudyDate
    return dt.datetime.strptime(value, "%Y%m%d").date().replace(day=1)


class TestStudyMonth:
    """The partition key of a study date."""

    @pytest.mark.parametrize(
        ("study_date", "expected"),
        [
            (dt.date(2026, 12, 31), dt.date(2026, 12, 1)),
            (dt.date(2024, 2, 29), dt.date(2024, 2, 1)),
            (None, UNDATED_STUDY_MONTH),  # undated studies go to DEFAULT
        ],
        ids=["last-day", "leap-day", "undated"],
    )
    def test_study_month_is_the_first_of_the_month(
        self, study_date: dt.date | None, expected: dt.date
    ) -> None:
        """study_month is the first day of the study date's month, or 0001-01-01."""
        assert study_month(study_date) == expected

    def test_add_months_crosses_years(self) -> None:
        """add_months steps over year ends both ways."""
        assert add_months(dt.date(2026, 11, 1), 3) == dt.date(2027, 2, 1)
        assert add_months(dt.date(2026, 1, 1), -1) == dt.date(2025, 12, 1)
        assert partition_name(dt.date(2027, 2, 1)) == "irradiation_event_y2027m02"


@needs_shared
class TestRevision0019:
    """A populated 0018 registry migrated to 0019 keeps every event row and value."""

    def test_events_kept_and_months_filled_up_and_down(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Every event survives 0019 → 0018 → 0019 unchanged; study_month follows the
        study date; an undated study added at 0018 gets 0001-01-01 (DEFAULT)."""
        registry = Registry(settings=make_settings(database_url, tmp_path))
        registry.import_paths(
            [CT_FILE, DICOM_DIR / "CT-RDSR-Philips_BigBore4DCT.dcm",
             DICOM_DIR / "RF-RDSR-Siemens-Zee.dcm"]
        )  # fmt: skip
        registry.close()
        engine = make_engine(database_url)
        try:
            at_head = _raw_events(engine)
            assert len(at_head) == 10
            downgrade(engine, "0018_web_config")
            names = {c["name"] for c in sa.inspect(engine).get_columns("irradiation_event")}
            assert "study_month" not in names
            assert _raw_events(engine) == [_without_month(r) for r in at_head]
            with engine.begin() as conn:  # an undated study and its event, written at 0018
                device_id = conn.execute(sa.text("SELECT min(id) FROM device")).scalar_one()
                report_id = conn.execute(sa.text("SELECT min(id) FROM dose_report")).scalar_one()
                study_id = conn.execute(
                    sa.text(
                        "INSERT INTO study (study_instance_uid, device_id, is_non_patient) "
                        "VALUES ('1.2.826.0.1.3680043.8.498.1', :d, false) RETURNING id"
                    ),
                    {"d": device_id},
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "INSERT INTO irradiation_event (dose_report_id, study_id, event_index, "
                        "is_current, ctdivol_mgy) VALUES (:r, :s, 99, false, 12.5)"
                    ),
                    {"r": report_id, "s": study_id},
                )
            upgrade(engine)
            again = _events(engine)  # typed by the model: study_month is a date
            undated = [r for r in again if r["event_index"] == 99]
            assert [(r["study_month"], r["ctdivol_mgy"]) for r in undated] == [
                (UNDATED_STUDY_MONTH, 12.5)
            ]
            raw = [r for r in _raw_events(engine) if r["event_index"] != 99]
            assert [_without_month(r) for r in raw] == [_without_month(r) for r in at_head]
            assert [r["study_month"] for r in raw] == [r["study_month"] for r in at_head]
            with engine.connect() as conn:
                dates = dict(conn.execute(sa.select(Study.id, Study.study_date)).all())
            assert all(r["study_month"] == study_month(dates[r["study_id"]]) for r in again)
            if engine.dialect.name == "postgresql":
                with engine.connect() as conn:
                    assert is_partitioned(conn)
                where = _partition_of_rows(engine)
                for row in again:
                    month = row["study_month"]
                    expected = (
                        "irradiation_event_default"
                        if month == UNDATED_STUDY_MONTH
                        else partition_name(month)
                    )
                    assert where[row["id"]] == expected
        finally:
            engine.dispose()


def _raw_events(engine: sa.Engine) -> list[dict[str, Any]]:
    """Return every column of every event row as the database gives it, by id."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM irradiation_event ORDER BY id")).mappings()
        return [dict(r) for r in rows]


def _without_month(row: dict[str, Any]) -> dict[str, Any]:
    """Return an event row without ``study_month``."""
    return {k: v for k, v in row.items() if k != "study_month"}


class TestEnsurePartitions:
    """kerma db partitions on PostgreSQL."""

    def test_months_ahead_made_once(self, postgres_url: str) -> None:
        """The current month and 12 ahead exist after upgrade; a second run makes none."""
        engine = make_engine(postgres_url)
        try:
            upgrade(engine)
            today = dt.datetime.now(dt.UTC).date()
            with engine.begin() as conn:
                report = ensure_partitions(conn, ahead_months=14)
                names = set(list_partitions(conn))
            this_month = study_month(today)
            wanted = {partition_name(add_months(this_month, k)) for k in range(15)}
            assert wanted | {"irradiation_event_default"} <= names
            assert report.created == [partition_name(add_months(this_month, k)) for k in (13, 14)]
            with engine.begin() as conn:
                assert ensure_partitions(conn, ahead_months=14).created == []
        finally:
            engine.dispose()

    def test_rows_in_default_move_to_their_new_partition(
        self, postgres_url: str, tmp_path: Path
    ) -> None:
        """Events of a month without a partition sit in DEFAULT until partitions are
        made; then they move to their month's partition, values unchanged."""
        from tests.services.builders import add_study

        engine = make_engine(postgres_url)
        try:
            upgrade(engine)
            factory = make_session_factory(engine, write=True)
            with factory.begin() as session:
                add_study(session, device_name="CT", modality="CT", study_date="2019-05-17",
                          events=[{"ctdivol_mgy": 8.0}, {"ctdivol_mgy": 9.0}])  # fmt: skip
            before = _events(engine)
            assert set(_partition_of_rows(engine).values()) == {"irradiation_event_default"}
            with engine.begin() as conn:
                report = ensure_partitions(conn, ahead_months=0)
            assert report.created[0] == "irradiation_event_y2019m05"
            assert report.moved_rows == 2
            assert set(_partition_of_rows(engine).values()) == {"irradiation_event_y2019m05"}
            assert _events(engine) == before
        finally:
            engine.dispose()

    def test_nodes_running_it_at_once_make_each_partition_once(self, postgres_url: str) -> None:
        """Four concurrent runs succeed; together they made each missing month once."""
        engine = make_engine(postgres_url)
        try:
            upgrade(engine)
            created: list[str] = []
            errors: list[BaseException] = []
            lock = threading.Lock()

            def run() -> None:
                try:
                    with engine.begin() as conn:
                        report = ensure_partitions(conn, ahead_months=30)
                    with lock:
                        created.extend(report.created)
                except BaseException as exc:  # reported by the assertion below
                    errors.append(exc)

            threads = [threading.Thread(target=run) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            assert len(created) == len(set(created)) == 30 - 12
        finally:
            engine.dispose()

    def test_a_long_query_makes_it_fail_cleanly(self, postgres_url: str, tmp_path: Path) -> None:
        """A transaction holding the table past the lock timeout: a clear error, and the
        month is made on the next run."""
        from kerma.services.schema import PartitionsBusyError, make_partitions

        engine = make_engine(postgres_url)
        try:
            upgrade(engine)
            settings = make_settings(postgres_url, tmp_path)
            with engine.connect() as reader:
                reader.execute(sa.text("SELECT count(*) FROM irradiation_event"))  # holds it
                with pytest.raises(PartitionsBusyError, match="run the command again"):
                    make_partitions(settings=settings, ahead_months=13, lock_timeout_s=0.5)
                reader.rollback()
            report = make_partitions(settings=settings, ahead_months=13, lock_timeout_s=0.5)
            assert len(report.created) == 1
        finally:
            engine.dispose()

    def test_cli_makes_partitions_and_says_so(self, postgres_url: str, monkeypatch) -> None:
        """``kerma db partitions --since`` makes the history's months and reports them."""
        engine = make_engine(postgres_url)
        upgrade(engine)
        engine.dispose()
        monkeypatch.setenv("KERMA_DATABASE_URL", postgres_url)
        result = CliRunner().invoke(
            app, ["db", "partitions", "--ahead", "12", "--since", "2025-01"]
        )
        assert result.exit_code == 0, result.output
        assert "irradiation_event_y2025m01" in result.output
        again = CliRunner().invoke(app, ["db", "partitions", "--since", "2025-01"])
        assert "partitions created: none" in again.output

    def test_cli_on_sqlite_explains_and_exits_0(self, tmp_path: Path, monkeypatch) -> None:
        """On SQLite the command says partitions are a PostgreSQL feature, exit code 0."""
        monkeypatch.setenv("KERMA_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
        result = CliRunner().invoke(app, ["db", "partitions"])
        assert result.exit_code == 0, result.output
        assert "PostgreSQL feature" in result.output

    def test_cli_refuses_a_bad_month(self, tmp_path: Path, monkeypatch) -> None:
        """--since must be YYYY-MM: a clear usage error, no traceback."""
        monkeypatch.setenv("KERMA_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
        result = CliRunner().invoke(app, ["db", "partitions", "--since", "May"])
        assert result.exit_code == 2
        assert "is not a month (YYYY-MM)" in result.output

    @pytest.mark.parametrize("month", ["0001-01", "0201-01", "1984-12"])
    def test_cli_refuses_a_month_before_dicom(self, tmp_path: Path, monkeypatch, month) -> None:
        """--since 0201-01 (a typo) would make ~22,000 partitions in one transaction and
        exhaust PostgreSQL's lock table; 0001-01 is the undated month: usage error."""
        monkeypatch.setenv("KERMA_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
        result = CliRunner().invoke(app, ["db", "partitions", "--since", month])
        assert result.exit_code == 2, result.output
        assert "is before 1985-01" in result.output

    @pytest.mark.postgres
    def test_ensure_partitions_refuses_a_month_before_dicom(self, tmp_path: Path) -> None:
        """The service refuses it too (Python API), making no partition."""
        from tests.db_fixtures import fresh_database

        with fresh_database("postgresql", tmp_path) as url:
            registry = Registry(settings=make_settings(url, tmp_path))
            try:
                with registry.engine.begin() as conn:
                    before = len(list_partitions(conn))
                    with pytest.raises(ValueError, match="1985-01 or later"):
                        ensure_partitions(conn, since=dt.date(1, 1, 1))
                    assert len(list_partitions(conn)) == before
            finally:
                registry.close()


@needs_shared
class TestStudyDateChanges:
    """Events follow their study's date (and partition) when it changes."""

    def test_reprocess_that_changes_the_date_moves_the_events(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A study stored with a wrong date (an old extractor) gets the object's date
        back on reprocess, and its events move to that month."""
        registry = Registry(settings=make_settings(database_url, tmp_path))
        try:
            registry.import_paths([CT_FILE])
            real = _file_month(CT_FILE)
            wrong = dt.date(2026, 6, 15)
            engine = registry.engine
            if engine.dialect.name == "postgresql":
                with engine.begin() as conn:
                    ensure_partitions(conn, since=dt.date(2026, 1, 1))
            with engine.begin() as conn:  # as an old extractor would have stored it
                conn.execute(sa.text("UPDATE study SET study_date = :d"), {"d": wrong})
                conn.execute(
                    sa.text("UPDATE irradiation_event SET study_month = :m"),
                    {"m": study_month(wrong)},
                )
            if engine.dialect.name == "postgresql":
                assert set(_partition_of_rows(engine).values()) == {"irradiation_event_y2026m06"}
            registry.reprocess()
            events = _events(engine)
            assert events
            assert {r["study_month"] for r in events} == {real}
            if engine.dialect.name == "postgresql":
                assert set(_partition_of_rows(engine).values()) == {partition_name(real)}
        finally:
            registry.close()

    def test_a_later_report_giving_the_date_moves_the_undated_events(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A report without (0008,0020) files its events as undated; a second report of
        the same study with the date moves them to the study's month."""
        ds = pydicom.dcmread(CT_FILE)
        real = _file_month(CT_FILE)
        undated, dated = tmp_path / "undated.dcm", tmp_path / "dated.dcm"
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            ds.pop(keyword, None)  # no date to fall back on (kerma.dicom.common)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(undated)
        ds = pydicom.dcmread(CT_FILE)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(dated)
        registry = Registry(settings=make_settings(database_url, tmp_path))
        try:
            registry.import_paths([undated])
            assert {r["study_month"] for r in _events(registry.engine)} == {UNDATED_STUDY_MONTH}
            registry.import_paths([dated])
            events = _events(registry.engine)
            assert len({r["dose_report_id"] for r in events}) == 2
            assert {r["study_month"] for r in events} == {real}
        finally:
            registry.close()


class TestPartitionPruning:
    """Date-filtered event queries read only the partitions of the filter's months."""

    @staticmethod
    def _scanned(
        engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, call: Callable[[], object]
    ) -> list[set[str]]:
        """Run ``call``; return, per SELECT it sent on irradiation_event, the partitions
        its EXPLAIN plan reads. Statements go through SQLAlchemy's cursor events or, for
        the analytics' fast path, :func:`kerma.db.session.fetch_rows` (wrapped, still run)."""
        from kerma.db import analytics

        sent: list[tuple[str, Any]] = []

        def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
            if "FROM irradiation_event" in statement and statement.lstrip().startswith("SELECT"):
                sent.append((statement, parameters))

        real_fetch_rows = analytics.fetch_rows

        def fetch_rows(session: Any, stmt: Any) -> list[tuple[Any, ...]]:
            sent.append((str(stmt.compile(engine, compile_kwargs={"literal_binds": True})), None))
            return real_fetch_rows(session, stmt)

        monkeypatch.setattr(analytics, "fetch_rows", fetch_rows)
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            call()
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)
            monkeypatch.undo()
        plans = []
        with engine.connect() as conn:
            for statement, parameters in sent:
                rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars()
                plans.append(set(PARTITION_RE.findall("\n".join(rows))))
        return plans

    def test_one_month_filter_reads_one_partition(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """EXPLAIN of the events listing, the DRL samples and the filtered summary with a
        February filter names the February partition only."""
        from kerma.db import analytics, studies
        from tests.services.builders import add_study

        engine = make_engine(postgres_url)
        try:
            upgrade(engine)
            with engine.begin() as conn:
                ensure_partitions(conn, since=dt.date(2024, 1, 1))
            factory = make_session_factory(engine, write=True)
            with factory.begin() as session:
                for day in ("2024-01-10", "2024-02-10", "2024-03-10"):
                    add_study(session, device_name="DX", modality="DX", study_date=day,
                              events=[{"dap_gym2": 1e-4, "standard_exam": "Chest PA"}])  # fmt: skip
                    add_study(session, device_name="CT", modality="CT", study_date=day,
                              events=[{"ctdivol_mgy": 10.0, "dlp_mgycm": 300.0}])  # fmt: skip
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE irradiation_event"))
            flt = StudyFilter(date_from=dt.date(2024, 2, 1), date_to=dt.date(2024, 2, 29))
            february = {"irradiation_event_y2024m02"}
            with factory() as session:
                listing = self._scanned(
                    engine, monkeypatch, lambda: list(studies.iter_events(session, flt=flt))
                )
                assert listing == [february]
                groups = list(session.scalars(sa.text("SELECT id FROM event_group")))
                assert len(groups) == 2
                summary = self._scanned(
                    engine,
                    monkeypatch,
                    lambda: analytics.postgres_summary_rows(
                        session,
                        flt=flt,
                        group_codes={g: g for g in groups},
                        quantities=["dap_gym2", "ctdivol_mgy"],
                        fractions=[0.5],
                    ),
                )
                assert summary == [february]
                samples = self._scanned(
                    engine,
                    monkeypatch,
                    lambda: analytics.event_sample_rows(session, flt=flt, family="DX"),
                )
                assert samples == [february]
                unfiltered = self._scanned(
                    engine,
                    monkeypatch,
                    lambda: list(studies.iter_events(session, flt=StudyFilter())),
                )
                assert {"irradiation_event_y2024m01", "irradiation_event_y2024m03"} <= unfiltered[0]
        finally:
            engine.dispose()

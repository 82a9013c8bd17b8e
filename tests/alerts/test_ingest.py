"""Alerts at ingest: demo dose reports imported, re-imported and rechecked (both backends).

A site pack with low thresholds (so a small demo set crosses them) is evaluated after
each object's transaction commits. Re-importing the same files and rechecking twice
must create no second alert and call :data:`kerma.services.alerts.on_new_alert` once
per alert created at ingest (a recheck announces nothing). An alert evaluation that
fails (its table dropped) or a hook that raises never fails the import.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from kerma.demo.generator import generate_demo_files
from kerma.ingest.pipeline import ImportStatus
from kerma.services import alerts
from kerma.services.registry import Registry
from tests.db_fixtures import make_settings

SITE_PACK = """
pack = "test-site"

[[rule]]
id = "ct-series-ctdivol-20"
title = "CT series CTDIvol above 20 mGy (test)"
kind = "threshold"
level = "event"
quantity = "ctdivol_mgy"
operator = ">"
threshold = 20
unit = "mGy"
source = "Test policy"
[rule.scope]
modalities = ["CT"]
[rule.scope.exclude]
ct_acquisition_type = "constant angle"

[[rule]]
id = "fluoro-kap-10"
title = "Fluoroscopy KAP at or above 10 Gy.cm2 (test)"
kind = "threshold"
quantity = "dap_total_gym2"
threshold = 10
unit = "Gy.cm2"
source = "Test policy"
[rule.scope]
modalities = ["RF/XA"]

[[rule]]
id = "ct-history"
title = "CT DLP at or above 1.2 x the device median (test)"
kind = "device_history"
quantity = "ct_dlp_total_mgycm"
factor = 1.2
history = 10
min_history = 2
source = "Test policy"
[rule.scope]
modalities = ["CT"]

[[rule]]
id = "two-ct-a-year"
title = "Two CT studies of one patient in 12 months (test)"
kind = "cumulative"
quantity = "count"
threshold = 2
window_days = 365
source = "Test policy"
[rule.scope]
modalities = ["CT"]
"""


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """Forty demo dose reports (CT, RF, DX, MG) in a folder."""
    generate_demo_files(tmp_path / "demo", studies=40, seed=11, end_date=dt.date(2026, 6, 1))
    return tmp_path / "demo"


@pytest.fixture
def calls() -> Iterator[list[int]]:
    """The alert ids passed to ``on_new_alert`` during the test."""
    seen: list[int] = []
    alerts.on_new_alert.append(seen.append)
    yield seen
    alerts.on_new_alert.remove(seen.append)


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    """A registry whose alert rules are the test site pack."""
    pack = tmp_path / "site.toml"
    pack.write_text(SITE_PACK, encoding="utf-8")
    reg = Registry(settings=make_settings(database_url, tmp_path, alert_rules=pack))
    yield reg
    reg.close()


class TestAlertsAtIngest:
    """Evaluation after commit, idempotent over re-import and recheck."""

    def test_reimport_and_recheck_twice_make_no_duplicates(
        self, registry: Registry, demo: Path, calls: list[int]
    ) -> None:
        """Each alert is created once and announced once, whatever runs again."""
        summary = registry.import_paths([demo])
        assert summary.n_imported == 40
        at_ingest = registry.count_alerts()
        assert at_ingest > 0
        assert sorted(calls) == sorted(set(calls)) and len(calls) == at_ingest
        rules = set(registry.alerts(limit=1000)["rule_id"])
        assert {"ct-series-ctdivol-20", "two-ct-a-year"} <= rules

        again = registry.import_paths([demo])
        assert again.n_imported == 0
        assert registry.count_alerts() == at_ingest and len(calls) == at_ingest

        first = registry.recheck_alerts()  # may add history alerts ingest could not see
        after_first = registry.count_alerts()
        assert len(calls) == at_ingest  # a recheck announces nothing
        second = registry.recheck_alerts(notify=True)
        assert second.new == [] and second.updated == []
        assert registry.count_alerts() == after_first == at_ingest + len(first.new)
        assert len(calls) == at_ingest and len(set(calls)) == at_ingest

        frame = registry.alerts(limit=1000)
        keys = frame[["rule_id", "study_id"]].value_counts()
        single = frame[frame["subject_kind"] == "study"]
        assert not single.duplicated(["rule_id", "study_id"]).any(), keys
        assert registry.verify_alerts().ok

    def test_failing_hook_never_fails_import(
        self, registry: Registry, demo: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A notifier that raises is logged; the import and the alerts are kept."""

        def broken(alert_id: int) -> None:
            raise RuntimeError(f"mail server down for {alert_id}")

        alerts.on_new_alert.append(broken)
        try:
            with caplog.at_level(logging.ERROR, logger="kerma.services.alerts"):
                summary = registry.import_paths([demo])
        finally:
            alerts.on_new_alert.remove(broken)
        assert summary.n_imported == 40
        assert registry.count_alerts() > 0
        assert "on_new_alert hook" in caplog.text

    def test_failing_evaluation_never_fails_import(
        self, registry: Registry, demo: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With the alert history table gone, every object is still imported."""
        with registry.session() as s:
            s.execute(text("DROP TABLE alert_history"))
        with caplog.at_level(logging.ERROR, logger="kerma.services.alerts"):
            outcomes = []
            summary = registry.import_paths([demo], progress=outcomes.append)
        assert summary.n_imported == 40
        assert {o.status for o in outcomes} <= {ImportStatus.IMPORTED, ImportStatus.SUPERSEDED}
        assert "alert evaluation failed" in caplog.text

    def test_alerts_disabled_evaluates_nothing_at_ingest(
        self, database_url: str, tmp_path: Path, demo: Path
    ) -> None:
        """KERMA_ALERTS_ENABLED=false: no alert at ingest; recheck still finds them."""
        pack = tmp_path / "site.toml"
        pack.write_text(SITE_PACK, encoding="utf-8")
        settings = make_settings(database_url, tmp_path, alert_rules=pack, alerts_enabled=False)
        with Registry(settings=settings) as reg:
            reg.import_paths([demo])
            assert reg.count_alerts() == 0
            seen: list[int] = []
            alerts.on_new_alert.append(seen.append)
            try:
                found = reg.recheck_alerts(notify=True).new
            finally:
                alerts.on_new_alert.remove(seen.append)
            assert found and seen == found  # --notify announces what the recheck created

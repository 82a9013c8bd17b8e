"""StrlSchV 2018 Anlage 14 Part I no. 1 (group criterion) on a generated device history.

One CT room, standard exam CT Head, German DLP DRL 950 mGy·cm (BfS, region DE): 19
examinations at 1000 mGy·cm, one at 3000 (above 3 x DRL = 2850: the trigger), then
examinations at 2500. The mean of the last 20 first exceeds 2 x DRL (1900) at the 31st
examination, whose window (12 to 31) holds 8 x 1000, the trigger 3000 and 11 x 2500:
38500 / 20 = 1925. Each study is evaluated right after it is stored, as at ingest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from kerma.analysis.alerts import ANLAGE14_PACK_FILE, packaged_pack_path
from kerma.db.models import Alert
from kerma.services import alerts
from kerma.services.registry import Registry
from tests.alerts.helpers import make_study
from tests.db_fixtures import make_settings

DRL_DLP = 950.0
VALUES = [1000.0] * 19 + [3000.0] + [2500.0] * 15


def _expected_first() -> int:
    """Return the 1-based index of the first examination meeting the reading of Anlage 14."""
    for k in range(20, len(VALUES) + 1):
        window = VALUES[k - 20 : k]
        if max(window) > 3 * DRL_DLP and sum(window) / 20 > 2 * DRL_DLP:
            return k
    raise AssertionError("the history never meets the criterion")


@pytest.fixture
def registry(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A registry whose rules are the Anlage 14 pack alone."""
    settings = make_settings(
        database_url, tmp_path, alert_rules=packaged_pack_path(ANLAGE14_PACK_FILE)
    )
    reg = Registry(settings=settings)
    yield reg
    reg.close()


class TestGroupCriterion:
    """The group alert fires on the right examination and not before."""

    def test_fires_on_the_first_examination_meeting_it(self, registry: Registry) -> None:
        """No alert up to examination 30; one at 31 (mean 1925 > 1900); none added after."""
        first = _expected_first()
        assert first == 31
        context = registry.alert_context
        assert context.rules.get("de-a14-group-ct-dlp") is not None
        ids: list[int] = []
        seen_at: int | None = None
        for k, value in enumerate(VALUES, start=1):
            with registry.session() as s:
                sid = make_study(
                    s,
                    family="CT",
                    device="CT A14 room",
                    patient=f"A14-{k}",
                    date=f"2025-{1 + (k - 1) // 28:02d}-{1 + (k - 1) % 28:02d}",
                    exam="CT Head",
                    values={"ct_dlp_total_mgycm": value},
                )
                ids.append(sid)
                result = alerts.evaluate_studies(s, [sid], context=context)
            if result.new and seen_at is None:
                seen_at = k
            if k < first:
                assert result.new == [], f"alert before examination {first} (at {k})"
        assert seen_at == first
        with registry.session(write=False) as s:
            rows = s.scalars(select(Alert).where(Alert.rule_id == "de-a14-group-ct-dlp")).all()
        assert len(rows) == 1
        alert = rows[0]
        assert alert.study_id == ids[first - 1]
        assert alert.value == pytest.approx(sum(VALUES[first - 20 : first]) / 20)
        assert alert.threshold == pytest.approx(2 * DRL_DLP)
        assert alert.detail["trigger_study_id"] == ids[19]
        assert alert.subject_kind == "device_exam"
        assert "Anlage 14" in alert.threshold_source

    def test_recheck_keeps_one_alert_on_the_same_examination(self, registry: Registry) -> None:
        """Recheck in date order finds the same examination and adds nothing."""
        with registry.session() as s:
            ids = [
                make_study(
                    s,
                    family="CT",
                    device="CT A14 room",
                    patient=f"A14-{k}",
                    date=f"2025-{1 + (k - 1) // 28:02d}-{1 + (k - 1) % 28:02d}",
                    exam="CT Head",
                    values={"ct_dlp_total_mgycm": value},
                )
                for k, value in enumerate(VALUES, start=1)
            ]
        first = registry.recheck_alerts()
        second = registry.recheck_alerts()
        assert len(first.new) == 1 and second.new == []
        with registry.session(write=False) as s:
            rows = s.scalars(select(Alert).where(Alert.rule_id == "de-a14-group-ct-dlp")).all()
        assert [r.study_id for r in rows] == [ids[_expected_first() - 1]]

    def test_no_alert_without_a_trigger(self, registry: Registry) -> None:
        """A history whose mean is high but never one examination above 3 x DRL: no alert."""
        with registry.session() as s:
            for k in range(1, 26):
                make_study(
                    s,
                    family="CT",
                    device="CT A14 steady",
                    patient=f"S-{k}",
                    date=f"2025-01-{k:02d}",
                    exam="CT Head",
                    values={"ct_dlp_total_mgycm": 2800.0},  # 2.95 x DRL: mean high, no trigger
                )
        result = registry.recheck_alerts(rule_id="de-a14-group-ct-dlp")
        assert result.new == []

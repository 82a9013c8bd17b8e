"""Review workflow and the tamper-evident history (both backends, and the CLI).

An alert is put under review, annotated and closed by named users; every change is a
history entry with user and time. ``verify`` recomputes the hash chain: an entry
altered, a middle entry deleted, the last entry deleted, or the alert's state edited
directly in SQL is each detected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from kerma.cli.main import build_app
from kerma.db.filters import StudyFilter
from kerma.errors import NotFoundError
from kerma.services import alerts
from kerma.services.alerts import AlertReviewError
from kerma.services.registry import Registry
from tests.alerts.helpers import make_study
from tests.db_fixtures import TEST_PSEUDONYM_KEY, make_settings


@pytest.fixture
def reviewed(database_url: str, tmp_path: Path) -> Iterator[tuple[Registry, int]]:
    """A registry with one AAPM adult-head alert, reviewed, annotated and closed."""
    reg = Registry(settings=make_settings(database_url, tmp_path))
    with reg.session() as s:
        sid = make_study(
            s,
            family="CT",
            device="CT review room",
            patient="R1",
            date="2025-05-05",
            exam="CT Head",
            events=[{"ct_acquisition_type": "Spiral Acquisition", "ctdivol_mgy": 95.0}],
        )
    reg.recheck_alerts()
    frame = reg.alerts()
    assert list(frame["rule_id"]) == ["aapm-ct-adult-head"] and frame["study_id"][0] == sid
    alert_id = int(frame["alert_id"][0])
    reg.review_alert(alert_id, user="alice", note="protocol check requested")
    reg.note_alert(alert_id, "scanner log shows repeated series", user="bob")
    reg.close_alert(
        alert_id,
        outcome="optimisation",
        justification="head protocol tube current lowered",
        user="alice",
    )
    yield reg, alert_id
    reg.close()


def _entry_ids(reg: Registry) -> list[int]:
    """Return the history entry ids in chain order."""
    with reg.session(write=False) as s:
        return [
            int(i) for i in s.execute(text("SELECT id FROM alert_history ORDER BY id")).scalars()
        ]


class TestReview:
    """States, outcomes and the history of a review."""

    def test_history_shows_every_change_with_user_and_time(
        self, reviewed: tuple[Registry, int]
    ) -> None:
        """created (kerma), review (alice), note (bob), close (alice) with states."""
        reg, alert_id = reviewed
        detail = reg.alert(alert_id)
        entries = detail["history_entries"]
        assert [(e["action"], e["user"], e["state"]) for e in entries] == [
            ("created", "kerma", "open"),
            ("review", "alice", "under_review"),
            ("note", "bob", "under_review"),
            ("close", "alice", "closed"),
        ]
        assert entries[-1]["outcome"] == "optimisation"
        assert entries[-1]["text"] == "head protocol tube current lowered"
        assert all(e["at"] is not None for e in entries)
        assert detail["state"] == "closed" and detail["outcome"] == "optimisation"

    def test_study_filter_has_alert(self, reviewed: tuple[Registry, int]) -> None:
        """The study filter selects studies with or without an alert."""
        reg, alert_id = reviewed
        study_id = reg.alert(alert_id)["study_id"]
        assert list(reg.studies(flt=StudyFilter(has_alert=True))["study_id"]) == [study_id]
        assert reg.count_studies(StudyFilter(has_alert=False)) == 0

    def test_close_needs_outcome_and_justification(self, database_url: str, tmp_path: Path) -> None:
        """No justification, an unknown outcome, closing twice: refused with a reason."""
        with Registry(settings=make_settings(database_url, tmp_path)) as reg:
            with reg.session() as s:
                make_study(
                    s,
                    family="RF/XA",
                    device="Cath lab",
                    patient="R2",
                    date="2025-05-06",
                    exam="PCI",
                    values={"dose_rp_total_gy": 6.0},
                )
            reg.recheck_alerts()
            alert_id = int(reg.alerts(rule_id="ncrp168-ka-r")["alert_id"][0])
            with pytest.raises(AlertReviewError, match="a justification is required"):
                reg.close_alert(alert_id, outcome="no_action", justification="  ", user="u")
            with pytest.raises(AlertReviewError, match="outcome 'maybe' is not one of"):
                reg.close_alert(alert_id, outcome="maybe", justification="x", user="u")
            reg.close_alert(
                alert_id,
                outcome="notified_to_authority",
                justification="skin follow-up; reported",
                user="u",
            )
            with pytest.raises(AlertReviewError, match="closed already"):
                reg.close_alert(alert_id, outcome="no_action", justification="x", user="u")
            with pytest.raises(AlertReviewError, match="not open"):
                reg.review_alert(alert_id, user="u")
            with pytest.raises(NotFoundError, match="Unable to find alert 999"):
                reg.review_alert(999, user="u")
            message = reg.alert_message(alert_id)
        assert set(message) == set(alerts.MESSAGE_KEYS)
        assert message["outcome"] == "notified_to_authority"
        assert [h[2] for h in message["history"]] == ["created", "close"]
        # the short display form of the pseudonym (kerma.records.display_pseudonym)
        short = message["pseudonym_short"]
        assert short.startswith("P-") and len(short) == 12
        assert TEST_PSEUDONYM_KEY not in str(message)

    def test_closed_alert_is_not_updated_by_recheck(self, reviewed: tuple[Registry, int]) -> None:
        """A study value changed after closing: recheck leaves the closed alert alone."""
        reg, alert_id = reviewed
        with reg.session() as s:
            s.execute(text("UPDATE irradiation_event SET ctdivol_mgy = 120 WHERE ctdivol_mgy = 95"))
        result = reg.recheck_alerts()
        assert result.new == [] and result.updated == []
        assert reg.alert(alert_id)["value"] == 95.0


class TestVerify:
    """The hash chain catches every direct edit."""

    def test_intact_chain_verifies(self, reviewed: tuple[Registry, int]) -> None:
        """Four entries, all linked."""
        reg, _ = reviewed
        result = reg.verify_alerts()
        assert result.ok and result.entries == 4

    def test_updated_entry_is_detected(self, reviewed: tuple[Registry, int]) -> None:
        """Changing a note's text in SQL breaks that entry; restoring it mends the chain."""
        reg, _ = reviewed
        third = _entry_ids(reg)[2]
        with reg.session() as s:
            s.execute(
                text("UPDATE alert_history SET text = 'nothing seen' WHERE id = :i"), {"i": third}
            )
        result = reg.verify_alerts()
        assert not result.ok and result.broken_entry_id == third
        assert "altered" in result.reason
        with reg.session() as s:
            s.execute(
                text("UPDATE alert_history SET text = :t WHERE id = :i"),
                {"i": third, "t": "scanner log shows repeated series"},
            )
        assert reg.verify_alerts().ok

    def test_updated_user_is_detected(self, reviewed: tuple[Registry, int]) -> None:
        """Changing who closed the alert breaks the last entry."""
        reg, _ = reviewed
        last = _entry_ids(reg)[-1]
        with reg.session() as s:
            s.execute(
                text("UPDATE alert_history SET user_name = 'mallory' WHERE id = :i"), {"i": last}
            )
        result = reg.verify_alerts()
        assert not result.ok and result.broken_entry_id == last

    def test_deleted_middle_entry_is_detected(self, reviewed: tuple[Registry, int]) -> None:
        """Deleting the review entry breaks the link of the entry after it."""
        reg, _ = reviewed
        ids = _entry_ids(reg)
        with reg.session() as s:
            s.execute(text("DELETE FROM alert_history WHERE id = :i"), {"i": ids[1]})
        result = reg.verify_alerts()
        assert not result.ok and result.broken_entry_id == ids[2]

    def test_deleted_last_entry_is_detected(self, reviewed: tuple[Registry, int]) -> None:
        """Deleting the close entry leaves a closed alert whose history ends under review."""
        reg, alert_id = reviewed
        with reg.session() as s:
            s.execute(text("DELETE FROM alert_history WHERE id = :i"), {"i": _entry_ids(reg)[-1]})
        result = reg.verify_alerts()
        assert not result.ok and result.alert_id == alert_id
        assert "history ends with under_review" in result.reason

    def test_edited_alert_state_is_detected(self, reviewed: tuple[Registry, int]) -> None:
        """Re-opening the alert row in SQL disagrees with its last entry."""
        reg, alert_id = reviewed
        with reg.session() as s:
            s.execute(
                text("UPDATE alert SET state = 'open', outcome = NULL WHERE id = :i"),
                {"i": alert_id},
            )
        assert not reg.verify_alerts().ok

    def test_cli_verify_exits_1_after_tampering(
        self, reviewed: tuple[Registry, int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``kerma alerts verify``: exit 0 on the intact chain, 1 with the broken entry named."""
        reg, _ = reviewed
        monkeypatch.setenv("KERMA_DATABASE_URL", reg.url)
        monkeypatch.setenv("KERMA_ARCHIVE_DIR", str(reg.settings.archive_dir))
        monkeypatch.setenv("COLUMNS", "200")
        app = build_app("alerts")
        ok = CliRunner().invoke(app, ["alerts", "verify"])
        assert ok.exit_code == 0, ok.output
        assert "4 entries verified" in ok.output
        shown = CliRunner().invoke(app, ["alerts", "show", "1"])
        assert shown.exit_code == 0 and "alice" in shown.output and "optimisation" in shown.output
        second = _entry_ids(reg)[1]
        with reg.session() as s:
            s.execute(text("UPDATE alert_history SET action = 'note' WHERE id = :i"), {"i": second})
        broken = CliRunner().invoke(app, ["alerts", "verify"])
        assert broken.exit_code == 1
        assert f"entry {second} was altered" in broken.output

"""Alert e-mails from ingest: queued with the alert, sent once to a real SMTP server.

The site pack of ``test_ingest`` (with recipients on one rule) is evaluated at import;
every new alert of that rule is queued in the outbox in the alert's own transaction
and delivered after the commit to an aiosmtpd server on loopback. Re-importing the
same files and rechecking twice queue nothing more, and no message is sent twice. With
the server stopped, the import still completes and the e-mails are delivered once it
is back (``deliver_pending``, what ``kerma alerts outbox --deliver`` runs).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kerma.demo.generator import generate_demo_files
from kerma.services import alert_notify
from kerma.services.registry import Registry
from tests.alerts.test_ingest import SITE_PACK
from tests.db_fixtures import make_settings
from tests.services.alert_fixtures import SmtpServer, body_text

RECIPIENT = "physics@example.org"
RULE = "ct-series-ctdivol-20"


def _pack_with_recipient() -> str:
    """The test site pack, the CT CTDIvol rule e-mailing :data:`RECIPIENT`."""
    marker = f'id = "{RULE}"\n'
    assert marker in SITE_PACK
    return SITE_PACK.replace(marker, f'{marker}recipients = ["{RECIPIENT}"]\n', 1)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """Forty demo dose reports (CT, RF, DX, MG) in a folder."""
    generate_demo_files(tmp_path / "demo", studies=40, seed=11, end_date=dt.date(2026, 6, 1))
    return tmp_path / "demo"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _registry(database_url: str, tmp_path: Path, port: int) -> Registry:
    pack = tmp_path / "site.toml"
    pack.write_text(_pack_with_recipient(), encoding="utf-8")
    settings = make_settings(
        database_url,
        tmp_path,
        alert_rules=pack,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_timeout_s=5.0,
    )
    return Registry(settings=settings)


def _wait_for(predicate, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


class TestMailAtIngest:
    """Ingest → outbox → SMTP, once per alert."""

    def test_each_new_alert_is_mailed_once(
        self, database_url: str, tmp_path: Path, demo: Path, smtp: SmtpServer
    ) -> None:
        """Every alert of the rule with recipients arrives once; re-runs send nothing."""
        with _registry(database_url, tmp_path, smtp.port) as reg:
            reg.import_paths([demo])
            frame = reg.alerts(limit=1000)
            mailed = sorted(int(i) for i in frame[frame["rule_id"] == RULE]["alert_id"])
            assert mailed, "the demo set must cross the CT CTDIvol rule"
            assert _wait_for(lambda: len(smtp.mailbox.received) >= len(mailed))
            reg.import_paths([demo])
            reg.recheck_alerts()
            reg.recheck_alerts(notify=True)
            time.sleep(1.0)  # a second delivery, if any were started, would arrive now
            with reg.session() as session:
                rows = alert_notify.list_outbox(session)
            result = alert_notify.deliver_pending(reg._write_factory, reg.settings)
        assert len(smtp.mailbox.received) == len(mailed)
        assert result.sent == 0
        assert sorted(r.alert_id for r in rows) == mailed
        assert {r.status for r in rows} == {"sent"}
        for recipients, _ in smtp.mailbox.received:
            assert recipients == [RECIPIENT]
        text = body_text(smtp.mailbox.messages()[0])
        assert "CTDIvol" in text and "Test policy" in text
        assert "/studies/" in text

    def test_server_down_never_blocks_ingest(
        self, database_url: str, tmp_path: Path, demo: Path, smtp: SmtpServer
    ) -> None:
        """With the server stopped the import completes; the e-mails go out later."""
        smtp.stop()
        with _registry(database_url, tmp_path, smtp.port) as reg:
            summary = reg.import_paths([demo])
            assert summary.n_imported == 40
            frame = reg.alerts(limit=1000)
            n = int((frame["rule_id"] == RULE).sum())
            assert n > 0
            with reg.session() as session:
                waiting = alert_notify.list_outbox(session)
            assert len(waiting) == n and {r.status for r in waiting} == {"pending"}
            smtp.start()
            with reg.session() as session:
                alert_notify.retry_now(session)
            result = alert_notify.deliver_pending(reg._write_factory, reg.settings)
        assert result.sent == n
        assert len(smtp.mailbox.received) == n

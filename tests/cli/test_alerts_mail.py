"""``kerma alerts outbox``: the listing, ``--deliver`` and ``--retry`` against a loopback server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kerma.cli.alerts_mail import add_commands, register
from kerma.cli.main import build_app
from kerma.db.migrate import ensure_schema
from kerma.db.session import make_engine, make_session_factory, session_scope
from kerma.services.alert_notify import AlertMessage, enqueue
from tests.services.alert_fixtures import SmtpServer, alert_dict


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A registry file in ``tmp_path`` with one queued alert e-mail; return its URL."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'kerma.db'}"
    for name, value in {
        "DATABASE_URL": url,
        "ARCHIVE_DIR": str(tmp_path / "archive"),
        "PSEUDONYM_KEY": "test-key",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_SECURITY": "none",
        "SMTP_TIMEOUT_S": "5",
        "ALERT_DIGEST": "false",
    }.items():
        monkeypatch.setenv(f"KERMA_{name}", value)
    engine = make_engine(url)
    ensure_schema(engine)
    with session_scope(make_session_factory(engine, write=True)) as session:
        message = AlertMessage.from_dict(alert_dict("1.2.3.4", alert_id=42))
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        enqueue(session, message, ["mpe@x.example"], now=now)
    engine.dispose()
    return url


class TestOutboxCommand:
    """``kerma alerts outbox``."""

    def test_failure_listed_then_retry_delivers(
        self, env: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Server down: exit 1 and the error listed; server up: --retry --deliver sends."""
        server = SmtpServer()
        monkeypatch.setenv("KERMA_SMTP_PORT", str(server.port))
        runner = CliRunner()
        app = build_app("alerts")
        result = runner.invoke(app, ["alerts", "outbox", "--deliver"])
        assert result.exit_code == 1, result.output
        assert "sent 0 e-mail(s), 1 failed, 1 waiting" in result.output
        assert "ConnectionRefusedError" in result.output
        server.start()
        try:
            result = runner.invoke(app, ["alerts", "outbox", "--retry", "--deliver"])
        finally:
            server.stop()
        assert result.exit_code == 0, result.output
        assert "sent 1 e-mail(s), 0 failed, 0 waiting" in result.output
        assert len(server.mailbox.received) == 1
        listing = runner.invoke(app, ["alerts", "outbox", "--status", "sent"])
        assert listing.exit_code == 0
        assert "mpe@x.example" in listing.output and "42" in listing.output

    def test_without_smtp_host_emails_wait(self, env: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """No KERMA_SMTP_HOST: nothing is tried, the e-mail is listed as pending."""
        monkeypatch.delenv("KERMA_SMTP_HOST")
        result = CliRunner().invoke(build_app("alerts"), ["alerts", "outbox", "--deliver"])
        assert result.exit_code == 0, result.output
        assert "KERMA_SMTP_HOST is not set" in result.output
        assert "pending" in result.output


class TestRegister:
    """The commands join an ``alerts`` group made by the alert CLI."""

    def test_register_adds_to_an_existing_alerts_group(self) -> None:
        """An existing group gets ``outbox`` and ``report``; no second group is made."""
        app = typer.Typer()
        alerts = typer.Typer(name="alerts")
        alerts.command("list")(lambda: None)
        app.add_typer(alerts, name="alerts")
        register(app)
        assert [g.name for g in app.registered_groups] == ["alerts"]
        assert [c.name for c in alerts.registered_commands] == ["list", "outbox", "report"]

    def test_add_commands(self) -> None:
        """``add_commands`` adds both commands."""
        alerts = typer.Typer()
        add_commands(alerts)
        assert [c.name for c in alerts.registered_commands] == ["outbox", "report"]

"""Alert e-mails through a real SMTP server on loopback (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from kerma.config import Settings
from kerma.db.migrate import ensure_schema
from kerma.db.models import AlertOutbox
from kerma.db.session import make_engine, make_session_factory, session_scope
from kerma.errors import AlertMessageError, ConfigurationError
from kerma.services.alert_notify import (
    AlertMessage,
    HistoryEntry,
    deliver_pending,
    enqueue,
    list_outbox,
    retry_delay_s,
    retry_now,
)
from tests.db_fixtures import make_settings
from tests.services.alert_fixtures import (
    UTC_NOON,
    PlantedPatient,
    SmtpServer,
    alert_dict,
    body_text,
    planted_patient,
)

RECIPIENT = "physicist@hospital.example"
BASE_URL = "https://kerma.hospital.example/"


@pytest.fixture
def patient(shared_dir: Path) -> PlantedPatient:
    """The identifying values of the real source file."""
    return planted_patient(shared_dir / "dicom")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A running loopback SMTP server, stopped afterwards."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Writing sessions of a fresh, migrated registry database."""
    engine = make_engine(database_url)
    ensure_schema(engine)
    yield make_session_factory(engine, write=True)
    engine.dispose()


def mail_settings(tmp_path: Path, port: int, **overrides: Any) -> Settings:
    """Settings that send through the loopback server without TLS."""
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_sender": "kerma@hospital.example",
        "smtp_timeout_s": 5.0,
        "base_url": BASE_URL,
    }
    values.update(overrides)
    return make_settings("sqlite://", tmp_path, **values)


def queue(
    factory: sessionmaker[Session], message: AlertMessage, recipients: list[str], **kw: Any
) -> int:
    """Enqueue in its own committed transaction; return the rows written."""
    with session_scope(factory) as session:
        return enqueue(session, message, recipients, **kw)


def outbox_rows(factory: sessionmaker[Session]) -> list[AlertOutbox]:
    """Return every outbox row."""
    with session_scope(factory) as session:
        return list(session.scalars(select(AlertOutbox).order_by(AlertOutbox.id)))


class TestAlertMessage:
    """The message the alert service hands over."""

    def test_round_trip_keeps_every_field(self) -> None:
        """to_dict then from_dict gives the same message, history and date included."""
        history = [
            {"time": "2026-12-01T10:00:00+00:00", "user": "mpe", "action": "opened", "text": "x"}
        ]
        message = AlertMessage.from_dict(alert_dict("1.2.3", history=history))
        assert message.study_date == dt.date(2026, 11, 30)
        assert message.history == [
            HistoryEntry(dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC), "mpe", "opened", "x")
        ]
        assert AlertMessage.from_dict(message.to_dict()) == message

    @pytest.mark.parametrize("key", ["patient_name", "patient_id", "patient_birth_date"])
    def test_patient_identifying_key_is_refused(self, key: str) -> None:
        """A dict with a patient's name, ID or birth date never becomes a message."""
        with pytest.raises(AlertMessageError, match=f"patient-identifying fields \\['{key}'\\]"):
            AlertMessage.from_dict(alert_dict("1.2.3", **{key: "x"}))

    def test_unknown_and_missing_keys_are_refused(self) -> None:
        """Exactly the documented keys: an extra or a missing one is named."""
        with pytest.raises(AlertMessageError, match=r"unknown fields \['colour'\]"):
            AlertMessage.from_dict(alert_dict("1.2.3", colour="red"))
        d = alert_dict("1.2.3")
        del d["threshold_source"]
        with pytest.raises(AlertMessageError, match=r"missing \['threshold_source'\]"):
            AlertMessage.from_dict(d)

    def test_message_has_no_patient_identity_field(self) -> None:
        """The dataclass itself has no field for a name, ID or birth date."""
        names = set(AlertMessage.__dataclass_fields__)
        assert not names & {"patient_name", "patient_id", "patient_birth_date"}


class TestRetryDelay:
    """The back-off."""

    def test_delay_doubles_up_to_the_cap(self) -> None:
        """60, 120, 240 s ... never above the cap."""
        delays = [retry_delay_s(n, first_s=60, max_s=3600) for n in range(1, 9)]
        assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


class TestDelivery:
    """Queue once, send once, retry while the server is down; SQLite and PostgreSQL."""

    def test_message_received_with_values_link_and_no_patient_identity(
        self,
        factory: sessionmaker[Session],
        smtp: SmtpServer,
        patient: PlantedPatient,
        tmp_path: Path,
    ) -> None:
        """The server receives the rule, value, threshold, source, device, date and link."""
        settings = mail_settings(tmp_path, smtp.port)
        message = AlertMessage.from_dict(alert_dict(patient.study_instance_uid, alert_id=7))
        assert queue(factory, message, [RECIPIENT], now=UTC_NOON) == 1
        result = deliver_pending(factory, settings, now=UTC_NOON)
        assert (result.sent, result.failed, result.pending) == (1, 0, 0)
        assert len(smtp.mailbox.received) == 1
        rcpt, raw = smtp.mailbox.received[0]
        assert rcpt == [RECIPIENT]
        received = smtp.mailbox.messages()[0]
        text = body_text(received)
        # folding may double a space before an encoded word (RFC 2047 6.2)
        assert " ".join(str(received["Subject"]).split()) == (
            "[Kerma] High-dose alert #7: Fluoroscopy KAP at or above 500 Gy·cm² - "
            "Allura Xper FD20 (Cath lab 2)"
        )
        assert received["From"] == "kerma@hospital.example"
        assert received["Auto-Submitted"] == "auto-generated"
        for expected in (
            "KAP total = 612.5 Gy·cm²",
            "Threshold:  500 Gy·cm²",
            "NCRP Report No. 168 (2010), Table 4.5",
            "Allura Xper FD20 (Cath lab 2)",
            "2026-11-30",
            f"https://kerma.hospital.example/studies/{patient.study_instance_uid}",
            "fluoro-kap-500",
        ):
            assert expected in text
        whole = raw.decode("utf-8", "replace") + str(received["Subject"]) + text
        for forbidden in patient.forbidden():
            assert forbidden.lower() not in whole.lower()

    def test_second_enqueue_and_second_delivery_send_nothing(
        self,
        factory: sessionmaker[Session],
        smtp: SmtpServer,
        patient: PlantedPatient,
        tmp_path: Path,
    ) -> None:
        """An alert re-queued (recheck, re-import, view) is not sent twice."""
        settings = mail_settings(tmp_path, smtp.port)
        message = AlertMessage.from_dict(alert_dict(patient.study_instance_uid))
        assert queue(factory, message, [RECIPIENT, "rpo@hospital.example"], now=UTC_NOON) == 2
        assert deliver_pending(factory, settings, now=UTC_NOON).sent == 2
        assert queue(factory, message, [RECIPIENT], now=UTC_NOON) == 0
        later = UTC_NOON + dt.timedelta(days=1)
        assert deliver_pending(factory, settings, now=later).sent == 0
        assert sorted(r for r, _ in smtp.mailbox.received) == [
            ["physicist@hospital.example"],
            ["rpo@hospital.example"],
        ]
        assert [r.status for r in outbox_rows(factory)] == ["sent", "sent"]

    def test_server_down_backs_off_then_delivers_once_when_back(
        self, factory: sessionmaker[Session], patient: PlantedPatient, tmp_path: Path
    ) -> None:
        """Server stopped: queueing works, failures back off; started again: sent once."""
        server = SmtpServer()  # not started: the port refuses connections
        settings = mail_settings(tmp_path, server.port)
        message = AlertMessage.from_dict(alert_dict(patient.study_instance_uid))
        assert queue(factory, message, [RECIPIENT], now=UTC_NOON) == 1

        first = deliver_pending(factory, settings, now=UTC_NOON)
        assert (first.sent, first.failed, first.pending) == (0, 1, 1)
        assert "unable to connect to 127.0.0.1" in first.errors[0]
        [row] = outbox_rows(factory)
        assert (row.status, row.attempts) == ("pending", 1)
        assert "ConnectionRefusedError" in (row.last_error or "")
        due = row.next_attempt_at.replace(tzinfo=row.next_attempt_at.tzinfo or dt.UTC)
        assert due == UTC_NOON + dt.timedelta(seconds=60)

        # not due yet: nothing is tried
        assert deliver_pending(factory, settings, now=UTC_NOON + dt.timedelta(seconds=30)) == (
            deliver_pending(factory, settings, now=UTC_NOON + dt.timedelta(seconds=31))
        )
        assert outbox_rows(factory)[0].attempts == 1
        second = deliver_pending(factory, settings, now=UTC_NOON + dt.timedelta(seconds=61))
        assert second.failed == 1
        [row] = outbox_rows(factory)
        assert row.attempts == 2
        due = row.next_attempt_at.replace(tzinfo=row.next_attempt_at.tzinfo or dt.UTC)
        assert due == UTC_NOON + dt.timedelta(seconds=61 + 120)

        server.start()
        try:
            back = UTC_NOON + dt.timedelta(seconds=600)
            result = deliver_pending(factory, settings, now=back)
            assert (result.sent, result.failed, result.pending) == (1, 0, 0)
            assert deliver_pending(factory, settings, now=back + dt.timedelta(days=1)).sent == 0
            assert len(server.mailbox.received) == 1
        finally:
            server.stop()
        [row] = outbox_rows(factory)
        assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)

    def test_retry_now_makes_waiting_rows_due(
        self, factory: sessionmaker[Session], smtp: SmtpServer, tmp_path: Path
    ) -> None:
        """``--retry``: a row waiting for its back-off is sent at once."""
        settings = mail_settings(tmp_path, smtp.port)
        message = AlertMessage.from_dict(alert_dict("1.2.3"))
        queue(factory, message, [RECIPIENT], now=UTC_NOON)
        with session_scope(factory) as session:
            session.execute(
                update(AlertOutbox).values(next_attempt_at=UTC_NOON + dt.timedelta(hours=1))
            )
        assert deliver_pending(factory, settings, now=UTC_NOON).sent == 0
        with session_scope(factory) as session:
            assert retry_now(session, now=UTC_NOON) == 1
        assert deliver_pending(factory, settings, now=UTC_NOON).sent == 1

    def test_no_smtp_host_keeps_rows_pending(
        self, factory: sessionmaker[Session], tmp_path: Path
    ) -> None:
        """Without KERMA_SMTP_HOST e-mails wait in the outbox; nothing is tried."""
        settings = mail_settings(tmp_path, 25, smtp_host=None)
        queue(factory, AlertMessage.from_dict(alert_dict("1.2.3")), [RECIPIENT], now=UTC_NOON)
        result = deliver_pending(factory, settings, now=UTC_NOON)
        assert (result.configured, result.pending, result.failed) == (False, 1, 0)
        assert outbox_rows(factory)[0].attempts == 0

    def test_default_recipients_when_rule_names_none(
        self, factory: sessionmaker[Session], tmp_path: Path
    ) -> None:
        """A rule without recipients mails the default recipients."""
        settings = mail_settings(
            tmp_path, 25, alert_default_recipients="a@x.example, Medical Physics <b@x.example>"
        )
        message = AlertMessage.from_dict(alert_dict("1.2.3"))
        assert queue(factory, message, [], settings=settings, now=UTC_NOON) == 2
        with session_scope(factory) as session:
            assert sorted(e.recipient for e in list_outbox(session)) == [
                "a@x.example",
                "b@x.example",
            ]

    def test_invalid_recipient_is_a_configuration_error(
        self, factory: sessionmaker[Session]
    ) -> None:
        """A recipient that is no address is named."""
        message = AlertMessage.from_dict(alert_dict("1.2.3"))
        with (
            pytest.raises(ConfigurationError, match="'not an address' in the recipients"),
            session_scope(factory) as session,
        ):
            enqueue(session, message, ["not an address"], now=UTC_NOON)

    def test_daily_digest_one_message_per_recipient_per_day(
        self, factory: sessionmaker[Session], smtp: SmtpServer, tmp_path: Path
    ) -> None:
        """With the digest, a day's alerts go out in one e-mail once the day is over."""
        settings = mail_settings(tmp_path, smtp.port, alert_digest=True)
        for alert_id, value in ((11, 0.06125), (12, 0.0845)):  # Gy·m², as stored
            message = AlertMessage.from_dict(alert_dict("1.2.3", alert_id=alert_id, value=value))
            queue(factory, message, [RECIPIENT, "rpo@x.example"], now=UTC_NOON)
        assert deliver_pending(factory, settings, now=UTC_NOON).sent == 0
        result = deliver_pending(factory, settings, now=UTC_NOON + dt.timedelta(days=1))
        assert (result.sent, result.rows_sent, result.pending) == (2, 4, 0)
        messages = smtp.mailbox.messages()
        assert sorted(m["To"] for m in messages) == [RECIPIENT, "rpo@x.example"]
        text = body_text(messages[0])
        assert messages[0]["Subject"] == "[Kerma] High-dose alerts of 2026-12-01: 2"
        assert "#11" in text and "#12" in text
        assert "612.5 Gy·cm²" in text and "845 Gy·cm²" in text


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    """Accept the login ``kerma`` / ``s3cret`` (aiosmtpd authenticator)."""
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"kerma" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


class TestTls:
    """STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with login, against a test CA."""

    @pytest.fixture(scope="class")
    def pki(self, tmp_path_factory: pytest.TempPathFactory) -> Any:
        """A throw-away CA and a server certificate for localhost / 127.0.0.1 (openssl)."""
        from tests.net.test_tls import make_pki

        return make_pki(tmp_path_factory.mktemp("pki"))

    def server_context(self, pki: Any) -> Any:
        """Return the server's TLS context."""
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        return context

    @pytest.mark.parametrize("security", ["starttls", "tls"])
    def test_login_over_tls_delivers(
        self, security: str, pki: Any, factory: sessionmaker[Session], tmp_path: Path
    ) -> None:
        """The message goes over TLS with login; a wrong password is a recorded failure."""
        context = self.server_context(pki)
        # aiosmtpd does not see implicit TLS as TLS, so it offers AUTH there only when
        # auth_require_tls is off; the connection is encrypted from the first byte
        tls_options: dict[str, Any] = (
            {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
            if security == "starttls"
            else {"ssl_context": context, "auth_require_tls": False}
        )
        server = SmtpServer(authenticator=_authenticator, **tls_options)
        server.start()
        try:
            base = {
                "smtp_security": security,
                "smtp_tls_ca": pki.ca_cert,
                "smtp_username": "kerma",
            }
            queue(factory, AlertMessage.from_dict(alert_dict("1.2.3")), [RECIPIENT], now=UTC_NOON)
            wrong = mail_settings(tmp_path, server.port, smtp_password="wrong", **base)
            failed = deliver_pending(factory, wrong, now=UTC_NOON)
            assert failed.failed == 1 and "SMTPAuthenticationError" in failed.errors[0]
            untrusted = mail_settings(
                tmp_path, server.port, **{**base, "smtp_tls_ca": None}, smtp_password="s3cret"
            )
            later = UTC_NOON + dt.timedelta(hours=1)
            failed = deliver_pending(factory, untrusted, now=later)
            assert failed.failed == 1 and "CERTIFICATE_VERIFY_FAILED" in failed.errors[0]
            right = mail_settings(tmp_path, server.port, smtp_password="s3cret", **base)
            result = deliver_pending(factory, right, now=later + dt.timedelta(hours=1))
            assert (result.sent, result.failed) == (1, 0)
        finally:
            server.stop()
        assert len(server.mailbox.received) == 1
        [row] = outbox_rows(factory)
        assert (row.status, row.attempts) == ("sent", 3)


class TestDeliverAfterCommit:
    """The ingest hook: send once the alert's transaction has committed."""

    def test_sent_after_commit_not_after_rollback(
        self, factory: sessionmaker[Session], smtp: SmtpServer, tmp_path: Path
    ) -> None:
        """Commit: delivered in a thread; rollback: nothing queued, nothing sent."""
        from kerma.services.alert_notify import deliver_after_commit

        settings = mail_settings(tmp_path, smtp.port)
        message = AlertMessage.from_dict(alert_dict("1.2.3", alert_id=5))
        with pytest.raises(RuntimeError, match="import failed"), session_scope(factory) as session:
            enqueue(session, message, [RECIPIENT])
            cancelled = deliver_after_commit(session, factory, settings)
            raise RuntimeError("import failed")
        assert cancelled.cancelled()
        assert outbox_rows(factory) == []
        with session_scope(factory) as session:
            enqueue(session, message, [RECIPIENT])
            future = deliver_after_commit(session, factory, settings)
            assert not future.done()  # nothing happens inside the transaction
        result = future.result(timeout=60)
        assert (result.sent, result.pending) == (1, 0)
        assert len(smtp.mailbox.received) == 1


class TestRegistryHoldsNoIdentity:
    """What an alert message could be built from: the registry stores no identity."""

    def test_imported_study_leaves_no_name_id_or_birth_date(
        self, registry: Any, patient: PlantedPatient, shared_dir: Path
    ) -> None:
        """After importing the source file, no table holds its name, ID or birth date."""
        from sqlalchemy import text

        from kerma.db.base import Base

        summary = registry.import_paths([shared_dir / "dicom" / "RF-RDSR-Philips_Allura.dcm"])
        assert summary is not None
        dump = []
        with registry.session(write=False) as session:
            for table in Base.metadata.sorted_tables:
                rows = session.execute(text(f"SELECT * FROM {table.name}")).all()
                dump += [str(value) for row in rows for value in row]
        whole = "\n".join(dump).lower()
        assert patient.study_instance_uid.lower() in whole  # the study is there
        for forbidden in patient.forbidden():
            assert forbidden.lower() not in whole, forbidden


def test_email_and_report_show_display_units_and_a_bare_count() -> None:
    """The alert service stores KAP in Gy·m²; the e-mail, the digest and the report show
    Gy·cm², as the pages and ``kerma alerts``; a count reads "12", not "12 1" (regression,
    trial3: "KAP total = 0.06125 Gy·m²" and "count 12 1")."""
    from kerma.services.alert_notify import render_alert_text, render_digest_text
    from kerma.services.alert_report import render_report

    kap = AlertMessage.from_dict(alert_dict("1.2.3", value=0.0845))
    assert (kap.shown_value, kap.shown_threshold, kap.shown_unit) == (845.0, 500.0, "Gy·cm²")
    text = render_alert_text(kap, base_url=BASE_URL)
    assert "KAP total = 845 Gy·cm²\n" in text and "Threshold:  500 Gy·cm²\n" in text
    count = AlertMessage.from_dict(
        alert_dict("1.2.3", alert_id=2, quantity="count", unit="1", value=12, threshold=10)
    )
    text = render_alert_text(count, base_url=BASE_URL)
    assert "count = 12\n" in text and "Threshold:  10\n" in text, text
    digest = render_digest_text([kap, count], day=dt.date(2026, 12, 1), base_url=BASE_URL)
    assert "KAP total = 845 Gy·cm², threshold 500 Gy·cm² (" in digest, digest
    assert "count = 12, threshold 10 (" in digest, digest
    page = render_report(
        AlertMessage.from_dict(
            alert_dict("1.2.3", value=0.0845, state="closed", outcome="notified_to_authority")
        ),
        [],
        "html",
    )
    html = page.decode("utf-8") if isinstance(page, bytes) else page
    assert "845 Gy·cm² against 500 Gy·cm²" in html, html
    assert "Gy·m²" not in html

"""Alert e-mails: the alert message, the outbox (queue once, send after commit, retry).

Issue 12 item 4. An alert becomes an :class:`AlertMessage` (built by the alert service
from its tables, :meth:`AlertMessage.from_dict`); :func:`enqueue` writes one outbox row
per recipient in the caller's transaction (a database insert only, so ingest never
waits for a mail server), unique per ``(alert, recipient)``: an alert is mailed once,
never again on a view, a re-import or a re-check. :func:`deliver_pending` sends the
rows that are due through SMTP (:mod:`smtplib`: plain, STARTTLS per RFC 3207 or
implicit TLS per RFC 8314), after the alert's transaction has committed or from
``kerma alerts outbox --deliver``. A failed attempt never raises into the caller: the
row keeps the error and is retried after a delay that doubles from
``Settings.alert_mail_retry_s`` up to ``Settings.alert_mail_retry_max_s``.

The message names the rule, the value with its unit, the threshold and its source,
the device, the date and a link to the study (``{KERMA_BASE_URL}/studies/{uid}``).
It never carries a patient's name, ID or birth date: Kerma does not store them, and
:meth:`AlertMessage.from_dict` refuses a dict that holds them.

May import ``kerma.db``, ``kerma.units``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from functools import cache
from typing import Any
from urllib.parse import quote

import jinja2
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from kerma.config import Settings
from kerma.db import alert_outbox as outbox_db
from kerma.db.session import session_scope
from kerma.errors import AlertMessageError, ConfigurationError
from kerma.units import QUANTITIES, display_unit

logger = logging.getLogger(__name__)

#: Keys that would identify a patient (PS3.3 C.7.1.1 Patient Module: (0010,0010)
#: Patient's Name, (0010,0020) Patient ID, (0010,0030) Patient's Birth Date and their
#: kin). An alert dict holding one is refused: Kerma stores none of them.
PATIENT_IDENTIFYING_KEYS: frozenset[str] = frozenset(
    {
        "patient_name",
        "patients_name",
        "patient_id",
        "other_patient_ids",
        "issuer_of_patient_id",
        "patient_birth_date",
        "patients_birth_date",
        "birth_date",
        "patient_address",
    }
)

#: Default SMTP port per ``Settings.smtp_security``: 25 (RFC 5321), 587 submission
#: with STARTTLS (RFC 6409, RFC 3207), 465 implicit TLS (RFC 8314 section 3.3).
DEFAULT_SMTP_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}

#: How long a claimed row is held by the delivering process before another may retry
#: it (s): longer than any SMTP conversation with the default timeouts.
CLAIM_LEASE_S = 900.0

#: Significant digits of values in messages and reports.
VALUE_DIGITS = 5


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One entry of an alert's review history.

    Attributes
    ----------
    time : datetime.datetime
        When it happened (timezone-aware, as the alert service stores it).
    user : str
        Who did it (user name).
    action : str
        What was done (``opened``, ``review``, ``closed``, ...).
    text : str
        The comment or justification written with it.
    """

    time: dt.datetime
    user: str
    action: str
    text: str

    @classmethod
    def from_value(cls, value: Any) -> HistoryEntry:
        """Return an entry from a dict, a 4-tuple or a :class:`HistoryEntry`.

        Raises
        ------
        AlertMessageError
            When ``value`` has not the four fields or the time is not a date-time.
        """
        if isinstance(value, HistoryEntry):
            return value
        if isinstance(value, Mapping):
            missing = {"time", "user", "action", "text"} - set(value)
            if missing:
                raise AlertMessageError(
                    f"Unable to read an alert history entry: it lacks {sorted(missing)}."
                )
            time, user, action, text = (value[k] for k in ("time", "user", "action", "text"))
        elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 4:
            time, user, action, text = value
        else:
            raise AlertMessageError(
                f"Unable to read an alert history entry from {value!r}: give a dict with "
                "time, user, action and text."
            )
        return cls(_as_datetime(time), str(user), str(action), "" if text is None else str(text))


@dataclasses.dataclass(frozen=True)
class AlertMessage:
    """What an alert e-mail and the significant-event report say about one alert.

    Built by the alert service from its tables; it holds no patient name, ID or birth
    date (the registry stores none; :meth:`from_dict` refuses them).

    Attributes
    ----------
    alert_id : int
        The alert's id.
    rule_id, rule_version, rule_title, pack : str
        The rule that fired: its id, version, title and rule pack.
    quantity : str
        The quantity compared, by its Kerma name (``dap_total_gym2``) or a label.
    value : float
        The study's (or patient window's) value, in ``unit``.
    unit : str
        The unit of ``value`` and ``threshold`` as stored (canonical, e.g. ``Gy·m²``);
        e-mails and reports show :attr:`shown_value` in :attr:`shown_unit`.
    threshold : float
        The threshold crossed, in ``unit``.
    threshold_source : str
        Where the threshold comes from (report, law and paragraph, local decision).
    device_name : str
        The device (room).
    study_date : datetime.date or None
        The study date.
    study_instance_uid : str
        The study's (0020,000D) Study Instance UID (for the link).
    modality, exam, protocol : str
        The modality, the standard exam and the acquisition protocol.
    pseudonym_short : str
        A short form of the patient pseudonym (keyed hash).
    age_band, sex : str
        The patient's age band and sex.
    state : str
        The alert state (open, under review, closed).
    outcome : str or None
        The closing outcome (``notified_to_authority`` for a significant event).
    history : list of HistoryEntry
        The review history, oldest first.
    """

    alert_id: int
    rule_id: str
    rule_version: str
    rule_title: str
    pack: str
    quantity: str
    value: float
    unit: str
    threshold: float
    threshold_source: str
    device_name: str
    study_date: dt.date | None
    study_instance_uid: str
    modality: str
    exam: str
    protocol: str
    pseudonym_short: str
    age_band: str
    sex: str
    state: str
    outcome: str | None = None
    history: list[HistoryEntry] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertMessage:
        """Return the message of an alert from the alert service's dict.

        Parameters
        ----------
        d : mapping
            Exactly the fields of this class; ``study_date`` a date or ISO text,
            ``history`` a list of dicts (``time``, ``user``, ``action``, ``text``).

        Raises
        ------
        AlertMessageError
            When a key identifies a patient (:data:`PATIENT_IDENTIFYING_KEYS`), a key is
            unknown or missing, or a value cannot be read.
        """
        phi = sorted(PATIENT_IDENTIFYING_KEYS & set(d))
        if phi:
            raise AlertMessageError(
                f"Unable to build an alert message: it holds patient-identifying fields "
                f"{phi}; alert messages carry only the pseudonym, age band and sex."
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise AlertMessageError(
                f"Unable to build an alert message: unknown fields {unknown} (expected {names})."
            )
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in d]
        if missing:
            raise AlertMessageError(f"Unable to build an alert message: missing {missing}.")
        try:
            values: dict[str, Any] = {n: d[n] for n in names if n in d}
            values["alert_id"] = int(values["alert_id"])
            values["value"] = float(values["value"])
            values["threshold"] = float(values["threshold"])
            for name in names:
                if name in {"alert_id", "value", "threshold", "study_date", "history", "outcome"}:
                    continue
                values[name] = "" if values[name] is None else str(values[name])
            values["study_date"] = _as_date(values["study_date"])
            values["history"] = [HistoryEntry.from_value(h) for h in values.get("history") or []]
            outcome = values.get("outcome")
            values["outcome"] = None if outcome in (None, "") else str(outcome)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, AlertMessageError):
                raise
            raise AlertMessageError(
                f"Unable to build the message of alert {d.get('alert_id')!r}: {exc}."
            ) from exc
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the message as JSON-safe values (dates as ISO text); :meth:`from_dict` inverts."""
        out = dataclasses.asdict(self)
        out["study_date"] = self.study_date.isoformat() if self.study_date else None
        out["history"] = [
            {"time": h.time.isoformat(), "user": h.user, "action": h.action, "text": h.text}
            for h in self.history
        ]
        return out

    @property
    def shown_unit(self) -> str:
        """The unit e-mails and reports show: the quantity's display unit (KAP
        ``"Gy·cm²"``, as the pages and ``kerma alerts``; :func:`kerma.units.display_unit`),
        ``""`` for a count (UCUM ``"1"``), else :attr:`unit`."""
        return display_unit(self.quantity, self.unit)

    @property
    def shown_value(self) -> float:
        """:attr:`value` in :attr:`shown_unit` (KAP Gy·m² × 10⁴ = Gy·cm²)."""
        known = QUANTITIES.get(self.quantity)
        return self.value * known.factor if known is not None else self.value

    @property
    def shown_threshold(self) -> float:
        """:attr:`threshold` in :attr:`shown_unit`."""
        known = QUANTITIES.get(self.quantity)
        return self.threshold * known.factor if known is not None else self.threshold

    @property
    def quantity_label(self) -> str:
        """The quantity's label (``"KAP total"``) from :data:`kerma.units.QUANTITIES`."""
        known = QUANTITIES.get(self.quantity)
        return known.label if known is not None else self.quantity


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    """What one :func:`deliver_pending` run did.

    Attributes
    ----------
    sent : int
        E-mails the server accepted (a digest counts once).
    failed : int
        E-mails that failed this time (kept, retried later).
    rows_sent : int
        Outbox rows marked sent (a digest marks one row per alert).
    pending : int
        Rows still waiting after this run.
    errors : list of str
        The error of each failed e-mail.
    configured : bool
        ``False`` when no SMTP server is set (nothing was tried).
    """

    sent: int = 0
    failed: int = 0
    rows_sent: int = 0
    pending: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    configured: bool = True


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as ``kerma alerts outbox`` lists it."""

    id: int
    alert_id: int
    recipient: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None


# -- formatting -------------------------------------------------------------------------------


def format_value(value: float, digits: int = VALUE_DIGITS) -> str:
    """Return ``value`` to ``digits`` significant digits, never in exponent form."""
    text = f"{value:.{digits}g}"
    if "e" in text:
        text = f"{value:.0f}" if abs(value) >= 1 else f"{value:.{digits}f}".rstrip("0")
    return text


def study_link(base_url: str, study_instance_uid: str) -> str:
    """Return the web link of a study: ``{base_url}/studies/{uid}``."""
    return f"{base_url.rstrip('/')}/studies/{quote(study_instance_uid, safe='.')}"


@cache
def template_environment(*, autoescape: bool) -> jinja2.Environment:
    """Return the Jinja2 environment of the packaged templates (``kerma/services/templates``)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kerma.services", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_subject(message: AlertMessage) -> str:
    """Return the subject of an alert e-mail (rule and device; nothing about the patient).

    ASCII separators only: Python's header folding drops the space between two adjacent
    RFC 2047 encoded words.
    """
    return (
        f"[Kerma] High-dose alert #{message.alert_id}: {message.rule_title} - {message.device_name}"
    )


def render_alert_text(message: AlertMessage, *, base_url: str) -> str:
    """Return the plain-text body of one alert's e-mail."""
    template = template_environment(autoescape=False).get_template("alert_email.txt")
    return template.render(
        m=message,
        quantity_label=message.quantity_label,
        fmt=format_value,
        link=study_link(base_url, message.study_instance_uid),
    )


def render_digest_text(messages: Sequence[AlertMessage], *, day: dt.date, base_url: str) -> str:
    """Return the plain-text body of a daily digest listing ``messages``."""
    template = template_environment(autoescape=False).get_template("alert_digest.txt")
    return template.render(
        messages=list(messages),
        day=day.isoformat(),
        labels=[m.quantity_label for m in messages],
        links=[study_link(base_url, m.study_instance_uid) for m in messages],
        fmt=format_value,
    )


def build_email(
    *, sender: str, recipient: str, subject: str, text: str, alert_ids: Iterable[int]
) -> EmailMessage:
    """Return the e-mail (RFC 5322, UTF-8) with an ``Auto-Submitted`` header (RFC 3834)."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = recipient
    email["Subject"] = subject
    email["Date"] = formatdate(localtime=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "kerma.invalid"
    email["Message-ID"] = make_msgid("kerma-alert", domain=domain)
    email["Auto-Submitted"] = "auto-generated"
    email["X-Kerma-Alert-Ids"] = ", ".join(str(i) for i in alert_ids)
    email.set_content(text)
    return email


# -- recipients and queue ---------------------------------------------------------------------


def parse_recipients(values: Iterable[str], *, what: str = "recipients") -> list[str]:
    """Return the addresses of ``values`` (``Name <a@b>`` or ``a@b``), deduplicated.

    Raises
    ------
    ConfigurationError
        When a value is not an e-mail address (say it at configuration time, not when
        an alert fires).
    """
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        address = parseaddr(value)[1]
        local, at, domain = address.rpartition("@")
        if not (at and local and domain) or any(c.isspace() for c in address):
            raise ConfigurationError(
                f"Unable to use {value!r} in the {what}: it is not an e-mail address "
                "(write name@example.org)."
            )
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out


def enqueue(
    session: Session,
    message: AlertMessage,
    recipients: Sequence[str],
    *,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Queue the e-mail of an alert: one outbox row per recipient, once per alert.

    A database insert in the caller's transaction, nothing more (no network): call it
    where the alert is created; run :func:`deliver_pending` after the commit. A second
    call for the same alert and recipient inserts nothing, so re-evaluations, re-imports
    and views never send an alert twice.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        The caller's unit of work (not committed here).
    message : AlertMessage
        The alert.
    recipients : sequence of str
        The rule's recipients; when empty, ``settings.alert_default_recipients``.
    settings : Settings, optional
        For the default recipients.
    now : datetime.datetime, optional
        Time of queueing (timezone-aware; default now). Its local day is the digest day.

    Returns
    -------
    int
        Rows inserted (0 when the alert was queued before or nobody receives it).

    Raises
    ------
    ConfigurationError
        When a recipient is not an e-mail address.
    """
    chosen = list(recipients) or (list(settings.alert_default_recipients) if settings else [])
    addresses = parse_recipients(chosen)
    if not addresses:
        logger.info("alert %s: no recipients, no e-mail queued", message.alert_id)
        return 0
    moment = _utc(now)
    return outbox_db.add_outbox_rows(
        session,
        alert_id=message.alert_id,
        recipients=addresses,
        subject=render_subject(message),
        message=message.to_dict(),
        digest_day=(now or moment).astimezone().date(),
        now=moment,
    )


# -- delivery ---------------------------------------------------------------------------------


def retry_delay_s(attempts: int, *, first_s: float, max_s: float) -> float:
    """Return the delay after the ``attempts``-th failure: ``first_s · 2^(attempts-1)``, capped."""
    return float(min(first_s * 2 ** max(attempts - 1, 0), max_s))


def open_smtp(settings: Settings) -> smtplib.SMTP:
    """Connect and log in to ``settings.smtp_host`` with the configured security.

    Raises
    ------
    ConfigurationError
        When no SMTP host is set.
    OSError, smtplib.SMTPException
        When the server cannot be reached, refuses TLS or the login.
    """
    if not settings.smtp_host:
        raise ConfigurationError("Unable to send e-mail: KERMA_SMTP_HOST is not set.")
    port = settings.smtp_port or DEFAULT_SMTP_PORTS[settings.smtp_security]
    timeout = settings.smtp_timeout_s
    smtp: smtplib.SMTP
    cafile = str(settings.smtp_tls_ca) if settings.smtp_tls_ca else None
    context = ssl.create_default_context(cafile=cafile)  # verifies the host name
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, port, timeout=timeout)
    try:
        smtp.ehlo()
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_username, password)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _describe(exc: BaseException) -> str:
    """Return a one-line description of a delivery error."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]


def deliver_pending(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    flush_digest: bool = False,
    limit: int | None = None,
    connect: Callable[[Settings], smtplib.SMTP] = open_smtp,
) -> DeliveryResult:
    """Send the outbox rows that are due; never raise because the mail server failed.

    Rows are claimed in one short transaction, sent over one SMTP connection, and the
    outcome recorded in another, so no database lock is held while talking to the
    server. With ``settings.alert_digest``, each recipient gets one e-mail per day
    listing that day's alerts, once the day is over (or at once with
    ``flush_digest``). A failure (server down, TLS or login refused, recipient refused)
    counts an attempt, keeps the error and schedules the row again after
    :func:`retry_delay_s`.

    Parameters
    ----------
    session_factory : sessionmaker
        Writing sessions of the registry.
    settings : Settings
        SMTP server, sender, base URL, digest and retry settings.
    now : datetime.datetime, optional
        The current time (timezone-aware; default now).
    flush_digest : bool, optional
        Send today's digest too (default ``False``).
    limit : int, optional
        At most this many rows (ignored with the daily digest).
    connect : callable, optional
        Opens the SMTP connection (default :func:`open_smtp`).

    Returns
    -------
    DeliveryResult
        Counts and errors; ``configured=False`` when ``KERMA_SMTP_HOST`` is unset.
    """
    moment = _utc(now)
    if not settings.smtp_host:
        with session_scope(session_factory) as session:
            pending = outbox_db.count_by_status(session).get(outbox_db.STATUS_PENDING, 0)
        return DeliveryResult(pending=pending, configured=False)
    before_day = None
    if settings.alert_digest:
        limit = None  # a day's digest is one e-mail: never split it across runs
        if not flush_digest:
            before_day = (now or moment).astimezone().date()
    lease = moment + dt.timedelta(seconds=CLAIM_LEASE_S)
    with session_scope(session_factory) as session:
        rows = outbox_db.claim_rows(
            session, now=moment, lease_until=lease, before_day=before_day, limit=limit
        )
    batches = _batches(
        rows, digest=settings.alert_digest, base_url=settings.base_url, sender=settings.smtp_sender
    )
    outcomes: list[tuple[list[int], str | None]] = []
    if batches:
        try:
            smtp = connect(settings)
        except (OSError, smtplib.SMTPException) as exc:
            reason = f"unable to connect to {settings.smtp_host}: {_describe(exc)}"
            logger.warning("alert e-mail: %s", reason)
            outcomes = [(ids, reason) for ids, _ in batches]
        else:
            try:
                for ids, email in batches:
                    outcomes.append((ids, _send(smtp, email)))
            finally:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
    sent = failed = rows_sent = 0
    errors: list[str] = []
    with session_scope(session_factory) as session:
        attempts = outbox_db.attempts_of(session, row_ids=[i for ids, _ in outcomes for i in ids])
        for ids, error in outcomes:
            if error is None:
                outbox_db.mark_sent(session, row_ids=ids, now=moment)
                sent += 1
                rows_sent += len(ids)
                continue
            failed += 1
            errors.append(error)
            for row_id in ids:
                delay = retry_delay_s(
                    attempts.get(row_id, 0) + 1,
                    first_s=settings.alert_mail_retry_s,
                    max_s=settings.alert_mail_retry_max_s,
                )
                outbox_db.mark_failed(
                    session,
                    row_id=row_id,
                    error=error,
                    next_attempt_at=moment + dt.timedelta(seconds=delay),
                )
        pending = outbox_db.count_by_status(session).get(outbox_db.STATUS_PENDING, 0)
    return DeliveryResult(
        sent=sent, failed=failed, rows_sent=rows_sent, pending=pending, errors=errors
    )


def deliver_after_commit(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> Future[DeliveryResult]:
    """Run :func:`deliver_pending` in a thread once ``session``'s transaction commits.

    For the ingest path: call it beside :func:`enqueue`; the import's transaction is
    not delayed, and nothing is sent when it rolls back (the future is cancelled). The
    thread is not a daemon, so a command finishes sending (at most one connection
    timeout when the server is down) before the process exits.

    Returns
    -------
    concurrent.futures.Future
        Resolves to the :class:`DeliveryResult`; cancelled on rollback.
    """
    future: Future[DeliveryResult] = Future()

    def run() -> None:
        """Deliver and hand the outcome to the future (the thread's boundary)."""
        try:
            future.set_result(deliver_pending(session_factory, settings))
        except Exception as exc:  # a thread's boundary: log, never kill the process
            logger.exception("alert e-mail delivery failed")
            future.set_exception(exc)

    def on_commit(_session: Session) -> None:
        """Start the delivery thread."""
        event.remove(session, "after_rollback", on_rollback)
        if future.set_running_or_notify_cancel():
            threading.Thread(target=run, name="kerma-alert-mail").start()

    def on_rollback(_session: Session) -> None:
        """Cancel: the alerts were not stored."""
        event.remove(session, "after_commit", on_commit)
        future.cancel()

    event.listen(session, "after_commit", on_commit, once=True)
    event.listen(session, "after_rollback", on_rollback, once=True)
    return future


def _send(smtp: smtplib.SMTP, email: EmailMessage) -> str | None:
    """Send one e-mail; return ``None`` or the error (never raise for a server failure)."""
    try:
        refused = smtp.send_message(email)
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("alert e-mail to %s failed: %s", email["To"], _describe(exc))
        return _describe(exc)
    if refused:
        return f"recipient refused: {refused}"
    return None


def _batches(
    rows: Sequence[Any], *, digest: bool, base_url: str, sender: str
) -> list[tuple[list[int], EmailMessage]]:
    """Return ``(row ids, e-mail)`` of claimed rows: one per row, or one per digest day."""

    def email(recipient: str, subject: str, text: str, alert_ids: list[int]) -> EmailMessage:
        """Return one e-mail from ``sender``."""
        return build_email(
            sender=sender, recipient=recipient, subject=subject, text=text, alert_ids=alert_ids
        )

    out: list[tuple[list[int], EmailMessage]] = []
    if not digest:
        for row in rows:
            message = AlertMessage.from_dict(row.message)
            text = render_alert_text(message, base_url=base_url)
            out.append(([row.id], email(row.recipient, row.subject, text, [row.alert_id])))
        return out
    groups: dict[tuple[str, dt.date], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.recipient, _as_date(row.digest_day) or dt.date.min), []).append(row)
    for (recipient, day), members in groups.items():
        messages = [AlertMessage.from_dict(r.message) for r in members]
        text = render_digest_text(messages, day=day, base_url=base_url)
        subject = f"[Kerma] High-dose alerts of {day.isoformat()}: {len(messages)}"
        ids = [r.id for r in members]
        out.append((ids, email(recipient, subject, text, [r.alert_id for r in members])))
    return out


# -- listing ----------------------------------------------------------------------------------


def list_outbox(
    session: Session, *, status: str | None = None, limit: int | None = None
) -> list[OutboxEntry]:
    """Return the outbox rows, pending first then newest first (``kerma alerts outbox``)."""
    return [
        OutboxEntry(
            id=int(r.id),
            alert_id=int(r.alert_id),
            recipient=r.recipient,
            subject=r.subject,
            status=r.status,
            attempts=int(r.attempts),
            next_attempt_at=_as_datetime(r.next_attempt_at) if r.next_attempt_at else None,
            last_error=r.last_error,
            created_at=_as_datetime(r.created_at),
            sent_at=_as_datetime(r.sent_at) if r.sent_at else None,
        )
        for r in outbox_db.list_rows(session, status=status, limit=limit)
    ]


def retry_now(session: Session, *, now: dt.datetime | None = None) -> int:
    """Make every pending e-mail due now (``kerma alerts outbox --retry``); return how many."""
    return outbox_db.make_due(session, now=_utc(now))


# -- value conversion -------------------------------------------------------------------------


def _utc(now: dt.datetime | None) -> dt.datetime:
    """Return ``now`` (default: the current time) in UTC, as the outbox stores times."""
    moment = now or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        raise AlertMessageError(f"Unable to use the naive time {moment}: give a time zone.")
    return moment.astimezone(dt.UTC)


def _as_date(value: Any) -> dt.date | None:
    """Return a date from a date, a date-time or ISO text (``None`` stays ``None``)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _as_datetime(value: Any) -> dt.datetime:
    """Return a timezone-aware date-time from a date-time or ISO text (naive = UTC)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        moment = dt.datetime.fromisoformat(value)
    else:
        raise AlertMessageError(f"Unable to read {value!r} as a date-time.")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)

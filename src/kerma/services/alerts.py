"""Alerts: evaluation at ingest and on demand, alert records, review and the review trail.

The use cases, once each, for the CLI (``kerma alerts ...``), the web app and
:class:`kerma.Registry`:

- :func:`evaluate_studies` evaluates the rules in force on some studies inside the
  caller's transaction and records alerts: keyed by (rule id, rule version, subject),
  so the same rule never alerts twice on the same study (or device-exam group, or
  patient window); a changed study updates its open alert's values and appends an
  ``updated`` entry to the history;
- :func:`evaluate_after_commit` is the ingest hook
  (:class:`kerma.ingest.pipeline.Importer` ``after_commit``): it runs in its own
  transaction after the object's transaction committed, logs any error and never
  raises, so an alert problem never fails or blocks an import; then it calls every
  :data:`on_new_alert` callable once per new alert;
- :func:`recheck` re-evaluates the registry in batches of studies (date order);
- :func:`review_alert`, :func:`add_note`, :func:`close_alert` move an alert through
  ``open`` -> ``under_review`` -> ``closed`` (outcome and justification mandatory) and
  append hash-chained history entries; :func:`verify_history` recomputes the chain.

May import ``kerma.db``, ``kerma.analysis``, ``kerma.records``, ``kerma.config`` and
``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.orm import Session, sessionmaker

from kerma.analysis.alerts import (
    SUBJECT_GROUP,
    SUBJECT_PATIENT,
    AlertRule,
    Crossing,
    RuleSet,
    age_band,
    evaluate_cumulative,
    evaluate_device_history,
    evaluate_drl_group,
    find_drl,
    in_scope,
    load_rules,
    rules_frame,
)
from kerma.analysis.alerts import (
    evaluate_studies as evaluate_rules,
)
from kerma.config import Settings
from kerma.db import alerts as store
from kerma.db.session import session_scope
from kerma.errors import AlertReviewError, KermaError, NotFoundError
from kerma.records import display_pseudonym

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "MESSAGE_KEYS",
    "AlertContext",
    "AlertOutcome",
    "AlertReviewError",
    "AlertState",
    "AlertWindow",
    "EvaluationResult",
    "VerifyResult",
    "add_note",
    "alert_history",
    "alert_message",
    "alert_window",
    "close_alert",
    "count_alerts",
    "default_user",
    "evaluate_after_commit",
    "evaluate_studies",
    "get_alert",
    "list_alerts",
    "make_context",
    "notify_new",
    "on_new_alert",
    "recheck",
    "review_alert",
    "rules_table",
    "verify_history",
]

#: Callables run once per new alert (never on an update or a recheck that finds the
#: alert already recorded), after the transaction that recorded it committed; each gets
#: the alert id. The notification module (e-mail outbox) appends itself here. A callable
#: that raises is logged and the others still run.
on_new_alert: list[Callable[[int], object]] = []

#: User name of the entries Kerma writes itself (created, updated).
SYSTEM_USER: Final = "kerma"

#: Studies evaluated per transaction by :func:`recheck`.
BATCH_SIZE: Final = 500


class AlertState(StrEnum):
    """Review states of an alert."""

    OPEN = "open"
    UNDER_REVIEW = "under_review"
    CLOSED = "closed"


class AlertOutcome(StrEnum):
    """Outcomes of a closed alert."""

    NO_ACTION = "no_action"
    OPTIMISATION = "optimisation"
    NOTIFIED_TO_AUTHORITY = "notified_to_authority"


@dataclass
class AlertContext:
    """The rules in force and the DRL rows they compare with (made once per process).

    Attributes
    ----------
    rules : RuleSet
    default_drl_set : str
        ``Settings.drl_set``, for rules without their own ``drl_set``.
    drl_extra_paths : list
        Site DRL tables (``Settings.drl_extra_paths``).
    """

    rules: RuleSet
    default_drl_set: str = "EU"
    drl_extra_paths: list[Any] = field(default_factory=list)
    settings: Settings | None = None
    _drls: dict[str, pd.DataFrame] | None = None

    def drls(self) -> dict[str, pd.DataFrame]:
        """Return the selected DRL rows per DRL set the rules use (loaded on first use)."""
        if self._drls is None:
            from kerma.analysis.reference import load_drls, select_drls

            sets = {
                r.drl_set or self.default_drl_set
                for r in self.rules.rules
                if r.kind in ("drl_multiple", "drl_group")
            }
            self._drls = {}
            if sets:
                every = load_drls(extra_paths=self.drl_extra_paths)
                for name in sets:
                    self._drls[name] = select_drls(every, name)
        return self._drls


def make_context(
    settings: Settings | None = None, session_factory: sessionmaker[Session] | None = None
) -> AlertContext:
    """Return the alert context of ``settings`` (rules from ``KERMA_ALERT_RULES``).

    With ``session_factory``, the overrides an admin saved in the registry (rules
    disabled, thresholds/factors replaced; :mod:`kerma.services.web_config`, issue #13)
    are applied, and the DRL set chosen there replaces ``KERMA_DRL_SET``.

    Raises
    ------
    kerma.errors.ConfigurationError
        When a rule file cannot be read or a rule is invalid.
    """
    if settings is None:
        return AlertContext(load_rules())
    rules = load_rules(settings.alert_rules, anlage14=settings.alert_anlage14)
    if session_factory is not None:
        from kerma.services import web_config

        settings = web_config.effective_settings(settings, session_factory)
        overrides = web_config.load_alert_overrides(session_factory)
        rules = web_config.apply_alert_overrides(rules, overrides)
    return AlertContext(
        rules,
        default_drl_set=settings.drl_set,
        drl_extra_paths=list(settings.drl_extra_paths),
        settings=settings,
    )


def default_user() -> str:
    """Return the OS user name (the reviewer when ``--user`` is not given)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- evaluation ------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """What one evaluation recorded: new and updated alert ids, studies evaluated."""

    new: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    studies: int = 0

    def add(self, other: EvaluationResult) -> None:
        """Add another result's counts."""
        self.new.extend(other.new)
        self.updated.extend(other.updated)
        self.studies += other.studies


def _history_crossings(
    session: Session, rules: Sequence[AlertRule], studies: list[dict[str, Any]], ctx: AlertContext
) -> list[Crossing]:
    """Return the crossings of the rules that read the registry (history, group, patient)."""
    found: list[Crossing] = []
    drls = None
    for rule in rules:
        if rule.kind == "device_history":
            for study in studies:
                if study.get(rule.quantity) is None or not study.get("standard_exam"):
                    continue
                if not in_scope(rule, study):  # before the query: most studies are not
                    continue
                previous = store.previous_values(
                    session, study=study, quantity=rule.quantity, limit=rule.history
                )
                crossing = evaluate_device_history(rule, study, previous)
                if crossing is not None:
                    found.append(crossing)
        elif rule.kind == "drl_group":
            drls = drls if drls is not None else ctx.drls()
            rows = drls.get(rule.drl_set or ctx.default_drl_set)
            if rows is None or rule.drl_quantity is None:
                continue
            for study in studies:
                if study.get(rule.quantity) is None or not study.get("standard_exam"):
                    continue
                if not in_scope(rule, study):
                    continue
                drl = find_drl(
                    rows,
                    quantity=rule.drl_quantity,
                    exam=study.get("standard_exam"),
                    age_years=study.get("patient_age_years"),
                    study_date=study.get("study_date"),
                )
                if drl is None:
                    continue
                window = store.window_values(
                    session, study=study, quantity=rule.quantity, size=rule.group_size
                )
                crossing = evaluate_drl_group(rule, study, window, drl)
                if crossing is not None:
                    found.append(crossing)
        elif rule.kind == "cumulative":
            for study in studies:
                date = study.get("study_date")
                if study.get("patient_id") is None or date is None:
                    continue
                if rule.quantity != "count" and study.get(rule.quantity) is None:
                    continue
                if not in_scope(rule, study):
                    continue
                patient_rows = store.patient_window(
                    session,
                    patient_id=int(study["patient_id"]),
                    start=date - dt.timedelta(days=rule.window_days - 1),
                    end=date,
                    families=list(rule.scope.modalities),
                    quantity=None if rule.quantity == "count" else rule.quantity,
                )
                crossing = evaluate_cumulative(rule, study, patient_rows)
                if crossing is not None:
                    found.append(crossing)
    return found


def evaluate_studies(
    session: Session,
    study_ids: Iterable[int],
    *,
    context: AlertContext,
    rule_id: str | None = None,
) -> EvaluationResult:
    """Evaluate the rules on some studies and record the alerts (caller's transaction).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        The open unit of work (never committed here).
    study_ids : iterable of int
        Studies to evaluate (missing ids are skipped).
    context : AlertContext
        Rules and DRLs.
    rule_id : str, optional
        Evaluate only this rule.

    Returns
    -------
    EvaluationResult
        Ids of the alerts created and updated.

    Raises
    ------
    kerma.errors.NotFoundError
        When ``rule_id`` is not a rule in force.
    """
    rules: Sequence[AlertRule] = context.rules.rules
    if rule_id is not None:
        rule = context.rules.get(rule_id)
        if rule is None:
            raise NotFoundError(
                f"Unable to evaluate rule {rule_id!r}: no such rule in force (see "
                "'kerma alerts rules')."
            )
        rules = [rule]
    result = EvaluationResult()
    session.flush()
    for batch in store.chunks(study_ids):
        studies = store.study_rows(session, study_ids=batch)
        if not studies:
            continue
        result.studies += len(studies)
        need_events = any(r.level == "event" for r in rules)
        events = store.event_rows(session, study_ids=batch) if need_events else {}
        need_drls = any(r.kind == "drl_multiple" for r in rules)
        crossings = evaluate_rules(
            rules,
            studies,
            events,
            drls=context.drls() if need_drls else None,
            default_drl_set=context.default_drl_set,
        )
        crossings.extend(_history_crossings(session, rules, studies, context))
        by_id = {int(s["study_id"]): s for s in studies}
        now = dt.datetime.now(dt.UTC)
        for crossing in crossings:
            outcome = _record(session, crossing, by_id[crossing.study_id], now)
            if outcome is None:
                continue
            kind, alert_id = outcome
            (result.new if kind == "new" else result.updated).append(alert_id)
    return result


def _same(a: float | None, b: float | None) -> bool:
    """Return whether two stored values are equal (relative 1e-12)."""
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def _describe(rule: AlertRule, value: float, threshold: float) -> str:
    """Return the history text of a crossing in display units, as the pages and the
    command line show doses (``"dap_total_gym2 123.4 Gy·cm² > 50 Gy·cm²"``; a quantity
    outside :data:`kerma.units.QUANTITIES` keeps the rule's unit, and a count its bare
    number: ``"count 11 >= 10"``, :func:`kerma.units.display_unit`)."""
    from kerma.units import display_unit, to_display

    unit = display_unit(rule.quantity, rule.unit)
    shown, limit = to_display(rule.quantity, value), to_display(rule.quantity, threshold)
    suffix = f" {unit}" if unit else ""
    return f"{rule.quantity} {shown:.6g}{suffix} {rule.operator} {limit:.6g}{suffix}"


def _record_window(
    session: Session, alert_id: int, subject_kind: str, detail: dict[str, Any]
) -> None:
    """Store a patient alert's window studies (``alert_study``): each study's site then
    sees the alert (:func:`kerma.db.alerts.site_condition`, issue #15). Group and
    single-study alerts keep their study's (or device's) site only."""
    if subject_kind == SUBJECT_PATIENT:
        ids = [int(i) for i in detail.get("window_study_ids") or []]
        store.set_alert_studies(session, alert_id=alert_id, study_ids=ids)


def _record(
    session: Session, crossing: Crossing, study: dict[str, Any], now: dt.datetime
) -> tuple[str, int] | None:
    """Create or update the alert of a crossing; return ("new"|"updated", id) or ``None``."""
    rule = crossing.rule
    key = crossing.subject_key
    if crossing.subject_kind == SUBJECT_PATIENT:
        existing = None
        # one episode per patient and rule even when two ingest processes evaluate
        # the same patient's studies at once (issue #15)
        store.lock_patient_rule(session, rule_id=rule.rule_id, patient_id=int(study["patient_id"]))
        if study.get("study_date") is not None:
            existing = store.find_patient_episode(
                session,
                rule_id=rule.rule_id,
                rule_version=rule.version,
                patient_id=int(study["patient_id"]),
                study_date=study["study_date"],
                window_days=rule.window_days,
            )
        key = existing.subject_key if existing is not None else f"{key}:{crossing.study_id}"
    else:
        existing = store.get_alert_by_key(
            session, rule_id=rule.rule_id, rule_version=rule.version, subject_key=key
        )
    detail = _jsonable(crossing.detail)
    if existing is None:
        alert = store.add_alert(
            session,
            rule_id=rule.rule_id,
            rule_version=rule.version,
            rule_title=rule.title,
            pack=rule.pack,
            subject_kind=crossing.subject_kind,
            subject_key=key,
            study_id=crossing.study_id,
            patient_id=study.get("patient_id"),
            device_id=study.get("device_id"),
            study_date=study.get("study_date"),
            modality_family=study.get("modality_family"),
            quantity=rule.quantity,
            value=crossing.value,
            threshold=crossing.threshold,
            unit=rule.unit,
            threshold_source=rule.source,
            detail=detail,
            state=AlertState.OPEN.value,
            outcome=None,
            created_at=now,
            updated_at=now,
        )
        _record_window(session, alert.id, crossing.subject_kind, detail)
        store.append_history(
            session,
            alert=alert,
            action="created",
            user_name=SYSTEM_USER,
            text=_describe(rule, crossing.value, crossing.threshold),
            at=now,
        )
        return "new", alert.id
    if existing.state == AlertState.CLOSED:
        return None
    if crossing.subject_kind == SUBJECT_GROUP and crossing.study_id != existing.study_id:
        earlier = (
            (study.get("study_date"), crossing.study_id)
            < (
                existing.study_date,
                existing.study_id or 0,
            )
            if study.get("study_date") and existing.study_date
            else False
        )
        if not earlier:
            return None
        existing.study_id = crossing.study_id
        existing.study_date = study.get("study_date")
    if crossing.subject_kind == SUBJECT_PATIENT and crossing.value <= existing.value:
        return None
    if (
        _same(existing.value, crossing.value)
        and _same(existing.threshold, crossing.threshold)
        and existing.detail == detail
    ):
        return None
    existing.value = crossing.value
    existing.threshold = crossing.threshold
    existing.detail = detail
    existing.updated_at = now
    _record_window(session, existing.id, crossing.subject_kind, detail)
    store.append_history(
        session,
        alert=existing,
        action="updated",
        user_name=SYSTEM_USER,
        text=_describe(rule, crossing.value, crossing.threshold),
        at=now,
    )
    return "updated", existing.id


def _jsonable(value: Any) -> Any:
    """Return ``value`` with dates and numpy scalars as JSON-ready values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def notify_new(alert_ids: Iterable[int]) -> None:
    """Call every :data:`on_new_alert` callable once per alert id (errors logged)."""
    for alert_id in alert_ids:
        for hook in list(on_new_alert):
            try:
                hook(alert_id)
            except Exception:  # boundary: a notifier must never fail ingest or recheck
                logger.exception("on_new_alert hook %r failed for alert %s", hook, alert_id)


def queue_alert_mail(
    session: Session,
    session_factory: sessionmaker[Session],
    alert_ids: Iterable[int],
    *,
    context: AlertContext,
) -> int:
    """Queue the e-mail of each new alert in the caller's transaction; send after commit.

    One outbox row per alert and recipient (the rule's ``recipients``, else
    ``KERMA_ALERT_DEFAULT_RECIPIENTS``; :func:`kerma.services.alert_notify.enqueue`),
    in the same transaction as the alert, so an alert is e-mailed once whatever
    re-import, recheck or view follows. When an SMTP host is configured, delivery
    starts in a thread once the transaction commits
    (:func:`~kerma.services.alert_notify.deliver_after_commit`): a mail server that is
    down never blocks or fails ingest; the rows wait in ``kerma alerts outbox``.
    A rule with an invalid recipient is logged and queues nothing (the alert stays).

    Returns
    -------
    int
        Outbox rows inserted.
    """
    from kerma.services import alert_notify

    ids = list(alert_ids)
    if not ids:
        return 0
    settings = context.settings
    queued = 0
    for alert_id in ids:
        data = alert_message(session, alert_id)
        rule = context.rules.get(data["rule_id"])
        recipients = list(rule.recipients) if rule is not None else []
        try:
            with session.begin_nested():
                queued += alert_notify.enqueue(
                    session,
                    alert_notify.AlertMessage.from_dict(data),
                    recipients,
                    settings=settings,
                )
        except KermaError as exc:
            logger.error("alert %s: no e-mail queued: %s", alert_id, exc)
    if queued and settings is not None and settings.smtp_host:
        alert_notify.deliver_after_commit(session, session_factory, settings)
    return queued


def report_message(
    session_or_registry: Any, alert_id: int
) -> tuple[Any, list[tuple[str, float, str]]]:
    """Return an alert's message and its study's dose quantities, for the report.

    The loader ``kerma alerts report ALERT_ID`` uses
    (:func:`kerma.services.alert_report.render_report`).

    Returns
    -------
    tuple
        (:class:`~kerma.services.alert_notify.AlertMessage`, list of (label, value,
        unit) in display units of :data:`kerma.units.QUANTITIES`: the study's other dose
        quantities, not the alert's own, which the report lists first).

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    """
    from kerma.services.alert_notify import AlertMessage
    from kerma.units import get_quantity, to_display

    if not isinstance(session_or_registry, Session):
        with session_or_registry.session(write=False) as session:
            return report_message(session, alert_id)
    session = session_or_registry
    message = AlertMessage.from_dict(alert_message(session, alert_id))
    alert = _alert_or_raise(session, alert_id)
    quantities: list[tuple[str, float, str]] = []
    for name, value in store.study_dose_values(session, study_id=alert.study_id):
        quantity = get_quantity(name)
        shown = to_display(name, value)
        if quantity is None or shown is None or name == message.quantity:
            continue  # the alert's own quantity is the report's first row already
        quantities.append((quantity.label, shown, quantity.display_unit))
    return message, quantities


#: How many times the after-commit evaluation runs when another process raced it.
EVALUATION_ATTEMPTS = 4


def evaluate_after_commit(
    session_factory: sessionmaker[Session], study_ids: Iterable[int], *, context: AlertContext
) -> EvaluationResult | None:
    """Evaluate the studies an import touched, in a transaction of its own; never raises.

    The ingest hook (``Importer(after_commit=...)``): runs after the object's
    transaction committed, so a failing rule, a database error or a bad rule file
    never undoes or blocks an import. Errors are logged (``kerma.services.alerts``)
    and ``None`` is returned; ``kerma alerts recheck`` evaluates the study again
    later. New alerts are passed to :data:`on_new_alert` after the commit.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    ids = sorted(set(study_ids))
    for attempt in range(1, EVALUATION_ATTEMPTS + 1):
        try:
            with session_scope(session_factory) as session:
                result = evaluate_studies(session, ids, context=context)
                queue_alert_mail(session, session_factory, result.new, context=context)
            break
        except (IntegrityError, OperationalError):
            # another ingest process recorded the same alert at the same moment (the
            # unique rule/subject key refused ours) or a deadlock: evaluating again
            # finds its alert and updates it (issue #15)
            if attempt == EVALUATION_ATTEMPTS:
                logger.exception(
                    "alert evaluation failed for studies %s; run 'kerma alerts recheck'", ids
                )
                return None
            logger.info("alert evaluation of studies %s raced another process; again", ids)
        except Exception:  # boundary: alert evaluation must never fail an import
            logger.exception(
                "alert evaluation failed for studies %s; run 'kerma alerts recheck'", ids
            )
            return None
    notify_new(result.new)
    return result


def recheck(
    session_factory: sessionmaker[Session],
    *,
    context: AlertContext,
    rule_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
    notify: bool = False,
    first_id: int | None = None,
    last_id: int | None = None,
) -> EvaluationResult:
    """Re-evaluate every patient study in batches (date order), one transaction per batch.

    An alert already recorded for the same rule version and subject is updated, never
    duplicated. A recheck announces nothing (issue #12: notifications are sent at
    ingest, "not on recheck"), unless ``notify`` is set: then :data:`on_new_alert` is
    called for the alerts it creates (e.g. after a rule changed, which gives it a new
    version), never for those already recorded.

    Parameters
    ----------
    rule_id : str, optional
        Only this rule (``kerma alerts recheck --rule R``).
    batch_size : int, optional
        Studies per transaction.
    progress : callable, optional
        ``progress(done, total)`` after each batch.
    notify : bool, optional
        Pass the new alerts to :data:`on_new_alert` (default ``False``).
    first_id, last_id : int, optional
        Only the studies with ``first_id <= id <= last_id`` (open ends when not given):
        one job of the job queue (:mod:`kerma.services.jobs`); ``progress`` still counts
        against every patient study.

    Raises
    ------
    kerma.errors.NotFoundError
        When ``rule_id`` is not a rule in force.
    """
    if rule_id is not None and context.rules.get(rule_id) is None:
        raise NotFoundError(
            f"Unable to recheck rule {rule_id!r}: no such rule in force (see 'kerma alerts rules')."
        )
    with session_scope(session_factory) as session:
        total = store.count_patient_studies(session)
    result = EvaluationResult()
    after: tuple[Any, int] | None = None
    while True:
        with session_scope(session_factory) as session:
            page = store.study_id_page(
                session, after=after, limit=batch_size, first_id=first_id, last_id=last_id
            )
            if not page:
                break
            batch = evaluate_studies(
                session, [i for _, i in page], context=context, rule_id=rule_id
            )
            if notify:
                queue_alert_mail(session, session_factory, batch.new, context=context)
        if notify:
            notify_new(batch.new)
        result.add(batch)
        after = page[-1]
        if progress is not None:
            progress(result.studies, total)
    logger.info(
        "rechecked %d studies: %d new alerts, %d updated",
        result.studies,
        len(result.new),
        len(result.updated),
    )
    return result


# -- review ----------------------------------------------------------------------------------


def _alert_or_raise(session: Session, alert_id: int) -> Any:
    """Return the alert of an id or raise :class:`NotFoundError`."""
    alert = store.get_alert(session, alert_id=alert_id)
    if alert is None:
        raise NotFoundError(
            f"Unable to find alert {alert_id}: no such alert (see 'kerma alerts list')."
        )
    return alert


def review_alert(session: Session, alert_id: int, *, user: str, note: str = "") -> None:
    """Put an open alert under review (``open`` -> ``under_review``), with an optional note.

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    AlertReviewError
        The alert is not open.
    """
    alert = _alert_or_raise(session, alert_id)
    if alert.state != AlertState.OPEN:
        raise AlertReviewError(f"Unable to review alert {alert_id}: it is {alert.state}, not open.")
    alert.state = AlertState.UNDER_REVIEW.value
    alert.updated_at = dt.datetime.now(dt.UTC)
    store.append_history(session, alert=alert, action="review", user_name=user, text=note)


def add_note(session: Session, alert_id: int, *, user: str, text: str) -> None:
    """Append a note to an alert's history (any state; the state does not change).

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    AlertReviewError
        The note is empty.
    """
    alert = _alert_or_raise(session, alert_id)
    if not text.strip():
        raise AlertReviewError(f"Unable to add a note to alert {alert_id}: the note is empty.")
    store.append_history(session, alert=alert, action="note", user_name=user, text=text.strip())


def close_alert(
    session: Session, alert_id: int, *, user: str, outcome: str, justification: str
) -> None:
    """Close an alert with an outcome and a justification (both mandatory).

    Parameters
    ----------
    outcome : str
        ``no_action``, ``optimisation`` or ``notified_to_authority`` (significant event
        notified, e.g. under StrlSchV § 108 / Directive 2013/59/Euratom Art. 63).
    justification : str
        Why; kept in the history.

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    AlertReviewError
        Closed already, unknown outcome, or no justification.
    """
    alert = _alert_or_raise(session, alert_id)
    if alert.state == AlertState.CLOSED:
        raise AlertReviewError(f"Unable to close alert {alert_id}: it is closed already.")
    try:
        chosen = AlertOutcome(outcome)
    except ValueError:
        raise AlertReviewError(
            f"Unable to close alert {alert_id}: outcome {outcome!r} is not one of "
            f"{', '.join(o.value for o in AlertOutcome)}."
        ) from None
    if not justification.strip():
        raise AlertReviewError(
            f"Unable to close alert {alert_id}: a justification is required (why this outcome; "
            "the authority and the audit read it)."
        )
    alert.state = AlertState.CLOSED.value
    alert.outcome = chosen.value
    alert.updated_at = dt.datetime.now(dt.UTC)
    store.append_history(
        session, alert=alert, action="close", user_name=user, text=justification.strip()
    )


@dataclass
class VerifyResult:
    """The outcome of :func:`verify_history`.

    Attributes
    ----------
    ok : bool
    entries : int
        History entries checked.
    broken_entry_id : int or None
        The first entry whose hash or link does not match (``None`` when ok).
    alert_id : int or None
        The alert of that entry, or of the first alert whose state disagrees with its
        last entry.
    reason : str
    """

    ok: bool
    entries: int
    broken_entry_id: int | None = None
    alert_id: int | None = None
    reason: str = ""


def verify_history(session: Session) -> VerifyResult:
    """Recompute the review trail's hash chain; report the first broken entry.

    Each entry's hash must equal SHA-256 of the previous entry's hash and its content
    (:func:`kerma.db.alerts.entry_hash`), and link to the previous entry: an edited
    entry breaks its own hash, a deleted one breaks the next entry's link. Then every
    alert's state and outcome must equal those of its last entry (catches a deleted
    last entry and an alert row edited directly).
    """
    prev = store.GENESIS_HASH
    count = 0
    for row in store.iter_history(session):
        count += 1
        if row.prev_hash != prev:
            return VerifyResult(
                False,
                count,
                row.id,
                row.alert_id,
                f"entry {row.id} does not follow the previous entry (an entry before it "
                "was deleted or edited)",
            )
        expected = store.entry_hash(
            row.prev_hash,
            alert_id=row.alert_id,
            at=row.at,
            user_name=row.user_name,
            action=row.action,
            state=row.state,
            outcome=row.outcome,
            text=row.text,
            value=row.value,
        )
        if expected != row.entry_hash:
            return VerifyResult(
                False, count, row.id, row.alert_id, f"entry {row.id} was altered (hash mismatch)"
            )
        prev = row.entry_hash
    after = 0
    while True:
        rows = store.last_history_per_alert(session, after_alert_id=after, limit=1000)
        if not rows:
            break
        for alert_id, state, outcome, last_state, last_outcome in rows:
            if last_state is None or state != last_state or outcome != last_outcome:
                return VerifyResult(
                    False,
                    count,
                    None,
                    alert_id,
                    f"alert {alert_id} is {state}/{outcome} but its history ends with "
                    f"{last_state}/{last_outcome} (history entry deleted or alert edited)",
                )
        after = rows[-1][0]
    return VerifyResult(True, count)


# -- reading -----------------------------------------------------------------------------------


def list_alerts(
    session: Session,
    *,
    flt: store.AlertFilter | None = None,
    limit: int = 100,
    offset: int = 0,
) -> pd.DataFrame:
    """Return one page of alerts (newest study first) as a DataFrame.

    Columns :data:`kerma.db.alerts.LIST_COLUMNS`: ``alert_id``, ``rule_id``, ``pack``,
    ``state``, ``outcome``, ``study_id``, ``study_date``, ``modality_family``,
    ``device_name``, ``standard_exam``, ``quantity``, ``value`` and ``threshold`` (in
    ``unit``, the quantity's canonical unit), ``subject_kind``, ``created_at``,
    ``updated_at``.
    """
    import pandas as pd

    rows = store.list_alerts(session, flt=flt or store.AlertFilter(), limit=limit, offset=offset)
    return pd.DataFrame(rows, columns=list(store.LIST_COLUMNS))


def count_alerts(session: Session, *, flt: store.AlertFilter | None = None) -> int:
    """Return how many alerts match the filter."""
    return store.count_alerts(session, flt=flt or store.AlertFilter())


def alert_history(session: Session, alert_id: int) -> list[dict[str, Any]]:
    """Return an alert's history, oldest first: ``at``, ``user``, ``action``, ``state``,
    ``outcome``, ``text``, ``value``, ``entry_hash``.

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    """
    _alert_or_raise(session, alert_id)
    return [
        {
            "at": row.at,
            "user": row.user_name,
            "action": row.action,
            "state": row.state,
            "outcome": row.outcome,
            "text": row.text,
            "value": row.value,
            "entry_hash": row.entry_hash,
        }
        for row in store.history_rows(session, alert_id=alert_id)
    ]


@dataclass(frozen=True)
class AlertWindow:
    """The studies an alert's value was found on (its window), as one caller may see them.

    Attributes
    ----------
    studies : list of dict
        :data:`kerma.db.alerts.WINDOW_STUDY_COLUMNS` of each study the caller may see,
        oldest first; ``value`` in the canonical unit of the alert's quantity, as the
        alert's ``value`` (``None`` for a count rule).
    other_sites : int
        How many studies of the window are of sites the caller may not see (or of no
        site): counted, never identified (issue #15).
    """

    studies: list[dict[str, Any]]
    other_sites: int


def alert_window(
    session: Session, alert_id: int, *, site_ids: Sequence[int] | None = None
) -> AlertWindow:
    """Return the studies of an alert's window that a caller of ``site_ids`` may see.

    The window is the alert's ``detail["window_study_ids"]``: a patient's studies
    within the rule's ``window_days`` (cumulative rules,
    :func:`kerma.analysis.alerts.evaluate_cumulative`) or a device's exam group
    (``drl_group``), as of the alert's last crossing. An alert without window (one
    study's value) has none.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
    alert_id : int
    site_ids : sequence of int, optional
        The sites the caller may see (:func:`kerma.services.sites.allowed_site_ids`);
        ``None`` (default): every site. A study of another site, or of no site, is
        only counted in ``other_sites``.

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    """
    alert = _alert_or_raise(session, alert_id)
    ids = (alert.detail or {}).get("window_study_ids") or []
    rows = store.window_studies(session, study_ids=[int(i) for i in ids], quantity=alert.quantity)
    if site_ids is None:
        return AlertWindow(rows, 0)
    allowed = set(site_ids)
    seen = [r for r in rows if r["site_id"] is not None and r["site_id"] in allowed]
    return AlertWindow(seen, len(rows) - len(seen))


def get_alert(
    session: Session, alert_id: int, *, site_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Return one alert with its context, window and history (``alert_message`` keys and more).

    Besides :data:`MESSAGE_KEYS`: ``subject_kind``, ``subject_key``, ``study_id``,
    ``detail``, ``created_at``, ``updated_at``, ``history_entries``, and
    ``window_studies`` / ``window_studies_other_sites`` (:func:`alert_window`). For a
    caller restricted to ``site_ids`` the window lists only those sites' studies, and
    ``detail["window_study_ids"]`` (and a group rule's ``trigger_study_id``) only their
    ids; the other sites' studies are a count (issue #15). The alert's ``value`` (the
    window's sum or count) is unchanged.

    Parameters
    ----------
    site_ids : sequence of int, optional
        The sites the caller may see; ``None`` (default): every site. The caller checks
        that the alert itself is of these sites
        (:func:`kerma.services.sites.get_alert_for` does both).

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    """
    alert = _alert_or_raise(session, alert_id)
    message = alert_message(session, alert_id)
    window = alert_window(session, alert_id, site_ids=site_ids)
    detail = dict(alert.detail or {})
    if site_ids is not None and "window_study_ids" in detail:
        shown = {int(r["study_id"]) for r in window.studies}
        detail["window_study_ids"] = [i for i in detail["window_study_ids"] if int(i) in shown]
        if detail.get("trigger_study_id") is not None and (
            int(detail["trigger_study_id"]) not in shown
        ):  # a group rule's first study above the trigger level
            detail["trigger_study_id"] = None
    message.update(
        {
            "subject_kind": alert.subject_kind,
            "subject_key": alert.subject_key,
            "study_id": alert.study_id,
            "detail": detail,
            "created_at": alert.created_at,
            "updated_at": alert.updated_at,
            "history_entries": alert_history(session, alert_id),
            "window_studies": window.studies,
            "window_studies_other_sites": window.other_sites,
        }
    )
    return message


#: Keys of :func:`alert_message` (the fields of the notification/report AlertMessage).
MESSAGE_KEYS: Final = (
    "alert_id",
    "rule_id",
    "rule_version",
    "rule_title",
    "pack",
    "quantity",
    "value",
    "unit",
    "threshold",
    "threshold_source",
    "device_name",
    "study_date",
    "study_instance_uid",
    "modality",
    "exam",
    "protocol",
    "pseudonym_short",
    "age_band",
    "sex",
    "state",
    "outcome",
    "history",
)


def alert_message(session_or_registry: Any, alert_id: int) -> dict[str, Any]:
    """Return what a notification or a significant-event report says about an alert.

    Never a patient name, ID or birth date: the patient is
    the short display form of the pseudonym (``P-…``,
    :func:`kerma.records.display_pseudonym`), an age band and the sex.

    Parameters
    ----------
    session_or_registry : Session or kerma.Registry
        An open session, or a registry (a read session is opened).
    alert_id : int

    Returns
    -------
    dict
        The keys of :data:`MESSAGE_KEYS`; ``history`` is a list of (time, user,
        action, text) tuples, oldest first; values in ``unit`` (canonical).

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    """
    if not isinstance(session_or_registry, Session):
        with session_or_registry.session(write=False) as session:
            return alert_message(session, alert_id)
    session = session_or_registry
    alert = _alert_or_raise(session, alert_id)
    facts = store.alert_context(session, alert=alert)
    pseudonym = facts.get("pseudonym")
    return {
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "rule_version": alert.rule_version,
        "rule_title": alert.rule_title,
        "pack": alert.pack,
        "quantity": alert.quantity,
        "value": alert.value,
        "unit": alert.unit,
        "threshold": alert.threshold,
        "threshold_source": alert.threshold_source,
        "device_name": facts.get("device_name"),
        "study_date": alert.study_date,
        "study_instance_uid": facts.get("study_instance_uid"),
        "modality": facts.get("modality"),
        "exam": facts.get("standard_exam"),
        "protocol": facts.get("acquisition_protocols"),
        "pseudonym_short": display_pseudonym(pseudonym),
        "age_band": age_band(facts.get("patient_age_years")),
        "sex": facts.get("patient_sex"),
        "state": alert.state,
        "outcome": alert.outcome,
        "history": [
            (row.at, row.user_name, row.action, row.text)
            for row in store.history_rows(session, alert_id=alert_id)
        ],
    }


def rules_table(context: AlertContext) -> pd.DataFrame:
    """Return the rules in force, one row each, with threshold and source.

    See :func:`kerma.analysis.alerts.rules_frame` for the columns.
    """
    return rules_frame(context.rules)

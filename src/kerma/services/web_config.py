"""Configuration an admin changes in the browser: site exam rules, DRL set, alert rules.

Issue #13 (admin pages). What an admin saves is kept in the registry database, so every
process that opens the registry (``kerma serve``, the CLI, the import workers) reads
the same configuration:

- **site standard-exam rules** (table ``site_exam_rule``, the ``[[rule]]`` format of
  the exam-rules TOML, :func:`kerma.analysis.exams.parse_rules`) are tried **before**
  the rules of ``KERMA_EXAM_RULES_PATH`` or the packaged defaults
  (:func:`kerma.services.derive.make_context`);
- the **DRL set** (``registry_setting`` ``web.drl_set``, e.g. ``"UK,EU"``) replaces
  ``KERMA_DRL_SET`` (:func:`effective_settings`);
- **alert-rule overrides** (``registry_setting`` ``web.alert_rule_overrides``): a rule
  disabled, or its fixed threshold (``threshold``/``cumulative`` rules) or factor
  (``drl_multiple``/``device_history`` rules) replaced (:func:`apply_alert_overrides`,
  used by :func:`kerma.services.alerts.make_context`).

Invalid input raises :class:`kerma.errors.ConfigurationError` with a sentence for the
admin; nothing is written then.

May import ``kerma.db``, ``kerma.analysis`` and ``kerma.errors``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.orm import Session, sessionmaker

from kerma.analysis.exams import RULE_FIELDS, ExamRule, parse_rules
from kerma.db import summary as setting_store
from kerma.db import web_config as store
from kerma.db.session import session_scope
from kerma.errors import ConfigurationError

if TYPE_CHECKING:
    from kerma.analysis.alerts import RuleSet
    from kerma.config import Settings

#: Where the site rules saved in the browser come from (``ExamRuleSet.sources``).
SITE_RULES_SOURCE: Final = "registry:site_exam_rule"
#: ``registry_setting`` key of the DRL set chosen in the browser.
DRL_SET_KEY: Final = "web.drl_set"
#: ``registry_setting`` key of the alert-rule overrides (JSON: rule id → override).
ALERT_OVERRIDES_KEY: Final = "web.alert_rule_overrides"
#: Rule kinds whose fixed threshold may be replaced / whose factor may be replaced.
THRESHOLD_KINDS: Final = ("threshold", "cumulative")
FACTOR_KINDS: Final = ("drl_multiple", "device_history")


# -- site exam rules ------------------------------------------------------------------------


def _rule_document(row: Any) -> dict[str, Any]:
    """Return one stored rule as a ``[[rule]]`` table of the exam-rules format."""
    doc: dict[str, Any] = {"name": row.name, "exam": row.exam, "level": row.level}
    if row.modality:
        doc["modality"] = row.modality
    for kind in ("any", "all", "none"):
        if row.conditions.get(kind):
            doc[kind] = dict(row.conditions[kind])
    return doc


def site_exam_rules(session: Session) -> list[ExamRule]:
    """Return the site rules saved in the registry, in order (empty when none).

    Raises
    ------
    kerma.errors.ConfigurationError
        When a stored rule no longer compiles (not possible through :func:`save_exam_rule`).
    """
    rows = store.site_exam_rules(session)
    return parse_rules({"rule": [_rule_document(r) for r in rows]}, source=SITE_RULES_SOURCE)


def load_site_exam_rules(session_factory: sessionmaker[Session]) -> list[ExamRule]:
    """Return :func:`site_exam_rules` read in a session of its own.

    A registry not yet migrated to ``0018_web_config`` has no table: no site rules.
    """
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        with session_scope(session_factory) as session:
            return site_exam_rules(session)
    except (OperationalError, ProgrammingError):
        return []


def site_exam_rule_rows(session: Session) -> list[dict[str, Any]]:
    """Return the stored site rules for display/editing.

    Each: ``id``, ``position``, ``name``, ``exam``, ``modality``, ``level``, ``field``
    and ``pattern`` (the first ``any`` condition), ``exclude`` (the ``none`` pattern on
    the same field), ``conditions`` (all of them as text), ``updated_by``, ``updated_at``.
    """
    rows = []
    for r in store.site_exam_rules(session):
        any_ = dict(r.conditions.get("any") or {})
        field, pattern = next(iter(any_.items()), ("text", ""))
        exclude = (r.conditions.get("none") or {}).get(field, "")
        text = "; ".join(
            f"{kind}(" + ", ".join(f"{f}~{p}" for f, p in table.items()) + ")"
            for kind, table in r.conditions.items()
            if table
        )
        rows.append(
            {
                "id": r.id,
                "position": r.position,
                "name": r.name,
                "exam": r.exam,
                "modality": r.modality or "",
                "level": r.level,
                "field": field,
                "pattern": pattern,
                "exclude": exclude,
                "conditions": text,
                "updated_by": r.updated_by,
                "updated_at": r.updated_at,
            }
        )
    return rows


def save_exam_rule(
    session: Session,
    *,
    name: str,
    exam: str,
    pattern: str,
    field: str = "text",
    modality: str = "",
    level: str = "both",
    exclude: str = "",
    rule_id: int | None = None,
    position: int | None = None,
    user: str,
) -> dict[str, Any]:
    """Validate and save one site rule (new when ``rule_id`` is ``None``).

    The rule matches when ``pattern`` is found in ``field`` (``any``), ``exclude`` (if
    given) is not (``none``), and the modality fully matches ``modality`` (if given);
    patterns are case-insensitive regular expressions (the exam-rules TOML format).

    Returns
    -------
    dict
        The rule as a ``[[rule]]`` table (for the audit log).

    Raises
    ------
    kerma.errors.ConfigurationError
        Empty name, exam or pattern; unknown field or level; a pattern that does not
        compile; a name another rule has; an unknown ``rule_id``; a position < 1.
    """
    name, exam, pattern, modality = name.strip(), exam.strip(), pattern.strip(), modality.strip()
    exclude = exclude.strip()
    if not name:
        raise ConfigurationError("The rule needs a name (written to each study it maps).")
    if not exam:
        raise ConfigurationError("The rule needs a standard exam name, e.g. 'CT Head'.")
    if not pattern:
        raise ConfigurationError("The rule needs a pattern (a regular expression).")
    if field not in RULE_FIELDS:
        raise ConfigurationError(f"Unknown field {field!r}; fields are {', '.join(RULE_FIELDS)}.")
    if position is not None and position < 1:
        raise ConfigurationError(f"Position {position} is not 1 or more.")
    conditions: dict[str, Any] = {"any": {field: pattern}}
    if exclude:
        conditions["none"] = {field: exclude}
    doc: dict[str, Any] = {"name": name, "exam": exam, "level": level, **conditions}
    if modality:
        doc["modality"] = modality
    parse_rules({"rule": [doc]}, source="the form")  # raises on a bad pattern or level
    other = store.site_exam_rule_by_name(session, name=name)
    if other is not None and other.id != rule_id:
        raise ConfigurationError(f"Another site rule is named {name!r}; choose another name.")
    if rule_id is not None and store.site_exam_rule(session, rule_id=rule_id) is None:
        raise ConfigurationError(f"There is no site rule #{rule_id}.")
    store.save_site_exam_rule(
        session,
        rule_id=rule_id,
        name=name,
        exam=exam,
        modality=modality or None,
        level=level,
        conditions=conditions,
        position=position,
        user=user,
    )
    return doc


def delete_exam_rule(session: Session, *, rule_id: int) -> str:
    """Delete a site rule; return its name.

    Raises
    ------
    kerma.errors.ConfigurationError
        When there is no such rule.
    """
    row = store.site_exam_rule(session, rule_id=rule_id)
    if row is None:
        raise ConfigurationError(f"There is no site rule #{rule_id}.")
    name = row.name
    store.delete_site_exam_rule(session, rule_id=rule_id)
    return name


# -- DRL set --------------------------------------------------------------------------------


def stored_drl_set(session: Session) -> str | None:
    """Return the DRL set chosen in the browser (``"UK,EU"``), or ``None``."""
    return setting_store.get_setting(session, key=DRL_SET_KEY) or None


def save_drl_set(session: Session, value: str, *, settings: Settings) -> str:
    """Validate and store the DRL set (region codes in priority order); return it.

    An empty value removes the choice (``KERMA_DRL_SET`` applies again).

    Raises
    ------
    kerma.errors.ConfigurationError
        When a region is not a DRL set Kerma knows (packaged or ``KERMA_DRL_EXTRA``).
    """
    from kerma.analysis.reference import load_drls, select_drls

    codes = [c.strip() for c in value.replace(";", ",").split(",") if c.strip()]
    text = ",".join(codes)
    if codes:
        known = set(load_drls(extra_paths=settings.drl_extra_paths)["drl_region"].dropna())
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise ConfigurationError(
                f"Unknown DRL set(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
            )
        select_drls(load_drls(extra_paths=settings.drl_extra_paths), text)
    setting_store.set_setting(session, key=DRL_SET_KEY, value=text)
    return text


def effective_settings(settings: Settings, session_factory: sessionmaker[Session]) -> Settings:
    """Return ``settings`` with the DRL set chosen in the browser, if any."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        with session_scope(session_factory) as session:
            chosen = stored_drl_set(session)
    except (OperationalError, ProgrammingError):
        return settings
    if chosen and chosen != settings.drl_set:
        return settings.model_copy(update={"drl_set": chosen})
    return settings


# -- alert rules ----------------------------------------------------------------------------


def stored_alert_overrides(session: Session) -> dict[str, dict[str, Any]]:
    """Return the alert-rule overrides: rule id → ``enabled``, ``threshold``, ``factor``."""
    text = setting_store.get_setting(session, key=ALERT_OVERRIDES_KEY)
    if not text:
        return {}
    data = json.loads(text)
    return data if isinstance(data, dict) else {}


def load_alert_overrides(session_factory: sessionmaker[Session]) -> dict[str, dict[str, Any]]:
    """Return :func:`stored_alert_overrides` read in a session of its own."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        with session_scope(session_factory) as session:
            return stored_alert_overrides(session)
    except (OperationalError, ProgrammingError):
        return {}


def _number(text: str, what: str) -> float | None:
    """Return a positive number of a form field, ``None`` when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"The {what} {text!r} is not a number.") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"The {what} must be a number above 0, not {text!r}.")
    return value


def save_alert_override(
    session: Session,
    *,
    rules: RuleSet,
    rule_id: str,
    enabled: bool,
    threshold: str = "",
    factor: str = "",
) -> dict[str, Any]:
    """Validate and store one rule's override; return it (``{}``: back to the pack).

    Parameters
    ----------
    rules : RuleSet
        The rules of the packs (before overrides), to check ``rule_id`` and its kind.
    threshold : str
        New fixed threshold in the rule's canonical unit (``threshold``/``cumulative``
        rules), empty: the pack's.
    factor : str
        New multiple of the DRL / device median (``drl_multiple``/``device_history``),
        empty: the pack's.

    Raises
    ------
    kerma.errors.ConfigurationError
        Unknown rule id; a threshold/factor that is not a positive number or does not
        apply to the rule's kind.
    """
    rule = rules.get(rule_id)
    if rule is None:
        raise ConfigurationError(f"There is no alert rule {rule_id!r}.")
    override: dict[str, Any] = {}
    if not enabled:
        override["enabled"] = False
    value = _number(threshold, "threshold")
    if value is not None:
        if rule.kind not in THRESHOLD_KINDS:
            raise ConfigurationError(
                f"Rule {rule_id} ({rule.kind}) has no fixed threshold; change its factor."
            )
        if value != rule.threshold:
            override["threshold"] = value
    mult = _number(factor, "factor")
    if mult is not None:
        if rule.kind not in FACTOR_KINDS:
            raise ConfigurationError(f"Rule {rule_id} ({rule.kind}) has no factor to change.")
        if mult != rule.factor:
            override["factor"] = mult
    overrides = stored_alert_overrides(session)
    if override:
        overrides[rule_id] = override
    else:
        overrides.pop(rule_id, None)
    setting_store.set_setting(
        session, key=ALERT_OVERRIDES_KEY, value=json.dumps(overrides, sort_keys=True)
    )
    return override


def apply_alert_overrides(rules: RuleSet, overrides: Mapping[str, Mapping[str, Any]]) -> RuleSet:
    """Return ``rules`` without the disabled rules and with thresholds/factors replaced.

    An override of a rule id the packs no longer hold is ignored. A replaced threshold
    is written ``"<value> <unit> (site)"``; the rule's version changes with it
    (:attr:`kerma.analysis.alerts.AlertRule.version`).
    """
    from kerma.analysis.alerts import RuleSet as _RuleSet

    if not overrides:
        return rules
    kept = []
    for rule in rules.rules:
        override = overrides.get(rule.rule_id) or {}
        if override.get("enabled", True) is False:
            continue
        if override.get("threshold") is not None and rule.kind in THRESHOLD_KINDS:
            value = float(override["threshold"])
            rule = dataclasses.replace(
                rule, threshold=value, threshold_as_written=f"{value:g} {rule.unit} (site)"
            )
        if override.get("factor") is not None and rule.kind in FACTOR_KINDS:
            rule = dataclasses.replace(rule, factor=float(override["factor"]))
        kept.append(rule)
    return _RuleSet(tuple(kept), (*rules.sources, "registry:web.alert_rule_overrides"))

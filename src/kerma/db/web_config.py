"""Storage of the configuration an admin changes in the browser (issue #13).

Site standard-exam rules (``site_exam_rule``) and named values in ``registry_setting``
(the DRL set, alert-rule overrides). SQL only; validation is the services' job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kerma.db.models import SiteExamRule


def site_exam_rules(session: Session) -> list[SiteExamRule]:
    """Return the site exam rules in position order (then id)."""
    return list(
        session.scalars(select(SiteExamRule).order_by(SiteExamRule.position, SiteExamRule.id))
    )


def site_exam_rule(session: Session, *, rule_id: int) -> SiteExamRule | None:
    """Return one site exam rule, or ``None``."""
    return session.get(SiteExamRule, rule_id)


def site_exam_rule_by_name(session: Session, *, name: str) -> SiteExamRule | None:
    """Return the site exam rule of a name, or ``None``."""
    return session.scalar(select(SiteExamRule).where(SiteExamRule.name == name))


def save_site_exam_rule(
    session: Session,
    *,
    rule_id: int | None,
    name: str,
    exam: str,
    modality: str | None,
    level: str,
    conditions: dict[str, Any],
    position: int | None,
    user: str,
) -> SiteExamRule:
    """Insert (``rule_id`` ``None``) or update a site exam rule; return it.

    Without ``position`` a new rule goes last and an edited rule keeps its place.
    """
    now = dt.datetime.now(dt.UTC)
    row = session.get(SiteExamRule, rule_id) if rule_id is not None else None
    if row is None:
        if position is None:
            last = session.scalar(select(func.max(SiteExamRule.position)))
            position = int(last or 0) + 1
        row = SiteExamRule(position=position)
        session.add(row)
    elif position is not None:
        row.position = position
    row.name, row.exam, row.modality, row.level = name, exam, modality, level
    row.conditions = conditions
    row.updated_by, row.updated_at = user, now
    session.flush()
    return row


def delete_site_exam_rule(session: Session, *, rule_id: int) -> bool:
    """Delete a site exam rule; return whether it existed."""
    result = session.execute(delete(SiteExamRule).where(SiteExamRule.id == rule_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]

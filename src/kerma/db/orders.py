"""Keyword-only reads and writes of RIS orders and messages (docs/ris.md); none commits.

Orders and studies meet by the keyed hash of the accession number, or by the patient's
pseudonym and the date (and modality): the queries here fetch the candidates of a
batch of studies, or the studies of one order; the choice is
:mod:`kerma.services.orders`'s.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, exists, or_, select, update
from sqlalchemy.orm import Session

from kerma.db.models import Patient, RisMessage, RisOrder, Study

#: Study columns the matching reads (with the patient's pseudonym as ``patient_pseudonym``).
MATCH_STUDY_COLUMNS: tuple[str, ...] = (
    "id",
    "accession_pseudonym",
    "study_date",
    "modality",
    "patient_weight_kg",
    "patient_size_m",
    "patient_weight_source",
    "patient_size_source",
    "requested_procedure_description",
    "requested_procedure_code",
)

#: Order columns set from a message (besides the keys).
ORDER_VALUE_COLUMNS: tuple[str, ...] = (
    "patient_pseudonym",
    "order_date",
    "modality",
    "requested_procedure_code",
    "requested_procedure_text",
    "ordering_department",
    "patient_weight_kg",
    "patient_size_m",
)


def has_orders(session: Session) -> bool:
    """Return whether any order is stored (the matching is skipped otherwise)."""
    return bool(session.scalar(select(exists().where(RisOrder.id.is_not(None)))))


def upsert_order(
    session: Session,
    *,
    accession_pseudonym: str | None,
    values: Mapping[str, Any],
    source: str,
    sending_application: str | None,
    now: dt.datetime,
) -> int:
    """Insert or update the order of an accession hash (or the patient-day row); return its id.

    With ``accession_pseudonym`` the row of that hash is updated; without, the row of
    ``values["patient_pseudonym"]`` and ``values["order_date"]`` that has no accession.
    Values that are ``None`` leave the stored value alone (a result message without a
    procedure does not erase the order's).
    """
    stmt = select(RisOrder).with_for_update()
    if accession_pseudonym is not None:
        stmt = stmt.where(RisOrder.accession_pseudonym == accession_pseudonym)
    else:
        stmt = stmt.where(
            RisOrder.accession_pseudonym.is_(None),
            RisOrder.patient_pseudonym == values.get("patient_pseudonym"),
            RisOrder.order_date == values.get("order_date"),
        )
    row = session.scalars(stmt.limit(1)).first()
    if row is None:
        row = RisOrder(accession_pseudonym=accession_pseudonym, source=source, updated_at=now)
        session.add(row)
    for name in ORDER_VALUE_COLUMNS:
        value = values.get(name)
        if value is not None:
            setattr(row, name, value)
    row.source = source
    row.sending_application = sending_application
    row.updated_at = now
    session.flush()
    return row.id


def add_message(session: Session, **values: Any) -> int:
    """Add a ``ris_message`` row (:class:`~kerma.db.models.RisMessage` columns); return its id."""
    row = RisMessage(**values)
    session.add(row)
    session.flush()
    return row.id


def study_match_rows(session: Session, *, study_ids: Sequence[int]) -> list[Row[Any]]:
    """Return :data:`MATCH_STUDY_COLUMNS` and ``patient_pseudonym`` of some studies."""
    if not study_ids:
        return []
    columns = [getattr(Study, c) for c in MATCH_STUDY_COLUMNS]
    stmt = (
        select(*columns, Patient.pseudonym.label("patient_pseudonym"))
        .outerjoin(Patient, Patient.id == Study.patient_id)
        .where(Study.id.in_(list(study_ids)))
    )
    return list(session.execute(stmt))


def candidate_orders(
    session: Session,
    *,
    accession_pseudonyms: Sequence[str],
    patient_days: Sequence[tuple[str, dt.date]],
) -> list[RisOrder]:
    """Return the orders of some accession hashes and of some (patient pseudonym, date)s."""
    conditions: list[ColumnElement[bool]] = []
    if accession_pseudonyms:
        conditions.append(RisOrder.accession_pseudonym.in_(sorted(set(accession_pseudonyms))))
    days = sorted(set(patient_days))
    if days:
        conditions.append(
            or_(*(and_(RisOrder.patient_pseudonym == p, RisOrder.order_date == d) for p, d in days))
        )
    if not conditions:
        return []
    stmt = select(RisOrder).where(or_(*conditions)).order_by(RisOrder.id)
    return list(session.scalars(stmt))


def studies_of_order(
    session: Session,
    *,
    accession_pseudonym: str | None,
    patient_pseudonym: str | None,
    order_date: dt.date | None,
) -> list[int]:
    """Return the ids of the studies an order may concern (by hash, or patient and date)."""
    conditions: list[ColumnElement[bool]] = []
    if accession_pseudonym is not None:
        conditions.append(Study.accession_pseudonym == accession_pseudonym)
    if patient_pseudonym is not None and order_date is not None:
        conditions.append(
            and_(Patient.pseudonym == patient_pseudonym, Study.study_date == order_date)
        )
    if not conditions:
        return []
    stmt = (
        select(Study.id)
        .outerjoin(Patient, Patient.id == Study.patient_id)
        .where(or_(*conditions))
        .order_by(Study.id)
    )
    return list(session.scalars(stmt))


def update_studies(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write study rows (dicts with ``id`` and study column names), one bulk UPDATE."""
    if rows:
        session.execute(update(Study), [dict(r) for r in rows])


def mark_device_values(session: Session, *, study_ids: Sequence[int]) -> None:
    """Record ``device`` as the source of weights/heights that have a value but no source."""
    ids = list(study_ids)
    if not ids:
        return
    for value, source in (
        (Study.patient_weight_kg, Study.patient_weight_source),
        (Study.patient_size_m, Study.patient_size_source),
    ):
        session.execute(
            update(Study)
            .where(Study.id.in_(ids), value.is_not(None), source.is_(None))
            .values({source.key: "device"})
            .execution_options(synchronize_session=False)
        )


def list_messages(
    session: Session, *, statuses: Sequence[str] | None = None, limit: int = 100
) -> list[RisMessage]:
    """Return the newest messages (optionally of some statuses), newest first."""
    stmt = select(RisMessage).order_by(RisMessage.received_at.desc(), RisMessage.id.desc())
    if statuses:
        stmt = stmt.where(RisMessage.status.in_(list(statuses)))
    return list(session.scalars(stmt.limit(limit)))


def get_message(session: Session, *, message_id: int) -> RisMessage | None:
    """Return one message row, ``None`` when there is none."""
    return session.get(RisMessage, message_id)


def get_order(session: Session, *, order_id: int) -> RisOrder | None:
    """Return one order row, ``None`` when there is none."""
    return session.get(RisOrder, order_id)

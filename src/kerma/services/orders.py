"""Orders from the RIS and FHIR: receive, keep, match to dose studies (docs/ris.md).

An order (HL7 v2 ORM^O01 / OMI^O23, a result ORU^R01, a patient update ADT^A08, or FHIR
ServiceRequest / Observation resources) gives what the dose objects lack: the patient's
weight and height, the requested procedure code and text, the ordering department.

Receiving (:class:`OrderIntake`): the message is archived first, always encrypted with
the pseudonym key (it names the patient); it is parsed with the site mapping
(:mod:`kerma.services.hl7`) or as FHIR (:mod:`kerma.services.fhir_in`); the accession
number and patient ID become keyed hashes at once (:class:`kerma.ingest.pseudonym.
Pseudonymizer`, the ones import computes); the order, the ``ris_message`` row and the
studies the order concerns are written in one transaction. Only after the commit is
the sender acknowledged (AA), as the Storage SCP does. A message that cannot be used
is kept (archive and ``ris_message``, status ``rejected`` or ``error``) and answered
AR or AE with the reason.

Matching (:func:`apply_orders`, run for every study an import touches through the
derive step, and for the studies of each order received): an order and a study meet
by the keyed hash of the accession number; failing that, by the patient's pseudonym
and the study date, with the same modality (or an order that names none, such as an
ADT update). A study's weight (height) is filled from the order when the dose object
gave none or a placeholder (:data:`PLACEHOLDER_WEIGHTS_KG`: 0 and below; devices write
0 for 'not known' and the extractor already leaves it empty), and follows the order
when it came from an order before; ``patient_weight_source`` says ``device``, ``ris``
or ``fhir``. The order's requested procedure code is written to
``study.requested_procedure_code`` (the standard-exam rules read it) and its text to
``requested_procedure_description`` when the object had none; the study's summary,
standard exam and event groups are then derived again in the same transaction.

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest``, ``kerma.records``,
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from kerma.config import Settings
from kerma.db import orders as store
from kerma.db.session import session_scope
from kerma.errors import MessageError
from kerma.records import display_pseudonym
from kerma.services.hl7 import (
    ERR_INTERNAL,
    Hl7Mapping,
    OrderData,
    build_ack,
    load_mapping,
    parse_message,
    read_envelope,
)

if TYPE_CHECKING:
    from kerma.analysis.summary import SummaryContext
    from kerma.db.models import RisOrder
    from kerma.ingest.archive import Archive
    from kerma.ingest.pseudonym import Pseudonymizer

logger = logging.getLogger(__name__)

#: Weights (kg) taken as 'not entered' on a dose object: 0 and below. Devices write 0
#: when nobody typed a weight (kerma.dicom.common._known already stores it as empty);
#: a typed default such as 70 kg cannot be told from a real 70 kg patient, so it is
#: kept as the device's value (the order's weight stays in ``ris_order``).
PLACEHOLDER_WEIGHTS_KG: Final = "<= 0"

#: Sources of a weight or height (``study.patient_weight_source``).
SOURCE_DEVICE: Final = "device"
SOURCE_RIS: Final = "ris"
SOURCE_FHIR: Final = "fhir"
ORDER_SOURCES: Final = frozenset({SOURCE_RIS, SOURCE_FHIR})

#: Folder of the archived messages, below the archive folder.
MESSAGE_ARCHIVE_FOLDER: Final = "ris"

#: ``ris_message.status`` values and the ACK code of each.
STATUS_ACCEPTED: Final = "accepted"
STATUS_REJECTED: Final = "rejected"  # AR
STATUS_ERROR: Final = "error"  # AE
STATUS_OF_ACK: Final = {"AA": STATUS_ACCEPTED, "AR": STATUS_REJECTED, "AE": STATUS_ERROR}


def is_placeholder(value: float | None) -> bool:
    """Return whether a dose object's weight or height is missing or a placeholder (<= 0)."""
    return value is None or value <= 0


# -- matching --------------------------------------------------------------------------------


def _rank(order: RisOrder, study: Any) -> int | None:
    """Return how well an order matches a study (lower is better; ``None``: no match).

    0: same accession hash; 1: same patient and date, same modality; 2: same patient
    and date, the order names no modality (e.g. an ADT update).
    """
    if order.accession_pseudonym is not None and order.accession_pseudonym == (
        study.accession_pseudonym
    ):
        return 0
    if (
        study.patient_pseudonym is None
        or order.patient_pseudonym != study.patient_pseudonym
        or order.order_date is None
        or order.order_date != study.study_date
    ):
        return None
    if study.accession_pseudonym is not None and order.accession_pseudonym is not None:
        return None  # both have an accession number, and they differ: another order
    if order.modality is None:
        return 2
    if (study.modality or "").upper() == order.modality.upper():
        return 1
    return None


def _chosen(orders: Sequence[tuple[int, RisOrder]], name: str) -> Any:
    """Return the value of ``name`` from the best order giving one (``None`` if none or if
    equally good orders disagree)."""
    best: int | None = None
    values: set[Any] = set()
    for rank, order in orders:
        value = getattr(order, name)
        if value is None:
            continue
        if best is None:
            best = rank
        if rank != best:
            break
        values.add(value)
    return next(iter(values)) if len(values) == 1 else None


def _fill(
    study: Any,
    row: dict[str, Any],
    value: float | None,
    source: str | None,
    *,
    column: str,
    source_column: str,
) -> None:
    """Fill one body measure of a study from an order when the device gave none."""
    current = getattr(study, column)
    current_source = getattr(study, source_column)
    if (
        value is not None
        and source is not None
        and (is_placeholder(current) or current_source in ORDER_SOURCES)
    ):
        if current != value or current_source != source:
            row[column] = value
            row[source_column] = source
    elif current is not None and current_source is None:
        row[source_column] = SOURCE_DEVICE


def apply_orders(session: Session, study_ids: Iterable[int]) -> list[int]:
    """Fill weight, height and requested procedure of some studies from their orders.

    Runs in the caller's transaction (never commits); the derive step calls it before
    the summary columns are derived, so they see the order's values.

    Returns
    -------
    list of int
        The studies whose values changed.
    """
    ids = list(study_ids)
    if not ids:
        return []
    if not store.has_orders(session):
        store.mark_device_values(session, study_ids=ids)
        return []
    changed: list[int] = []
    for start in range(0, len(ids), 500):
        batch = ids[start : start + 500]
        studies = store.study_match_rows(session, study_ids=batch)
        accessions = [s.accession_pseudonym for s in studies if s.accession_pseudonym]
        days = [
            (s.patient_pseudonym, s.study_date)
            for s in studies
            if s.patient_pseudonym and s.study_date
        ]
        orders = store.candidate_orders(session, accession_pseudonyms=accessions, patient_days=days)
        rows = []
        for study in studies:
            ranked = sorted(
                ((r, o) for o in orders if (r := _rank(o, study)) is not None),
                key=lambda pair: (pair[0], -pair[1].id),
            )
            row: dict[str, Any] = {}
            weight = _chosen(ranked, "patient_weight_kg")
            weight_source = _source_of(ranked, "patient_weight_kg")
            _fill(
                study,
                row,
                weight,
                weight_source,
                column="patient_weight_kg",
                source_column="patient_weight_source",
            )
            size = _chosen(ranked, "patient_size_m")
            size_source = _source_of(ranked, "patient_size_m")
            _fill(
                study,
                row,
                size,
                size_source,
                column="patient_size_m",
                source_column="patient_size_source",
            )
            code = _chosen(ranked, "requested_procedure_code")
            if code is not None and code != study.requested_procedure_code:
                row["requested_procedure_code"] = code
            text = _chosen(ranked, "requested_procedure_text")
            if text is not None and not study.requested_procedure_description:
                row["requested_procedure_description"] = text
            if row:
                rows.append({"id": study.id, **row})
                if set(row) - {"patient_weight_source", "patient_size_source"}:
                    changed.append(study.id)
        store.update_studies(session, rows=rows)
    return changed


def _source_of(ranked: Sequence[tuple[int, RisOrder]], name: str) -> str | None:
    """Return the source (``ris``/``fhir``) of the best order giving ``name``."""
    for _, order in ranked:
        if getattr(order, name) is not None:
            return order.source
    return None


# -- receiving -------------------------------------------------------------------------------


@dataclass
class Receipt:
    """The outcome of one received message.

    Attributes
    ----------
    ack_code : str
        ``AA`` (stored), ``AE`` (content in error) or ``AR`` (refused).
    reason : str or None
        Why it was not accepted (no value of the message in it).
    ack : bytes
        The HL7 ACK to send back (empty for FHIR).
    message_id : int or None
        The ``ris_message`` row (``None`` when the database could not be written).
    order_ids : list of int
        Orders written.
    studies_updated : list of int
        Studies whose weight, height or procedure changed.
    """

    ack_code: str
    reason: str | None = None
    ack: bytes = b""
    message_id: int | None = None
    order_ids: list[int] = field(default_factory=list)
    studies_updated: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PreviewRow:
    """One field of what a message yields (``kerma hl7 test-message``), pseudonymised."""

    name: str
    value: str


class OrderIntake:
    """Receive HL7 v2 messages and FHIR resources into a registry.

    Parameters
    ----------
    settings : Settings
        Archive folder, pseudonym key, ``hl7_mapping``, exam rules.
    session_factory : sqlalchemy.orm.sessionmaker, optional
        Writing sessions (default: the registry of ``settings.database_url``, migrated).
    mapping : Hl7Mapping, optional
        Default: :func:`kerma.services.hl7.load_mapping` of ``settings.hl7_mapping``.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the mapping or the pseudonym key cannot be read.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session_factory: sessionmaker[Session] | None = None,
        mapping: Hl7Mapping | None = None,
    ) -> None:
        from kerma.ingest.archive import Archive
        from kerma.ingest.pseudonym import Pseudonymizer
        from kerma.services.derive import make_context
        from kerma.services.keys import open_key

        self.settings = settings
        self.mapping = mapping if mapping is not None else load_mapping(settings.hl7_mapping)
        if session_factory is None:
            from kerma.db.migrate import ensure_schema
            from kerma.db.session import make_engine, make_session_factory

            engine = make_engine(settings.database_url)
            ensure_schema(engine)
            session_factory = make_session_factory(engine, write=True)
        self.session_factory = session_factory
        key = open_key(settings, session_factory)
        self.pseudonymizer: Pseudonymizer = Pseudonymizer(key, settings.non_patient_patterns)
        # messages name the patient: always encrypted, whatever KERMA_ARCHIVE_MODE says
        self.archive: Archive = Archive(
            settings.archive_dir / MESSAGE_ARCHIVE_FOLDER, mode="encrypted", key=key
        )
        self.context: SummaryContext = make_context(settings, session_factory)

    # -- HL7 v2 ---------------------------------------------------------------------------

    def receive_hl7(self, raw: bytes, *, transport: str = "mllp") -> Receipt:
        """Keep, parse, store and match one HL7 v2 message; return the ACK to send.

        The ACK is built only after the message and its order are committed (AA), or
        after the refusal is recorded (AR/AE). When the database cannot be written the
        ACK is AE with error 207 and the message stays in the archive; the sender
        should send it again.
        """
        envelope = read_envelope(raw)
        archived = self.archive.store(raw)
        now = dt.datetime.now(dt.UTC)
        common = {
            "archive_sha256": archived.sha256,
            "archive_path": f"{MESSAGE_ARCHIVE_FOLDER}/{archived.relative_path}",
            "transport": transport,
            "sending_application": (envelope.sending_application or "")[:64] or None,
            "message_type": _kind(envelope.message_type, envelope.trigger_event),
            "message_control_id": (envelope.message_control_id or "")[:64] or None,
            "received_at": now,
        }
        try:
            order = parse_message(raw, self.mapping)
        except MessageError as exc:
            receipt = self._refuse(common, exc)
            receipt.ack = build_ack(
                envelope, receipt.ack_code, reason=receipt.reason, error_code=exc.error_code
            )
            return receipt
        try:
            receipt = self._store([order], common, source=SOURCE_RIS)
        except (SQLAlchemyError, OSError) as exc:
            logger.exception(
                "HL7 %s %s could not be stored",
                common["message_type"],
                common["message_control_id"],
            )
            reason = (
                f"The registry could not store the message ({type(exc).__name__}); send it again."
            )
            receipt = Receipt("AE", reason)
            receipt.ack = build_ack(envelope, "AE", reason=reason, error_code=ERR_INTERNAL)
            return receipt
        receipt.ack = build_ack(envelope, "AA")
        return receipt

    def _refuse(self, common: dict[str, Any], exc: MessageError) -> Receipt:
        """Record a message that cannot be used (status ``rejected``/``error``)."""
        reason = str(exc)
        logger.warning(
            "%s %s from %s not used (%s): %s",
            common["message_type"] or "a message without MSH-9",
            common["message_control_id"] or "(no control ID)",
            common["sending_application"] or "(no MSH-3)",
            exc.ack_code,
            reason,
        )
        try:
            with session_scope(self.session_factory) as session:
                message_id = store.add_message(
                    session, **common, status=STATUS_OF_ACK[exc.ack_code], reason=reason
                )
        except SQLAlchemyError:
            logger.exception("the refusal of a message could not be recorded")
            message_id = None
        return Receipt(exc.ack_code, reason, message_id=message_id)

    def _store(
        self, orders: Sequence[OrderData], common: dict[str, Any], *, source: str
    ) -> Receipt:
        """Write orders, the message row and the matched studies in one transaction."""
        from kerma.services.derive import refresh_studies

        receipt = Receipt("AA")
        with session_scope(self.session_factory) as session:
            touched: set[int] = set()
            for order in orders:
                accession = self.pseudonymizer.accession_pseudonym(order.accession_number)
                patient = self.pseudonymizer.patient_pseudonym(
                    order.patient_id, order.patient_id_issuer
                )
                values = {
                    "patient_pseudonym": patient,
                    "order_date": order.order_date,
                    "modality": order.modality,
                    "requested_procedure_code": _cut(order.requested_procedure_code),
                    "requested_procedure_text": _cut(order.requested_procedure_text),
                    "ordering_department": _cut(order.ordering_department),
                    "patient_weight_kg": order.patient_weight_kg,
                    "patient_size_m": order.patient_size_m,
                }
                order_id = store.upsert_order(
                    session,
                    accession_pseudonym=accession,
                    values=values,
                    source=source,
                    sending_application=(order.sending_application or "")[:64] or None,
                    now=common["received_at"],
                )
                receipt.order_ids.append(order_id)
                stored = store.get_order(session, order_id=order_id)
                assert stored is not None
                touched.update(
                    store.studies_of_order(
                        session,
                        accession_pseudonym=stored.accession_pseudonym,
                        patient_pseudonym=stored.patient_pseudonym,
                        order_date=stored.order_date,
                    )
                )
            receipt.message_id = store.add_message(
                session,
                **common,
                status=STATUS_ACCEPTED,
                reason=None,
                ris_order_id=receipt.order_ids[0] if receipt.order_ids else None,
            )
            if touched:
                receipt.studies_updated = apply_orders(session, sorted(touched))
                # derived values that depend on them (summary, exams, event groups)
                refresh_studies(session, sorted(touched), context=self.context)
        logger.info(
            "%s %s from %s stored: %d order(s), %d study(ies) updated",
            common["message_type"] or "message",
            common["message_control_id"] or "(no control ID)",
            common["sending_application"] or "(no MSH-3)",
            len(receipt.order_ids),
            len(receipt.studies_updated),
        )
        return receipt

    # -- FHIR -----------------------------------------------------------------------------

    def receive_fhir(self, body: bytes, *, transport: str = "fhir") -> Receipt:
        """Keep, parse, store and match FHIR resources (a Bundle or one resource, JSON).

        ServiceRequest (accession identifier), Observation (body weight 29463-7, body
        height 8302-2) and the Patient resources they refer to
        (:func:`kerma.services.fhir_in.parse_fhir`).

        Returns
        -------
        Receipt
            ``AA`` when stored (``order_ids`` may be empty: nothing Kerma reads),
            ``AE``/``AR`` with the reason otherwise.
        """
        from kerma.services.fhir_in import parse_fhir

        archived = self.archive.store(body)
        now = dt.datetime.now(dt.UTC)
        common = {
            "archive_sha256": archived.sha256,
            "archive_path": f"{MESSAGE_ARCHIVE_FOLDER}/{archived.relative_path}",
            "transport": transport[:16],
            "sending_application": None,
            "message_type": "FHIR",
            "message_control_id": None,
            "received_at": now,
        }
        try:
            parsed = parse_fhir(body)
        except MessageError as exc:
            return self._refuse(common, exc)
        common["message_type"] = parsed.kind[:32]
        return self._store(parsed.orders, common, source=SOURCE_FHIR)

    # -- preview --------------------------------------------------------------------------

    def preview(self, raw: bytes) -> list[PreviewRow]:
        """Return what a message yields with the mapping, identity pseudonymised.

        Raises
        ------
        kerma.errors.MessageError
            As :func:`kerma.services.hl7.parse_message`.
        """
        return preview_order(parse_message(raw, self.mapping), self.mapping, self.pseudonymizer)


def preview_order(
    order: OrderData, mapping: Hl7Mapping, pseudonymizer: Pseudonymizer
) -> list[PreviewRow]:
    """Return the rows ``kerma hl7 test-message`` shows for a parsed message."""
    accession = pseudonymizer.accession_pseudonym(order.accession_number)
    patient = pseudonymizer.patient_pseudonym(order.patient_id, order.patient_id_issuer)

    def show(value: object) -> str:
        return "" if value is None else str(value)

    rows = [
        PreviewRow("message type", order.message_type),
        PreviewRow("sending application (MSH-3)", show(order.sending_application)),
        PreviewRow(
            "mapping",
            f"{mapping.source}"
            + (
                f' [application."{order.sending_application}"]'
                if (order.sending_application or "") in mapping.applications
                else " [default]"
            ),
        ),
        PreviewRow("accession number", f"keyed hash {accession[:12]}…" if accession else ""),
        PreviewRow("patient", (display_pseudonym(patient) or "") if patient else ""),
        PreviewRow("issuer of patient ID used", "yes" if order.patient_id_issuer else "no"),
        PreviewRow("order date", show(order.order_date)),
        PreviewRow("modality", show(order.modality)),
        PreviewRow("requested procedure code", show(order.requested_procedure_code)),
        PreviewRow("requested procedure text", show(order.requested_procedure_text)),
        PreviewRow("ordering department", show(order.ordering_department)),
        PreviewRow("patient weight (kg)", _fmt(order.patient_weight_kg)),
        PreviewRow("patient height (m)", _fmt(order.patient_size_m)),
    ]
    rows += [PreviewRow("note", note) for note in order.notes]
    return rows


def _fmt(value: float | None) -> str:
    """Return a number with up to 4 significant decimals ('' for ``None``)."""
    return "" if value is None else f"{value:.4g}"


def _kind(message_type: str | None, trigger: str | None) -> str | None:
    """Return ``TYPE^TRIGGER`` (``None`` without a type)."""
    if not message_type:
        return None
    return f"{message_type}^{trigger}"[:32] if trigger else message_type[:32]


def _cut(text: str | None, length: int = 255) -> str | None:
    """Return free text shortened to ``length`` characters."""
    return text[:length] if text else None


@dataclass(frozen=True)
class MessageRow:
    """One received message as ``kerma hl7 messages`` lists it (nothing identifying)."""

    id: int
    received_at: dt.datetime
    transport: str
    sending_application: str | None
    message_type: str | None
    message_control_id: str | None
    status: str
    reason: str | None


def list_messages(
    session_factory: sessionmaker[Session], *, only_refused: bool = False, limit: int = 100
) -> list[MessageRow]:
    """Return the newest received messages (only the refused ones: AR/AE), newest first."""
    statuses = [STATUS_REJECTED, STATUS_ERROR] if only_refused else None
    with session_scope(session_factory) as session:
        return [
            MessageRow(
                m.id,
                m.received_at,
                m.transport,
                m.sending_application,
                m.message_type,
                m.message_control_id,
                m.status,
                m.reason,
            )
            for m in store.list_messages(session, statuses=statuses, limit=limit)
        ]

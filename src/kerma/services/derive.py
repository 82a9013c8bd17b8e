"""Derived values at ingest: the study summary columns, standard exams and event groups.

:func:`refresh_studies` recomputes the summary of some studies from their current
events and reports (:func:`kerma.analysis.summary.summarise_study`) inside the caller's
transaction. The ingest pipeline calls it for every study an object touches (the
``derive`` hook of :class:`kerma.ingest.pipeline.Importer`, wired by
:func:`intake_importer` and :attr:`kerma.Registry.importer`); ``kerma reprocess``,
``kerma exams --apply`` and the first use after a migration refresh every study in
batches (:func:`refresh_all`).

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest``, ``kerma.records``,
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from kerma.config import Settings
from kerma.db import summary as store
from kerma.db.session import session_scope

if TYPE_CHECKING:
    from kerma.analysis.summary import SummaryContext
    from kerma.ingest.pipeline import Importer

# kerma.analysis (pandas) and kerma.ingest (pydicom) are imported where used: opening a
# registry only checks the derive version, and ``kerma studies`` must start fast.

logger = logging.getLogger(__name__)

#: Version of the derive rules; a registry whose ``derive_version`` setting differs
#: (e.g. right after the migration that added the summary columns) is refreshed once.
DERIVE_VERSION = "1"

#: Studies refreshed per transaction by :func:`refresh_all`.
BATCH_SIZE = 500


def make_context(
    settings: Settings | None = None, session_factory: sessionmaker[Session] | None = None
) -> SummaryContext:
    """Return the derive context of ``settings``: its exam rules (``exam_rules_path``).

    With ``session_factory``, the site rules an admin saved in the registry
    (:mod:`kerma.services.web_config`, issue #13) are tried before those rules.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the exam rules file cannot be read.
    """
    from kerma.analysis.exams import layer_rules, load_exam_rules
    from kerma.analysis.summary import SummaryContext

    path = settings.exam_rules_path if settings is not None else None
    rules = load_exam_rules(path)
    if session_factory is not None:
        from kerma.services.web_config import SITE_RULES_SOURCE, load_site_exam_rules

        site = load_site_exam_rules(session_factory)
        rules = layer_rules(site, rules, source=SITE_RULES_SOURCE)
    return SummaryContext(rules=rules)


_DEFAULT_CONTEXT: list[SummaryContext] = []


def _default_context() -> SummaryContext:
    """Return a context with the packaged exam rules (made once per process)."""
    if not _DEFAULT_CONTEXT:
        _DEFAULT_CONTEXT.append(make_context())
    return _DEFAULT_CONTEXT[0]


def refresh_studies(
    session: Session, study_ids: Iterable[int], *, context: SummaryContext | None = None
) -> int:
    """Recompute the summary columns, exams and event groups of some studies.

    Runs in the caller's transaction (never commits): the ingest pipeline calls it in
    the transaction that stored the object, so a study's summary never disagrees with
    its events. First the studies' RIS/FHIR orders fill weight, height and requested
    procedure (:func:`kerma.services.orders.apply_orders`, docs/ris.md), so a study
    imported after its order picks the order up here.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        The open unit of work.
    study_ids : iterable of int
        Studies to refresh (missing ids are skipped).
    context : SummaryContext, optional
        Exam rules and reference tables (default: the packaged rules).

    Returns
    -------
    int
        Number of studies refreshed.
    """
    from kerma.analysis.summary import summarise_study
    from kerma.services.orders import apply_orders
    from kerma.services.quality import fill_calculated_deviation_index

    ctx = context or _default_context()
    now = dt.datetime.now(dt.UTC)
    done = 0
    session.flush()
    study_ids = list(study_ids)
    # weight, height and requested procedure from the RIS/FHIR orders (docs/ris.md)
    apply_orders(session, study_ids)
    for batch in store.chunks(study_ids):
        inputs = store.derive_inputs(session, study_ids=batch)
        rows: list[dict[str, Any]] = []
        wanted_groups: dict[int, store.GroupKey] = {}
        exams: dict[int, str | None] = {}
        for study_id, study in inputs.studies.items():
            events = inputs.events.get(study_id, [])
            result = summarise_study(
                study,
                events,
                inputs.reports.get(study_id, []),
                number_of_reports=inputs.report_counts.get(study_id, 0),
                size=inputs.sizes.get(str(study["study_instance_uid"])),
                context=ctx,
            )
            row = {
                **result.values,
                "standard_exam": result.standard_exam,
                "standard_exam_rule": result.standard_exam_rule,
                "exam_rules_fingerprint": ctx.fingerprint,
            }
            if any(not _same(study.get(k), v) for k, v in row.items()):
                rows.append({"id": study_id, **row, "derived_at": now})
            for event_id, (modality, protocol) in result.event_groups.items():
                wanted_groups[event_id] = (
                    modality,
                    int(study["device_id"]),
                    protocol,
                    bool(study["is_non_patient"]),
                )
            exams.update(result.event_exams)
        group_ids = store.event_group_ids(session, keys=wanted_groups.values())
        event_rows = []
        for events in inputs.events.values():
            for event in events:
                event_id = int(event["event_id"])
                group = group_ids[wanted_groups[event_id]]
                exam = exams.get(event_id)
                if event["event_group_id"] != group or event["standard_exam"] != exam:
                    event_rows.append(
                        {"id": event_id, "event_group_id": group, "standard_exam": exam}
                    )
        store.write_summaries(session, rows=rows)
        store.write_event_values(session, rows=event_rows)
        store.clear_non_current_events(session, study_ids=batch)
        fill_calculated_deviation_index(session, batch)  # issue #17
        done += len(inputs.studies)
    return done


def _same(stored: Any, new: Any) -> bool:
    """Return whether a stored value equals a new one (floats to a relative 1e-12)."""
    if isinstance(stored, float) and isinstance(new, float):
        return math.isclose(stored, new, rel_tol=1e-12, abs_tol=0.0)
    return bool(stored == new)


def refresh_all(
    session_factory: sessionmaker[Session],
    *,
    context: SummaryContext | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
    first_id: int | None = None,
    last_id: int | None = None,
) -> int:
    """Refresh every study in batches, one transaction per batch, and record the version.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions.
    context : SummaryContext, optional
        Exam rules and reference tables.
    batch_size : int, optional
        Studies per transaction.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch (``total``: every study).
    first_id, last_id : int, optional
        Only the studies with ``first_id <= id <= last_id`` (open ends when not given):
        one job of the job queue (:mod:`kerma.services.jobs`).

    Returns
    -------
    int
        Number of studies refreshed.
    """
    ctx = context or _default_context()
    with session_scope(session_factory) as session:
        total = store.count_all_studies(session)
    done, last = 0, (first_id - 1 if first_id is not None else 0)
    while True:
        with session_scope(session_factory) as session:
            ids = store.study_id_page(session, after_id=last, limit=batch_size, last_id=last_id)
            if not ids:
                break
            done += refresh_studies(session, ids, context=ctx)
        last = ids[-1]
        if progress is not None:
            progress(done, total)
    with session_scope(session_factory) as session:
        store.set_setting(session, key=store.DERIVE_VERSION_KEY, value=DERIVE_VERSION)
    logger.info("derived the summary of %d studies", done)
    return done


def needs_refresh(session: Session) -> bool:
    """Return whether the summary columns were derived by another derive version."""
    return store.get_setting(session, key=store.DERIVE_VERSION_KEY) != DERIVE_VERSION


def ensure_derived(
    session_factory: sessionmaker[Session],
    *,
    context: SummaryContext | Callable[[], SummaryContext] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Refresh every study once when the registry's derive version is not this one.

    A fresh registry only records the version. After the migration that added the
    summary columns (or a Kerma upgrade that changes how they are derived) this fills
    them: every command and ``kerma db upgrade`` call it when they open a registry.

    Parameters
    ----------
    context : SummaryContext or callable, optional
        The derive context, or a function returning it (called only when a refresh is
        due, so the exam rules are not read otherwise).

    Returns
    -------
    int
        Number of studies refreshed (0 when up to date).
    """
    with session_scope(session_factory) as session:
        if not needs_refresh(session):
            return 0
        if store.count_all_studies(session) == 0:
            store.set_setting(session, key=store.DERIVE_VERSION_KEY, value=DERIVE_VERSION)
            return 0
    logger.warning("deriving the study summary columns of this registry (once)")
    ctx = context() if callable(context) else context
    return refresh_all(session_factory, context=ctx, progress=progress)


def make_importer(
    settings: Settings,
    *,
    session_factory: sessionmaker[Session],
    context: SummaryContext | None = None,
) -> Importer:
    """Return an :class:`~kerma.ingest.pipeline.Importer` that derives at ingest.

    Parameters
    ----------
    settings : Settings
        Archive folder, pseudonym key, non-patient patterns, exam rules, strict mode.
    session_factory : sqlalchemy.orm.sessionmaker
        Writing sessions (``make_session_factory(engine, write=True)``).
    context : SummaryContext, optional
        Derive context (default: from ``settings``).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the pseudonym key is missing, too short or not the registry's
        (:func:`kerma.services.keys.open_key`), or ``identifying_attributes`` names no
        DICOM attribute.
    """
    from kerma.ingest.archive import Archive
    from kerma.ingest.pipeline import Importer, check_identifying_attributes
    from kerma.ingest.pseudonym import Pseudonymizer
    from kerma.services.keys import open_key

    check_identifying_attributes(settings.identifying_attributes)
    archive_dir = settings.archive_dir
    key = open_key(settings, session_factory)
    return Importer(
        session_factory=session_factory,
        settings=settings,
        archive=Archive(
            archive_dir,
            mode=settings.archive_mode,
            key=key,
            identifying_attributes=settings.identifying_attributes,
        ),
        pseudonymizer=Pseudonymizer(key, settings.non_patient_patterns),
        derive=partial(refresh_studies, context=context or make_context(settings, session_factory)),
        after_commit=_alert_hook(settings, session_factory),
    )


def _alert_hook(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Callable[[set[int]], object] | None:
    """Return the after-commit alert evaluation of an importer, or ``None``.

    ``None`` when ``Settings.alerts_enabled`` is off, or when the alert rules cannot be
    read (logged: a bad rule file must not stop ingest; ``kerma alerts rules`` shows
    the error).
    """
    if not settings.alerts_enabled:
        return None
    from kerma.errors import ConfigurationError
    from kerma.services import alerts

    try:
        context = alerts.make_context(settings, session_factory)
    except ConfigurationError as exc:
        logger.error("alerts are not evaluated at ingest: %s", exc)
        return None
    return partial(alerts.evaluate_after_commit, session_factory, context=context)


def intake_importer(settings: Settings, *, engine: Engine | None = None) -> Importer:
    """Return the Importer every intake uses (SCP import child, STOW-RS, pull, demo).

    Opens ``settings.database_url`` (migrated to the newest schema, summary columns
    derived) unless ``engine`` is given, and wires the derive hook so each imported
    object refreshes the summary of the studies it touches.

    Parameters
    ----------
    settings : Settings
        The configuration of the registry.
    engine : sqlalchemy.Engine, optional
        An engine on the registry database (default: a new one for
        ``settings.database_url``).

    Returns
    -------
    kerma.ingest.pipeline.Importer
        Ready to ``import_paths`` / ``import_bytes``.
    """
    from kerma.db.migrate import ensure_schema
    from kerma.db.session import make_engine, make_session_factory

    engine = engine or make_engine(settings.database_url)
    ensure_schema(engine)
    factory = make_session_factory(engine, write=True)
    context = make_context(settings, factory)
    ensure_derived(factory, context=context)
    from kerma.services.patients import protect_accession_numbers

    protect_accession_numbers(factory, settings)
    return make_importer(settings, session_factory=factory, context=context)

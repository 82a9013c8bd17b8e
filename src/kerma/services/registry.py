"""``kerma.Registry``: the thin public facade over the services.

A :class:`Registry` opens one database (migrated on first use, its study summary
derived once after an upgrade) and one archive, and each method opens a session and
calls one service function: the CLI, the web app and a Python user get the same
results from the same code. Methods return pandas DataFrames (or typed results where
a page or a detail is asked for); names carry canonical units (``docs/registry.md``).

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest``, ``kerma.services``,
``kerma.records``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from kerma.config import Settings, get_settings
from kerma.db.filters import StudyFilter, normalise_filter
from kerma.db.migrate import ensure_schema
from kerma.db.session import make_engine, make_session_factory, session_scope
from kerma.services import studies as study_service

if TYPE_CHECKING:
    import pandas as pd

    from kerma.analysis.exams import ExamRuleSet
    from kerma.analysis.summary import SummaryContext
    from kerma.db.alerts import AlertFilter
    from kerma.ingest.pipeline import Importer, ImportOutcome, ImportSummary, ReprocessSummary
    from kerma.services.alerts import AlertContext, EvaluationResult, VerifyResult
    from kerma.services.analytics import DrlResult, StatisticsResult
    from kerma.services.conflicts import ConflictDetail, ConflictRow, DecisionRow
    from kerma.services.devices import MergeResult
    from kerma.services.exams import RemapResult
    from kerma.services.patients import PatientRecord

DateLike = dt.date | dt.datetime | str | None


class Registry:
    """A Kerma registry: one database and one archive.

    Parameters
    ----------
    url : str, optional
        SQLAlchemy URL; default ``settings.database_url`` (``KERMA_DATABASE_URL``,
        ``sqlite:///kerma.db``).
    settings : Settings, optional
        Default: read from the environment (:func:`kerma.config.get_settings`).

    Notes
    -----
    The schema is migrated to the newest revision on first use, and the study summary
    columns are derived once when the registry was made by an older Kerma. Methods are
    safe to call from several threads and processes at once.

    Examples
    --------
    >>> import kerma
    >>> reg = kerma.Registry("sqlite://")
    >>> len(reg.studies())
    0
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        from kerma.services.derive import ensure_derived

        self.settings = settings if settings is not None else get_settings()
        self.url = url or self.settings.database_url
        if self.url.startswith("sqlite") and self.url.rstrip("/") in {"sqlite:", "sqlite:/"}:
            from sqlalchemy.pool import StaticPool

            self.engine = make_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            self.engine = make_engine(self.url)
        ensure_schema(self.engine)
        self._read_factory = make_session_factory(self.engine)
        #: the read replica's engine (``KERMA_DATABASE_READ_URL``), else ``None``
        self.replica_engine = (
            make_engine(self.settings.database_read_url)
            if self.settings.database_read_url
            else None
        )
        self._replica_factory = (
            make_session_factory(self.replica_engine)
            if self.replica_engine is not None
            else self._read_factory
        )
        self._write_factory = make_session_factory(self.engine, write=True)
        from kerma.services.web_config import effective_settings

        #: ``KERMA_*`` settings as given, before the registry's stored choices
        self.base_settings = self.settings
        self.settings = effective_settings(self.base_settings, self._write_factory)
        self._importer: Importer | None = None
        self._context: SummaryContext | None = None
        self._alert_context: AlertContext | None = None
        self._lock = threading.Lock()
        self.derived_on_open = ensure_derived(self._write_factory, context=lambda: self.context)
        from kerma.services.patients import protect_accession_numbers

        protect_accession_numbers(self._write_factory, self.settings)

    def __repr__(self) -> str:
        """Return the registry's URL without password."""
        return f"Registry({self.engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Registry:
        """Return the registry (closed on exit)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the registry's connections."""
        self.close()

    def close(self) -> None:
        """Close the registry's database connections (the replica's too)."""
        self.engine.dispose()
        if self.replica_engine is not None:
            self.replica_engine.dispose()

    # -- sessions, rules and import -----------------------------------------------------------

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """Yield a SQLAlchemy session: commit on success, rollback on error.

        Parameters
        ----------
        write : bool, optional
            On SQLite, take the write lock at the start (default ``True``); pass
            ``False`` for read-only work so it does not wait for writers.
        """
        with session_scope(self._write_factory if write else self._read_factory) as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """Yield a read-only session on the read replica (``KERMA_DATABASE_READ_URL``).

        The dashboard and analytics read through it: listings, statistics, DRL
        comparison, summaries, cumulative dose (issue #15). Without a replica it is a
        read session on the primary. A replica lags the primary by its replication
        delay (milliseconds on a LAN); whatever must see its own writes at once uses
        :meth:`session`.
        """
        with session_scope(self._replica_factory) as session:
            yield session

    @property
    def session_factory(self) -> Any:
        """The writing session factory (for services that run many transactions)."""
        return self._write_factory

    @property
    def context(self) -> SummaryContext:
        """The derive context: the exam rules in force (``Settings.exam_rules_path``)."""
        from kerma.services.derive import make_context

        with self._lock:
            if self._context is None:
                self._context = make_context(self.settings, self._write_factory)
            return self._context

    @property
    def exam_rules(self) -> ExamRuleSet:
        """The standard-exam rules in force."""
        return self.context.rules

    @property
    def importer(self) -> Importer:
        """The :class:`~kerma.ingest.pipeline.Importer`, deriving each study it touches."""
        from kerma.services.derive import make_importer

        context = self.context
        with self._lock:
            if self._importer is None:
                self._importer = make_importer(
                    self.settings, session_factory=self._write_factory, context=context
                )
            return self._importer

    def import_paths(
        self,
        paths: Iterable[str | PathLike[str]] | str | PathLike[str],
        *,
        progress: Callable[[ImportOutcome], None] | None = None,
        keep_non_dose: bool = True,
    ) -> ImportSummary:
        """Import DICOM files and folders (recursively); idempotent by SOP Instance UID.

        Parameters
        ----------
        paths : path-like or iterable of path-like
            Files and folders.
        progress : callable, optional
            Called with the :class:`~kerma.ingest.pipeline.ImportOutcome` of each object.
        keep_non_dose : bool, optional
            ``True`` (default, as ``kerma import``): an object without dose information
            is archived and rejected with the reason. ``False``: it is not archived and
            is listed by :meth:`ignored` instead (status ``ignored``).

        Returns
        -------
        ImportSummary
            Counts: imported by kind and modality, already present, superseded,
            rejected, ignored.

        Raises
        ------
        OSError
            When the archive cannot be written.
        """
        if isinstance(paths, str | PathLike):
            paths = [paths]
        return self.importer.import_paths(paths, progress=progress, keep_non_dose=keep_non_dose)

    def import_bytes(
        self, data: bytes, *, source: str = "bytes", keep_non_dose: bool = True
    ) -> ImportOutcome:
        """Import one DICOM object held in memory (see :meth:`Importer.import_bytes`).

        Raises
        ------
        OSError
            When the archive cannot be written.
        """
        return self.importer.import_bytes(data, source=source, keep_non_dose=keep_non_dose)

    def reprocess(self, *, progress: Callable[[str], None] | None = None) -> ReprocessSummary:
        """Re-extract every archived object with the current extractors, in place.

        Every study is then derived again (summary columns, exams), in batches.
        """
        result = self.importer.reprocess(progress=progress)
        self.refresh_derived()
        return result

    def reprocess_reports(
        self, *, first_study_id: int | None = None, last_study_id: int | None = None
    ) -> ReprocessSummary:
        """Re-extract the dose reports of a range of studies, then derive those studies.

        One job of ``kerma reprocess --queue`` (:mod:`kerma.services.jobs`): the first
        part of :meth:`reprocess` (:meth:`Importer.reprocess_reports`) and the refresh of
        the same studies (:meth:`refresh_derived`). Idempotent.
        """
        result = self.importer.reprocess_reports(
            first_study_id=first_study_id, last_study_id=last_study_id
        )
        self.refresh_derived(first_id=first_study_id, last_id=last_study_id)
        return result

    def reprocess_rejected(
        self, *, first_id: int | None = None, last_id: int | None = None
    ) -> ReprocessSummary:
        """Try a range of rejected objects again (:meth:`Importer.reprocess_rejected`)."""
        return self.importer.reprocess_rejected(first_id=first_id, last_id=last_id)

    def refresh_derived(
        self,
        *,
        first_id: int | None = None,
        last_id: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Derive the summary columns of every study (or of an id range) again.

        :func:`kerma.services.derive.refresh_all`, one transaction per batch; returns
        the number of studies refreshed.
        """
        from kerma.services.derive import refresh_all

        return refresh_all(
            self._write_factory,
            context=self.context,
            progress=progress,
            first_id=first_id,
            last_id=last_id,
        )

    # -- studies and events ------------------------------------------------------------------

    def _filter(self, flt: StudyFilter | None = None, **fields: Any) -> StudyFilter:
        """Return ``flt`` with the keyword filter fields applied (older names accepted)."""
        return normalise_filter(flt, **fields)

    def studies(
        self,
        *,
        modality: str | Sequence[str] | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        device: str | None = None,
        include_non_patient: bool = False,
        has_conflict: bool | None = None,
        flt: StudyFilter | None = None,
    ) -> pd.DataFrame:
        """Return one row per study with its summary columns, oldest first.

        Parameters
        ----------
        modality : str or sequence of str, optional
            Any of the study's modalities.
        date_from, date_to : date or ISO string, optional
            Study date range, both ends included.
        device : str, optional
            Case-insensitive substring of the device name, station name or model.
        include_non_patient : bool, optional
            Include QA / phantom studies. Default ``False``.
        has_conflict : bool, optional
            ``True``: only studies in conflict (a report held in several versions,
            undecided; ``kerma conflicts``); ``False``: only the others. Default: all.
        flt : StudyFilter, optional
            Any other filter (the keywords above are applied on top of it).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`kerma.db.studies.STUDY_COLUMNS` (``docs/registry.md``): the
            study, patient and device context, and the summary columns derived from
            the current events and reports in canonical units (``ct_dlp_total_mgycm``,
            ``dap_total_gym2`` Gy·m², ``dose_rp_total_gy`` Gy = the larger plane,
            ``agd_total_left_mgy`` / ``_right_`` ...).
        """
        flt = self._filter(
            flt,
            modality=modality,
            date_from=date_from,
            date_to=date_to,
            device=device,
            include_non_patient=include_non_patient or (flt.include_non_patient if flt else False),
            has_conflict=has_conflict,
        )
        with self.read_session() as session:
            return study_service.studies_frame(session, flt=flt)

    def list_studies(
        self,
        flt: StudyFilter | None = None,
        *,
        sort: str | Sequence[tuple[str, str]] | None = None,
        limit: int | None = 50,
        offset: int = 0,
        count: bool = True,
    ) -> study_service.StudyPage:
        """Return one page of studies and the total (services.studies.list_studies)."""
        with self.read_session() as session:
            return study_service.list_studies(
                session, flt=flt, sort=sort, limit=limit, offset=offset, count=count
            )

    def count_studies(self, flt: StudyFilter | None = None) -> int:
        """Return how many studies ``flt`` selects."""
        with self.read_session() as session:
            return study_service.count_studies(session, flt=flt)

    def iter_studies(
        self, flt: StudyFilter | None = None, *, batch_size: int = 2000
    ) -> Iterator[dict[str, Any]]:
        """Yield every study of ``flt`` as a dict, streamed (oldest first)."""
        with self.read_session() as session:
            yield from study_service.iter_studies(session, flt=flt, batch_size=batch_size)

    def iter_events(
        self, flt: StudyFilter | None = None, *, batch_size: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Yield every current irradiation event of ``flt``'s studies, streamed."""
        with self.read_session() as session:
            yield from study_service.iter_events(session, flt=flt, batch_size=batch_size)

    def study(self, study_id: int, *, principal: Any = None) -> study_service.StudyDetail:
        """Return one study and its current events.

        Parameters
        ----------
        study_id : int
            The study's id.
        principal : object with ``site_ids``, optional
            The caller (``kerma.web.security.Principal``): a study of a site it is not
            assigned to is refused. Default: no restriction.

        Raises
        ------
        kerma.errors.NotFoundError
            When no study has that id.
        kerma.errors.SiteAccessError
            When ``principal`` may not see the study's site.
        """
        from kerma.services.sites import get_study_for

        with self.session(write=False) as session:
            return get_study_for(session, study_id, principal)

    # -- sites ---------------------------------------------------------------------------------

    def sites(self) -> pd.DataFrame:
        """Return one row per site: ``site_id``, ``name``, ``devices``, ``studies``."""
        import dataclasses

        import pandas as pd

        from kerma.services.sites import SiteRow, list_sites

        with self.read_session() as session:
            rows = [dataclasses.asdict(r) for r in list_sites(session)]
        return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(SiteRow)])

    def site_ids(self, names: Iterable[str]) -> tuple[int, ...]:
        """Return the ids of the sites named (any case); raises NotFoundError when unknown."""
        from kerma.services.sites import site_ids

        with self.session(write=False) as session:
            return site_ids(session, names)

    def sites_for_user(self, username: str) -> tuple[int, ...] | None:
        """Return the site ids a user is restricted to, or ``None`` (every site)."""
        from kerma.services.sites import sites_for_user

        with self.session(write=False) as session:
            return sites_for_user(session, username)

    def assign_user_sites(self, username: str, names: Iterable[str]) -> tuple[int, ...]:
        """Restrict a user to the sites named (empty: every site); return their ids."""
        from kerma.services.sites import assign_user_sites

        with self.session() as session:
            return assign_user_sites(session, username, names)

    def is_user_account(self, username: str) -> bool:
        """Return whether ``username`` is a user account (a directory user after login)."""
        from kerma.services.sites import is_user_account

        with self.session(write=False) as session:
            return is_user_account(session, username)

    def events(
        self,
        *,
        modality: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        device: str | None = None,
        include_non_patient: bool = False,
        flt: StudyFilter | None = None,
    ) -> pd.DataFrame:
        """Return one row per current irradiation event (superseded copies left out).

        Parameters
        ----------
        modality : str, optional
            The event's own modality (``CT``, ``RF``, ``DX`` ...).
        date_from, date_to : date or ISO string, optional
            Study date range, both ends included.
        device : str, optional
            Case-insensitive substring of the device name, station name or model.
        include_non_patient : bool, optional
            Include QA / phantom studies. Default ``False``.
        flt : StudyFilter, optional
            Any other study filter.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`kerma.db.studies.EVENT_COLUMNS`: study and device context,
            ``kind``, every :data:`kerma.records.EVENT_SCALAR_FIELDS` name in its
            canonical unit and ``xray_sources``. ``study_date`` is datetime64.
        """
        flt = self._filter(
            flt,
            date_from=date_from,
            date_to=date_to,
            device=device,
            include_non_patient=include_non_patient or (flt.include_non_patient if flt else False),
        )
        with self.session(write=False) as session:
            return study_service.events_frame(
                session, flt=flt, event_modalities=[modality] if modality else ()
            )

    def rejects(self, *, limit: int | None = None) -> pd.DataFrame:
        """Return the rejected objects, newest first (``limit`` rows at most)."""
        with self.session(write=False) as session:
            return study_service.rejects_frame(session, limit=limit)

    # -- conflicts (services.conflicts) ---------------------------------------------------

    def conflicts(self, *, include_decided: bool = False) -> list[ConflictRow]:
        """Return the SOP Instance UIDs held in several versions (open ones by default)."""
        from kerma.services import conflicts

        with self.session(write=False) as session:
            return conflicts.list_conflicts(session, include_decided=include_decided)

    def conflict(self, sop_instance_uid: str) -> ConflictDetail:
        """Return the versions of a SOP Instance UID in conflict and how they differ.

        Raises
        ------
        kerma.errors.NotFoundError
            When no versions of it are held.
        """
        from kerma.services import conflicts

        with self.session(write=False) as session:
            return conflicts.get_conflict_or_raise(session, sop_instance_uid=sop_instance_uid)

    def resolve_conflict(
        self, sop_instance_uid: str, *, keep: int, reason: str, user: str
    ) -> ConflictDetail:
        """Keep one version of a SOP Instance UID in conflict; return the conflict after.

        See :func:`kerma.services.conflicts.resolve_conflict`.

        Raises
        ------
        kerma.errors.NotFoundError
            When no versions of it are held.
        kerma.errors.ConflictError
            When the version is not held, the reason is empty, or its archived copy is
            missing or no longer extracts.
        """
        from kerma.services import conflicts

        conflicts.resolve_conflict(
            self.importer, sop_instance_uid=sop_instance_uid, keep=keep, reason=reason, user=user
        )
        return self.conflict(sop_instance_uid)

    def conflict_decisions(self, sop_instance_uid: str | None = None) -> list[DecisionRow]:
        """Return the decision log (of one SOP Instance UID, or all), oldest first."""
        from kerma.services import conflicts

        with self.session(write=False) as session:
            return conflicts.list_decisions(session, sop_instance_uid=sop_instance_uid)

    def plausibility_flags(self, *, study_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Return the values that flagged studies for review (one row per value).

        See :func:`kerma.services.studies.plausibility_flags_frame`; the studies are
        listed by ``studies(flt=StudyFilter(flagged=True))`` (``kerma studies --flagged``).
        """
        with self.session(write=False) as session:
            return study_service.plausibility_flags_frame(session, study_ids=study_ids)

    def count_rejects(self) -> int:
        """Return how many rejected objects the registry lists."""
        with self.session(write=False) as session:
            return study_service.count_rejects(session)

    def ignored(self, *, limit: int | None = None) -> pd.DataFrame:
        """Return the objects received without dose information and not kept, newest first."""
        with self.session(write=False) as session:
            return study_service.ignored_frame(session, limit=limit)

    def patient_sizes(self, *, study_instance_uid: str | None = None) -> pd.DataFrame:
        """Return the patient sizes measured on received CT images, one row per image.

        Columns :data:`kerma.db.studies.PATIENT_SIZE_COLUMNS`: ``direction`` (``dw``,
        ``lat``, ``ap``), ``water_equivalent_diameter_mm`` (axial images, AAPM Report
        220), ``patient_width_mm`` (localizers, geometric width), ...
        """
        with self.session(write=False) as session:
            return study_service.patient_sizes_frame(session, study_instance_uid=study_instance_uid)

    def study_patient_sizes(self, *, study_instance_uid: str | None = None) -> pd.DataFrame:
        """Return one patient size per Study Instance UID from its CT images (for the SSDE)."""
        with self.session(write=False) as session:
            return study_service.study_patient_sizes_frame(
                session, study_instance_uid=study_instance_uid
            )

    # -- analytics ---------------------------------------------------------------------------

    def summary(
        self,
        *,
        modality: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        device: str | None = None,
        include_non_patient: bool = False,
        flt: StudyFilter | None = None,
    ) -> pd.DataFrame:
        """Return event dose statistics per modality, device and acquisition protocol.

        See :func:`kerma.services.analytics.dose_summary` (canonical units; ``modality``
        is the events' own).
        """
        from kerma.services.analytics import dose_summary

        flt = self._filter(
            flt,
            modality=modality,
            date_from=date_from,
            date_to=date_to,
            device=device,
            include_non_patient=include_non_patient or (flt.include_non_patient if flt else False),
        )
        with self.read_session() as session:
            return dose_summary(session, flt=flt)

    def ensure_exams_current(self) -> RemapResult:
        """Map again the studies mapped with other exam rules than those in force."""
        from kerma.services.exams import ensure_exams_current

        return ensure_exams_current(self._write_factory, context=self.context)

    def apply_exams(self, *, derive: bool = True) -> RemapResult:
        """Map every study with the rules in force and derive every summary again.

        ``derive=False``: map only (the derive is queued, ``kerma exams --apply --queue``).
        """
        from kerma.services.exams import apply_exams

        return apply_exams(self._write_factory, context=self.context, derive=derive)

    def samples(
        self, flt: StudyFilter | None = None, *, families: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Return the DRL sample frame (:func:`kerma.services.analytics.dose_samples`)."""
        from kerma.services.analytics import MODALITY_FAMILIES, dose_samples

        with self.read_session() as session:
            return dose_samples(session, flt=flt, families=families or MODALITY_FAMILIES)

    def drl(
        self,
        flt: StudyFilter | None = None,
        *,
        drl_set: str | None = None,
        families: Sequence[str] | None = None,
        exam: str | None = None,
        local: bool = False,
        periods: bool = False,
    ) -> DrlResult:
        """Compare the rooms with the DRLs (:func:`kerma.services.analytics.compare_drls`).

        The settings give the DRL set, site tables, minimum samples, unknown-age policy,
        period and consecutive periods.
        """
        from kerma.services.analytics import MODALITY_FAMILIES, compare_drls

        s = self.settings
        with self.read_session() as session:
            return compare_drls(
                session,
                flt=flt,
                drl_set=drl_set or s.drl_set,
                families=families or MODALITY_FAMILIES,
                exam=exam,
                drl_extra_paths=s.drl_extra_paths,
                min_sample=s.drl_min_sample,
                min_sample_mammography=s.drl_min_sample_mammography,
                unknown_age=s.drl_unknown_age,
                local=local,
                periods=periods,
                period=s.drl_period,
                consecutive=s.drl_consecutive_periods,
            )

    def statistics(
        self,
        flt: StudyFilter | None = None,
        *,
        by: Sequence[str] = ("standard_exam", "device_name"),
        period: str = "month",
        families: Sequence[str] | None = None,
        exam: str | None = None,
        quantities: Sequence[str] | None = None,
    ) -> StatisticsResult:
        """Return dose statistics per group (:func:`kerma.services.analytics.statistics`)."""
        from kerma.services.analytics import MODALITY_FAMILIES, statistics

        with self.read_session() as session:
            return statistics(
                session,
                flt=flt,
                by=by,
                period=period,
                families=families or MODALITY_FAMILIES,
                exam=exam,
                quantities=quantities,
            )

    def cumulative(
        self,
        flt: StudyFilter | None = None,
        *,
        window_days: int | None = None,
        as_of: DateLike = None,
    ) -> pd.DataFrame:
        """Return each patient's cumulative dose (services.analytics.cumulative_dose)."""
        from kerma.services.analytics import cumulative_dose

        with self.read_session() as session:
            return cumulative_dose(
                session,
                flt=flt,
                window_days=window_days or self.settings.cumulative_window_days,
                as_of=as_of,
            )

    def patient(
        self,
        patient_id: str | None = None,
        *,
        issuer: str | None = None,
        accession: str | None = None,
        window_days: int | None = None,
    ) -> PatientRecord:
        """Return a patient's studies and cumulative dose from a typed Patient ID.

        The keyed pseudonym of ``issuer`` + ``patient_id`` (and the keyed hash of
        ``accession``) is computed with this registry's key and looked up
        (:func:`kerma.services.patients.find_patient`).

        Parameters
        ----------
        patient_id : str, optional
            (0010,0020) Patient ID as the images carry it.
        issuer : str, optional
            (0010,0021) Issuer of Patient ID, when the images carry one.
        accession : str, optional
            (0008,0050) Accession Number (alone, or to narrow the patient's studies).
        window_days : int, optional
            Cumulative window (default ``Settings.cumulative_window_days``).

        Raises
        ------
        kerma.errors.NotFoundError
            When no study matches.
        ValueError
            When neither ``patient_id`` nor ``accession`` is given.
        """
        from kerma.services.patients import find_patient, make_pseudonymizer

        pseudonymizer = make_pseudonymizer(self.settings, self._write_factory)
        with self.session(write=False) as session:
            return find_patient(
                session,
                pseudonymizer=pseudonymizer,
                patient_id=patient_id,
                issuer=issuer,
                accession_number=accession,
                window_days=window_days or self.settings.cumulative_window_days,
            )

    # -- devices -----------------------------------------------------------------------------

    def devices(self) -> pd.DataFrame:
        """Return one row per device (:func:`kerma.services.devices.devices_frame`)."""
        from kerma.services.devices import devices_frame

        with self.session(write=False) as session:
            return devices_frame(session)

    def rename_device(self, device: str | int, name: str | None) -> str:
        """Give a device (id or display name) a display name, kept across reprocessing.

        ``None`` or ``""`` restores the automatic name. Returns the name afterwards
        (:func:`kerma.services.devices.rename_device`).
        """
        from kerma.services.devices import rename_device

        with self.session() as session:
            return rename_device(session, device=device, name=name)

    def merge_devices(self, source: str | int, target: str | int) -> MergeResult:
        """Merge two device records that are one machine (``source`` into ``target``).

        See :func:`kerma.services.devices.merge_devices`; kept across reprocessing.
        """
        from kerma.services.devices import merge_devices

        context = self.context
        with self.session() as session:
            return merge_devices(session, source=source, target=target, context=context)

    # -- skin dose ---------------------------------------------------------------------------

    def skin_doses(
        self,
        *,
        study_instance_uids: Sequence[str] | None = None,
        since: DateLike = None,
        until: DateLike = None,
    ) -> pd.DataFrame:
        """Return the stored skin dose estimates (:func:`kerma.services.skin.stored_skin_doses`)."""
        from kerma.services.skin import stored_skin_doses

        with self.session(write=False) as session:
            return stored_skin_doses(
                session, study_instance_uids=study_instance_uids, since=since, until=until
            )

    def estimate_skin_doses(
        self,
        *,
        study_instance_uids: Sequence[str] | None = None,
        since: DateLike = None,
        until: DateLike = None,
        recompute: bool = False,
        timeout_s: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Estimate the missing skin doses and return all
        (:func:`kerma.services.skin.estimate_study_skin_doses`)."""
        from kerma.analysis.skin_dose import DEFAULT_TIMEOUT_S
        from kerma.services.skin import estimate_study_skin_doses

        return estimate_study_skin_doses(
            self._write_factory,
            archive_dir=Path(self.settings.archive_dir),
            study_instance_uids=study_instance_uids,
            since=since,
            until=until,
            recompute=recompute,
            timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
            progress=progress,
            read_archived=self.importer.archive.read,
        )

    # -- alerts (kerma.services.alerts; docs/alerts.md) ------------------------------------

    @property
    def alert_context(self) -> AlertContext:
        """The alert rules in force (``KERMA_ALERT_RULES``, ``KERMA_ALERT_ANLAGE14``)."""
        from kerma.services.alerts import make_context

        with self._lock:
            if self._alert_context is None:
                self._alert_context = make_context(self.base_settings, self._write_factory)
            return self._alert_context

    def reload_config(self) -> None:
        """Read again the configuration saved in the registry (issue #13 admin pages).

        The DRL set, the site exam rules and the alert-rule overrides: the next use of
        :attr:`context`, :attr:`alert_context` and the importer sees them. Other
        processes (the SCP, import workers) read them when they start.
        """
        from kerma.services.web_config import effective_settings

        with self._lock:
            self.settings = effective_settings(self.base_settings, self._write_factory)
            self._context = None
            self._alert_context = None
            self._importer = None

    def alert_rules(self) -> pd.DataFrame:
        """Return the rules in force with threshold and source (one row per rule)."""
        from kerma.services.alerts import rules_table

        return rules_table(self.alert_context)

    def alerts(
        self,
        *,
        state: str | None = None,
        rule_id: str | None = None,
        modality_family: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        limit: int = 100,
        offset: int = 0,
    ) -> pd.DataFrame:
        """Return one page of alerts, newest study first
        (:func:`kerma.services.alerts.list_alerts`)."""
        from kerma.services.alerts import list_alerts

        with self.session(write=False) as session:
            return list_alerts(
                session,
                flt=_alert_filter(state, rule_id, modality_family, date_from, date_to),
                limit=limit,
                offset=offset,
            )

    def count_alerts(
        self,
        *,
        state: str | None = None,
        rule_id: str | None = None,
        modality_family: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
    ) -> int:
        """Return how many alerts match the filters of :meth:`alerts`."""
        from kerma.services.alerts import count_alerts

        with self.session(write=False) as session:
            return count_alerts(
                session, flt=_alert_filter(state, rule_id, modality_family, date_from, date_to)
            )

    def alert(self, alert_id: int) -> dict[str, Any]:
        """Return one alert with its context and history (``services.alerts.get_alert``)."""
        from kerma.services.alerts import get_alert

        with self.session(write=False) as session:
            return get_alert(session, alert_id)

    def alert_message(self, alert_id: int) -> dict[str, Any]:
        """Return the notification/report fields of an alert (no patient identity)."""
        from kerma.services.alerts import alert_message

        with self.session(write=False) as session:
            return alert_message(session, alert_id)

    def review_alert(self, alert_id: int, *, user: str | None = None, note: str = "") -> None:
        """Put an open alert under review (user: the OS user by default)."""
        from kerma.services.alerts import default_user, review_alert

        with self.session() as session:
            review_alert(session, alert_id, user=user or default_user(), note=note)

    def note_alert(self, alert_id: int, text: str, *, user: str | None = None) -> None:
        """Append a note to an alert's history."""
        from kerma.services.alerts import add_note, default_user

        with self.session() as session:
            add_note(session, alert_id, user=user or default_user(), text=text)

    def close_alert(
        self, alert_id: int, *, outcome: str, justification: str, user: str | None = None
    ) -> None:
        """Close an alert with an outcome and a mandatory justification."""
        from kerma.services.alerts import close_alert, default_user

        with self.session() as session:
            close_alert(
                session,
                alert_id,
                user=user or default_user(),
                outcome=outcome,
                justification=justification,
            )

    def recheck_alerts(
        self,
        *,
        rule_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        notify: bool = False,
        first_id: int | None = None,
        last_id: int | None = None,
    ) -> EvaluationResult:
        """Re-evaluate the alert rules on every study (:func:`kerma.services.alerts.recheck`;
        ``notify`` passes the new alerts to ``on_new_alert``; ``first_id``/``last_id``
        keep one range of study ids, a job of ``kerma alerts recheck --queue``)."""
        from kerma.services.alerts import recheck

        return recheck(
            self._write_factory,
            context=self.alert_context,
            rule_id=rule_id,
            progress=progress,
            notify=notify,
            first_id=first_id,
            last_id=last_id,
        )

    def verify_alerts(self) -> VerifyResult:
        """Recompute the review trail's hash chain (``services.alerts.verify_history``)."""
        from kerma.services.alerts import verify_history

        with self.session(write=False) as session:
            return verify_history(session)


def _alert_filter(
    state: str | None,
    rule_id: str | None,
    modality_family: str | None,
    date_from: DateLike,
    date_to: DateLike,
) -> AlertFilter:
    """Return the alert filter of the facade's keyword arguments."""
    from kerma.db.alerts import AlertFilter

    def as_date(value: DateLike) -> dt.date | None:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(str(value))

    return AlertFilter(
        state=state,
        rule_id=rule_id,
        modality_family=modality_family,
        date_from=as_date(date_from),
        date_to=as_date(date_to),
    )

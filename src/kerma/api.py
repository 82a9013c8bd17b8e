"""The Python API of Kerma: :class:`Registry`, exported as ``kerma.Registry``.

Every interface (CLI, web app, DICOM SCP) calls these methods; they return pandas
DataFrames whose columns carry the record field names (units in the names, see
``docs/registry.md``).

May import ``kerma.db``, ``kerma.ingest``, ``kerma.records``, ``kerma.units``,
``kerma.errors`` and ``kerma.config``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from os import PathLike
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Select, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from kerma.config import Settings, get_settings
from kerma.db.migrate import ensure_schema
from kerma.db.models import (
    Device,
    DoseReport,
    IgnoredObject,
    IrradiationEvent,
    Patient,
    PatientSizeMeasurement,
    RejectedObject,
    Study,
)
from kerma.db.session import make_engine, make_session_factory, session_scope
from kerma.ingest.archive import Archive
from kerma.ingest.pipeline import (
    Importer,
    ImportOutcome,
    ImportStatus,
    ImportSummary,
    ReprocessSummary,
)
from kerma.ingest.pseudonym import Pseudonymizer, load_or_create_key
from kerma.records import EVENT_SCALAR_FIELDS
from kerma.units import GY_TO_MGY, GYM2_TO_GYCM2

__all__ = [
    "ImportOutcome",
    "ImportStatus",
    "ImportSummary",
    "Registry",
    "ReprocessSummary",
    "summarise_events",
]

DateLike = dt.date | dt.datetime | str | None
AnySelect = Select[*tuple[Any, ...]]
SelectT = TypeVar("SelectT", bound=AnySelect)

#: Columns of :meth:`Registry.events` before the event fields.
EVENT_CONTEXT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "study_id",
    "study_instance_uid",
    "accession_number",
    "study_date",
    "study_time",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "study_modality",
    "patient_pseudonym",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
    "standard_exam",
    "device_id",
    "device_name",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
    "institution_name",
    "device_serial_number",
    "kind",
)

#: Columns of :meth:`Registry.events`.
EVENT_COLUMNS: tuple[str, ...] = (*EVENT_CONTEXT_COLUMNS, *EVENT_SCALAR_FIELDS, "xray_sources")

#: Columns of :meth:`Registry.studies`.
STUDY_COLUMNS: tuple[str, ...] = (
    "study_id",
    "study_instance_uid",
    "accession_number",
    "study_date",
    "study_time",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "modality",
    "modalities",
    "patient_pseudonym",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
    "standard_exam",
    "device_id",
    "device_name",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
    "number_of_events",
    "ct_dlp_total_mgycm",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
    "agd_total_mgy",
    "administered_activity_mbq",
    "number_of_reports",
    "image_size_mm",
    "image_size_source",
)

#: Columns of :meth:`Registry.rejects`.
REJECT_COLUMNS: tuple[str, ...] = (
    "rejected_at",
    "file_name",
    "sop_instance_uid",
    "sop_class_uid",
    "reason",
    "archive_sha256",
    "archive_path",
)

#: Columns of :meth:`Registry.ignored`.
IGNORED_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "sop_class_uid",
    "study_instance_uid",
    "series_instance_uid",
    "modality",
    "reason",
    "source",
    "received_at",
)

#: Columns of :meth:`Registry.patient_sizes`.
PATIENT_SIZE_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "image_type",
    "direction",
    "water_equivalent_diameter_mm",
    "patient_width_mm",
    "table_position_mm",
    "method",
    "measured_at",
)

#: Columns of :meth:`Registry.study_patient_sizes`.
STUDY_SIZE_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "image_size_mm",
    "image_size_source",
    "number_of_axial_images",
    "water_equivalent_diameter_mean_mm",
    "localizer_ap_mm",
    "localizer_lat_mm",
    "effective_diameter_mm",
)

#: Main dose quantities of :meth:`Registry.summary` by modality: (field, label, factor
#: from the stored unit to the display unit).
SUMMARY_QUANTITIES: dict[str, tuple[tuple[str, str, float], ...]] = {
    "CT": (("ctdivol_mgy", "CTDIvol (mGy)", 1.0), ("dlp_mgycm", "DLP (mGy·cm)", 1.0)),
    "MG": (("agd_mgy", "AGD (mGy)", 1.0),),
    "NM": (("administered_activity_mbq", "Administered activity (MBq)", 1.0),),
    "PT": (("administered_activity_mbq", "Administered activity (MBq)", 1.0),),
}
#: Projection X-ray (any other modality): KAP in Gy·cm², Ka,r in mGy.
PROJECTION_QUANTITIES: tuple[tuple[str, str, float], ...] = (
    ("dap_gym2", "KAP (Gy·cm²)", GYM2_TO_GYCM2),
    ("dose_rp_gy", "Ka,r (mGy)", GY_TO_MGY),
)

#: Columns of :meth:`Registry.summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "modality",
    "device_name",
    "acquisition_protocol",
    "quantity",
    "label",
    "number_of_studies",
    "number_of_events",
    "number_of_values",
    "median",
    "p25",
    "p75",
)


def _as_date(value: DateLike) -> dt.date | None:
    """Return a date from a date, date-time or ISO string (``None`` passes through)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


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
    The schema is migrated to the newest revision on first use. Methods are safe to
    call from several threads and processes at once.

    Examples
    --------
    >>> import kerma
    >>> reg = kerma.Registry("sqlite://")
    >>> len(reg.studies())
    0
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
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
        self._write_factory = make_session_factory(self.engine, write=True)
        self._importer: Importer | None = None
        self._lock = threading.Lock()

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
        """Close the registry's database connections."""
        self.engine.dispose()

    # -- sessions and import ----------------------------------------------------------------

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

    @property
    def importer(self) -> Importer:
        """The :class:`~kerma.ingest.pipeline.Importer` (archive and key set up on first use)."""
        with self._lock:
            if self._importer is None:
                archive_dir = self.settings.archive_dir
                key = load_or_create_key(archive_dir, self.settings.pseudonym_key)
                self._importer = Importer(
                    session_factory=self._write_factory,
                    settings=self.settings,
                    archive=Archive(archive_dir),
                    pseudonymizer=Pseudonymizer(key, self.settings.non_patient_patterns),
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
            is listed by :meth:`ignored` instead (status ``ignored``). Unreadable
            objects are archived and rejected either way.

        Returns
        -------
        ImportSummary
            Counts: imported by kind and modality, already present, superseded,
            rejected (including copies of a stored SOP Instance UID with different
            content), ignored.

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

        ``keep_non_dose`` as :meth:`import_paths`.

        Raises
        ------
        OSError
            When the archive cannot be written.
        """
        return self.importer.import_bytes(data, source=source, keep_non_dose=keep_non_dose)

    def reprocess(self, *, progress: Callable[[str], None] | None = None) -> ReprocessSummary:
        """Re-extract every archived object with the current extractors, in place."""
        return self.importer.reprocess(progress=progress)

    # -- reading ----------------------------------------------------------------------------

    def _frame(self, stmt: AnySelect, columns: tuple[str, ...]) -> pd.DataFrame:
        """Run a select and return its rows as a DataFrame with ``columns``."""
        with session_scope(self._read_factory) as session:
            rows = session.execute(stmt).all()
        return pd.DataFrame.from_records(rows, columns=list(columns))

    def events(
        self,
        *,
        modality: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        device: str | None = None,
        include_non_patient: bool = False,
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

        Returns
        -------
        pandas.DataFrame
            Columns :data:`EVENT_COLUMNS`: study and device context, ``kind``, then
            every :data:`kerma.records.EVENT_SCALAR_FIELDS` name in its canonical unit
            and ``xray_sources`` (list of dicts or ``None``). ``study_date`` is
            datetime64, ``is_non_patient`` bool.
        """
        e = IrradiationEvent
        stmt = (
            select(
                e.id,
                *_study_head(),
                *_study_tail(),
                Device.institution_name,
                Device.device_serial_number,
                DoseReport.kind,
                *(getattr(e, name) for name in EVENT_SCALAR_FIELDS),
                e.xray_sources,
            )
            .join(DoseReport, DoseReport.id == e.dose_report_id)
            .join(Study, Study.id == e.study_id)
            .join(Device, Device.id == Study.device_id)
            .outerjoin(Patient, Patient.id == Study.patient_id)
            .where(e.is_current.is_(True))
            .order_by(Study.study_date, Study.study_time, Study.id, DoseReport.id, e.event_index)
        )
        if modality:
            stmt = stmt.where(func.upper(e.modality) == modality.upper())
        stmt = _filter_studies(stmt, date_from, date_to, device, include_non_patient)
        frame = self._frame(stmt, EVENT_COLUMNS)
        return _typed(frame)

    def studies(
        self,
        *,
        modality: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        device: str | None = None,
        include_non_patient: bool = False,
    ) -> pd.DataFrame:
        """Return one row per study with its dose totals over current events.

        Parameters
        ----------
        modality : str, optional
            Any of the study's modalities.
        date_from, date_to : date or ISO string, optional
            Study date range, both ends included.
        device : str, optional
            Case-insensitive substring of the device name, station name or model.
        include_non_patient : bool, optional
            Include QA / phantom studies. Default ``False``.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`STUDY_COLUMNS`. ``ct_dlp_total_mgycm`` (mGy·cm),
            ``agd_total_mgy`` (mGy) and ``administered_activity_mbq`` (MBq) sum the
            current events, falling back to the current reports' accumulated totals;
            ``dap_total_gym2`` (Gy·m²) and ``dose_rp_total_gy`` (Gy) are the current
            reports' accumulated totals (TID 10002, as the device shows them), falling
            back to the sum of the events (image headers). ``fluoro_time_total_s``
            (s) comes from the current reports' accumulated data. ``modalities`` is
            comma-joined, ``number_of_reports`` counts superseded reports too.
            ``image_size_mm`` (mm) is the patient size measured on the study's
            received CT images (:meth:`study_patient_sizes`: mean axial Dw, else the
            localizer effective diameter), ``image_size_source`` says which
            (``image``, ``localizer`` or ``None``); the SSDE uses it when the RDSR
            gives no size.
        """
        e = IrradiationEvent
        ev = (
            select(
                e.study_id.label("sid"),
                func.count(e.id).label("n_events"),
                func.sum(e.dlp_mgycm).label("dlp"),
                func.sum(e.dap_gym2).label("dap"),
                func.sum(e.dose_rp_gy).label("dose_rp"),
                func.sum(e.agd_mgy).label("agd"),
                func.sum(e.administered_activity_mbq).label("activity"),
                func.sum(
                    case((e.irradiation_event_type == "Fluoroscopy", e.irradiation_duration_s))
                ).label("fluoro_s"),
            )
            .where(e.is_current.is_(True))
            .group_by(e.study_id)
            .subquery()
        )
        size = _study_size_subquery()
        r = DoseReport
        current = r.superseded_by_id.is_(None)
        rep = (
            select(
                r.study_id.label("sid"),
                func.count(r.id).label("n_reports"),
                func.sum(case((current, r.ct_dlp_total_mgycm))).label("dlp"),
                func.sum(case((current, r.dap_total_gym2))).label("dap"),
                func.sum(case((current, r.dose_rp_total_gy))).label("dose_rp"),
                func.sum(case((current, r.agd_total_mgy))).label("agd"),
                func.sum(case((current, r.fluoro_time_total_s))).label("fluoro_s"),
            )
            .group_by(r.study_id)
            .subquery()
        )
        stmt = (
            select(
                *_study_head(),
                Study.modalities,
                *_study_tail(),
                func.coalesce(ev.c.n_events, 0),
                func.coalesce(ev.c.dlp, rep.c.dlp),
                # KAP and Ka,r: the device's accumulated totals (TID 10002) of the current
                # reports, as the console shows them; event sums only when none is given
                func.coalesce(rep.c.dap, ev.c.dap),
                func.coalesce(rep.c.dose_rp, ev.c.dose_rp),
                func.coalesce(rep.c.fluoro_s, ev.c.fluoro_s),
                func.coalesce(ev.c.agd, rep.c.agd),
                ev.c.activity,
                func.coalesce(rep.c.n_reports, 0),
                size.c.dw,
                size.c.ap,
                size.c.lat,
            )
            .join(Device, Device.id == Study.device_id)
            .outerjoin(Patient, Patient.id == Study.patient_id)
            .outerjoin(ev, ev.c.sid == Study.id)
            .outerjoin(rep, rep.c.sid == Study.id)
            .outerjoin(size, size.c.uid == Study.study_instance_uid)
            .order_by(Study.study_date, Study.study_time, Study.id)
        )
        if modality:
            m = modality.upper()
            stmt = stmt.where(
                or_(
                    func.upper(Study.modality) == m,
                    exists().where(
                        and_(
                            e.study_id == Study.id,
                            e.is_current.is_(True),
                            func.upper(e.modality) == m,
                        )
                    ),
                )
            )
        stmt = _filter_studies(stmt, date_from, date_to, device, include_non_patient)
        raw_columns = (
            *STUDY_COLUMNS[:-2],
            "water_equivalent_diameter_mean_mm",
            "localizer_ap_mm",
            "localizer_lat_mm",
        )
        frame = _with_image_size(self._frame(stmt, raw_columns))[list(STUDY_COLUMNS)]
        frame["number_of_events"] = frame["number_of_events"].astype("int64")
        frame["number_of_reports"] = frame["number_of_reports"].astype("int64")
        return _typed(frame)

    def rejects(self, *, limit: int | None = None) -> pd.DataFrame:
        """Return the rejected objects, newest first.

        Parameters
        ----------
        limit : int, optional
            At most this many rows.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`REJECT_COLUMNS`: ``rejected_at`` (UTC), ``file_name`` (as
            given), SOP UIDs when known, ``reason``, and where the object is archived.
        """
        ro = RejectedObject
        stmt = select(
            ro.rejected_at,
            ro.file_name,
            ro.sop_instance_uid,
            ro.sop_class_uid,
            ro.reason,
            ro.archive_sha256,
            ro.archive_path,
        ).order_by(ro.rejected_at.desc(), ro.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        frame = self._frame(stmt, REJECT_COLUMNS)
        frame["rejected_at"] = pd.to_datetime(frame["rejected_at"], utc=True)
        return frame

    def ignored(self, *, limit: int | None = None) -> pd.DataFrame:
        """Return the objects received without dose information and not kept, newest first.

        Only imports with ``keep_non_dose=False`` (e.g. a Storage SCP receiving whole
        studies) list objects here; one row per SOP Instance UID (receiving it again
        updates the row).

        Parameters
        ----------
        limit : int, optional
            At most this many rows.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`IGNORED_COLUMNS`: ``sop_instance_uid``, ``sop_class_uid``,
            ``study_instance_uid``, ``series_instance_uid``, ``modality``, ``reason``
            (why it holds no dose information), ``source`` (file, or peer), and
            ``received_at`` (UTC, datetime64).
        """
        io_ = IgnoredObject
        stmt = select(
            io_.sop_instance_uid,
            io_.sop_class_uid,
            io_.study_instance_uid,
            io_.series_instance_uid,
            io_.modality,
            io_.reason,
            io_.source,
            io_.received_at,
        ).order_by(io_.received_at.desc(), io_.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        frame = self._frame(stmt, IGNORED_COLUMNS)
        frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
        return frame

    def patient_sizes(self, *, study_instance_uid: str | None = None) -> pd.DataFrame:
        """Return the patient sizes measured on received CT images, one row per image.

        Measured at import (:mod:`kerma.dicom.size`) on every CT image received, with
        or without dose data, whether or not its study's dose report is here.

        Parameters
        ----------
        study_instance_uid : str, optional
            Only this study.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`PATIENT_SIZE_COLUMNS`, ordered by study and table position:
            ``study_instance_uid``, ``series_instance_uid``, ``sop_instance_uid``;
            ``image_type`` (``axial`` or ``localizer``); ``direction`` (``dw`` for an
            axial image, ``lat`` or ``ap`` for a localizer); ``water_equivalent_diameter_mm``
            (float, mm: AAPM Report 220 Dw of an axial image, NaN for a localizer);
            ``patient_width_mm`` (float, mm: geometric width on a localizer, left-right
            or front-back as ``direction`` says, NaN for an axial image);
            ``table_position_mm`` (mm, axial images); ``method``; ``measured_at`` (UTC).
        """
        m = PatientSizeMeasurement
        stmt = select(
            m.study_instance_uid,
            m.series_instance_uid,
            m.sop_instance_uid,
            m.image_type,
            m.method,
            m.water_equivalent_diameter_mm,
            m.table_position_mm,
            m.measured_at,
        ).order_by(m.study_instance_uid, m.image_type, m.table_position_mm, m.id)
        if study_instance_uid is not None:
            stmt = stmt.where(m.study_instance_uid == study_instance_uid)
        raw = self._frame(
            stmt,
            (
                "study_instance_uid",
                "series_instance_uid",
                "sop_instance_uid",
                "image_type",
                "method",
                "size_mm",
                "table_position_mm",
                "measured_at",
            ),
        )
        return _patient_size_frame(raw)

    def study_patient_sizes(self, *, study_instance_uid: str | None = None) -> pd.DataFrame:
        """Return one patient size per study from its CT images, for the SSDE.

        AAPM Report 220 uses the mean water-equivalent diameter over the scanned range:
        the mean Dw of the study's axial images (size source ``image``); a study with
        no axial image but a lateral and an AP localizer width gets the AAPM Report 204
        effective diameter √(AP × LAT) (geometric, size source ``localizer``).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`STUDY_SIZE_COLUMNS`, one row per Study Instance UID with a
            measurement: ``image_size_mm`` (mm, the size to use, NaN when the study has
            only one localizer direction) and ``image_size_source`` (``image``,
            ``localizer`` or ``None``), ``number_of_axial_images``,
            ``water_equivalent_diameter_mean_mm`` (mm), ``localizer_ap_mm`` and
            ``localizer_lat_mm`` (mm, mean over the study's localizers of that
            direction), ``effective_diameter_mm`` (mm, NaN without both).
        """
        sub = _study_size_subquery()
        stmt = select(sub.c.uid, sub.c.n_axial, sub.c.dw, sub.c.ap, sub.c.lat).order_by(sub.c.uid)
        if study_instance_uid is not None:
            stmt = stmt.where(sub.c.uid == study_instance_uid)
        frame = self._frame(
            stmt,
            (
                "study_instance_uid",
                "number_of_axial_images",
                "water_equivalent_diameter_mean_mm",
                "localizer_ap_mm",
                "localizer_lat_mm",
            ),
        )
        frame["number_of_axial_images"] = frame["number_of_axial_images"].astype("int64")
        return _with_image_size(frame)[list(STUDY_SIZE_COLUMNS)]

    def summary(
        self,
        *,
        modality: str | None = None,
        date_from: DateLike = None,
        date_to: DateLike = None,
        device: str | None = None,
        include_non_patient: bool = False,
    ) -> pd.DataFrame:
        """Return dose statistics per modality, device and acquisition protocol.

        The main dose quantities, in display units: CT: CTDIvol (mGy) and DLP (mGy·cm)
        per event; projection X-ray: KAP (Gy·cm²) and Ka,r (mGy) per event; MG: AGD
        (mGy); NM / PT: administered activity (MBq). Filters as :meth:`events`.

        Returns
        -------
        pandas.DataFrame
            One row per (modality, device_name, acquisition_protocol, quantity) with
            ``label``, ``number_of_studies``, ``number_of_events`` (of the group),
            ``number_of_values`` (events holding the quantity), ``median``, ``p25``
            and ``p75`` in the display unit named by ``label``. Groups where no event
            holds the quantity are left out.
        """
        events = self.events(
            modality=modality,
            date_from=date_from,
            date_to=date_to,
            device=device,
            include_non_patient=include_non_patient,
        )
        return summarise_events(events)


def summarise_events(events: pd.DataFrame) -> pd.DataFrame:
    """Return :meth:`Registry.summary` statistics of an :meth:`Registry.events` frame."""
    rows: list[dict[str, Any]] = []
    if events.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    frame = events.assign(
        modality=events["modality"].fillna(events["study_modality"]).fillna(""),
        acquisition_protocol=events["acquisition_protocol"].fillna(""),
    )
    keys = ["modality", "device_name", "acquisition_protocol"]
    for (modality, device_name, protocol), group in frame.groupby(keys, sort=True):
        quantities = SUMMARY_QUANTITIES.get(str(modality), PROJECTION_QUANTITIES)
        for name, label, factor in quantities:
            values = pd.to_numeric(group[name], errors="coerce").dropna() * factor
            if values.empty:
                continue
            rows.append(
                {
                    "modality": modality,
                    "device_name": device_name,
                    "acquisition_protocol": protocol,
                    "quantity": name,
                    "label": label,
                    "number_of_studies": int(group["study_id"].nunique()),
                    "number_of_events": len(group),
                    "number_of_values": len(values),
                    "median": float(values.median()),
                    "p25": float(values.quantile(0.25)),
                    "p75": float(values.quantile(0.75)),
                }
            )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _patient_size_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Return :meth:`Registry.patient_sizes` columns from the stored measurement rows."""
    from kerma.dicom.size import METHOD_LOCALIZER_AP, METHOD_LOCALIZER_LAT

    method = raw["method"].astype(str)
    is_axial = raw["image_type"].eq("axial")
    direction = pd.Series([None] * len(raw), index=raw.index, dtype=object)
    direction[~is_axial & method.str.startswith(METHOD_LOCALIZER_AP)] = "ap"
    direction[~is_axial & method.str.startswith(METHOD_LOCALIZER_LAT)] = "lat"
    direction[is_axial] = "dw"
    size = pd.to_numeric(raw["size_mm"], errors="coerce").astype(float)
    frame = raw.assign(
        direction=direction,
        water_equivalent_diameter_mm=size.where(is_axial),
        patient_width_mm=size.where(~is_axial),
        table_position_mm=pd.to_numeric(raw["table_position_mm"], errors="coerce").astype(float),
        measured_at=pd.to_datetime(raw["measured_at"], utc=True),
    )
    return frame[list(PATIENT_SIZE_COLUMNS)].reset_index(drop=True)


def _study_size_subquery() -> Any:
    """Return a subquery of the patient size per Study Instance UID (``study_patient_sizes``)."""
    from kerma.dicom.size import METHOD_LOCALIZER_AP, METHOD_LOCALIZER_LAT

    m = PatientSizeMeasurement
    axial = m.image_type == "axial"
    lat = and_(m.image_type == "localizer", m.method.startswith(METHOD_LOCALIZER_LAT))
    ap = and_(m.image_type == "localizer", m.method.startswith(METHOD_LOCALIZER_AP))
    return (
        select(
            m.study_instance_uid.label("uid"),
            func.count(case((axial, m.id))).label("n_axial"),
            func.avg(case((axial, m.water_equivalent_diameter_mm))).label("dw"),
            func.avg(case((ap, m.water_equivalent_diameter_mm))).label("ap"),
            func.avg(case((lat, m.water_equivalent_diameter_mm))).label("lat"),
        )
        .group_by(m.study_instance_uid)
        .subquery()
    )


def _with_image_size(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``effective_diameter_mm``, ``image_size_mm`` and ``image_size_source``.

    ``image_size_mm`` is the mean axial Dw (``image``, AAPM Report 220), else the
    localizer effective diameter √(AP × LAT) (``localizer``, AAPM Report 204), else NaN.
    """
    dw = pd.to_numeric(frame["water_equivalent_diameter_mean_mm"], errors="coerce")
    ap = pd.to_numeric(frame["localizer_ap_mm"], errors="coerce").astype(float)
    lat = pd.to_numeric(frame["localizer_lat_mm"], errors="coerce").astype(float)
    effective = np.sqrt(ap * lat)
    frame["water_equivalent_diameter_mean_mm"] = dw.astype(float)
    frame["localizer_ap_mm"] = ap
    frame["localizer_lat_mm"] = lat
    frame["effective_diameter_mm"] = effective
    frame["image_size_mm"] = dw.where(dw.notna(), effective).astype(float)
    source = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    source[effective.notna()] = "localizer"
    source[dw.notna()] = "image"
    frame["image_size_source"] = source
    return frame


def _study_head() -> tuple[Any, ...]:
    """Return the study columns that open both frames, up to the study modality."""
    return (
        Study.id,
        Study.study_instance_uid,
        Study.accession_number,
        Study.study_date,
        Study.study_time,
        Study.study_description,
        Study.requested_procedure_description,
        Study.procedure_reported,
        Study.modality,
    )


def _study_tail() -> tuple[Any, ...]:
    """Return the patient and device columns both frames share, after the modality."""
    return (
        Patient.pseudonym,
        Study.patient_age_years,
        Study.patient_sex,
        Study.patient_weight_kg,
        Study.patient_size_m,
        Study.is_non_patient,
        Study.standard_exam,
        Device.id,
        Device.device_name,
        Device.manufacturer,
        Device.manufacturer_model_name,
        Device.station_name,
    )


def _filter_studies(
    stmt: SelectT,
    date_from: DateLike,
    date_to: DateLike,
    device: str | None,
    include_non_patient: bool,
) -> SelectT:
    """Apply the study-level filters shared by :meth:`Registry.events` and ``studies``."""
    start, end = _as_date(date_from), _as_date(date_to)
    if start is not None:
        stmt = stmt.where(Study.study_date >= start)
    if end is not None:
        stmt = stmt.where(Study.study_date <= end)
    if device:
        pattern = f"%{device}%"
        stmt = stmt.where(
            or_(
                Device.device_name.ilike(pattern),
                Device.station_name.ilike(pattern),
                Device.manufacturer_model_name.ilike(pattern),
            )
        )
    if not include_non_patient:
        stmt = stmt.where(Study.is_non_patient.is_(False))
    return stmt


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the shared columns their dtypes (dates as datetime64, flags as bool)."""
    frame["study_date"] = pd.to_datetime(frame["study_date"])
    frame["is_non_patient"] = frame["is_non_patient"].astype(bool)
    return frame

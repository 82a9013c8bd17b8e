"""The registry tables as SQLAlchemy 2 typed models (DESIGN.md "Storage").

``device`` and ``patient`` are normalised (identity matters), ``irradiation_event`` is
wide (one column per :data:`kerma.records.EVENT_SCALAR_FIELDS` name, analytics read
it). ``dose_report`` keeps the full extracted record as JSON, so nothing is lost that a
column does not hold. Column names are the record field names, units included.

May import ``kerma.records`` and ``kerma.db.base`` only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kerma.db.base import Base

UID = String(64)  # DICOM UI values are at most 64 characters (PS3.5)

#: Event columns of the DX/MG dose samples, covered by ``ix_irradiation_event_samples``.
SAMPLE_EVENT_COLUMNS: tuple[str, ...] = (
    "dap_gym2",
    "dose_rp_gy",
    "entrance_dose_mgy",
    "agd_mgy",
    "compression_thickness_mm",
    "image_view",
    "laterality",
)

#: Event quantities ``kerma summary`` reports per group, each with a partial index
#: ``(event_group_id, <quantity>) WHERE <quantity> IS NOT NULL``.
SUMMARY_EVENT_QUANTITIES: tuple[str, ...] = (
    "ctdivol_mgy",
    "dlp_mgycm",
    "dap_gym2",
    "dose_rp_gy",
    "agd_mgy",
    "administered_activity_mbq",
)
SHA256_HEX = String(64)


class Site(Base):
    """One site (institution) of a multi-site registry (issue #15).

    Identity: ``name``, the site name a receiving node is configured with
    (``KERMA_SITE``), a mapped institution (``KERMA_SITE_MAP``) or the object's
    (0008,0080) Institution Name. Devices and studies carry the site they belong to.
    """

    __tablename__ = "site"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class UserSite(Base):
    """A user's assignment to a site: the user sees that site's studies (issue #15).

    Keyed by user name (the users table belongs to the web security); a user without
    rows is not restricted by site.
    """

    __tablename__ = "user_site"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[int] = mapped_column(
        ForeignKey("site.id", ondelete="CASCADE"), primary_key=True, index=True
    )


def _utc_now() -> dt.datetime:
    """Return the current time in UTC (the ``study.updated_at`` change marker)."""
    return dt.datetime.now(dt.UTC)


class Device(Base):
    """One imaging device (a room / modality unit).

    Identity (``device_key``): the TID 1004 Device Observer UID when the object gives
    one, else (manufacturer, model, serial number, station name); see
    :func:`kerma.db.queries.device_key`.
    """

    __tablename__ = "device"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_key: Mapped[str] = mapped_column(SHA256_HEX, unique=True)
    device_observer_uid: Mapped[str | None] = mapped_column(UID, index=True)
    manufacturer: Mapped[str | None] = mapped_column(String)
    manufacturer_model_name: Mapped[str | None] = mapped_column(String)
    device_serial_number: Mapped[str | None] = mapped_column(String)
    station_name: Mapped[str | None] = mapped_column(String)
    institution_name: Mapped[str | None] = mapped_column(String)
    software_versions: Mapped[str | None] = mapped_column(String)
    device_name: Mapped[str] = mapped_column(String, default="")
    #: the site of the first object received from the device (issue #15)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    studies: Mapped[list[Study]] = relationship(back_populates="device")


class Patient(Base):
    """A patient, known only by a keyed pseudonym: HMAC-SHA-256 of issuer + Patient ID."""

    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(SHA256_HEX, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Study(Base):
    """One study as performed on one device.

    Identity: (Study Instance UID, device). A study of the same UID done on two devices
    (e.g. a PET-CT's CT and PET parts, or a CT and a DX room) is two rows: dose belongs
    to the device that delivered it, and DRLs are compared per device.

    The summary columns (``number_of_events`` to ``image_size_source``) are derived from
    the study's current events and reports, its patient-size measurements and the
    reference tables, in the transaction that changes them (``docs/registry.md``,
    "Study summary columns"); ``derived_at`` says when.
    """

    __tablename__ = "study"
    __table_args__ = (
        UniqueConstraint("study_instance_uid", "device_id"),
        # listing: newest first, stable tiebreak by id; with the non-patient flag in the
        # index a late page is an index-only walk (docs/performance.md)
        Index("ix_study_date_time_id", "study_date", "study_time", "id", "is_non_patient"),
        # cumulative dose per patient over a date window
        Index("ix_study_patient_date", "patient_id", "study_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"), index=True)
    #: the site that performed the study (issue #15; ``kerma.ingest.sites``)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), index=True)
    #: the clear (0008,0050) Accession Number, only when ``KERMA_ACCESSION_IN_CLEAR``
    accession_number: Mapped[str | None] = mapped_column(String)
    #: keyed hash of the Accession Number (:mod:`kerma.ingest.pseudonym`), always
    accession_pseudonym: Mapped[str | None] = mapped_column(SHA256_HEX, index=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    study_time: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String)
    requested_procedure_description: Mapped[str | None] = mapped_column(String)
    procedure_reported: Mapped[str | None] = mapped_column(String)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    modalities: Mapped[str | None] = mapped_column(String(64))
    patient_age_years: Mapped[float | None] = mapped_column(Float)
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    patient_weight_kg: Mapped[float | None] = mapped_column(Float)
    patient_size_m: Mapped[float | None] = mapped_column(Float)
    #: where ``patient_weight_kg`` / ``patient_size_m`` came from: ``device`` (the dose
    #: object), ``ris`` (an HL7 v2 order or result) or ``fhir`` (docs/ris.md)
    patient_weight_source: Mapped[str | None] = mapped_column(String(8))
    patient_size_source: Mapped[str | None] = mapped_column(String(8))
    #: the requested procedure code of the matched RIS order (exam rules read it)
    requested_procedure_code: Mapped[str | None] = mapped_column(String)
    is_non_patient: Mapped[bool] = mapped_column(Boolean, default=False)
    #: a report of the study has an undecided conflict: another copy of its SOP Instance
    #: UID with different content is held (``report_conflict``); the totals use the
    #: current (unconfirmed) version until a user or the conflict rule decides
    has_conflict: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), index=True
    )
    standard_exam: Mapped[str | None] = mapped_column(String, index=True)
    standard_exam_rule: Mapped[str | None] = mapped_column(String)
    #: fingerprint of the exam rules the stored mapping was made with
    #: (:attr:`kerma.analysis.exams.ExamRuleSet.fingerprint`)
    exam_rules_fingerprint: Mapped[str | None] = mapped_column(String(16), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # -- summary columns: derived from the current events and reports at ingest
    # (kerma.services.derive.refresh_studies); canonical units in the names
    number_of_events: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    number_of_reports: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    modality_family: Mapped[str | None] = mapped_column(String(8), index=True)
    acquisition_protocols: Mapped[str | None] = mapped_column(Text)
    target_regions: Mapped[str | None] = mapped_column(Text)
    anatomical_structures: Mapped[str | None] = mapped_column(Text)
    image_views: Mapped[str | None] = mapped_column(Text)
    lateralities: Mapped[str | None] = mapped_column(Text)
    ct_dlp_total_mgycm: Mapped[float | None] = mapped_column(Float)
    ctdivol_mean_mgy: Mapped[float | None] = mapped_column(Float)
    ctdivol_max_mgy: Mapped[float | None] = mapped_column(Float)
    kvp_kv: Mapped[float | None] = mapped_column(Float)
    ssde_mgy: Mapped[float | None] = mapped_column(Float)
    ssde_size_mm: Mapped[float | None] = mapped_column(Float)
    ssde_size_source: Mapped[str | None] = mapped_column(String(16))
    ssde_reference: Mapped[str | None] = mapped_column(String)
    effective_dose_msv: Mapped[float | None] = mapped_column(Float)
    effective_dose_k_msv_per_mgycm: Mapped[float | None] = mapped_column(Float)
    effective_dose_reference: Mapped[str | None] = mapped_column(String)
    dap_total_gym2: Mapped[float | None] = mapped_column(Float)
    dap_total_plane_a_gym2: Mapped[float | None] = mapped_column(Float)
    dap_total_plane_b_gym2: Mapped[float | None] = mapped_column(Float)
    dose_rp_total_gy: Mapped[float | None] = mapped_column(Float)
    dose_rp_total_plane_a_gy: Mapped[float | None] = mapped_column(Float)
    dose_rp_total_plane_b_gy: Mapped[float | None] = mapped_column(Float)
    fluoro_time_total_s: Mapped[float | None] = mapped_column(Float)
    agd_total_left_mgy: Mapped[float | None] = mapped_column(Float)
    agd_total_right_mgy: Mapped[float | None] = mapped_column(Float)
    administered_activity_total_mbq: Mapped[float | None] = mapped_column(Float)
    image_size_mm: Mapped[float | None] = mapped_column(Float)
    image_size_source: Mapped[str | None] = mapped_column(String(16))
    derived_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: change marker of the incremental exports (migration 0011_export_marker): set on
    #: insert and on every UPDATE through SQLAlchemy, in UTC with microseconds
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), default=_utc_now, onupdate=_utc_now, index=True
    )

    device: Mapped[Device] = relationship(back_populates="studies")
    patient: Mapped[Patient | None] = relationship()
    dose_reports: Mapped[list[DoseReport]] = relationship(
        back_populates="study", order_by="DoseReport.id"
    )


class DoseReport(Base):
    """One received dose object (RDSR, image header, dose sheet) and its extracted record.

    ``content`` is :meth:`kerma.records.DoseReport.to_dict`; the accumulated totals are
    copied to columns (canonical units) for the study totals. ``superseded_by_id`` is set
    when a later report of the same study holds all this report's irradiation events.
    """

    __tablename__ = "dose_report"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    kind: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    archive_sha256: Mapped[str] = mapped_column(SHA256_HEX, index=True)
    archive_path: Mapped[str] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(String)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    superseded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("dose_report.id", ondelete="SET NULL"), index=True
    )
    extractor_version: Mapped[str] = mapped_column(String(32))
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    number_of_events: Mapped[int] = mapped_column(Integer, default=0)
    ct_dlp_total_mgycm: Mapped[float | None] = mapped_column(Float)
    dap_total_gym2: Mapped[float | None] = mapped_column(Float)
    dose_rp_total_gy: Mapped[float | None] = mapped_column(Float)
    fluoro_time_total_s: Mapped[float | None] = mapped_column(Float)
    #: the larger per-breast accumulated AGD (mGy): never a sum across breasts
    agd_total_mgy: Mapped[float | None] = mapped_column(Float)

    study: Mapped[Study] = relationship(back_populates="dose_reports")
    events: Mapped[list[IrradiationEvent]] = relationship(
        back_populates="dose_report",
        order_by="IrradiationEvent.event_index",
        cascade="all, delete-orphan",
    )


class IrradiationEvent(Base):
    """One irradiation event (or administration), one column per event field.

    ``event_key`` identifies the same event across reports: the Irradiation Event UID,
    or for image headers without one a hash of device, start date-time and dose values.
    ``is_current`` is false when the event is counted through another report's copy.

    ``study_month`` is the first day of the month of ``study.study_date``
    (:func:`kerma.db.partitions.study_month`). On PostgreSQL the table is partitioned
    by range of it (migration ``0019_event_partitions``): the primary key constraint
    there is ``(id, study_month)``, as a partitioned table's unique keys must hold the
    partition key, while ``id`` alone stays the mapper's key (unique by its sequence).
    No table has a foreign key to ``irradiation_event`` (docs/scaling.md).
    """

    __tablename__ = "irradiation_event"
    __table_args__ = (
        Index("ix_irradiation_event_study_current", "study_id", "is_current"),
        Index("ix_irradiation_event_group_study", "event_group_id", "study_id"),
        # DX/MG dose samples read from the index alone (mapped events: those with an exam)
        Index(
            "ix_irradiation_event_samples",
            "event_group_id",
            "study_id",
            "standard_exam",
            *SAMPLE_EVENT_COLUMNS,
            sqlite_where=text("standard_exam IS NOT NULL"),
            postgresql_where=text("standard_exam IS NOT NULL"),
        ),
        # percentiles per (modality, device, protocol) walk these partial indexes
        # (kerma.db.analytics.summary_percentiles; docs/performance.md)
        *(
            Index(
                f"ix_irradiation_event_group_{name}",
                "event_group_id",
                name,
                sqlite_where=text(f"{name} IS NOT NULL"),
                postgresql_where=text(f"{name} IS NOT NULL"),
            )
            for name in SUMMARY_EVENT_QUANTITIES
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dose_report_id: Mapped[int] = mapped_column(
        ForeignKey("dose_report.id", ondelete="CASCADE"), index=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    #: first day of the study's month; ``UNDATED_STUDY_MONTH`` (0001-01-01) for a study
    #: without a date; the partition key on PostgreSQL (``kerma.db.partitions``)
    study_month: Mapped[dt.date] = mapped_column(Date)
    event_index: Mapped[int] = mapped_column(Integer)
    event_key: Mapped[str | None] = mapped_column(String(96), index=True)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    irradiation_event_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    datetime_started: Mapped[str | None] = mapped_column(String)
    irradiation_event_type: Mapped[str | None] = mapped_column(String)
    acquisition_protocol: Mapped[str | None] = mapped_column(String)
    comment: Mapped[str | None] = mapped_column(String)
    target_region: Mapped[str | None] = mapped_column(String)
    ct_acquisition_type: Mapped[str | None] = mapped_column(String)
    exposure_time_s: Mapped[float | None] = mapped_column(Float)
    scanning_length_mm: Mapped[float | None] = mapped_column(Float)
    nominal_single_collimation_width_mm: Mapped[float | None] = mapped_column(Float)
    nominal_total_collimation_width_mm: Mapped[float | None] = mapped_column(Float)
    pitch_factor: Mapped[float | None] = mapped_column(Float)
    number_of_xray_sources: Mapped[int | None] = mapped_column(Integer)
    ctdivol_mgy: Mapped[float | None] = mapped_column(Float)
    dlp_mgycm: Mapped[float | None] = mapped_column(Float)
    ctdiw_phantom_type: Mapped[str | None] = mapped_column(String)
    ctdivol_alert_value_mgy: Mapped[float | None] = mapped_column(Float)
    ctdivol_notification_value_mgy: Mapped[float | None] = mapped_column(Float)
    dlp_notification_value_mgycm: Mapped[float | None] = mapped_column(Float)
    water_equivalent_diameter_mm: Mapped[float | None] = mapped_column(Float)
    acquisition_plane: Mapped[str | None] = mapped_column(String)
    anatomical_structure: Mapped[str | None] = mapped_column(String)
    laterality: Mapped[str | None] = mapped_column(String)
    image_view: Mapped[str | None] = mapped_column(String)
    dap_gym2: Mapped[float | None] = mapped_column(Float)
    dose_rp_gy: Mapped[float | None] = mapped_column(Float)
    entrance_exposure_at_rp_mgy: Mapped[float | None] = mapped_column(Float)
    agd_mgy: Mapped[float | None] = mapped_column(Float)
    half_value_layer_mm: Mapped[float | None] = mapped_column(Float)
    kvp_kv: Mapped[float | None] = mapped_column(Float)
    tube_current_ma: Mapped[float | None] = mapped_column(Float)
    pulse_width_s: Mapped[float | None] = mapped_column(Float)
    exposure_mas: Mapped[float | None] = mapped_column(Float)
    number_of_pulses: Mapped[float | None] = mapped_column(Float)
    pulse_rate_per_s: Mapped[float | None] = mapped_column(Float)
    irradiation_duration_s: Mapped[float | None] = mapped_column(Float)
    focal_spot_size_mm: Mapped[float | None] = mapped_column(Float)
    xray_filter_material: Mapped[str | None] = mapped_column(String)
    xray_filter_thickness_min_mm: Mapped[float | None] = mapped_column(Float)
    xray_filter_thickness_max_mm: Mapped[float | None] = mapped_column(Float)
    anode_target_material: Mapped[str | None] = mapped_column(String)
    compression_thickness_mm: Mapped[float | None] = mapped_column(Float)
    compression_force_n: Mapped[float | None] = mapped_column(Float)
    positioner_primary_angle_deg: Mapped[float | None] = mapped_column(Float)
    positioner_secondary_angle_deg: Mapped[float | None] = mapped_column(Float)
    collimated_field_area_m2: Mapped[float | None] = mapped_column(Float)
    distance_source_to_detector_mm: Mapped[float | None] = mapped_column(Float)
    distance_source_to_isocenter_mm: Mapped[float | None] = mapped_column(Float)
    distance_source_to_rp_mm: Mapped[float | None] = mapped_column(Float)
    table_longitudinal_position_mm: Mapped[float | None] = mapped_column(Float)
    table_lateral_position_mm: Mapped[float | None] = mapped_column(Float)
    table_height_position_mm: Mapped[float | None] = mapped_column(Float)
    patient_table_relationship: Mapped[str | None] = mapped_column(String)
    patient_orientation: Mapped[str | None] = mapped_column(String)
    patient_orientation_modifier: Mapped[str | None] = mapped_column(String)
    entrance_dose_mgy: Mapped[float | None] = mapped_column(Float)
    exposure_index: Mapped[float | None] = mapped_column(Float)
    target_exposure_index: Mapped[float | None] = mapped_column(Float)
    deviation_index: Mapped[float | None] = mapped_column(Float)
    #: DI = 10·log10(EI/EI_T) (IEC 62494-1) where the device gave EI and target but no
    #: DI; written by the ingest pipeline, never when ``deviation_index`` is given (#17)
    deviation_index_calculated: Mapped[float | None] = mapped_column(Float)
    detector_id: Mapped[str | None] = mapped_column(String)
    sensitivity: Mapped[float | None] = mapped_column(Float)
    relative_xray_exposure: Mapped[float | None] = mapped_column(Float)
    radiopharmaceutical_agent: Mapped[str | None] = mapped_column(String)
    radionuclide: Mapped[str | None] = mapped_column(String)
    radionuclide_half_life_s: Mapped[float | None] = mapped_column(Float)
    administered_activity_mbq: Mapped[float | None] = mapped_column(Float)
    radiopharmaceutical_start_datetime: Mapped[str | None] = mapped_column(String)
    radiopharmaceutical_stop_datetime: Mapped[str | None] = mapped_column(String)
    route_of_administration: Mapped[str | None] = mapped_column(String)
    radiopharmaceutical_volume_ml: Mapped[float | None] = mapped_column(Float)
    xray_sources: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    xray_filters: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    #: per-projection / per-view standard exam of a DX or MG event (derived)
    standard_exam: Mapped[str | None] = mapped_column(String)
    #: (modality, device, protocol) group of a current event (derived; NULL otherwise)
    event_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("event_group.id", ondelete="SET NULL")
    )

    dose_report: Mapped[DoseReport] = relationship(back_populates="events")


class EventGroup(Base):
    """One (modality, device, acquisition protocol, non-patient) group of current events.

    ``kerma summary`` reports per group; the group id on each current event lets the
    database count and rank a group's values through an index without reading the
    events (``docs/performance.md``). Missing modality or protocol is ``""``.
    """

    __tablename__ = "event_group"
    __table_args__ = (
        UniqueConstraint(
            "modality",
            "device_id",
            "acquisition_protocol",
            "is_non_patient",
            name="uq_event_group_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    modality: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id"))
    acquisition_protocol: Mapped[str] = mapped_column(String)
    is_non_patient: Mapped[bool] = mapped_column(Boolean)


class DeviceChoice(Base):
    """A user's choice about a device, keyed by its identity (``device.device_key``).

    ``display_name`` is the name a user gave (``kerma devices rename``);
    ``merged_into_key`` the identity of the device it was merged into (``kerma devices
    merge``): objects of this identity are filed under that device. Keyed by identity,
    not by row id, so both survive ``kerma reprocess`` and rows made again.
    """

    __tablename__ = "device_choice"

    device_key: Mapped[str] = mapped_column(SHA256_HEX, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String)
    merged_into_key: Mapped[str | None] = mapped_column(SHA256_HEX, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class RegistrySetting(Base):
    """A named value the registry keeps about itself (e.g. the derive version)."""

    __tablename__ = "registry_setting"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class SiteExamRule(Base):
    """A site standard-exam rule an admin saved in the browser (issue #13).

    Tried before the rules of ``KERMA_EXAM_RULES_PATH`` or the packaged defaults, in
    ``position`` order; ``conditions`` holds the rule's ``any``/``all``/``none`` tables
    of the exam-rules TOML format (field → regular expression).
    """

    __tablename__ = "site_exam_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    exam: Mapped[str] = mapped_column(String(256))
    modality: Mapped[str | None] = mapped_column(String(256))
    level: Mapped[str] = mapped_column(String(8), default="both")
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RejectedObject(Base):
    """An archived object that could not be imported, with the reason."""

    __tablename__ = "rejected_object"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    archive_sha256: Mapped[str] = mapped_column(SHA256_HEX, unique=True)
    archive_path: Mapped[str] = mapped_column(String)
    file_name: Mapped[str | None] = mapped_column(String)
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    reason: Mapped[str] = mapped_column(Text)
    rejected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PatientSizeMeasurement(Base):
    """A patient size measured on a received CT image (AAPM Reports 220 and 204).

    ``direction`` (:class:`kerma.records.SizeDirection`) says what was measured: ``dw``,
    the water-equivalent diameter of an axial image (``water_equivalent_diameter_mm``);
    ``lat`` or ``ap``, the geometric width of the patient on a localizer
    (``patient_width_mm``, left-right or front-back).

    Keyed by the image's SOP Instance UID and linked to its study by Study Instance
    UID (not by ``study.id``): the images of a study may arrive before or without the
    dose report. ``image_type`` is ``axial`` (Dw of the slice) or ``localizer`` (Dw
    estimated from the projection radiograph's attenuation profile); the SSDE of a CT
    event uses these when the RDSR holds no Dw and no AP/lateral dimensions.
    """

    __tablename__ = "patient_size_measurement"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    image_type: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))
    water_equivalent_diameter_mm: Mapped[float | None] = mapped_column(Float)
    patient_width_mm: Mapped[float | None] = mapped_column(Float)
    table_position_mm: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String)
    measured_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class IgnoredObject(Base):
    """An object received over the network that holds no dose information.

    It was acknowledged (the peer was told it is stored) but not kept, by design
    (``KERMA_SCP_KEEP_NON_DOSE`` off). The row lets ``kerma pull`` skip it on the
    next run and lets a physicist see what a modality sends.
    """

    __tablename__ = "ignored_object"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    modality: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SkinDoseEstimate(Base):
    """The skin dose estimate of one fluoroscopy/interventional study (latest run).

    ``method`` says what the number is: a PySkinDose peak skin dose, or the reference
    point air kerma total (Ka,r, IEC 60601-2-43) labelled as not a skin dose, with
    ``reason`` saying why PySkinDose was not used. ``map_path`` is the skin dose map
    image, relative to the archive directory.
    """

    __tablename__ = "skin_dose_estimate"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), unique=True)
    method: Mapped[str] = mapped_column(String)
    peak_skin_dose_mgy: Mapped[float | None] = mapped_column(Float)
    dose_rp_total_gy: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    map_path: Mapped[str | None] = mapped_column(String)
    dose_report_sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AlertOutbox(Base):
    """One alert e-mail to one recipient: queued at alert time, sent after commit.

    Unique per ``(alert_id, recipient)``: an alert is mailed once to each recipient,
    whatever re-evaluation, re-import or view follows. ``message`` is the alert as
    :meth:`kerma.services.alert_notify.AlertMessage.to_dict` gives it (rule, values,
    threshold and source, device, date, Study Instance UID, pseudonym; never a patient
    name, ID or birth date). ``status`` is ``pending`` until the server accepted the
    message (``sent``). A failed attempt counts ``attempts``, keeps ``last_error`` and
    moves ``next_attempt_at`` by a doubling delay. ``digest_day`` is the local day of
    the alert, by which the daily digest groups rows.
    """

    __tablename__ = "alert_outbox"
    __table_args__ = (
        UniqueConstraint("alert_id", "recipient"),
        Index("ix_alert_outbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(Integer, index=True)
    recipient: Mapped[str] = mapped_column(String(320))  # RFC 5321 4.5.3.1 path limit
    subject: Mapped[str] = mapped_column(Text)
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest_day: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ReportConflict(Base):
    """Copies of one SOP Instance UID with different content: the versions are held.

    Opened when an object arrives whose SOP Instance UID is stored already with other
    extracted content (``docs/registry.md``, "Conflicts"). ``dose_report`` keeps the
    current version's values (the first copy until a decision); every version, the
    first included, is a ``report_version`` row. ``is_open`` while undecided; a new
    version arriving after a decision opens it again.
    """

    __tablename__ = "report_conflict"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    dose_report_id: Mapped[int] = mapped_column(
        ForeignKey("dose_report.id", ondelete="CASCADE"), index=True
    )
    is_open: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    versions: Mapped[list[ReportVersion]] = relationship(
        back_populates="conflict", order_by="ReportVersion.version", cascade="all, delete-orphan"
    )


class ReportVersion(Base):
    """One version (distinct extracted content) of a SOP Instance UID in conflict.

    ``content`` is the extracted record (:meth:`kerma.records.DoseReport.to_dict`) of
    the archived object ``archive_sha256``; ``transport`` says how it arrived
    (``file``, ``c-store``, ``c-get``, ``stow-rs``, ``wado-rs``, ``other``) and
    ``calling_ae_title`` the peer's AE title for a DICOM association. Exactly one
    version of a conflict ``is_current``: the one ``dose_report`` holds.
    """

    __tablename__ = "report_version"
    __table_args__ = (
        UniqueConstraint("conflict_id", "version"),
        UniqueConstraint("conflict_id", "archive_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conflict_id: Mapped[int] = mapped_column(
        ForeignKey("report_conflict.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    archive_sha256: Mapped[str] = mapped_column(SHA256_HEX)
    archive_path: Mapped[str] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(String)
    transport: Mapped[str] = mapped_column(String(16))
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    study_instance_uid: Mapped[str | None] = mapped_column(UID)
    device_observer_uid: Mapped[str | None] = mapped_column(UID)
    patient_pseudonym: Mapped[str | None] = mapped_column(SHA256_HEX)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)

    conflict: Mapped[ReportConflict] = relationship(back_populates="versions")


class ConflictDecision(Base):
    """One decision on a conflict: which version was kept, by whom, when and why.

    Append-only: rows are only ever inserted (the migration adds triggers that refuse
    UPDATE and DELETE on SQLite and PostgreSQL), so the log shows every decision,
    overridden ones included. ``method`` is ``user`` or ``rule``; for a rule,
    ``decided_by`` is ``rule:<name>``.
    """

    __tablename__ = "conflict_decision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    version_kept: Mapped[int] = mapped_column(Integer)
    version_before: Mapped[int] = mapped_column(Integer)
    archive_sha256_kept: Mapped[str] = mapped_column(SHA256_HEX)
    method: Mapped[str] = mapped_column(String(8))
    decided_by: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Alert(Base):
    """One alert: a rule crossed by a subject (a study, a device's exam group or a patient).

    Keyed by (``rule_id``, ``rule_version``, ``subject_key``): the same rule version
    never alerts twice on the same subject; a changed study updates the values of its
    alert (``docs/alerts.md``). ``state`` is ``open``, ``under_review`` or ``closed``;
    a closed alert has an ``outcome``. Every change appends an :class:`AlertHistory`
    row (hash-chained).
    """

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("rule_id", "rule_version", "subject_key", name="uq_alert_rule_subject"),
        Index("ix_alert_state_date", "state", "study_date"),
        Index("ix_alert_rule_patient", "rule_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[str] = mapped_column(String(16))
    rule_title: Mapped[str] = mapped_column(Text)
    pack: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject_key: Mapped[str] = mapped_column(String(255))
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("study.id", ondelete="SET NULL"), index=True
    )
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id", ondelete="SET NULL"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("device.id", ondelete="SET NULL"))
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    modality_family: Mapped[str | None] = mapped_column(String(8))
    quantity: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    threshold_source: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="open")
    outcome: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AlertStudy(Base):
    """One study of a patient alert's window: the sites that contributed (issue #15).

    A patient's cumulative alert sums the patient's studies at every site; a principal
    restricted to sites sees the alert when one of the window's studies is of its sites
    (:func:`kerma.db.alerts.site_condition`). The rows mirror the alert's
    ``detail["window_study_ids"]``, rewritten when the alert is created or its window
    updated; the site is read from the study, so a study moved to another site moves
    its alerts with it. Deleting the alert or the study deletes the row.
    """

    __tablename__ = "alert_study"

    alert_id: Mapped[int] = mapped_column(
        ForeignKey("alert.id", ondelete="CASCADE"), primary_key=True
    )
    study_id: Mapped[int] = mapped_column(
        ForeignKey("study.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AlertHistory(Base):
    """One entry of an alert's review trail; never updated or deleted.

    ``entry_hash`` is SHA-256 of ``prev_hash`` and the entry's content
    (:func:`kerma.db.alerts.entry_hash`); ``prev_hash`` is the previous entry's
    ``entry_hash`` (64 zeros for the first), unique, so the entries form one chain
    over all alerts and ``kerma alerts verify`` finds an edited or deleted entry.
    """

    __tablename__ = "alert_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alert.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    user_name: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float)
    prev_hash: Mapped[str] = mapped_column(SHA256_HEX, unique=True)
    entry_hash: Mapped[str] = mapped_column(SHA256_HEX)


class PlausibilityFlag(Base):
    """A stored value outside its plausibility range: the study is flagged for review.

    One row per value (``kerma.ingest.plausibility``, issue #11); rows of a report are
    rebuilt when it is reprocessed. ``value`` is the number as read, ``None`` when it is
    not finite (``value_text`` keeps ``'nan'``/``'inf'``); the stored column holds the
    same (empty for a non-finite value). ``range_min``/``range_max`` are the limits of
    the table row, in the quantity's canonical unit.
    """

    __tablename__ = "plausibility_flag"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    dose_report_id: Mapped[int] = mapped_column(
        ForeignKey("dose_report.id", ondelete="CASCADE"), index=True
    )
    quantity: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str] = mapped_column(String(32))
    range_min: Mapped[float | None] = mapped_column(Float)
    range_max: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(String)
    message: Mapped[str] = mapped_column(Text)
    flagged_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RejectedInstance(Base):
    """An image marked rejected for quality reasons (issue #17).

    One row per (marking object, referenced SOP Instance UID): a Key Object Selection
    Document titled 'Rejected for Quality Reasons' (DCM 113001) lists the images it
    rejects; a reject-log row (``reject_log_entry``) that names a SOP Instance UID adds
    one as well. Linked to images by SOP Instance UID (``dose_report.sop_instance_uid``)
    when read, never by id, so the note and the image may arrive in either order.
    """

    __tablename__ = "rejected_instance"
    __table_args__ = (UniqueConstraint("marked_by_uid", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    #: the KOS's SOP Instance UID, or ``reject-log:<sha256 of the file>``
    marked_by_uid: Mapped[str] = mapped_column(String(96), index=True)
    #: ``kos`` or ``reject-log``
    source: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String)
    archive_sha256: Mapped[str | None] = mapped_column(SHA256_HEX)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RejectLogEntry(Base):
    """One row of a DR system's reject-log export (issue #17, ``kerma quality import-rejects``).

    Kept as the log gives it, after the site's column mapping: the room (station name),
    when, body part, view, reason, whether the exposure was rejected (logs that list
    every exposure) and its dose where the log has one. No operator and no patient
    identity are stored.
    """

    __tablename__ = "reject_log_entry"
    __table_args__ = (UniqueConstraint("file_sha256", "row_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_sha256: Mapped[str] = mapped_column(SHA256_HEX, index=True)
    row_number: Mapped[int] = mapped_column(Integer)
    station_name: Mapped[str | None] = mapped_column(String, index=True)
    acquisition_datetime: Mapped[dt.datetime | None] = mapped_column(DateTime)
    body_part: Mapped[str | None] = mapped_column(String)
    image_view: Mapped[str | None] = mapped_column(String)
    is_rejected: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(UID)
    dap_gym2: Mapped[float | None] = mapped_column(Float)
    exposure_index: Mapped[float | None] = mapped_column(Float)
    deviation_index: Mapped[float | None] = mapped_column(Float)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CTImageNoise(Base):
    """The local-noise histogram of one axial CT image (issue #17).

    Christianson et al., AJR 2015;205:W93-W99: standard deviation in a small square
    kernel around every soft-tissue pixel (0-100 HU); the histogram of those values,
    summed over a series, has its mode at the series' global noise level.
    ``histogram`` holds the counts of :data:`kerma.dicom.noise.HISTOGRAM_BIN_HU`-wide
    bins from 0 HU. Linked to studies by Study Instance UID, like
    ``patient_size_measurement``.
    """

    __tablename__ = "ct_image_noise"
    __table_args__ = (Index("ix_ct_image_noise_series", "series_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    station_name: Mapped[str | None] = mapped_column(String)
    manufacturer_model_name: Mapped[str | None] = mapped_column(String)
    protocol_name: Mapped[str | None] = mapped_column(String)
    series_description: Mapped[str | None] = mapped_column(String)
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    ctdivol_mgy: Mapped[float | None] = mapped_column(Float)
    slice_thickness_mm: Mapped[float | None] = mapped_column(Float)
    convolution_kernel: Mapped[str | None] = mapped_column(String)
    kernel_mm: Mapped[float] = mapped_column(Float)
    tissue_pixels: Mapped[int] = mapped_column(Integer)
    histogram: Mapped[list[int]] = mapped_column(JSON)
    measured_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RisOrder(Base):
    """An order, result or patient update from the RIS (HL7 v2) or a FHIR server.

    Holds what a dose study lacks: the patient's weight and height, the requested
    procedure and the ordering department (docs/ris.md). Identity is kept only as keyed
    hashes made with the pseudonym key (:mod:`kerma.ingest.pseudonym`): the accession
    number (``accession_pseudonym``, unique: one row per order) and issuer + Patient ID
    (``patient_pseudonym``). A patient update without accession number (ADT^A08, a FHIR
    Observation of no order) is a row without ``accession_pseudonym``, one per patient
    and ``order_date``. Weight in kg and height in m, whatever the message's units.
    """

    __tablename__ = "ris_order"
    __table_args__ = (Index("ix_ris_order_patient_date", "patient_pseudonym", "order_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accession_pseudonym: Mapped[str | None] = mapped_column(SHA256_HEX, unique=True)
    patient_pseudonym: Mapped[str | None] = mapped_column(SHA256_HEX)
    order_date: Mapped[dt.date | None] = mapped_column(Date)
    modality: Mapped[str | None] = mapped_column(String(16))
    requested_procedure_code: Mapped[str | None] = mapped_column(String)
    requested_procedure_text: Mapped[str | None] = mapped_column(String)
    ordering_department: Mapped[str | None] = mapped_column(String)
    patient_weight_kg: Mapped[float | None] = mapped_column(Float)
    patient_size_m: Mapped[float | None] = mapped_column(Float)
    #: ``ris`` (HL7 v2) or ``fhir``
    source: Mapped[str] = mapped_column(String(8))
    sending_application: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RisMessage(Base):
    """One message received from the RIS or a FHIR server, accepted or not.

    The message itself is kept in the archive, always encrypted (it names the patient;
    ``archive_path`` below the archive folder, ``hl7/...``), so a rejected message is
    never lost and can be read again with the key. The row holds nothing identifying:
    the sending application, message type and control ID, the outcome and its reason.
    ``status`` is ``accepted``, ``rejected`` (AR) or ``error`` (AE).
    """

    __tablename__ = "ris_message"
    __table_args__ = (Index("ix_ris_message_status_received", "status", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    archive_sha256: Mapped[str] = mapped_column(SHA256_HEX, index=True)
    archive_path: Mapped[str] = mapped_column(String)
    transport: Mapped[str] = mapped_column(String(16))
    sending_application: Mapped[str | None] = mapped_column(String(64))
    message_type: Mapped[str | None] = mapped_column(String(32))
    message_control_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    ris_order_id: Mapped[int | None] = mapped_column(
        ForeignKey("ris_order.id", ondelete="SET NULL")
    )
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class UserAccount(Base):
    """A person who logs in to the web application (issue #13; docs/security.md).

    ``password_hash`` is the Argon2id hash in PHC string form (``$argon2id$v=19$...``,
    argon2-cffi); never the password. It is ``None`` for a directory (LDAP) user, whose
    password is checked by the directory. ``role`` is ``viewer``, ``physicist`` or
    ``admin``. ``failed_logins`` counts failures since the last successful login;
    ``locked_until`` is the end of the current lock-out (``None``: not locked).
    The table is not called ``user``: that is a reserved word in PostgreSQL.
    """

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    is_ldap: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class UserSession(Base):
    """A browser session: the server side of the ``kerma_session`` cookie.

    ``session_hash`` is SHA-256 (hex) of the random session id the cookie holds, so the
    table alone does not let anyone act as a logged-in user. ``csrf_token`` is the
    session's CSRF token (random, 32 bytes, URL-safe base64). A session ends at
    ``expires_at`` (absolute), after ``settings.session_idle_minutes`` without a
    request (``last_seen_at``), or when revoked (``revoked_at``: logout, password
    reset, user disabled).
    """

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(SHA256_HEX, unique=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A machine client's token (STOW-RS sender, JSON API script).

    ``token_hash`` is SHA-256 (hex) of the token (32 random bytes, shown once when
    made); the token itself is never stored. ``role`` as for users.
    """

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(SHA256_HEX, unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ApiTokenSite(Base):
    """An API token's restriction to a site: the token sees that site's studies (#15).

    A token without rows is not restricted by site, like a user without ``user_site``
    rows. Deleting the token or the site deletes the row.
    """

    __tablename__ = "api_token_site"

    api_token_id: Mapped[int] = mapped_column(
        ForeignKey("api_token.id", ondelete="CASCADE"), primary_key=True
    )
    site_id: Mapped[int] = mapped_column(
        ForeignKey("site.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AuditLog(Base):
    """One entry of the audit log: who did what to which target, when, from where.

    Append-only: Kerma only inserts; the migration adds triggers (SQLite and
    PostgreSQL) that refuse UPDATE and DELETE. ``username`` is the user or token name
    (for a failed login: the name that was tried); ``principal_kind`` is ``user``,
    ``token`` or ``anonymous``; ``client_address`` the peer's IP address.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    principal_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(512), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_address: Mapped[str | None] = mapped_column(String(64))

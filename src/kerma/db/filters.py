"""The one study filter (:class:`StudyFilter`) and its SQL (:func:`study_conditions`).

Every listing, count, statistic, DRL comparison, summary and cumulative-dose query
takes a :class:`StudyFilter`; :func:`study_conditions` turns it into WHERE conditions
on the ``study`` table alone (device and protocol conditions are subqueries or summary
columns), so a query filters, sorts and pages in the database without joining events.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select

from kerma.db.models import Alert, Device, Patient, PlausibilityFlag, Site, Study
from kerma.db.partitions import month_conditions

#: Study columns a dose range may be given on (canonical units in the names).
DOSE_RANGE_QUANTITIES: tuple[str, ...] = (
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "ctdivol_max_mgy",
    "ssde_mgy",
    "effective_dose_msv",
    "dap_total_gym2",
    "dap_total_plane_a_gym2",
    "dap_total_plane_b_gym2",
    "dose_rp_total_gy",
    "dose_rp_total_plane_a_gy",
    "dose_rp_total_plane_b_gy",
    "fluoro_time_total_s",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "administered_activity_total_mbq",
)

#: Patient's Sex values (DICOM (0010,0040)).
SEXES: tuple[str, ...] = ("M", "F", "O")

DateLike = dt.date | dt.datetime | str | None


def as_date(value: DateLike) -> dt.date | None:
    """Return a date from a date, date-time or ISO ``YYYY-MM-DD`` string (``None`` passes).

    Raises
    ------
    ValueError
        When a string is not an ISO date.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _texts(value: str | Iterable[str] | None, *, upper: bool = False) -> tuple[str, ...]:
    """Return a tuple of stripped, non-empty strings (comma lists split)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(v).strip() for v in items if str(v).strip())
    return tuple(v.upper() for v in out) if upper else out


def _number(value: object, name: str) -> float | None:
    """Return ``value`` as a float (``None`` passes through).

    Raises
    ------
    ValueError
        When it is not a number.
    """
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Unable to filter studies: {name} {value!r} is not a number.") from exc


@dataclass(frozen=True, kw_only=True)
class StudyFilter:
    """Which studies a query covers; every field left at its default selects everything.

    Attributes
    ----------
    modalities : tuple of str
        Modality or modalities (``CT``, ``RF``, ``DX`` ...; case-insensitive): the
        study's modality or any modality of its current events. A comma-separated
        string is accepted.
    date_from, date_to : datetime.date or None
        Study date range, both ends included (ISO strings accepted).
    device_ids : tuple of int
        Only these devices (rooms).
    device_name : str or None
        Case-insensitive substring of the device name, station name or model name.
    standard_exams : tuple of str
        Standard exam name(s) of the study (exact).
    protocol : str or None
        Case-insensitive substring of any of the study's acquisition protocols
        (``study.acquisition_protocols``).
    study_description : str or None
        Case-insensitive substring of the study description.
    age_min_years, age_max_years : float or None
        Age band in years, minimum included, maximum excluded (the convention of the
        paediatric DRL tables); a study of unknown age is left out when a band is given.
    sex : str or None
        ``M``, ``F`` or ``O`` ((0010,0040) Patient's Sex), case-insensitive.
    weight_min_kg, weight_max_kg : float or None
        Weight band in kg, minimum included, maximum excluded; unknown weight left out.
    dose_quantity : str or None
        Study summary column of the dose range (:data:`DOSE_RANGE_QUANTITIES`, canonical
        unit in the name, e.g. ``ct_dlp_total_mgycm`` or ``dap_total_gym2``).
    dose_min, dose_max : float or None
        Dose range on ``dose_quantity`` in its canonical unit, both ends included; a
        study without the value is left out when a range is given.
    has_alert : bool or None
        ``True``: only studies with at least one alert (any state; ``alert.study_id``);
        ``False``: only studies without; ``None`` (default): either.
    include_non_patient : bool
        Include QA and phantom studies (default ``False``).
    has_conflict : bool or None
        ``True``: only studies in conflict (a report's SOP Instance UID is held in
        several versions, undecided; ``study.has_conflict``); ``False``: only those not
        in conflict; ``None`` (default): both.
    flagged : bool
        Only studies flagged for review: a stored value outside its plausibility range
        or not a finite number (``plausibility_flag``; default ``False``: every study).
    patient_pseudonyms : tuple of str
        Only the studies of these patient pseudonyms (``patient.pseudonym``, the keyed
        hash of :mod:`kerma.ingest.pseudonym`).
    accession_pseudonyms : tuple of str
        Only the studies of these keyed accession-number hashes
        (``study.accession_pseudonym``).
    site_ids : tuple of int or None
        Only the studies of these sites (``study.site_id``, issue #15); ``None``
        (default): every site and the studies without one; an empty tuple selects no
        study (a user assigned to no site of those asked for).
        :func:`kerma.services.sites.narrow_filter` sets it from a user's sites.
    site_names : tuple of str
        Only the studies of the sites of these names (``site.name``, any case).

    Raises
    ------
    ValueError
        From the constructor: an unknown sex or dose quantity, a dose range without a
        quantity, a band whose minimum is not below its maximum, a date that is not ISO.
    """

    modalities: tuple[str, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    device_ids: tuple[int, ...] = ()
    device_name: str | None = None
    standard_exams: tuple[str, ...] = ()
    protocol: str | None = None
    study_description: str | None = None
    age_min_years: float | None = None
    age_max_years: float | None = None
    sex: str | None = None
    weight_min_kg: float | None = None
    weight_max_kg: float | None = None
    dose_quantity: str | None = None
    dose_min: float | None = None
    dose_max: float | None = None
    has_alert: bool | None = None
    include_non_patient: bool = field(default=False)
    has_conflict: bool | None = None
    flagged: bool = False
    patient_pseudonyms: tuple[str, ...] = ()
    accession_pseudonyms: tuple[str, ...] = ()
    site_ids: tuple[int, ...] | None = None
    site_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Normalise the fields (strings to tuples and dates) and check them."""
        put = object.__setattr__
        put(self, "modalities", _texts(self.modalities, upper=True))
        put(self, "standard_exams", _texts(self.standard_exams))
        put(self, "patient_pseudonyms", _texts(self.patient_pseudonyms))
        put(self, "accession_pseudonyms", _texts(self.accession_pseudonyms))
        put(self, "site_names", _texts(self.site_names))
        if self.site_ids is not None:
            sites = (self.site_ids,) if isinstance(self.site_ids, int) else self.site_ids
            put(self, "site_ids", tuple(sorted({int(i) for i in sites})))
        ids = (self.device_ids,) if isinstance(self.device_ids, int) else self.device_ids
        put(self, "device_ids", tuple(int(i) for i in ids or ()))
        put(self, "date_from", as_date(self.date_from))
        put(self, "date_to", as_date(self.date_to))
        for name in ("device_name", "protocol", "study_description"):
            text = getattr(self, name)
            put(self, name, str(text).strip() or None if text is not None else None)
        for name in (
            "age_min_years",
            "age_max_years",
            "weight_min_kg",
            "weight_max_kg",
            "dose_min",
            "dose_max",
        ):
            put(self, name, _number(getattr(self, name), name))
        if self.sex is not None:
            sex = str(self.sex).strip().upper()
            if sex not in SEXES:
                raise ValueError(
                    f"Unable to filter studies: sex {self.sex!r} is not one of {', '.join(SEXES)}."
                )
            put(self, "sex", sex)
        if self.dose_quantity is not None and self.dose_quantity not in DOSE_RANGE_QUANTITIES:
            raise ValueError(
                f"Unable to filter studies: {self.dose_quantity!r} is not a study dose "
                f"quantity; use one of {', '.join(DOSE_RANGE_QUANTITIES)}."
            )
        if (self.dose_min is not None or self.dose_max is not None) and not self.dose_quantity:
            raise ValueError("Unable to filter studies: a dose range needs dose_quantity.")
        for low, high, what in (
            (self.age_min_years, self.age_max_years, "age band"),
            (self.weight_min_kg, self.weight_max_kg, "weight band"),
        ):
            if low is not None and high is not None and low >= high:
                raise ValueError(
                    f"Unable to filter studies: the {what} minimum {low:g} must be below "
                    f"its maximum {high:g}."
                )

    def replace(self, **changes: Any) -> StudyFilter:
        """Return a copy with ``changes`` applied (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return StudyFilter(**values)

    @property
    def is_default(self) -> bool:
        """Whether the filter selects every patient study (no field set)."""
        return self == StudyFilter()

    @property
    def has_study_conditions(self) -> bool:
        """Whether a field other than modalities, devices and non-patient is set."""
        return (
            self.replace(modalities=(), device_ids=(), device_name=None, include_non_patient=False)
            != StudyFilter()
        )


def device_matches(pattern: str) -> ColumnElement[bool]:
    """Return whether a device's display name, station, model or manufacturer + model is like
    ``pattern`` (``ILIKE``, any case)."""
    maker_model = (
        func.coalesce(Device.manufacturer, "")
        + " "
        + func.coalesce(Device.manufacturer_model_name, "")
    )
    return or_(
        Device.device_name.ilike(pattern),
        Device.station_name.ilike(pattern),
        Device.manufacturer_model_name.ilike(pattern),
        maker_model.ilike(pattern),
    )


def event_month_conditions(flt: StudyFilter | None) -> list[ColumnElement[bool]]:
    """Return ``irradiation_event.study_month`` bounds of ``flt``'s study dates.

    Add them, besides :func:`study_conditions`, to a statement that reads
    ``irradiation_event``: they select nothing more or less, but let PostgreSQL read
    only the partitions of those months (:func:`kerma.db.partitions.month_conditions`).
    """
    if flt is None:
        return []
    return month_conditions(flt.date_from, flt.date_to)


def study_conditions(flt: StudyFilter | None) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions on ``study`` that select the studies of ``flt``.

    The conditions use ``study`` columns only (devices through an ``IN`` subquery on
    ``device``), so they apply to any statement whose FROM has ``study``.
    """
    flt = flt or StudyFilter()
    conditions: list[ColumnElement[bool]] = []
    s = Study
    if flt.modalities:
        wanted = list(flt.modalities)
        # ``modalities`` is the comma-joined modalities of the current events
        padded = "," + func.upper(func.coalesce(s.modalities, "")) + ","
        conditions.append(
            or_(
                func.upper(s.modality).in_(wanted),
                *(padded.like(f"%,{m},%") for m in wanted),
            )
        )
    if flt.date_from is not None:
        conditions.append(s.study_date >= flt.date_from)
    if flt.date_to is not None:
        conditions.append(s.study_date <= flt.date_to)
    if flt.device_ids:
        conditions.append(s.device_id.in_(list(flt.device_ids)))
    if flt.device_name:
        pattern = f"%{flt.device_name}%"
        devices = select(Device.id).where(device_matches(pattern))
        conditions.append(s.device_id.in_(devices))
    if flt.standard_exams:
        conditions.append(s.standard_exam.in_(list(flt.standard_exams)))
    if flt.protocol:
        conditions.append(s.acquisition_protocols.ilike(f"%{flt.protocol}%"))
    if flt.study_description:
        conditions.append(s.study_description.ilike(f"%{flt.study_description}%"))
    conditions.extend(_band(s.patient_age_years, flt.age_min_years, flt.age_max_years))
    conditions.extend(_band(s.patient_weight_kg, flt.weight_min_kg, flt.weight_max_kg))
    if flt.sex is not None:
        conditions.append(func.upper(s.patient_sex) == flt.sex)
    if flt.dose_quantity and (flt.dose_min is not None or flt.dose_max is not None):
        column = getattr(s, flt.dose_quantity)
        conditions.append(column.is_not(None))
        if flt.dose_min is not None:
            conditions.append(column >= flt.dose_min)
        if flt.dose_max is not None:
            conditions.append(column <= flt.dose_max)
    if flt.has_alert is not None:
        alerted = exists().where(Alert.study_id == s.id)
        conditions.append(alerted if flt.has_alert else ~alerted)

    if flt.flagged:
        conditions.append(s.id.in_(select(PlausibilityFlag.study_id)))
    if flt.patient_pseudonyms:
        patients = select(Patient.id).where(Patient.pseudonym.in_(list(flt.patient_pseudonyms)))
        conditions.append(s.patient_id.in_(patients))
    if flt.accession_pseudonyms:
        conditions.append(s.accession_pseudonym.in_(list(flt.accession_pseudonyms)))
    if flt.site_ids is not None:
        conditions.append(s.site_id.in_(list(flt.site_ids)) if flt.site_ids else false())
    if flt.site_names:
        named = select(Site.id).where(
            func.lower(Site.name).in_([n.lower() for n in flt.site_names])
        )
        conditions.append(s.site_id.in_(named))
    if not flt.include_non_patient:
        conditions.append(s.is_non_patient.is_(False))
    if flt.has_conflict is not None:
        conditions.append(s.has_conflict.is_(bool(flt.has_conflict)))
    return conditions


def _band(column: Any, low: float | None, high: float | None) -> list[ColumnElement[bool]]:
    """Return the conditions of a band ``[low, high)`` on ``column`` (unknown left out)."""
    if low is None and high is None:
        return []
    out: list[ColumnElement[bool]] = [column.is_not(None)]
    if low is not None:
        out.append(column >= low)
    if high is not None:
        out.append(column < high)
    return out


def study_where(flt: StudyFilter | None) -> ColumnElement[bool]:
    """Return :func:`study_conditions` joined with AND (``true`` when there is none)."""
    conditions = study_conditions(flt)
    return and_(*conditions) if conditions else ~false()


def normalise_filter(flt: StudyFilter | None = None, **fields_: Any) -> StudyFilter:
    """Return ``flt`` (or a default filter) with keyword fields applied.

    Keyword names are :class:`StudyFilter` fields; ``modality`` is accepted for
    ``modalities``, ``device`` for ``device_name`` and ``standard_exam`` for
    ``standard_exams`` (the names of the older API). ``None`` values are ignored.
    """
    aliases = {"modality": "modalities", "device": "device_name", "standard_exam": "standard_exams"}
    changes = {aliases.get(k, k): v for k, v in fields_.items() if v is not None}
    base = flt or StudyFilter()
    return base.replace(**changes) if changes else base


def sequence(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return a tuple of strings from a comma-separated string or a sequence."""
    return _texts(value)

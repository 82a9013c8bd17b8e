"""Study summary values from one study's current events and reports (plain records in).

:func:`summarise_study` computes what the registry keeps per study for listings,
filters and analytics at scale (``study`` summary columns, ``docs/registry.md``): the
standard exam and the per-projection exams, event and report counts, the modality
family, the joined event texts the exam rules read, and the dose totals:

- CT: ``ct_dlp_total_mgycm`` (sum of the events' DLP, else the reports' accumulated
  DLP total), ``ctdivol_mean_mgy`` / ``ctdivol_max_mgy`` and ``kvp_kv`` over the
  events with CTDIvol > 0 that are not localisers ('Constant Angle Acquisition'),
  ``ssde_mgy`` (mean SSDE of those events that have a size, AAPM 204/220) with
  ``ssde_size_mm`` and ``ssde_size_source``, ``effective_dose_msv`` (k × DLP with the
  k of :func:`kerma.analysis.effective_dose.select_k_factor`);
- projection: ``dap_total_gym2`` (the current reports' accumulated totals summed over
  planes, else the events' sum), per plane ``dap_total_plane_a_gym2`` /
  ``_plane_b_``, ``dose_rp_total_gy`` = the larger plane's Ka,r (a reference-point
  dose is never summed across planes: the planes' reference points are different
  points) beside ``dose_rp_total_plane_a_gy`` / ``_plane_b_``, ``fluoro_time_total_s``
  (accumulated, else the fluoroscopy events' durations);
- mammography: ``agd_total_left_mgy`` / ``agd_total_right_mgy`` (the RDSR's
  accumulated AGD by laterality, TID 10005, else the sum of that breast's events;
  never a sum across breasts);
- NM/PT: ``administered_activity_total_mbq``;
- the patient size measured on the study's CT images (``image_size_mm``: mean axial
  Dw, else the localisers' effective diameter √(AP × LAT)).

Values from reference tables carry the table and its version
(:func:`kerma.analysis.reference.reference_version`). The same definitions on whole
event frames are :func:`kerma.analysis.frames.build_dose_samples` (the tests check the
two agree). This is plain Python on purpose: it runs once per imported object, where
pandas' per-call overhead would cost more than the import.

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kerma.analysis.effective_dose import age_group, select_k_factor
from kerma.analysis.exams import (
    EVENT_TEXT_FIELDS,
    ExamRuleSet,
    join_unique,
    match_exam,
)
from kerma.analysis.frames import LOCALISER_TYPES, STUDY_FAMILY_PRIORITY, family_of
from kerma.analysis.reference import load_k_factors, reference_version
from kerma.analysis.ssde import phantom_cm_of, ssde_fits
from kerma.records import STUDY_SUMMARY_COLUMNS

#: The study summary columns :func:`summarise_study` returns (besides the exams).
SUMMARY_COLUMNS: Final[tuple[str, ...]] = STUDY_SUMMARY_COLUMNS

#: Study fields the exam rules read (with the joined event texts).
STUDY_RULE_FIELDS: Final[tuple[str, ...]] = (
    "modality",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    # the matched RIS order's code (docs/ris.md); site rules may test it
    "requested_procedure_code",
)

#: Plural summary column of each joined event text field.
JOINED_COLUMNS: Final[dict[str, str]] = {
    "acquisition_protocol": "acquisition_protocols",
    "target_region": "target_regions",
    "anatomical_structure": "anatomical_structures",
    "image_view": "image_views",
    "laterality": "lateralities",
}

#: Families whose events get a per-event (per projection / view) standard exam.
EVENT_EXAM_FAMILIES: Final = frozenset({"DX", "MG"})

#: ``irradiation_event.standard_exam`` of a DX/MG event that no rule maps (neither the
#: event nor its study): an empty text, so that every projection / view has a non-null
#: exam and the covering sample index holds them all; other events have ``NULL``.
UNMAPPED: Final = ""

#: Effective-dose coefficient set (ICRP 103, :mod:`kerma.analysis.effective_dose`).
DEFAULT_K_SET: Final = "ICRP 103"


def _number(value: object) -> float | None:
    """Return a finite float, or ``None`` (missing, NaN, infinite, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sum(values: Sequence[float | None]) -> float | None:
    """Return the sum of the present values (``None`` when none is present)."""
    present = [v for v in values if v is not None]
    return math.fsum(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    """Return the largest present value (``None`` when none is present)."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _text(value: object) -> str:
    """Return a stripped string, ``""`` for missing values."""
    return "" if value is None else str(value).strip()


def is_plane_b(plane: object) -> bool:
    """Return whether an acquisition plane is Plane B (others count as A or single plane)."""
    return _text(plane).casefold() == "plane b"


def _breast(laterality: object) -> str | None:
    """Return ``left`` / ``right`` for a breast laterality (Left/L, Right/R), else ``None``."""
    text = _text(laterality).casefold()
    if text in ("left", "l"):
        return "left"
    if text in ("right", "r"):
        return "right"
    return None


def _first_source_kvp(sources: object) -> float | None:
    """Return the kVp of a CT event's first X-ray source (TID 10014), else ``None``."""
    if isinstance(sources, list) and sources and isinstance(sources[0], Mapping):
        return _number(sources[0].get("kvp_kv"))
    return None


@dataclass
class SummaryContext:
    """The rules and reference tables one derive run uses, loaded once, with memos.

    Parameters
    ----------
    rules : ExamRuleSet
        Standard-exam rules in force.
    k_set : str, optional
        Effective-dose coefficient set (default ICRP 103).
    """

    rules: ExamRuleSet
    k_set: str = DEFAULT_K_SET
    _exam_memo: dict[tuple[Any, ...], tuple[str | None, str | None]] = field(
        default_factory=dict, repr=False
    )
    _k_memo: dict[tuple[Any, ...], dict[str, Any] | None] = field(default_factory=dict, repr=False)

    @property
    def fingerprint(self) -> str:
        """The exam rules' fingerprint (stored with each study's mapping)."""
        return self.rules.fingerprint

    def exam(self, record: Mapping[str, object], level: str) -> tuple[str | None, str | None]:
        """Return (exam, rule) of a study or event record, memoised by its rule fields."""
        key = (level, *(_text(v) for v in record.values()))
        if key not in self._exam_memo:
            self._exam_memo[key] = match_exam(record, self.rules, level=level)
        return self._exam_memo[key]

    def k_factor(
        self, exam: str, age_years: float | None, kvp_kv: float | None
    ) -> dict[str, Any] | None:
        """Return the k-factor row (as a dict) for an exam, age and kVp, memoised."""
        group = age_group(age_years, ["0", "1", "5", "10", "15", "adult"])
        key = (exam, group, kvp_kv)
        if key not in self._k_memo:
            row = select_k_factor(
                exam,
                age_years=age_years,
                kvp_kv=kvp_kv,
                k_set=self.k_set,
                k_factors=_k_table(),
            )
            self._k_memo[key] = None if row is None else dict(row)
        return self._k_memo[key]


_K_TABLE: list[Any] = []


def _k_table() -> Any:
    """Return the k-factor table, read once per process."""
    if not _K_TABLE:
        _K_TABLE.append(load_k_factors())
    return _K_TABLE[0]


@dataclass
class StudySummary:
    """What :func:`summarise_study` returns for one study.

    Attributes
    ----------
    values : dict
        :data:`SUMMARY_COLUMNS` names to values (``None`` when not applicable).
    standard_exam, standard_exam_rule : str or None
        The study's standard exam and the rule that gave it.
    event_exams : dict
        ``{event_id: standard exam}`` for the DX and MG events (per projection / view;
        the study's exam where no event rule matches; :data:`UNMAPPED` when neither).
    event_groups : dict
        ``{event_id: (modality, protocol)}`` of every current event (``""`` when
        missing): with the study's device and non-patient flag, its summary group.
    """

    values: dict[str, Any]
    standard_exam: str | None
    standard_exam_rule: str | None
    event_exams: dict[int, str | None]
    event_groups: dict[int, tuple[str, str]]


def summarise_study(
    study: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    reports: Sequence[Mapping[str, Any]],
    *,
    number_of_reports: int,
    size: Mapping[str, Any] | None,
    context: SummaryContext,
) -> StudySummary:
    """Return the summary values of one study (see the module docstring).

    Parameters
    ----------
    study : mapping
        ``modality``, ``study_description``, ``requested_procedure_description``,
        ``procedure_reported``, ``patient_age_years`` (years).
    events : sequence of mapping
        The study's current irradiation events in report and event order, each with
        ``event_id``, ``modality``, ``kind`` (of its report) and the event fields used
        (``ctdivol_mgy`` mGy, ``dlp_mgycm`` mGy·cm, ``dap_gym2`` Gy·m², ``dose_rp_gy``
        Gy, ``agd_mgy`` mGy, ``administered_activity_mbq`` MBq,
        ``irradiation_duration_s`` s, ``water_equivalent_diameter_mm`` mm,
        ``kvp_kv`` kV, ``xray_sources``, ``acquisition_plane``, ``laterality``, the
        descriptive fields ...).
    reports : sequence of mapping
        The study's current (not superseded) reports: ``ct_dlp_total_mgycm``
        (mGy·cm) and ``accumulated`` (the extracted ``accumulated`` object:
        ``planes`` with ``acquisition_plane``, ``dap_total_gym2``,
        ``dose_rp_total_gy``, ``fluoro_time_total_s``; ``agd_total_left_mgy``,
        ``agd_total_right_mgy``).
    number_of_reports : int
        Reports of the study, superseded ones included.
    size : mapping or None
        The study's image-measured size: ``dw`` (mean axial Dw, mm), ``ap`` and
        ``lat`` (mean localizer widths, mm).
    context : SummaryContext
        Rules and reference tables.

    Returns
    -------
    StudySummary
        The summary values, the exams and the event groups.
    """
    values: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    values["number_of_events"] = len(events)
    values["number_of_reports"] = int(number_of_reports)
    for field_name, column in JOINED_COLUMNS.items():
        values[column] = join_unique(e.get(field_name) for e in events)

    # standard exam of the study (rules on study fields + joined event texts)
    record = {name: study.get(name) for name in STUDY_RULE_FIELDS}
    record |= {f: values[JOINED_COLUMNS[f]] for f in EVENT_TEXT_FIELDS}
    exam, rule = context.exam(record, "study")

    families = [
        family_of(e.get("modality") or study.get("modality"), e.get("kind")) for e in events
    ]
    present = {f for f in families if f}
    if not present:
        kinds = {r.get("kind") for r in reports}
        study_family = family_of(study.get("modality"), next(iter(kinds), None))
        present = {study_family} if study_family else set()
    values["modality_family"] = next((f for f in STUDY_FAMILY_PRIORITY if f in present), None)

    _projection_totals(values, events, reports)
    _mammography_totals(values, events, reports)
    values["administered_activity_total_mbq"] = _sum(
        [_number(e.get("administered_activity_mbq")) for e in events]
    )
    dlp_events = _sum([_number(e.get("dlp_mgycm")) for e in events])
    dlp_reports = _sum([_number(r.get("ct_dlp_total_mgycm")) for r in reports])
    values["ct_dlp_total_mgycm"] = dlp_events if dlp_events is not None else dlp_reports
    _image_size(values, size)
    ct_events = [e for e, f in zip(events, families, strict=True) if f == "CT"]
    if ct_events:
        _ct_values(values, ct_events, exam, study, context)

    event_exams: dict[int, str | None] = {}
    for event, family in zip(events, families, strict=True):
        if family in EVENT_EXAM_FAMILIES:
            event_record = {name: study.get(name) for name in STUDY_RULE_FIELDS[1:]}
            event_record |= {f: event.get(f) for f in EVENT_TEXT_FIELDS}
            event_record["modality"] = event.get("modality")
            event_record["study_modality"] = study.get("modality")
            event_exam, _ = context.exam(event_record, "event")
            chosen = event_exam if event_exam is not None else exam
            event_exams[int(event["event_id"])] = chosen if chosen is not None else UNMAPPED
    groups = {
        int(e["event_id"]): (
            _text(e.get("modality") or study.get("modality")),
            _text(e.get("acquisition_protocol")),
        )
        for e in events
    }
    return StudySummary(values, exam, rule, event_exams, groups)


def _projection_totals(
    values: dict[str, Any],
    events: Sequence[Mapping[str, Any]],
    reports: Sequence[Mapping[str, Any]],
) -> None:
    """Set KAP, Ka,r (per plane, larger plane) and fluoroscopy time totals."""
    planes = [
        plane
        for r in reports
        for plane in ((r.get("accumulated") or {}).get("planes") or [])
        if isinstance(plane, Mapping)
    ]

    def by_plane(
        items: Sequence[Mapping[str, Any]],
        name: str,
        plane_of: Callable[[Mapping[str, Any]], object],
    ) -> tuple[float | None, float | None, float | None]:
        a = [_number(i.get(name)) for i in items if not is_plane_b(plane_of(i))]
        b = [_number(i.get(name)) for i in items if is_plane_b(plane_of(i))]
        return _sum(a + b), _sum(a), _sum(b)

    def plane_name(item: Mapping[str, Any]) -> object:
        return item.get("acquisition_plane")

    for name, total, plane_a, plane_b in (
        ("dap_total_gym2", "dap_total_gym2", "dap_total_plane_a_gym2", "dap_total_plane_b_gym2"),
        (
            "dose_rp_total_gy",
            "dose_rp_total_gy",
            "dose_rp_total_plane_a_gy",
            "dose_rp_total_plane_b_gy",
        ),
    ):
        reported = by_plane(planes, name, plane_name)
        event_name = "dap_gym2" if name == "dap_total_gym2" else "dose_rp_gy"
        summed, a, b = (
            reported if reported[0] is not None else by_plane(events, event_name, plane_name)
        )
        values[plane_a], values[plane_b] = a, b
        # KAP adds up over planes; a reference-point dose never does (C30, C34)
        values[total] = summed if name == "dap_total_gym2" else _max([a, b])
    reported_time = _sum([_number(p.get("fluoro_time_total_s")) for p in planes])
    if reported_time is None:
        reported_time = _sum(
            [
                _number(e.get("irradiation_duration_s"))
                for e in events
                if _text(e.get("irradiation_event_type")) == "Fluoroscopy"
            ]
        )
    values["fluoro_time_total_s"] = reported_time


def _mammography_totals(
    values: dict[str, Any],
    events: Sequence[Mapping[str, Any]],
    reports: Sequence[Mapping[str, Any]],
) -> None:
    """Set the accumulated AGD per breast: the RDSR's by laterality, else the events' sum."""
    for breast in ("left", "right"):
        column = f"agd_total_{breast}_mgy"
        reported = _sum([_number((r.get("accumulated") or {}).get(column)) for r in reports])
        if reported is None:
            reported = _sum(
                [
                    _number(e.get("agd_mgy"))
                    for e in events
                    if _breast(e.get("laterality")) == breast
                ]
            )
        values[column] = reported


def _image_size(values: dict[str, Any], size: Mapping[str, Any] | None) -> None:
    """Set ``image_size_mm`` / ``image_size_source`` from the study's CT image sizes."""
    if not size:
        return
    dw = _number(size.get("dw"))
    ap, lat = _number(size.get("ap")), _number(size.get("lat"))
    if dw is not None:
        values["image_size_mm"], values["image_size_source"] = dw, "image"
    elif ap is not None and lat is not None:
        values["image_size_mm"] = math.sqrt(ap * lat)
        values["image_size_source"] = "localizer"


def _ct_values(
    values: dict[str, Any],
    events: Sequence[Mapping[str, Any]],
    exam: str | None,
    study: Mapping[str, Any],
    context: SummaryContext,
) -> None:
    """Set CTDIvol mean/max, kVp, SSDE and effective dose of a CT study."""
    fits = ssde_fits()
    ctdivol: list[float] = []
    kvps: list[float] = []
    ssdes: list[float] = []
    sizes: list[float] = []
    sources: list[str] = []
    image_source = values.get("image_size_source")
    image_size = _number(values.get("image_size_mm"))
    for event in events:
        value = _number(event.get("ctdivol_mgy"))
        acquisition = _text(event.get("ct_acquisition_type")).lower()
        if value is None or value <= 0 or acquisition in LOCALISER_TYPES:
            continue
        ctdivol.append(value)
        kvp = _number(event.get("kvp_kv"))
        kvp = kvp if kvp is not None else _first_source_kvp(event.get("xray_sources"))
        if kvp is not None:
            kvps.append(kvp)
        size = _number(event.get("water_equivalent_diameter_mm"))
        source = "rdsr" if size is not None else None
        if size is None and image_size is not None:
            size, source = image_size, image_source
        if size is None:
            continue
        sizes.append(size)
        if source:
            sources.append(source)
        fit = fits[phantom_cm_of(event.get("ctdiw_phantom_type"), exam)]
        factor = fit.factor(size)
        if factor is not None:
            ssdes.append(factor * value)
    if ctdivol:
        values["ctdivol_mean_mgy"] = statistics.fmean(ctdivol)
        values["ctdivol_max_mgy"] = max(ctdivol)
    values["kvp_kv"] = statistics.median(kvps) if kvps else None
    if sizes:
        values["ssde_size_mm"] = statistics.fmean(sizes)
        values["ssde_size_source"] = sources[0] if sources else None
    if ssdes:
        values["ssde_mgy"] = statistics.fmean(ssdes)
        values["ssde_reference"] = (
            f"AAPM Report 204/220 fit; {reference_version('ssde_fit_coefficients.csv')}"
        )
    dlp = values.get("ct_dlp_total_mgycm")
    if exam is None or dlp is None:
        return
    row = context.k_factor(exam, _number(study.get("patient_age_years")), values["kvp_kv"])
    if row is None:
        return
    k = float(row["k_mSv_per_mGycm"])
    values["effective_dose_msv"] = k * float(dlp)
    values["effective_dose_k_msv_per_mgycm"] = k
    values["effective_dose_reference"] = (
        f"{context.k_set}: {row['source']} ({row['body_region']}, age {row['age_years']}, "
        f"{row['kvp']} kVp); {reference_version('ct_effective_dose_k_factors.csv')}"
    )

"""Reconciliation: which reports and irradiation events of a study count.

Rules (DESIGN.md "Reconcile is explicit"; ``docs/registry.md``), applied to the reports
of one study from one device in the order they were received:

- a report whose irradiation events are a superset of (or equal to) an earlier current
  report's supersedes it: the earlier one is kept, marked ``superseded_by``, and its
  events no longer count (Siemens cumulative RDSRs, case C04);
- a report whose events are a proper subset of a current report's (an older cumulative
  report arriving late) is stored but superseded at once;
- disjoint event sets (a continued study, case C05) all stay current;
- partial overlap: an event held by several reports is counted once, from the newest
  report that holds it.

Events are matched by their key (:func:`event_key`): the Irradiation Event UID, or for
image headers without one, the start date-time and dose values (one exposure sent both
For Presentation and For Processing counts once). Events without a key always count
while their report is current. The whole study is replayed from the stored keys each
time, so importing the same objects in any order gives the same current events, and
re-running it (``kerma reprocess``) changes nothing.

May import ``kerma.db`` and ``kerma.records``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kerma.db.models import DoseReport, IrradiationEvent, Study
from kerma.db.queries import study_event_keys
from kerma.records import IrradiationEvent as EventRecord
from kerma.records import ReportKind

#: Event values that, with the start date-time, identify an image-header event that
#: carries no Irradiation Event UID.
HEADER_KEY_FIELDS: tuple[str, ...] = (
    "dap_gym2",
    "agd_mgy",
    "ctdivol_mgy",
    "entrance_dose_mgy",
    "dose_rp_gy",
    "kvp_kv",
    "exposure_mas",
    "administered_activity_mbq",
)


def event_key(event: EventRecord, kind: ReportKind | str) -> str | None:
    """Return the key that identifies ``event`` across reports of one study and device.

    ``uid:<Irradiation Event UID>``; for image headers (``header-*``) without one,
    ``hdr:<sha256>`` of the start date-time and dose values; else ``None``.

    A radiopharmaceutical administration is keyed by what it is, not by UID:
    ``admin:<radionuclide>|<start date>|<activity in MBq, 0.1 MBq>``. A PET/NM scanner
    describes one administration in its Radiopharmaceutical Radiation Dose SR (TID 10021)
    and again in every image's Radiopharmaceutical Information Sequence, with different
    UIDs (seen: Siemens Biograph Vision, ``NM-RRDSR-Siemens`` and ``NM-PetIm-Siemens``);
    it must count once. Two administrations of the same radionuclide and activity on
    one day in one study would be counted once too (not seen; documented limit).
    """
    activity = event.administered_activity_mbq
    if activity is not None and event.radionuclide:
        start = event.radiopharmaceutical_start_datetime or event.datetime_started or ""
        return f"admin:{event.radionuclide}|{start[:10]}|{activity:.1f}"
    if event.irradiation_event_uid:
        return f"uid:{event.irradiation_event_uid}"
    if str(kind).startswith("header-") and event.datetime_started:
        values = [event.datetime_started, *(repr(getattr(event, n)) for n in HEADER_KEY_FIELDS)]
        return "hdr:" + hashlib.sha256("\x1f".join(values).encode("utf-8")).hexdigest()
    return None


@dataclass
class Plan:
    """The reconciled state of one study.

    Attributes
    ----------
    superseded_by : dict of int to int or None
        For each report id, the id of the report that supersedes it.
    is_current : dict of int to bool
        For each event id, whether it counts.
    """

    superseded_by: dict[int, int | None] = field(default_factory=dict)
    is_current: dict[int, bool] = field(default_factory=dict)


def plan_study(rows: list[tuple[int, int, str | None]]) -> Plan:
    """Return the reconciled state of a study from (report id, event id, key) rows.

    Reports are replayed in ascending id (arrival) order; an event id of ``-1`` stands
    for a report without events.
    """
    events: dict[int, list[tuple[int, str | None]]] = {}
    for rid, eid, key in rows:
        report_events = events.setdefault(rid, [])  # a report without events takes part
        if eid >= 0:
            report_events.append((eid, key))
    plan = Plan()
    keys: dict[int, frozenset[str]] = {}
    current_reports: list[int] = []
    holders: dict[str, set[int]] = defaultdict(set)  # key -> current event ids
    for rid in sorted(events):
        own = frozenset(k for _, k in events[rid] if k)
        keys[rid] = own
        plan.superseded_by[rid] = None
        container = _container(own, current_reports, keys)
        if container is not None:
            plan.superseded_by[rid] = container
            for eid, _ in events[rid]:
                plan.is_current[eid] = False
            continue
        if own:
            for other in list(current_reports):
                if keys[other] and keys[other] <= own:
                    plan.superseded_by[other] = rid
                    current_reports.remove(other)
                    for eid, key in events[other]:
                        plan.is_current[eid] = False
                        if key:
                            holders[key].discard(eid)
            for key in own:
                for eid in holders.pop(key, set()):
                    plan.is_current[eid] = False
        current_reports.append(rid)
        seen: set[str] = set()
        for eid, key in events[rid]:
            counted = key is None or key not in seen
            plan.is_current[eid] = counted
            if key and counted:
                seen.add(key)
                holders[key].add(eid)
    return plan


def _container(
    own: frozenset[str], current: list[int], keys: dict[int, frozenset[str]]
) -> int | None:
    """Return the current report whose keys are a proper superset of ``own`` (largest first)."""
    if not own:
        return None
    candidates = [rid for rid in current if own < keys[rid]]
    if not candidates:
        return None
    return max(candidates, key=lambda rid: (len(keys[rid]), rid))


def reconcile_study(session: Session, *, study: Study) -> Plan:
    """Replay the reports of ``study`` and store which reports and events count.

    Also sets ``study.modalities`` (comma-joined modalities of the current events) and
    ``study.modality`` (the most frequent of them). Never commits.

    Returns
    -------
    Plan
        The reconciled state.
    """
    session.flush()
    stored = study_event_keys(session, study_id=study.id)
    plan = plan_study([(rid, eid, key) for rid, eid, _, key, _ in stored])
    old_sup = {rid: sup for rid, _, sup, _, _ in stored}
    old_cur = {eid: cur for _, eid, _, _, cur in stored if eid >= 0}
    for rid, sup in plan.superseded_by.items():
        if old_sup.get(rid) != sup:
            session.execute(
                update(DoseReport).where(DoseReport.id == rid).values(superseded_by_id=sup)
            )
    for value in (True, False):
        changed = [
            e for e, cur in plan.is_current.items() if cur is value and old_cur.get(e) != value
        ]
        for start in range(0, len(changed), 500):
            session.execute(
                update(IrradiationEvent)
                .where(IrradiationEvent.id.in_(changed[start : start + 500]))
                .values(is_current=value)
            )
    _set_modalities(session, study)
    return plan


def _set_modalities(session: Session, study: Study) -> None:
    """Set the study's modalities from its current events (or its reports' modality)."""
    counts: Counter[str] = Counter()
    stmt = (
        select(IrradiationEvent.modality, func.count())
        .where(IrradiationEvent.study_id == study.id, IrradiationEvent.is_current.is_(True))
        .group_by(IrradiationEvent.modality)
    )
    for modality, n in session.execute(stmt):
        if modality:
            counts[modality] += int(n)
    if not counts:
        study.modalities = study.modality  # a report without events (e.g. case C22)
        return
    study.modalities = ",".join(sorted(counts))
    study.modality = min(counts, key=lambda m: (-counts[m], m != study.modality, m))

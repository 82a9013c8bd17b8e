"""Reconciliation: which reports and irradiation events of a study count.

Rules (DESIGN.md "Reconcile is explicit"; ``docs/registry.md``), applied to the reports
of one study from one device in the order they were received:

- a report whose irradiation events are a superset of (or equal to) an earlier current
  report's supersedes it: the earlier one is kept, marked ``superseded_by``, and its
  events no longer count (Siemens cumulative RDSRs, case C04); ``superseded_by`` names
  the current report at the end of a chain of cumulative reports, whatever the order
  they arrived in;
- a report whose events are a proper subset of a current report's (an older cumulative
  report arriving late) is stored but superseded at once;
- disjoint event sets (a continued study, case C05) all stay current;
- partial overlap: an event held by several reports is counted once, from the newest
  report that holds it.

Events are matched by their key (:func:`event_key`): the Irradiation Event UID, or for
image headers without one, the start date-time (local time, without its UTC offset) and
dose values (one exposure sent both For Presentation and For Processing counts once).
Radiopharmaceutical administrations are matched by what identifies an administration
(:func:`match_administrations`): its own Radiopharmaceutical Administration Event UID,
else the same radionuclide and activity given at the same time; administrations listed
separately in one report are never merged, however equal their values (rest and stress
injections of one study, case C31). Events without a key always count while their
report is current. The whole study is replayed from the stored keys each time, so
importing the same objects in any order gives the same current events, and re-running
it (``kerma reprocess``) changes nothing.

May import ``kerma.db`` and ``kerma.records``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
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
#: A trailing UTC offset of an ISO 8601 date-time (``+01:00``).
_OFFSET = re.compile(r"(?:[+-]\d{2}:?\d{2}|Z)$")

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


#: Prefix of an administration key (:func:`administration_key`).
ADMINISTRATION_PREFIX = "adm:"
#: How far apart (s) the start times of one administration may be when a
#: radiopharmaceutical dose SR and an image header describe it: seen 8 min on a Siemens
#: Biograph Vision (``NM-RRDSR-Siemens`` 10:40:30, ``NM-PetIm-Siemens`` 10:48:30).
CROSS_SOURCE_TOLERANCE_S = 15 * 60.0
#: How far apart (s) the start times of one administration may be when two objects of
#: the same kind (two images, or a dose SR sent twice) describe it: they copy one value.
SAME_SOURCE_TOLERANCE_S = 60.0


def event_key(event: EventRecord, kind: ReportKind | str) -> str | None:
    """Return the key that identifies ``event`` across reports of one study and device.

    - a radiopharmaceutical administration (radionuclide and activity known):
      :func:`administration_key`;
    - ``uid:<Irradiation Event UID>``;
    - for image headers (``header-*``) without one, ``hdr:<sha256>`` of the start
      date-time (local time as written: a UTC offset that one copy of an image carries
      and another does not must not part them) and the dose values;
    - else ``None``.
    """
    activity = event.administered_activity_mbq
    if activity is not None and event.radionuclide:
        return administration_key(event, kind)
    if event.irradiation_event_uid:
        return f"uid:{event.irradiation_event_uid}"
    if str(kind).startswith("header-") and event.datetime_started:
        local = _OFFSET.sub("", event.datetime_started)
        values = [local, *(repr(getattr(event, n)) for n in HEADER_KEY_FIELDS)]
        return "hdr:" + hashlib.sha256("\x1f".join(values).encode("utf-8")).hexdigest()
    return None


def administration_key(event: EventRecord, kind: ReportKind | str) -> str:
    """Return the stored key of a radiopharmaceutical administration.

    ``adm:<source>|<radionuclide>|<activity, 0.1 MBq>|<start>|<uid hash>``: source ``R``
    for a radiopharmaceutical dose SR (TID 10021), ``H`` for an image header; the
    radionuclide in lower-case letters and digits (``^18^Fluorine`` and ``18 Fluorine``
    agree); the start as ``YYYY-MM-DDTHH:MM:SS`` local time (or the date alone); the
    first 12 hex digits of the SHA-256 of the Radiopharmaceutical Administration Event
    UID (empty when none). The key is not compared as a whole: :func:`plan_study` matches
    administrations field by field (:func:`match_administrations`).
    """
    source = "R" if str(kind) == ReportKind.RDSR_RADIOPHARMACEUTICAL else "H"
    nuclide = re.sub(r"[^0-9a-z]", "", (event.radionuclide or "").lower())[:24]
    start = _OFFSET.sub(
        "", event.radiopharmaceutical_start_datetime or event.datetime_started or ""
    )
    start = start[:19]
    uid = event.irradiation_event_uid
    uid_hash = hashlib.sha256(uid.encode("utf-8")).hexdigest()[:12] if uid else ""
    activity = event.administered_activity_mbq or 0.0
    return f"{ADMINISTRATION_PREFIX}{source}|{nuclide}|{activity:.1f}|{start}|{uid_hash}"


@dataclass(frozen=True)
class _Administration:
    """The fields of an administration key."""

    source: str
    nuclide: str
    activity: str
    start: dt.datetime | None
    date: str
    uid_hash: str

    @classmethod
    def parse(cls, key: str) -> _Administration | None:
        """Return the fields of an ``adm:`` key, or ``None`` for another key."""
        if not key.startswith(ADMINISTRATION_PREFIX):
            return None
        parts = key[len(ADMINISTRATION_PREFIX) :].split("|")
        if len(parts) != 5:
            return None
        source, nuclide, activity, start, uid_hash = parts
        when: dt.datetime | None = None
        if len(start) > 10:
            try:
                when = dt.datetime.fromisoformat(start)
            except ValueError:
                when = None
        return cls(source, nuclide, activity, when, start[:10], uid_hash)

    def matches(self, other: _Administration) -> float | None:
        """Return how far apart (s) two descriptions of one administration are, or ``None``.

        The same administration UID matches at distance 0. Otherwise the radionuclide
        and the activity (to 0.1 MBq) must agree, and the start times be within
        :data:`SAME_SOURCE_TOLERANCE_S` (both from image headers, or both from dose SRs)
        or :data:`CROSS_SOURCE_TOLERANCE_S` (one of each); without a start time on
        either side, the same day is enough.
        """
        if self.uid_hash and self.uid_hash == other.uid_hash:
            return 0.0
        if self.nuclide != other.nuclide or self.activity != other.activity:
            return None
        if self.start is None or other.start is None:
            return 0.0 if self.date == other.date else None
        distance = abs((self.start - other.start).total_seconds())
        limit = SAME_SOURCE_TOLERANCE_S if self.source == other.source else CROSS_SOURCE_TOLERANCE_S
        return distance if distance <= limit else None


def match_administrations(rows: list[tuple[int, int, str | None]]) -> dict[int, str]:
    """Return the canonical key of every administration event of a study.

    Reports are taken in arrival (id) order; each administration of a report is
    matched with the nearest administration already seen in an *earlier* report
    (:meth:`_Administration.matches`) that no other administration of the same report
    has taken; unmatched, it is a new administration. Two administrations of one report
    are therefore never one, even with equal values (case C31), unless they carry the
    same Radiopharmaceutical Administration Event UID; one administration described by
    a dose SR and by its images counts once.

    Parameters
    ----------
    rows : list of (int, int, str or None)
        (report id, event id, key) of the study.

    Returns
    -------
    dict of int to str
        ``{event id: "adm#<n>"}`` for every event with an ``adm:`` key.
    """
    canonical: dict[int, str] = {}
    known: list[list[_Administration]] = []  # per administration: its descriptions
    by_report: dict[int, list[tuple[int, _Administration]]] = {}
    for rid, eid, key in rows:
        admin = _Administration.parse(key) if key else None
        if admin is not None:
            by_report.setdefault(rid, []).append((eid, admin))
    for rid in sorted(by_report):
        taken: dict[int, str] = {}  # administration number -> uid hash that took it
        for eid, admin in by_report[rid]:
            same = next(
                (n for n, uid in taken.items() if admin.uid_hash and uid == admin.uid_hash), None
            )
            best: tuple[float, int] | None = None if same is None else (0.0, same)
            for n, descriptions in enumerate(known):
                if best is not None and best[0] == 0.0:
                    break
                if n in taken:
                    continue
                distances = [d for d in (admin.matches(o) for o in descriptions) if d is not None]
                if distances and (best is None or min(distances) < best[0]):
                    best = (min(distances), n)
            if best is None:
                known.append([admin])
                number = len(known) - 1
            else:
                number = best[1]
                known[number].append(admin)
            taken.setdefault(number, admin.uid_hash)
            canonical[eid] = f"adm#{number}"
    return canonical


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
    administrations = match_administrations(rows)
    events: dict[int, list[tuple[int, str | None]]] = {}
    for rid, eid, key in rows:
        key = administrations.get(eid, key)
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
    _to_final(plan.superseded_by)
    return plan


def _to_final(superseded_by: dict[int, int | None]) -> None:
    """Point every superseded report at the current report at the end of its chain.

    Cumulative reports 1 ⊂ 2 ⊂ 3 received in that order supersede one another in a
    chain (1 by 2, 2 by 3); received 3 first, 1 and 2 are each superseded by 3. Following
    the chain to the report that is current gives the same ``superseded_by`` in any
    arrival order (several ingest nodes, issue #15).
    """
    for rid in list(superseded_by):
        seen = {rid}
        target = superseded_by[rid]
        while target is not None and superseded_by.get(target) is not None:
            nxt = superseded_by[target]
            if nxt in seen:  # pragma: no cover - plans never form cycles
                break
            seen.add(target)
            target = nxt
        superseded_by[rid] = target


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

"""Reconciliation rules on event keys (pure: no database)."""

from __future__ import annotations

import itertools

import pytest

from kerma.ingest.reconcile import event_key, plan_study
from kerma.records import IrradiationEvent, ReportKind


def rows(reports: dict[int, list[str | None]]) -> list[tuple[int, int, str | None]]:
    """Return plan_study rows: report id -> event keys; event id = report id * 100 + index."""
    out: list[tuple[int, int, str | None]] = []
    for rid, keys in reports.items():
        if not keys:
            out.append((rid, -1, None))
        out.extend((rid, rid * 100 + i, k) for i, k in enumerate(keys))
    return out


def current_keys(reports: dict[int, list[str | None]]) -> list[str | None]:
    """Return the keys of the current events after planning, sorted."""
    plan = plan_study(rows(reports))
    return sorted(
        (
            k
            for rid, keys in reports.items()
            for i, k in enumerate(keys)
            if plan.is_current[rid * 100 + i]
        ),
        key=str,
    )


class TestPlanStudy:
    """plan_study: superset, subset, disjoint and partial overlap."""

    def test_superset_supersedes_earlier_report(self) -> None:
        """A later report holding all earlier events supersedes the earlier report."""
        plan = plan_study(rows({1: ["a"], 2: ["a", "b"]}))
        assert plan.superseded_by == {1: 2, 2: None}
        assert plan.is_current == {100: False, 200: True, 201: True}

    def test_subset_arriving_late_is_superseded_at_once(self) -> None:
        """An older cumulative report arriving after a newer one is superseded by it."""
        plan = plan_study(rows({1: ["a", "b"], 2: ["a"]}))
        assert plan.superseded_by == {1: None, 2: 1}
        assert plan.is_current == {100: True, 101: True, 200: False}

    def test_disjoint_reports_both_stay_current(self) -> None:
        """A continued study: disjoint event sets all count."""
        plan = plan_study(rows({1: ["a", "b"], 2: ["c", "d"]}))
        assert plan.superseded_by == {1: None, 2: None}
        assert all(plan.is_current.values())

    def test_partial_overlap_counts_shared_event_once_from_newer(self) -> None:
        """An event in two reports counts once, from the newer report."""
        plan = plan_study(rows({1: ["a", "b"], 2: ["b", "c"]}))
        assert plan.superseded_by == {1: None, 2: None}
        assert plan.is_current == {100: True, 101: False, 200: True, 201: True}

    def test_equal_event_sets_newer_supersedes(self) -> None:
        """The same events re-sent under a new SOP Instance UID: the newer counts."""
        plan = plan_study(rows({1: ["a"], 2: ["a"]}))
        assert plan.superseded_by == {1: 2, 2: None}

    def test_events_without_key_always_count(self) -> None:
        """Events without a key count while their report is current."""
        plan = plan_study(rows({1: [None, None], 2: [None]}))
        assert all(plan.is_current.values())

    def test_report_without_events_stays_current(self) -> None:
        """A report with no events takes part and is not superseded."""
        plan = plan_study(rows({1: [], 2: ["a"]}))
        assert plan.superseded_by == {1: None, 2: None}

    @pytest.mark.parametrize(
        "order", list(itertools.permutations([["a"], ["a", "b"], ["a", "b", "c"]]))
    )
    def test_cumulative_reports_any_order_same_current_events(self, order) -> None:
        """Cumulative reports in any arrival order leave exactly a, b, c current."""
        reports = {i + 1: keys for i, keys in enumerate(order)}
        assert current_keys(reports) == ["a", "b", "c"]

    @pytest.mark.parametrize(
        "order", list(itertools.permutations([["a", "b"], ["b", "c"], ["c", "d"]]))
    )
    def test_overlapping_reports_any_order_each_event_once(self, order) -> None:
        """Overlapping reports in any order count each event exactly once."""
        reports = {i + 1: keys for i, keys in enumerate(order)}
        assert current_keys(reports) == ["a", "b", "c", "d"]


class TestEventKey:
    """event_key: Irradiation Event UID, or header values."""

    def test_uid_gives_uid_key(self) -> None:
        """An event with an Irradiation Event UID is keyed by it."""
        assert (
            event_key(IrradiationEvent(irradiation_event_uid="1.2.3"), ReportKind.RDSR_CT)
            == "uid:1.2.3"
        )

    def test_header_without_uid_keyed_by_time_and_dose(self) -> None:
        """Two header events with the same start and dose values share a key."""
        a = IrradiationEvent(datetime_started="2020-01-01T10:00:00", agd_mgy=1.2, kvp_kv=28.0)
        b = IrradiationEvent(datetime_started="2020-01-01T10:00:00", agd_mgy=1.2, kvp_kv=28.0)
        c = IrradiationEvent(datetime_started="2020-01-01T10:00:00", agd_mgy=1.3, kvp_kv=28.0)
        key = event_key(a, ReportKind.HEADER_MG)
        assert key is not None and key.startswith("hdr:")
        assert key == event_key(b, ReportKind.HEADER_MG)
        assert key != event_key(c, ReportKind.HEADER_MG)

    def test_rdsr_event_without_uid_has_no_key(self) -> None:
        """An RDSR event without a UID is never matched to another."""
        event = IrradiationEvent(datetime_started="2020-01-01T10:00:00", dlp_mgycm=10.0)
        assert event_key(event, ReportKind.RDSR_CT) is None

    def test_header_key_ignores_utc_offset(self) -> None:
        """The same exposure with and without a UTC offset on its time shares a key."""
        a = IrradiationEvent(datetime_started="2020-01-01T10:00:00+01:00", dap_gym2=1e-5)
        b = IrradiationEvent(datetime_started="2020-01-01T10:00:00", dap_gym2=1e-5)
        assert event_key(a, ReportKind.HEADER_DX) == event_key(b, ReportKind.HEADER_DX)


def administration(
    start: str, *, uid: str | None = None, activity: float = 1110.0, nuclide: str = "^82^Rubidium"
) -> IrradiationEvent:
    """Return a radiopharmaceutical administration event."""
    return IrradiationEvent(
        modality="NM",
        irradiation_event_uid=uid,
        radionuclide=nuclide,
        administered_activity_mbq=activity,
        radiopharmaceutical_start_datetime=start,
        datetime_started=start,
    )


def count_administrations(reports: list[list[tuple[IrradiationEvent, ReportKind]]]) -> int:
    """Return how many administrations count after planning reports in this order."""
    keyed = {
        rid: [event_key(event, kind) for event, kind in report]
        for rid, report in enumerate(reports, start=1)
    }
    plan = plan_study(rows(keyed))
    return sum(plan.is_current.values())


RRDSR = ReportKind.RDSR_RADIOPHARMACEUTICAL
PET = ReportKind.HEADER_PT


class TestAdministrations:
    """Administrations are identified by what identifies them, not by equal values (C31)."""

    def test_two_equal_administrations_of_one_report_count_twice(self) -> None:
        """Rest and stress Rb-82, 1110 MBq each, in one dose SR: two administrations."""
        report = [
            (administration("2024-01-15T09:00:00", uid="1.1"), RRDSR),
            (administration("2024-01-15T09:40:00", uid="1.2"), RRDSR),
        ]
        assert count_administrations([report]) == 2

    def test_equal_administrations_without_uid_of_one_report_count_twice(self) -> None:
        """Without UIDs, two administrations listed in one report still count twice."""
        report = [
            (administration("2024-01-15T09:00:00"), RRDSR),
            (administration("2024-01-15T09:00:00"), RRDSR),
        ]
        assert count_administrations([report]) == 2

    @pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["sr-first", "image-first"])
    def test_dose_sr_and_image_of_one_administration_count_once(self, order) -> None:
        """One F-18 administration in the dose SR (10:40:30) and a PET image (10:48:30)."""
        sr = [(administration("2022-02-24T10:40:30", uid="9.1", nuclide="^18^Fluorine"), RRDSR)]
        image = [(administration("2022-02-24T10:48:30", uid="9.2", nuclide="^18^Fluorine"), PET)]
        reports = [sr, image]
        assert count_administrations([reports[i] for i in order]) == 1

    def test_images_of_rest_and_stress_count_twice(self) -> None:
        """PET images of the rest and of the stress injection (40 min apart): two."""
        rest = [(administration("2024-01-15T09:00:00", uid="5.1"), PET)]
        rest_again = [(administration("2024-01-15T09:00:00", uid="5.1"), PET)]
        stress = [(administration("2024-01-15T09:40:00", uid="5.2"), PET)]
        assert count_administrations([rest, rest_again, stress]) == 2

    @pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
    def test_dose_sr_with_both_and_images_any_order(self, order) -> None:
        """Dose SR with rest and stress, plus an image of each, in any order: two."""
        sr = [
            (administration("2024-01-15T09:00:00", uid="1.1"), RRDSR),
            (administration("2024-01-15T09:40:00", uid="1.2"), RRDSR),
        ]
        rest = [(administration("2024-01-15T09:02:00", uid="5.1"), PET)]
        stress = [(administration("2024-01-15T09:41:00", uid="5.2"), PET)]
        reports = [sr, rest, stress]
        assert count_administrations([reports[i] for i in order]) == 2

    def test_dose_sr_sent_twice_counts_once(self) -> None:
        """A dose SR re-sent under a new SOP Instance UID: the same two administrations."""
        sr = [
            (administration("2024-01-15T09:00:00", uid="1.1"), RRDSR),
            (administration("2024-01-15T09:40:00", uid="1.2"), RRDSR),
        ]
        assert count_administrations([sr, list(sr)]) == 2

    def test_different_activity_is_another_administration(self) -> None:
        """A different activity at the same time, without a shared UID: two."""
        a = [(administration("2024-01-15T09:00:00", activity=400.0), RRDSR)]
        b = [(administration("2024-01-15T09:00:00", activity=300.0), PET)]
        assert count_administrations([a, b]) == 2

"""Every default rule, crossed at, just below and just above its threshold (store, both backends).

Each case builds three studies (value x 0.999, x 1, x 1.001 of the threshold) on a
device and patient of their own, so rules of other cases never see them; the registry
is rechecked once and each study must carry an alert of the case's rule exactly when
the value crosses (``>`` : above only; ``>=`` : at and above). The DRL cases use the
German set (``KERMA_DRL_SET=DE``), whose rows cover CT Head, Chest PA, mammography and
coronary angiography.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from kerma.analysis.alerts import crosses, find_drl
from kerma.db.models import Alert, Study
from kerma.services import alerts
from kerma.services.registry import Registry
from tests.alerts.helpers import make_study
from tests.db_fixtures import BACKENDS, fresh_database, make_settings

FACTORS = {"below": 0.999, "at": 1.0, "above": 1.001}

LOCALISER = {
    "ct_acquisition_type": "Constant Angle Acquisition",
    "acquisition_protocol": "Topogram",
    "ctdivol_mgy": 5000.0,
}


@dataclass
class Case:
    """One rule and the study that crosses it."""

    rule_id: str
    family: str
    exam: str | None
    age: float | None = 50.0
    event: dict[str, Any] = field(default_factory=dict)
    study_field: str | None = None
    event_exam: str | None = None


def _ct(rule_id: str, exam: str, age: float, **event: Any) -> Case:
    """A CT case on one series' CTDIvol (a localiser with a huge CTDIvol beside it)."""
    event = {"ct_acquisition_type": "Spiral Acquisition", "acquisition_protocol": "Routine"} | event
    return Case(rule_id, "CT", exam, age, event=event)


CASES = [
    _ct("aapm-ct-adult-head", "CT Head", 40),
    _ct("aapm-ct-paediatric-head-under-2", "CT Head", 1),
    _ct("aapm-ct-paediatric-head-2-5", "CT Head", 3),
    _ct("aapm-ct-adult-torso", "CT Chest", 40),
    _ct(
        "aapm-ct-paediatric-torso-16cm",
        "CT Chest",
        6,
        ctdiw_phantom_type="IEC Head Dosimetry Phantom",
    ),
    _ct(
        "aapm-ct-paediatric-torso-32cm",
        "CT Chest",
        6,
        ctdiw_phantom_type="IEC Body Dosimetry Phantom",
    ),
    _ct("aapm-ct-brain-perfusion", "CT Head (Stroke)", 70, acquisition_protocol="Brain Perfusion"),
    _ct("aapm-ct-cardiac-retrospective", "CT coronary angiography", 60),
    _ct(
        "aapm-ct-cardiac-prospective",
        "CT coronary angiography",
        60,
        ct_acquisition_type="Sequenced Acquisition",
    ),
    Case("ncrp168-ka-r", "RF/XA", "PCI", study_field="dose_rp_total_gy"),
    Case("ncrp168-kap", "RF/XA", "PCI", study_field="dap_total_gym2"),
    Case("ncrp168-fluoro-time", "RF/XA", "PCI", study_field="fluoro_time_total_s"),
    Case("ncrp168-peak-skin-dose", "RF/XA", "PCI", study_field="peak_skin_dose_mgy"),
    Case("drl2x-ct-dlp", "CT", "CT Head", study_field="ct_dlp_total_mgycm"),
    Case("drl2x-rf-kap", "RF/XA", "Coronary angiography", study_field="dap_total_gym2"),
    Case("drl2x-dx-kap", "DX", "Chest PA", event_exam="Chest PA"),
    Case("drl2x-mg-agd", "MG", "Mammography screening", event_exam="Mammography screening"),
]

HISTORY_CASES = [
    Case("history2x-ct-dlp", "CT", "CT Chest", study_field="ct_dlp_total_mgycm"),
    Case("history2x-rf-kap", "RF/XA", "PCI", study_field="dap_total_gym2"),
    Case("history2x-dx-kap", "DX", "Chest PA", study_field="dap_total_gym2"),
    Case(
        "history2x-nm-activity", "NM", "NM Bone scan", study_field="administered_activity_total_mbq"
    ),
]

#: cumulative rule -> (family, study field, value of the earlier study, threshold part)
CUMULATIVE_CASES = {
    "cumulative-ka-r-12-weeks": ("RF/XA", "dose_rp_total_gy", 2.5, 2.5),
    "cumulative-ct-effective-dose-12-months": ("CT", "effective_dose_msv", 50.0, 50.0),
}

HISTORY_VALUE = 100.0  # each history device's earlier studies: median 100 -> threshold 200


@dataclass
class Built:
    """The registry and, per (rule, position), the study id and the rule's threshold."""

    registry: Registry
    studies: dict[tuple[str, str], int]
    thresholds: dict[str, float]
    alerted: set[tuple[str, int]]
    patient_alerts: dict[tuple[str, int], float]
    patient_of: dict[int, int]


def _threshold(registry: Registry, case: Case) -> float:
    """Return the absolute threshold of a case's rule for its study."""
    rule = registry.alert_context.rules.get(case.rule_id)
    assert rule is not None, case.rule_id
    if rule.kind == "drl_multiple":
        drls = registry.alert_context.drls()["DE"]
        drl = find_drl(drls, quantity=rule.drl_quantity or "", exam=case.exam, age_years=case.age)
        assert drl is not None, case.rule_id
        return float(rule.factor or 0) * drl["drl_value"]
    if rule.kind == "device_history":
        return float(rule.factor or 0) * HISTORY_VALUE
    assert rule.threshold is not None
    return rule.threshold


def _build(registry: Registry) -> Built:
    """Add every case's studies; recheck once; return what was built."""
    studies: dict[tuple[str, str], int] = {}
    thresholds: dict[str, float] = {}
    with registry.session() as s:
        for n, case in enumerate(CASES + HISTORY_CASES):
            limit = _threshold(registry, case)
            thresholds[case.rule_id] = limit
            rule = registry.alert_context.rules.get(case.rule_id)
            assert rule is not None
            for position, factor in FACTORS.items():
                device = f"{case.rule_id} {position}"
                if case in HISTORY_CASES:
                    for day in range(1, 6):
                        make_study(
                            s,
                            family=case.family,
                            device=device,
                            patient=f"H{n}{position}{day}",
                            date=f"2025-01-0{day}",
                            exam=case.exam,
                            values={case.study_field: HISTORY_VALUE},
                        )
                value = limit * factor
                values: dict[str, Any] = {}
                events: list[dict[str, Any]] = []
                psd = None
                if case.study_field == "peak_skin_dose_mgy":
                    psd = value
                elif case.study_field is not None:
                    values[case.study_field] = value
                elif case.family == "CT":
                    events = [LOCALISER, {**case.event, rule.quantity: value}]
                else:
                    events = [{"acquisition_protocol": "test", rule.quantity: value}]
                studies[(case.rule_id, position)] = make_study(
                    s,
                    family=case.family,
                    device=device,
                    patient=f"P{n}{position}",
                    date="2025-03-01",
                    exam=case.exam,
                    age=case.age,
                    events=events,
                    values=values,
                    event_exam=case.event_exam,
                    peak_skin_dose_mgy=psd,
                )
        for rule_id, (family, name, first, part) in CUMULATIVE_CASES.items():
            thresholds[rule_id] = first + part
            for position, factor in FACTORS.items():
                patient = f"{rule_id} {position}"
                make_study(
                    s,
                    family=family,
                    device=f"{rule_id} room",
                    patient=patient,
                    date="2025-02-01",
                    exam=None,
                    values={name: first},
                )
                studies[(rule_id, position)] = make_study(
                    s,
                    family=family,
                    device=f"{rule_id} room",
                    patient=patient,
                    date="2025-03-15",
                    exam=None,
                    values={name: part * factor},
                )
        # CT count: 9, 10 and 11 CT studies of one patient in 12 months (>= 10 alerts)
        thresholds["cumulative-ct-count-12-months"] = 10.0
        for position, number in {"below": 9, "at": 10, "above": 11}.items():
            for k in range(number):
                sid = make_study(
                    s,
                    family="CT",
                    device="count room",
                    patient=f"count {position}",
                    date=(dt.date(2025, 1, 1) + dt.timedelta(days=30 * k)).isoformat(),
                    exam=None,
                )
            studies[("cumulative-ct-count-12-months", position)] = sid
    registry.recheck_alerts()
    with registry.session(write=False) as s:
        rows = s.execute(select(Alert.rule_id, Alert.study_id, Alert.patient_id, Alert.value)).all()
        patient_of = {int(i): int(p) for i, p in s.execute(select(Study.id, Study.patient_id))}
    alerted = {(r, int(sid)) for r, sid, _, _ in rows}
    patient_alerts = {(r, int(pid)): float(v) for r, _, pid, v in rows if r.startswith("cumul")}
    return Built(registry, studies, thresholds, alerted, patient_alerts, patient_of)


@pytest.fixture(scope="module", params=BACKENDS)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    """A registry holding every case, rechecked once (per backend)."""
    folder = tmp_path_factory.mktemp("thresholds")
    with fresh_database(request.param, folder) as url:
        registry = Registry(settings=make_settings(url, folder, drl_set="DE"))
        try:
            yield _build(registry)
        finally:
            registry.close()


ALL_RULES = [c.rule_id for c in CASES + HISTORY_CASES] + [
    *CUMULATIVE_CASES,
    "cumulative-ct-count-12-months",
]


class TestEveryDefaultRule:
    """Each default rule fires exactly when its threshold is crossed."""

    def test_every_default_rule_has_a_case(self, built: Built) -> None:
        """The cases cover every rule of the default pack."""
        default = {r.rule_id for r in built.registry.alert_context.rules.rules}
        assert default == set(ALL_RULES)

    @pytest.mark.parametrize("rule_id", ALL_RULES)
    @pytest.mark.parametrize("position", list(FACTORS))
    def test_crossing_at_below_above(self, built: Built, rule_id: str, position: str) -> None:
        """An alert of the rule exists on the study exactly when the value crosses."""
        rule = built.registry.alert_context.rules.get(rule_id)
        assert rule is not None
        study_id = built.studies[(rule_id, position)]
        limit = built.thresholds[rule_id]
        expected = crosses(limit * FACTORS[position], limit, rule.operator)
        if rule_id == "cumulative-ct-count-12-months":
            expected = position != "below"
        if rule.kind == "cumulative":
            key = (rule_id, built.patient_of[study_id])
            assert (key in built.patient_alerts) is expected
        else:
            assert ((rule_id, study_id) in built.alerted) is expected

    def test_patient_window_is_one_alert_with_the_running_value(self, built: Built) -> None:
        """11 CT studies: one alert (crossed at the 10th), its value updated to 11."""
        patient = built.patient_of[built.studies[("cumulative-ct-count-12-months", "above")]]
        assert built.patient_alerts[("cumulative-ct-count-12-months", patient)] == 11.0

    def test_alert_values_are_canonical(self, built: Built) -> None:
        """The KAP alert holds the value and threshold in Gy·m² (500 Gy·cm² = 0.05 Gy·m²)."""
        with built.registry.session(write=False) as s:
            row = s.scalars(
                select(Alert).where(
                    Alert.rule_id == "ncrp168-kap",
                    Alert.study_id == built.studies[("ncrp168-kap", "above")],
                )
            ).one()
        assert row.threshold == pytest.approx(0.05)
        assert row.value == pytest.approx(0.05 * 1.001)
        assert row.unit == "Gy·m²"
        assert "NCRP Report No. 168" in row.threshold_source

    def test_localiser_never_alerts(self, built: Built) -> None:
        """The 5000 mGy localiser beside each CT series raises no CTDIvol alert."""
        below = built.studies[("aapm-ct-adult-head", "below")]
        assert ("aapm-ct-adult-head", below) not in built.alerted

    def test_recheck_again_adds_nothing(self, built: Built) -> None:
        """A second recheck of the same registry creates and updates no alert."""
        calls: list[int] = []
        alerts.on_new_alert.append(calls.append)
        try:
            result = built.registry.recheck_alerts()
        finally:
            alerts.on_new_alert.remove(calls.append)
        assert result.new == [] and result.updated == [] and calls == []

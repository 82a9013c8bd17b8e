"""Rule packs: loading, unit conversion, versions, scope and errors (pure, no database)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kerma.analysis.alerts import (
    ANLAGE14_PACK_FILE,
    ANLAGE14_PACK_ID,
    AlertRule,
    RuleScope,
    age_band,
    evaluate_drl_group,
    in_scope,
    load_pack,
    load_rules,
    packaged_pack_path,
)
from kerma.errors import ConfigurationError

MINIMAL = """
pack = "site"

[[rule]]
id = "r1"
kind = "threshold"
quantity = "dap_total_gym2"
operator = ">="
threshold = 500
unit = "Gy.cm2"
source = "Site policy"
"""


class TestPacks:
    """The shipped packs and the loader."""

    def test_default_pack_cites_every_threshold(self) -> None:
        """Every default rule has a source; published ones name AAPM or NCRP 168."""
        rules = load_rules().rules
        assert len(rules) == 24
        for rule in rules:
            assert rule.source and rule.basis in {"published", "site policy"}
            if rule.basis == "published":
                assert "AAPM 2011" in rule.source or "NCRP Report No. 168" in rule.source

    @pytest.mark.parametrize(
        ("rule_id", "canonical"),
        [
            ("ncrp168-kap", 0.05),  # 500 Gy·cm² in Gy·m²
            ("ncrp168-fluoro-time", 3600.0),  # 60 min in s
            ("ncrp168-peak-skin-dose", 3000.0),  # 3 Gy in mGy
            ("ncrp168-ka-r", 5.0),  # Gy
            ("aapm-ct-adult-head", 80.0),
            ("de-a14-fluoroscopy-kap", 0.02),  # 20 000 cGy·cm² in Gy·m²
            ("de-a14-ct-brain-ctdivol", 120.0),
            ("de-a14-ct-body-ctdivol", 80.0),
        ],
        ids=lambda v: str(v),
    )
    def test_thresholds_in_canonical_units(self, rule_id: str, canonical: float) -> None:
        """Thresholds written in display units are converted once, on loading."""
        rule = load_rules(anlage14=True).get(rule_id)
        assert rule is not None
        assert rule.threshold == pytest.approx(canonical, rel=1e-12)

    def test_anlage14_only_when_enabled(self) -> None:
        """The German pack is added by the setting, and cites StrlSchV Anlage 14."""
        assert not any(r.pack == ANLAGE14_PACK_ID for r in load_rules().rules)
        german = [r for r in load_rules(anlage14=True).rules if r.pack == ANLAGE14_PACK_ID]
        assert len(german) == 7
        assert all("StrlSchV 2018 Anlage 14" in r.source for r in german)
        assert all(r.basis == "law" for r in german)

    def test_folder_of_packs(self, tmp_path: Path) -> None:
        """A folder's packs are read in name order; the default pack is then not loaded."""
        (tmp_path / "a.toml").write_text(MINIMAL, encoding="utf-8")
        (tmp_path / "b.toml").write_text(
            MINIMAL.replace('"site"', '"site2"').replace('"r1"', '"r2"'), encoding="utf-8"
        )
        rules = load_rules(tmp_path)
        assert [r.rule_id for r in rules.rules] == ["r1", "r2"]

    def test_packaged_anlage14_path(self) -> None:
        """The pack file ships with the package."""
        assert load_pack(packaged_pack_path(ANLAGE14_PACK_FILE))

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (('source = "Site policy"', ""), "must cite the source"),
            (('"dap_total_gym2"', '"kap"'), "quantity 'kap' at level 'study' is not known"),
            (('unit = "Gy.cm2"', 'unit = "furlong"'), "unit 'furlong' cannot be converted"),
            (('operator = ">="', 'operator = "<"'), "operator '<' is not one of"),
            (('kind = "threshold"', 'kind = "magic"'), "kind 'magic' is not one of"),
            (("threshold = 500", ""), "a threshold rule needs threshold"),
        ],
        ids=["no-source", "unknown-quantity", "bad-unit", "bad-operator", "bad-kind", "no-value"],
    )
    def test_invalid_rule_is_a_clear_error(
        self, tmp_path: Path, change: tuple[str, str], message: str
    ) -> None:
        """The message names the file and the rule and says what is wrong."""
        path = tmp_path / "bad.toml"
        path.write_text(MINIMAL.replace(*change), encoding="utf-8")
        with pytest.raises(ConfigurationError, match=message) as info:
            load_rules(path)
        assert str(path) in str(info.value)

    def test_duplicate_ids_are_refused(self, tmp_path: Path) -> None:
        """Two rules with one id (two files): refused."""
        (tmp_path / "a.toml").write_text(MINIMAL, encoding="utf-8")
        (tmp_path / "b.toml").write_text(MINIMAL, encoding="utf-8")
        with pytest.raises(ConfigurationError, match="rule id 'r1' appears twice"):
            load_rules(tmp_path)

    def test_bad_regex_is_refused(self, tmp_path: Path) -> None:
        """A scope pattern that does not compile is named."""
        path = tmp_path / "bad.toml"
        path.write_text(MINIMAL + '[rule.scope]\nexams = ["CT (Head"]\n', encoding="utf-8")
        with pytest.raises(ConfigurationError, match="not a regular expression"):
            load_rules(path)

    def test_missing_path(self, tmp_path: Path) -> None:
        """KERMA_ALERT_RULES pointing nowhere: a clear error."""
        with pytest.raises(ConfigurationError, match="no such file or folder"):
            load_rules(tmp_path / "nothing.toml")


class TestVersion:
    """The rule version follows what the rule decides, not how it is described."""

    def test_version_changes_with_threshold_not_title(self) -> None:
        """Threshold or scope changes the version; title, source and recipients do not."""
        rule = load_rules().get("aapm-ct-adult-head")
        assert rule is not None
        same = replace(rule, title="x", source="y", note="z", recipients=("a@b.c",))
        assert same.version == rule.version
        assert replace(rule, threshold=81.0).version != rule.version
        assert replace(rule, scope=RuleScope(modalities=("CT",))).version != rule.version
        assert len(rule.version) == 16


def _rule(**scope: object) -> AlertRule:
    """Return a study-level CTDIvol rule with the given scope."""
    return AlertRule(
        rule_id="t",
        pack="p",
        title="t",
        kind="threshold",
        quantity="ctdivol_max_mgy",
        operator=">",
        unit="mGy",
        source="s",
        threshold=1.0,
        scope=RuleScope(**scope),  # type: ignore[arg-type]
    )


class TestScope:
    """Which studies a rule applies to."""

    def test_age_band_and_unknown_age(self) -> None:
        """Upper bound: unknown age left out; lower bound only: unknown age kept."""
        child = _rule(max_age_years=2.0)
        adult = _rule(min_age_years=5.0)
        assert in_scope(child, {"patient_age_years": 1.5})
        assert not in_scope(child, {"patient_age_years": 2.0})
        assert not in_scope(child, {"patient_age_years": None})
        assert in_scope(adult, {"patient_age_years": None})
        assert not in_scope(adult, {"patient_age_years": 4.9})

    def test_modality_exam_device_exclude(self) -> None:
        """Family, exam regex, device regex, exclusions; QA studies never."""
        rule = _rule(
            modalities=("CT",),
            exams=("^CT Head",),
            devices=("ROOM1",),
            exclude=(("acquisition_protocol", "perfusion"),),
        )
        row = {"modality_family": "CT", "standard_exam": "CT Head", "device_name": "X (ROOM1)"}
        assert in_scope(rule, row)
        assert not in_scope(rule, {**row, "modality_family": "DX", "modality": "DX"})
        assert not in_scope(rule, {**row, "standard_exam": "CT Chest"})
        assert not in_scope(rule, {**row, "device_name": "ROOM2"})
        assert not in_scope(rule, {**row, "acquisition_protocol": "Brain Perfusion"})
        assert not in_scope(rule, {**row, "is_non_patient": True})

    @pytest.mark.parametrize(
        ("age", "band"),
        [
            (None, "unknown"),
            (0.5, "<1 y"),
            (3, "1-4 y"),
            (17.9, "15-17 y"),
            (18, "18-19 y"),
            (45, "40-49 y"),
        ],
    )
    def test_age_band(self, age: float | None, band: str) -> None:
        """Reports show coarse bands, never a birth date."""
        assert age_band(age) == band


class TestGroupPure:
    """The Anlage 14 group evaluation on hand-made windows."""

    def test_window_needs_trigger_and_mean(self) -> None:
        """Mean above 2 x DRL needs a value above 3 x DRL in the window, and 20 values."""
        rule = load_rules(anlage14=True).get("de-a14-group-ct-dlp")
        assert rule is not None
        study = {
            "study_id": 20,
            "device_id": 1,
            "standard_exam": "CT Head",
            "modality_family": "CT",
        }
        drl = {"drl_value": 100.0}
        high = [(i, 210.0) for i in range(1, 21)]
        assert evaluate_drl_group(rule, study, high, drl) is None  # no trigger
        with_trigger = [*high[:-1], (20, 310.0)]
        crossing = evaluate_drl_group(rule, study, with_trigger, drl)
        assert crossing is not None and crossing.threshold == 200.0
        assert crossing.detail["trigger_study_id"] == 20
        assert evaluate_drl_group(rule, study, with_trigger[1:], drl) is None  # 19 only

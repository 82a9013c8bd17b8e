"""Tests of standard-exam rules (kerma.analysis.exams)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kerma.analysis.exams import (
    assign_event_exams,
    assign_study_exams,
    load_exam_rules,
    summarise_mapping,
)
from kerma.analysis.reference import load_drls
from kerma.errors import ConfigurationError
from tests.analysis.conftest import make_events

#: Default-rule exams that no shipped DRL table names (study-level combinations and
#: procedures without a DRL).
EXAMS_WITHOUT_DRL = {"Chest PA/LAT", "Lumbar spine AP/LAT", "Barium swallow"}


def _studies(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (studies, events) frames from event rows."""
    events = make_events(rows)
    studies = events.drop_duplicates("study_id").rename(columns={"study_modality": "modality_"})
    studies = studies.drop(columns=["modality"]).rename(columns={"modality_": "modality"})
    return studies, events


class TestDefaultRules:
    """The shipped rules map typical descriptions to DRL exam names."""

    @pytest.mark.parametrize(
        ("modality", "description", "protocol", "expected"),
        [
            ("CT", "CT Head", "Routine Head", "CT Head"),
            ("CT", "CT HEAD WO CONTRAST", None, "CT Head"),
            ("CT", "CT Chest-Abdomen-Pelvis", "Chest Abdomen Pelvis", "CT Chest-Abdomen-Pelvis"),
            ("CT", "CT THORAX/ABDOMEN/PELVIS", None, "CT Chest-Abdomen-Pelvis"),
            ("CT", "CT Abdomen-Pelvis", "Abdomen Pelvis", "CT Abdomen-Pelvis"),
            ("CT", "CT Chest", "Thorax Routine", "CT Chest"),
            ("CT", "CT Pulmonary Angiogram", "CTPA", "CT pulmonary angiography"),
            ("CT", "CARDIAC CTA", None, "CT coronary angiography"),
            ("CT", "CT KUB", None, "CT KUB"),
            ("CT", "CT Sinus", None, "CT Paranasal sinuses"),
            ("RF", "Coronary angiography", "Coronary cine", "Coronary angiography"),
            ("RF", "Percutaneous coronary intervention", "PCI cine", "PCI"),
            ("RF", "Barium swallow", "Oesophagus fluoro", "Barium swallow"),
            ("DX", "Chest PA", "Chest PA", "Chest PA"),
            ("DX", "Abdomen AP", "Abdomen AP", "Abdomen AP"),
            ("DX", "Lumbar spine AP and lateral", "L-spine", "Lumbar spine AP/LAT"),
            ("MG", "Screening mammography", None, "Mammography screening"),
            ("RF", "ERCP", "ERCP fluoro", None),
        ],
    )
    def test_description_maps_to_exam(
        self, modality: str, description: str, protocol: str | None, expected: str | None
    ) -> None:
        """A study description (and protocol) maps to the expected standard exam."""
        studies, events = _studies(
            [
                {
                    "study_id": 1,
                    "device": "R1",
                    "modality": modality,
                    "study_description": description,
                    "acquisition_protocol": protocol,
                }
            ]
        )
        mapped = assign_study_exams(studies, events, load_exam_rules())
        assert mapped.loc[0, "standard_exam"] == expected

    def test_first_match_wins(self) -> None:
        """'Chest abdomen pelvis' is CAP, not Chest (CAP rule comes first)."""
        studies, events = _studies(
            [
                {
                    "study_id": 1,
                    "device": "R1",
                    "modality": "CT",
                    "study_description": "chest abdomen pelvis",
                }
            ]
        )
        mapped = assign_study_exams(studies, events, load_exam_rules())
        assert mapped.loc[0, "standard_exam_rule"] == "ct-chest-abdomen-pelvis"

    def test_radiography_events_get_projection_exams(self) -> None:
        """PA and LAT chest images get 'Chest PA' and 'Chest LAT'; the study 'Chest PA/LAT'."""
        studies, events = _studies(
            [
                {
                    "study_id": 1,
                    "device": "DX1",
                    "modality": "DX",
                    "study_description": "XR CHEST 2 VIEWS",
                    "image_view": "PA",
                },
                {
                    "study_id": 1,
                    "device": "DX1",
                    "modality": "DX",
                    "study_description": "XR CHEST 2 VIEWS",
                    "image_view": "LL",
                },
            ]
        )
        rules = load_exam_rules()
        assert assign_event_exams(events, rules).tolist() == ["Chest PA", "Chest LAT"]
        assert assign_study_exams(studies, events, rules).loc[0, "standard_exam"] == "Chest PA/LAT"

    def test_rule_exam_names_exist_in_drl_tables(self) -> None:
        """Every default exam name is a DRL table exam, except the listed combinations."""
        rule_exams = {rule.exam for rule in load_exam_rules().rules}
        drl_exams = set(load_drls()["standard_exam"])
        assert rule_exams - drl_exams == EXAMS_WITHOUT_DRL

    def test_summary_counts_mapped_and_unmapped(self) -> None:
        """summarise_mapping counts studies per exam and unmapped descriptions."""
        rows = [
            {"study_id": i, "device": "R1", "modality": "CT", "study_description": "CT HEAD"}
            for i in range(3)
        ] + [{"study_id": 9, "device": "R1", "modality": "RF", "study_description": "ERCP"}]
        studies, events = _studies(rows)
        mappings, unmapped = summarise_mapping(
            studies, assign_study_exams(studies, events, load_exam_rules())
        )
        assert mappings.to_dict("records") == [{"standard_exam": "CT Head", "n_studies": 3}]
        assert unmapped.to_dict("records") == [
            {"modality": "RF", "study_description": "ERCP", "n_studies": 1}
        ]


class TestSiteRules:
    """A site rules file replaces, or with extend_defaults extends, the defaults."""

    SITE = """
[[rule]]
name = "site-ercp"
exam = "ERCP"
modality = "RF"
[rule.any]
study_description = 'ercp'
"""

    def test_site_file_replaces_defaults(self, tmp_path: Path) -> None:
        """Without extend_defaults only the site rules apply."""
        path = tmp_path / "rules.toml"
        path.write_text(self.SITE)
        rules = load_exam_rules(path)
        assert [r.name for r in rules.rules] == ["site-ercp"]

    def test_extend_defaults_puts_site_rules_first(self, tmp_path: Path) -> None:
        """With extend_defaults = true the site rules come before the defaults."""
        path = tmp_path / "rules.toml"
        path.write_text("extend_defaults = true\n" + self.SITE)
        rules = load_exam_rules(path)
        assert rules.rules[0].name == "site-ercp"
        assert len(rules.rules) > 10
        studies, events = _studies(
            [{"study_id": 1, "device": "R1", "modality": "RF", "study_description": "ERCP"}]
        )
        assert assign_study_exams(studies, events, rules).loc[0, "standard_exam"] == "ERCP"

    def test_bad_pattern_raises(self, tmp_path: Path) -> None:
        """An invalid regular expression is refused naming the rule."""
        path = tmp_path / "rules.toml"
        path.write_text('[[rule]]\nname = "bad"\nexam = "X"\n[rule.any]\ntext = "("\n')
        with pytest.raises(ConfigurationError, match="Unable to read the exam rule 'bad'"):
            load_exam_rules(path)

    def test_unknown_field_raises(self, tmp_path: Path) -> None:
        """A rule testing an unknown field is refused."""
        path = tmp_path / "rules.toml"
        path.write_text('[[rule]]\nname = "bad"\nexam = "X"\n[rule.any]\nbody_part = "x"\n')
        with pytest.raises(ConfigurationError, match="unknown field"):
            load_exam_rules(path)

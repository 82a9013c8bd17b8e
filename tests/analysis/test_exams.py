"""Tests of standard-exam rules (kerma.analysis.exams)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kerma.analysis.exams import (
    assign_event_exams,
    assign_study_exams,
    load_exam_rules,
    split_indication_exam,
    summarise_mapping,
)
from kerma.analysis.reference import drl_exam_candidates, load_drls, select_drls
from kerma.errors import ConfigurationError
from tests.analysis.conftest import make_events

#: Default-rule exams that no shipped DRL table names (study-level combinations and
#: procedures without a DRL).
# "Chest PA/LAT" (CZ 307/2002 tabulka 6) and "Barium swallow" (CZ 422/2016) have CZ DRLs.
EXAMS_WITHOUT_DRL = {"Lumbar spine AP/LAT"}


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
            # KUB is a renal-colic exam: EUCLID 'Colic/abdominal pain' (UK KUB as fallback)
            ("CT", "CT KUB", None, "CT Abdomen-Pelvis (Colic/abdominal pain)"),
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
        drls = load_drls()
        drl_exams = set(drls["standard_exam"]) | set(drls["indication_exam"].dropna())
        assert rule_exams - drl_exams == EXAMS_WITHOUT_DRL

    def test_every_eu_indication_has_a_rule(self) -> None:
        """Each EU EUCLID indication row is the exam of a default rule."""
        eu = select_drls(load_drls(), "EU")
        eu_indications = set(eu["indication_exam"].dropna()) - {""}
        assert eu_indications == {
            "CT Head (Stroke)",
            "CT Paranasal sinuses (Chronic sinusitis)",
            "CT Cervical spine (Trauma)",
            "CT Chest (Lung cancer)",
            "CT Abdomen-Pelvis (Colic/abdominal pain)",
            "CT Abdomen-Pelvis (Appendicitis)",
        }
        assert eu_indications <= {rule.exam for rule in load_exam_rules().rules}

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


class TestClinicalIndicationRules:
    """EUCLID indications in the description give indication exams; others stay generic."""

    @pytest.mark.parametrize(
        ("description", "protocol", "expected"),
        [
            ("CT HEAD STROKE", "Routine Head", "CT Head (Stroke)"),
            ("CT Schädel Schlaganfall", None, "CT Head (Stroke)"),
            ("TDM cérébrale AVC", None, "CT Head (Stroke)"),
            ("TC cranio ictus", None, "CT Head (Stroke)"),
            ("CT head stroke perfusion", None, "CT Head"),  # perfusion is another exam
            ("CT HEAD", "Routine Head", "CT Head"),
            ("CTPA", "CTPA", "CT pulmonary angiography"),
            ("CT Thorax Lungenembolie", None, "CT pulmonary angiography"),
            ("Angioscanner embolie pulmonaire", None, "CT pulmonary angiography"),
            ("CT ABDOMEN APPENDICITIS", "Abdomen Pelvis", "CT Abdomen-Pelvis (Appendicitis)"),
            ("CT Abdomen V.a. Appendizitis", None, "CT Abdomen-Pelvis (Appendicitis)"),
            (
                "CT abdomen pelvis pain ?appendicitis",
                None,
                "CT Abdomen-Pelvis (Appendicitis)",
            ),
            ("CT KUB LOW DOSE STONE", None, "CT Abdomen-Pelvis (Colic/abdominal pain)"),
            ("CT renal colic", None, "CT Abdomen-Pelvis (Colic/abdominal pain)"),
            ("CT Nierenstein", None, "CT Abdomen-Pelvis (Colic/abdominal pain)"),
            ("CT ABDOMEN PELVIS", "Abdomen Pelvis", "CT Abdomen-Pelvis"),
            ("CT LIVER TRIPHASIC", None, "CT Liver multiphase"),
            ("CT abdomen HCC", None, "CT Liver multiphase"),
            ("CT CHEST LUNG CANCER", "Thorax Routine", "CT Chest (Lung cancer)"),
            ("CT THORAX STAGING", None, "CT Chest (Lung cancer)"),
            ("CT chest low dose lung cancer screening", None, "CT Chest"),
            ("CT CHEST", "Thorax Routine", "CT Chest"),
            ("CT SINUS CHRONIC SINUSITIS", None, "CT Paranasal sinuses (Chronic sinusitis)"),
            ("CT SINUS", None, "CT Paranasal sinuses"),
            ("CT C-SPINE TRAUMA", None, "CT Cervical spine (Trauma)"),
            ("CT HWS Fraktur", None, "CT Cervical spine (Trauma)"),
            ("CT polytrauma c-spine chest abdomen pelvis", None, "CT Chest-Abdomen-Pelvis"),
            ("CT CERVICAL SPINE", None, "CT Cervical spine"),
            ("CT CALCIUM SCORE", None, "CT Coronary calcium scoring"),
            ("CT CORONARY ANGIOGRAM", None, "CT coronary angiography"),
        ],
    )
    def test_indication_maps_to_indication_exam(
        self, description: str, protocol: str | None, expected: str
    ) -> None:
        """The description (and protocol) maps to the indication exam, or stays generic."""
        studies, events = _studies(
            [
                {
                    "study_id": 1,
                    "device": "R1",
                    "modality": "CT",
                    "study_description": description,
                    "acquisition_protocol": protocol,
                }
            ]
        )
        mapped = assign_study_exams(studies, events, load_exam_rules())
        assert mapped.loc[0, "standard_exam"] == expected

    def test_requested_procedure_reveals_indication(self) -> None:
        """An indication in the requested procedure, not the description, is used."""
        studies, events = _studies(
            [
                {
                    "study_id": 1,
                    "device": "R1",
                    "modality": "CT",
                    "study_description": "CT ABDOMEN",
                    "requested_procedure_description": "Appendicitis?",
                }
            ]
        )
        mapped = assign_study_exams(studies, events, load_exam_rules())
        assert mapped.loc[0, "standard_exam"] == "CT Abdomen-Pelvis (Appendicitis)"
        assert mapped.loc[0, "standard_exam_rule"] == "ct-abdomen-pelvis-appendicitis"

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("CT Head (Stroke)", ("CT Head", "Stroke")),
            (
                "CT Abdomen-Pelvis (Colic/abdominal pain)",
                ("CT Abdomen-Pelvis", "Colic/abdominal pain"),
            ),
            ("CT Head", ("CT Head", "")),
            (
                "Transarterial chemoembolisation (TACE)",
                ("Transarterial chemoembolisation (TACE)", ""),
            ),
        ],
        ids=["stroke", "colic", "generic", "fluoro-parentheses"],
    )
    def test_split_indication_exam(self, name: str, expected: tuple[str, str]) -> None:
        """Only CT names 'CT <exam> (<indication>)' carry an indication."""
        assert split_indication_exam(name) == expected

    @pytest.mark.parametrize(
        ("exam", "expected"),
        [
            ("CT Head", ["CT Head"]),
            ("CT Head (Stroke)", ["CT Head (Stroke)", "CT Head"]),
            (
                "CT Abdomen-Pelvis (Colic/abdominal pain)",
                ["CT Abdomen-Pelvis (Colic/abdominal pain)", "CT KUB", "CT Abdomen-Pelvis"],
            ),
        ],
        ids=["generic-never-indication", "indication-then-anatomical", "colic-then-kub"],
    )
    def test_drl_exam_candidates(self, exam: str, expected: list[str]) -> None:
        """A generic exam meets only its own DRL rows; an indication exam falls back."""
        assert drl_exam_candidates(exam) == expected


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

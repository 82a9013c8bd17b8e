"""The default standard-exam rules map study descriptions written in European
languages to the DRL tables' exam names (#16)."""

from __future__ import annotations

import pytest

from kerma.analysis.exams import load_exam_rules, match_exam

RULES = load_exam_rules()


@pytest.mark.parametrize(
    ("modality", "description", "exam"),
    [
        # German
        ("CT", "CT Schädel nativ", "CT Head"),
        ("CT", "CT THORAX MIT KM", "CT Chest"),
        ("CT", "CT Abdomen Becken", "CT Abdomen-Pelvis"),
        # Italian (TC = tomografia computerizzata)
        ("CT", "TC TORACE", "CT Chest"),
        ("CT", "TC ENCEFALO", "CT Head"),
        ("CT", "TC ADDOME", "CT Abdomen"),
        ("CT", "TC TORACE ADDOME", "CT Chest-Abdomen"),
        # Spanish (TAC)
        ("CT", "TAC CRANEO", "CT Head"),
        ("CT", "TAC TORAX ABDOMEN PELVIS", "CT Chest-Abdomen-Pelvis"),
        ("CT", "ANGIO-TAC EMBOLIA PULMONAR", "CT pulmonary angiography"),
        # Dutch
        ("CT", "CT HERSENEN", "CT Head"),
        ("CT", "CT THORAX BUIK", "CT Chest-Abdomen"),
        ("CT", "CT longembolie", "CT pulmonary angiography"),
        # French (TDM = tomodensitométrie)
        ("CT", "TDM THORAX", "CT Chest"),
        ("CT", "TDM ENCEPHALE AVC", "CT Head (Stroke)"),
        ("CT", "Coroscanner coronaire", "CT coronary angiography"),
        # Polish (TK = tomografia komputerowa)
        ("CT", "TK GŁOWY", "CT Head"),
        ("CT", "TK KLATKI PIERSIOWEJ", "CT Chest"),
        # Swedish (DT = datortomografi)
        ("CT", "DT BUKEN", "CT Abdomen"),
        ("CT", "DT HJÄRNA", "CT Head"),
        ("CT", "DT bihålor", "CT Paranasal sinuses"),
        # Radiography
        ("DX", "RTG KLATKI PIERSIOWEJ", "Chest PA"),
        ("DX", "Lungröntgen", "Chest PA"),
        ("CR", "RX BACINO", "Pelvis AP"),
        ("DX", "Rx tórax", "Chest PA"),
        ("DX", "RTG KRĘGOSŁUPA LĘDŹWIOWEGO", "Lumbar spine AP"),
        ("DX", "Rachis dorsal", "Thoracic spine AP"),
        ("DX", "Röntgen Hüfte", "Hip"),
        ("DX", "Heup", "Hip"),
        ("DX", "NSO yhden suunnan", "Paranasal sinuses"),
        # Dental
        ("IO", "Zahnfilm 36", "Dental intraoral"),
        ("PX", "Pantomogram", "Orthopantomography"),
    ],
)
def test_description_maps_to_drl_exam(modality: str, description: str, exam: str) -> None:
    """A realistic study description in the country's language finds its DRL exam."""
    found, _rule = match_exam(
        {"modality": modality, "study_description": description}, RULES, level="study"
    )
    assert found == exam


@pytest.mark.parametrize(
    ("modality", "description"),
    [
        ("CT", "TC COLLO"),  # neck: not a chest or head exam
        ("DX", "RTG KRĘGOSŁUPA PIERSIOWEGO"),  # thoracic spine, not chest
    ],
)
def test_similar_words_do_not_cross_exams(modality: str, description: str) -> None:
    """Words shared by two regions (Polish 'piersiow-') go to the right exam."""
    found, _rule = match_exam(
        {"modality": modality, "study_description": description}, RULES, level="study"
    )
    assert found in {"CT Neck", "Thoracic spine AP"}

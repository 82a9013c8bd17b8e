"""DRL tables read in git mirrors of official legal texts (#16, law-mirror pass).

Every printed value asserted here was copied by hand from the source cited beside it
(a key of ``kerma/reference/SOURCES.md``), in the unit the source prints, and is checked
against the shipped CSV and the harmonised value in Kerma's canonical unit.
"""

from __future__ import annotations

import pandas as pd
import pytest

from kerma.analysis.drl import _in_force
from kerma.analysis.exams import load_exam_rules, match_exam
from kerma.analysis.reference import drl_coverage, load_drls, select_drls
from tests.analysis.conftest import csv_row

RULES = load_exam_rules()


class TestSpainRealDecreto1976of1999:
    """Real Decreto 1976/1999 (BOE-A-1999-24717), Anexo I, "Valores de referencia en
    grafía para adultos" (dosis superficie a la entrada, mGy) and the intraoral sentence
    (ES-RD-1976-1999: the consolidated BOE text mirrored by Ley Abierta,
    ``leyabierta/leyes`` ``es/BOE-A-1999-24717.md``, commit
    a4b4b28cf023ec9d56517215a497b4dd802b92df)."""

    @pytest.mark.parametrize(
        ("exam", "projection", "printed"),
        [
            # First row of the table: "Abdomen AP | 10".
            ("Abdomen", "AP", "10"),
            # Middle: "Columna lumbo-sacra L | 40".
            ("Lumbar spine", "LSJ (lumbosacral junction)", "40"),
            # Last row: "Tórax PA | 0.3".
            ("Chest", "PA", "0.3"),
            # After the table: "se tomará 7 mGy como valor de referencia ... periapicales".
            ("Dental intraoral", "", "7"),
        ],
    )
    def test_printed_values(self, exam: str, projection: str, printed: str) -> None:
        """Entrance surface dose per radiograph as printed (mGy), stored as esd_mGy."""
        row = csv_row("drl_radiography", region="ES", exam=exam, projection=projection)
        assert (row["esd_mGy"], row["unit_as_published"], row["verification"]) == (
            printed,
            "mGy",
            "primary-reproduction",
        )

    def test_harmonised_exams_and_units(self) -> None:
        """The ES set answers Chest LAT with 1.5 mGy and Skull LAT with 3 mGy (ESD)."""
        drls = select_drls(load_drls(), "ES")
        values = drls.set_index(["standard_exam", "quantity"])["drl_value"]
        assert values[("Chest LAT", "esd_mgy")] == pytest.approx(1.5)
        assert values[("Skull LAT", "esd_mgy")] == pytest.approx(3.0)
        assert values[("Lumbar spine AP", "esd_mgy")] == pytest.approx(10.0)
        assert len(drls) == 10

    def test_in_force_from_the_day_after_publication(self) -> None:
        """Published 29 Dec 1999, in force the next day (Disposición final segunda): a
        study of 1999-12-29 has no Spanish DRL in force, one of 1999-12-30 has."""
        drls = select_drls(load_drls(), "ES")
        chest = drls[drls["standard_exam"] == "Chest PA"].iloc[0]
        assert chest["valid_from"] == pd.Timestamp("1999-12-30")
        assert pd.isna(chest["valid_to"])
        samples = pd.DataFrame(
            {"study_date": pd.to_datetime(["1999-12-29", "1999-12-30", "2026-11-30"])}
        )
        assert _in_force(samples, chest).tolist() == [False, True, True]

    def test_coverage(self) -> None:
        """ES: radiography only, one edition, every row a reproduction of the text."""
        row = drl_coverage().set_index("drl_region").loc["ES"]
        assert row["modalities"] == "DX"
        assert row["n_rows"] == 10
        assert row["share_primary-reproduction"] == pytest.approx(1.0)
        assert row["editions"] == "1999 (from 1999-12-30)"


@pytest.mark.parametrize(
    ("modality", "description", "exam"),
    [
        ("DX", "RX TÓRAX PA", "Chest PA"),
        ("DX", "Rx tórax PA y lateral", "Chest PA/LAT"),
        ("DX", "RX TORAX 2 PROYECCIONES", "Chest PA/LAT"),
        ("DX", "RX CHARNELA LUMBOSACRA", "Lumbar spine LSJ"),
        ("DX", "RX COLUMNA LUMBOSACRA", "Lumbar spine AP"),
        ("CR", "Radiografía de columna lumbar", "Lumbar spine AP"),
        ("DX", "RX CRÁNEO", "Skull AP"),
        ("DX", "RX PELVIS", "Pelvis AP"),
        ("DX", "RX ABDOMEN SIMPLE", "Abdomen AP"),
        ("IO", "RADIOGRAFÍA PERIAPICAL", "Dental intraoral"),
    ],
)
def test_spanish_descriptions_map_to_drl_exams(modality: str, description: str, exam: str) -> None:
    """Spanish study descriptions find the exams of the RD 1976/1999 table."""
    found, _rule = match_exam(
        {"modality": modality, "study_description": description}, RULES, level="study"
    )
    assert found == exam

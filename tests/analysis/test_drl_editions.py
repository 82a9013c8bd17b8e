"""National DRL tables of #16: sources, printed values, editions in force by date, coverage.

Every value asserted here was copied by hand from the source cited beside it (the
key in ``kerma/reference/SOURCES.md``), in the unit the source prints, and checked
against the shipped CSV and, where the unit differs, against the harmonised value
in Kerma's canonical unit.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kerma.analysis.drl import STATUS_ABOVE, STATUS_BELOW, STATUS_NO_EDITION, compare_with_drls
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import (
    DRL_TABLES,
    VERIFICATION_GRADES,
    drl_coverage,
    load_drls,
    read_reference_table,
    reference_path,
    select_drls,
)
from kerma.cli.main import app
from tests.analysis.conftest import csv_row, make_events

runner = CliRunner()


def _source_keys() -> set[str]:
    """Return the keys defined in the first column of SOURCES.md's key table."""
    text = reference_path("SOURCES.md").read_text()
    return set(re.findall(r"^\| ([A-Z0-9][A-Za-z0-9/.-]+) \|", text, flags=re.M))


class TestEveryRowIsTraceable:
    """Every shipped DRL row names its source, grade, units and validity."""

    @pytest.mark.parametrize("stem", sorted(DRL_TABLES))
    def test_source_keys_resolve_and_grades_are_known(self, stem: str) -> None:
        """Each ``source_ref`` and ``validity_ref`` key is defined in SOURCES.md."""
        table = read_reference_table(stem)
        keys = _source_keys()
        for column in ("source_ref", "validity_ref"):
            for cell in table[column].dropna():
                for key in str(cell).split(";"):
                    assert key in keys or key.split(" / ")[0] in keys, (stem, column, key)
        assert table["verification"].isin(VERIFICATION_GRADES).all()
        assert table["unit_as_published"].notna().all(), stem

    @pytest.mark.parametrize("stem", sorted(DRL_TABLES))
    def test_validity_periods_are_ordered(self, stem: str) -> None:
        """valid_from is never after valid_to; dated superseded rows end before today."""
        drls = load_drls()
        rows = drls[drls["drl_table"] == stem]
        both = rows.dropna(subset=["valid_from", "valid_to"])
        assert (both["valid_from"] <= both["valid_to"]).all()
        superseded = rows[rows["status"] == "superseded"].dropna(subset=["valid_to"])
        assert (superseded["valid_to"] < pd.Timestamp("2026-12-05")).all()


class TestPrintedValues:
    """Three values per new table, from different parts of it, equal the source's."""

    @pytest.mark.parametrize(
        ("where", "column", "printed"),
        [
            # DSA-NRV-2018: DSA (Norway), "Straledoser ved rontgenundersokelser -
            # nasjonale referanseverdier", gjeldende fra 26.01.2018, first table, Ny NRV
            # [Gycm2]: Cervicalcolumna 0,7; Thorax 0,45; Protesebekken 1,3.
            (
                {"region": "NO", "exam": "Cervical spine examination", "year": "2018"},
                "dap_value",
                "0.7",
            ),
            ({"region": "NO", "exam": "Chest examination", "year": "2018"}, "dap_value", "0.45"),
            ({"region": "NO", "exam": "Pelvis examination (hip prosthesis)"}, "dap_value", "1.3"),
            # same page, column "Gammel NRV": Thorax 0,5; Lumbo-sacralcolumna 8.
            (
                {"region": "NO", "exam": "Chest examination", "status": "superseded"},
                "dap_value",
                "0.5",
            ),
            (
                {"region": "NO", "exam": "Lumbosacral spine examination", "status": "superseded"},
                "dap_value",
                "8",
            ),
            # AFCN-RX-2022: AFCN/FANC "Radiologie conventionnelle", ADULTES DAP (mGy.cm2)
            # par cliche: Abdomen 1300; Colonne lombaire de profil 2500; Thorax de face (PA) 150.
            ({"region": "BE", "exam": "Abdomen"}, "dap_value", "1300"),
            ({"region": "BE", "exam": "Lumbar spine", "projection": "LAT"}, "dap_value", "2500"),
            ({"region": "BE", "exam": "Chest", "projection": "PA"}, "dap_value", "150"),
            # PL-MZ-2011: Dz.U. 2011 Nr 51 poz. 265, Zalacznik nr 2 A: czaszka AP/PA DAP 110
            # cGy x cm2; klatka piersiowa PA dawka wejsciowa 0,21 mGy; kregoslup ledzwiowy LAT 800.
            ({"region": "PL", "exam": "Skull", "projection": "AP/PA"}, "dap_value", "110"),
            (
                {"region": "PL", "exam": "Chest", "projection": "PA", "year": "2011"},
                "esak_mGy",
                "0.21",
            ),
            ({"region": "PL", "exam": "Lumbar spine", "projection": "LAT"}, "dap_value", "800"),
            # PL-MZ-2022 via OILKRAK: zal. 1 tab. 1 poz. 11 intraoral 1,5 mGy; poz. 12 15 cGy x cm2.
            ({"region": "PL", "exam": "Dental intraoral"}, "esak_mGy", "1.5"),
            ({"region": "PL", "exam": "Orthopantomography (dental panoramic)"}, "dap_value", "15"),
            # STUK-PROINFO-2017: one-projection sinus DAP 90 mGycm2.
            ({"region": "FI", "exam": "Paranasal sinuses"}, "dap_value", "90"),
            # HANZE2017: Radiography 2017;23(3):197-201, abstract: the Dutch DRLs "for chest
            # and pelvis examinations ... 12 and 300 uGy.m2" (unit as printed, uGy.m2).
            ({"region": "NL", "exam": "Chest examination"}, "dap_value", "12"),
            ({"region": "NL", "exam": "Pelvis examination"}, "dap_value", "300"),
            ({"region": "NL", "exam": "Pelvis examination"}, "dap_Gycm2", "3.0"),
        ],
    )
    def test_radiography(self, where: dict[str, str], column: str, printed: str) -> None:
        """Radiography rows keep the printed value and unit."""
        assert csv_row("drl_radiography", **where)[column] == printed

    @pytest.mark.parametrize(
        ("where", "column", "printed"),
        [
            # FANC-CT-2021: FANC "CT-scanners", VOLWASSENEN: Schedel (hersenen) CTDIvol 50,
            # DLP 800; Sinussen CTDIvol 4,5; Thorax-abdomen volledig DLP 800.
            ({"region": "BE", "exam": "Head"}, "ctdivol_mGy", "50"),
            ({"region": "BE", "exam": "Head"}, "dlp_mGycm", "800"),
            ({"region": "BE", "exam": "Paranasal sinuses"}, "ctdivol_mGy", "4.5"),
            ({"region": "BE", "exam": "Chest-Abdomen"}, "dlp_mGycm", "800"),
            # GR-IS-NORDIC-CT: "Landsvidmid a Nordurlondum" (CT abdomen): Danmork (2015)
            # 17 / 700; Svithjod (2015) 11 / 627; Island (2019) DLP 820.
            ({"region": "DK", "exam": "Abdomen"}, "dlp_mGycm", "700"),
            ({"region": "SE", "exam": "Abdomen"}, "dlp_mGycm", "627"),
            ({"region": "IS", "exam": "Abdomen"}, "dlp_mGycm", "820"),
        ],
    )
    def test_ct(self, where: dict[str, str], column: str, printed: str) -> None:
        """Adult CT rows keep the printed value (mGy, mGy·cm)."""
        assert csv_row("drl_ct_adult", **where)[column] == printed

    @pytest.mark.parametrize(
        ("where", "printed"),
        [
            # AFCN-MG-2022: "Toute vue" DRL (P95) 2,0 mGy; by thickness 32 mm 1,6; 90 mm 4,0.
            ({"region": "BE", "view": "CC and MLO", "status": "current"}, "2.0"),
            ({"region": "BE", "cbt_min_mm": "32"}, "1.6"),
            ({"region": "BE", "cbt_min_mm": "90"}, "4.0"),
            # DSA-NRV-2018, "Mammografi AGD per eksponering": Front 1,3; Skra 1,5.
            ({"region": "NO", "view": "CC"}, "1.3"),
            ({"region": "NO", "view": "MLO"}, "1.5"),
            # DUPONT2024: J Radiol Prot 2024, abstract: 75th percentile MGD "from 20-30mm to
            # 90-100mm of CBT ... increased from 0.81mGy to 2.55mGy for 2D CC acquisitions,
            # from 0.83mGy to 2.96mGy for 2D MLO acquisitions".
            ({"region": "CH", "view": "CC", "cbt_min_mm": "20"}, "0.81"),
            ({"region": "CH", "view": "CC", "cbt_min_mm": "90"}, "2.55"),
            ({"region": "CH", "view": "MLO", "cbt_min_mm": "20"}, "0.83"),
            ({"region": "CH", "view": "MLO", "cbt_max_mm": "100"}, "2.96"),
        ],
    )
    def test_mammography(self, where: dict[str, str], printed: str) -> None:
        """Mammography rows keep the printed AGD (mGy)."""
        assert csv_row("drl_mammography", **where)["agd_mGy"] == printed

    @pytest.mark.parametrize(
        ("procedure", "status", "printed"),
        [
            # DSA-NRV-2018, interventional table [Gycm2]: Pyelostomi 7; Coronar
            # angiografi Ny NRV 20 and Gammel NRV 45; TAVI 75.
            ("Percutaneous nephrostomy (one side)", "current", "7"),
            ("Coronary angiography", "current", "20"),
            ("Coronary angiography", "superseded", "45"),
            ("Transcatheter aortic valve implantation (TAVI)", "current", "75"),
        ],
    )
    def test_interventional(self, procedure: str, status: str, printed: str) -> None:
        """Norwegian interventional KAP rows keep the printed value (Gy·cm²)."""
        row = csv_row("drl_fluoro_interventional", region="NO", procedure=procedure, status=status)
        assert row["kap_value_as_published"] == printed

    def test_canonical_units_after_loading(self) -> None:
        """Published mGy·cm² and cGy·cm² become Gy·m²: BE chest PA 150 mGy·cm² =
        1.5e-5 Gy·m² (AFCN-RX-2022); PL skull AP 110 cGy·cm² = 1.1e-4 Gy·m²
        (PL-MZ-2011); NO coronary angiography 20 Gy·cm² = 2e-3 Gy·m² (DSA-NRV-2018)."""
        drls = load_drls()

        def value(region: str, exam: str, **extra: Any) -> float:
            rows = drls[(drls["drl_region"] == region) & (drls["standard_exam"] == exam)]
            for column, wanted in extra.items():
                rows = rows[rows[column] == wanted]
            return float(rows[rows["quantity"] == "dap_gym2"]["drl_value"].iloc[0])

        assert value("BE", "Chest PA") == pytest.approx(1.5e-5)
        assert value("PL", "Skull AP", drl_year=2011) == pytest.approx(1.1e-4)
        assert value("NO", "Coronary angiography", status="current") == pytest.approx(2e-3)


def _cath_rows(first_id: int, date: str, kap_gym2: float, studies: int = 20) -> list[dict]:
    """Return ``studies`` coronary angiographies on ``date`` with the same total KAP."""
    return [
        {
            "study_id": study_id,
            "device": "CATH1",
            "modality": "XA",
            "standard_exam": "Coronary angiography",
            "study_date": pd.Timestamp(date),
            "dap_gym2": kap_gym2,
        }
        for study_id in range(first_id, first_id + studies)
    ]


def _chest_rows(first_id: int, date: str, kap_gym2: float, studies: int = 20) -> list[dict]:
    """Return ``studies`` chest PA radiographs on ``date`` with the same KAP."""
    return [
        {
            "study_id": study_id,
            "device": "DX1",
            "modality": "DX",
            "standard_exam": "Chest PA",
            "image_view": "PA",
            "study_date": pd.Timestamp(date),
            "dap_gym2": kap_gym2,
        }
        for study_id in range(first_id, first_id + studies)
    ]


class TestEditionInForce:
    """A study is compared with the edition of the table in force on its study date."""

    def test_two_norwegian_editions_either_side_of_the_change(self) -> None:
        """NO coronary angiography: 45 Gy·cm² until 2018-01-25, 20 Gy·cm² from
        2018-01-26 (DSA-NRV-2018). 30 Gy·cm² is below the old and above the new DRL."""
        rows = _cath_rows(1, "2018-01-10", 30e-4) + _cath_rows(101, "2018-02-10", 30e-4)
        result = compare_with_drls(
            build_dose_samples(make_events(rows)), select_drls(load_drls(), "NO")
        )
        dap = result[result["quantity"] == "dap_gym2"]
        by_drl = dap.set_index(dap["drl_value"].mul(1e4).round().astype(int))  # Gy·cm²
        assert sorted(by_drl.index) == [20, 45]
        old, new = by_drl.loc[45], by_drl.loc[20]
        assert (old["n_studies"], old["status"], old["drl_status"]) == (
            20,
            STATUS_BELOW,
            "superseded",
        )
        assert old["drl_valid_to"] == pd.Timestamp("2018-01-25")
        assert (new["n_studies"], new["status"], new["drl_status"]) == (20, STATUS_ABOVE, "current")
        assert new["drl_valid_from"] == pd.Timestamp("2018-01-26")

    def test_change_day_belongs_to_the_new_edition(self) -> None:
        """Studies on 2018-01-25 use the old edition, on 2018-01-26 the new one."""
        rows = _cath_rows(1, "2018-01-25", 30e-4) + _cath_rows(101, "2018-01-26", 30e-4)
        result = compare_with_drls(
            build_dose_samples(make_events(rows)), select_drls(load_drls(), "NO")
        )
        dap = result[result["quantity"] == "dap_gym2"]
        counts = {
            round(v * 1e4): n for v, n in zip(dap["drl_value"], dap["n_studies"], strict=True)
        }
        assert counts == {45: 20, 20: 20}

    def test_german_chest_pa_by_date(self) -> None:
        """DE chest PA: BfS 2010 16 cGy·cm² (2010-07-28 to 2016-07-14), BfS 2022
        12 cGy·cm² (from 2023-01-11); the 2016 notice is not shipped, so a 2020 study
        has no DRL in force and is never compared with the superseded 2010 value."""
        rows = (
            _chest_rows(1, "2015-03-02", 0.14e-4)
            + _chest_rows(101, "2020-03-02", 0.14e-4)
            + _chest_rows(201, "2024-03-04", 0.14e-4)
        )
        result = compare_with_drls(
            build_dose_samples(make_events(rows)), select_drls(load_drls(), "DE")
        )
        dap = result[(result["standard_exam"] == "Chest PA") & (result["quantity"] == "dap_gym2")]
        by_status = dap.set_index("status")
        assert by_status.loc[STATUS_BELOW, "drl_value"] == pytest.approx(0.16e-4)
        assert by_status.loc[STATUS_ABOVE, "drl_value"] == pytest.approx(0.12e-4)
        missing = by_status.loc[STATUS_NO_EDITION]
        assert missing["n_studies"] == 20
        assert np.isnan(missing["drl_value"])
        # the dates are the editions' validity, said so (regression: "on these studies'
        # dates (2010-07-28 to 2016-07-14)" read as the dates of the 2020 studies)
        assert "(the set's editions of it are valid 2023-01-11 to …;" in missing["note"]
        assert "2010-07-28 to 2016-07-14" in missing["note"]

    def test_samples_without_date_use_the_open_edition(self) -> None:
        """Without a study date only the edition without an end date applies."""
        samples = build_dose_samples(make_events(_cath_rows(1, "2018-01-10", 30e-4)))
        samples = samples.drop(columns="study_date")
        result = compare_with_drls(samples, select_drls(load_drls(), "NO"))
        values = result[result["quantity"] == "dap_gym2"]["drl_value"].to_list()
        assert values == pytest.approx([20e-4])


class TestCoverage:
    """``drl_coverage`` and ``kerma drl sets --coverage``."""

    def test_norway_set(self) -> None:
        """NO: 4 modality families, 24 DRL values, 22 primary (DSA) and 2 secondary
        (the 2014 CT abdomen pair quoted by the Icelandic authority)."""
        row = drl_coverage().set_index("drl_region").loc["NO"]
        assert row["modalities"] == "CT, DX, MG, RF/XA"
        assert row["n_rows"] == 24
        assert row["share_primary"] == pytest.approx(22 / 24)
        assert row["share_secondary"] == pytest.approx(2 / 24)
        assert row["editions"].startswith("2018 (from 2018-01-26)")

    def test_belgium_and_poland(self) -> None:
        """BE is wholly primary; PL is 24 reproduced (2011) and 2 secondary (2022) values."""
        coverage = drl_coverage().set_index("drl_region")
        assert coverage.loc["BE", "share_primary"] == pytest.approx(1.0)
        assert coverage.loc["BE", "modalities"] == "CT, DX, MG"
        assert coverage.loc["PL", "n_rows"] == 26
        assert coverage.loc["PL", "share_primary-reproduction"] == pytest.approx(24 / 26)
        assert "2011 (to 2022-12-28)" in coverage.loc["PL", "editions"]  # PL-MZ-2022-ELI

    def test_switzerland_and_netherlands(self) -> None:
        """CH gains mammography (4 proposed 2024 values) beside the 2007 fluoroscopy RLs;
        NL is 2 values read in a reproduction (Radiography 2017)."""
        coverage = drl_coverage().set_index("drl_region")
        assert coverage.loc["CH", "modalities"] == "MG, RF/XA"
        assert coverage.loc["CH", "editions"].startswith("2024")
        assert coverage.loc["NL", "n_rows"] == 2
        assert coverage.loc["NL", "share_primary-reproduction"] == pytest.approx(1.0)

    def test_swiss_bands_select_by_breast_thickness(self) -> None:
        """The CH set answers 2D CC at 20-30 mm with 0.81 mGy and MLO at 90-100 mm with
        2.96 mGy (DUPONT2024 abstract), both for screening and diagnostic contexts."""
        drls = select_drls(load_drls(), "CH")
        mammo = drls[drls["standard_exam"].str.startswith("Mammography")]
        assert set(mammo["standard_exam"]) == {"Mammography screening", "Mammography diagnostic"}
        thin_cc = mammo[(mammo["view"] == "CC") & (mammo["band_min"] == 20)]
        thick_mlo = mammo[(mammo["view"] == "MLO") & (mammo["band_max"] == 100)]
        assert set(thin_cc["drl_value"]) == {0.81}
        assert set(thick_mlo["drl_value"]) == {2.96}

    def test_command_prints_grade_shares(self) -> None:
        """The Rich table shows each set with its grade shares as percentages."""
        result = runner.invoke(app, ["drl", "sets", "--coverage"], env={"COLUMNS": "220"})
        assert result.exit_code == 0, result.output
        lines = {
            line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line
        }
        assert "92%" in lines["NO"] and "8%" in lines["NO"]
        assert "100%" in lines["BE"]
        assert "92%" in lines["PL"]
        assert f"{len(drl_coverage())} sets" in result.output

    def test_command_writes_exam_lists(self, tmp_path: Any) -> None:
        """--out writes one row per set with its exams."""
        out = tmp_path / "coverage.csv"
        result = runner.invoke(app, ["drl", "sets", "--coverage", "--out", str(out)])
        assert result.exit_code == 0, result.output
        written = pd.read_csv(out, keep_default_na=False).set_index("drl_region")
        assert "CT Head" in written.loc["BE", "exams"].split("; ")
        assert written.loc["NO", "n_rows"] == 24

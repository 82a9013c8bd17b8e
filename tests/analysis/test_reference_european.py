"""European and national DRL tables added by the European pass of #16 (FR 2011, exam rules).

Every printed value asserted here was copied by hand from the source cited beside it
(a key of ``kerma/reference/SOURCES.md``), in the unit the source prints, and is
checked against the shipped CSV and, where the unit differs, against the harmonised
value in Kerma's canonical unit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerma.analysis.drl import STATUS_ABOVE, STATUS_BELOW, STATUS_NO_EDITION, compare_with_drls
from kerma.analysis.exams import load_exam_rules, match_exam
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import drl_coverage, load_drls, select_drls
from tests.analysis.conftest import csv_row, make_events

RULES = load_exam_rules()


class TestFrance2011PrintedValues:
    """Arrêté du 24 octobre 2011, Annexe 1 (FR-ARRETE-2011: the Légifrance text kept by
    Etalab, ``arrete/2012/arrete-du-24-octobre-2011-etsp1129093a/annexes/
    article-annexe-1.md``, commit 61e297a5a02ffb44f7ed9ac87ff52bfcfe7002dc)."""

    @pytest.mark.parametrize(
        ("exam", "projection", "column", "printed"),
        [
            # Tableau 1: "Thorax de face (postéro-antérieur)" De 0,3 mGy, PDS 25 cGy.cm².
            ("Chest", "PA", "dap_value", "25"),
            ("Chest", "PA", "esd_mGy", "0.3"),
            # "Rachis lombaire de profil" De 25 mGy, PDS 800 cGy.cm².
            ("Lumbar spine", "LAT", "dap_value", "800"),
            ("Lumbar spine", "LAT", "esd_mGy", "25"),
            # "Orthopantomographie" De sans objet, PDS 20 cGy.cm².
            ("Orthopantomography (dental panoramic)", "", "dap_value", "20"),
            ("Orthopantomography (dental panoramic)", "", "esd_mGy", ""),
        ],
    )
    def test_radiography_tableau_1(
        self, exam: str, projection: str, column: str, printed: str
    ) -> None:
        """Adult radiography, single projection, as printed (cGy·cm², mGy)."""
        row = csv_row("drl_radiography", region="FR", year="2011", exam=exam, projection=projection)
        assert row[column] == printed
        assert row["dap_unit_as_published"] == "cGy.cm2"

    @pytest.mark.parametrize(
        ("exam", "ctdivol", "dlp", "phantom"),
        [
            # Tableau 5: Encéphale 65 mGy / 1 050; Thorax-abdomen-pelvis 20 / 1 000;
            # Rachis lombaire 45 / 700; 16 cm phantom for the head, 32 cm otherwise.
            ("Head", "65", "1050", "16"),
            ("Chest-Abdomen-Pelvis", "20", "1000", "32"),
            ("Lumbar spine", "45", "700", "32"),
        ],
    )
    def test_ct_tableau_5(self, exam: str, ctdivol: str, dlp: str, phantom: str) -> None:
        """Adult CT, one acquisition: IDSV (CTDIvol, mGy) and PDL (DLP, mGy·cm)."""
        row = csv_row("drl_ct_adult", region="FR", year="2011", exam=exam)
        assert (row["ctdivol_mGy"], row["dlp_mGycm"], row["phantom_cm"]) == (
            ctdivol,
            dlp,
            phantom,
        )
        assert "acquisition" in row["notes"]

    def test_mammography_tableau_3(self) -> None:
        """Tableau 3 prints one digital-mammography value: DMG 1,8 mGy (45 mm
        equivalent breast); the analogue De 8 mGy is not shipped."""
        row = csv_row("drl_mammography", region="FR", year="2011")
        assert row["agd_mGy"] == "1.8"
        assert "45 mm" in row["agd_basis"]

    def test_validity_and_grade(self) -> None:
        """Every 2011 row: superseded, 2012-01-14 to 2019-06-30, reproduction grade."""
        drls = load_drls()
        fr2011 = drls[(drls["drl_region"] == "FR") & (drls["drl_year"] == 2011)]
        # DAP, ESD, CT pairs, mammography listed for screening and diagnostic
        assert len(fr2011) == 11 + 10 + 10 + 2
        assert set(fr2011["status"]) == {"superseded"}
        assert set(fr2011["verification"]) == {"primary-reproduction"}
        assert set(fr2011["valid_from"]) == {pd.Timestamp("2012-01-14")}
        assert set(fr2011["valid_to"]) == {pd.Timestamp("2019-06-30")}

    def test_canonical_units_after_loading(self) -> None:
        """25 cGy·cm² (chest PA) is 2.5e-5 Gy·m²; 800 cGy·cm² (lumbar LAT) 8e-4 Gy·m²."""
        drls = load_drls()
        fr = drls[(drls["drl_region"] == "FR") & (drls["drl_year"] == 2011)]
        kap = fr[fr["quantity"] == "dap_gym2"].set_index("standard_exam")["drl_value"]
        assert kap["Chest PA"] == pytest.approx(2.5e-5)
        assert kap["Lumbar spine LAT"] == pytest.approx(8e-4)


class TestFrance2004PrintedValues:
    """Arrêté du 12 février 2004, Annexe 1 (FR-ARRETE-2004: Etalab,
    ``arrete/2004/arrete-du-12-fevrier-2004-sany0420600a/annexes/article-annexe-1.md``,
    commit 7b3dfcd9e6721c6acc4888446c3dad7b28d0b576)."""

    @pytest.mark.parametrize(
        ("exam", "projection", "printed"),
        # Tableau 1: "Thorax de profil 1,5"; "Rachis lombaire de profil 30"; "Crâne profil 3".
        [("Chest", "LAT", "1.5"), ("Lumbar spine", "LAT", "30"), ("Skull", "LAT", "3")],
    )
    def test_radiography_tableau_1(self, exam: str, projection: str, printed: str) -> None:
        """De (mGy, single exposure) as printed."""
        row = csv_row("drl_radiography", region="FR", year="2004", exam=exam, projection=projection)
        assert row["esd_mGy"] == printed

    @pytest.mark.parametrize(
        ("exam", "printed"),
        # Tableau 3 PDL: "Encéphale 1 050"; "Thorax 500"; "Pelvis 450" (mGy.cm).
        [("Head", "1050"), ("Chest", "500"), ("Pelvis", "450")],
    )
    def test_ct_tableau_3(self, exam: str, printed: str) -> None:
        """PDL per acquisition; the IDSP (CTDIw) column is not shipped."""
        row = csv_row("drl_ct_adult", region="FR", year="2004", exam=exam)
        assert (row["dlp_mGycm"], row["ctdivol_mGy"]) == (printed, "")


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


def _ct_head_rows(first_id: int, date: str, ctdivol_mgy: float, studies: int = 20) -> list[dict]:
    """Return ``studies`` single-acquisition CT heads on ``date``."""
    return [
        {
            "study_id": study_id,
            "device": "CT1",
            "modality": "CT",
            "standard_exam": "CT Head",
            "study_date": pd.Timestamp(date),
            "ct_acquisition_type": "Spiral Acquisition",
            "ctdivol_mgy": ctdivol_mgy,
            "dlp_mgycm": ctdivol_mgy * 15,
        }
        for study_id in range(first_id, first_id + studies)
    ]


class TestFrenchEditions:
    """A French study is compared with the table in force on its date."""

    def test_chest_pa_either_side_of_1_july_2019(self) -> None:
        """Chest PA at 0.22 Gy·cm²: below the 2011 level (25 cGy·cm² = 0.25 Gy·cm²) in
        2015, above the 2019 level (200 mGy·cm² = 0.2 Gy·cm², FR2019) in 2020; a 2010
        study predates the 2011 arrêté and the 2004 one sets no KAP level: no KAP
        DRL in force."""
        rows = (
            _chest_rows(1, "2010-06-01", 0.22e-4)
            + _chest_rows(101, "2015-06-01", 0.22e-4)
            + _chest_rows(201, "2020-06-01", 0.22e-4)
        )
        result = compare_with_drls(
            build_dose_samples(make_events(rows)), select_drls(load_drls(), "FR")
        )
        dap = result[(result["standard_exam"] == "Chest PA") & (result["quantity"] == "dap_gym2")]
        by_status = dap.set_index("status")
        assert by_status.loc[STATUS_BELOW, "drl_value"] == pytest.approx(0.25e-4)
        assert by_status.loc[STATUS_BELOW, "drl_valid_to"] == pd.Timestamp("2019-06-30")
        assert by_status.loc[STATUS_ABOVE, "drl_value"] == pytest.approx(0.2e-4)
        missing = by_status.loc[STATUS_NO_EDITION]
        assert missing["n_studies"] == 20
        assert np.isnan(missing["drl_value"])

    def test_ct_head_2015_uses_2011_and_2021_has_none(self) -> None:
        """CT head CTDIvol 70 mGy in 2015 is above the 2011 level (65 mGy); the 2019
        CT table (Annexe 3) is not shipped, so a 2021 study gets no DRL in force."""
        rows = _ct_head_rows(1, "2015-06-01", 70.0) + _ct_head_rows(101, "2021-06-01", 70.0)
        result = compare_with_drls(
            build_dose_samples(make_events(rows)), select_drls(load_drls(), "FR")
        )
        head = result[result["standard_exam"] == "CT Head"]
        above = head[head["status"] == STATUS_ABOVE].iloc[0]
        assert (above["quantity"], above["drl_value"], above["n_studies"]) == (
            "ctdivol_mgy",
            65.0,
            20,
        )
        missing = head[head["status"] == STATUS_NO_EDITION].iloc[0]
        assert missing["n_studies"] == 20
        assert "2012-01-14 to 2019-06-30" in missing["note"]
        assert above["drl_status"] == "superseded"


class TestCoverage:
    """``kerma drl sets --coverage`` counts the French editions."""

    def test_france(self) -> None:
        """FR: CT, DX and MG; 11 FR2019 values (primary), 33 FR 2011 values
        (reproduction: 21 radiography, 10 CT, the mammography level counted for
        screening and diagnostic) and 12 FR 2004 values (reproduction)."""
        row = drl_coverage().set_index("drl_region").loc["FR"]
        assert row["modalities"] == "CT, DX, MG"
        assert row["n_rows"] == 11 + 33 + 12  # + FR-ARRETE-2004: 8 ESD and 4 DLP values
        assert row["share_primary-reproduction"] == pytest.approx(45 / 56)
        assert "2011 (from 2012-01-14, to 2019-06-30)" in row["editions"]

    def test_czechia(self) -> None:
        """CZ: 4 modality families; 79 values read in the official text's reproduction
        (422/2016: 24 radiography + 2 dental + 7 fluoroscopy + 12 CT + 14 mammography
        listed for screening and diagnostic; 307/2002: 13 + 4 radiography, 3 fluoroscopy)."""
        row = drl_coverage().set_index("drl_region").loc["CZ"]
        assert row["modalities"] == "CT, DX, MG, RF/XA"
        assert row["n_rows"] == 24 + 2 + 7 + 12 + 14 + 13 + 4 + 3
        assert row["share_primary-reproduction"] == pytest.approx(1.0)
        assert (
            row["editions"]
            == "2016 (from 2017-01-01, to 2026-01-31); 2002 (from 2012-12-01, to 2016-12-31)"
        )


class TestCzechPrintedValues:
    """Vyhláška č. 422/2016 Sb., příloha č. 22 (CZ-VYHL-422-2016: the e-Sbírka text in
    legalize-dev/legalize-cz, ``cz/SB-2016-422.md``, commit
    c1526945f8cf63bd2ab70a7c610621b1e6ea6b7a) and vyhláška č. 307/2002 Sb., příloha č. 9,
    version from 2012-12-01 (CZ-VYHL-307-2002, ``cz/SB-2002-307.md``, commit
    6753b13573152426e4bed07ad61a4be3f34bdcb9)."""

    @pytest.mark.parametrize(
        ("where", "column", "printed"),
        [
            # 422/2016 skiagrafie: "Lebka, přehledné snímky PA | 700 | 2,8";
            # "Hrudník PA | 220 | 0,3"; "Bederní páteř LAT | 3 100 | 12,0".
            ({"exam": "Skull", "projection": "PA", "year": "2016"}, "dap_value", "700"),
            ({"exam": "Skull", "projection": "PA", "year": "2016"}, "esd_mGy", "2.8"),
            ({"exam": "Chest", "projection": "PA", "year": "2016"}, "dap_value", "220"),
            ({"exam": "Lumbar spine", "projection": "LAT", "year": "2016"}, "dap_value", "3100"),
            ({"exam": "Lumbar spine", "projection": "LAT", "year": "2016"}, "esd_mGy", "12.0"),
            # 422/2016 zubní: "Intraorální snímek horního moláru | 1,2 | -";
            # "Jednoduchý panoramatický snímek čelisti | - | 110".
            ({"exam": "Dental intraoral", "year": "2016"}, "esak_mGy", "1.2"),
            ({"exam": "Orthopantomography (dental panoramic)", "year": "2016"}, "dap_value", "110"),
            # 307/2002 tabulka č. 1: "Bederní páteř | LSJ | 40"; "Hrudník | PA | 0,4";
            # "Lebka | LAT | 3"; tabulka č. 6: "Břicho | AP | 8" Gy.cm2.
            (
                {"exam": "Lumbar spine", "projection": "LSJ (lumbosacral junction)"},
                "esd_mGy",
                "40",
            ),
            ({"exam": "Chest", "projection": "PA", "year": "2002"}, "esd_mGy", "0.4"),
            ({"exam": "Skull", "projection": "LAT", "year": "2002"}, "esd_mGy", "3"),
            (
                {"exam": "Abdomen", "projection": "AP", "year": "2002", "esd_mGy": ""},
                "dap_value",
                "8",
            ),
        ],
    )
    def test_radiography(self, where: dict[str, str], column: str, printed: str) -> None:
        """Radiography and dental rows keep the printed value (mGy·cm², mGy, Gy·cm²)."""
        assert csv_row("drl_radiography", region="CZ", **where)[column] == printed

    @pytest.mark.parametrize(
        ("procedure", "year", "printed"),
        [
            # 422/2016: "Jícen | 15"; "Tlusté střevo | 32"; "Koronarografie | 49";
            # "PCI/PTCA | 91" (Gy x cm2 per examination); 307/2002 tab. 6: "Irigoskopie | 60".
            ("Barium swallow", "2016", "15"),
            ("Barium enema", "2016", "32"),
            ("Coronary angiography", "2016", "49"),
            ("Percutaneous coronary intervention (PCI)", "2016", "91"),
            ("Barium enema", "2002", "60"),
        ],
    )
    def test_fluoroscopy(self, procedure: str, year: str, printed: str) -> None:
        """KAP per examination in Gy·cm² as printed."""
        row = csv_row("drl_fluoro_interventional", region="CZ", procedure=procedure, year=year)
        assert row["kap_value_as_published"] == printed

    @pytest.mark.parametrize(
        ("exam", "ctdivol", "dlp"),
        [
            # 422/2016 CT: "Hlava | 65 | 1 100"; "Hrudník | 15 | 500"; "Pánev | 25 | 860".
            ("Head", "65", "1100"),
            ("Chest", "15", "500"),
            ("Pelvis", "25", "860"),
        ],
    )
    def test_ct(self, exam: str, ctdivol: str, dlp: str) -> None:
        """CVOL (mGy) and PKL per examination (mGy·cm)."""
        row = csv_row("drl_ct_adult", region="CZ", exam=exam)
        assert (row["ctdivol_mGy"], row["dlp_mGycm"]) == (ctdivol, dlp)

    @pytest.mark.parametrize(
        ("cbt_min", "cbt_max", "printed"),
        # 422/2016 mamografie: "19 - 23 | 1,1"; "51 - 55 | 1,8"; "85 - 95 | 3,0".
        [("19", "23", "1.1"), ("51", "55", "1.8"), ("85", "95", "3.0")],
    )
    def test_mammography(self, cbt_min: str, cbt_max: str, printed: str) -> None:
        """DG for the CC projection by compressed breast thickness band."""
        row = csv_row("drl_mammography", region="CZ", cbt_min_mm=cbt_min, cbt_max_mm=cbt_max)
        assert (row["agd_mGy"], row["view"]) == (printed, "CC")


class TestIcelandProposedIndicationDrls:
    """IS-PHYSMED-2023 abstract ("CT doses based on clinical indications: new national
    DRL's in Iceland"): "Brain ischemia (1060 mGycm), Interstitial lung disease (310
    mGycm) and Appendicitis (690 mGycm)"."""

    @pytest.mark.parametrize(
        ("exam", "indication", "printed"),
        [
            ("Head", "Brain ischemia", "1060"),
            ("Chest HRCT", "Interstitial lung disease", "310"),
            ("Abdomen-Pelvis", "Appendicitis", "690"),
        ],
    )
    def test_printed_values(self, exam: str, indication: str, printed: str) -> None:
        """Total DLP per examination (mGy·cm), status proposed."""
        row = csv_row("drl_ct_adult", region="IS", exam=exam, clinical_indication=indication)
        assert (row["dlp_mGycm"], row["status"]) == (printed, "proposed")

    def test_brain_ischemia_is_the_stroke_indication(self) -> None:
        """The IS set answers 'CT Head (Stroke)' with the brain-ischemia DLP."""
        drls = select_drls(load_drls(), "IS")
        stroke = drls[drls["indication_exam"] == "CT Head (Stroke)"]
        assert stroke["drl_value"].tolist() == [1060.0]


def _lumbar_ap_rows(first_id: int, date: str, kap_gym2: float, studies: int = 20) -> list[dict]:
    """Return ``studies`` lumbar spine AP radiographs on ``date`` with the same KAP."""
    return [
        {
            "study_id": study_id,
            "device": "DX1",
            "modality": "DX",
            "standard_exam": "Lumbar spine AP",
            "image_view": "AP",
            "study_date": pd.Timestamp(date),
            "dap_gym2": kap_gym2,
        }
        for study_id in range(first_id, first_id + studies)
    ]


class TestCzechEditions:
    """Czech studies use 307/2002 to 2016, 422/2016 from 2017 to January 2026, none after."""

    def test_lumbar_spine_ap_by_date(self) -> None:
        """2.0 Gy·cm²: below 307/2002 (10 Gy·cm²) in 2015, above 422/2016 (1 700
        mGy·cm² = 1.7 Gy·cm²) in 2020, no DRL in force in March 2026 (annex repealed
        by 13/2026 Sb. from 2026-02-01)."""
        rows = (
            _lumbar_ap_rows(1, "2015-06-01", 2.0e-4)
            + _lumbar_ap_rows(101, "2020-06-01", 2.0e-4)
            + _lumbar_ap_rows(201, "2026-03-02", 2.0e-4)
        )
        result = compare_with_drls(
            build_dose_samples(make_events(rows)), select_drls(load_drls(), "CZ")
        )
        dap = result[
            (result["standard_exam"] == "Lumbar spine AP") & (result["quantity"] == "dap_gym2")
        ]
        by_status = dap.set_index("status")
        assert by_status.loc[STATUS_BELOW, "drl_value"] == pytest.approx(10e-4)
        assert by_status.loc[STATUS_ABOVE, "drl_value"] == pytest.approx(1.7e-4)
        assert by_status.loc[STATUS_ABOVE, "drl_valid_to"] == pd.Timestamp("2026-01-31")
        assert by_status.loc[STATUS_NO_EDITION, "n_studies"] == 20

    def test_mammography_bands(self) -> None:
        """The CZ set answers CC at 43-47 mm with 1.6 mGy; MLO has no Czech value."""
        drls = select_drls(load_drls(), "CZ")
        mammo = drls[drls["standard_exam"] == "Mammography screening"]
        assert set(mammo["view"]) == {"CC"}
        band = mammo[(mammo["band_min"] == 43) & (mammo["band_max"] == 47)]
        assert band["drl_value"].tolist() == [1.6]

    def test_skull_pa_is_compared_as_skull_ap(self) -> None:
        """422/2016 prints the frontal skull view as PA; it answers 'Skull AP'."""
        drls = load_drls()
        skull = drls[
            (drls["drl_region"] == "CZ")
            & (drls["drl_year"] == 2016)
            & (drls["standard_exam"] == "Skull AP")
            & (drls["quantity"] == "dap_gym2")
        ]
        assert skull["drl_value"].tolist() == pytest.approx([7e-5])
        assert "compared as Skull AP" in skull["notes"].item()


@pytest.mark.parametrize(
    ("modality", "description", "exam"),
    [
        # French
        ("CT", "TDM ENCEPHALE SANS INJECTION", "CT Head"),
        ("CT", "TDM TAP", "CT Chest-Abdomen-Pelvis"),
        ("DX", "ASP", "Abdomen AP"),
        ("DX", "BASSIN DE FACE", "Pelvis AP"),
        # Portuguese
        ("CT", "TC CRÂNIO", "CT Head"),
        ("DX", "RX COLUNA LOMBAR", "Lumbar spine AP"),
        # Czech
        ("CT", "CT mozku nativně", "CT Head"),
        ("CT", "CT hrudníku, břicha a pánve", "CT Chest-Abdomen-Pelvis"),
        ("CT", "CT břicha", "CT Abdomen"),
        ("DX", "RTG hrudníku PA", "Chest PA"),
        ("DX", "RTG hrudní páteře", "Thoracic spine AP"),
        ("DX", "RTG bederní páteře", "Lumbar spine AP"),
        ("DX", "RTG pánve", "Pelvis AP"),
        ("DX", "RTG lebky", "Skull AP"),
        ("RF", "Polykací akt - jícen", "Barium swallow"),
        ("RF", "Irigografie", "Barium enema"),
        # Finnish
        ("CT", "Pään TT", "CT Head"),
        ("CT", "Keuhkojen TT", "CT Chest"),
        ("CT", "Vatsan ja lantion TT", "CT Abdomen-Pelvis"),
        ("DX", "Keuhkokuva PA", "Chest PA"),
        ("DX", "Lanneranka", "Lumbar spine AP"),
        ("DX", "Kaularanka", "Cervical spine"),
        ("DX", "Lantio", "Pelvis AP"),
    ],
)
def test_descriptions_map_to_drl_exams(modality: str, description: str, exam: str) -> None:
    """Study descriptions in French, Portuguese, Czech and Finnish find their DRL exam."""
    found, _rule = match_exam(
        {"modality": modality, "study_description": description}, RULES, level="study"
    )
    assert found == exam

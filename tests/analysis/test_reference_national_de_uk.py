"""German, UK and Swiss DRL tables of #16: printed values, editions in force, exam rules.

Every value asserted here was read again on 2026-12-05 in the stored copy of the source
named beside it (key in ``kerma/reference/SOURCES.md``), in the unit the source prints,
and compared with the shipped CSV row and, where the unit differs, with the harmonised
value in Kerma's canonical unit (KAP in Gy·m²).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from kerma.analysis.drl import STATUS_ABOVE, STATUS_BELOW, STATUS_NO_EDITION, compare_with_drls
from kerma.analysis.exams import load_exam_rules, match_exam
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import (
    INDICATION_FALLBACKS,
    load_drls,
    select_drls,
)
from tests.analysis.conftest import csv_row, make_events


class TestPrintedValues:
    """Three values of each DE and UK table, from different parts of it, as printed."""

    @pytest.mark.parametrize(
        ("where", "column", "printed"),
        [
            # BFS2022: Bekanntmachung vom 17. November 2022 (BAnz AT 11.01.2023 B11), as
            # mirrored on umwelt-online.de, Tabelle 1 'DFP [cGy*cm2 = uGy*m2]':
            # Schulter (pro Ebene) 25; Thorax lat 40; Becken a. p./p. a. 230.
            ({"region": "DE", "year": "2022", "exam": "Shoulder"}, "dap_value", "25"),
            (
                {"region": "DE", "year": "2022", "exam": "Chest", "projection": "LAT"},
                "dap_value",
                "40",
            ),
            ({"region": "DE", "year": "2022", "exam": "Pelvis"}, "dap_value", "230"),
            # BFS2010: Bekanntmachung vom 22. Juni 2010 (BAnz Nr. 111 vom 28.07.2010),
            # umwelt-online mirror, Tabelle 1 'DFP [cGy x cm2]': Schaedel lat 60;
            # Lendenwirbelsaeule lat 420; Abdomen 300.
            (
                {"region": "DE", "year": "2010", "exam": "Skull", "projection": "LAT"},
                "dap_value",
                "60",
            ),
            (
                {"region": "DE", "year": "2010", "exam": "Lumbar spine", "projection": "LAT"},
                "dap_value",
                "420",
            ),
            ({"region": "DE", "year": "2010", "exam": "Abdomen"}, "dap_value", "300"),
        ],
    )
    def test_german_radiography(self, where: dict[str, str], column: str, printed: str) -> None:
        """DE adult radiography DAP rows keep the printed cGy·cm² value."""
        assert csv_row("drl_radiography", **where)[column] == printed

    @pytest.mark.parametrize(
        ("procedure", "printed"),
        [
            # BFS2010 Tabelle 2 'DFP [cGy x cm2]': Duenndarm 4.400; Phlebographie
            # Bein-Becken 500; PTCA 6.000.
            ("Small bowel (enteroclysis)", "4400"),
            ("Phlebography leg-pelvis", "500"),
            ("PTCA", "6000"),
        ],
    )
    def test_german_fluoroscopy_2010(self, procedure: str, printed: str) -> None:
        """DE 2010 Tabelle 2 rows keep the printed cGy·cm² value."""
        row = csv_row("drl_fluoro_interventional", region="DE", year="2010", procedure=procedure)
        assert row["kap_value_as_published"] == printed
        assert row["kap_unit_as_published"] == "cGy.cm2"

    @pytest.mark.parametrize(
        ("procedure", "printed"),
        [
            # BAHNSEN-DRW (secondary transcript of BfS 16.08.2018, 'DFP in cGy/qcm'):
            # 18 000 Thrombusaspiration nach Schlaganfall; 8 000 TAVI; 2 500 PTA
            # Unterschenkel und Fuss.
            ("Mechanical thrombectomy (thrombus aspiration) after stroke", "18000"),
            ("Transcatheter aortic valve implantation (TAVI)", "8000"),
            ("PTA lower leg and foot", "2500"),
        ],
    )
    def test_german_interventional_2018(self, procedure: str, printed: str) -> None:
        """DE 2018 interventional rows keep the transcribed cGy·cm² value."""
        row = csv_row("drl_fluoro_interventional", region="DE", year="2018", procedure=procedure)
        assert row["kap_value_as_published"] == printed
        assert row["verification"] == "secondary"

    def test_german_fluoroscopy_in_canonical_units(self) -> None:
        """BFS2010 'Koronarangiographie 3.500' cGy·cm² = 35 Gy·cm² = 3.5e-3 Gy·m²."""
        drls = load_drls()
        row = drls[
            (drls["drl_region"] == "DE")
            & (drls["drl_year"] == 2010)
            & (drls["standard_exam"] == "Coronary angiography")
        ]
        assert row["drl_value"].tolist() == pytest.approx([3.5e-3])

    def test_german_ct_2010_and_mammography(self) -> None:
        """BFS2010 Tabelle 3 'Hirnschaedel' CTDIvol 65 mGy, DLP 950 mGy·cm (pro Scanserie);
        Tabelle 1 'Mammographie (cc und mlo)' AGD 2,5 (printed with the unit 'mSv')."""
        head = csv_row("drl_ct_adult", region="DE", year="2010", exam="Head")
        assert (head["ctdivol_mGy"], head["dlp_mGycm"]) == ("65", "950")
        mammo = csv_row("drl_mammography", region="DE", year="2010")
        assert mammo["agd_mGy"] == "2.5"

    @pytest.mark.parametrize(
        ("exam", "column", "printed"),
        [
            # UKHSA-NDRL-2024: 'National Diagnostic Reference Levels (NDRLs) from 20
            # November 2024', Table 1 'Adult CT examinations': Head (acute stroke) DLP
            # 790; Chest (lung cancer) CTDIvol 8.5; Urogram DLP 890 (mGy, mGy cm).
            ("Head", "dlp_mGycm", "790"),
            ("Chest", "ctdivol_mGy", "8.5"),
            ("CT urogram", "dlp_mGycm", "890"),
        ],
    )
    def test_uk_adult_ct(self, exam: str, column: str, printed: str) -> None:
        """UK Table 1 rows keep the printed value (mGy, mGy·cm)."""
        row = csv_row("drl_ct_adult", region="UK", year="2022", exam=exam)
        assert row[column] == printed


def _events(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Return dose samples of ``rows`` (events frame shape, see tests/analysis/conftest)."""
    return build_dose_samples(make_events(rows))


def _xa_rows(first_id: int, date: str, exam: str, kap_gym2: float) -> list[dict]:
    """Return 20 XA studies of ``exam`` on ``date``, each with total KAP ``kap_gym2``."""
    return [
        {
            "study_id": study_id,
            "device": "CATH1",
            "modality": "XA",
            "standard_exam": exam,
            "study_date": pd.Timestamp(date),
            "dap_gym2": kap_gym2,
        }
        for study_id in range(first_id, first_id + 20)
    ]


def _ct_rows(first_id: int, date: str, exam: str, ctdivol: float, dlp: float) -> list[dict]:
    """Return 20 spiral CT studies of ``exam`` on ``date`` (mGy, mGy·cm)."""
    return [
        {
            "study_id": study_id,
            "device": "CT1",
            "modality": "CT",
            "standard_exam": exam,
            "study_date": pd.Timestamp(date),
            "ct_acquisition_type": "Spiral Acquisition",
            "ctdivol_mgy": ctdivol,
            "dlp_mgycm": dlp,
        }
        for study_id in range(first_id, first_id + 20)
    ]


class TestEditionInForce:
    """Studies meet the DE and UK edition in force on their study date, or none."""

    def test_german_pci_across_three_notices(self) -> None:
        """DE PCI at 50 Gy·cm²: 2015 meets BfS 2010 'PTCA' 60 Gy·cm² (below); 2020 meets
        BfS 2018 'PCI' 48 Gy·cm² (above; BAHNSEN-DRW, secondary); 2017 (2016 notice) and
        2024 (2022 notice, Tabelle 6) fall in editions Kerma does not ship."""
        rows = (
            _xa_rows(1, "2015-03-02", "PCI", 50e-4)
            + _xa_rows(101, "2017-03-01", "PCI", 50e-4)
            + _xa_rows(201, "2020-03-02", "PCI", 50e-4)
            + _xa_rows(301, "2024-03-04", "PCI", 50e-4)
        )
        result = compare_with_drls(_events(rows), select_drls(load_drls(), "DE"))
        kap = result[result["quantity"] == "dap_gym2"]
        below = kap[kap["status"] == STATUS_BELOW]
        above = kap[kap["status"] == STATUS_ABOVE]
        missing = kap[kap["status"] == STATUS_NO_EDITION]
        assert below["drl_value"].tolist() == pytest.approx([60e-4])
        assert below["drl_valid_to"].tolist() == [pd.Timestamp("2016-07-14")]
        assert above["drl_value"].tolist() == pytest.approx([48e-4])
        assert above["drl_valid_from"].tolist() == [pd.Timestamp("2018-09-03")]
        assert int(missing["n_studies"].sum()) == 40
        assert missing["drl_value"].isna().all()

    def test_german_sinus_ct_only_from_the_2022_notice(self) -> None:
        """DE sinus CT (7 mGy / 70 mGy·cm, quoted as the 2022 notice) applies from its
        publication in the BAnz on 2023-01-11: a 2020 study meets no DE value."""
        rows = _ct_rows(1, "2020-05-04", "CT Paranasal sinuses", 5.0, 60.0) + _ct_rows(
            101, "2024-05-06", "CT Paranasal sinuses", 5.0, 60.0
        )
        result = compare_with_drls(_events(rows), select_drls(load_drls(), "DE"))
        dlp = result[result["quantity"] == "dlp_mgycm"].set_index("status")
        assert dlp.loc[STATUS_BELOW, "drl_value"] == pytest.approx(70.0)
        assert dlp.loc[STATUS_BELOW, "drl_valid_from"] == pd.Timestamp("2023-01-11")
        assert np.isnan(dlp.loc[STATUS_NO_EDITION, "drl_value"])
        assert dlp.loc[STATUS_NO_EDITION, "n_studies"] == 20

    def test_uk_adult_ct_from_october_2022(self) -> None:
        """UK head CT for stroke (DLP 790 mGy·cm, adopted 2022) applies from the gov.uk
        update of 2022-10-13 (GOVUK-NDRL-HISTORY); the 2019 edition is not shipped, so a
        2021 study meets no UK value instead of a later one."""
        rows = _ct_rows(1, "2021-06-01", "CT Head (Stroke)", 40.0, 700.0) + _ct_rows(
            101, "2023-06-01", "CT Head (Stroke)", 40.0, 700.0
        )
        result = compare_with_drls(_events(rows), select_drls(load_drls(), "UK"))
        dlp = result[result["quantity"] == "dlp_mgycm"].set_index("status")
        assert dlp.loc[STATUS_BELOW, "drl_value"] == pytest.approx(790.0)
        assert dlp.loc[STATUS_BELOW, "drl_valid_from"] == pd.Timestamp("2022-10-13")
        assert dlp.loc[STATUS_NO_EDITION, "n_studies"] == 20

    def test_uk_ctca_from_november_2018(self) -> None:
        """The three UK CTCA DLP values (170, 280, 380 mGy·cm) start on 2018-11-15, the
        day PHE published them (BSCI-CTCA, SOR-NDRL-2018)."""
        drls = load_drls()
        uk = drls[drls["drl_region"] == "UK"]
        ctca = uk[uk["standard_exam"] == "CT coronary angiography"]
        assert sorted(ctca["drl_value"]) == [170.0, 280.0, 380.0]
        assert set(ctca["valid_from"]) == {pd.Timestamp("2018-11-15")}


class TestProcedureNames:
    """Published procedure names become Kerma's standard exams (FLUORO_ALIASES)."""

    def test_long_german_names_are_shortened(self) -> None:
        """BfS 2018 'Thrombusaspiration nach Schlaganfall' (18,000 cGy·cm²) and the
        endovascular aortic repair row (23,000 cGy·cm²; BAHNSEN-DRW, secondary) get short
        standard exam names; 18,000 cGy·cm² = 180 Gy·cm² = 1.8e-2 Gy·m²."""
        drls = load_drls()
        de = drls[(drls["drl_region"] == "DE") & (drls["drl_year"] == 2018)]
        by_exam = de.set_index("standard_exam")["drl_value"]
        assert by_exam["Mechanical thrombectomy (stroke)"] == pytest.approx(1.8e-2)  # Gy·m²
        assert by_exam["Endovascular aortic aneurysm repair (EVAR/TEVAR)"] == pytest.approx(2.3e-2)

    def test_swiss_leg_angiography_meets_the_german_name(self) -> None:
        """CH 2007 'lower limb and iliac angiography' (210 Gy·cm², AROUA2007) and DE 2010
        'Arteriographie Becken-Bein' (6,400 cGy·cm²) share one standard exam."""
        drls = load_drls()
        rows = drls[drls["standard_exam"] == "Arteriography pelvis-leg"]
        values = dict(zip(rows["drl_region"], rows["drl_value"], strict=True))
        assert values == pytest.approx({"CH": 210e-4, "DE": 64e-4})
        swiss = rows[rows["drl_region"] == "CH"].iloc[0]
        assert "compared as arteriography pelvis-leg" in swiss["notes"]


RULES = load_exam_rules()
THROMBECTOMY = "Mechanical thrombectomy (stroke)"


class TestExamRules:
    """German, Dutch, French and English study descriptions find the DE/UK/CH exams."""

    @pytest.mark.parametrize(
        ("modality", "description", "exam"),
        [
            # radiography (DE BfS 2022 Tabelle 1; UK LSJ)
            ("DX", "Thorax im Liegen", "Chest AP supine"),
            ("DX", "Bettlunge", "Chest AP supine"),
            ("DX", "X-thorax liggend", "Chest AP supine"),
            ("CR", "Thorax couché", "Chest AP supine"),
            ("DX", "Röntgen Thorax p.a. und seitlich", "Chest PA/LAT"),
            ("DX", "Thorax 2 Ebenen", "Chest PA/LAT"),
            ("DX", "X-thorax 2 richtingen", "Chest PA/LAT"),
            ("DX", "Thorax face et profil", "Chest PA/LAT"),
            ("DX", "Thorax p.a.", "Chest PA"),
            ("DX", "LWS lumbosakraler Übergang seitlich", "Lumbar spine LSJ"),
            ("CR", "L5/S1 lateral coned", "Lumbar spine LSJ"),
            # interventional (DE BfS 2018 and 2010; CH 2007)
            ("XA", "Mechanische Thrombektomie A. cerebri media links", THROMBECTOMY),
            ("XA", "Thrombektomie bei Schlaganfall", THROMBECTOMY),
            ("XA", "Coiling Aneurysma A. communicans anterior", "Cerebral aneurysm coiling"),
            ("XA", "Embolisation anévrisme cérébral", "Cerebral aneurysm coiling"),
            ("XA", "Embolisation AVM cérébrale", "Cerebral embolization"),
            ("XA", "EVAR Bauchaortenaneurysma", "Endovascular aortic aneurysm repair (EVAR/TEVAR)"),
            ("XA", "TEVAR", "Endovascular aortic aneurysm repair (EVAR/TEVAR)"),
            ("XA", "Koronarangiographie + PCI", "Coronary angiography and PCI"),
            ("XA", "Coro/PCI RIVA", "Coronary angiography and PCI"),
            ("XA", "PCI RCA", "PCI"),
            ("XA", "Angioplastie coronaire", "PCI"),
            ("XA", "Herzkatheter", "Coronary angiography"),
            ("XA", "Coronarographie", "Coronary angiography"),
            ("XA", "PTA A. iliaca communis rechts", "PTA pelvis"),
            ("XA", "PTA A. femoralis superficialis links", "PTA thigh and knee"),
            ("XA", "PTA Unterschenkel", "PTA lower leg and foot"),
            ("XA", "PTA", "PTA"),
            ("XA", "DSA Becken-Bein", "Arteriography pelvis-leg"),
            ("XA", "Angiographie des membres inférieurs", "Arteriography pelvis-leg"),
            ("XA", "Angiografie bekken-benen", "Arteriography pelvis-leg"),
            ("RF", "Phlebographie Bein links", "Phlebography leg-pelvis"),
            ("XA", "PTCD", "Biliary drainage and stenting"),
            ("RF", "Drainage biliaire", "Biliary drainage and stenting"),
            ("XA", "DSA Hirn", "Cerebral angiography"),
            ("XA", "Angiographie cérébrale", "Cerebral angiography"),
        ],
    )
    def test_description_maps_to_drl_exam(self, modality: str, description: str, exam: str) -> None:
        """A realistic study description in the country's language finds its DRL exam."""
        found, _rule = match_exam(
            {"modality": modality, "study_description": description}, RULES, level="study"
        )
        assert found == exam

    @pytest.mark.parametrize(
        ("modality", "description"),
        [
            ("XA", "Thrombektomie A. femoralis"),  # peripheral: not the stroke DRL
            ("RF", "Phlebographie Arm"),  # the DE DRL is for the leg and pelvis
        ],
    )
    def test_look_alike_procedures_are_left_unmapped(self, modality: str, description: str) -> None:
        """Procedures that share a word with a DRL exam but not its anatomy get none."""
        found, _rule = match_exam(
            {"modality": modality, "study_description": description}, RULES, level="study"
        )
        assert found is None

    @pytest.mark.parametrize("region", ["DE", "UK", "CH"])
    def test_every_exam_of_the_set_has_a_rule(self, region: str) -> None:
        """Each standard exam of the set is some rule's exam (UK 'CT KUB' is reached
        through the colic indication's fallback, INDICATION_FALLBACKS)."""
        drls = load_drls()
        exams = set(drls[drls["drl_region"] == region]["standard_exam"])
        fallbacks = {exam for targets in INDICATION_FALLBACKS.values() for exam in targets}
        assert exams - {rule.exam for rule in RULES.rules} - fallbacks == set()

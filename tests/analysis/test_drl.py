"""Tests of the ICRP 135 DRL comparison (kerma.analysis.drl)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerma.analysis.drl import compare_by_period, compare_with_drls, local_drls
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import load_drls, select_drls
from kerma.errors import ConfigurationError
from tests.analysis.conftest import make_events

# EU set (EUCLID, EC RP 195, 2021): CT Head 'Stroke' DLP 807 mGy·cm, CTDIvol 48 mGy;
# Abdomen-Pelvis 'Appendicitis' DLP 498, 'Colic/abdominal pain' DLP 436 mGy·cm;
# EC RP 185 head '1 to <6 years' DLP 505 mGy·cm; EU IC (Siiskonen 2018) PCI 85 Gy·cm².
# UK (UKHSA 2022) KUB 'Stones/colic' DLP 290; US (Kanal 2017) Head DLP 962 mGy·cm.
HEAD_DLP_DRL = 807.0
HEAD_CTDIVOL_DRL = 48.0
APPENDICITIS_DLP_DRL = 498.0
COLIC_DLP_DRL = 436.0
UK_KUB_DLP_DRL = 290.0
US_HEAD_DLP_DRL = 962.0
PAED_HEAD_1_6_DLP_DRL = 505.0
PCI_KAP_DRL = 85.0e-4  # Gy·m², canonical (85 Gy·cm² as published)


def _ct_rows(
    room: str,
    dlp_values: np.ndarray,
    ctdivol: float,
    first_id: int,
    *,
    exam: str,
    age: float | None = 50.0,
) -> list[dict]:
    """Return one spiral CT event per study of ``exam`` with the given DLP (mGy·cm)."""
    return [
        {
            "study_id": first_id + i,
            "device": room,
            "modality": "CT",
            "study_description": exam.upper(),
            "standard_exam": exam,
            "ct_acquisition_type": "Spiral Acquisition",
            "ctdivol_mgy": ctdivol,
            "dlp_mgycm": float(v),
            "patient_age_years": age,
        }
        for i, v in enumerate(dlp_values)
    ]


def _ct_head_rows(
    room: str, dlp_values: np.ndarray, ctdivol: float, first_id: int, age: float = 50.0
) -> list[dict]:
    """Return stroke head CT studies: the EU set's head DRL is the EUCLID 'Stroke' row."""
    return _ct_rows(room, dlp_values, ctdivol, first_id, exam="CT Head (Stroke)", age=age)


def _rows_of(result: pd.DataFrame, **where: object) -> pd.DataFrame:
    """Return the rows of ``result`` whose columns equal the given values."""
    mask = pd.Series(True, index=result.index)
    for column, value in where.items():
        mask &= result[column] == value
    return result[mask]


@pytest.fixture
def eu_drls() -> pd.DataFrame:
    """The selected EU DRL set."""
    return select_drls(load_drls(), "EU")


@pytest.fixture
def head_samples() -> pd.DataFrame:
    """Room A above the head DLP DRL, room B below, room C with 15 studies only."""
    rows = _ct_head_rows("ROOM A", np.linspace(800, 1000, 25), 55.0, 1)  # median 900
    rows += _ct_head_rows("ROOM B", np.linspace(600, 800, 31), 40.0, 100)  # median 700
    rows += _ct_head_rows("ROOM C", np.linspace(1500, 1600, 15), 90.0, 200)  # n < 20
    rows += _ct_head_rows("ROOM A", np.linspace(500, 700, 21), 30.0, 300, age=3.0)  # paed 600
    return build_dose_samples(make_events(rows))


class TestCompareWithDrls:
    """Typical value = room median, compared with the national DRL (ICRP 135)."""

    def test_known_rooms_exceed_known_drls(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """Room A is above the DLP DRL, room B below, room C has an insufficient sample."""
        result = compare_with_drls(head_samples, eu_drls)
        adult = result[(result["patient_group"] == "adult") & (result["quantity"] == "dlp_mgycm")]
        status = dict(zip(adult["device_name"], adult["status"], strict=True))
        assert status == {"ROOM A": "above", "ROOM B": "below", "ROOM C": "insufficient sample"}
        typical = dict(zip(adult["device_name"], adult["typical_value"], strict=True))
        assert typical["ROOM A"] == pytest.approx(900.0)
        assert typical["ROOM B"] == pytest.approx(700.0)
        assert np.isnan(typical["ROOM C"])
        assert set(adult["drl_value"]) == {HEAD_DLP_DRL}
        assert set(adult["n"]) == {25, 31, 15}
        assert set(adult["drl_region"]) == {"EU"}
        assert set(adult["clinical_indication"]) == {"Stroke"}
        assert set(adult["drl_exam"]) == {"CT Head (Stroke)"}
        assert adult["source_ref"].str.contains("EUCLID-RP195").all()

    def test_ctdivol_compared_in_mgy(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """CTDIvol typical value (study mean) is compared with the 48 mGy DRL."""
        result = compare_with_drls(head_samples, eu_drls)
        ctdi = result[(result["patient_group"] == "adult") & (result["quantity"] == "ctdivol_mgy")]
        status = dict(zip(ctdi["device_name"], ctdi["status"], strict=True))
        assert status["ROOM A"] == "above"  # 55 > 48
        assert status["ROOM B"] == "below"  # 40 <= 48
        assert set(ctdi["drl_value"]) == {HEAD_CTDIVOL_DRL}
        assert set(ctdi["unit"]) == {"mGy"}

    def test_paediatric_patients_use_age_band(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """3-year-olds are compared with the EU PiDRL '1 to <6 years' band (505 mGy·cm)."""
        result = compare_with_drls(head_samples, eu_drls)
        paed = result[
            (result["patient_group"] == "paediatric")
            & (result["quantity"] == "dlp_mgycm")
            & (result["band_label"] == "1 to <6 years")
        ]
        assert len(paed) == 1
        row = paed.iloc[0]
        assert row["device_name"] == "ROOM A"
        assert row["n"] == 21
        assert row["typical_value"] == pytest.approx(600.0)
        assert row["drl_value"] == PAED_HEAD_1_6_DLP_DRL
        assert row["status"] == "above"
        # no paediatric stroke DRL in RP 185: the anatomical paediatric head DRL is used
        assert row["drl_exam"] == "CT Head"
        assert "compared with the CT Head DRL" in row["note"]
        adult_a = result[
            (result["patient_group"] == "adult")
            & (result["device_name"] == "ROOM A")
            & (result["quantity"] == "dlp_mgycm")
        ]
        assert adult_a["n"].item() == 25  # children are not in the adult sample

    def test_minimum_sample_is_configurable(
        self, head_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """With a minimum of 10, room C gets a typical value and is above."""
        result = compare_with_drls(head_samples, eu_drls, min_sample=10)
        room_c = result[(result["device_name"] == "ROOM C") & (result["quantity"] == "dlp_mgycm")]
        assert room_c["status"].item() == "above"

    def test_fluoroscopy_kap_in_canonical_units(self, eu_drls: pd.DataFrame) -> None:
        """PCI KAP totals (Gy·m²) are compared with the 85 Gy·cm² DRL loaded in Gy·m²."""
        rows = [
            {
                "study_id": i,
                "device": "CATH1",
                "modality": "XA",
                "standard_exam": "PCI",
                "dap_gym2": 0.0045,
            }
            for i in range(1, 21)
        ] + [
            {
                "study_id": i,
                "device": "CATH1",
                "modality": "XA",
                "standard_exam": "PCI",
                "dap_gym2": 0.0050,
            }
            for i in range(1, 21)
        ]
        result = compare_with_drls(build_dose_samples(make_events(rows)), eu_drls)
        row = result[result["standard_exam"] == "PCI"].iloc[0]
        assert row["typical_value"] == pytest.approx(95.0e-4)
        assert row["drl_value"] == pytest.approx(PCI_KAP_DRL)
        assert (row["quantity"], row["unit"]) == ("dap_gym2", "Gy·m²")
        assert row["status"] == "above"

    def test_mammography_needs_fifty_and_uses_view_and_thickness(self) -> None:
        """Mammography: minimum 50 per room; UG DRL by view and thickness band."""
        drls = select_drls(load_drls(), "UG")
        rows = [
            {
                "study_id": i,
                "device": "MG1",
                "modality": "MG",
                "standard_exam": "Mammography screening",
                "image_view": view,
                "agd_mgy": agd,
                "compression_thickness_mm": 50.0,
            }
            for i in range(1, 61)
            for view, agd in (("CC", 1.9), ("MLO", 1.7))
        ]
        samples = build_dose_samples(make_events(rows))
        result = compare_with_drls(samples, drls).set_index("view")
        band = result[result["band_label"] == ""]
        assert band.loc["CC", "drl_value"] == 1.78
        assert band.loc["CC", "status"] == "above"
        assert band.loc["MLO", "status"] == "below"
        assert set(result["n"]) == {60}
        few = compare_with_drls(samples[samples["study_id"] <= 40], drls)
        assert set(few["status"]) == {"insufficient sample"}

    def test_exam_without_drl_is_reported(self, eu_drls: pd.DataFrame) -> None:
        """An exam absent from the set is listed with status 'no DRL in the selected set'."""
        rows = [
            {
                "study_id": i,
                "device": "DX1",
                "modality": "DX",
                "standard_exam": "Chest PA",
                "dap_gym2": 1e-5,
            }
            for i in range(1, 25)
        ]
        result = compare_with_drls(build_dose_samples(make_events(rows)), eu_drls)
        assert result["status"].tolist() == ["no DRL in the selected set"]
        assert result["patient_group"].tolist() == ["adult"]
        assert result["typical_value"].item() == pytest.approx(1e-5)  # Gy·m²


# DE set (BfS 2010, Tabelle 1): mammography screening AGD 2.5 mGy per view; lumbar
# spine AP KAP 2.0 Gy·cm² per projection.
DE_MAMMO_AGD_DRL = 2.5
DE_LUMBAR_AP_KAP_DRL = 2.0e-4  # Gy·m² (2.0 Gy·cm² as published)


def _mammo_rows(studies: int) -> list[dict]:
    """Return 4 views (CC and MLO, left and right) per study: CC 1.2 mGy, MLO 1.6 mGy."""
    return [
        {
            "study_id": study,
            "device": "MAMMO1",
            "modality": "MG",
            "standard_exam": "Mammography screening",
            "image_view": view,
            "laterality": side,
            "agd_mgy": agd,
            "compression_thickness_mm": 50.0,
        }
        for study in range(1, studies + 1)
        for side in ("L", "R")
        for view, agd in (("CC", 1.2), ("MLO", 1.6))
    ]


def _lumbar_rows(studies: int) -> list[dict]:
    """Return 2 lumbar spine AP projections per study of 2.4 and 2.8 Gy·cm² (in Gy·m²)."""
    return [
        {
            "study_id": study,
            "device": "DXROOM1",
            "modality": "DX",
            "standard_exam": "Lumbar spine AP",
            "dap_gym2": dap,
        }
        for study in range(1, studies + 1)
        for dap in (2.4e-4, 2.8e-4)
    ]


class TestMinimumSampleInPatients:
    """ICRP 135's minimum sample counts patients (studies), not views or projections."""

    @pytest.fixture
    def de_drls(self) -> pd.DataFrame:
        """The selected German set, validity dates dropped.

        The BfS 2010 mammography and radiography values were in force from 2010-07-28
        to 2016-07-14 (#16); these tests are about the minimum sample, not dates, and
        their studies are dated 2026, so every row is made undated here.
        """
        return select_drls(load_drls(), "DE").assign(valid_from=pd.NaT, valid_to=pd.NaT)

    def test_sixty_views_of_fifteen_women_are_insufficient(self, de_drls: pd.DataFrame) -> None:
        """60 AGD values from 15 studies stay below the mammography minimum of 50."""
        result = compare_with_drls(build_dose_samples(make_events(_mammo_rows(15))), de_drls)
        row = _rows_of(result, standard_exam="Mammography screening").iloc[0]
        assert (row["n"], row["n_studies"], row["min_sample"]) == (60, 15, 50)
        assert row["status"] == "insufficient sample"
        assert np.isnan(row["typical_value"])

    def test_two_hundred_views_of_fifty_women_are_compared(self, de_drls: pd.DataFrame) -> None:
        """200 views of 50 studies reach the minimum; typical = median of all 200 views."""
        result = compare_with_drls(build_dose_samples(make_events(_mammo_rows(50))), de_drls)
        row = _rows_of(result, standard_exam="Mammography screening").iloc[0]
        assert (row["n"], row["n_studies"]) == (200, 50)
        assert row["typical_value"] == pytest.approx(1.4)  # 100 CC at 1.2, 100 MLO at 1.6
        assert row["drl_value"] == DE_MAMMO_AGD_DRL
        assert row["status"] == "below"

    @pytest.mark.parametrize(
        ("studies", "status"),
        [(20, "above"), (19, "insufficient sample")],
        ids=["20-studies-compared", "19-studies-insufficient"],
    )
    def test_radiography_counts_studies_not_projections(
        self, de_drls: pd.DataFrame, studies: int, status: str
    ) -> None:
        """2 projections per study: 40 from 20 studies are compared, 38 from 19 are not."""
        result = compare_with_drls(build_dose_samples(make_events(_lumbar_rows(studies))), de_drls)
        row = _rows_of(result, standard_exam="Lumbar spine AP").iloc[0]
        assert (row["n"], row["n_studies"], row["min_sample"]) == (2 * studies, studies, 20)
        assert row["status"] == status
        if status == "above":
            assert row["typical_value"] == pytest.approx(2.6e-4)  # median of 2.4e-4, 2.8e-4
            assert row["drl_value"] == pytest.approx(DE_LUMBAR_AP_KAP_DRL)

    def test_local_drl_counts_studies(self) -> None:
        """local_drls leaves out a room of 38 projections from 19 studies, keeps 20."""
        rows = _lumbar_rows(19)
        rows += [
            row | {"device": "DXROOM2", "study_id": row["study_id"] + 100}
            for row in _lumbar_rows(20)
        ]
        result = local_drls(build_dose_samples(make_events(rows)), quantities=["dap_gym2"])
        row = result.iloc[0]
        assert (row["n_rooms"], row["n"], row["n_studies"]) == (1, 40, 20)
        assert row["local_drl"] == pytest.approx(2.6e-4)


class TestClinicalIndications:
    """EUCLID clinical-indication exams meet their own DRL row; generic exams never do."""

    @pytest.fixture
    def abdomen_samples(self) -> pd.DataFrame:
        """Room ED: appendicitis above 498, colic below 436, generic abdomen-pelvis 900.

        Room OPD: 22 appendicitis studies at 450 (below); 5 colic studies (too few).
        """
        rows = _ct_rows(
            "ED", np.linspace(550, 650, 25), 11.0, 1, exam="CT Abdomen-Pelvis (Appendicitis)"
        )  # median 600
        rows += _ct_rows(
            "ED",
            np.linspace(300, 400, 21),
            7.0,
            100,
            exam="CT Abdomen-Pelvis (Colic/abdominal pain)",
        )  # median 350
        rows += _ct_rows("ED", np.linspace(800, 1000, 25), 14.0, 200, exam="CT Abdomen-Pelvis")
        rows += _ct_rows(
            "OPD", np.full(22, 450.0), 9.0, 300, exam="CT Abdomen-Pelvis (Appendicitis)"
        )
        rows += _ct_rows(
            "OPD", np.full(5, 300.0), 6.0, 400, exam="CT Abdomen-Pelvis (Colic/abdominal pain)"
        )
        return build_dose_samples(make_events(rows))

    def test_appendicitis_room_exceeds_eu_appendicitis_drl(
        self, abdomen_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """ED's appendicitis median 600 is above the EU 498 mGy·cm DRL; OPD's 450 below."""
        result = compare_with_drls(abdomen_samples, eu_drls)
        appendicitis = _rows_of(
            result, standard_exam="CT Abdomen-Pelvis (Appendicitis)", quantity="dlp_mgycm"
        ).set_index("device_name")
        assert appendicitis["status"].to_dict() == {"ED": "above", "OPD": "below"}
        assert appendicitis.loc["ED", "typical_value"] == pytest.approx(600.0)
        assert set(appendicitis["drl_value"]) == {APPENDICITIS_DLP_DRL}
        assert set(appendicitis["clinical_indication"]) == {"Appendicitis"}
        assert set(appendicitis["n"]) == {25, 22}

    def test_colic_compared_with_colic_row_only(
        self, abdomen_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """Colic studies meet the EU 436 DRL only; OPD's 5 studies are too few."""
        result = compare_with_drls(abdomen_samples, eu_drls)
        colic = _rows_of(
            result, standard_exam="CT Abdomen-Pelvis (Colic/abdominal pain)", quantity="dlp_mgycm"
        ).set_index("device_name")
        assert colic["status"].to_dict() == {"ED": "below", "OPD": "insufficient sample"}
        assert set(colic["drl_value"]) == {COLIC_DLP_DRL}
        assert colic.loc["ED", "typical_value"] == pytest.approx(350.0)

    def test_generic_abdomen_pelvis_is_not_compared_with_an_indication(
        self, abdomen_samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """Generic abdomen-pelvis (median 900) gets no DRL and a hint, not 498 or 436."""
        result = compare_with_drls(abdomen_samples, eu_drls)
        generic = _rows_of(result, standard_exam="CT Abdomen-Pelvis")
        assert len(generic) == 1
        row = generic.iloc[0]
        assert row["status"] == "no DRL without clinical indication"
        assert np.isnan(row["drl_value"])
        assert row["typical_value"] == pytest.approx(900.0)
        assert row["n"] == 25
        assert row["quantity"] == "dlp_mgycm"
        assert "CT Abdomen-Pelvis (Appendicitis)" in row["note"]
        assert "CT Abdomen-Pelvis (Colic/abdominal pain)" in row["note"]
        assert "add exam rules" in row["note"]

    def test_colic_falls_back_to_uk_kub(self, abdomen_samples: pd.DataFrame) -> None:
        """The UK set has no EUCLID colic row: colic studies meet the UK KUB DRL (290)."""
        result = compare_with_drls(abdomen_samples, select_drls(load_drls(), "UK"))
        colic = _rows_of(
            result,
            standard_exam="CT Abdomen-Pelvis (Colic/abdominal pain)",
            quantity="dlp_mgycm",
            device_name="ED",
        )
        assert colic["drl_value"].item() == UK_KUB_DLP_DRL
        assert colic["drl_exam"].item() == "CT KUB"
        assert colic["status"].item() == "above"  # 350 > 290
        assert colic["drl_region"].item() == "UK"

    def test_indication_falls_back_to_anatomical_row(self) -> None:
        """Set 'US' has no stroke row: stroke studies meet the US head DRL (962)."""
        samples = build_dose_samples(make_events(_ct_head_rows("A", np.full(20, 900.0), 50, 1)))
        result = compare_with_drls(samples, select_drls(load_drls(), "US"))
        row = _rows_of(result, quantity="dlp_mgycm").iloc[0]
        assert row["drl_value"] == US_HEAD_DLP_DRL
        assert row["drl_exam"] == "CT Head"
        assert row["status"] == "below"
        assert "no adult DRL for CT Head (Stroke)" in row["note"]

    def test_eu_then_us_gives_both_head_drls(self) -> None:
        """'EU,US': stroke studies meet EU's 807, routine heads US's anatomical 962."""
        rows = _ct_head_rows("A", np.full(20, 900.0), 50.0, 1)
        rows += _ct_rows("A", np.full(20, 900.0), 50.0, 100, exam="CT Head")
        samples = build_dose_samples(make_events(rows))
        result = compare_with_drls(samples, select_drls(load_drls(), "EU,US"))
        dlp = _rows_of(result, quantity="dlp_mgycm").set_index("standard_exam")
        assert dlp.loc["CT Head (Stroke)", "drl_value"] == HEAD_DLP_DRL
        assert dlp.loc["CT Head (Stroke)", "status"] == "above"
        assert dlp.loc["CT Head", "drl_value"] == US_HEAD_DLP_DRL
        assert dlp.loc["CT Head", "drl_region"] == "US"
        assert dlp.loc["CT Head", "status"] == "below"

    def test_children_abdomen_pelvis_has_no_eu_drl(self, eu_drls: pd.DataFrame) -> None:
        """8-year-olds' abdomen-pelvis: 'no DRL in the selected set', not adult DRLs."""
        rows = _ct_rows(
            "ED", np.full(20, 300.0), 5.0, 1, exam="CT Abdomen-Pelvis (Appendicitis)", age=8.0
        )
        rows += _ct_rows("ED", np.full(20, 250.0), 4.0, 100, exam="CT Abdomen-Pelvis", age=8.0)
        rows += _ct_rows(
            "ED", np.full(20, 600.0), 11.0, 200, exam="CT Abdomen-Pelvis (Appendicitis)"
        )
        result = compare_with_drls(build_dose_samples(make_events(rows)), eu_drls)
        children = _rows_of(result, patient_group="paediatric")
        assert sorted(children["standard_exam"]) == [
            "CT Abdomen-Pelvis",
            "CT Abdomen-Pelvis (Appendicitis)",
        ]
        assert set(children["status"]) == {"no DRL in the selected set"}
        assert children["drl_value"].isna().all()
        assert set(children["n"]) == {20}
        assert set(children["typical_value"]) == {300.0, 250.0}
        adults = _rows_of(result, patient_group="adult", quantity="dlp_mgycm")
        assert adults["n"].tolist() == [20]  # the children are not in the adult sample
        assert adults["typical_value"].item() == pytest.approx(600.0)


class TestUnknownAge:
    """Unknown age: compared as adult or excluded (KERMA_DRL_UNKNOWN_AGE), always counted."""

    @pytest.fixture
    def samples(self) -> pd.DataFrame:
        """Room A: 20 adults at 700 mGy·cm and 10 unknown-age studies at 2000 mGy·cm."""
        rows = _ct_head_rows("A", np.full(20, 700.0), 40.0, 1)
        rows += _ct_rows("A", np.full(10, 2000.0), 90.0, 100, exam="CT Head (Stroke)", age=None)
        return build_dose_samples(make_events(rows))

    def test_adult_policy_counts_unknown_age_in_n(
        self, samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """'adult': n = 30, 10 of them of unknown age (the median stays 700)."""
        result = compare_with_drls(samples, eu_drls, unknown_age="adult")
        adult = _rows_of(result, patient_group="adult", quantity="dlp_mgycm")
        assert adult["n"].item() == 30
        assert adult["n_studies"].item() == 30
        assert adult["n_unknown_age"].item() == 10
        assert adult["unknown_age_policy"].item() == "adult"  # the 10 are in n
        assert adult["typical_value"].item() == pytest.approx(700.0)
        paediatric = _rows_of(result, patient_group="paediatric")
        assert paediatric.empty  # unknown age never enters a paediatric band

    def test_exclude_policy_leaves_them_out(
        self, samples: pd.DataFrame, eu_drls: pd.DataFrame
    ) -> None:
        """'exclude': n = 20 known-age adults; n_unknown_age still shows the 10 left out."""
        result = compare_with_drls(samples, eu_drls, unknown_age="exclude")
        adult = _rows_of(result, patient_group="adult", quantity="dlp_mgycm")
        assert adult["n"].item() == 20
        assert adult["n_studies"].item() == 20
        assert adult["n_unknown_age"].item() == 10
        assert adult["unknown_age_policy"].item() == "exclude"  # the 10 are not in n
        assert adult["status"].item() == "below"

    def test_exclude_policy_can_make_a_sample_insufficient(self, eu_drls: pd.DataFrame) -> None:
        """15 known + 10 unknown ages: 25 as adults (above), 15 when excluded (too few)."""
        rows = _ct_head_rows("A", np.full(15, 900.0), 50.0, 1)
        rows += _ct_rows("A", np.full(10, 900.0), 50.0, 100, exam="CT Head (Stroke)", age=None)
        samples = build_dose_samples(make_events(rows))
        as_adult = compare_with_drls(samples, eu_drls, unknown_age="adult")
        excluded = compare_with_drls(samples, eu_drls, unknown_age="exclude")
        assert _rows_of(as_adult, quantity="dlp_mgycm")["status"].item() == "above"
        row = _rows_of(excluded, quantity="dlp_mgycm").iloc[0]
        assert (row["status"], row["n"], row["n_unknown_age"]) == ("insufficient sample", 15, 10)

    def test_unknown_policy_raises(self, samples: pd.DataFrame, eu_drls: pd.DataFrame) -> None:
        """A policy other than adult/exclude is refused naming the setting."""
        with pytest.raises(ConfigurationError, match="KERMA_DRL_UNKNOWN_AGE"):
            compare_with_drls(samples, eu_drls, unknown_age="child")


class TestLocalDrls:
    """Local DRL = 75th percentile of the room medians."""

    def test_local_drl_is_p75_of_room_medians(self, rng: np.random.Generator) -> None:
        """The local DRL equals numpy's 75th percentile of the per-room medians."""
        rows = []
        medians = []
        study = 1
        for room in range(6):
            values = rng.lognormal(6.5 + 0.1 * room, 0.3, 30 + room)
            medians.append(np.median(values))
            rows += _ct_head_rows(f"R{room}", values, 50.0, study)
            study += len(values)
        rows += _ct_head_rows("SMALL", np.full(5, 5000.0), 50.0, study)
        result = local_drls(
            build_dose_samples(make_events(rows)), quantities=["ct_dlp_total_mgycm"]
        )
        row = result.iloc[0]
        assert row["n_rooms"] == 6
        assert row["local_drl"] == pytest.approx(np.percentile(medians, 75))


class TestConsecutivePeriods:
    """'Consistently above' needs adjacent periods above the DRL."""

    def test_two_consecutive_quarters_flagged(self, eu_drls: pd.DataFrame) -> None:
        """Room X above in Q1 and Q2 is flagged; room Y above in Q1 and Q3 only is not."""
        rows = []
        study = 1
        plan = {"X": (900.0, 900.0, 700.0), "Y": (900.0, 700.0, 900.0)}
        for room, levels in plan.items():
            for quarter, level in enumerate(levels):
                for k in range(20):
                    rows += _ct_head_rows(room, [level], 40.0, study)
                    rows[-1]["study_date"] = pd.Timestamp(2026, 1 + 3 * quarter, 1 + k)
                    study += 1
        samples = build_dose_samples(make_events(rows))
        per_period, summary = compare_by_period(samples, eu_drls, period="quarter", consecutive=2)
        dlp = summary[(summary["quantity"] == "dlp_mgycm") & (summary["patient_group"] == "adult")]
        flags = dict(zip(dlp["device_name"], dlp["consistently_above"], strict=True))
        assert flags == {"X": True, "Y": False}
        runs = dict(zip(dlp["device_name"], dlp["longest_run_above"], strict=True))
        assert runs == {"X": 2, "Y": 1}
        assert sorted(per_period["period"].unique()) == ["2026Q1", "2026Q2", "2026Q3"]

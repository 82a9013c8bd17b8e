"""Tests of the packaged reference tables and their loader (kerma.analysis.reference)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from kerma.analysis.reference import (
    DRL_TABLES,
    list_drl_sets,
    load_drls,
    read_reference_table,
    reference_path,
    select_drls,
)
from kerma.errors import ConfigurationError

SHARED_REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"

#: Quantity columns of each shipped DRL table.
QUANTITY_COLUMNS = {
    "drl_ct_adult": ("ctdivol_mGy", "dlp_mGycm"),
    "drl_ct_paediatric": ("ctdivol_mGy", "dlp_mGycm"),
    "drl_radiography": ("dap_Gycm2", "esak_mGy", "esd_mGy"),
    "drl_fluoro_interventional": ("kap_Gycm2", "kar_mGy"),
}


class TestPackagedTables:
    """The shipped CSVs keep their sources and verification grades."""

    @pytest.mark.parametrize("stem", sorted(DRL_TABLES))
    def test_every_row_has_source_and_grade(self, stem: str) -> None:
        """Every DRL row carries source_ref keys and a verification grade."""
        table = read_reference_table(stem)
        assert table["source_ref"].notna().all()
        assert (
            table["verification"]
            .isin(["primary", "primary-reproduction", "secondary", "unverified"])
            .all()
        )

    @pytest.mark.parametrize("stem", sorted(DRL_TABLES))
    def test_packaged_table_extends_shared_table(self, stem: str) -> None:
        """The package data extends the curated shared table, it does not fork it (#16).

        Every shared row comes first, unchanged in every shared column; the shipped
        table only adds columns (validity and traceability) and rows.
        """
        shared_path = SHARED_REFERENCE / f"{stem}.csv"
        if not shared_path.is_file():
            pytest.skip("../shared/reference is not beside the repository")
        read = {"dtype": str, "keep_default_na": False}
        shared = pd.read_csv(shared_path, **read)
        shipped = pd.read_csv(reference_path(f"{stem}.csv"), **read)
        assert list(shipped.columns[: len(shared.columns)]) == list(shared.columns)
        pd.testing.assert_frame_equal(shipped.iloc[: len(shared)][shared.columns], shared)

    def test_readme_and_sources_ship(self) -> None:
        """README.md and SOURCES.md are package data beside the tables."""
        assert "verification" in reference_path("README.md").read_text()
        assert "EUCLID-RP195" in reference_path("SOURCES.md").read_text()


class TestLoadDrls:
    """The harmonised long DRL frame."""

    def test_one_row_per_published_value(self) -> None:
        """load_drls has one row per non-empty quantity cell (mammography 'all' twice)."""
        expected = 0
        for stem, columns in QUANTITY_COLUMNS.items():
            with reference_path(f"{stem}.csv").open(newline="") as handle:
                for row in csv.DictReader(handle):
                    expected += sum(1 for c in columns if row[c].strip())
        with reference_path("drl_mammography.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                expected += 2 if row["context"] == "all" else 1
        assert len(load_drls()) == expected

    def test_na_region_is_not_missing(self) -> None:
        """The North-America region code 'NA' is read as text, not as a missing value."""
        assert "NA" in set(load_drls()["drl_region"])

    def test_ct_names_and_values(self) -> None:
        """EU CT head DLP is 807 mGy·cm under the standard exam 'CT Head'."""
        drls = load_drls()
        row = drls[
            (drls["drl_region"] == "EU")
            & (drls["standard_exam"] == "CT Head")
            & (drls["quantity"] == "dlp_mgycm")
            & (drls["patient_group"] == "adult")
        ]
        assert row["drl_value"].tolist() == [807.0]
        assert row["unit"].item() == "mGy·cm"
        assert row["verification"].item() == "secondary"

    def test_radiography_aliases(self) -> None:
        """DE 'Pelvis AP/PA' is compared as 'Pelvis AP'; FR chest PA is 0.2 Gy·cm² (2e-5 Gy·m²)."""
        drls = load_drls()
        de = drls[(drls["drl_region"] == "DE") & (drls["drl_year"] == 2022)]
        assert "Pelvis AP" in set(de["standard_exam"])
        fr = drls[
            (drls["drl_region"] == "FR")
            & (drls["drl_year"] == 2019)
            & (drls["standard_exam"] == "Chest PA")
        ]
        assert fr["drl_value"].item() == pytest.approx(2e-5)
        assert (fr["quantity"].item(), fr["unit"].item()) == ("dap_gym2", "Gy·m²")

    def test_site_table_adds_a_set(self, tmp_path: Path) -> None:
        """A site CSV in the adult-CT shape becomes a selectable set."""
        site = tmp_path / "site.csv"
        header = (
            "region,source,year,exam,clinical_indication,ctdivol_mGy,dlp_mGycm,phantom_cm,"
            "phantom_basis,status,verification,source_ref,notes\n"
        )
        site.write_text(
            header + "SITE,Our hospital local DRL 2026,2026,Head,,45,700,16,stated,current,"
            "site,LOCAL-2026,set by the MPE\n"
        )
        drls = load_drls(extra_paths=[site])
        chosen = select_drls(drls, "SITE,EU")
        head = chosen[(chosen["standard_exam"] == "CT Head") & (chosen["quantity"] == "dlp_mgycm")]
        assert head[head["patient_group"] == "adult"]["drl_value"].tolist() == [700.0]
        chest = chosen[
            (chosen["standard_exam"] == "CT Chest") & (chosen["patient_group"] == "adult")
        ]
        assert set(chest["drl_region"]) == {"EU"}  # falls back to the next set
        assert "SITE" in set(list_drl_sets(drls)["drl_region"])

    def test_unknown_site_columns_raise(self, tmp_path: Path) -> None:
        """A site CSV of unknown shape is refused with a clear message."""
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        with pytest.raises(ConfigurationError, match="match none of the shipped DRL tables"):
            load_drls(extra_paths=[bad])


class TestSelectAndList:
    """DRL set selection and listing."""

    def test_unknown_set_raises(self) -> None:
        """Selecting a region that does not exist raises ConfigurationError."""
        with pytest.raises(ConfigurationError, match="Unable to select the DRL set 'XX'"):
            select_drls(load_drls(), "XX")

    def test_set_codes_match_in_any_case(self) -> None:
        """``be`` selects the BE set, as ``BE`` does."""
        drls = load_drls()
        assert set(select_drls(drls, "be")["drl_region"]) == {"BE"}
        assert set(select_drls(drls, "eu, De")["drl_region"]) <= {"EU", "DE"}

    def test_unknown_set_in_a_priority_list_raises(self) -> None:
        """A typo in a priority list is refused, naming it, not silently skipped."""
        with pytest.raises(ConfigurationError, match="no such region XX"):
            select_drls(load_drls(), "EU,XX")

    def test_superseded_only_region_still_answers(self) -> None:
        """AU (all superseded) uses its most recent year (2018)."""
        chosen = select_drls(load_drls(), "AU")
        assert set(chosen["drl_year"]) == {2018}

    def test_sets_list_regions_and_grades(self) -> None:
        """list_drl_sets gives region, source, year, rows, modalities and grades."""
        sets = list_drl_sets()
        eu_ct = sets[(sets["drl_region"] == "EU") & (sets["drl_table"] == "drl_ct_adult")]
        assert eu_ct["n_rows"].item() == 20
        assert eu_ct["modalities"].item() == "CT"
        assert eu_ct["verification"].item() == "secondary"
        assert isinstance(sets, pd.DataFrame)

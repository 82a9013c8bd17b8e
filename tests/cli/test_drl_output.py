"""kerma drl output (#10): the table and edition on every row, superseded editions in the
terminal table, the median of a small sample shown marked insufficient, and an empty
result that says why."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kerma.cli.main import app
from tests.conftest import DICOM_DIR
from tests.db_fixtures import TEST_PSEUDONYM_KEY

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

MG_FILES = ("MG-RDSR-GEPristina-2D.dcm", "MG-RDSR-Giotto-DBT.dcm", "MG-RDSR-Hologic_2D.dcm")


@pytest.fixture
def cli(database_url: str, tmp_path: Path):
    """Return a function running ``kerma ARGS`` on a registry holding three MG RDSRs."""
    runner = CliRunner()
    env = {
        "KERMA_DATABASE_URL": database_url,
        "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "250",
    }

    def run(*args: str, extra: dict[str, str] | None = None):
        return runner.invoke(app, list(args), env=env | (extra or {}))

    result = run("import", *(str(DICOM_DIR / name) for name in MG_FILES))
    assert result.exit_code == 0, result.output
    return run


class TestDrlTable:
    """The terminal table."""

    def test_superseded_edition_is_in_the_table(self, cli, tmp_path: Path) -> None:
        """DE's 2010 mammography DRL (superseded; in force 2010-07-28 to 2016-07-14)
        says so, with its validity, on the row of the 2015 Hologic study; the 2023 and
        2024 studies are not compared with it (#16: the edition in force on the study
        date; the BfS 2022 mammography table is not shipped). The CSV has it too."""
        out = tmp_path / "drl.csv"
        result = cli("drl", "-m", "MG", "--set", "DE", "--out", str(out))
        assert result.exit_code == 0, result.output
        rows = [line for line in result.output.splitlines() if "│" in line and "AGD" in line]
        assert len(rows) == 3  # one per room
        cited = [
            line for line in rows if "DE 2010 BFS2010 (superseded, 2010-07-28–2016-07-14)" in line
        ]
        assert len(cited) == 1
        assert sum("no DRL in force on the study date" in line for line in rows) == 2
        frame = pd.read_csv(out)
        compared = frame[frame["drl_status"].notna()]
        assert set(compared["drl_status"]) == {"superseded"}
        assert set(compared["drl_year"]) == {2010}
        assert (frame["status"] == "no DRL in force on the study date").sum() == 2

    def test_every_row_names_table_and_edition(self, cli) -> None:
        """UG rows cite 'UG 2023 UG2023' on each row."""
        result = cli("drl", "-m", "MG", "--set", "UG")
        rows = [line for line in result.output.splitlines() if "│" in line and "AGD" in line]
        assert rows and all("UG 2023 UG2023" in line for line in rows)

    def test_small_sample_median_is_shown_marked_insufficient(self, cli, tmp_path: Path) -> None:
        """Below the minimum (50 for mammography) the median is printed in parentheses."""
        out = tmp_path / "drl.csv"
        result = cli("drl", "-m", "MG", "--set", "UG", "--out", str(out))
        frame = pd.read_csv(out)
        pristina = frame[(frame["n"] == 8) & (frame["view"] == "CC")]
        assert len(pristina) == 1
        row = pristina.iloc[0]
        assert pd.isna(row["typical_value"])
        assert row["sample_median"] == pytest.approx(1.21)  # median of the 8 CC views
        assert row["status"] == "insufficient sample"
        assert "(1.21)" in result.output
        assert "insufficient sample" in result.output


class TestEmptyResult:
    """An empty comparison says why."""

    def test_no_study_in_the_filter(self, cli) -> None:
        """A date range with no study."""
        result = cli("drl", "--from", "2030-01-01")
        assert result.exit_code == 0, result.output
        assert "No DRL comparison (set EU): no study in the filter has" in result.output

    def test_no_standard_exam_mapping(self, cli, tmp_path: Path) -> None:
        """Site exam rules that map nothing: the studies are counted and the fix named."""
        rules = tmp_path / "rules.toml"
        rules.write_text(
            'version = "t"\n\n[[rule]]\nname = "never"\nexam = "CT Head"\nmodality = "CT"\n'
            "[rule.any]\ntext = 'no such study anywhere'\n"
        )
        result = cli("drl", "-m", "MG", extra={"KERMA_EXAM_RULES_PATH": str(rules)})
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "3 MG studies match the filter, but none is mapped to a standard exam" in text
        assert "kerma exams" in text

"""One name per quantity: a KAP is the same number in the same unit everywhere it is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kerma.cli.main import app
from kerma.services.registry import Registry
from kerma.units import LABELS, QUANTITIES
from tests.db_fixtures import TEST_PSEUDONYM_KEY
from tests.services.builders import add_study


def _env(registry: Registry) -> dict[str, str]:
    """Return the environment of CLI runs on ``registry``."""
    return {
        "KERMA_DATABASE_URL": registry.settings.database_url,
        "KERMA_ARCHIVE_DIR": str(registry.settings.archive_dir),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "200",
    }


def _kerma(registry: Registry, *args: str) -> str:
    """Run ``kerma ARGS`` on the registry; return its output (exit code 0 asserted)."""
    result = CliRunner().invoke(app, list(args), env=_env(registry), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _rows(path: Path) -> list[dict[str, str]]:
    """Return the CSV rows as text."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class TestKapEverywhere:
    """The XA study's KAP through the API, `kerma studies --csv` and `kerma stats --out`."""

    def test_same_number_same_unit(self, crafted, tmp_path: Path) -> None:
        """0.005 Gy·m² under dap_total_gym2 in the API, the study CSV and the statistics CSV."""
        registry, ids = crafted
        api = registry.studies().set_index("study_id").loc[ids["xa"], "dap_total_gym2"]
        assert api == pytest.approx(0.005)  # Gy·m², as the name says

        studies_csv = tmp_path / "studies.csv"
        _kerma(registry, "studies", "--csv", str(studies_csv))
        row = next(r for r in _rows(studies_csv) if r["study_id"] == str(ids["xa"]))
        assert float(row["dap_total_gym2"]) == api

        stats_csv = tmp_path / "stats.csv"
        _kerma(registry, "stats", "-m", "RF/XA", "--stored", "--out", str(stats_csv))
        stats = pd.read_csv(stats_csv).set_index("quantity")
        assert stats.loc["dap_total_gym2", "unit"] == "Gy·m²"
        assert stats.loc["dap_total_gym2", "median"] == api
        assert stats.loc["dap_total_gym2", "n"] == 1

    def test_display_units_say_so_in_the_header(self, crafted, tmp_path: Path) -> None:
        """--units display: 'KAP total (Gy·cm²)' = 50 in both files, the statistics too."""
        registry, ids = crafted
        studies_csv = tmp_path / "studies.csv"
        _kerma(registry, "studies", "--csv", str(studies_csv), "--units", "display")
        row = next(r for r in _rows(studies_csv) if r["study_id"] == str(ids["xa"]))
        assert "dap_total_gym2" not in row
        assert float(row["KAP total (Gy·cm²)"]) == pytest.approx(50.0)
        assert float(row["Ka,r total (mGy)"]) == pytest.approx(1200.0)  # the larger plane

        stats_csv = tmp_path / "stats.csv"
        _kerma(registry, "stats", "-m", "RF/XA", "--stored", "--out", str(stats_csv),
               "--units", "display")  # fmt: skip
        stats = pd.read_csv(stats_csv).set_index("quantity")
        assert stats.loc["KAP total", "unit"] == "Gy·cm²"
        assert stats.loc["KAP total", "median"] == pytest.approx(50.0)

    def test_table_shows_display_units(self, crafted) -> None:
        """`kerma studies` prints the KAP in Gy·cm² under a header that says so."""
        registry, _ = crafted
        output = _kerma(registry, "studies")
        header = [line for line in output.splitlines() if "KAP total" in line]
        assert header, output
        column = next(i for i, cell in enumerate(header[0].split("┃")) if "KAP total" in cell)
        units_line = output.splitlines()[output.splitlines().index(header[0]) + 1]
        assert units_line.split("┃")[column].strip() == "(Gy·cm²)"
        line = next(line for line in output.splitlines() if "CORONARY" in line)
        assert line.split("│")[column].strip() == "50"  # 0.005 Gy·m² = 50 Gy·cm²


class TestNumbersWithoutNoise:
    """CSV numbers carry at most 10 significant digits: no binary float noise."""

    def test_sum_written_clean(self, registry: Registry, tmp_path: Path) -> None:
        """DLP 700.1 + 0.2 = 700.3 (700.3000000000001 in binary) is written 700.3."""
        with registry.session() as session:
            add_study(
                session,
                device_name="CT",
                modality="CT",
                study_date="2024-01-01",
                events=[
                    {"ctdivol_mgy": 10.0, "dlp_mgycm": 700.1},
                    {"ctdivol_mgy": 10.0, "dlp_mgycm": 0.2},
                ],
            )
        assert 700.1 + 0.2 != 700.3  # the noise is real
        path = tmp_path / "studies.csv"
        _kerma(registry, "studies", "--csv", str(path))
        text = path.read_text()
        assert ",700.3," in text
        assert "700.3000000000001" not in text


def test_every_label_has_its_display_unit() -> None:
    """The label table gives label (display unit) for each name; KAP and Ka,r converted."""
    assert LABELS["dap_gym2"] == "KAP (Gy·cm²)"
    assert LABELS["dose_rp_total_gy"] == "Ka,r total (mGy)"
    assert LABELS["patient_size_m"] == "Height (Patient's Size) (m)"
    assert QUANTITIES["dap_total_gym2"].factor == 1e4
    assert QUANTITIES["dose_rp_gy"].factor == 1e3
    for name, quantity in QUANTITIES.items():
        assert quantity.name == name
        assert name.endswith(("_years", "_kg")) or quantity.unit  # every quantity has a unit

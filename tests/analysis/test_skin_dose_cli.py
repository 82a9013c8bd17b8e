"""CliRunner tests of ``kerma skin-dose`` (kerma.cli.skin) on a SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kerma.analysis.skin_dose import (
    METHOD_KAR,
    METHOD_PYSKINDOSE,
    SKIN_DOSE_COLUMNS,
    is_pyskindose_available,
)
from kerma.cli.main import app
from kerma.errors import NotFoundError
from tests.analysis.test_skin_dose import (
    DICOM_DIR,
    NO_MODEL,
    SUPPORTED,
    _study_uid,
    expected_ka_r_mgy,
    write_scaled_copy,
)
from tests.db_fixtures import TEST_PSEUDONYM_KEY

runner = CliRunner()

#: Dose (RP) factor of the synthetic copy of the Philips Allura RDSR: 4.27 mGy -> 5126 mGy.
FACTOR = 1200


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a SQLite registry: AXIOM-Artis, Philips Allura and a high-Ka,r copy."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    if not is_pyskindose_available():
        pytest.skip("pyskindose is not installed")
    import kerma
    from tests.db_fixtures import make_settings

    root = tmp_path_factory.mktemp("skin-cli")
    synthetic = write_scaled_copy(
        DICOM_DIR / NO_MODEL, root / "high-kar.dcm", factor=FACTOR, seed="kerma-cli-srdl"
    )
    settings = make_settings(f"sqlite:///{root / 'k.db'}", root)
    with kerma.Registry(settings=settings) as registry:
        registry.import_paths([DICOM_DIR / SUPPORTED, DICOM_DIR / NO_MODEL, synthetic])
    return {
        "KERMA_DATABASE_URL": settings.database_url,
        "KERMA_ARCHIVE_DIR": str(settings.archive_dir),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "120",
    }


@pytest.mark.slow
class TestSkinDoseCommand:
    """``kerma skin-dose`` computes what is missing, prints the table, writes the CSV."""

    def test_first_run_computes_prints_and_writes_csv(
        self, registry_env: dict[str, str], tmp_path: Path
    ) -> None:
        """The table, notes and count line are printed; the CSV holds every column."""
        out = tmp_path / "skin.csv"
        result = runner.invoke(app, ["skin-dose", "--out", str(out)], env=registry_env)
        assert result.exit_code == 0, result.output
        text = result.output
        for header in (
            "date",
            "device",
            "method",
            "Peak skin dose",  # label and display unit from kerma.units.QUANTITIES
            "Ka,r total",
            "KAP total",
            "(mGy)",
            "(Gy·cm²)",
            "SRDL",
            "map",
        ):
            assert header in text
        assert "AXIS01475" in text  # the device display name: its station name
        high_kar_mgy = FACTOR * expected_ka_r_mgy(NO_MODEL)
        assert f"Ka,r {high_kar_mgy:.0f} mGy >= 5000 mGy (NCRP Report No. 168, 2010, SRDL)" in text
        assert "(0008,1090) 'Manufacturer's Model Name'" in text
        assert (
            "3 studies: 1 peak skin dose by PySkinDose, 2 Ka,r fallback; 1 at or above an "
            "NCRP 168 SRDL (computed now: 3, stored before: 0)"
        ) in " ".join(text.split())
        assert max(len(line) for line in text.splitlines()) <= 120

        table = pd.read_csv(out, keep_default_na=False, na_values=[""])
        assert list(table.columns) == [*SKIN_DOSE_COLUMNS, "is_computed_now"]
        assert len(table) == 3
        rows = table.set_index("study_instance_uid")
        supported = rows.loc[_study_uid(SUPPORTED)]
        assert supported["method"] == METHOD_PYSKINDOSE
        assert supported["peak_skin_dose_mgy"] == pytest.approx(1.302, abs=0.001)
        assert supported["map_path"].startswith("skin_dose_maps/")
        allura = rows.loc[_study_uid(NO_MODEL)]
        assert allura["method"] == METHOD_KAR
        assert allura["dose_rp_total_gy"] == pytest.approx(expected_ka_r_mgy(NO_MODEL) / 1000)
        assert not bool(allura["srdl_exceeded"])
        high = table[table["srdl_exceeded"].astype(bool)]
        assert len(high) == 1
        assert high.iloc[0]["dose_rp_total_gy"] == pytest.approx(
            FACTOR * expected_ka_r_mgy(NO_MODEL) / 1000
        )
        assert high.iloc[0]["method"] == METHOD_KAR

    def test_second_run_reads_stored(self, registry_env: dict[str, str]) -> None:
        """A re-run computes nothing; --study limits the rows."""
        runner.invoke(app, ["skin-dose"], env=registry_env)
        result = runner.invoke(
            app, ["skin-dose", "--study", _study_uid(SUPPORTED)], env=registry_env
        )
        assert result.exit_code == 0, result.output
        assert (
            "1 studies: 1 peak skin dose by PySkinDose, 0 Ka,r fallback; 0 at or above an "
            "NCRP 168 SRDL (computed now: 0, stored before: 1)"
        ) in " ".join(result.output.split())

    def test_date_range_excludes_studies(self, registry_env: dict[str, str]) -> None:
        """--since after every study date gives an empty table, not an error."""
        result = runner.invoke(app, ["skin-dose", "--since", "2099-01-01"], env=registry_env)
        assert result.exit_code == 0, result.output
        assert "0 studies: 0 peak skin dose by PySkinDose" in " ".join(result.output.split())

    def test_unknown_study_is_a_clear_error(self, registry_env: dict[str, str]) -> None:
        """An unknown UID raises NotFoundError (exit 2 through kerma.cli.main.main)."""
        result = runner.invoke(app, ["skin-dose", "--study", "1.2.3.4"], env=registry_env)
        assert isinstance(result.exception, NotFoundError)
        assert "Study Instance UID 1.2.3.4" in str(result.exception)

    def test_bad_date_is_a_usage_error(self, registry_env: dict[str, str]) -> None:
        """A date that is not YYYY-MM-DD is rejected by the option parser."""
        result = runner.invoke(app, ["skin-dose", "--since", "2018-13-01"], env=registry_env)
        assert result.exit_code == 2
        text = " ".join(result.output.split())
        assert "'2018-13-01' is not a date: write it as YYYY-MM-DD" in text

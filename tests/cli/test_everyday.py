"""Everyday commands (#10): option ranges are usage errors; cumulative lists patients with dose."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from kerma.db.models import Study
from tests.conftest import DICOM_DIR
from tests.db_fixtures import TEST_PSEUDONYM_KEY, make_settings

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)


def cli_env(url: str, folder: Path) -> dict[str, str]:
    """Return the environment of a CLI run on the test registry."""
    return {
        "KERMA_DATABASE_URL": url,
        "KERMA_ARCHIVE_DIR": str(folder / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "250",
    }


class TestOptionRanges:
    """Out-of-range options are usage errors (exit 2) naming what is allowed."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["cumulative", "--window", "-3"],
                "'--window': Input should be greater than or equal to 1",
            ),
            (["patient", "X", "--window", "0"], "greater than or equal to 1"),
            (["studies", "-m", "XYZ"], "'XYZ' is not a dose modality; use CR, CT, DX"),
            (["summary", "-m", "CT,XYZ"], "'XYZ' is not a dose modality"),
            (["listen", "--port", "99999"], "use 0 to 65535"),
        ],
        ids=["window", "patient-window", "modality", "modality-list", "port"],
    )
    def test_out_of_range_option_is_a_usage_error(
        self, tmp_path: Path, args: list[str], message: str
    ) -> None:
        """Each option names its allowed values; nothing runs."""
        env = cli_env(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())


class TestCumulative:
    """kerma cumulative."""

    def test_patient_without_dose_is_not_listed(self, database_url: str, tmp_path: Path) -> None:
        """A patient whose only study holds no DLP, Ka,r or KAP is left out."""
        settings = make_settings(database_url, tmp_path)
        with Registry(settings=settings) as reg:
            reg.import_paths(
                [
                    DICOM_DIR / "RF-RDSR-Philips_Allura.dcm",
                    DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm",
                ]
            )
            before = reg.cumulative(window_days=36500)  # both studies, years apart
            assert len(before) == 2
            with reg.session() as session:  # the CT study's dose is unknown
                session.execute(
                    update(Study)
                    .where(Study.modality_family == "CT")
                    .values(ct_dlp_total_mgycm=None, effective_dose_msv=None)
                )
            after = reg.cumulative(window_days=36500)
        assert len(after) == 1
        assert after["number_of_fluoro_studies"].tolist() == [1]
        result = CliRunner().invoke(
            app, ["cumulative", "--window", "36500"], env=cli_env(database_url, tmp_path)
        )
        assert result.exit_code == 0, result.output
        assert result.output.count("P-") == 1

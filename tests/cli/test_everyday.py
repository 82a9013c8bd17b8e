"""Everyday commands (#10): option ranges are usage errors; cumulative lists patients with dose."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import typer
from sqlalchemy import update
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from kerma.db.models import SkinDoseEstimate, Study
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
            # Click's wording ("not in the range x>=1"; newer Typer: "greater than or
            # equal to 1") names the allowed range either way
            (["cumulative", "--window", "-3"], ("'--window'", "x>=1|equal to 1")),
            (["patient", "X", "--window", "0"], ("'--window'", "x>=1|equal to 1")),
            (["studies", "-m", "XYZ"], "'XYZ' is not a dose modality; use CR, CT, DX"),
            (["summary", "-m", "CT,XYZ"], "'XYZ' is not a dose modality"),
            (["listen", "--port", "99999"], "use 0 to 65535"),
            (
                ["alerts", "list", "--state", "shut"],
                "'shut' is not an alert state; use open, under_review, closed",
            ),
        ],
        ids=[
            "window",
            "patient-window",
            "modality",
            "modality-list",
            "port",
            "alert-state",
        ],
    )
    def test_out_of_range_option_is_a_usage_error(
        self, tmp_path: Path, args: list[str], message: str | tuple[str, ...]
    ) -> None:
        """Each option names its allowed values; nothing runs."""
        env = cli_env(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 2, result.output
        out = " ".join(result.output.split())
        for part in (message,) if isinstance(message, str) else message:
            assert any(alternative in out for alternative in part.split("|")), out


def test_studies_caption_names_the_order_of_the_rows() -> None:
    """A listing cut by --limit says which rows it shows: the newest, or the first in the
    --sort order (regression: 'newest' was said of rows sorted by dose)."""
    from kerma.cli.registry import page_note

    assert page_note(page=1, offset=0, shown=5, total=105, sort=None) == (
        "showing the newest 5 of 105; use --limit N (0 = all) or --page N"
    )
    assert page_note(page=1, offset=0, shown=5, total=105, sort="dap_total_gym2:desc") == (
        "showing the first 5 of 105 by dap_total_gym2:desc; use --limit N (0 = all) or --page N"
    )
    assert page_note(page=2, offset=50, shown=50, total=105, sort=None) == (
        "page 2: rows 51-100 of 105"
    )
    assert page_note(page=1, offset=0, shown=105, total=105, sort=None) is None
    # a page past the last is a usage error naming the last page (regression: it printed
    # "page 999: rows 49901-49900 of 1016")
    with pytest.raises(typer.BadParameter, match=r"page 5 is past the last page, 3 \(105"):
        page_note(page=5, offset=200, shown=0, total=105, sort=None)


def test_studies_on_an_empty_registry_says_what_to_do(tmp_path: Path) -> None:
    """kerma studies before any import (or before pointing at the demo registry) names the
    registry and the two ways to fill it (regression: an empty table and nothing else)."""
    env = cli_env(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
    result = CliRunner().invoke(app, ["studies"], env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"The registry sqlite:///{tmp_path / 'k.db'} holds no study yet" in out
    assert "kerma import PATH" in out and "KERMA_DATABASE_URL=sqlite:///kerma-demo.db" in out


def test_studies_of_an_unknown_room_or_exam_is_a_usage_error(tmp_path: Path) -> None:
    """A --device text or --exam name that names nothing is refused, naming what is there
    (regression: an empty table, read as "no dose data"); a known one that selects no
    study with the other filters is an empty table as before."""
    settings = make_settings(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
    with Registry(settings=settings) as reg:
        reg.import_paths([DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm"])
        exam = str(reg.studies()["standard_exam"].iloc[0])
    env = cli_env(settings.database_url, tmp_path)
    runner = CliRunner()
    nope = runner.invoke(app, ["studies", "--device", "NOPE"], env=env)
    assert nope.exit_code == 2, nope.output
    assert "no device name contains 'NOPE'" in " ".join(nope.output.split())
    wrong = runner.invoke(app, ["studies", "--exam", "CT Elbow"], env=env)
    assert wrong.exit_code == 2, wrong.output
    text = " ".join(wrong.output.split())
    assert "no study is mapped to 'CT Elbow'" in text and exam in text
    dated = runner.invoke(app, ["studies", "--exam", exam, "--from", "2099-01-01"], env=env)
    assert dated.exit_code == 0, dated.output


@pytest.mark.parametrize("command", [["alerts", "list"], ["skin-dose"]])
def test_date_options_say_how_to_write_a_date(tmp_path: Path, command: list[str]) -> None:
    """--since of alerts list and skin-dose: Kerma's own date message (as --from of the
    other commands), not Click's list of strptime formats."""
    env = cli_env(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
    result = CliRunner().invoke(app, [*command, "--since", "yesterday"], env=env)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "'yesterday' is not a date: write it as YYYY-MM-DD" in text
    assert "%Y" not in text
    ok = CliRunner().invoke(app, [*command, "--since", "2026-01-31"], env=env)
    assert ok.exit_code == 0, ok.output


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


class TestSettingsPaths:
    """Folder and file settings are made absolute once, at configuration."""

    def test_relative_archive_dir_is_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The default ./kerma-archive becomes <working directory>/kerma-archive."""
        from kerma.config import Settings

        monkeypatch.chdir(tmp_path)
        settings = Settings(_env_file=None, archive_dir="kerma-archive")  # type: ignore[call-arg]
        assert settings.archive_dir == tmp_path / "kerma-archive"
        assert settings.archive_dir.is_absolute()
        monkeypatch.chdir("/")
        assert settings.archive_dir == tmp_path / "kerma-archive"


class TestSkinDoseDefaultConfiguration:
    """kerma skin-dose from a fresh folder with the default (relative) configuration."""

    def test_pyskindose_runs_with_relative_archive_and_failures_are_retried(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """PySkinDose (a child process in another folder) reads the archived RDSR; a stored
        failure whose cause has gone is computed again without --recompute."""
        from kerma.analysis.skin_dose import METHOD_PYSKINDOSE, is_pyskindose_available

        if not is_pyskindose_available():
            pytest.skip("pyskindose is not installed (pip install -e '.[skin]')")
        monkeypatch.chdir(tmp_path)
        env: dict[str, str | None] = {
            "KERMA_DATABASE_URL": None,  # the defaults: sqlite:///kerma.db, ./kerma-archive
            "KERMA_ARCHIVE_DIR": None,
            "KERMA_PSEUDONYM_KEY": None,
            "COLUMNS": "200",
        }
        runner = CliRunner()
        path = DICOM_DIR / "PSD-siemens_axiom_artis.dcm"
        assert runner.invoke(app, ["import", str(path)], env=env).exit_code == 0
        out = tmp_path / "skin.csv"
        result = runner.invoke(app, ["skin-dose", "--out", str(out)], env=env)
        assert result.exit_code == 0, result.output
        frame = pd.read_csv(out)
        assert frame["method"].tolist() == [METHOD_PYSKINDOSE]
        assert (tmp_path / "kerma-archive" / frame["map_path"][0]).is_file()
        # an estimate that failed on a file error (as with a relative archive before)
        settings = make_settings(
            "sqlite:///kerma.db", tmp_path, archive_dir="kerma-archive", pseudonym_key=None
        )
        with Registry(settings=settings) as reg, reg.session() as session:
            session.execute(
                update(SkinDoseEstimate).values(
                    method="Ka,r",
                    peak_skin_dose_mgy=None,
                    reason="PySkinDose failed on this RDSR: FileNotFoundError: [Errno 2] "
                    "No such file or directory: 'kerma-archive/89/6b/x.dcm'",
                )
            )
        result = runner.invoke(app, ["skin-dose", "--out", str(out)], env=env)
        assert result.exit_code == 0, result.output
        assert "computed now: 1" in result.output
        assert pd.read_csv(out)["method"].tolist() == [METHOD_PYSKINDOSE]


@pytest.mark.parametrize("command", [["reprocess"], ["alerts", "recheck"], ["exams", "--apply"]])
def test_chunk_size_without_queue_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    """--chunk-size sizes queued jobs; without --queue it would be silently ignored."""
    env = cli_env(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
    result = CliRunner().invoke(app, [*command, "--chunk-size", "5"], env=env)
    assert result.exit_code == 2, result.output
    assert "--chunk-size sizes the jobs of --queue" in " ".join(result.output.split())

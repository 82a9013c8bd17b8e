"""CliRunner tests of ``kerma export csv|xlsx|survey|parquet`` (kerma.cli.export), SQLite."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from kerma.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite registry holding 12 generated demo dose reports (synthetic, no PHI)."""
    import kerma
    from kerma.config import get_settings
    from kerma.demo.generator import generate_demo_files

    root = tmp_path_factory.mktemp("registry")
    files = generate_demo_files(root / "files", studies=12, seed=5, end_date=dt.date(2026, 6, 30))
    env = {
        "KERMA_DATABASE_URL": f"sqlite:///{root / 'kerma.db'}",
        "KERMA_ARCHIVE_DIR": str(root / "archive"),
        "COLUMNS": "200",
    }
    settings = get_settings(database_url=env["KERMA_DATABASE_URL"], archive_dir=root / "archive")
    with kerma.Registry(settings=settings) as registry:
        registry.import_paths(files)
    return env


def test_xlsx_with_filters(registry_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "ct.xlsx"
    result = runner.invoke(
        app,
        ["export", "xlsx", "-m", "CT", "--from", "2025-01-01", "--out", str(out)],
        env=registry_env,
    )
    assert result.exit_code == 0, result.output
    assert "studies written to" in result.output
    workbook = openpyxl.load_workbook(out, read_only=True)
    assert workbook.sheetnames == ["Summary", "CT studies", "CT events"]


def test_csv_survey_and_parquet(registry_env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["export", "csv", "--out", str(tmp_path / "x.csv")], env=registry_env
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x_summary.csv").exists() and (tmp_path / "x_CT_studies.csv").exists()
    survey = tmp_path / "s.csv"
    result = runner.invoke(
        app, ["export", "survey", "--out", str(survey), "--dap-unit", "mGy.cm2"], env=registry_env
    )
    assert result.exit_code == 0, result.output
    with survey.open(encoding="utf-8-sig") as f:
        header = next(csv.reader(f))
    assert "KAP total median (mGy·cm²)" in header and "DLP median (mGy·cm)" in header
    bad = runner.invoke(
        app, ["export", "survey", "--out", str(survey), "--dap-unit", "Gy.m2"], env=registry_env
    )
    assert bad.exit_code == 2 and "not a KAP unit" in bad.output
    folder = tmp_path / "pq"
    first = runner.invoke(app, ["export", "parquet", "--out", str(folder)], env=registry_env)
    assert first.exit_code == 0 and "0 unchanged" in first.output, first.output
    second = runner.invoke(app, ["export", "parquet", "--out", str(folder)], env=registry_env)
    assert "0 months written" in second.output, second.output


def test_missing_output_folder_is_a_plain_message(tmp_path: Path) -> None:
    """--out in a folder that does not exist: exit 2 and Kerma's sentence, without the
    Python exception name (regression: "error: FileNotFoundError: Unable to write ...")."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("KERMA_")}
    env["KERMA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'kerma.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", "export", "xlsx", "--out", "no/such/x.xlsx"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "error: Unable to write no/such/x.xlsx: the folder" in message
    assert "does not exist" in message and "FileNotFoundError" not in message
    assert "Traceback" not in done.stderr


def _study_uid(env: dict[str, str]) -> str:
    """Return a Study Instance UID of the test registry."""
    from sqlalchemy import create_engine, text

    engine = create_engine(env["KERMA_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT min(study_instance_uid) FROM study")).scalar())
    finally:
        engine.dispose()


#: ``kerma export`` commands and an --out that cannot be written (root may write
#: anywhere else: nothing can create files in /proc), with the message's key words.
UNWRITABLE = [
    pytest.param(["parquet"], "/proc/x.parquet", "/proc/x.parquet: No such file", id="parquet"),
    pytest.param(["csv"], "/proc/x.csv", "/proc/x_summary.csv: No such file", id="csv"),
    pytest.param(["xlsx"], "/proc/x.xlsx", "/proc/x.xlsx: No such file", id="xlsx"),
    pytest.param(["survey"], "/proc/x.csv", "/proc/x.csv: No such file", id="survey"),
    pytest.param(["deid", "--key", "k" * 32], "/proc/x", "/proc/x: No such file", id="deid"),
    pytest.param(["fhir", "{uid}"], "/proc/x.json", "/proc/x.json: No such file", id="fhir"),
    pytest.param(["xlsx"], "{tmp}", "{tmp}: Is a directory; give --out a file name", id="dir"),
    pytest.param(
        ["parquet"],
        "{tmp}/file",
        "{tmp}/file: it is a file, and this export is a folder",
        id="parquet-on-file",
    ),
    pytest.param(
        ["survey"],
        "{tmp}/file/s.csv",
        "{tmp}/file/s.csv: {tmp}/file is a file, not a folder",
        id="file-as-folder",
    ),
]


@pytest.mark.parametrize(("command", "out", "expected"), UNWRITABLE)
def test_unwritable_output_is_one_line_naming_the_path(
    registry_env: dict[str, str], tmp_path: Path, command: list[str], out: str, expected: str
) -> None:
    """--out where nothing can be written: exit 2, one line `error: Unable to write PATH:
    reason; give --out ...` (regression: "FileNotFoundError: [Errno 2] ...")."""
    import os
    import subprocess
    import sys

    (tmp_path / "file").write_text("not a folder\n", encoding="utf-8")
    fill = {"tmp": str(tmp_path), "uid": _study_uid(registry_env)}
    args = [part.format(**fill) for part in command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERMA_")}
    env.update(registry_env)
    done = subprocess.run(
        [sys.executable, "-m", "kerma.cli.main", "export", *args, "--out", out.format(**fill)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    (line,) = errors
    assert line.startswith(f"error: Unable to write {expected.format(**fill)}"), line
    assert "give --out" in line, line
    assert "Errno" not in line and "Error:" not in line, line
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def two_site_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], int, int]:
    """A SQLite registry of 12 demo reports: the first 5 imported at North, the rest at
    South; return its environment and North's and every site's patient study count."""
    import kerma
    from kerma.config import get_settings
    from kerma.demo.generator import generate_demo_files
    from kerma.services import StudyFilter

    root = tmp_path_factory.mktemp("sites")
    files = sorted(
        generate_demo_files(root / "files", studies=12, seed=5, end_date=dt.date(2026, 6, 30))
    )
    env = {
        "KERMA_DATABASE_URL": f"sqlite:///{root / 'kerma.db'}",
        "KERMA_ARCHIVE_DIR": str(root / "archive"),
        "COLUMNS": "200",
    }
    for site, part in (("North", files[:5]), ("South", files[5:])):
        settings = get_settings(
            database_url=env["KERMA_DATABASE_URL"], archive_dir=root / "archive", site=site
        )
        with kerma.Registry(settings=settings) as registry:
            registry.import_paths(part)
    with kerma.Registry(
        settings=get_settings(database_url=env["KERMA_DATABASE_URL"], archive_dir=root / "archive")
    ) as registry:
        north = registry.list_studies(StudyFilter(site_names=("North",)), limit=1).total
        every = registry.list_studies(StudyFilter(), limit=1).total
    assert 0 < north < every, (north, every)
    return env, north, every


def test_spreadsheets_and_survey_take_site(
    two_site_env: tuple[dict[str, str], int, int], tmp_path: Path
) -> None:
    """``--site`` as on ``kerma studies`` (README "Exports": the filters of kerma studies;
    regression: "No such option: --site"): the workbook holds North's studies only, the CSV
    set and the survey are written; an unknown site is a usage error naming the sites."""
    env, north, every = two_site_env
    out = tmp_path / "north.xlsx"
    result = runner.invoke(app, ["export", "xlsx", "--site", "North", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert f"{north} studies written to" in result.output, result.output
    every_out = runner.invoke(app, ["export", "xlsx", "--out", str(tmp_path / "a.xlsx")], env=env)
    assert f"{every} studies written to" in every_out.output, every_out.output
    csv_set = runner.invoke(
        app, ["export", "csv", "--site", "north", "--out", str(tmp_path / "n.csv")], env=env
    )
    assert csv_set.exit_code == 0 and (tmp_path / "n_summary.csv").exists(), csv_set.output
    for command in ("csv", "survey"):
        refused = runner.invoke(
            app,
            ["export", command, "--site", "East", "--out", str(tmp_path / f"e-{command}.csv")],
            env=env,
        )
        assert refused.exit_code == 2, refused.output
        text = " ".join(refused.output.split())
        assert "No site named 'East'. The sites are: North, South." in text, text
        assert not (tmp_path / f"e-{command}.csv").exists()
    survey = runner.invoke(
        app, ["export", "survey", "--site", "South", "--out", str(tmp_path / "s.csv")], env=env
    )
    assert survey.exit_code == 0, survey.output

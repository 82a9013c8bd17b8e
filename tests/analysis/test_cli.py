"""CliRunner tests of ``kerma drl sets``, ``kerma drl``, ``kerma stats``, ``kerma exams``,
``kerma cumulative`` (kerma.cli.analysis)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kerma.analysis.reference import list_drl_sets
from kerma.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite registry holding 10 generated demo dose reports (synthetic, no PHI)."""
    import kerma
    from kerma.config import get_settings
    from kerma.demo.generator import generate_demo_files

    root = tmp_path_factory.mktemp("registry")
    files = generate_demo_files(root / "files", studies=10, seed=11, end_date=dt.date(2026, 6, 30))
    env = {
        "KERMA_DATABASE_URL": f"sqlite:///{root / 'kerma.db'}",
        "KERMA_ARCHIVE_DIR": str(root / "archive"),
        "KERMA_DRL_MIN_SAMPLE": "1",
        "COLUMNS": "250",
    }
    settings = get_settings(database_url=env["KERMA_DATABASE_URL"], archive_dir=root / "archive")
    with kerma.Registry(settings=settings) as registry:
        registry.import_paths(files)
    return env


class TestDrlSets:
    """``kerma drl sets`` lists the packaged DRL sets."""

    def test_lists_regions_sources_and_grades(self) -> None:
        """The table names regions, sources, years and verification grades."""
        result = runner.invoke(app, ["drl", "sets"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for text in ("EU", "UK", "EUCLID", "UKHSA NDRL", "verification", "secondary", "2021"):
            assert text in result.output

    def test_out_writes_every_set(self, tmp_path: Path) -> None:
        """--out writes one CSV row per set."""
        out = tmp_path / "sets.csv"
        result = runner.invoke(app, ["drl", "sets", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(out, keep_default_na=False)) == len(list_drl_sets())


@pytest.mark.slow
class TestCommandsOnRegistry:
    """The analysis commands on a real SQLite registry."""

    def test_drl_prints_comparison_and_writes_csv(
        self, registry_env: dict[str, str], tmp_path: Path
    ) -> None:
        """`kerma drl` prints exam, room, n, typical, DRL, source and status."""
        out = tmp_path / "drl.csv"
        result = runner.invoke(app, ["drl", "--out", str(out)], env=registry_env)
        assert result.exit_code == 0, result.output
        assert "DRL comparison" in result.output
        lines = result.output.splitlines()
        at = next(i for i, line in enumerate(lines) if "DRL source" in line)
        header = lines[at - 1] + lines[at]  # 'no age' / '(in n)' take two lines
        for word in (
            "exam",
            "room",
            "quantity",
            "n",
            "patients",
            "no age",
            "(in n)",
            "typical",
            "(median)",
        ):
            assert word in header
        assert "KERMA_DRL_UNKNOWN_AGE=adult" in result.output
        assert "no age (in n): values of unknown patient age, compared as adults" in result.output
        table = pd.read_csv(out, keep_default_na=False, na_values=[""])
        assert {
            "standard_exam",
            "device_name",
            "n",
            "n_unknown_age",
            "typical_value",
            "drl_value",
            "drl_exam",
            "status",
            "note",
        } <= set(table.columns)
        assert set(table["status"]) <= {
            "above",
            "below",
            "insufficient sample",
            "no DRL in the selected set",
            "no DRL without clinical indication",
        }
        with_drl = table[table["drl_value"].notna()]
        assert (with_drl["drl_region"] == "EU").all()
        assert (table["n_unknown_age"] <= table["n"]).all()  # 'adult': counted in n
        assert (table["unknown_age_policy"] == "adult").all()
        # patients (distinct studies) never exceed values; CT has one value per study
        assert (table["n_studies"] <= table["n"]).all()
        ct = table[table["quantity"].isin(["dlp_mgycm", "ctdivol_mgy"])]
        assert not ct.empty
        assert (ct["n_studies"] == ct["n"]).all()

    @pytest.mark.parametrize("columns", [120, 160])
    def test_drl_table_fits_without_splitting_words(
        self, registry_env: dict[str, str], tmp_path: Path, columns: int
    ) -> None:
        """At 120 and 160 columns: no line wider, status and exam words kept whole."""
        out = tmp_path / "drl.csv"
        env = registry_env | {"COLUMNS": str(columns), "KERMA_DRL_MIN_SAMPLE": "1000"}
        result = runner.invoke(app, ["drl", "--out", str(out)], env=env)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= columns
        table = pd.read_csv(out, keep_default_na=False)
        assert "insufficient sample" in set(table["status"])
        rows = [line for line in lines if "│" in line]
        assert any("│ insufficient sample" in line for line in rows)  # on one line
        cells = " ".join(c.strip() for line in rows for c in line.split("│"))
        for exam in set(table["standard_exam"]):
            for word in exam.replace("-", "- ").split():  # may break after a hyphen
                assert word in cells, (word, result.output)

    def test_drl_unknown_age_exclude_setting(
        self, registry_env: dict[str, str], tmp_path: Path
    ) -> None:
        """KERMA_DRL_UNKNOWN_AGE=exclude leaves unknown ages out of n and says so."""
        adult_csv, exclude_csv = tmp_path / "adult.csv", tmp_path / "exclude.csv"
        result = runner.invoke(app, ["drl", "--out", str(adult_csv)], env=registry_env)
        assert result.exit_code == 0, result.output
        env = registry_env | {"KERMA_DRL_UNKNOWN_AGE": "exclude"}
        result = runner.invoke(app, ["drl", "--out", str(exclude_csv)], env=env)
        assert result.exit_code == 0, result.output
        assert "KERMA_DRL_UNKNOWN_AGE=exclude" in result.output
        lines = result.output.splitlines()
        at = next(i for i, line in enumerate(lines) if "DRL source" in line)
        assert "(excl.)" in lines[at] and "no age" in lines[at - 1]
        assert "(in n)" not in result.output
        assert "no age (excl.): values of unknown patient age, excluded" in result.output
        key = ["standard_exam", "device_name", "quantity", "patient_group", "band_label", "view"]
        adult = pd.read_csv(adult_csv, keep_default_na=False).set_index(key)
        excluded = pd.read_csv(exclude_csv, keep_default_na=False).set_index(key)
        both = adult.join(excluded, lsuffix="_adult", rsuffix="_exclude", how="inner")
        assert not both.empty
        assert (both["n_adult"] - both["n_exclude"] == both["n_unknown_age_adult"]).all()
        assert (both["n_unknown_age_adult"] == both["n_unknown_age_exclude"]).all()
        assert (both["unknown_age_policy_exclude"] == "exclude").all()
        assert (both["unknown_age_policy_adult"] == "adult").all()

    def test_drl_bad_unknown_age_setting_is_refused(self, registry_env: dict[str, str]) -> None:
        """An unknown KERMA_DRL_UNKNOWN_AGE value is a configuration error, not a crash."""
        env = registry_env | {"KERMA_DRL_UNKNOWN_AGE": "child"}
        result = runner.invoke(app, ["drl"], env=env)
        assert result.exit_code != 0
        assert "drl_unknown_age" in result.output or "drl_unknown_age" in str(result.exception)

    def test_stats_groups_by_exam(self, registry_env: dict[str, str], tmp_path: Path) -> None:
        """`kerma stats` writes n/median/p95 per exam and quantity."""
        out = tmp_path / "stats.csv"
        result = runner.invoke(
            app, ["stats", "--by", "standard_exam", "--out", str(out)], env=registry_env
        )
        assert result.exit_code == 0, result.output
        table = pd.read_csv(out)
        assert {"standard_exam", "quantity", "n", "median", "p95"} <= set(table.columns)
        assert (table["n"] > 0).all()

    def test_exams_apply_writes_study_table(self, registry_env: dict[str, str]) -> None:
        """`kerma exams --apply` stores the standard exam on the studies."""
        import kerma
        from kerma.config import get_settings

        result = runner.invoke(app, ["exams", "--apply", "--no-rules"], env=registry_env)
        assert result.exit_code == 0, result.output
        assert "applied:" in result.output
        settings = get_settings(database_url=registry_env["KERMA_DATABASE_URL"])
        with kerma.Registry(settings=settings) as registry:
            studies = registry.studies(include_non_patient=True)
        ct = studies[studies["modality"] == "CT"]
        assert ct["standard_exam"].notna().all()

    def test_cumulative_prints_patients(self, registry_env: dict[str, str]) -> None:
        """`kerma cumulative` prints the per-patient window table."""
        result = runner.invoke(app, ["cumulative", "--window", "365"], env=registry_env)
        assert result.exit_code == 0, result.output
        assert "Cumulative dose per patient over 365 days" in result.output

    def test_stats_through_registry_match_numpy(
        self, registry_env: dict[str, str], tmp_path: Path
    ) -> None:
        """Per-room CT DLP statistics from `kerma stats` equal numpy on Registry.events()."""
        import numpy as np

        import kerma
        from kerma.config import get_settings

        out = tmp_path / "ct.csv"
        args = ["stats", "--by", "device_name", "-m", "CT", "-q", "ct_dlp_total_mgycm"]
        result = runner.invoke(app, [*args, "--out", str(out)], env=registry_env)
        assert result.exit_code == 0, result.output
        table = pd.read_csv(out).set_index("device_name")
        settings = get_settings(database_url=registry_env["KERMA_DATABASE_URL"])
        with kerma.Registry(settings=settings) as registry:
            events = registry.events(modality="CT")
        per_study = {
            sid: np.sum(group["dlp_mgycm"].to_numpy(dtype=float))
            for sid, group in events.groupby("study_id")
        }
        room_of = events.drop_duplicates("study_id").set_index("study_id")["device_name"]
        assert set(table.index) == set(room_of)
        for room in table.index:
            values = np.array([v for sid, v in per_study.items() if room_of[sid] == room])
            assert table.loc[room, "n"] == values.size
            assert table.loc[room, "median"] == pytest.approx(np.median(values))
            assert table.loc[room, "p95"] == pytest.approx(np.percentile(values, 95))


class TestUsageErrors:
    """Bad option values are usage errors (exit 2) naming the option and what it accepts."""

    @pytest.mark.parametrize(
        ("args", "option", "allowed"),
        [
            (["stats", "--age", "abc"], "'--age'", ["MIN-MAX", "0-18"]),
            (["stats", "--weight", "50-"], None, []),  # valid: open upper side
            (["stats", "--weight", "90-50"], "'--weight'", ["MIN must be below MAX"]),
            (["stats", "--by", "foo"], "'--by'", ["standard_exam", "device_name", "period"]),
            (["stats", "-q", "foo_bar"], "'-q'", ["dlp_total_mgycm", "agd_mgy", "ssde_mgy"]),
            (["stats", "-m", "XR"], "'-m'", ["CT, DX, MG, RF/XA"]),
            (["stats", "--sex", "X"], "'--sex'", ["M, F, O"]),
            (["stats", "--period", "decade"], "'--period'", ["month, quarter, year, week"]),
            (["drl", "--from", "yesterday"], "'--from'", ["YYYY-MM-DD"]),
            (["drl", "--to", "2026-02-30"], "'--to'", ["YYYY-MM-DD"]),
            (["cumulative", "--as-of", "2026/01/31"], "'--as-of'", ["YYYY-MM-DD"]),
        ],
        ids=[
            "age-not-a-band",
            "weight-open-band-ok",
            "weight-reversed",
            "by-unknown-grouping",
            "quantity-unknown",
            "modality-unknown",
            "sex-unknown",
            "period-unknown",
            "from-not-a-date",
            "to-not-a-calendar-date",
            "as-of-slashes",
        ],
    )
    def test_bad_value_exits_2_with_allowed_values(
        self, args: list[str], option: str | None, allowed: list[str], tmp_path: Path
    ) -> None:
        """The message names the option and the allowed values; no Python error text."""
        env = {
            "KERMA_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
            "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
            "COLUMNS": "250",
            "TERMINAL_WIDTH": "250",
        }
        result = runner.invoke(app, args, env=env)
        if option is None:
            assert result.exit_code == 0, result.output
            return
        assert result.exit_code == 2, result.output
        error = " ".join(result.output.split())  # undo the panel's line breaks
        assert f"Invalid value for {option}" in error or option.strip("'") in error
        for text in allowed:
            assert text in error
        for python_text in ("ValueError", "KeyError", "Traceback", "not in index"):
            assert python_text not in result.output

    def test_entry_point_prints_one_error_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        """`kerma stats --age abc` through main(): exit 2, one 'Error:' line, no ValueError."""
        from kerma.cli import main as cli_main

        monkeypatch.setenv("KERMA_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
        monkeypatch.setattr("sys.argv", ["kerma", "stats", "--age", "abc"])
        with pytest.raises(SystemExit) as exit_info:
            cli_main.main()
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("Error:")]
        assert errors == [
            "Error: Invalid value for '--age': 'abc' is not a band MIN-MAX in years: e.g. "
            "0-18, 18- or -16 (MIN included, MAX excluded)."
        ]
        assert "ValueError" not in captured.err + captured.out


@pytest.mark.slow
class TestEmptyResultsExplained:
    """Selections that give no rows say why instead of printing an empty table."""

    def test_unknown_exam_lists_exams_present(
        self, registry_env: dict[str, str], tmp_path: Path
    ) -> None:
        """`kerma drl -e "CT Brain"`: exit 2, no study mapped, the registry's exams listed."""
        out = tmp_path / "drl.csv"
        assert runner.invoke(app, ["drl", "--out", str(out)], env=registry_env).exit_code == 0
        exams = set(pd.read_csv(out)["standard_exam"])
        env = registry_env | {"TERMINAL_WIDTH": "2000"}
        for command in ("drl", "stats"):
            result = runner.invoke(app, [command, "-e", "CT Brain"], env=env)
            assert result.exit_code == 2, result.output
            error = " ".join(result.output.replace("│", " ").split())  # undo the panel wrap
            assert "no study is mapped to the exam 'CT Brain'; exams present:" in error
            assert "--exam" in error
            for exam in exams:
                assert exam in error

    def test_unknown_device_lists_devices(self, registry_env: dict[str, str]) -> None:
        """`kerma drl -d nosuch`: exit 2 naming --device and the devices present."""
        env = registry_env | {"TERMINAL_WIDTH": "2000"}
        result = runner.invoke(app, ["drl", "-d", "nosuch"], env=env)
        assert result.exit_code == 2, result.output
        error = " ".join(result.output.split())
        assert "no device name contains 'nosuch'; devices present:" in error

    def test_ssde_without_patient_size_says_how_to_get_one(
        self, registry_env: dict[str, str], tmp_path: Path
    ) -> None:
        """`kerma stats -q ssde_mgy` on RDSRs without size: the reason, no empty table."""
        out = tmp_path / "ssde.csv"
        result = runner.invoke(
            app, ["stats", "-q", "ssde_mgy", "--out", str(out)], env=registry_env
        )
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "no CT study in the selection has a patient size, so there is no SSDE" in text
        assert "kerma import <image folder>" in text
        assert "Dose statistics" not in text
        assert "effective dose: CT only" not in text
        assert len(pd.read_csv(out)) == 0

    def test_empty_quantity_reported_beside_others(self, registry_env: dict[str, str]) -> None:
        """`-q ct_dlp_total_mgycm,ssde_mgy`: DLP rows printed, the SSDE reason under them."""
        quantities = "ct_dlp_total_mgycm,ssde_mgy"
        args = ["stats", "-m", "CT", "--by", "modality_family", "-q", quantities]
        result = runner.invoke(app, args, env=registry_env)
        assert result.exit_code == 0, result.output
        assert "DLP total" in result.output  # the label of ct_dlp_total_mgycm
        assert "no statistics for ssde_mgy" in result.output

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
        header = next(line for line in result.output.splitlines() if "DRL source" in line)
        for word in ("exam", "room", "quantity", "n", "no age", "typical", "DRL source"):
            assert word in header
        assert "KERMA_DRL_UNKNOWN_AGE=adult" in result.output
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
        key = ["standard_exam", "device_name", "quantity", "patient_group", "band_label", "view"]
        adult = pd.read_csv(adult_csv, keep_default_na=False).set_index(key)
        excluded = pd.read_csv(exclude_csv, keep_default_na=False).set_index(key)
        both = adult.join(excluded, lsuffix="_adult", rsuffix="_exclude", how="inner")
        assert not both.empty
        assert (both["n_adult"] - both["n_exclude"] == both["n_unknown_age_adult"]).all()
        assert (both["n_unknown_age_adult"] == both["n_unknown_age_exclude"]).all()

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
        args = ["stats", "--by", "device_name", "-m", "CT", "-q", "dlp_total_mgycm"]
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

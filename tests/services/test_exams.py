"""Stored standard exams follow the rules in force: re-mapped when the fingerprint differs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from kerma.analysis.exams import load_exam_rules
from kerma.cli.main import app
from kerma.db.models import IrradiationEvent, Study
from kerma.services.registry import Registry
from tests.db_fixtures import TEST_PSEUDONYM_KEY

#: Site rules tried before the defaults: heads become chests, chest radiographs "Chest AP".
SITE_RULES = """
extend_defaults = true

[[rule]]
name = "site-head-as-chest"
exam = "CT Chest"
modality = "CT"
any = { study_description = "head" }

[[rule]]
name = "site-chest-ap"
exam = "Chest AP"
modality = "DX"
level = "event"
any = { acquisition_protocol = "chest" }
"""


def _site_registry(registry: Registry, tmp_path: Path) -> Registry:
    """Return a second registry object on the same database with the site rules in force."""
    rules = tmp_path / "site_rules.toml"
    rules.write_text(SITE_RULES)
    settings = registry.settings.model_copy(update={"exam_rules_path": rules})
    return Registry(settings=settings)


def _exams(registry: Registry) -> dict[int, tuple[str | None, str | None]]:
    """Return ``{study id: (exam, fingerprint)}``."""
    with registry.session(write=False) as session:
        rows = session.execute(
            select(Study.id, Study.standard_exam, Study.exam_rules_fingerprint)
        ).all()
    return {sid: (exam, fp) for sid, exam, fp in rows}


class TestRemapOnRulesChange:
    """ensure_exams_current maps again what other rules mapped, once."""

    def test_new_rules_remap_and_say_what_changed(self, crafted, tmp_path: Path) -> None:
        """Two CT head studies change exam, the DX projections too; a second call does nothing."""
        registry, ids = crafted
        defaults = load_exam_rules().fingerprint
        assert {fp for _, fp in _exams(registry).values()} == {defaults}
        site = _site_registry(registry, tmp_path)
        try:
            assert site.exam_rules.fingerprint != defaults
            e_before = registry.study(ids["ct1"]).study["effective_dose_msv"]
            result = site.ensure_exams_current()
            assert result.studies_remapped == 8  # all, the QA study included
            assert result.studies_changed == 2  # ct1 and ct3: CT Head -> CT Chest
            assert result.events_changed == 2  # the two DX projections: Chest PA -> Chest AP
            assert result.distinct_tuples <= 8
            exams = _exams(site)
            assert exams[ids["ct1"]][0] == exams[ids["ct3"]][0] == "CT Chest"
            assert exams[ids["ct2"]][0] == "CT Chest"
            assert {fp for _, fp in exams.values()} == {site.exam_rules.fingerprint}
            with site.session(write=False) as session:
                dx = session.scalars(
                    select(IrradiationEvent.standard_exam).where(
                        IrradiationEvent.study_id == ids["dx"]
                    )
                ).all()
            assert dx == ["Chest AP", "Chest AP"]
            # the CT values that depend on the exam were derived again (chest k-factor)
            e_after = site.study(ids["ct1"]).study["effective_dose_msv"]
            assert e_after != pytest.approx(e_before)
            assert site.ensure_exams_current().studies_remapped == 0
            # the samples follow: the DX projections are Chest AP samples now
            samples = site.samples(families=["DX"])
            assert set(samples["standard_exam"]) == {"Chest AP"}
        finally:
            site.close()

    def test_going_back_restores_the_default_mapping(self, crafted, tmp_path: Path) -> None:
        """Site rules, then the defaults again: the stored exams are the defaults' again."""
        registry, _ = crafted
        before = _exams(registry)
        site = _site_registry(registry, tmp_path)
        try:
            site.ensure_exams_current()
        finally:
            site.close()
        result = registry.ensure_exams_current()
        assert result.studies_remapped == 8
        assert _exams(registry) == before

    def test_apply_maps_everything_and_counts_changes(self, crafted) -> None:
        """apply_exams maps every study again (none changes under the same rules)."""
        registry, _ = crafted
        result = registry.apply_exams()
        assert result.studies_remapped == 8
        assert result.studies_changed == 0


@pytest.mark.slow
class TestCommandsSayTheyRemap:
    """`kerma stats` re-maps after a rules change and says so; `--stored` does not."""

    def test_stats_remaps_with_a_message(self, crafted, tmp_path: Path) -> None:
        """The message names the number of studies re-mapped; the output uses the new exams."""
        registry, _ = crafted
        rules = tmp_path / "site_rules.toml"
        rules.write_text(SITE_RULES)
        env = {
            "KERMA_DATABASE_URL": registry.settings.database_url,
            "KERMA_ARCHIVE_DIR": str(registry.settings.archive_dir),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "KERMA_EXAM_RULES_PATH": str(rules),
            "COLUMNS": "200",
        }
        runner = CliRunner()
        stored = runner.invoke(app, ["stats", "--stored", "-m", "CT"], env=env)
        assert stored.exit_code == 0, stored.output
        assert "re-mapped" not in stored.output
        assert "CT Head" in stored.output
        result = runner.invoke(app, ["stats", "-m", "CT"], env=env)
        assert result.exit_code == 0, result.output
        assert "exam rules changed since the stored mapping" in result.output
        assert "re-mapped 8 studies" in result.output
        assert "CT Head" not in result.output
        again = runner.invoke(app, ["stats", "-m", "CT"], env=env)
        assert "re-mapped" not in again.output

"""The importer every intake uses derives the study summary in the object's transaction."""

from __future__ import annotations

import pytest

from kerma.config import Settings
from kerma.services import intake_importer
from kerma.services.registry import Registry
from tests.conftest import CASES_DIR

C05 = [
    CASES_DIR / "C05-ct-siemens-continued-study-a.dcm",
    CASES_DIR / "C05-ct-siemens-continued-study-b.dcm",
]


@pytest.mark.skipif(not CASES_DIR.is_dir(), reason="../shared is not beside the repository")
class TestIntakeImporter:
    """services.intake_importer(settings): the SCP child, STOW-RS and the demo use it."""

    def test_each_object_refreshes_its_study(self, registry_settings: Settings) -> None:
        """After the first part of C05 the study holds 2 events; after the second, 4."""
        importer = intake_importer(registry_settings)
        registry = Registry(settings=registry_settings)
        try:
            importer.import_paths([C05[0]])
            first = registry.studies(include_non_patient=True).iloc[0]
            assert (first["number_of_events"], first["number_of_reports"]) == (2, 1)
            importer.import_paths([C05[1]])
            both = registry.studies(include_non_patient=True).iloc[0]
            assert (both["number_of_events"], both["number_of_reports"]) == (4, 2)
            assert both["ct_dlp_total_mgycm"] == pytest.approx(1056.7)
            assert both["standard_exam"] == "CT Head"
            assert both["acquisition_protocols"].split("; ")[0] == "Topogram 0.6 T20"
        finally:
            registry.close()
            importer.session_factory.kw["bind"].engine.dispose()

"""kerma.Registry: the Python API contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from sqlalchemy import select

import kerma
from kerma.api import Registry
from kerma.db.models import Study
from kerma.ingest.pipeline import ImportStatus
from kerma.records import EVENT_SCALAR_FIELDS
from tests.conftest import CASES_DIR, DICOM_DIR

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

C05 = [
    CASES_DIR / "C05-ct-siemens-continued-study-a.dcm",
    CASES_DIR / "C05-ct-siemens-continued-study-b.dcm",
]
XR220 = [DICOM_DIR / "DX-Im-GE_XR220-1.dcm", DICOM_DIR / "DX-Im-GE_XR220-2.dcm"]

#: The column lists of the shared contract, written out (not imported from kerma.api).
CONTRACT_EVENT_COLUMNS = [
    "event_id", "study_id", "study_instance_uid", "accession_number", "study_date", "study_time",
    "study_description", "requested_procedure_description", "procedure_reported", "study_modality",
    "patient_pseudonym", "patient_age_years", "patient_sex", "patient_weight_kg", "patient_size_m",
    "is_non_patient", "standard_exam", "device_id", "device_name", "manufacturer",
    "manufacturer_model_name", "station_name", "institution_name", "device_serial_number", "kind",
    *EVENT_SCALAR_FIELDS, "xray_sources",
]  # fmt: skip
CONTRACT_STUDY_COLUMNS = [
    "study_id", "study_instance_uid", "accession_number", "accession_pseudonym", "study_date",
    "study_time",
    "study_description", "requested_procedure_description", "procedure_reported", "modality",
    "modalities", "patient_pseudonym", "patient_age_years", "patient_sex", "patient_weight_kg",
    "patient_size_m", "is_non_patient", "standard_exam", "device_id", "device_name", "manufacturer",
    "manufacturer_model_name", "station_name", "number_of_events", "ct_dlp_total_mgycm",
    "dap_total_gym2", "dose_rp_total_gy", "fluoro_time_total_s", "agd_total_left_mgy",
    "agd_total_right_mgy", "administered_activity_total_mbq", "number_of_reports",
    "image_size_mm", "image_size_source", "modality_family", "acquisition_protocols",
    "ctdivol_mean_mgy", "ctdivol_max_mgy", "kvp_kv", "ssde_mgy", "ssde_size_mm",
    "ssde_size_source", "effective_dose_msv", "dap_total_plane_a_gym2", "dap_total_plane_b_gym2",
    "dose_rp_total_plane_a_gy", "dose_rp_total_plane_b_gy", "ssde_reference",
    "effective_dose_reference", "has_conflict",
]  # fmt: skip
CONTRACT_IGNORED_COLUMNS = [
    "sop_instance_uid", "sop_class_uid", "study_instance_uid", "series_instance_uid", "modality",
    "reason", "source", "received_at",
]  # fmt: skip


class TestRegistryBasics:
    """Construction, sessions and an empty registry."""

    def test_exported_as_kerma_registry(self) -> None:
        """kerma.Registry is kerma.api.Registry."""
        assert kerma.Registry is Registry

    def test_empty_registry_has_contract_columns(self, registry: Registry) -> None:
        """An empty registry returns empty frames with every contract column."""
        assert list(registry.events().columns) == CONTRACT_EVENT_COLUMNS
        assert list(registry.studies().columns) == CONTRACT_STUDY_COLUMNS
        assert registry.rejects().empty
        assert list(registry.ignored().columns) == CONTRACT_IGNORED_COLUMNS
        assert registry.ignored().empty
        assert registry.patient_sizes().empty
        assert registry.summary().empty

    def test_url_defaults_to_settings_database_url(self, registry_settings) -> None:
        """Registry() without url uses settings.database_url."""
        reg = Registry(settings=registry_settings)
        assert reg.url == registry_settings.database_url
        reg.close()

    def test_in_memory_sqlite_works(self, tmp_path: Path) -> None:
        """sqlite:// gives a working in-memory registry."""
        from tests.db_fixtures import make_settings

        reg = Registry("sqlite://", settings=make_settings("sqlite://", tmp_path))
        assert reg.studies().empty
        reg.close()

    def test_second_in_memory_registry_gets_its_schema(self, tmp_path: Path) -> None:
        """Each sqlite:// registry is a new database: the schema check is not cached by URL."""
        from tests.db_fixtures import make_settings

        for _ in range(2):
            reg = Registry("sqlite://", settings=make_settings("sqlite://", tmp_path))
            assert reg.studies().empty
            reg.close()

    @needs_shared
    def test_session_commits_and_rolls_back(self, registry: Registry) -> None:
        """Changes made in session() are committed; an error rolls them back."""
        registry.import_paths(C05)
        with registry.session() as session:
            session.scalars(select(Study)).one().standard_exam = "CT head"
        with pytest.raises(RuntimeError), registry.session() as session:
            session.scalars(select(Study)).one().standard_exam = "changed"
            raise RuntimeError("boom")
        assert registry.studies(include_non_patient=True)["standard_exam"].tolist() == ["CT head"]


@needs_shared
class TestFrames:
    """events(), studies() and their filters."""

    def test_events_one_row_per_current_event_with_values(self, registry: Registry) -> None:
        """C05 gives 4 events with their CTDIvol and DLP, typed columns."""
        registry.import_paths(C05)
        events = registry.events(include_non_patient=True)
        assert list(events.columns) == CONTRACT_EVENT_COLUMNS
        assert len(events) == 4
        assert sorted(events["dlp_mgycm"]) == pytest.approx([3.1, 3.4, 270.2, 780.0])
        assert set(events["modality"]) == {"CT"}
        assert set(events["kind"]) == {"rdsr-ct"}
        assert events["study_date"].dtype.kind == "M"
        assert events["study_date"].iloc[0] == pd.Timestamp("2024-01-15")
        assert events["is_non_patient"].dtype == bool
        assert set(events["device_name"]) == {"SYNTH01"}
        assert events["patient_pseudonym"].nunique() == 1
        assert len(events["patient_pseudonym"].iloc[0]) == 64

    def test_studies_totals_and_modalities(self, registry: Registry) -> None:
        """A CT study and a DX study with their totals and modalities."""
        registry.import_paths(C05 + XR220)
        studies = registry.studies(include_non_patient=True).set_index("modality")
        assert list(studies.loc["CT", ["number_of_events", "number_of_reports"]]) == [4, 2]
        assert studies.loc["CT", "ct_dlp_total_mgycm"] == pytest.approx(1056.7)
        assert studies.loc["CT", "modalities"] == "CT"
        assert studies.loc["DX", "dap_total_gym2"] == pytest.approx(4.1e-6 + 8.2e-6)
        assert studies.loc["DX", "number_of_events"] == 2
        assert pd.isna(studies.loc["DX", "ct_dlp_total_mgycm"])

    @pytest.mark.parametrize(
        ("kwargs", "n_studies"),
        [
            ({"modality": "CT"}, 1),
            ({"modality": "dx"}, 1),
            ({"modality": "MG"}, 0),
            ({"date_from": "2024-01-01"}, 1),
            ({"date_to": dt.date(2014, 9, 30)}, 1),
            ({"date_from": "2014-10-01", "date_to": "2023-12-31"}, 0),
            ({"device": "synthsomatom"}, 1),
            ({"device": "GE Healthcare Optima"}, 1),
            ({"device": "SYNTH01"}, 1),
            ({"device": "nothing like it"}, 0),
        ],
        ids=[
            "ct",
            "dx-lower",
            "mg",
            "from",
            "to",
            "gap",
            "model",
            "device-name",
            "station",
            "none",
        ],
    )
    def test_filters(self, registry: Registry, kwargs, n_studies) -> None:
        """Modality, date range and device filters select the right studies and events."""
        registry.import_paths(C05 + XR220)
        studies = registry.studies(include_non_patient=True, **kwargs)
        assert len(studies) == n_studies
        events = registry.events(include_non_patient=True, **kwargs)
        assert set(events["study_id"]) == set(studies["study_id"])

    def test_import_bytes_returns_the_outcome(self, registry: Registry) -> None:
        """import_bytes stores one object and says what it did."""
        outcome = registry.import_bytes(C05[0].read_bytes(), source="scp")
        assert outcome.status is ImportStatus.IMPORTED
        assert outcome.kind == "rdsr-ct"
        assert outcome.modality == "CT"
        assert outcome.number_of_events == 2
        assert registry.import_bytes(C05[0].read_bytes()).status is ImportStatus.ALREADY_PRESENT


@needs_shared
class TestSummary:
    """Registry.summary: medians and quartiles in canonical units."""

    def test_ct_and_dx_statistics(self, registry: Registry) -> None:
        """CTDIvol/DLP for CT and KAP in Gy·m² for DX, per protocol."""
        registry.import_paths(C05 + XR220)
        summary = registry.summary(include_non_patient=True)
        topogram = summary[summary["acquisition_protocol"] == "Topogram 0.6 T20"].set_index(
            "quantity"
        )
        assert topogram.loc["ctdivol_mgy", "label"] == "CTDIvol (mGy)"
        assert topogram.loc["ctdivol_mgy", "number_of_events"] == 2
        assert topogram.loc["ctdivol_mgy", "number_of_studies"] == 1
        assert topogram.loc["ctdivol_mgy", "median"] == pytest.approx(0.115)
        assert topogram.loc["dlp_mgycm", "median"] == pytest.approx(3.25)
        assert topogram.loc["dlp_mgycm", "p25"] == pytest.approx(3.175)
        assert topogram.loc["dlp_mgycm", "p75"] == pytest.approx(3.325)
        dx = summary[summary["modality"] == "DX"].set_index("quantity")
        assert list(dx.index) == ["dap_gym2"]  # no Ka,r in these headers
        assert dx.loc["dap_gym2", "label"] == "KAP (Gy·m²)"  # canonical unit, as named
        assert dx.loc["dap_gym2", "unit"] == "Gy·m²"
        assert dx.loc["dap_gym2", "number_of_studies"] == 1
        assert dx.loc["dap_gym2", "median"] == pytest.approx(6.15e-6)
        assert dx.loc["dap_gym2", "p25"] == pytest.approx(5.125e-6)
        assert dx.loc["dap_gym2", "p75"] == pytest.approx(7.175e-6)


class TestIgnored:
    """``keep_non_dose=False``: objects without dose data are listed, not kept."""

    def test_non_dose_image_listed_not_archived(self, registry: Registry, tmp_path: Path) -> None:
        """An MR image gives status ignored, an ignored row, no rejection, no archive file."""
        from tests.ingest.helpers import write_image_without_dose

        path = write_image_without_dose(tmp_path / "mr.dcm")
        data = path.read_bytes()
        outcome = registry.import_bytes(data, source="peer MODALITY1", keep_non_dose=False)
        assert outcome.status is ImportStatus.IGNORED
        assert outcome.archive_sha256 is None
        assert not outcome.is_stored
        ignored = registry.ignored()
        assert len(ignored) == 1
        row = ignored.iloc[0]
        ds = pydicom.dcmread(path)
        assert row["sop_instance_uid"] == ds.SOPInstanceUID
        assert row["study_instance_uid"] == ds.StudyInstanceUID
        assert row["series_instance_uid"] == ds.SeriesInstanceUID
        assert row["sop_class_uid"] == ds.SOPClassUID
        assert row["modality"] == "MR"
        assert row["source"] == "peer MODALITY1"
        assert "dose" in row["reason"]
        assert str(row["received_at"].tz) == "UTC"
        assert registry.rejects().empty
        archive = registry.settings.archive_dir
        assert not archive.exists() or not any(p.is_file() for p in archive.rglob("*.dcm"))

    def test_receiving_it_again_keeps_one_row(self, registry: Registry, tmp_path: Path) -> None:
        """The same object twice gives one ignored row, limit applies."""
        from tests.ingest.helpers import write_image_without_dose

        data = write_image_without_dose(tmp_path / "mr.dcm").read_bytes()
        registry.import_bytes(data, keep_non_dose=False)
        registry.import_bytes(data, keep_non_dose=False)
        assert len(registry.ignored()) == 1
        assert len(registry.ignored(limit=0)) == 0

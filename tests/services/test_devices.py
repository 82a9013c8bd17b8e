"""Rooms and devices: unique display names, rename and merge, kept across reprocessing."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from kerma.db.devices import DeviceNameError, automatic_names
from tests.conftest import DICOM_DIR
from tests.db_fixtures import TEST_PSEUDONYM_KEY

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

SOURCE = DICOM_DIR / "DX-Im-GE_XR220-1.dcm"


def synthetic_copy(folder: Path, name: str, *, station: str, serial: str, model: str) -> Path:
    """Write a copy of a DX image header as another study of another device (pydicom)."""
    ds = pydicom.dcmread(SOURCE)
    ds.StationName = station
    ds.DeviceSerialNumber = serial
    ds.ManufacturerModelName = model
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def rooms(tmp_path: Path) -> Path:
    """Four synthetic devices: three stations 'SYNTH01' (two of one model), one 'ROOM2'."""
    folder = tmp_path / "rooms"
    folder.mkdir()
    synthetic_copy(folder, "a", station="SYNTH01", serial="A1", model="Optima XR220")
    synthetic_copy(folder, "b", station="SYNTH01", serial="B2", model="Optima XR220")
    synthetic_copy(folder, "c", station="SYNTH01", serial="C3", model="Definium 8000")
    synthetic_copy(folder, "d", station="ROOM2", serial="D4", model="Optima XR220")
    return folder


def device_names(registry: Registry) -> dict[str, str]:
    """Return {serial number: display name} of every device."""
    frame = registry.devices()
    return dict(zip(frame["device_serial_number"], frame["device_name"], strict=True))


class TestDisplayNames:
    """Every device has a unique display name."""

    def test_colliding_station_names_are_made_unique(self, registry: Registry, rooms: Path) -> None:
        """SYNTH01 x3: model added, then serial; a unique station keeps its bare name."""
        registry.import_paths([rooms])
        assert device_names(registry) == {
            "A1": "SYNTH01 (Optima XR220 serial A1)",
            "B2": "SYNTH01 (Optima XR220 serial B2)",
            "C3": "SYNTH01 (Definium 8000)",
            "D4": "ROOM2",
        }
        studies = registry.studies()
        assert studies["device_name"].nunique() == 4

    def test_automatic_names_avoid_user_names(self) -> None:
        """A station named like a user's name gets its model added."""

        class D:
            def __init__(self, id_: int, station: str) -> None:
                self.id = id_
                self.station_name = station
                self.manufacturer = "ACME"
                self.manufacturer_model_name = "X1"
                self.device_serial_number = None

        assert automatic_names([D(1, "CT1"), D(2, "CT2")], taken=["ct1"]) == {
            1: "CT1 (X1)",
            2: "CT2",
        }


class TestRenameAndMerge:
    """kerma devices rename / merge, and their survival of kerma reprocess."""

    def test_rename_and_merge_survive_reprocess(self, registry: Registry, rooms: Path) -> None:
        """A user's name and a merge are kept when every object is extracted again."""
        registry.import_paths([rooms])
        frame = registry.devices()
        ids = dict(zip(frame["device_serial_number"], frame["device_id"], strict=True))
        registry.rename_device(ids["D4"], "Emergency DX")
        result = registry.merge_devices(ids["B2"], ids["A1"])  # one machine, two identities
        assert result.studies_moved == 1
        after = device_names(registry)
        assert after["D4"] == "Emergency DX"
        assert "B2" not in after
        registry.reprocess()
        assert device_names(registry) == after
        studies = registry.studies()
        per_device = studies.groupby("device_name").size().to_dict()
        assert per_device[after["A1"]] == 2
        assert per_device["Emergency DX"] == 1
        # statistics per room use the display name
        assert set(registry.devices()["device_name"]) == set(studies["device_name"])

    def test_rename_to_another_devices_name_is_refused(
        self, registry: Registry, rooms: Path
    ) -> None:
        """Two devices cannot share a display name; merge them instead."""
        registry.import_paths([rooms])
        with pytest.raises(DeviceNameError, match="merge the two"):
            registry.rename_device("ROOM2", "SYNTH01 (Definium 8000)")

    def test_cli_list_rename_merge(self, database_url: str, tmp_path: Path, rooms: Path) -> None:
        """The three subcommands through the CLI runner."""
        env = {
            "KERMA_DATABASE_URL": database_url,
            "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "COLUMNS": "250",
        }
        runner = CliRunner()
        assert runner.invoke(app, ["import", str(rooms)], env=env).exit_code == 0
        listed = runner.invoke(app, ["devices", "list"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "SYNTH01 (Definium 8000)" in listed.output
        renamed = runner.invoke(app, ["devices", "rename", "ROOM2", "Emergency DX"], env=env)
        assert renamed.exit_code == 0, renamed.output
        merged = runner.invoke(
            app,
            ["devices", "merge", "SYNTH01 (Optima XR220 serial B2)", "Emergency DX"],
            env=env,
        )
        assert merged.exit_code == 0, merged.output
        assert "1 studies moved" in merged.output
        listed = runner.invoke(app, ["devices", "list"], env=env)
        assert "Emergency DX" in listed.output
        assert "serial B2" not in listed.output


class TestMergeOfRdsrDevices:
    """Devices known by their TID 1004 Device Observer UID (RDSRs)."""

    def test_merge_of_devices_with_two_observer_uids_survives_reprocess(
        self, registry: Registry
    ) -> None:
        """Two ArtisZee records (observer UIDs differ, one keyed by observer UID because
        its serial '123456' is shared with a CT): merged, they stay one after reprocess."""
        registry.import_paths(
            [
                DICOM_DIR / "RF-RDSR-Siemens_Zee-HFS.dcm",
                DICOM_DIR / "OR1-RF-RDSR-Siemens-Zee_adjusted.dcm",
                DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm",
            ]
        )
        frame = registry.devices()
        artis = frame[frame["station_name"] == "ArtisZee"]
        assert len(artis) == 2
        source, target = artis["device_id"].tolist()
        registry.merge_devices(source, target)
        registry.reprocess()
        frame = registry.devices()
        artis = frame[frame["station_name"] == "ArtisZee"]
        assert artis["device_id"].tolist() == [target]
        assert artis["device_name"].tolist() == ["ArtisZee"]
        assert artis["number_of_studies"].tolist() == [2]
        assert len(frame) == 2  # and the CT

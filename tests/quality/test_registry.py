"""Quality indicators in the registry (issue #17), on SQLite and PostgreSQL.

A generated set: two rooms of DX images (EI and target, no DI), KOS 'Rejected for
Quality Reasons' documents imported before and after their images, a reject-log CSV
with a TOML mapping, and a CT series of known noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kerma.errors import ConfigurationError
from kerma.services import quality
from kerma.services.registry import Registry
from tests.conftest import DICOM_DIR
from tests.db_fixtures import BACKENDS, fresh_database, make_settings
from tests.quality.generators import ct_series, dx_image, rejection_kos, write

pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom missing")

#: Images per room and how many of them a KOS rejects.
ROOM_A = ("ROOM-A", "SN-A", 8, 3)
ROOM_B = ("ROOM-B", "SN-B", 4, 1)
SIGMA_HU = 12.0

MAPPING = """
[reject_log]
name = "Example DR reject log"
delimiter = ";"
datetime_format = "%d.%m.%Y %H:%M"
dap_unit = "dGy.cm2"
rejected_values = ["REJECTED"]

[reject_log.columns]
station_name = "Room"
acquisition_datetime = "Date"
body_part = "Body part"
reason = "Reason"
status = "Status"
sop_instance_uid = "SOP Instance UID"
dap = "DAP (dGy*cm2)"
"""


@dataclass
class Loaded:
    """The registry of the generated set and what the test knows about it."""

    registry: Registry
    rejected_uids: set[str]
    logged_uid: str
    log: Path
    mapping: Path


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    """Import the generated set; the first KOS before its images, the second after."""
    folder = tmp_path_factory.mktemp(f"quality-{request.param}")
    with fresh_database(request.param, folder) as url:
        registry = Registry(settings=make_settings(url, folder))
        files = folder / "objects"
        rejected: set[str] = set()
        for station, serial, n_images, n_rejected in (ROOM_A, ROOM_B):
            images = [
                dx_image(station=station, serial=serial, patient_id=f"P{i % 3}")
                for i in range(n_images)
            ]
            rejects = images[:n_rejected]
            rejected |= {im.SOPInstanceUID for im in rejects}
            kos = write(rejection_kos(rejects), files / station)
            if station == "ROOM-A":  # note first, images later
                assert registry.import_paths([kos]).n_imported == 1
                registry.import_paths([write(im, files / station) for im in images])
            else:  # images first, note later
                registry.import_paths([write(im, files / station) for im in images])
                assert registry.import_paths([kos]).n_imported == 1
        # an image of room B that only the reject log marks rejected
        logged = dx_image(station="ROOM-B", serial="SN-B", body_part="PELVIS")
        registry.import_paths([write(logged, files / "log")])
        log = folder / "rejects.csv"
        log.write_text(
            "Room;Date;Body part;Reason;Status;SOP Instance UID;DAP (dGy*cm2)\n"
            "DR-1;03.03.2026 09:10;CHEST;Positioning;REJECTED;;2.0\n"
            "DR-1;03.03.2026 09:12;CHEST;;ACCEPTED;;1.8\n"
            "DR-1;03.03.2026 10:00;KNEE;Motion;REJECTED;;0.5\n"
            "DR-1;03.03.2026 10:02;KNEE;;ACCEPTED;;0.4\n"
            f"ROOM-B;04.03.2026 08:00;PELVIS;Artefact;REJECTED;{logged.SOPInstanceUID};3.0\n"
            "DR-1;not a date;CHEST;;ACCEPTED;;1.0\n",
            encoding="utf-8",
        )
        mapping = folder / "mapping.toml"
        mapping.write_text(MAPPING, encoding="utf-8")
        registry.import_paths([write(ds, files / "ct") for ds in ct_series(sigma_hu=SIGMA_HU)])
        yield Loaded(registry, rejected, logged.SOPInstanceUID, log, mapping)
        registry.close()


class TestDeviationIndexStored:
    """DI calculated where only EI and target are given, aggregated per room."""

    def test_calculated_di_per_room(self, loaded: Loaded) -> None:
        """EI 500, EI_T 250 on every image: DI 3.0103, all outside ±1, none beyond ±3."""
        with loaded.registry.session(write=False) as session:
            frame = quality.exposure_index_summary(session, group_by=["room"])
        rows = frame.set_index("room")
        assert rows.loc["ROOM-A", "n_di"] == 8
        assert rows.loc["ROOM-B", "n_di"] == 5
        assert rows.loc["ROOM-A", "n_di_calculated"] == 8
        assert rows.loc["ROOM-A", "mean_di"] == pytest.approx(10 * math.log10(2), abs=1e-9)
        assert rows.loc["ROOM-A", "share_outside_1"] == 1.0
        assert rows.loc["ROOM-A", "share_outside_3"] == 1.0  # 3.0103 > 3
        assert rows.loc["ROOM-A", "[3,4)" if "[3,4)" in rows else ">=3"] == 8

    def test_grouped_by_detector_protocol_body_part_month(self, loaded: Loaded) -> None:
        """All four keys and the month trend group in the database."""
        with loaded.registry.session(write=False) as session:
            frame = quality.exposure_index_summary(
                session, group_by=["detector", "protocol", "body_part", "month"]
            )
        assert set(frame["detector"]) == {"DET-1"}
        assert set(frame["protocol"]) == {"Chest PA"}
        assert set(frame["body_part"]) == {"CHEST", "PELVIS"}
        assert int(frame["n_di"].sum()) == 13
        assert all(len(m) == 7 for m in frame["month"])

    def test_unknown_group_is_refused(self, loaded: Loaded) -> None:
        """A clear error names the keys that exist."""
        with (
            loaded.registry.session(write=False) as session,
            pytest.raises(ValueError, match="Unable to group exposure indices by colour"),
        ):
            quality.exposure_index_summary(session, group_by=["colour"])


class TestRejects:
    """KOS marks (either arrival order) and reject-log rows give the reject rate."""

    def test_reject_rate_per_room(self, loaded: Loaded) -> None:
        """Room A 3 of 8 (note before images), room B 1 of 5 (note after images)."""
        with loaded.registry.session(write=False) as session:
            frame = quality.reject_rates(session, group_by=["room"])
        registry = frame[frame["source"] == "registry"].set_index("room")
        assert registry.loc["ROOM-A", "n_images"] == 8
        assert registry.loc["ROOM-A", "n_rejected"] == 3
        assert registry.loc["ROOM-A", "reject_rate"] == pytest.approx(3 / 8)
        assert registry.loc["ROOM-B", "n_images"] == 5
        assert registry.loc["ROOM-B", "n_rejected"] == 1
        # rejected exposures' KAP: 1.5 dGy·cm² each = 1.5e-5 Gy·m²
        assert registry.loc["ROOM-A", "dap_rejected_gym2"] == pytest.approx(3 * 1.5e-5)

    def test_rejected_dose_stays_in_patient_dose(self, loaded: Loaded) -> None:
        """Rejected images are still counted in their study totals (they were irradiated)."""
        with loaded.registry.session(write=False) as session:
            frame = quality.reject_rates(session, group_by=["room"])
        registry = frame[frame["source"] == "registry"].set_index("room")
        studies = loaded.registry.studies(device="ROOM-A")
        assert studies["dap_total_gym2"].sum() == pytest.approx(8 * 1.5e-5)
        assert registry.loc["ROOM-A", "dap_rejected_gym2"] < studies["dap_total_gym2"].sum()

    def test_reject_log_import(self, loaded: Loaded) -> None:
        """Log rows are stored once; the rejected row with a SOP UID marks that image."""
        spec = quality.load_reject_log_mapping(loaded.mapping)
        data = loaded.log.read_bytes()
        with loaded.registry.session() as session:
            first = quality.import_reject_log(session, data=data, mapping=spec)
        with loaded.registry.session() as session:
            again = quality.import_reject_log(session, data=data, mapping=spec)
        assert (first.n_rows, first.n_rejected, first.n_marked) == (5, 3, 1)
        assert len(first.problems) == 1 and "line 7" in first.problems[0]
        assert again.already_imported
        with loaded.registry.session(write=False) as session:
            by_room = quality.reject_rates(session, group_by=["room"])
            by_reason = quality.reject_rates(session, group_by=["room", "reason"])
        log = by_room[by_room["source"] == "reject-log"].set_index("room")
        assert log.loc["DR-1", "n_images"] == 4
        assert log.loc["DR-1", "n_rejected"] == 2
        assert log.loc["DR-1", "dap_rejected_gym2"] == pytest.approx(2.5e-5)
        registry = by_room[by_room["source"] == "registry"].set_index("room")
        assert registry.loc["ROOM-B", "n_rejected"] == 2  # the KOS one and the logged one
        reasons = by_reason[by_reason["source"] == "registry"]
        assert set(reasons["reason"]) == {"Rejected for Quality Reasons", "Artefact"}
        room_b = reasons[reasons["room"] == "ROOM-B"].set_index("reason")
        assert room_b.loc["Artefact", "n_images"] == 5  # the rate is over the room's images
        assert room_b.loc["Artefact", "reject_rate"] == pytest.approx(1 / 5)
        logged = by_reason[by_reason["source"] == "reject-log"].set_index("reason")
        assert logged.loc["Motion", "n_images"] == 4
        assert logged.loc["Motion", "reject_rate"] == pytest.approx(1 / 4)
        assert "" not in logged.index  # accepted rows have no reason row of their own

    def test_bad_mapping_is_refused(self, loaded: Loaded, tmp_path: Path) -> None:
        """A mapping naming an unknown field fails with the known ones."""
        bad = tmp_path / "bad.toml"
        bad.write_text('[reject_log.columns]\noperator = "Tech"\n', encoding="utf-8")
        with pytest.raises(ConfigurationError, match="unknown field"):
            quality.load_reject_log_mapping(bad)


class TestNoise:
    """The CT series' global noise level is stored with protocol and CTDIvol."""

    def test_series_noise_within_ten_percent(self, loaded: Loaded) -> None:
        """σ = 12 HU added: the stored series' GNL within 10 %; CTDIvol 10 mGy; Dw measured."""
        with loaded.registry.session(write=False) as session:
            frame = quality.noise_by_series(session, protocol="Abdomen")
        assert len(frame) == 1
        row = frame.iloc[0]
        assert row["n_images"] == 3
        assert row["ctdivol_mgy"] == pytest.approx(10.0)
        assert row["global_noise_hu"] == pytest.approx(SIGMA_HU, rel=0.10)
        assert row["water_equivalent_diameter_mm"] > 0

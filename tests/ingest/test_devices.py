"""Device identity: one physical device per row, even when serial numbers collide."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from kerma.api import Registry
from kerma.db.models import Device
from tests.conftest import DICOM_DIR

#: A Siemens AXIOM-Artis (station ArtisZee) and a Siemens Fluorospot Compact FD
#: (station dRFMax-1234) that both send Device Serial Number "1234", each with its own
#: TID 1004 Device Observer UID.
ARTIS = "RF-RDSR-Siemens_Zee-HFS.dcm"
FLUOROSPOT = ("Dual-RDSR-RF.dcm", "Dual-RDSR-DX.dcm")


def _study_devices(registry: Registry) -> dict[str, str]:
    """Return {study description: device name} of every study."""
    studies = registry.studies(include_non_patient=True)
    return dict(zip(studies["study_description"], studies["device_name"], strict=True))


@pytest.mark.parametrize("artis_first", [True, False], ids=["artis-first", "fluorospot-first"])
def test_same_serial_different_observer_uid_are_two_devices(
    registry: Registry, artis_first: bool
) -> None:
    """Serial "1234" on two devices: studies stay on the device that sent them."""
    files = [DICOM_DIR / ARTIS, *(DICOM_DIR / name for name in FLUOROSPOT)]
    if not artis_first:
        files = files[1:] + files[:1]
    for path in files:
        registry.import_paths([path])
    devices = _study_devices(registry)
    # display names are the station names (unique here: kerma.db.devices)
    fluorospot = {d for s, d in devices.items() if "dRFMax" in d}
    artis = {d for s, d in devices.items() if "ArtisZee" in d}
    assert artis == {"ArtisZee"}
    assert fluorospot == {"dRFMax-1234"}
    assert devices["Cardiac pacemaker temporary"] == "dRFMax-1234"
    with registry.session(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 2

"""A PET-CT study: CT RDSR, radiopharmaceutical SR and PET images of one scanner."""

from __future__ import annotations

import itertools

import pytest

from kerma.api import Registry
from kerma.db.queries import device_key
from kerma.records import DeviceInfo
from tests.conftest import DICOM_DIR

pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom is absent")

#: The Siemens Biograph Vision files of one study (same Study Instance UID, serial 11090).
PET_CT_FILES = ("NM-CT-RDSR-Siemens.dcm", "NM-RRDSR-Siemens.dcm", "NM-PetIm-Siemens.dcm")


class TestPetCtStudy:
    """The parts of a PET-CT study stay together and the administration counts once."""

    @pytest.mark.parametrize("order", list(itertools.permutations(PET_CT_FILES)), ids=str)
    def test_any_order_gives_one_study_one_administration(
        self, registry: Registry, order: tuple[str, ...]
    ) -> None:
        """One study holds the CT events and one 394 MBq administration, in any order."""
        registry.import_paths([DICOM_DIR / name for name in order])
        studies = registry.studies()
        assert len(studies) == 1
        study = studies.iloc[0]
        assert study["ct_dlp_total_mgycm"] == pytest.approx(6.58 + 661.14)
        assert study["administered_activity_total_mbq"] == pytest.approx(394.0)
        events = registry.events()
        assert sorted(events["modality"]) == ["CT", "CT", "NM"] or sorted(events["modality"]) == [
            "CT",
            "CT",
            "PT",
        ]


class TestDeviceKey:
    """device_key: one physical device, however its objects describe it."""

    def test_serial_number_identifies_device_across_model_names(self) -> None:
        """Same manufacturer (any case) and serial: same key, whatever model or station."""
        rdsr = DeviceInfo(
            "SIEMENS", "Biograph64_Vision 600", "11090", "CT1", device_observer_uid="1.2"
        )
        rrdsr = DeviceInfo("Siemens", "Biograph64_Vision 600_Vision 600-1208", "11090", "X")
        assert device_key(rdsr) == device_key(rrdsr)

    def test_placeholder_serial_falls_back_to_observer_uid(self) -> None:
        """A 'REMOVED' serial does not merge devices; the observer UID decides."""
        a = DeviceInfo("GE", "A", "REMOVED", device_observer_uid="1.2.3")
        b = DeviceInfo("GE", "B", "REMOVED", device_observer_uid="1.2.4")
        assert device_key(a) != device_key(b)

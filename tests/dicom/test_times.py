"""DICOM TM and DT values with a UTC offset suffix (``hhmmss.ffffff&ZZXX``).

Some devices write an offset after a TM value, which TM does not define but DT does.
Every time Kerma reads must parse it: the study time, the event times, and the pairing
of one exposure sent For Presentation and For Processing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import uid
from pydicom.dataset import Dataset

from kerma.api import Registry
from kerma.dicom.common import format_time, split_time
from kerma.dicom.content import format_dicom_datetime
from kerma.records import DoseReport
from tests.db_fixtures import make_settings
from tests.dicom.test_headers import extract, image, radiopharmaceutical, raw
from tests.dicom.test_text import to_bytes


class TestParsing:
    """TM and DT values with and without an offset."""

    @pytest.mark.parametrize(
        ("stored", "time", "offset"),
        [
            ("101530", "10:15:30", None),
            ("101530.000000+0100", "10:15:30.000000", "+0100"),
            ("101530-0500", "10:15:30", "-0500"),
            ("101530.5Z", "10:15:30.5", "+0000"),
            ("10:15:30", "10:15:30", None),
            ("1015", "10:15:00", None),
        ],
    )
    def test_split_time(self, stored: str, time: str, offset: str | None) -> None:
        """The local time and the offset are both read."""
        assert split_time(stored) == (time, offset)
        assert format_time(stored) == time

    @pytest.mark.parametrize(
        ("stored", "iso"),
        [
            ("20240115101530.000000+0100", "2024-01-15T10:15:30.000000+01:00"),
            ("20240115101530+01:00", "2024-01-15T10:15:30+01:00"),
            ("20240115101530", "2024-01-15T10:15:30"),
        ],
    )
    def test_datetime(self, stored: str, iso: str) -> None:
        """A DT keeps its own offset in ISO 8601."""
        assert format_dicom_datetime(stored) == iso


def dx_pair(offset_times: bool) -> tuple[Dataset, Dataset]:
    """Return one exposure as For Presentation and For Processing images."""
    pair = []
    study = uid.generate_uid()
    for sop_class in (
        uid.DigitalXRayImageStorageForPresentation,
        uid.DigitalXRayImageStorageForProcessing,
    ):
        ds = image(sop_class, "DX", ImageAndFluoroscopyAreaDoseProduct="1.5", KVP="80")
        ds.StudyInstanceUID = study
        ds.PatientID = "P1"
        if offset_times:
            raw(ds, "StudyTime", "TM", "101500.000000+0100")
            raw(ds, "AcquisitionTime", "TM", "101733.000000+0100")
        pair.append(ds)
    return pair[0], pair[1]


class TestHeaders:
    """Image headers with offsets on their times."""

    def test_study_and_event_time(self) -> None:
        """Study time is the local time; the event start keeps the offset."""
        report: DoseReport = extract(dx_pair(offset_times=True)[0])
        assert report.study.study_time == "10:15:00.000000"
        assert report.events[0].datetime_started == "2024-03-01T10:17:33.000000+01:00"
        assert not any("Acquisition Date/Time incomplete" in w for w in report.warnings)

    def test_radiopharmaceutical_start_time(self) -> None:
        """Radiopharmaceutical Start Time with an offset gives the administration time."""
        item = radiopharmaceutical(RadionuclideTotalDose="370000000")
        del item.RadiopharmaceuticalStartDateTime  # only the TM, as older devices write
        raw(item, "RadiopharmaceuticalStartTime", "TM", "091000.000000+0100")
        ds = image(
            uid.PositronEmissionTomographyImageStorage,
            "PT",
            RadiopharmaceuticalInformationSequence=[item],
        )
        event = extract(ds).events[0]
        assert event.radiopharmaceutical_start_datetime == "2024-03-01T09:10:00.000000+01:00"

    def test_for_presentation_and_processing_count_once(self, tmp_path: Path) -> None:
        """The two images of one exposure, times with offsets, count as one event."""
        presentation, processing = dx_pair(offset_times=True)
        for n, ds in enumerate((presentation, processing)):
            (tmp_path / f"{n}.dcm").write_bytes(to_bytes(ds))
        reg = Registry(settings=make_settings(f"sqlite:///{tmp_path / 'r.db'}", tmp_path))
        try:
            reg.import_paths(sorted(tmp_path.glob("*.dcm")))
            events = reg.events()
            assert len(events) == 1
            assert events.iloc[0]["datetime_started"].startswith("2024-03-01T10:17:33")
        finally:
            reg.close()

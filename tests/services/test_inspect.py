"""kerma.services.inspect: what ``kerma inspect`` shows, from files, storing nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kerma.records import DoseReport, Rejection
from kerma.services.inspect import empty_folders, inspect_files
from tests.conftest import DICOM_DIR

CT_FILE = DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm"

pytestmark = pytest.mark.skipif(not CT_FILE.is_file(), reason="../shared/dicom is absent")


class TestInspectFiles:
    """Each file gives its record or its rejection, in order; folders are walked."""

    def test_folder_walked_in_order_with_reasons(self, tmp_path: Path) -> None:
        """A dose report, a non-DICOM file and a missing path, each as what it is."""
        folder = tmp_path / "in"
        folder.mkdir()
        shutil.copy(CT_FILE, folder / "a.dcm")
        (folder / "b.txt").write_text("not DICOM", encoding="utf-8")
        missing = tmp_path / "nowhere.dcm"
        items = list(inspect_files(paths=[folder, missing]))
        assert [i.path.name for i in items] == ["a.dcm", "b.txt", "nowhere.dcm"]
        report, text, absent = (i.result for i in items)
        assert isinstance(report, DoseReport)
        assert report.study.modality == "CT"
        assert report.events and report.events[0].ctdivol_mgy is not None
        assert isinstance(text, Rejection)
        assert "b.txt" in text.reason
        assert absent is None
        assert not items[2].exists

    def test_empty_folders_listed(self, tmp_path: Path) -> None:
        """A folder without files is named; a file and a folder with files are not."""
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_bytes(b"")
        paths = [tmp_path / "empty", tmp_path / "full", tmp_path / "full" / "x"]
        assert empty_folders(paths) == [tmp_path / "empty"]

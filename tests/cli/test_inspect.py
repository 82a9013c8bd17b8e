"""Tests of ``kerma inspect``: the EXTRACTION.md JSON on real files, rejections, no PHI."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from kerma.cli.main import app
from tests.conftest import DICOM_DIR

pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom is absent")

CT_FILE = DICOM_DIR / "CT-RDSR-Siemens-Multi-2.dcm"
RF_FILE = DICOM_DIR / "RF-RDSR-Philips_Azurion.dcm"


def run_inspect(*args: str) -> tuple[int, str, str]:
    """Run ``kerma inspect`` and return exit code, stdout and stderr."""
    result = CliRunner().invoke(app, ["inspect", *args])
    return result.exit_code, result.stdout, result.stderr


def iter_strings(value: object) -> list[str]:
    """Return every string leaf of a JSON value."""
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, dict):
        return [s for v in value.values() for s in iter_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in iter_strings(v)]
    return []


class TestInspectJson:
    """``--format json`` prints one object per file in the order given."""

    def test_mixed_inputs_keep_order_and_reject_bad_files(self, tmp_path: Path) -> None:
        """A good RDSR, a text file and a truncated RDSR give ok, rejected, rejected."""
        text = tmp_path / "notes.txt"
        text.write_text("not a DICOM file\n")
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(RF_FILE.read_bytes()[:20000])
        code, out, err = run_inspect("--format", "json", str(CT_FILE), str(text), str(cut))
        assert code == 0
        records = json.loads(out)
        assert [r["status"] for r in records] == ["ok", "rejected", "rejected"]
        assert records[0]["kind"] == "rdsr-ct"
        assert records[0]["accumulated"]["total_number_of_irradiation_events"] == 2
        assert "not a DICOM file" in records[1]["reject_reason"]
        assert "incomplete" in records[2]["reject_reason"]
        assert "2 of 3 objects rejected" in err

    def test_jsonl_gives_one_line_per_file(self) -> None:
        """``--format jsonl`` prints one JSON object per line."""
        code, out, _ = run_inspect("--format", "jsonl", str(CT_FILE), str(RF_FILE))
        assert code == 0
        lines = out.strip().splitlines()
        assert len(lines) == 2
        assert json.loads(lines[1])["kind"] == "rdsr-projection"
        assert len(json.loads(lines[1])["events"]) == 89

    def test_no_patient_name_id_or_birth_date_printed(self) -> None:
        """The JSON of every shared file holds none of its patient name, ID or birth date."""
        files = sorted(DICOM_DIR.glob("*.dcm"))
        code, out, _ = run_inspect("--format", "json", *map(str, files))
        assert code == 0
        for path, record in zip(files, json.loads(out), strict=True):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert "patient_id" not in record.get("study", {})
            printed = set(iter_strings(record))
            # anonymisers put placeholders ('REMOVED') in other fields too: those may appear
            elsewhere = {
                str(ds.get(k, "") or "").strip()
                for k in ("StationName", "InstitutionName", "StudyDescription", "AccessionNumber")
            }
            for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
                value = str(ds.get(keyword, "") or "").strip()
                if value and value not in elsewhere:
                    assert value not in printed, (path.name, keyword)

    def test_nothing_readable_exits_nonzero(self, tmp_path: Path) -> None:
        """A missing path alone gives exit code 1."""
        code, _, err = run_inspect("--format", "json", str(tmp_path / "missing.dcm"))
        assert code == 1
        assert "no such file" in " ".join(err.split())

    def test_empty_folder_says_so(self, tmp_path: Path) -> None:
        """An empty folder is named as empty, and the command exits 1."""
        empty = tmp_path / "empty"
        empty.mkdir()
        code, _out, err = run_inspect(str(empty))
        assert code == 1
        assert "holds no files" in " ".join(err.split())

"""kerma import / studies / summary / rejects / ignored / reprocess / db upgrade (CliRunner)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerma.cli.main import app
from tests.conftest import CASES_DIR, DICOM_DIR
from tests.db_fixtures import TEST_PSEUDONYM_KEY

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)


@pytest.fixture
def cli(database_url: str, tmp_path: Path):
    """Return a function running ``kerma ARGS`` against the test registry."""
    runner = CliRunner()
    env = {
        "KERMA_DATABASE_URL": database_url,
        "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "250",
    }

    def run(*args: str):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return run


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """A folder with C05 (two CT RDSRs), two DX images and a non-DICOM file."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in (
        CASES_DIR / "C05-ct-siemens-continued-study-a.dcm",
        CASES_DIR / "C05-ct-siemens-continued-study-b.dcm",
        DICOM_DIR / "DX-Im-GE_XR220-1.dcm",
        DICOM_DIR / "DX-Im-GE_XR220-2.dcm",
    ):
        shutil.copy(path, folder / path.name)
    (folder / "readme.txt").write_text("hello")
    return folder


def row_of(output: str, label: str) -> str:
    """Return the table line of ``output`` that holds ``label``."""
    lines = [line for line in output.splitlines() if label in line]
    assert lines, f"{label!r} not in output:\n{output}"
    return lines[0]


class TestImportCommand:
    """kerma import."""

    def test_import_prints_counts_and_reasons(self, cli, incoming: Path) -> None:
        """The table counts objects by kind and modality, and the rejection reason."""
        result = cli("import", str(incoming))
        assert result.exit_code == 0, result.output
        out = result.output
        assert "5" in row_of(out, "objects read")
        assert "2" in row_of(out, "imported rdsr-ct CT")
        assert "2" in row_of(out, "imported header-dx DX")
        assert "4" in row_of(out, "imported (total)")
        assert "1" in row_of(out, "│ rejected")
        assert "not a DICOM file" in out

    def test_second_import_reports_already_present(self, cli, incoming: Path) -> None:
        """Running the same import again imports nothing and says so."""
        cli("import", str(incoming))
        result = cli("import", str(incoming))
        assert result.exit_code == 0
        assert "0" in row_of(result.output, "imported (total)")
        assert "4" in row_of(result.output, "already present")

    def test_nothing_readable_exits_1(self, cli, tmp_path: Path) -> None:
        """Only non-DICOM input: exit code 1."""
        (tmp_path / "a.txt").write_text("x")
        assert cli("import", str(tmp_path / "a.txt")).exit_code == 1

    def test_missing_path_is_usage_error(self, cli, tmp_path: Path) -> None:
        """A path that does not exist: exit 2, the path named, nothing recorded."""
        missing = tmp_path / "nonexistent" / "path"
        result = cli("import", str(missing))
        assert result.exit_code == 2
        assert f"error: {missing}: no such file or folder" in result.output
        assert "Nothing was imported." in result.output
        assert "objects read" not in result.output
        assert "No rejected objects." in cli("rejects").output

    def test_some_missing_paths_refuse_whole_import(
        self, cli, incoming: Path, tmp_path: Path
    ) -> None:
        """Good and missing paths together: every missing path named, nothing imported."""
        typo_a, typo_b = tmp_path / "incomming", tmp_path / "other.dcm"
        result = cli("import", str(typo_a), str(incoming), str(typo_b))
        assert result.exit_code == 2
        assert f"error: {typo_a}: no such file or folder" in result.output
        assert f"error: {typo_b}: no such file or folder" in result.output
        assert "Correct the paths" in result.output
        assert "Studies (0)" in cli("studies").output
        assert "No rejected objects." in cli("rejects").output
        # the same import without the typos goes through
        assert "4" in row_of(cli("import", str(incoming)).output, "imported (total)")


class TestReadCommands:
    """kerma studies, summary, rejects, reprocess, db upgrade."""

    def test_studies_shows_totals_in_display_units(
        self, cli, incoming: Path, tmp_path: Path
    ) -> None:
        """DLP in mGy·cm and KAP in Gy·cm²; --csv writes every row."""
        cli("import", str(incoming))
        csv = tmp_path / "studies.csv"
        result = cli("studies", "--csv", str(csv))
        assert result.exit_code == 0, result.output
        assert "1057" in row_of(result.output, "SynthSOMATOM")  # 1056.7 mGy·cm, 4 digits
        assert "0.123" in row_of(result.output, "Optima XR220")  # (4.1 + 8.2)e-6 Gy·m² in Gy·cm²
        assert len(csv.read_text().strip().splitlines()) == 3

    def test_studies_modality_filter(self, cli, incoming: Path) -> None:
        """--modality DX shows only the DX study."""
        cli("import", str(incoming))
        out = cli("studies", "--modality", "DX").output
        assert "Studies (1)" in out
        assert "SynthSOMATOM" not in out

    @pytest.mark.parametrize(
        ("command", "option", "value"),
        [
            ("studies", "--from", "yesterday"),
            ("studies", "--to", "2026-02-30"),  # not a calendar date
            ("studies", "--from", "31.01.2026"),
            ("summary", "--from", "20260131"),  # ISO basic form: not YYYY-MM-DD
        ],
        ids=["word", "no-such-day", "day-first", "basic-iso"],
    )
    def test_bad_date_is_usage_error(self, cli, command: str, option: str, value: str) -> None:
        """A date not written YYYY-MM-DD: exit 2 naming the option and the format."""
        result = cli(command, option, value)
        assert result.exit_code == 2, result.output
        error = " ".join(result.output.split())  # undo the panel's line breaks
        assert f"'{option}'" in error
        assert f"{value!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-01-31." in error
        assert "isoformat" not in error
        assert "ValueError" not in error

    def test_date_range_filters_studies(self, cli, incoming: Path) -> None:
        """Valid --from/--to dates still filter: a range after every study shows none."""
        cli("import", str(incoming))
        assert "Studies (2)" in cli("studies", "--from", "1900-01-01").output  # C05 and DX
        result = cli("studies", "--from", "2999-01-01", "--to", "2999-12-31")
        assert result.exit_code == 0, result.output
        assert "Studies (0)" in result.output

    def test_summary_shows_medians(self, cli, incoming: Path) -> None:
        """Median and quartiles per protocol in display units."""
        cli("import", str(incoming))
        result = cli("summary")
        assert result.exit_code == 0, result.output
        topogram_dlp = [
            line for line in result.output.splitlines() if "Topogram" in line and "DLP" in line
        ]
        assert topogram_dlp and "3.25" in topogram_dlp[0]
        kap = row_of(result.output, "KAP (Gy·cm²)")
        assert "0.0615" in kap and "0.05125" in kap and "0.07175" in kap

    def test_rejects_lists_file_and_reason(self, cli, incoming: Path) -> None:
        """kerma rejects shows the rejected file and why."""
        cli("import", str(incoming))
        result = cli("rejects")
        assert result.exit_code == 0
        assert "readme.txt" in result.output
        assert "not a DICOM" in result.output

    def test_ignored_lists_counts_and_writes_csv(
        self, cli, database_url: str, tmp_path: Path
    ) -> None:
        """kerma ignored: counts by modality and SOP class, newest rows, --out CSV."""
        import pandas as pd
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

        from kerma.api import Registry
        from tests.db_fixtures import make_settings

        mr = Dataset()
        mr.SOPClassUID, mr.SOPInstanceUID = MRImageStorage, generate_uid()
        mr.StudyInstanceUID, mr.SeriesInstanceUID = generate_uid(), generate_uid()
        mr.Modality, mr.PatientID = "MR", "IGNORED-1"
        mr.file_meta = FileMetaDataset()
        mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
        mr.file_meta.MediaStorageSOPInstanceUID = mr.SOPInstanceUID
        mr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        mr_path = tmp_path / "mr.dcm"
        pydicom.dcmwrite(mr_path, mr, enforce_file_format=True)
        esr_path = DICOM_DIR / "ESR_non-dose.dcm"
        esr_uid = str(pydicom.dcmread(esr_path, stop_before_pixels=True).SOPInstanceUID)
        with Registry(settings=make_settings(database_url, tmp_path)) as reg:
            summary = reg.import_paths([esr_path, mr_path], keep_non_dose=False)
        assert summary.ignored == 2

        csv = tmp_path / "ignored.csv"
        result = cli("ignored", "--out", str(csv))
        assert result.exit_code == 0, result.output
        assert "2 ignored objects (no dose information; acknowledged, not kept)" in result.output
        # the counts table comes first: modality │ SOP class │ objects
        sr_row = row_of(result.output, "Enhanced SR Storage").split("│")
        mr_row = row_of(result.output, "MR Image Storage").split("│")
        assert [c.strip() for c in sr_row[1:4]] == ["SR", "Enhanced SR Storage", "1"]
        assert [c.strip() for c in mr_row[1:4]] == ["MR", "MR Image Storage", "1"]
        assert str(mr.SOPInstanceUID) in result.output and esr_uid in result.output
        written = pd.read_csv(csv)
        assert sorted(written["sop_instance_uid"]) == sorted([esr_uid, str(mr.SOPInstanceUID)])
        assert sorted(written["modality"]) == ["MR", "SR"]
        assert list(written.columns) == [
            "sop_instance_uid",
            "sop_class_uid",
            "study_instance_uid",
            "series_instance_uid",
            "modality",
            "reason",
            "source",
            "received_at",
        ]

    def test_ignored_empty_registry(self, cli) -> None:
        """kerma ignored on a registry without ignored objects says so."""
        result = cli("ignored")
        assert result.exit_code == 0
        assert "No ignored objects." in result.output

    def test_reprocess_reports_counts(self, cli, incoming: Path) -> None:
        """kerma reprocess re-extracts the four reports and keeps the one rejection."""
        cli("import", str(incoming))
        result = cli("reprocess")
        assert result.exit_code == 0, result.output
        assert "4" in row_of(result.output, "dose reports updated")
        assert "1" in row_of(result.output, "rejected objects still rejected")

    def test_db_upgrade_reports_revision(self, cli) -> None:
        """kerma db upgrade migrates and prints the revision."""
        from kerma.db.migrate import head_revision

        result = cli("db", "upgrade")
        assert result.exit_code == 0, result.output
        assert f"revision {head_revision()}" in result.output


def _ignored_mr(tmp_path: Path, database_url: str, *, source_dir: str) -> str:
    """Import a synthetic MR image as ignored from a deep folder; return its reason."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from kerma.api import Registry
    from tests.db_fixtures import make_settings

    mr = Dataset()
    mr.SOPClassUID, mr.SOPInstanceUID = MRImageStorage, generate_uid()
    mr.StudyInstanceUID, mr.SeriesInstanceUID = generate_uid(), generate_uid()
    mr.Modality, mr.PatientID = "MR", "IGNORED-2"
    mr.file_meta = FileMetaDataset()
    mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr.file_meta.MediaStorageSOPInstanceUID = mr.SOPInstanceUID
    mr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder = tmp_path / source_dir
    folder.mkdir(parents=True)
    path = folder / "mr.dcm"
    pydicom.dcmwrite(path, mr, enforce_file_format=True)
    with Registry(settings=make_settings(database_url, tmp_path)) as reg:
        assert reg.import_paths([path], keep_non_dose=False).ignored == 1
        return str(reg.ignored()["reason"].iloc[0])


class TestListingLimits:
    """Listings say when they are cut to the newest rows; ``kerma ignored`` fits the width."""

    NOTE = "showing the newest {shown} of {total}; use --limit N (0 = all)"

    def test_rejects_cut_says_how_many(self, cli, tmp_path: Path) -> None:
        """Three rejects, --limit 2: two rows and "2 of 3"; --limit 0 and the default: all."""
        folder = tmp_path / "junk"
        folder.mkdir()
        for name in ("a.txt", "b.txt", "c.txt"):
            (folder / name).write_text(f"not DICOM {name}")
        cli("import", str(folder))
        cut = cli("rejects", "--limit", "2").output
        assert self.NOTE.format(shown=2, total=3) in cut
        assert sum(name in cut for name in ("a.txt", "b.txt", "c.txt")) == 2
        for args in (["--limit", "0"], []):
            full = cli("rejects", *args).output
            assert "showing the newest" not in full
            assert all(name in full for name in ("a.txt", "b.txt", "c.txt"))

    def test_rejects_limit_equal_to_total_has_no_note(self, cli, tmp_path: Path) -> None:
        """--limit 1 with exactly one reject shows it without a note."""
        (tmp_path / "one.txt").write_text("not DICOM")
        cli("import", str(tmp_path / "one.txt"))
        out = cli("rejects", "--limit", "1").output
        assert "one.txt" in out
        assert "showing the newest" not in out

    def test_studies_cut_shows_the_newest(self, cli, incoming: Path, tmp_path: Path) -> None:
        """Two studies, --limit 1: the later-dated one, "1 of 2"; --limit 0: both."""
        import pandas as pd

        cli("import", str(incoming))
        csv = tmp_path / "studies.csv"
        cli("studies", "--csv", str(csv))
        frame = pd.read_csv(csv).sort_values("study_date")
        newest, oldest = frame["device_name"].iloc[-1], frame["device_name"].iloc[0]
        assert newest != oldest
        cut = cli("studies", "--limit", "1").output
        assert "Studies (2)" in cut
        assert self.NOTE.format(shown=1, total=2) in cut
        assert newest in cut and oldest not in cut
        full = cli("studies", "--limit", "0").output
        assert newest in full and oldest in full
        assert "showing the newest" not in full

    def test_negative_limit_refused(self, cli) -> None:
        """--limit -1 is a usage error naming the option."""
        result = CliRunner().invoke(app, ["studies", "--limit", "-1"])
        assert result.exit_code == 2
        assert "--limit" in result.output

    @pytest.mark.parametrize("columns", [80, 120, 160], ids=lambda c: f"{c}-columns")
    def test_ignored_table_fits_width_and_folds_reason(
        self, database_url: str, tmp_path: Path, columns: int
    ) -> None:
        """Every line fits the console; the whole reason and source are there, folded."""
        reason = _ignored_mr(tmp_path, database_url, source_dir="incoming/" + "deep/" * 12)
        env = {
            "KERMA_DATABASE_URL": database_url,
            "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "COLUMNS": str(columns),
        }
        result = CliRunner().invoke(app, ["ignored"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= columns
        start = next(i for i, line in enumerate(lines) if "Newest 1" in line)
        body = [line for line in lines[start:] if line.startswith("│")]
        assert body and all(line.rstrip().endswith("│") for line in body)  # not cropped
        cells = [line.split("│") for line in body]
        folded_source = "".join(c[-3].strip() for c in cells)
        folded_reason = "".join(c[-2].strip() for c in cells)
        assert folded_reason.replace(" ", "") == reason.replace(" ", "")
        assert folded_source.endswith("deep/deep/mr.dcm")

    def test_ignored_wide_console_keeps_uid_on_one_line(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """At 250 columns the SOP Instance UID is not folded."""
        _ignored_mr(tmp_path, database_url, source_dir="incoming")
        env = {
            "KERMA_DATABASE_URL": database_url,
            "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "COLUMNS": "250",
        }
        result = CliRunner().invoke(app, ["ignored"], env=env, catch_exceptions=False)
        from kerma.api import Registry
        from tests.db_fixtures import make_settings

        with Registry(settings=make_settings(database_url, tmp_path)) as reg:
            uid = str(reg.ignored()["sop_instance_uid"].iloc[0])
        assert uid in result.output
        assert max(len(line) for line in result.output.splitlines()) <= 250

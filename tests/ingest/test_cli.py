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
        "KERMA_ARCHIVE_MODE": "original",  # tests read archived files (see make_settings)
        "COLUMNS": "250",
    }

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False, input=input)

    return run


def damaged_copy(source: Path, target: Path, fraction: float = 0.5) -> Path:
    """Write the first part of a DICOM file (a transfer cut short): damaged DICOM."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """A folder with C05 (two CT RDSRs), two DX images, a damaged RDSR and a text file."""
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
    damaged_copy(DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm", folder / "cut.dcm")
    return folder


def row_of(output: str, label: str) -> str:
    """Return the table line of ``output`` that holds ``label``."""
    lines = [line for line in output.splitlines() if label in line]
    assert lines, f"{label!r} not in output:\n{output}"
    return lines[0]


class TestImportCommand:
    """kerma import."""

    def test_import_prints_counts_and_reasons(self, cli, incoming: Path) -> None:
        """The table counts objects by kind and modality, skips, and the rejection reason."""
        result = cli("import", str(incoming))
        assert result.exit_code == 0, result.output
        out = result.output
        assert "6" in row_of(out, "files read")
        assert "1" in row_of(out, "skipped: not DICOM")
        assert "2" in row_of(out, "imported rdsr-ct CT")
        assert "2" in row_of(out, "imported header-dx DX")
        assert "4" in row_of(out, "imported (total)")
        assert "1" in row_of(out, "rejected: new")
        assert "0" in row_of(out, "rejected: already listed")
        assert "skipped 1 non-DICOM file (not archived, not listed)" in out
        assert "the file is incomplete" in row_of(out, "Unable to read <file>")
        assert "readme.txt" not in out

    def test_second_import_reports_already_present(self, cli, incoming: Path) -> None:
        """Running the same import again imports nothing and lists no rejection as new."""
        cli("import", str(incoming))
        result = cli("import", str(incoming))
        assert result.exit_code == 0
        assert "0" in row_of(result.output, "imported (total)")
        assert "4" in row_of(result.output, "already present")
        assert "rejected: 0 new, 1 already listed." in result.output
        assert "New rejections" not in result.output
        assert len(cli("rejects").output.split("Unable to read")) == 2  # listed once

    def test_only_non_dicom_says_so_and_exits_1(self, cli, tmp_path: Path) -> None:
        """Only non-DICOM input: skipped, 'no DICOM file found', exit code 1."""
        (tmp_path / "a.txt").write_text("x")
        result = cli("import", str(tmp_path / "a.txt"))
        assert result.exit_code == 1
        assert "no DICOM file found among 1 file (all skipped as not DICOM)" in result.output
        assert "No rejected objects." in cli("rejects").output

    def test_empty_folder_says_so_and_exits_1(self, cli, tmp_path: Path) -> None:
        """An empty folder (or one with hidden files only): said, exit code 1."""
        folder = tmp_path / "empty"
        folder.mkdir()
        (folder / ".DS_Store").write_text("x")
        result = cli("import", str(folder))
        assert result.exit_code == 1
        assert f"nothing to import: {folder} holds no files" in result.output

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
        # nothing was imported: the registry is still empty (kerma studies says so)
        assert "holds no study yet" in " ".join(cli("studies").output.split())
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
        # rows by device display name: the station names SYNTH01 and 01234MOB54
        assert "1057" in row_of(result.output, "SYNTH01")  # 1056.7 mGy·cm, 4 digits
        assert "0.123" in row_of(result.output, "01234MOB54")  # (4.1 + 8.2)e-6 Gy·m² in Gy·cm²
        assert len(csv.read_text().strip().splitlines()) == 3

    def test_studies_modality_filter(self, cli, incoming: Path) -> None:
        """--modality DX shows only the DX study."""
        cli("import", str(incoming))
        out = cli("studies", "--modality", "DX").output
        assert "Studies (1)" in out
        assert "SYNTH01" not in out

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
        """kerma rejects shows the rejected file, its reason group and why; not skipped files."""
        cli("import", str(incoming))
        result = cli("rejects")
        assert result.exit_code == 0
        row = row_of(result.output, "│ unreadable │")
        assert "Unable to read" in row
        assert "the file is incomplete" in result.output
        assert "readme.txt" not in result.output

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
        assert "1" in row_of(result.output, "rejected objects still rejected")  # cut.dcm

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
        # the folder is given: its path relative to the folder is what is kept (a file
        # given by itself is kept by its name only)
        top = tmp_path / source_dir.split("/")[0]
        assert reg.import_paths([top], keep_non_dose=False).ignored == 1
        return str(reg.ignored()["reason"].iloc[0])


class TestListingLimits:
    """Listings say when they are cut to the newest rows; ``kerma ignored`` fits the width."""

    NOTE = "showing the newest {shown} of {total}; use --limit N (0 = all)"

    def test_rejects_cut_says_how_many(
        self, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Three rejects, --limit 2: two rows and "2 of 3"; --limit 0 and the default: all."""
        folder = tmp_path / "junk"
        folder.mkdir()
        names = ("a.dcm", "b.dcm", "c.dcm")
        for i, name in enumerate(names):
            damaged_copy(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", folder / name, 0.3 + i / 10)
        monkeypatch.chdir(tmp_path)  # a relative folder, as users type it: short source paths
        cli("import", "junk")
        cut = cli("rejects", "--limit", "2").output
        assert self.NOTE.format(shown=2, total=3) in cut
        assert sum(name in cut for name in names) == 2
        for args in (["--limit", "0"], []):
            full = cli("rejects", *args).output
            assert "showing the newest" not in full
            assert all(name in full for name in names)

    def test_rejects_limit_equal_to_total_has_no_note(self, cli, tmp_path: Path) -> None:
        """--limit 1 with exactly one reject shows it without a note."""
        damaged_copy(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", tmp_path / "one.dcm")
        cli("import", str(tmp_path / "one.dcm"))
        out = cli("rejects", "--limit", "1").output
        assert "one.dcm" in out
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


@pytest.fixture
def rejected_mix(cli, tmp_path: Path) -> Path:
    """A registry with two kinds of rejects (damaged, not dose) and a conflicting copy.

    The conflicting copy (d-conflict.dcm) is held as a version, not rejected (since
    0009; ``kerma conflicts``), so the ``conflict`` reason group lists nothing here.
    """
    folder = tmp_path / "mix"
    folder.mkdir()
    damaged_copy(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm", folder / "a-cut.dcm")
    shutil.copy(DICOM_DIR / "ESR_non-dose.dcm", folder / "b-esr.dcm")
    shutil.copy(DICOM_DIR / "OR1-RF-RDSR-Siemens-Zee_adjusted.dcm", folder / "c-first.dcm")
    shutil.copy(DICOM_DIR / "RF-RDSR-Siemens-Zee.dcm", folder / "d-conflict.dcm")
    (folder / "e-notes.json").write_text('{"note": "sidecar"}')
    result = cli("import", str(folder))
    assert result.exit_code == 0, result.output
    assert "2" in row_of(result.output, "rejected: new")
    assert "1" in row_of(result.output, "conflict: new version held")
    return folder


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Return the rows of a CSV file as dicts."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class TestRejectsCommand:
    """kerma rejects: filters by reason and date, CSV, purge."""

    @pytest.mark.parametrize(
        ("reason", "expected"),
        [
            ("unreadable", ["a-cut.dcm"]),
            ("not-dose", ["b-esr.dcm"]),
            ("conflict", []),  # held as a version (kerma conflicts), not rejected
            ("other", []),
            ("INCOMPLETE", ["a-cut.dcm"]),  # part of a reason, any case
            ("SR <uid> is not a dose report because", ["b-esr.dcm"]),
        ],
        ids=[
            "group-unreadable",
            "group-not-dose",
            "group-conflict",
            "group-other",
            "text",
            "masked",
        ],
    )
    def test_reason_filter_and_csv(
        self, cli, rejected_mix: Path, tmp_path: Path, reason: str, expected: list[str]
    ) -> None:
        """--reason takes a group name, part of a reason, or a masked reason; --out has them."""
        out = tmp_path / "rejects.csv"
        result = cli("rejects", "--reason", reason, "--out", str(out))
        assert result.exit_code == 0, result.output
        rows = csv_rows(out)
        assert sorted(Path(r["file_name"]).name for r in rows) == expected
        if not expected:
            assert f"No rejected objects match (reason group '{reason}')." in result.output

    def test_csv_columns_and_groups(self, cli, rejected_mix: Path, tmp_path: Path) -> None:
        """The CSV has one row per rejected object with its group, UTC time and archive path."""
        out = tmp_path / "all.csv"
        assert cli("rejects", "--out", str(out)).exit_code == 0
        rows = csv_rows(out)
        assert list(rows[0]) == [
            "rejected_at",
            "file_name",
            "sop_instance_uid",
            "sop_class_uid",
            "reason_group",
            "reason",
            "archive_sha256",
            "archive_path",
        ]
        groups = {Path(r["file_name"]).name: r["reason_group"] for r in rows}
        assert groups == {
            "a-cut.dcm": "unreadable",
            "b-esr.dcm": "not-dose",
        }
        for row in rows:
            assert row["rejected_at"].endswith("+00:00")
            archived = tmp_path / "archive" / row["archive_path"]
            import hashlib

            assert hashlib.sha256(archived.read_bytes()).hexdigest() == row["archive_sha256"]

    def test_date_filter(self, cli, rejected_mix: Path, tmp_path: Path) -> None:
        """--since/--until select by the day of rejection (UTC); an empty range is refused."""
        import datetime as dt

        today = dt.datetime.now(dt.UTC).date()
        tomorrow = today + dt.timedelta(days=1)
        out = tmp_path / "today.csv"
        assert (
            cli(
                "rejects", "--since", str(today), "--until", str(today), "--out", str(out)
            ).exit_code
            == 0
        )
        assert len(csv_rows(out)) == 2
        result = cli("rejects", "--since", str(tomorrow))
        assert f"No rejected objects match (since {tomorrow})." in result.output
        result = cli("rejects", "--until", str(today - dt.timedelta(days=1)))
        assert "No rejected objects match" in result.output
        result = CliRunner().invoke(
            app, ["rejects", "--since", str(tomorrow), "--until", str(today)]
        )
        assert result.exit_code == 2
        assert "is before --since" in result.output
        result = CliRunner().invoke(app, ["rejects", "--since", "2026-02-30"])
        assert result.exit_code == 2
        assert "is not a date" in result.output

    def test_purge_removes_listing_and_archived_bytes(
        self, cli, rejected_mix: Path, tmp_path: Path
    ) -> None:
        """purge --reason unreadable --yes: that row and its archived file go; the rest stays."""
        out = tmp_path / "before.csv"
        cli("rejects", "--out", str(out))
        paths = {
            Path(r["file_name"]).name: tmp_path / "archive" / r["archive_path"]
            for r in csv_rows(out)
        }
        result = cli("rejects", "purge", "--reason", "unreadable", "--yes")
        assert result.exit_code == 0, result.output
        assert (
            "removed 1 rejected object (reason group 'unreadable') from the listing and "
            "1 archived file (" in result.output
        )
        assert not paths["a-cut.dcm"].exists()
        assert paths["b-esr.dcm"].is_file()
        after = tmp_path / "after.csv"
        cli("rejects", "--out", str(after))
        assert sorted(Path(r["file_name"]).name for r in csv_rows(after)) == ["b-esr.dcm"]
        # the stored reports are untouched
        assert "Studies (1)" in cli("studies").output

    def test_purge_asks_and_a_no_removes_nothing(
        self, cli, rejected_mix: Path, tmp_path: Path
    ) -> None:
        """Without --yes, purge asks; answering no removes nothing (exit 1)."""
        result = cli("rejects", "purge", "--reason", "not-dose", input="n\n")
        assert result.exit_code == 1
        assert "Remove 1 rejected object (reason group 'not-dose')" in result.output
        assert "Nothing removed." in result.output
        out = tmp_path / "still.csv"
        cli("rejects", "--reason", "not-dose", "--out", str(out))
        (row,) = csv_rows(out)
        assert Path(row["file_name"]).name == "b-esr.dcm"
        assert (tmp_path / "archive" / row["archive_path"]).is_file()

    def test_purge_keeps_bytes_a_stored_report_uses(
        self, cli, database_url: str, tmp_path: Path
    ) -> None:
        """A listing whose bytes a stored report also uses: the listing goes, the bytes stay."""
        from kerma.api import Registry
        from kerma.db import queries
        from tests.db_fixtures import make_settings

        good = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
        assert "1" in row_of(cli("import", str(good)).output, "imported (total)")
        with Registry(settings=make_settings(database_url, tmp_path)) as reg:
            row = reg.rejects()
            assert row.empty
            with reg.session() as session:
                from sqlalchemy import select

                from kerma.db.models import DoseReport

                report = session.scalars(select(DoseReport)).one()
                queries.add_rejected_object(
                    session,
                    sha256=report.archive_sha256,
                    archive_path=report.archive_path,
                    file_name="listed by hand",
                    reason="Unable to read listed by hand: test",
                )
                archived = tmp_path / "archive" / report.archive_path
        result = cli("rejects", "purge", "--yes")
        assert result.exit_code == 0, result.output
        assert "removed 1 rejected object from the listing and 0 archived files" in result.output
        assert "kept 1 archived file that stored reports use" in result.output
        assert archived.is_file()
        assert "No rejected objects." in cli("rejects").output


class TestUsageErrors:
    """Out-of-range options are usage errors (exit 2) naming the allowed values."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["listen", "--port", "99999"], "99999 is not a TCP port: use 0 to 65535"),
            (["listen", "--port", "-1"], "-1 is not a TCP port: use 0 to 65535"),
            (["serve", "--port", "0"], "0 is not a TCP port: use 1 to 65535"),
            (["serve", "--log-level", "loud"], "'loud' is not a log level; use one of critical"),
            (["pull", "--pacs-aet", "P", "--pacs-port", "70000"], "70000 is not a TCP port"),
            (["pull", "--pacs-aet", "P", "--port", "0"], "0 is not a TCP port: use 1 to 65535"),
            (["pull", "--pacs-aet", "P", "-m", "XYZ"], "'XYZ' is not a modality Kerma reads"),
            (["pull", "--pacs-aet", "P", "--from", "2024-13-01"], "is not a date"),
            (["rejects", "--limit", "-1"], "--limit"),
            (["ignored", "--limit", "-5"], "--limit"),
        ],
        ids=lambda v: " ".join(v) if isinstance(v, list) else None,
    )
    def test_out_of_range_option(self, args: list[str], message: str) -> None:
        """The error names the allowed values; nothing runs."""
        result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.replace("│", " ").split())

    def test_modality_error_lists_every_modality(self) -> None:
        """-m XYZ names the modalities Kerma reads, which are those the header reader knows."""
        from kerma.cli.ingest import DOSE_MODALITIES
        from kerma.dicom.headers import KIND_BY_MODALITY

        assert set(DOSE_MODALITIES) == set(KIND_BY_MODALITY)
        result = CliRunner().invoke(
            app, ["pull", "--pacs-aet", "P", "-m", "xyz"], env={"COLUMNS": "300"}
        )
        assert ", ".join(DOSE_MODALITIES) in " ".join(result.output.replace("│", " ").split())

    def test_lower_case_modality_is_accepted(self) -> None:
        """-m ct is CT (the parser upper-cases it)."""
        from kerma.cli.ingest import parse_modalities_option

        assert parse_modalities_option(["ct", "Dx"]) == ["CT", "DX"]

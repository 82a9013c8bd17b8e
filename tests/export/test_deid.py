"""De-identified research export: DICOM PS3.15 Basic Profile (issue #14 item 3).

Each de-identified object is checked attribute by attribute against the standard's
Table E.1-1 (Basic Profile column; ``kerma/export/ps3_15_table_e1_1.csv``, PS3.15
2026c), in the header and in the SR content tree; dose values, units and codes are
compared as raw bytes; the objects are imported into a fresh registry (SQLite and
PostgreSQL) and give the same doses.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from tests.conftest import DICOM_DIR
from tests.db_fixtures import BACKENDS, fresh_database, make_settings

#: The dose objects checked: one of each kind and the two parts of one CT study.
FILES: tuple[str, ...] = (
    "CT-RDSR-Siemens_Flash-TAP-SS.dcm",
    "CT-RDSR-Siemens-Continued-1.dcm",
    "CT-RDSR-Siemens-Continued-2.dcm",
    "RF-RDSR-Philips_Allura.dcm",
    "PSD-philips_allura_clarity_u104.dcm",
    "DX-RDSR-Canon_CXDI.dcm",
    "MG-RDSR-Hologic_2D.dcm",
    "NM-RRDSR-Siemens-Extended.dcm",
    "DX-Im-GE_XR220-1.dcm",
    "MG-Im-Hologic-PropProj.dcm",
)

#: The files checked one by one (the 25-event XA RDSR takes seconds to rewrite with
#: pydicom; it is checked through the research export and its re-import below).
PER_FILE: tuple[str, ...] = tuple(f for f in FILES if not f.startswith("PSD-"))

KEY = b"research-key-for-the-tests-0123456789abcdef"

#: The elements whose bytes must not change: everything a dose value is made of.
DOSE_ELEMENTS = (
    "ValueType",
    "ConceptNameCodeSequence",
    "MeasuredValueSequence",
    "ConceptCodeSequence",
    "RelationshipType",
)


def _deidentifier(key: bytes = KEY, **options: bool) -> Any:
    """Return a Deidentifier with ``options``."""
    from kerma.export.deid import Deidentifier, DeidOptions

    return Deidentifier(key, DeidOptions(**options))


def _read(data: bytes) -> Dataset:
    """Read a Part 10 file from bytes."""
    return pydicom.dcmread(io.BytesIO(data))


def _table_values(ds: Dataset) -> dict[int, set[str]]:
    """Return, per Table E.1-1 tag, the non-empty values it holds anywhere in ``ds``."""
    from kerma.export.deid import _row_for

    found: dict[int, set[str]] = {}
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.tag.is_private or _row_for(elem.tag) is None:
            continue
        text = str(elem.value).strip() if elem.value not in (None, b"", "") else ""
        if text:
            found.setdefault(int(elem.tag), set()).add(text)
    return found


def _raw(ds: Dataset, keyword: str) -> Any:
    """Return the raw encoded value of an element (sequences: nested, item by item)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag not in ds:
        return None
    elem = ds.get_item(tag)
    if elem.VR == "SQ" or keyword.endswith("Sequence"):
        return tuple(
            tuple((int(t), _raw_any(item, t)) for t in sorted(item.keys()))
            for item in ds[tag].value
        )
    return elem.value if isinstance(elem.value, bytes) else str(elem.value)


def _raw_any(ds: Dataset, tag: int) -> Any:
    """Return the raw value of element ``tag`` of ``ds`` (nested sequences too)."""
    elem = ds.get_item(tag)
    if ds[tag].VR == "SQ":
        return tuple(
            tuple((int(t), _raw_any(item, t)) for t in sorted(item.keys())) for item in ds[tag]
        )
    return elem.value if isinstance(elem.value, bytes) else str(elem.value)


def _items(ds: Dataset) -> Iterator[Dataset]:
    """Yield every content item of an SR tree, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


@pytest.fixture(scope="module")
def originals() -> dict[str, bytes]:
    """The original bytes of :data:`FILES`."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    return {name: (DICOM_DIR / name).read_bytes() for name in FILES}


class TestBasicProfile:
    """Table E.1-1, attribute by attribute, header and content tree."""

    def test_table_is_the_standard_table(self) -> None:
        """The packaged table has the standard's rows (spot checks) and no empty action."""
        from kerma.export.deid import BASIC_PROFILE

        rows = {r.tag: r.action for r in BASIC_PROFILE}
        assert len(BASIC_PROFILE) > 600
        assert rows["(0010,0010)"] == "Z"  # Patient's Name
        assert rows["(0010,0020)"] == "Z/D"  # Patient ID (2026c)
        assert rows["(0020,000D)"] == "U"  # Study Instance UID
        assert rows["(0008,0018)"] == "U"  # SOP Instance UID
        assert rows["(0040,A123)"] == "D"  # Person Name (PNAME content items)
        assert rows["(0040,A124)"] == "U"  # UID (UIDREF content items)
        assert rows["(0040,A120)"] == "D"  # DateTime (DATETIME content items)
        assert rows["(0018,1000)"] == "X/Z/D"  # Device Serial Number
        assert all(r.action for r in BASIC_PROFILE)

    @pytest.mark.parametrize("name", PER_FILE)
    def test_no_original_value_of_a_table_attribute_remains(
        self, originals: dict[str, bytes], name: str
    ) -> None:
        """No attribute the Basic Profile removes or replaces keeps a value of the original."""
        from kerma.export.deid import BASIC_PROFILE

        original = _read(originals[name])
        before = _table_values(original)
        out = _read(_deidentifier().deidentify_bytes(originals[name]))
        after = _table_values(out)
        removed = {
            int(r.tag[1:5] + r.tag[6:10], 16)
            for r in BASIC_PROFILE
            if r.action == "X" and "xx" not in r.tag
        }
        for tag, values in before.items():
            leaked = values & after.get(tag, set())
            assert not leaked, f"{pydicom.tag.Tag(tag)} keeps {leaked} ({name})"
            if tag in removed:
                assert not any(e.tag == tag for e in out.iterall()), f"{tag:08X} not removed"
        assert not any(e.tag.is_private for e in out.iterall())
        assert out.PatientIdentityRemoved == "YES"
        assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"

    @pytest.mark.parametrize("name", [f for f in PER_FILE if "RDSR" in f])
    def test_content_tree_names_dates_uids_are_replaced(
        self, originals: dict[str, bytes], name: str
    ) -> None:
        """PNAME, DATE, DATETIME, TIME and UIDREF content items and identifying TEXT change."""
        from kerma.export.deid import IDENTIFYING_TEXT_CONCEPTS

        original = list(_items(_read(originals[name])))
        out = list(_items(_read(_deidentifier().deidentify_bytes(originals[name]))))
        assert len(out) == len(original)
        checked = 0
        for before, after in zip(original, out, strict=True):
            kind = before.ValueType
            for keyword in ("PersonName", "DateTime", "Date", "Time", "UID"):
                if keyword in before and str(before[keyword].value or ""):
                    assert str(after[keyword].value) != str(before[keyword].value), keyword
                    checked += 1
            concept = before.ConceptNameCodeSequence[0].CodeValue
            if kind == "TEXT" and concept in IDENTIFYING_TEXT_CONCEPTS:
                assert after.TextValue == "ANONYMOUS"
                checked += 1
        assert checked > 0

    @pytest.mark.parametrize("options", [{}, {"retain_dates_modified": True}])
    @pytest.mark.parametrize("name", [f for f in PER_FILE if "RDSR" in f])
    def test_dose_values_units_and_codes_are_bit_for_bit(
        self, originals: dict[str, bytes], name: str, options: dict[str, bool]
    ) -> None:
        """Every content item keeps its value type, codes, measured value and unit bytes."""
        original = list(_items(_read(originals[name])))
        out = list(_items(_read(_deidentifier(**options).deidentify_bytes(originals[name]))))
        numbers = 0
        for before, after in zip(original, out, strict=True):
            for keyword in DOSE_ELEMENTS:
                assert _raw(after, keyword) == _raw(before, keyword), keyword
            if before.ValueType == "NUM" and "MeasuredValueSequence" in before:
                numbers += len(before.MeasuredValueSequence)
        assert numbers > 0

    def test_dates_shift_by_one_offset_per_patient(self, originals: dict[str, bytes]) -> None:
        """With Modified Dates every date of a patient moves by the same whole number of days."""
        import datetime as dt

        name = "CT-RDSR-Siemens_Flash-TAP-SS.dcm"
        original = _read(originals[name])
        out = _read(_deidentifier(retain_dates_modified=True).deidentify_bytes(originals[name]))

        def day(text: str) -> dt.date:
            return dt.datetime.strptime(str(text)[:8], "%Y%m%d").date()

        shift = day(out.StudyDate) - day(original.StudyDate)
        assert -3650 <= shift.days < 0
        assert day(out.ContentDate) - day(original.ContentDate) == shift
        before = [i.DateTime for i in _items(original) if "DateTime" in i]
        after = [i.DateTime for i in _items(out) if "DateTime" in i]
        assert [day(a) - day(b) for a, b in zip(after, before, strict=True)] == [shift] * len(
            before
        )
        assert [a[8:] for a in after] == [b[8:] for b in before]  # time of day kept
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
        assert "PatientBirthDate" not in out or not out.PatientBirthDate

    def test_device_identity_is_kept_with_the_option(self, originals: dict[str, bytes]) -> None:
        """Retain Device Identity keeps station name, serial number and the observer UID."""
        name = "CT-RDSR-Siemens_Flash-TAP-SS.dcm"
        original = _read(originals[name])
        kept = _read(_deidentifier(retain_device_identity=True).deidentify_bytes(originals[name]))
        removed = _read(_deidentifier().deidentify_bytes(originals[name]))
        assert kept.StationName == original.StationName
        assert kept.DeviceSerialNumber == original.DeviceSerialNumber
        assert removed.get("StationName", "") != original.StationName

        def observer_uid(ds: Dataset) -> str:
            return next(
                i.UID for i in _items(ds) if i.ConceptNameCodeSequence[0].CodeValue == "121012"
            )

        assert observer_uid(kept) == observer_uid(original)
        assert observer_uid(removed) != observer_uid(original)

        def participant_serials(ds: Dataset) -> list[str]:
            """The TID 1021 Device Participant serial numbers (DCM 113880) of the tree."""
            return [
                str(i.TextValue)
                for i in _items(ds)
                if i.ConceptNameCodeSequence[0].CodeValue == "113880"
            ]

        assert participant_serials(original)
        assert participant_serials(kept) == participant_serials(original)
        assert set(participant_serials(removed)) == {"ANONYMOUS"}

    def test_same_key_same_uids_across_runs_and_objects(self, originals: dict[str, bytes]) -> None:
        """The same key maps a UID the same way every run and in every object of a study."""
        first = [_read(_deidentifier().deidentify_bytes(originals[n])) for n in FILES[1:3]]
        again = [_read(_deidentifier().deidentify_bytes(originals[n])) for n in FILES[1:3]]
        other = [_read(_deidentifier(b"x" * 40).deidentify_bytes(originals[n])) for n in FILES[1:3]]
        assert first[0].StudyInstanceUID == first[1].StudyInstanceUID  # one study, two parts
        assert first[0].SOPInstanceUID != first[1].SOPInstanceUID
        for a, b, c in zip(first, again, other, strict=True):
            assert (a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID) == (
                b.StudyInstanceUID,
                b.SeriesInstanceUID,
                b.SOPInstanceUID,
            )
            assert a.StudyInstanceUID != c.StudyInstanceUID
            assert a.StudyInstanceUID.startswith("2.25.")
            assert len(a.SOPInstanceUID) <= 64
            assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
            assert a.PatientID == b.PatientID != c.PatientID


# -- the export from a registry, and its re-import ----------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path, Any]]:
    """Export :data:`FILES` from an encrypted-archive registry; yield (registry, dir, result)."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    from kerma.api import Registry
    from kerma.export.deid import write_research_export
    from kerma.services.research import iter_research_studies

    folder = tmp_path_factory.mktemp("deid")
    with fresh_database(request.param, folder / "db") as url:
        settings = make_settings(url, folder, archive_mode="encrypted")
        reg = Registry(settings=settings)
        reg.import_paths([DICOM_DIR / n for n in FILES])
        out = folder / "research"
        with reg.session(write=False) as session:
            result = write_research_export(
                iter_research_studies(session, settings=settings),
                out_dir=out,
                deidentifier=_deidentifier(retain_dates_modified=True),
            )
        yield reg, out, result
        reg.close()


#: Study totals compared between the registry and the re-imported research set.
TOTALS = (
    "ct_dlp_total_mgycm",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "administered_activity_total_mbq",
    "number_of_events",
    "modality",
)


class TestResearchExport:
    """``write_research_export`` from a registry (encrypted archive), SQLite and PostgreSQL."""

    def test_every_object_is_written(self, exported: tuple[Any, Path, Any]) -> None:
        """All objects are read from the encrypted archive and written de-identified."""
        registry, out, result = exported
        studies = registry.studies()
        assert result.failures == []
        # image headers of a study that has an RDSR are ignored at import, not reports
        assert result.objects == studies["number_of_reports"].sum() >= len(FILES) - 1
        assert len(list(out.glob("*/*.dcm"))) == result.objects
        assert result.studies == len(studies)

    def test_reimport_gives_the_same_doses(
        self, exported: tuple[Any, Path, Any], tmp_path: Path
    ) -> None:
        """The research set imports into a fresh registry with the same study doses."""
        import math

        from kerma.api import Registry
        from kerma.export.deid import uid_for

        registry, out, _ = exported
        before = registry.studies()
        fresh = Registry(settings=make_settings(f"sqlite:///{tmp_path / 'r.db'}", tmp_path))
        try:
            fresh.import_paths([out])
            after = fresh.studies().set_index("study_instance_uid")
        finally:
            fresh.close()
        assert len(after) == len(before)
        for _, row in before.iterrows():
            new = after.loc[uid_for(KEY, row["study_instance_uid"])]
            for column in TOTALS:
                a, b = row[column], new[column]
                if isinstance(a, float) and math.isnan(a):
                    assert isinstance(b, float) and math.isnan(b), column
                else:
                    assert b == a, (column, row["study_instance_uid"])

    def test_csv_is_keyed_by_the_objects_pseudonym(self, exported: tuple[Any, Path, Any]) -> None:
        """studies.csv has one row per study; its pseudonym is the objects' Patient ID."""
        from kerma.export.deid import RESEARCH_CSV_COLUMNS

        registry, out, _ = exported
        with (out / "studies.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert tuple(rows[0]) == RESEARCH_CSV_COLUMNS
        assert len(rows) == len(registry.studies())
        for row in rows:
            files = list((out / row["study_instance_uid"]).glob("*.dcm"))
            assert len(files) == int(row["number_of_objects"]) > 0
            patient_ids = {str(pydicom.dcmread(f).PatientID) for f in files}
            assert patient_ids == {row["patient_pseudonym"]}
            assert row["study_date"] == "" or len(row["study_date"]) == 10
        dlps = sorted(float(r["ct_dlp_total_mgycm"]) for r in rows if r["ct_dlp_total_mgycm"])
        assert dlps[-1] == pytest.approx(724.52, rel=1e-12)  # CT-RDSR-Siemens_Flash-TAP-SS


class TestCli:
    """``kerma export deid``."""

    def test_writes_the_set_and_the_csv(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The command writes the CT studies of an encrypted registry, de-identified."""
        from kerma.api import Registry
        from kerma.cli.main import build_app

        settings = make_settings(
            f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path, archive_mode="encrypted"
        )
        reg = Registry(settings=settings)
        reg.import_paths([DICOM_DIR / n for n in FILES[:4]])
        reg.close()
        monkeypatch.setenv("KERMA_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("KERMA_ARCHIVE_DIR", str(settings.archive_dir))
        monkeypatch.setenv("KERMA_PSEUDONYM_KEY", str(settings.pseudonym_key))
        out = tmp_path / "research"
        args = ["export", "deid", "--modality", "CT", "--out", str(out)]
        result = CliRunner().invoke(build_app("export"), [*args, "--retain-device-identity"])
        assert result.exit_code == 0, result.output
        assert "wrote 3 de-identified objects of 2 studies" in result.output
        again = CliRunner().invoke(build_app("export"), [*args[:-1], str(tmp_path / "again")])
        assert again.exit_code == 0, again.output
        first = sorted(p.name for p in out.glob("*/*.dcm"))
        assert first == sorted(p.name for p in (tmp_path / "again").glob("*/*.dcm"))

    def test_short_key_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A research key shorter than 32 characters is refused with a clear message."""
        from kerma.cli.main import main

        settings = make_settings(f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path)
        monkeypatch.setenv("KERMA_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("KERMA_ARCHIVE_DIR", str(settings.archive_dir))
        monkeypatch.setenv("KERMA_PSEUDONYM_KEY", str(settings.pseudonym_key))
        with pytest.raises(SystemExit) as exited:
            main(["export", "deid", "--out", str(tmp_path / "o"), "--key", "short"])
        assert exited.value.code == 2
        assert "shorter than 32 characters" in capsys.readouterr().err

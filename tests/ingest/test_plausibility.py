"""Plausibility ranges (issue #11, item 2): implausible values flagged, impossible ones rejected.

Each value of the issue's list is built into a real shared object with pydicom and
imported (SQLite and PostgreSQL): CTDIvol 1e9 mGy, negative DLP, Ka,r 1e7 Gy, AGD 1e6
mGy, a DAP 10⁵ times too large, weight 5,000 kg, age 300 years and a NaN CTDIvol are
flagged for review (stored, warned, listed by ``kerma studies --flagged``) or rejected
(listed by ``kerma rejects`` with the reason) as the shipped table says.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from kerma.db.filters import StudyFilter
from kerma.db.models import DoseReport as DoseReportRow
from kerma.db.models import IrradiationEvent
from kerma.errors import ConfigurationError
from kerma.ingest.pipeline import ImportStatus
from kerma.ingest.plausibility import Action, check_report, load_ranges, shipped_ranges
from kerma.records import DoseReport, ReportKind
from kerma.records import IrradiationEvent as EventRecord
from kerma.services.intake import reason_group
from tests.conftest import DICOM_DIR
from tests.db_fixtures import TEST_PSEUDONYM_KEY

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

CT_RDSR = DICOM_DIR / "CT-RDSR-Siemens_Flash-TAP-SS.dcm"
RF_RDSR = DICOM_DIR / "RF-RDSR-Siemens-Zee.dcm"
MG_RDSR = DICOM_DIR / "MG-RDSR-Hologic_2D.dcm"
DX_IMAGE = DICOM_DIR / "DX-Im-GE_XR220-1.dcm"


def _num_items(ds: Dataset, code_value: str) -> list[Dataset]:
    """Return every NUM content item of concept ``code_value`` (DCM), in document order."""
    found: list[Dataset] = []
    stack = list(reversed(ds.get("ContentSequence", [])))
    while stack:
        item = stack.pop()
        names = item.get("ConceptNameCodeSequence")
        if names and names[0].CodeValue == code_value and item.get("ValueType") == "NUM":
            found.append(item)
        stack.extend(reversed(item.get("ContentSequence", [])))
    return found


def _set_num(
    ds: Dataset, code_value: str, value: str, unit: str | None = None, *, event: bool = False
) -> None:
    """Set the first NUM item of a concept to ``value`` (and its unit code).

    With ``event``, the item of the first 'Irradiation Event X-Ray Data' (DCM 113706).
    """
    if event:
        ds = next(
            item
            for item in ds.ContentSequence
            if item.get("ConceptNameCodeSequence")
            and item.ConceptNameCodeSequence[0].CodeValue == "113706"
        )
    measured = _num_items(ds, code_value)[0].MeasuredValueSequence[0]
    measured.NumericValue = value
    if unit is not None:
        measured.MeasurementUnitsCodeSequence[0].CodeValue = unit


def _ctdivol_1e9(ds: Dataset) -> None:
    _set_num(ds, "113830", "1e9", "mGy")


def _negative_dlp(ds: Dataset) -> None:
    _set_num(ds, "113838", "-120", "mGy.cm")


def _kar_1e7(ds: Dataset) -> None:
    _set_num(ds, "113738", "1e7", "Gy", event=True)


def _agd_1e6(ds: Dataset) -> None:
    _set_num(ds, "111631", "1e6", "mGy", event=True)


def _dap_1e5(ds: Dataset) -> None:
    ds.ImageAndFluoroscopyAreaDoseProduct = float(ds.ImageAndFluoroscopyAreaDoseProduct) * 1e5


def _weight_5000(ds: Dataset) -> None:
    ds.PatientWeight = "5000"


def _age_300(ds: Dataset) -> None:
    ds.PatientAge = "300Y"


def _nan_ctdivol(ds: Dataset) -> None:
    _set_num(ds, "113830", "NaN", "mGy")


def _negative_weight(ds: Dataset) -> None:
    ds.PatientWeight = "-70"


#: (id, source object, change, expected action, quantity, where)
CASES: list[tuple[str, Path, Callable[[Dataset], None], Action, str, str]] = [
    ("ctdivol-1e9-mGy", CT_RDSR, _ctdivol_1e9, Action.FLAG, "ctdivol_mgy", "event 1"),
    ("negative-dlp", CT_RDSR, _negative_dlp, Action.REJECT, "dlp_mgycm", "event 1"),
    ("kar-1e7-Gy", RF_RDSR, _kar_1e7, Action.FLAG, "dose_rp_gy", "event 1"),
    ("agd-1e6-mGy", MG_RDSR, _agd_1e6, Action.FLAG, "agd_mgy", "event 1"),
    ("dap-1e5-times", DX_IMAGE, _dap_1e5, Action.FLAG, "dap_gym2", "event 1"),
    ("weight-5000-kg", CT_RDSR, _weight_5000, Action.FLAG, "patient_weight_kg", "study"),
    ("age-300-years", CT_RDSR, _age_300, Action.FLAG, "patient_age_years", "study"),
    ("nan-ctdivol", CT_RDSR, _nan_ctdivol, Action.FLAG, "ctdivol_mgy", "event 1"),
    ("negative-weight", CT_RDSR, _negative_weight, Action.REJECT, "patient_weight_kg", "study"),
]


def _build(source: Path, change: Callable[[Dataset], None], folder: Path, name: str) -> Path:
    """Write a changed copy of a shared object (new SOP Instance UID) and return its path."""
    ds = pydicom.dcmread(source)
    change(ds)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    path = folder / f"{name}.dcm"
    path.write_bytes(out.getvalue())
    return path


class TestTable:
    """The shipped table and a site's override."""

    def test_shipped_table_has_sources_and_both_actions(self) -> None:
        """Every shipped row names its source keys, each documented in plausibility.md."""
        rows = shipped_ranges()
        doc = (
            Path(__file__).resolve().parents[2] / "src/kerma/reference/plausibility.md"
        ).read_text()
        assert {r.action for r in rows} == {Action.FLAG, Action.REJECT}
        for row in rows:
            assert row.source
            for key in row.source.split(";"):
                assert f"`{key}`" in doc, key

    def test_site_file_overrides_and_removes_rows(self, tmp_path: Path) -> None:
        """A site row replaces the shipped one; a row without limits removes it."""
        site = tmp_path / "site.csv"
        site.write_text(
            "quantity,modality,min,max,action,source\n"
            "ctdivol_mgy,CT,,5000,flag,SITE\n"
            "patient_age_years,*,,,flag,SITE\n"
        )
        rows = {(r.quantity, r.modality, r.action): r for r in load_ranges(site)}
        assert rows[("ctdivol_mgy", "CT", Action.FLAG)].max == 5000
        assert ("patient_age_years", "*", Action.FLAG) not in rows
        assert rows[("ctdivol_mgy", "*", Action.REJECT)].min == 0

    def test_bad_site_file_is_a_configuration_error(self, tmp_path: Path) -> None:
        """An unknown quantity names the file and line."""
        site = tmp_path / "site.csv"
        site.write_text("quantity,modality,min,max,action,source\nctdi,CT,,1,flag,X\n")
        with pytest.raises(ConfigurationError, match=r"site.csv line 2: 'ctdi' is not a quantity"):
            load_ranges(site)

    def test_nan_is_flagged_never_rejected(self) -> None:
        """A NaN dose is a flag (unreadable value), even where negative values reject."""
        report = DoseReport(kind=ReportKind.RDSR_CT)
        report.study.modality = "CT"
        report.events = [EventRecord(ctdivol_mgy=math.nan, dlp_mgycm=-1.0)]
        findings = check_report(report, shipped_ranges())
        assert [(f.quantity, f.action) for f in findings] == [
            ("dlp_mgycm", Action.REJECT),
            ("ctdivol_mgy", Action.FLAG),
        ]
        assert "not a finite number" in findings[1].message


@needs_shared
class TestImport:
    """Each value of the issue's list, imported into a registry (SQLite and PostgreSQL)."""

    @pytest.mark.parametrize(
        ("source", "change", "action", "quantity", "where"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_value_is_flagged_or_rejected(
        self,
        registry: Registry,
        tmp_path: Path,
        source: Path,
        change: Callable[[Dataset], None],
        action: Action,
        quantity: str,
        where: str,
    ) -> None:
        """Flag: stored, warned, study flagged with the reason. Reject: listed, not stored."""
        path = _build(source, change, tmp_path, quantity)
        (outcome,) = [registry.import_bytes(path.read_bytes(), source=path.name)]
        flags = registry.plausibility_flags()
        if action is Action.REJECT:
            assert outcome.status is ImportStatus.REJECTED
            assert outcome.reason is not None
            assert outcome.reason.startswith("Rejected as implausible")
            assert f"{where}: " in outcome.reason and f"[{quantity}]" in outcome.reason
            assert "cannot be physical" in outcome.reason
            assert reason_group(outcome.reason) == "implausible"
            rejects = registry.rejects()
            assert list(rejects["reason"]) == [outcome.reason]
            assert registry.studies(include_non_patient=True).empty
            assert flags.empty
            return
        assert outcome.status is ImportStatus.IMPORTED, outcome.reason
        assert list(flags["quantity"]) == [quantity]
        assert list(flags["location"]) == [where]
        assert flags["study_id"].iloc[0] == outcome.study_id
        message = flags["message"].iloc[0]
        assert "flagged for review" in message
        flagged = registry.studies(flt=StudyFilter(flagged=True, include_non_patient=True))
        assert list(flagged["study_id"]) == [outcome.study_id]
        with registry.session(write=False) as session:
            report = session.get(DoseReportRow, outcome.dose_report_id)
            assert message in report.warnings
            stored = session.scalars(
                select(IrradiationEvent).where(
                    IrradiationEvent.dose_report_id == outcome.dose_report_id
                )
            ).first()
        if quantity == "ctdivol_mgy" and "NaN" in path.read_bytes().decode("latin-1"):
            assert pd.isna(flags["value"].iloc[0]) and flags["value_text"].iloc[0] == "nan"
            assert stored is not None and stored.ctdivol_mgy is None
        elif where == "event 1":
            assert stored is not None
            assert getattr(stored, quantity) == pytest.approx(flags["value"].iloc[0])

    def test_unchanged_objects_are_not_flagged(self, registry: Registry) -> None:
        """The unchanged sources of the cases import without a flag."""
        for path in (CT_RDSR, RF_RDSR, MG_RDSR, DX_IMAGE):
            assert registry.import_paths([path]).n_imported == 1
        assert registry.plausibility_flags().empty
        assert registry.studies(flt=StudyFilter(flagged=True, include_non_patient=True)).empty

    def test_reprocess_with_site_table_clears_the_flag(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """A site row that allows the value, then ``reprocess``: the flag goes, no duplicate."""
        path = _build(CT_RDSR, _weight_5000, tmp_path, "weight")
        registry.import_paths([path])
        registry.reprocess()
        assert len(registry.plausibility_flags()) == 1  # rebuilt, not doubled
        site = tmp_path / "site.csv"
        site.write_text(
            "quantity,modality,min,max,action,source\npatient_weight_kg,*,,6000,flag,S\n"
        )
        relaxed = Registry(settings=registry.settings.model_copy(update={"plausibility": site}))
        try:
            relaxed.reprocess()
            assert relaxed.plausibility_flags().empty
        finally:
            relaxed.close()


@needs_shared
class TestCommands:
    """``kerma studies --flagged`` and ``kerma rejects`` show them, with the reason."""

    def test_flagged_and_rejects_listings(self, database_url: str, tmp_path: Path) -> None:
        """One flagged study (CTDIvol 1e9) and one rejection (negative DLP) are listed."""
        flagged = _build(CT_RDSR, _ctdivol_1e9, tmp_path, "ctdivol")
        rejected = _build(CT_RDSR, _negative_dlp, tmp_path, "dlp")
        env = {
            "KERMA_DATABASE_URL": database_url,
            "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
            "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
            "COLUMNS": "400",
        }
        runner = CliRunner()
        result = runner.invoke(app, ["import", str(flagged), str(rejected)], env=env)
        assert result.exit_code in (0, 1), result.output
        result = runner.invoke(app, ["studies", "--flagged", "--include-non-patient"], env=env)
        assert result.exit_code == 0, result.output
        assert "Studies (1)" in result.output
        assert "[ctdivol_mgy] 1e+09 is above 2000" in result.output
        result = runner.invoke(app, ["studies"], env=env)
        assert "flagged for review" not in result.output
        result = runner.invoke(app, ["rejects", "--reason", "implausible"], env=env)
        assert result.exit_code == 0, result.output
        assert "Rejected as implausible" in result.output
        assert "dlp.dcm" in result.output

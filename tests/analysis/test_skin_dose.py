"""Tests of fluoroscopy skin dose (kerma.analysis.skin_dose)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kerma.analysis.skin_dose import (
    METHOD_KAR,
    METHOD_PYSKINDOSE,
    estimate_skin_dose,
    is_pyskindose_available,
    skin_dose_fallback_frame,
    skin_dose_map_figure,
)

DICOM_DIR = Path(__file__).resolve().parents[3] / "shared" / "dicom"


class TestFallback:
    """Ka,r total, labelled, with the reason, when PySkinDose cannot run."""

    def test_missing_file_gives_kar_with_reason(self, tmp_path: Path) -> None:
        """A missing RDSR gives the Ka,r fallback and says why."""
        result = estimate_skin_dose(tmp_path / "absent.dcm", dose_rp_total_gy=0.123)
        assert result.method == METHOD_KAR
        assert result.peak_skin_dose_mgy is None
        assert result.dose_rp_total_gy == 0.123
        assert result.reason

    def test_not_dicom_fails_safely(self, tmp_path: Path) -> None:
        """A file PySkinDose cannot read gives the fallback, never an exception."""
        path = tmp_path / "junk.dcm"
        path.write_bytes(b"not dicom")
        result = estimate_skin_dose(path, dose_rp_total_gy=0.005, timeout_s=120)
        assert result.method == METHOD_KAR
        assert result.dose_rp_total_gy == 0.005

    def test_fallback_frame_labels_every_fluoro_study(self) -> None:
        """The sample-frame fallback lists Ka,r per RF/XA study with the method label."""
        samples = pd.DataFrame(
            {
                "modality_family": ["RF/XA", "CT"],
                "study_id": [1, 2],
                "device_name": ["CATH", "CT1"],
                "dose_rp_total_gy": [0.35, None],
            }
        )
        frame = skin_dose_fallback_frame(samples, "no archive")
        assert frame["study_id"].tolist() == [1]
        assert frame.loc[0, "method"] == METHOD_KAR
        assert frame.loc[0, "dose_rp_total_gy"] == 0.35

    def test_map_of_fallback_raises(self) -> None:
        """A fallback result has no map to draw."""
        result = estimate_skin_dose("/nonexistent.dcm")
        with pytest.raises(ValueError, match="Unable to draw a skin dose map"):
            skin_dose_map_figure(result)


@pytest.mark.slow
class TestPySkinDose:
    """PySkinDose on the Siemens Axiom example procedure shipped with PySkinDose."""

    def test_supported_device_gives_peak_skin_dose(self) -> None:
        """The peak skin dose is positive, below Ka,r, and the map peak equals it."""
        if not is_pyskindose_available():
            pytest.skip("pyskindose is not installed")
        path = DICOM_DIR / "PSD-siemens_axiom_example_procedure.dcm"
        if not path.is_file():
            pytest.skip("../shared/dicom is not beside the repository")
        expected = json.loads(
            (DICOM_DIR / "expected" / "PSD-siemens_axiom_example_procedure.json").read_text()
        )
        kar_mgy = 1000 * sum(e.get("dose_rp_gy") or 0 for e in expected["events"])
        result = estimate_skin_dose(path, timeout_s=300)
        assert result.method == METHOD_PYSKINDOSE, result.reason
        assert result.dose_rp_total_gy == pytest.approx(kar_mgy / 1000)  # Gy
        assert 0 < result.peak_skin_dose_mgy < kar_mgy
        assert result.dose_map["dose_mgy"].max() == pytest.approx(result.peak_skin_dose_mgy)
        figure = skin_dose_map_figure(result)
        assert figure.data[0].marker.color is not None


# ------------------------------------------------------------------ stored studies

#: Substantial radiation dose level category of alert_levels.csv (NCRP Report 168).
SRDL = "substantial radiation dose level (SRDL)"


def expected_ka_r_mgy(name: str) -> float:
    """Return the accumulated Ka,r (mGy) of ``name`` from ../shared/dicom/expected.

    The larger plane's (a reference-point dose is never summed over planes); these
    files have one plane.
    """
    data = json.loads((DICOM_DIR / "expected" / f"{Path(name).stem}.json").read_text())
    planes = data["accumulated"]["planes"]
    return 1000 * max(p.get("dose_rp_total_gy") or 0 for p in planes)


def expected_dose_rp_gy(name: str) -> float:
    """Return the accumulated Ka,r of ``name`` in Gy (the canonical unit)."""
    return expected_ka_r_mgy(name) / 1000


def write_scaled_copy(source: Path, target: Path, *, factor: float, seed: str) -> Path:
    """Write a synthetic copy of an RDSR with every Dose (RP) value times ``factor``.

    Study, series, SOP Instance and Irradiation Event UIDs are new (derived from
    ``seed``), so the copy is a separate study; the Dose (RP) of each irradiation event
    (DCM 113738) and the accumulated Dose (RP) Total (DCM 113725) are scaled.
    """
    from pydicom import dcmread
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ds = dcmread(source)
    counter = iter(range(100_000))

    def new_uid() -> str:
        return generate_uid(entropy_srcs=[seed, str(next(counter))])

    def walk(items: object) -> None:
        for item in items:  # type: ignore[attr-defined]
            concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            code = (concept.CodeValue, concept.CodingSchemeDesignator) if concept else None
            if code in {
                (codes.DCM.DoseRP.value, "DCM"),
                (codes.DCM.DoseRPTotal.value, "DCM"),
            }:
                measured = item.MeasuredValueSequence[0]
                measured.NumericValue = f"{float(measured.NumericValue) * factor:.8g}"
            if code == (codes.DCM.IrradiationEventUID.value, "DCM"):
                item.UID = new_uid()
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    ds.StudyInstanceUID = new_uid()
    ds.SeriesInstanceUID = new_uid()
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(target)
    return target


def run_pyskindose_directly(path: Path, work: Path) -> float:
    """Return PySkinDose's peak skin dose (mGy) of ``path``, run in this process.

    Same settings as Kerma: PySkinDose's ``settings_example.json`` in
    ``calculate_dose`` mode (elliptic-cylinder phantom), no plots.
    """
    import pyskindose
    from pyskindose.main import main
    from pyskindose.settings import PyskindoseSettings

    settings = json.loads((Path(pyskindose.__file__).parent / "settings_example.json").read_text())
    settings["mode"] = "calculate_dose"
    settings["plot"] |= {"plot_dosemap": False, "interactivity": False, "notebook_mode": False}
    settings["corrections_db_path"] = str(work / "corrections.db")
    output = main(
        file_path=str(path), settings=PyskindoseSettings(settings=settings, output_format="dict")
    )
    return float(output["psd"])


def assert_valid_map(path: Path) -> None:
    """Assert ``path`` is a PNG, or an HTML page that loads plotly.min.js beside it."""
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        return
    assert path.suffix == ".html"
    text = data.decode()
    assert text.lstrip().lower().startswith(("<!doctype html>", "<html"))
    assert "Skin dose map" in text
    assert 'src="plotly.min.js"' in text
    assert (path.parent / "plotly.min.js").stat().st_size > 1_000_000


class TestSrdlFlags:
    """NCRP Report 168 substantial radiation dose levels from the shipped table."""

    def test_shipped_table_gives_ncrp_168_levels(self) -> None:
        """The packaged alert table holds the four NCRP 168 SRDLs with their units."""
        from kerma.analysis.reference import load_alert_levels

        levels = load_alert_levels(category=SRDL)
        got = {
            (q, op, v, u)
            for q, op, v, u in zip(
                levels["quantity"],
                levels["operator"],
                levels["threshold_value"],
                levels["unit"],
                strict=True,
            )
        }
        assert got == {
            ("Peak skin dose", ">=", 3000.0, "mGy"),
            ("Reference air kerma Ka r (IRP)", ">=", 5000.0, "mGy"),
            ("Kerma-area product", ">=", 500.0, "Gy.cm2"),
            ("Fluoroscopy time", ">=", 60.0, "min"),
        }
        assert set(levels["source_ref"].str.split(";").str[0]) == {"NCRP168"}

    def test_each_quantity_flagged_at_its_level(self) -> None:
        """Values at a level are flagged (>=); below or missing are not."""
        from kerma.analysis.skin_dose import add_srdl_flags

        frame = pd.DataFrame(
            {
                "peak_skin_dose_mgy": [3000.0, 2999.0, float("nan"), float("nan")],
                "dose_rp_total_gy": [0.1, 5.21, 4.999, float("nan")],
                "dap_total_gym2": [0.001, 0.05, 0.002, float("nan")],
                "fluoro_time_total_s": [60.0, 3599.0, 3600.0, float("nan")],
            }
        )
        flagged = add_srdl_flags(frame)
        assert flagged["srdl_exceeded"].tolist() == [True, True, True, False]
        source = "(NCRP Report No. 168, 2010, SRDL)"
        assert flagged["srdl_reasons"].tolist() == [
            f"peak skin dose 3000 mGy >= 3000 mGy {source}",
            f"Ka,r 5210 mGy >= 5000 mGy {source}; KAP 500 Gy.cm2 >= 500 Gy.cm2 {source}",
            f"fluoroscopy time 60 min >= 60 min {source}",
            "",
        ]

    def test_strict_operator_and_other_units_from_table(self) -> None:
        """A '>' level in Gy is applied as written in the table, converted to mGy."""
        from kerma.analysis.reference import load_alert_levels
        from kerma.analysis.skin_dose import add_srdl_flags

        levels = load_alert_levels(category=SRDL).iloc[:1].copy()
        levels[["operator", "threshold_value", "unit"]] = [">", 2.0, "Gy"]
        frame = pd.DataFrame({"peak_skin_dose_mgy": [2000.0, 2001.0]})
        flagged = add_srdl_flags(frame, alert_levels=levels)
        assert flagged["srdl_exceeded"].tolist() == [False, True]
        assert flagged.loc[1, "srdl_reasons"].startswith("peak skin dose 2 Gy > 2 Gy")

    def test_unknown_unit_raises(self) -> None:
        """A level in a unit Kerma cannot convert is a configuration error."""
        from kerma.analysis.reference import load_alert_levels
        from kerma.analysis.skin_dose import add_srdl_flags
        from kerma.errors import ConfigurationError

        levels = load_alert_levels(category=SRDL).iloc[:1].copy()
        levels["unit"] = "rad"
        with pytest.raises(ConfigurationError, match="gives it in 'rad'"):
            add_srdl_flags(pd.DataFrame({"peak_skin_dose_mgy": [1.0]}), alert_levels=levels)

    def test_table_without_srdl_rows_raises(self) -> None:
        """Without SRDL rows nothing can be flagged: say so."""
        from kerma.analysis.reference import load_alert_levels
        from kerma.analysis.skin_dose import add_srdl_flags
        from kerma.errors import ConfigurationError

        levels = load_alert_levels(category="alert")
        with pytest.raises(ConfigurationError, match="has no rows of category"):
            add_srdl_flags(pd.DataFrame({"dose_rp_total_gy": [1.0]}), alert_levels=levels)


class TestFailureReasons:
    """PySkinDose errors become reasons a physicist understands."""

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            (
                "NotImplementedError: Could not find settings for the given manufacturer and "
                "model (manufacturer='philips', model='azurion')",
                "PySkinDose cannot be used: no geometry for this device model in PySkinDose",
            ),
            (
                "AttributeError: 'FileDataset' object has no attribute 'ManufacturerModelName'",
                "PySkinDose cannot be used: the RDSR has no (0008,1090) 'Manufacturer's Model",
            ),
            ("KeyError: 'Manufacturer'", "PySkinDose cannot be used: the RDSR has no (0008,0070)"),
            (
                "AttributeError: 'DataFrame' object has no attribute 'CollimatedFieldArea_m2'",
                "PySkinDose cannot be used: the irradiation events lack the 'Collimated Field",
            ),
            ("IndexError: list index out of range", "PySkinDose failed on this RDSR: IndexError"),
        ],
        ids=["device", "model-name", "manufacturer", "field-area", "other"],
    )
    def test_known_failures_explained(self, message: str, expected: str) -> None:
        """Each known failure gets its meaning, and keeps the original message."""
        from kerma.analysis.skin_dose import explain_pyskindose_failure

        reason = explain_pyskindose_failure(message)
        assert reason.startswith(expected)
        assert message in reason


def _import(registry: object, names: list[str], extra: list[Path] | None = None) -> None:
    """Import shared RDSRs (and extra files) into ``registry``."""
    registry.import_paths([DICOM_DIR / n for n in names] + list(extra or []))  # type: ignore[attr-defined]


def _study_uid(name: str) -> str:
    """Return the Study Instance UID of a shared file from its expected JSON."""
    data = json.loads((DICOM_DIR / "expected" / f"{Path(name).stem}.json").read_text())
    return str(data["study"]["study_instance_uid"])


SUPPORTED = "PSD-siemens_axiom_artis.dcm"  # Siemens AXIOM-Artis: PySkinDose geometry
NO_MODEL = "RF-RDSR-Philips_Allura.dcm"  # no Manufacturer's Model Name: fails fast


@pytest.mark.slow
class TestStoredEstimates:
    """Estimates stored per study, skipped on re-run, replaced on recompute (both stores)."""

    def test_store_skip_and_recompute(self, registry: object, shared_dir: Path) -> None:
        """Rows are stored once; a re-run computes nothing; recompute replaces one study."""
        if not is_pyskindose_available():
            pytest.skip("pyskindose is not installed")
        from kerma.analysis.skin_dose import SKIN_DOSE_COLUMNS

        _import(registry, [SUPPORTED, NO_MODEL])
        first = registry.estimate_skin_doses(timeout_s=120)  # type: ignore[attr-defined]
        assert list(first.columns) == [*SKIN_DOSE_COLUMNS, "is_computed_now"]
        by_uid = first.set_index("study_instance_uid")
        assert by_uid.loc[_study_uid(SUPPORTED), "method"] == METHOD_PYSKINDOSE
        assert by_uid.loc[_study_uid(NO_MODEL), "method"] == METHOD_KAR
        assert first["is_computed_now"].all()

        again = registry.estimate_skin_doses(timeout_s=120)  # type: ignore[attr-defined]
        assert not again["is_computed_now"].any()
        assert again["computed_at"].tolist() == first["computed_at"].tolist()
        stored = registry.skin_doses()  # type: ignore[attr-defined]
        pd.testing.assert_frame_equal(stored, again.drop(columns="is_computed_now"))

        redo = registry.estimate_skin_doses(  # type: ignore[attr-defined]
            study_instance_uids=[_study_uid(NO_MODEL)], recompute=True, timeout_s=120
        )
        assert redo["study_instance_uid"].tolist() == [_study_uid(NO_MODEL)]
        assert redo["is_computed_now"].tolist() == [True]
        assert redo.loc[0, "computed_at"] > by_uid.loc[_study_uid(NO_MODEL), "computed_at"]
        assert len(registry.skin_doses()) == 2  # type: ignore[attr-defined]  # replaced

    def test_unknown_study_uid_raises(self, registry: object) -> None:
        """A UID that is not a stored fluoroscopy study is named in a NotFoundError."""
        from kerma.errors import NotFoundError

        with pytest.raises(NotFoundError, match=r"Study Instance UID 1\.2\.3 is stored"):
            registry.estimate_skin_doses(study_instance_uids=["1.2.3"])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def fluoro_registry(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A SQLite registry of real fluoroscopy RDSRs and one synthetic high-dose study.

    Studies: Siemens AXIOM-Artis (PySkinDose supported), Philips Azurion (no PySkinDose
    geometry), Philips Allura without model name, a QA study (Siemens Zee HFS,
    non-patient), a DX RDSR, and a synthetic copy of the AXIOM-Artis RDSR with every
    Dose (RP) times 4000 (Ka,r 5440 mGy).
    """
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    if not is_pyskindose_available():
        pytest.skip("pyskindose is not installed")
    import kerma
    from tests.db_fixtures import make_settings

    root = tmp_path_factory.mktemp("fluoro")
    synthetic = write_scaled_copy(
        DICOM_DIR / SUPPORTED, root / "synthetic-high-dose.dcm", factor=4000, seed="kerma-srdl"
    )
    registry = kerma.Registry(settings=make_settings(f"sqlite:///{root / 'k.db'}", root))
    names = [
        SUPPORTED,
        "RF-RDSR-Philips_Azurion.dcm",
        NO_MODEL,
        "RF-RDSR-Siemens_Zee-HFS.dcm",
        "DX-RDSR-Canon_CXDI.dcm",
    ]
    _import(registry, names, [synthetic])
    frame = registry.estimate_skin_doses(timeout_s=120)
    yield {"registry": registry, "frame": frame, "synthetic": synthetic, "root": root}
    registry.close()


@pytest.mark.slow
class TestEstimateStudySkinDoses:
    """estimate_study_skin_doses on real and synthetic fluoroscopy studies."""

    def test_only_fluoroscopy_patient_studies(self, fluoro_registry: dict) -> None:
        """RF/XA patient studies get a row; the QA study and the DX study do not."""
        frame = fluoro_registry["frame"]
        from pydicom import dcmread

        synthetic_uid = dcmread(fluoro_registry["synthetic"]).StudyInstanceUID
        assert set(frame["study_instance_uid"]) == {
            _study_uid(SUPPORTED),
            _study_uid("RF-RDSR-Philips_Azurion.dcm"),
            _study_uid(NO_MODEL),
            synthetic_uid,
        }

    def test_supported_device_psd_equals_pyskindose(
        self, fluoro_registry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The stored PSD is PySkinDose's own result on the file; the map was written."""
        monkeypatch.chdir(tmp_path)
        row = fluoro_registry["frame"].set_index("study_instance_uid").loc[_study_uid(SUPPORTED)]
        assert row["method"] == METHOD_PYSKINDOSE
        assert row["reason"] == ""
        direct = run_pyskindose_directly(DICOM_DIR / SUPPORTED, tmp_path)
        assert row["peak_skin_dose_mgy"] == pytest.approx(direct, rel=1e-9)
        assert row["peak_skin_dose_mgy"] == pytest.approx(1.302, abs=0.001)
        assert row["dose_rp_total_gy"] == pytest.approx(expected_dose_rp_gy(SUPPORTED))
        assert (
            row["map_path"]
            == f"skin_dose_maps/{_study_uid(SUPPORTED)}{Path(row['map_path']).suffix}"
        )
        assert_valid_map(fluoro_registry["root"] / "archive" / row["map_path"])
        assert not row["srdl_exceeded"]

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            (
                "RF-RDSR-Philips_Azurion.dcm",
                "PySkinDose cannot be used: no geometry for this device model in PySkinDose",
            ),
            (NO_MODEL, "PySkinDose cannot be used: the RDSR has no (0008,1090)"),
        ],
        ids=["azurion-unsupported", "allura-no-model-name"],
    )
    def test_fallback_is_ka_r_with_reason(
        self, fluoro_registry: dict, name: str, reason: str
    ) -> None:
        """Unsupported RDSRs give the device's accumulated Ka,r, labelled, with the reason."""
        row = fluoro_registry["frame"].set_index("study_instance_uid").loc[_study_uid(name)]
        assert row["method"] == METHOD_KAR
        assert pd.isna(row["peak_skin_dose_mgy"])
        assert row["dose_rp_total_gy"] == pytest.approx(expected_dose_rp_gy(name))
        assert row["reason"].startswith(reason)
        assert row["map_path"] is None or pd.isna(row["map_path"])

    def test_synthetic_high_dose_study_flagged(self, fluoro_registry: dict) -> None:
        """Ka,r 5440 mGy and its PSD (4000 x the original's) reach the NCRP 168 SRDLs."""
        from pydicom import dcmread

        frame = fluoro_registry["frame"].set_index("study_instance_uid")
        row = frame.loc[dcmread(fluoro_registry["synthetic"]).StudyInstanceUID]
        original = frame.loc[_study_uid(SUPPORTED)]
        assert row["method"] == METHOD_PYSKINDOSE
        assert row["dose_rp_total_gy"] == pytest.approx(4000 * expected_dose_rp_gy(SUPPORTED))
        assert row["peak_skin_dose_mgy"] == pytest.approx(
            4000 * original["peak_skin_dose_mgy"], rel=1e-6
        )
        assert row["srdl_exceeded"]
        source = "(NCRP Report No. 168, 2010, SRDL)"
        assert row["srdl_reasons"] == (
            f"peak skin dose {row['peak_skin_dose_mgy']:.0f} mGy >= 3000 mGy {source}; "
            f"Ka,r 5440 mGy >= 5000 mGy {source}"
        )
        others = frame.drop(index=row.name)
        assert not others["srdl_exceeded"].any()


class TestTransientFallbacks:
    """Fallbacks whose cause may have gone (not installed, timeout) are computed again."""

    @pytest.mark.parametrize(
        ("reason", "is_installed", "expected"),
        [
            # written by this version; installed since
            ('PySkinDose is not installed (pip install "kerma[skin]"; ...)', True, True),
            # written by earlier versions, still not installed: same result, skip it
            ("PySkinDose is not installed (pip install kerma[skin])", False, False),
            ("PySkinDose is not installed (pip install kerma[skin])", True, True),
            # a timeout may not recur on a less busy machine: always retried
            ("PySkinDose did not finish within 180 s", False, True),
            ("PySkinDose did not finish within 5 s; computed from 1 of 2 RDSRs", True, True),
            # lasting causes: kept until --recompute or a new RDSR
            ("PySkinDose cannot model this device", True, False),
            ("no projection X-Ray Radiation Dose SR stored for this study", True, False),
            ("", True, False),
            (None, True, False),
        ],
        ids=[
            "not-installed-now-installed",
            "old-text-still-not-installed",
            "old-text-now-installed",
            "timeout",
            "timeout-with-note",
            "device-unsupported",
            "no-rdsr",
            "empty",
            "none",
        ],
    )
    def test_reason_classified(
        self, reason: str | None, is_installed: bool, expected: bool
    ) -> None:
        """Only transient reasons (installable, timeout) ask for a new estimate."""
        from kerma.analysis.skin_dose import is_transient_fallback

        assert is_transient_fallback(reason, is_installed=is_installed) is expected

    def test_not_installed_advice_names_the_extra(self) -> None:
        """The advice is copy-pasteable in a shell (quoted extra) and covers a checkout."""
        from kerma.analysis.skin_dose import NOT_INSTALLED_REASON

        assert 'pip install "kerma[skin]"' in NOT_INSTALLED_REASON
        assert 'pip install -e ".[skin]"' in NOT_INSTALLED_REASON

    @pytest.mark.parametrize(
        ("stored_reason", "is_recomputed"),
        [
            ("PySkinDose is not installed (pip install kerma[skin])", True),
            ("PySkinDose did not finish within 1 s", True),
            ("a lasting reason stored before", False),
        ],
        ids=["not-installed", "timeout", "lasting"],
    )
    def test_stored_transient_fallback_recomputed_on_plain_run(
        self, registry: object, shared_dir: Path, stored_reason: str, is_recomputed: bool
    ) -> None:
        """A stored "not installed" or timeout row is replaced by a plain run (no --recompute)."""
        if not is_pyskindose_available():
            pytest.skip("pyskindose is not installed")
        import datetime as dt

        from kerma.db.models import DoseReport, SkinDoseEstimate

        _import(registry, [NO_MODEL])
        studies = registry.studies()  # type: ignore[attr-defined]
        study_id = int(studies["study_id"].iloc[0])
        with registry.session() as session:  # type: ignore[attr-defined]
            rdsr_uid = session.query(DoseReport.sop_instance_uid).scalar()
            session.add(
                SkinDoseEstimate(
                    study_id=study_id,
                    computed_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                    method=METHOD_KAR,
                    peak_skin_dose_mgy=None,
                    dose_rp_total_gy=expected_dose_rp_gy(NO_MODEL),
                    reason=stored_reason,
                    map_path=None,
                    dose_report_sop_instance_uid=rdsr_uid,
                )
            )
        frame = registry.estimate_skin_doses(timeout_s=120)  # type: ignore[attr-defined]
        assert frame["is_computed_now"].tolist() == [is_recomputed]
        row = frame.iloc[0]
        assert row["method"] == METHOD_KAR  # PySkinDose has no model of this device
        assert row["dose_rp_total_gy"] == pytest.approx(expected_dose_rp_gy(NO_MODEL))
        if is_recomputed:
            assert row["reason"] != stored_reason
            assert "not installed" not in row["reason"]
            assert row["computed_at"].year > 2020
        else:
            assert row["reason"] == stored_reason
        assert len(registry.skin_doses()) == 1  # type: ignore[attr-defined]  # replaced

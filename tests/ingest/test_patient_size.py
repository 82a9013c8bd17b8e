"""Patient size from received CT images and the SSDE it gives, on SQLite and PostgreSQL.

Synthetic CT images (a 250 mm water cylinder beside a table strip; localizers of a
240 mm x 340 mm elliptical cylinder) are imported with a real CT RDSR whose Study
Instance UID is set to theirs. CT-RDSR-Philips_BigBore4DCT.dcm has one helical event
(CTDIvol 23.7 mGy, IEC body phantom) and no water-equivalent diameter or AP/LAT, so its
SSDE can only come from the images.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedCTImageStorage, generate_uid

from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import reference_path
from kerma.api import Registry
from kerma.dicom.size import (
    METHOD_AXIAL_DW,
    METHOD_LOCALIZER_AP,
    METHOD_LOCALIZER_LAT,
    measure_patient_size,
    water_equivalent_diameter_from_hu,
)
from kerma.errors import IngestWarning
from kerma.ingest.pipeline import ImportStatus
from tests.conftest import DICOM_DIR
from tests.ingest.helpers import (
    CT_RESCALE_INTERCEPT,
    elliptical_localizer,
    save,
    undecodable_ct,
    water_cylinder_ct,
)

RDSR = DICOM_DIR / "CT-RDSR-Philips_BigBore4DCT.dcm"
RDSR_CTDIVOL_MGY = 23.7  # ../shared/dicom/expected/CT-RDSR-Philips_BigBore4DCT.json

needs_shared = pytest.mark.skipif(not RDSR.is_file(), reason="../shared is not beside the repo")


def aapm204_factor_32cm(d_cm: float) -> float:
    """Return a·exp(−b·D) from the 32 cm row of ssde_fit_coefficients.csv, read here."""
    with reference_path("ssde_fit_coefficients.csv").open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["phantom_cm"] == "32")
    return float(row["a"]) * math.exp(-float(row["b"]) * d_cm)


def round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Write a dataset to bytes and read it back (as a receiver would)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def rdsr_for_study(study_uid: str, folder: Path) -> Path:
    """Copy the Philips CT RDSR into ``folder`` with its Study Instance UID set."""
    ds = pydicom.dcmread(RDSR)
    ds.StudyInstanceUID = study_uid
    return save(ds, folder / "rdsr.dcm")


def axial_series(study_uid: str, folder: Path, n: int = 3) -> list[Path]:
    """Write ``n`` axial images of the 250 mm cylinder, 10 mm apart."""
    series = generate_uid()
    return [
        save(
            water_cylinder_ct(
                study_instance_uid=study_uid, z_mm=10.0 * i, series_instance_uid=series
            ),
            folder / f"ct{i}.dcm",
        )
        for i in range(n)
    ]


def localizer_pair(study_uid: str, folder: Path) -> list[Path]:
    """Write an AP and a lateral localizer of the 240 mm x 340 mm elliptical cylinder."""
    return [
        save(elliptical_localizer(study_instance_uid=study_uid, view=v), folder / f"{v}.dcm")
        for v in ("AP", "LAT")
    ]


class TestMeasurePatientSize:
    """kerma.dicom.size on synthetic images (no database)."""

    def test_water_cylinder_gives_its_diameter_table_excluded(self) -> None:
        """A 250 mm water cylinder beside a +200 HU table strip measures 250 mm ± 1 %."""
        result = measure_patient_size(round_trip(water_cylinder_ct(study_instance_uid="1.2.3")))
        assert result.reason is None
        assert result.size is not None
        assert result.size.image_type == "axial"
        assert result.size.direction == "dw"
        assert result.size.size_mm == pytest.approx(250.0, rel=0.01)
        assert result.size.table_position_mm == 0.0
        assert result.size.method.startswith(METHOD_AXIAL_DW)

    def test_table_counts_with_threshold_only(self) -> None:
        """Without the connected-region step the table strip would enlarge Dw (> 1 %)."""
        ds = round_trip(water_cylinder_ct(study_instance_uid="1.2.3"))
        hu = ds.pixel_array.astype(float) + CT_RESCALE_INTERCEPT
        mask = hu > -400.0
        area = mask.sum() * 0.8 * 0.8
        threshold_only = 2 * math.sqrt((hu[mask].mean() / 1000 + 1) * area / math.pi)
        assert threshold_only > 250.0 * 1.01
        assert water_equivalent_diameter_from_hu(hu, (0.8, 0.8)) == pytest.approx(250.0, rel=0.01)

    @pytest.mark.parametrize(
        ("view", "direction", "method", "expected_mm"),
        [("AP", "lat", METHOD_LOCALIZER_LAT, 340.0), ("LAT", "ap", METHOD_LOCALIZER_AP, 240.0)],
        ids=["ap-view-gives-lat", "lateral-view-gives-ap"],
    )
    def test_localizer_width_along_the_row(
        self, view: str, direction: str, method: str, expected_mm: float
    ) -> None:
        """An AP localizer gives the LAT width, a lateral one the AP width (± 1 %)."""
        ds = round_trip(elliptical_localizer(study_instance_uid="1.2.3", view=view))
        result = measure_patient_size(ds)
        assert result.size is not None
        assert result.size.image_type == "localizer"
        assert result.size.direction == direction
        assert result.size.method.startswith(method)
        assert result.size.size_mm == pytest.approx(expected_mm, rel=0.01)
        assert result.size.table_position_mm is None

    def test_enhanced_ct_uses_the_central_frame(self) -> None:
        """Enhanced CT with 200, 250 and 300 mm frames: the central frame, 250 mm ± 1 %."""
        frames = [
            water_cylinder_ct(study_instance_uid="1.2.3", diameter_mm=d, with_table=False)
            for d in (200.0, 250.0, 300.0)
        ]
        ds = frames[1]
        ds.SOPClassUID = EnhancedCTImageStorage
        ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
        ds.NumberOfFrames = 3
        ds.PixelData = b"".join(f.PixelData for f in frames)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
        shared = Dataset()
        shared.PixelMeasuresSequence = [Dataset()]
        shared.PixelMeasuresSequence[0].PixelSpacing = ds.PixelSpacing
        shared.PlaneOrientationSequence = [Dataset()]
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        shared.PixelValueTransformationSequence = [Dataset()]
        shared.PixelValueTransformationSequence[0].RescaleIntercept = CT_RESCALE_INTERCEPT
        shared.PixelValueTransformationSequence[0].RescaleSlope = 1
        ds.SharedFunctionalGroupsSequence = [shared]
        per_frame = []
        for z in (0.0, 5.0, 10.0):
            group = Dataset()
            group.PlanePositionSequence = [Dataset()]
            group.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, z]
            per_frame.append(group)
        ds.PerFrameFunctionalGroupsSequence = per_frame
        for keyword in ("PixelSpacing", "RescaleIntercept", "RescaleSlope", "ImagePositionPatient"):
            del ds[keyword]
        result = measure_patient_size(round_trip(ds))
        assert result.size is not None
        assert result.size.size_mm == pytest.approx(250.0, rel=0.01)
        assert result.size.table_position_mm == 5.0

    def test_undecodable_pixels_give_a_reason(self) -> None:
        """JPEG 2000 pixel data that no decoder reads: no size, the reason says why."""
        result = measure_patient_size(round_trip(undecodable_ct(study_instance_uid="1.2.3")))
        assert result.size is None
        assert "could not be decoded" in (result.reason or "")
        assert "JPEG 2000" in (result.reason or "")

    def test_reformatted_image_is_not_measured(self) -> None:
        """A coronal reformat (not LOCALIZER, not axial) is left alone."""
        ds = water_cylinder_ct(study_instance_uid="1.2.3")
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        result = measure_patient_size(round_trip(ds))
        assert result.size is None
        assert "reformatted" in (result.reason or "")


@needs_shared
class TestImportedImagesGiveSsde:
    """Images measured at import; the study's SSDE uses them when the RDSR has no size."""

    @pytest.mark.parametrize("images_first", [False, True], ids=["rdsr-first", "images-first"])
    def test_axial_images_give_study_ssde(
        self, registry: Registry, tmp_path: Path, images_first: bool
    ) -> None:
        """Dw 250 mm ± 1 %; SSDE = CTDIvol × AAPM 204 f(25 cm) ± 1 %; size source image."""
        study_uid = generate_uid()
        rdsr = rdsr_for_study(study_uid, tmp_path)
        images = axial_series(study_uid, tmp_path)
        order = [*images, rdsr] if images_first else [rdsr, *images]
        summary = registry.import_paths(order)
        assert summary.n_imported == 1  # the RDSR; the images hold no dose data

        sizes = registry.patient_sizes()
        assert len(sizes) == 3
        assert set(sizes["study_instance_uid"]) == {study_uid}
        assert sizes["image_type"].tolist() == ["axial"] * 3
        assert sizes["direction"].tolist() == ["dw"] * 3
        assert sizes["table_position_mm"].tolist() == [0.0, 10.0, 20.0]
        assert sizes["patient_width_mm"].isna().all()
        for dw in sizes["water_equivalent_diameter_mm"]:
            assert dw == pytest.approx(250.0, rel=0.01)

        studies = registry.studies()
        assert len(studies) == 1
        assert studies.loc[0, "image_size_source"] == "image"
        dw_mean = float(studies.loc[0, "image_size_mm"])
        assert dw_mean == pytest.approx(250.0, rel=0.01)

        samples = build_dose_samples(registry.events(), studies=studies)
        ct = samples[samples["modality_family"] == "CT"].reset_index(drop=True)
        assert len(ct) == 1
        assert ct.loc[0, "ctdivol_mean_mgy"] == pytest.approx(RDSR_CTDIVOL_MGY)
        assert ct.loc[0, "ssde_size_source"] == "image"
        assert ct.loc[0, "ssde_size_mm"] == pytest.approx(dw_mean)
        assert ct.loc[0, "ssde_mgy"] == pytest.approx(
            RDSR_CTDIVOL_MGY * aapm204_factor_32cm(dw_mean / 10.0), rel=1e-9
        )
        assert ct.loc[0, "ssde_mgy"] == pytest.approx(
            RDSR_CTDIVOL_MGY * aapm204_factor_32cm(25.0), rel=0.01
        )

    def test_localizer_pair_gives_effective_diameter(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """AP and lateral localizers only: size √(AP × LAT), size source localizer."""
        study_uid = generate_uid()
        files = [
            rdsr_for_study(study_uid, tmp_path),
            save(elliptical_localizer(study_instance_uid=study_uid, view="AP"), tmp_path / "a.dcm"),
            save(
                elliptical_localizer(study_instance_uid=study_uid, view="LAT"), tmp_path / "l.dcm"
            ),
        ]
        registry.import_paths(files)
        sizes = registry.patient_sizes().set_index("direction")
        lat = float(sizes.loc["lat", "patient_width_mm"])
        ap = float(sizes.loc["ap", "patient_width_mm"])
        assert lat == pytest.approx(340.0, rel=0.01)
        assert ap == pytest.approx(240.0, rel=0.01)
        assert sizes["water_equivalent_diameter_mm"].isna().all()

        per_study = registry.study_patient_sizes()
        assert per_study.loc[0, "image_size_source"] == "localizer"
        assert per_study.loc[0, "number_of_axial_images"] == 0
        assert per_study.loc[0, "effective_diameter_mm"] == pytest.approx(math.sqrt(ap * lat))
        assert per_study.loc[0, "image_size_mm"] == pytest.approx(
            math.sqrt(240.0 * 340.0), rel=0.01
        )

        studies = registry.studies()
        ct = build_dose_samples(registry.events(), studies=studies)
        assert ct.loc[0, "ssde_size_source"] == "localizer"
        assert ct.loc[0, "ssde_mgy"] == pytest.approx(
            RDSR_CTDIVOL_MGY * aapm204_factor_32cm(math.sqrt(ap * lat) / 10.0), rel=1e-9
        )

    def test_axial_wins_over_localizer(self, registry: Registry, tmp_path: Path) -> None:
        """With axial images and localizers, the study size is the mean axial Dw."""
        study_uid = generate_uid()
        registry.import_paths(
            [
                *axial_series(study_uid, tmp_path, n=2),
                save(elliptical_localizer(study_instance_uid=study_uid, view="AP"), tmp_path / "a"),
                save(
                    elliptical_localizer(study_instance_uid=study_uid, view="LAT"), tmp_path / "l"
                ),
            ]
        )
        per_study = registry.study_patient_sizes(study_instance_uid=study_uid)
        assert per_study.loc[0, "image_size_source"] == "image"
        assert per_study.loc[0, "number_of_axial_images"] == 2
        assert per_study.loc[0, "image_size_mm"] == pytest.approx(250.0, rel=0.01)

    def test_reimport_is_idempotent(self, registry: Registry, tmp_path: Path) -> None:
        """Importing the images again keeps one measurement per SOP Instance UID."""
        study_uid = generate_uid()
        images = axial_series(study_uid, tmp_path)
        registry.import_paths(images)
        first = registry.patient_sizes().drop(columns="measured_at")
        registry.import_paths(images)
        again = registry.patient_sizes().drop(columns="measured_at")
        assert len(again) == 3
        assert again.equals(first)
        assert len(registry.rejects()) == 3  # CT images without dose data, one row each

    def test_ignored_images_are_measured_too(self, registry: Registry, tmp_path: Path) -> None:
        """keep_non_dose=False: images are ignored (not archived) but still measured."""
        study_uid = generate_uid()
        summary = registry.import_paths(axial_series(study_uid, tmp_path), keep_non_dose=False)
        assert summary.ignored == 3
        assert registry.rejects().empty
        assert len(registry.ignored()) == 3
        assert len(registry.patient_sizes(study_instance_uid=study_uid)) == 3

    def test_ct_image_with_dose_header_is_measured(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """A CT image carrying (0018,9345) CTDIvol is a header-ct report and measured."""
        study_uid = generate_uid()
        ds = water_cylinder_ct(study_instance_uid=study_uid)
        ds.CTDIvol = 12.5
        outcome = registry.import_bytes(save(ds, tmp_path / "h.dcm").read_bytes())
        assert outcome.status is ImportStatus.IMPORTED
        assert outcome.kind == "header-ct"
        sizes = registry.patient_sizes()
        assert sizes.loc[0, "sop_instance_uid"] == ds.SOPInstanceUID
        assert sizes.loc[0, "water_equivalent_diameter_mm"] == pytest.approx(250.0, rel=0.01)
        studies = registry.studies()
        assert studies.loc[0, "image_size_mm"] == pytest.approx(250.0, rel=0.01)

    def test_undecodable_image_imported_without_size_and_warns(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        """Compressed pixel data no decoder reads: imported (rejected as non-dose), a warning."""
        study_uid = generate_uid()
        path = save(undecodable_ct(study_instance_uid=study_uid), tmp_path / "j2k.dcm")
        with pytest.warns(IngestWarning, match="Patient size not measured on CT image"):
            outcome = registry.import_bytes(path.read_bytes(), source="j2k.dcm")
        assert outcome.status is ImportStatus.REJECTED  # no dose data, as before
        assert "dose" in (outcome.reason or "")
        assert registry.patient_sizes().empty
        assert len(registry.rejects()) == 1

    def test_other_objects_have_no_pixels_read(self, registry: Registry) -> None:
        """An RDSR gets no measurement row (only CT images are measured)."""
        registry.import_paths([RDSR])
        assert registry.patient_sizes().empty
        assert np.isnan(registry.studies().loc[0, "image_size_mm"])
        assert registry.studies().loc[0, "image_size_source"] is None

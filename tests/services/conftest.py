"""A crafted registry for the service tests: eight studies whose every filter field differs.

=====  ========  ==========  =========  ======================  ====  ===  ======  =======
study  modality  date        device     description             age   sex  weight  patient
=====  ========  ==========  =========  ======================  ====  ===  ======  =======
ct1    CT        2024-01-10  CT1        CT HEAD                 30    F    60      P1
ct2    CT        2024-06-01  CT1        CT CHEST                70    M    90      P1
ct3    CT        2025-03-01  CT2        CT HEAD                 10    M    30      P2
dx     DX        2024-02-01  DX1        CHEST PA                ?     ?    ?       P3
xa     XA        2025-01-01  CATH       CORONARY ANGIOGRAPHY    60    F    80      P1
mg     MG        2024-09-01  MAMMO      SCREENING MAMMOGRAPHY   55    F    65      P4
qa     CT        2024-01-10  CT1        QA PHANTOM              -     -    -       QA (non-patient)
nm     NM        2023-12-31  NM1        BONE SCAN               45    M    75      P5
=====  ========  ==========  =========  ======================  ====  ===  ======  =======
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kerma.services.registry import Registry
from tests.services.builders import add_study

#: Device names of the crafted registry (station in parentheses).
CT1 = "ACME Scanner One (CTROOM1)"
CT2 = "ACME Scanner Two (CTROOM2)"


def build_crafted(registry: Registry) -> dict[str, int]:
    """Add the eight studies of the module docstring; return their ids by name."""
    ids: dict[str, int] = {}
    with registry.session() as s:
        ids["ct1"] = add_study(
            s,
            device_name=CT1,
            station="CTROOM1",
            model="Scanner One",
            modality="CT",
            study_date="2024-01-10",
            description="CT HEAD",
            age=30,
            sex="F",
            weight=60,
            events=[
                {"ct_acquisition_type": "Constant Angle Acquisition", "ctdivol_mgy": 0.1,
                 "dlp_mgycm": 2.0, "acquisition_protocol": "Topogram"},
                {"ct_acquisition_type": "Spiral Acquisition", "ctdivol_mgy": 50.0,
                 "dlp_mgycm": 798.0, "acquisition_protocol": "Head routine", "kvp_kv": 120.0,
                 "water_equivalent_diameter_mm": 160.0,
                 "ctdiw_phantom_type": "IEC Head Dosimetry Phantom"},
            ],
        )  # fmt: skip
        ids["ct2"] = add_study(
            s,
            device_name=CT1,
            modality="CT",
            study_date="2024-06-01",
            description="CT CHEST",
            age=70,
            sex="M",
            weight=90,
            events=[
                {"ct_acquisition_type": "Spiral Acquisition", "ctdivol_mgy": 10.0,
                 "dlp_mgycm": 400.0, "acquisition_protocol": "Thorax", "kvp_kv": 100.0},
            ],
        )  # fmt: skip
        ids["ct3"] = add_study(
            s,
            device_name=CT2,
            station="CTROOM2",
            model="Scanner Two",
            modality="CT",
            study_date="2025-03-01",
            description="CT HEAD",
            age=10,
            sex="M",
            weight=30,
            patient_name="P2",
            events=[
                {"ct_acquisition_type": "Spiral Acquisition", "ctdivol_mgy": 30.0,
                 "dlp_mgycm": 500.0, "acquisition_protocol": "Head paed"},
            ],
        )  # fmt: skip
        ids["dx"] = add_study(
            s,
            device_name="ACME Radiography (DXROOM)",
            modality="DX",
            study_date="2024-02-01",
            description="CHEST PA",
            age=None,
            sex=None,
            weight=None,
            patient_name="P3",
            kind="header-dx",
            events=[
                {"dap_gym2": 1.0e-5, "image_view": "PA", "acquisition_protocol": "Chest PA"},
                {"dap_gym2": 3.0e-5, "image_view": "PA", "acquisition_protocol": "Chest PA"},
            ],
        )
        ids["xa"] = add_study(
            s,
            device_name="ACME Biplane (CATH)",
            modality="XA",
            study_date="2025-01-01",
            description="CORONARY ANGIOGRAPHY",
            age=60,
            sex="F",
            weight=80,
            events=[
                {"acquisition_plane": "Plane A", "dap_gym2": 0.002, "dose_rp_gy": 0.5,
                 "irradiation_event_type": "Fluoroscopy", "irradiation_duration_s": 100.0,
                 "acquisition_protocol": "Cardiac fluoro"},
                {"acquisition_plane": "Plane B", "dap_gym2": 0.001, "dose_rp_gy": 0.3,
                 "irradiation_event_type": "Stationary Acquisition",
                 "acquisition_protocol": "Cardiac cine"},
            ],
            accumulated={
                "planes": [
                    {"acquisition_plane": "Plane A", "dap_total_gym2": 0.003,
                     "dose_rp_total_gy": 1.2, "fluoro_time_total_s": 300.0},
                    {"acquisition_plane": "Plane B", "dap_total_gym2": 0.002,
                     "dose_rp_total_gy": 0.7, "fluoro_time_total_s": 200.0},
                ]
            },
        )  # fmt: skip
        ids["mg"] = add_study(
            s,
            device_name="ACME Mammo (MG1)",
            modality="MG",
            study_date="2024-09-01",
            description="SCREENING MAMMOGRAPHY",
            age=55,
            sex="F",
            weight=65,
            patient_name="P4",
            events=[
                {"laterality": "Left", "image_view": "CC", "agd_mgy": 1.2,
                 "compression_thickness_mm": 50.0},
                {"laterality": "Right", "image_view": "CC", "agd_mgy": 1.1,
                 "compression_thickness_mm": 52.0},
                {"laterality": "Left", "image_view": "MLO", "agd_mgy": 1.5,
                 "compression_thickness_mm": 55.0},
            ],
        )  # fmt: skip
        ids["qa"] = add_study(
            s,
            device_name=CT1,
            modality="CT",
            study_date="2024-01-10",
            description="QA PHANTOM",
            age=None,
            sex=None,
            weight=None,
            patient_name="QA",
            non_patient=True,
            events=[{"ct_acquisition_type": "Spiral Acquisition", "ctdivol_mgy": 20.0,
                     "dlp_mgycm": 300.0, "acquisition_protocol": "QA"}],
        )  # fmt: skip
        ids["nm"] = add_study(
            s,
            device_name="ACME Gamma (NM1)",
            modality="NM",
            study_date="2023-12-31",
            description="BONE SCAN",
            age=45,
            sex="M",
            weight=75,
            patient_name="P5",
            kind="rdsr-radiopharmaceutical",
            events=[{"administered_activity_mbq": 370.0, "radionuclide": "Tc-99m"}],
        )
    return ids


@pytest.fixture
def crafted(registry: Registry) -> Iterator[tuple[Registry, dict[str, int]]]:
    """The crafted registry on a fresh database (SQLite, then PostgreSQL)."""
    yield registry, build_crafted(registry)

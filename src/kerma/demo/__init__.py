"""Synthetic demo data: realistic DICOM radiation dose reports for demos and load tests.

:func:`kerma.demo.generator.generate_demo_files` writes CT, fluoroscopy and radiography
X-Ray Radiation Dose SRs with plausible dose distributions; ``kerma demo`` imports them
into a fresh registry. No patient data: names and IDs are made up.
"""

from kerma.demo.generator import (
    DemoEvent,
    DemoPlan,
    DemoStudy,
    build_demo_dataset,
    generate_demo_files,
    iter_demo_studies,
    plan_demo_study,
)

__all__ = [
    "DemoEvent",
    "DemoPlan",
    "DemoStudy",
    "build_demo_dataset",
    "generate_demo_files",
    "iter_demo_studies",
    "plan_demo_study",
]

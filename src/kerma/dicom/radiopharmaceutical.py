"""TID 10021 Radiopharmaceutical Radiation Dose (stub: being written)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from kerma.records import DoseReport


def read_radiopharmaceutical_report(ds: Dataset, report: DoseReport) -> None:
    """Fill the administrations of a radiopharmaceutical dose report."""
    raise NotImplementedError

"""TID 10011 CT Radiation Dose (stub: being written)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from kerma.records import DoseReport


def read_ct_report(ds: Dataset, report: DoseReport) -> None:
    """Fill accumulated (TID 10012) and events (TID 10013) of a CT dose report."""
    raise NotImplementedError

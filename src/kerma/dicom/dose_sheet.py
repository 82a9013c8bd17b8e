"""Vendor CT dose screens stored as secondary capture (stub: being written)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from kerma.records import DoseReport


def is_dose_sheet(ds: Dataset) -> bool:
    """Return whether ``ds`` is a vendor CT dose screen Kerma can read."""
    return False


def read_dose_sheet(ds: Dataset, report: DoseReport) -> None:
    """Fill the events of a CT dose screen from its header."""
    raise NotImplementedError

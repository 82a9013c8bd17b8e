"""TID 10001 Projection X-Ray Radiation Dose (stub: being written)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from kerma.records import DoseReport


def read_projection_report(ds: Dataset, report: DoseReport) -> None:
    """Fill modality, accumulated (TID 10002...) and events (TID 10003) of a report."""
    raise NotImplementedError

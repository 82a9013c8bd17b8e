"""Image-header dose extraction (stub: being written)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from kerma.errors import NotADoseReportError
from kerma.records import DoseReport


def read_image_header(ds: Dataset, report: DoseReport) -> None:
    """Fill kind, modality and the one event of an image; reject images without dose data."""
    raise NotADoseReportError("image-header extraction is not written yet")

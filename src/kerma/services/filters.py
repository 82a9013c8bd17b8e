"""The one study filter, re-exported for the services' callers (:mod:`kerma.db.filters`)."""

from __future__ import annotations

from kerma.db.filters import (
    DOSE_RANGE_QUANTITIES,
    SEXES,
    StudyFilter,
    as_date,
    normalise_filter,
)
from kerma.records import DOSE_MODALITIES

__all__ = [
    "DOSE_MODALITIES",
    "DOSE_RANGE_QUANTITIES",
    "SEXES",
    "StudyFilter",
    "as_date",
    "normalise_filter",
]

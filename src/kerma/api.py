"""The Python API of Kerma: :class:`Registry`, exported as ``kerma.Registry``.

:class:`Registry` is :class:`kerma.services.registry.Registry`, the thin facade over
:mod:`kerma.services`: its methods return pandas DataFrames (or typed pages and
details) whose columns carry the record field names, units included
(``docs/registry.md``). This module keeps the older import path working and re-exports
the column lists and import result types.

May import ``kerma.services``, ``kerma.db``, ``kerma.ingest`` and ``kerma.records``.
"""

from __future__ import annotations

from kerma.db.filters import StudyFilter
from kerma.db.studies import (
    EVENT_COLUMNS,
    EVENT_CONTEXT_COLUMNS,
    IGNORED_COLUMNS,
    PATIENT_SIZE_COLUMNS,
    REJECT_COLUMNS,
    STUDY_COLUMNS,
)
from kerma.ingest.pipeline import ImportOutcome, ImportStatus, ImportSummary, ReprocessSummary
from kerma.services.registry import DateLike, Registry
from kerma.services.studies import STUDY_SIZE_COLUMNS

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_CONTEXT_COLUMNS",
    "IGNORED_COLUMNS",
    "PATIENT_SIZE_COLUMNS",
    "REJECT_COLUMNS",
    "STUDY_COLUMNS",
    "STUDY_SIZE_COLUMNS",
    "DateLike",
    "ImportOutcome",
    "ImportStatus",
    "ImportSummary",
    "Registry",
    "ReprocessSummary",
    "StudyFilter",
]

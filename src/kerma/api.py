"""The Python API of Kerma: :class:`Registry`, exported as ``kerma.Registry``.

:class:`Registry` is :class:`kerma.services.registry.Registry`, the thin facade over
:mod:`kerma.services`: its methods return pandas DataFrames (or typed pages and
details) whose columns carry the record field names, units included
(``docs/registry.md``). This module keeps the older import path working and re-exports
the column lists and import result types.

May import ``kerma.services`` (and ``kerma.records``, ``kerma.units``, ``kerma.config``,
``kerma.errors``) only: the import-linter contract "api (kerma.Registry) is a facade
over services" in ``pyproject.toml``.
"""

from __future__ import annotations

from kerma.services.filters import StudyFilter
from kerma.services.imports import ImportOutcome, ImportStatus, ImportSummary, ReprocessSummary
from kerma.services.registry import DateLike, Registry
from kerma.services.studies import (
    EVENT_COLUMNS,
    EVENT_CONTEXT_COLUMNS,
    IGNORED_COLUMNS,
    PATIENT_SIZE_COLUMNS,
    REJECT_COLUMNS,
    STUDY_COLUMNS,
    STUDY_SIZE_COLUMNS,
)

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

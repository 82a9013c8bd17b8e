"""The application's use cases, once each: what a command, a page, an API call or an export needs.

Every function is keyword-only, takes a SQLAlchemy ``Session`` (the caller owns the unit
of work; workflows that run many transactions take a session factory) and returns
typed results or DataFrames:

- :mod:`~kerma.services.filters`: :class:`StudyFilter`, the one study filter;
- :mod:`~kerma.services.studies`: paged listing, count, streaming, study detail, frames;
- :mod:`~kerma.services.analytics`: dose samples, DRL comparison (local DRLs, periods),
  statistics, the per-protocol summary, cumulative dose;
- :mod:`~kerma.services.exams`: the standard-exam workflow (re-map on a rules change,
  counts, apply);
- :mod:`~kerma.services.skin`: the skin dose workflow;
- :mod:`~kerma.services.derive`: derived values at ingest (:func:`intake_importer`);
- :mod:`~kerma.services.tables`: display units and CSV files;
- :mod:`~kerma.services.intake`: rejected and ignored objects (listing, purge);
- :mod:`~kerma.services.inspect`: what ``kerma inspect`` shows (no database);
- :mod:`~kerma.services.schema`: the registry's schema (migrations) for ``kerma db``;
- :mod:`~kerma.services.registry`: :class:`kerma.Registry`, the facade.

SQL lives in :mod:`kerma.db`, computation in :mod:`kerma.analysis`. Submodules are
imported on first use (also :class:`StudyFilter`), so ``import kerma.services`` and
``kerma.services.inspect`` stay cheap (no SQLAlchemy, no pandas).

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest``, ``kerma.dicom``,
``kerma.records``, ``kerma.units``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kerma.services.derive import intake_importer
    from kerma.services.filters import StudyFilter
    from kerma.services.registry import Registry

__all__ = ["Registry", "StudyFilter", "intake_importer"]

_LAZY = {
    "Registry": "kerma.services.registry",
    "StudyFilter": "kerma.services.filters",
    "intake_importer": "kerma.services.derive",
}


def __getattr__(name: str) -> Any:
    """Import ``Registry``, ``StudyFilter`` and ``intake_importer`` on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerma.services' has no attribute {name!r}")

"""The results of an import, for the callers above the services (CLI, web, ``kerma.api``).

:class:`ImportOutcome` (one object), :class:`ImportStatus`, :class:`ImportSummary` (a
batch) and :class:`ReprocessSummary` are the types of :mod:`kerma.ingest.pipeline`,
returned by :meth:`kerma.Registry.import_paths`, :meth:`~kerma.Registry.import_bytes`
and :meth:`~kerma.Registry.reprocess`. Importing this module loads the pipeline
(pydicom, SQLAlchemy); commands that only list or count do not need it.

May import ``kerma.ingest``.
"""

from __future__ import annotations

from kerma.ingest.pipeline import (
    Importer,
    ImportOutcome,
    ImportStatus,
    ImportSummary,
    ReprocessSummary,
)

__all__ = ["ImportOutcome", "ImportStatus", "ImportSummary", "Importer", "ReprocessSummary"]

"""The application's use cases, once each (DESIGN.md "Layers"): CLI and web call these.

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest`` and ``kerma.dicom``; never
``kerma.api``, ``kerma.net``, ``kerma.web`` or ``kerma.cli``.
"""

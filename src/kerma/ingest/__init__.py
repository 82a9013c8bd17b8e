"""The ingest pipeline: archive, read, extract, reconcile and store one object at a time.

May import ``kerma.dicom``, ``kerma.db``, ``kerma.records``, ``kerma.errors`` and
``kerma.config``; never ``kerma.net``, ``kerma.web`` or ``kerma.cli``.
"""

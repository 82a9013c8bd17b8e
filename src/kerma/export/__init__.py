"""Exports: dose data in the forms others read (DESIGN.md "Layers": ``kerma.export``).

An interface-level package, like the CLI and the web app: it may import
:mod:`kerma.services` (and ``kerma.records``, ``kerma.units``, ``kerma.errors``,
``kerma.config``), never ``kerma.db`` or ``kerma.analysis`` directly. Rows are read
through service functions that stream them from the database in batches; the modules
here only turn those rows into files:

- :mod:`kerma.export.tabular` — CSV and XLSX (study per row, event per row, summary),
  written in constant memory (#14 item 1);
- :mod:`kerma.export.survey` — national DRL survey forms (#14 item 4);
- :mod:`kerma.export.parquet` — incremental, month-partitioned Parquet (#14 item 5);
- :mod:`kerma.export.fhir` and :mod:`kerma.export.deid` — HL7 FHIR and de-identified
  research sets (#14 items 2 and 3).

Importing this package is cheap: it imports nothing; each command imports the module
it needs.
"""

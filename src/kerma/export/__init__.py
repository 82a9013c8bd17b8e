"""Exports: CSV/XLSX, HL7 FHIR Radiation Dose Summary, de-identified research sets, surveys.

Each export streams what :mod:`kerma.services` gives; none reads the database itself.
May import ``kerma.services``, ``kerma.records``, ``kerma.units`` and ``kerma.errors``.
"""

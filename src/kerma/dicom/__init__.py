"""Reading DICOM dose objects: SR templates, image headers, vendor dose screens.

Public entry points: :func:`kerma.dicom.extract.read_and_extract` (bytes in, record or
reason out: one read, decode and truncation check in one pass), :func:`kerma.dicom.extract.
extract_dataset`, :func:`kerma.dicom.extract.read_dataset`,
:func:`kerma.dicom.extract.inspect_path` and :func:`kerma.dicom.reader.read_bytes`.
May import ``kerma.records``, ``kerma.units`` and ``kerma.errors`` only.
"""

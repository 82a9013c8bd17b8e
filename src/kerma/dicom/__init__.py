"""Reading DICOM dose objects: SR templates, image headers, vendor dose screens.

Public entry points: :func:`kerma.dicom.extract.extract_dataset`,
:func:`kerma.dicom.extract.read_dataset` and :func:`kerma.dicom.extract.inspect_path`.
May import ``kerma.records``, ``kerma.units`` and ``kerma.errors`` only.
"""

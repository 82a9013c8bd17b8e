"""The RIS and FHIR interfaces: an HL7 v2 MLLP listener and a FHIR poller (docs/ris.md).

Like :mod:`kerma.net` for DICOM, this package only moves bytes: it hands each HL7 v2
message or FHIR body to :class:`kerma.services.orders.OrderIntake` and sends back
what it answers. May import ``kerma.services``, ``kerma.config`` and ``kerma.errors``.
"""

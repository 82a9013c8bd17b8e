"""Concept codes Kerma uses that :data:`pydicom.sr.codedict.codes` lacks.

Every other concept comes from ``pydicom.sr.codedict.codes`` (STYLE.md B3). The
constants below are checked by a test to be still absent from pydicom, so that an
upgrade shows which ones to delete. Compare codes with ``==`` (which maps legacy
SNOMED-RT to SNOMED CT where pydicom knows the mapping), never by Code Meaning.

May import nothing from Kerma.
"""

from __future__ import annotations

from typing import Final

from pydicom.sr.coding import Code

# --- missing from pydicom 3.0.2 -------------------------------------------------------

#: 'Patient Weight' (LN 29463-7), read from the 'Patient Characteristics'
#: container (DCM 121118) of PS3.16 TID 10021.
PATIENT_WEIGHT: Final = Code("29463-7", "LN", "Patient Weight")

#: 'Patient Height' (LN 8302-2), read from the 'Patient Characteristics'
#: container (DCM 121118) of PS3.16 TID 10021.
PATIENT_HEIGHT: Final = Code("8302-2", "LN", "Patient Height")

#: 'Radiopharmaceutical agent' as legacy SNOMED-RT (SRT F-61FDB), as TID 10022 wrote it
#: before CP-1850. PS3.16 Table 8-1a maps it to SCT 349358000, but pydicom's SRT->SCT
#: table maps 349358000 to C-B02C9 only, so ``==`` does not match F-61FDB.
RADIOPHARMACEUTICAL_AGENT_SRT: Final = Code("F-61FDB", "SRT", "Radiopharmaceutical agent")

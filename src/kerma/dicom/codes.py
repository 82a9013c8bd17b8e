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

#: 'Radiopharmaceutical agent' in legacy SNOMED-RT (SRT F-61FDB), as PS3.16 TID 10022
#: used to define it and Siemens PET/CT still sends it. SNOMED CT has it as 349358000
#: (``codes.SCT.Radiopharmaceuticals``), but pydicom's SRT->SCT table maps 349358000 to
#: C-B02C9 only, so ``==`` does not match F-61FDB.
RADIOPHARMACEUTICAL_AGENT_SRT: Final = Code("F-61FDB", "SRT", "Radiopharmaceutical agent")

# --- UCUM units missing from pydicom 3.0.2 (used by kerma.demo to write dose SRs) ------

#: UCUM milligray: 'Mean CTDIvol' (DCM 113830), 'Average Glandular Dose' (DCM 111631).
UCUM_MGY: Final = Code("mGy", "UCUM", "mGy")
#: UCUM milligray centimetre: 'DLP' (DCM 113838), 'CT Dose Length Product Total'.
UCUM_MGY_CM: Final = Code("mGy.cm", "UCUM", "mGy.cm")
#: UCUM gray square metre: 'Dose Area Product' (DCM 122130) and its totals.
UCUM_GY_M2: Final = Code("Gy.m2", "UCUM", "Gy.m2")
#: UCUM milliampere: 'X-Ray Tube Current' (DCM 113734).
UCUM_MA: Final = Code("mA", "UCUM", "mA")
#: UCUM pulses per second: 'Pulse Rate' (DCM 113791), PS3.16 TID 10003a.
UCUM_PULSE_PER_S: Final = Code("{pulse}/s", "UCUM", "pulse/s")
#: UCUM count of events: 'Total Number of Irradiation Events' (DCM 113812).
UCUM_EVENTS: Final = Code("{events}", "UCUM", "events")
#: UCUM count of sources: 'Number of X-Ray Sources' (DCM 113823).
UCUM_XRAY_SOURCES: Final = Code("{X-Ray sources}", "UCUM", "X-Ray sources")

# --- projection X-ray (kerma.dicom.projection), missing from pydicom 3.0.2 -------------

#: 'Anode Target Material' sent under DCM 113632 (not a DICOM code; TID 10003b uses
#: DCM 111632, ``codes.DCM.AnodeTargetMaterial``) by IMS Giotto mammography RDSRs.
ANODE_TARGET_MATERIAL_113632: Final = Code("113632", "DCM", "Anode Target Material")

#: Siemens private 'Radiation Summary Report' (99SMS_RADSUM), the document title of the
#: Enhanced SR that Siemens ARCADIS mobile C-arms send instead of a TID 10001 RDSR.
SIEMENS_RADIATION_SUMMARY_REPORT: Final = Code("C-10", "99SMS_RADSUM", "Radiation Summary Report")
#: Its 'Total number of exposures' (NUM, {1}).
SIEMENS_TOTAL_NUMBER_OF_EXPOSURES: Final = Code(
    "C-200", "99SMS_RADSUM", "Total number of exposures"
)
#: Its 'Cumulative fluoro time' (NUM, s).
SIEMENS_CUMULATIVE_FLUORO_TIME: Final = Code("C-202", "99SMS_RADSUM", "Cumulative fluoro time")
#: Its 'Cumulative dose area product' (NUM, 'Gy.cm^2').
SIEMENS_CUMULATIVE_DAP: Final = Code("C-204", "99SMS_RADSUM", "Cumulative dose area product")
#: Its 'Cumulative air kerma' (NUM; the Ka,r total).
SIEMENS_CUMULATIVE_AIR_KERMA: Final = Code("C-210", "99SMS_RADSUM", "Cumulative air kerma")

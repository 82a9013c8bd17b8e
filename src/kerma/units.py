"""Canonical units, conversion factors and human-readable labels.

Every physical value in Kerma is held in one canonical unit per quantity, the RDSR's
own where it has one (DESIGN.md, "Units"): CTDIvol and AGD in mGy, DLP in mGy·cm,
DAP in Gy·m², Ka,r (Dose (RP)) in Gy, every time in s, lengths in mm, activity in MBq.
Conversions are applied once, on extraction, from the UCUM unit of each SR content
item (PS3.16 CID 7181 and the template's unit constraints) or from the attribute's
defined unit for image headers (PS3.3).

This module must not import anything else from Kerma.
"""

from __future__ import annotations

from typing import Final

# --- canonical UCUM unit of each quantity family --------------------------------------
UCUM_MGY: Final = "mGy"
UCUM_GY: Final = "Gy"
UCUM_MGYCM: Final = "mGy.cm"
UCUM_GYM2: Final = "Gy.m2"
UCUM_S: Final = "s"
UCUM_MM: Final = "mm"
UCUM_KV: Final = "kV"
UCUM_MA: Final = "mA"
UCUM_MAS: Final = "mA.s"
UCUM_MBQ: Final = "MBq"
UCUM_DEG: Final = "deg"
UCUM_M2: Final = "m2"
UCUM_N: Final = "N"
UCUM_ML: Final = "ml"
UCUM_PER_S: Final = "/s"

#: For each canonical unit: {unit as found: factor to multiply by}. The keys include
#: spellings seen from real devices that are not valid UCUM (``mGycm``, ``Gym2``);
#: ``NON_UCUM_SPELLINGS`` lists those so the reader can warn.
CONVERSIONS: Final[dict[str, dict[str, float]]] = {
    UCUM_MGY: {"mGy": 1.0, "Gy": 1e3, "uGy": 1e-3, "dGy": 1e2, "cGy": 1e1},
    UCUM_GY: {"Gy": 1.0, "mGy": 1e-3, "uGy": 1e-6, "dGy": 1e-1, "cGy": 1e-2},
    UCUM_MGYCM: {
        "mGy.cm": 1.0,
        "mGycm": 1.0,
        "mGy*cm": 1.0,
        "mGy.mm": 0.1,
        "Gy.cm": 1e3,
        "dGy.cm": 1e2,
    },
    UCUM_GYM2: {
        "Gy.m2": 1.0,
        "Gym2": 1.0,
        "Gy*m2": 1.0,
        "dGy.cm2": 1e-5,
        "dGycm2": 1e-5,
        "cGy.cm2": 1e-6,
        "mGy.cm2": 1e-7,
        "uGy.m2": 1e-6,
        "uGym2": 1e-6,
        "mGy.m2": 1e-3,
        "Gy.cm2": 1e-4,
        "Gy.cm^2": 1e-4,  # Siemens ARCADIS Radiation Summary Report
        "uGy.cm2": 1e-10,
    },
    UCUM_S: {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0, "h": 3600.0},
    UCUM_MM: {"mm": 1.0, "cm": 10.0, "m": 1e3, "um": 1e-3, "dm": 100.0},
    UCUM_KV: {"kV": 1.0, "V": 1e-3},
    UCUM_MA: {"mA": 1.0, "A": 1e3, "uA": 1e-3},
    UCUM_MAS: {"mA.s": 1.0, "mAs": 1.0, "uA.s": 1e-3, "uAs": 1e-3, "As": 1e3, "A.s": 1e3},
    UCUM_MBQ: {"MBq": 1.0, "Bq": 1e-6, "kBq": 1e-3, "GBq": 1e3, "mCi": 37.0, "uCi": 0.037},
    UCUM_DEG: {"deg": 1.0, "[deg]": 1.0},
    UCUM_M2: {"m2": 1.0, "cm2": 1e-4, "mm2": 1e-6},
    UCUM_N: {"N": 1.0, "daN": 10.0},
    UCUM_ML: {"ml": 1.0, "mL": 1.0, "cm3": 1.0, "l": 1e3, "L": 1e3},
    UCUM_PER_S: {
        "/s": 1.0,
        "{pulse}/s": 1.0,
        "/min": 1 / 60,
        "Hz": 1.0,
        "{pulses}/s": 1.0,
        "pulse/s": 1.0,
    },
}

#: Unit spellings that real devices send but that are not valid UCUM expressions.
NON_UCUM_SPELLINGS: Final = frozenset(
    {
        "mGycm",
        "mGy*cm",
        "Gym2",
        "Gy*m2",
        "dGycm2",
        "uGym2",
        "mAs",
        "As",
        "uAs",
        "pulse/s",
        "Gy.cm^2",
    }
)

#: Attribute-defined header units (PS3.3): factors to the canonical unit.
DGYCM2_TO_GYM2: Final = 1e-5  # (0018,115E) Image and Fluoroscopy Area Dose Product
DGY_TO_MGY: Final = 100.0  # (0040,0316) Organ Dose
MS_TO_S: Final = 1e-3  # (0018,1150) Exposure Time, (0018,1154) Average Pulse Width
UAS_TO_MAS: Final = 1e-3  # (0018,1153) Exposure in uAs; DCM 113736 'Exposure' in uA.s
BQ_TO_MBQ: Final = 1e-6  # (0018,1074) Radionuclide Total Dose
GYM2_TO_GYCM2: Final = 1e4  # display: KAP in Gy·cm²
GY_TO_MGY: Final = 1e3  # display: Ka,r in mGy


def conversion_factor(found: str, canonical: str) -> float | None:
    """Return the factor converting a value in ``found`` to ``canonical``, or ``None``.

    Parameters
    ----------
    found : str
        The unit as given by the object (UCUM code value, or a known vendor spelling).
    canonical : str
        One of the canonical units of this module (``UCUM_MGY``, ``UCUM_GYM2`` ...).

    Returns
    -------
    float or None
        ``None`` when the unit is not known for that quantity.
    """
    table = CONVERSIONS.get(canonical, {canonical: 1.0})
    key = found.strip()
    if key in table:
        return table[key]
    # tolerate a space or '·' written for '.', and 'μ' for 'u'
    normalised = key.replace(" ", "").replace("·", ".").replace("μ", "u").replace("µ", "u")
    return table.get(normalised)


#: Human-readable labels of stored names, in display units where these differ.
LABELS: Final[dict[str, str]] = {
    "ctdivol_mgy": "CTDIvol (mGy)",
    "dlp_mgycm": "DLP (mGy·cm)",
    "ct_dlp_total_mgycm": "DLP total (mGy·cm)",
    "dap_gym2": "KAP (Gy·m²)",
    "dap_total_gym2": "KAP total (Gy·m²)",
    "dose_rp_gy": "Ka,r (Gy)",
    "dose_rp_total_gy": "Ka,r total (Gy)",
    "agd_mgy": "AGD (mGy)",
    "ssde_mgy": "SSDE (mGy)",
    "effective_dose_msv": "Effective dose (mSv)",
    "kvp_kv": "kVp (kV)",
    "tube_current_ma": "Tube current (mA)",
    "exposure_time_s": "Exposure time (s)",
    "exposure_mas": "Exposure (mAs)",
    "fluoro_time_total_s": "Fluoroscopy time (s)",
    "scanning_length_mm": "Scanning length (mm)",
    "water_equivalent_diameter_mm": "Water-equivalent diameter (mm)",
    "administered_activity_mbq": "Administered activity (MBq)",
    "patient_age_years": "Age (years)",
    "patient_weight_kg": "Weight (kg)",
    "patient_size_m": "Height (m)",
}

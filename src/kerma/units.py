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

from dataclasses import dataclass
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

#: Body weight units of an HL7 v2 OBX-6 or a FHIR Quantity (UCUM; HL7 v2.5.1 Ch. 7.4.2.6,
#: LOINC 29463-7 example units), factor to kg; ``lb`` and ``lbs`` are spellings RIS
#: systems send that are not UCUM. Keys are compared case-sensitively (UCUM is).
BODY_WEIGHT_TO_KG: Final[dict[str, float]] = {
    "kg": 1.0,
    "g": 1e-3,
    "[lb_av]": 0.45359237,  # international avoirdupois pound (UCUM; exact)
    "lb": 0.45359237,
    "lbs": 0.45359237,
}

#: Body height units (UCUM; LOINC 8302-2), factor to m.
BODY_HEIGHT_TO_M: Final[dict[str, float]] = {
    "m": 1.0,
    "cm": 1e-2,
    "mm": 1e-3,
    "[in_i]": 0.0254,  # international inch (UCUM; exact)
    "in": 0.0254,
}

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


@dataclass(frozen=True)
class Quantity:
    """One named quantity: its label, canonical unit and the unit users read it in.

    Attributes
    ----------
    name : str
        The one name of the quantity, from database column to CSV header, unit in the
        name (``dap_total_gym2``).
    label : str
        What it is called in tables, without unit (``"KAP total"``).
    unit : str
        The canonical unit the name carries (``"Gy·m²"``); every stored, computed and
        exported (default) value is in it.
    display_unit : str
        The unit users read on their devices (``"Gy·cm²"``; DESIGN.md "Units").
    factor : float
        Multiplier from ``unit`` to ``display_unit`` (``1e4`` for Gy·m² → Gy·cm²).
    """

    name: str
    label: str
    unit: str
    display_unit: str
    factor: float = 1.0

    @property
    def display_label(self) -> str:
        """Return ``"<label> (<display unit>)"``, e.g. ``"KAP total (Gy·cm²)"``."""
        return f"{self.label} ({self.display_unit})" if self.display_unit else self.label

    @property
    def canonical_label(self) -> str:
        """Return ``"<label> (<canonical unit>)"``, e.g. ``"KAP total (Gy·m²)"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


def _q(
    name: str, label: str, unit: str, display_unit: str | None = None, factor: float = 1.0
) -> Quantity:
    """Return one :class:`Quantity` (``display_unit`` defaults to the canonical unit)."""
    return Quantity(name, label, unit, unit if display_unit is None else display_unit, factor)


_KAP = ("Gy·m²", "Gy·cm²", GYM2_TO_GYCM2)
_KAR = ("Gy", "mGy", GY_TO_MGY)

#: The one label table: every quantity Kerma shows or exports, by its name. Rich tables
#: take their headers and display units from here; CSV files use the names and the
#: canonical units by default and ``display_label`` with converted values on request
#: (``--units display``). Display units are those users read on their devices: KAP in
#: Gy·cm², Ka,r in mGy (DESIGN.md "Units"). ``dose_rp_total_gy`` of a study is the larger
#: plane's Ka,r (never a sum over planes: their reference points differ).
QUANTITIES: Final[dict[str, Quantity]] = {
    q.name: q
    for q in (
        # CT
        _q("ctdivol_mgy", "CTDIvol", "mGy"),
        _q("ctdivol_mean_mgy", "CTDIvol mean", "mGy"),
        _q("ctdivol_max_mgy", "CTDIvol max", "mGy"),
        _q("dlp_mgycm", "DLP", "mGy·cm"),
        _q("ct_dlp_total_mgycm", "DLP total", "mGy·cm"),
        _q("ssde_mgy", "SSDE", "mGy"),
        _q("ssde_size_mm", "SSDE patient size", "mm"),
        _q("effective_dose_msv", "Effective dose", "mSv"),
        _q("ct_effective_dose_msv", "CT effective dose", "mSv"),
        _q("effective_dose_k_msv_per_mgycm", "k (effective dose per DLP)", "mSv/(mGy·cm)"),
        _q("kvp_kv", "kVp", "kV"),
        _q("water_equivalent_diameter_mm", "Water-equivalent diameter", "mm"),
        _q("patient_width_mm", "Patient width on localizer", "mm"),
        _q("image_size_mm", "Patient size from CT images", "mm"),
        _q("scanning_length_mm", "Scanning length", "mm"),
        # projection X-ray
        _q("dap_gym2", "KAP", *_KAP),
        _q("dap_total_gym2", "KAP total", *_KAP),
        _q("dap_total_plane_a_gym2", "KAP total plane A", *_KAP),
        _q("dap_total_plane_b_gym2", "KAP total plane B", *_KAP),
        _q("fluoro_studies_dap_total_gym2", "KAP total of fluoroscopy studies", *_KAP),
        _q("dose_rp_gy", "Ka,r", *_KAR),
        _q("dose_rp_total_gy", "Ka,r total", *_KAR),
        _q("dose_rp_total_plane_a_gy", "Ka,r total plane A", *_KAR),
        _q("dose_rp_total_plane_b_gy", "Ka,r total plane B", *_KAR),
        _q("fluoro_studies_dose_rp_total_gy", "Ka,r total of fluoroscopy studies", *_KAR),
        _q("entrance_dose_mgy", "Entrance dose", "mGy"),
        _q("entrance_exposure_at_rp_mgy", "Entrance exposure at RP", "mGy"),
        _q("esak_mgy", "ESAK", "mGy"),
        _q("esd_mgy", "ESD", "mGy"),
        _q("fluoro_time_total_s", "Fluoro time", "s"),
        _q("exposure_time_s", "Exposure time", "s"),
        _q("tube_current_ma", "Tube current", "mA"),
        _q("exposure_mas", "Exposure", "mAs"),
        _q("peak_skin_dose_mgy", "Peak skin dose", "mGy"),
        # mammography
        _q("agd_mgy", "AGD", "mGy"),
        _q("agd_total_left_mgy", "AGD left breast", "mGy"),
        _q("agd_total_right_mgy", "AGD right breast", "mGy"),
        _q("compression_thickness_mm", "Compressed breast thickness", "mm"),
        # nuclear medicine
        _q("administered_activity_mbq", "Administered activity", "MBq"),
        _q("administered_activity_total_mbq", "Activity total", "MBq"),
        # patient
        _q("patient_age_years", "Age", "years"),
        _q("patient_weight_kg", "Weight", "kg"),
        # (0010,1020) Patient's Size is the patient's height (EXTRACTION.md name kept)
        _q("patient_size_m", "Height (Patient's Size)", "m"),
    )
}

#: Human-readable labels of stored names in display units (``"KAP total (Gy·cm²)"``).
LABELS: Final[dict[str, str]] = {name: q.display_label for name, q in QUANTITIES.items()}


def get_quantity(name: str) -> Quantity | None:
    """Return the :class:`Quantity` of a name, or ``None`` when it is not a quantity."""
    return QUANTITIES.get(name)


def to_display(name: str, value: float | None) -> float | None:
    """Return a canonical value of quantity ``name`` in its display unit.

    Names that are not in :data:`QUANTITIES` are returned unchanged; ``None`` stays
    ``None``.
    """
    quantity = QUANTITIES.get(name)
    if value is None or quantity is None:
        return value
    return value * quantity.factor


def display_unit(name: str, unit: str = "") -> str:
    """Return the unit a value of ``name`` is shown in on pages and in the alert history.

    Parameters
    ----------
    name : str
        A stored name (``"dap_total_gym2"``) or another quantity's name (``"count"``).
    unit : str
        The unit the value is stored in, used when ``name`` is not in :data:`QUANTITIES`.

    Returns
    -------
    str
        The display unit of a quantity of :data:`QUANTITIES` (KAP ``"Gy·cm²"``, Ka,r
        ``"mGy"``; DESIGN.md "Units"), else ``unit``; ``""`` for UCUM's dimensionless
        unit ``"1"`` (a count of studies reads ``"12"``, not ``"12 1"``), as
        ``kerma alerts list`` shows it.
    """
    quantity = QUANTITIES.get(name)
    if quantity is not None:
        return quantity.display_unit
    return "" if unit in (None, "1") else str(unit)


#: Significant digits of numbers written to CSV: enough for every stored double that
#: came from a DICOM decimal string (DS holds at most 16 characters), without the
#: binary noise of sums (``724.5200000000001`` is written ``724.52``).
CSV_SIGNIFICANT_DIGITS: Final = 10

#: ``printf`` format of CSV numbers (pandas ``to_csv(float_format=...)``).
CSV_FLOAT_FORMAT: Final = f"%.{CSV_SIGNIFICANT_DIGITS}g"


def format_number(value: float, digits: int = CSV_SIGNIFICANT_DIGITS) -> str:
    """Return ``value`` with at most ``digits`` significant digits (``"724.52"``)."""
    return f"{value:.{digits}g}"

"""National DRL survey exports (issue #14, item 4): per standard exam and room, n, median
and mean of each DRL quantity, and the patients' median weight.

Two forms, both one row per (standard exam, room), every unit in its column header:

- :func:`write_uk_ct_survey` — the fields of the UK national CT dose survey's
  data-collection form (UKHSA, formerly PHE/HPA; 5th survey, 2024–2026: "data can only
  be submitted as a summary from a local dose audit", per examination and scanner, with
  patient weight for the paediatric body examinations;
  https://www.ukhsa-protectionservices.org.uk/mdg/ndrl/CTdosesurvey). The form itself
  (an XLSX downloaded from that page) was not available to us: :data:`UK_CT_FIELDS`
  are the fields the survey's page and the previous surveys' reports (PHE-CRCE-013,
  2011 review; NRPB-W67, 2003 review) name — examination, scanner, number of patients,
  median (and mean) CTDIvol and DLP, median weight — with our wording. docs/exports.md
  says which field comes from where; check them against the current form before
  submitting.
- :func:`write_generic_survey` — a generic CSV for any modality family: for each DRL
  quantity of :data:`kerma.services.exports.SURVEY_QUANTITIES`, ``n``, median and mean.

Units: every value is converted from its canonical unit (DAP in Gy·m², Ka,r in Gy,
CTDIvol in mGy, DLP in mGy·cm) by :func:`unit_factor`, from the UCUM code of the
column's unit — the same :class:`SurveyColumn` carries the unit the header shows and
the unit the value is converted to, so a header cannot say Gy·cm² over a value in Gy·m²
(the ×10⁴/×10⁶ mistakes of other tools). KAP can be asked in Gy·cm² (default),
mGy·cm², cGy·cm², dGy·cm² or µGy·m² (``dap_unit``).

May import ``kerma.services`` and the plain layers.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from kerma.units import (
    UCUM_GY,
    UCUM_GYM2,
    UCUM_MGY,
    UCUM_MGYCM,
    UCUM_S,
    conversion_factor,
)

if TYPE_CHECKING:
    import pandas as pd

    from kerma.services.filters import StudyFilter
    from kerma.services.registry import Registry

#: KAP units a survey may ask for: UCUM code -> how the header writes it.
DAP_UNITS: Final[dict[str, str]] = {
    "Gy.cm2": "Gy·cm²",
    "mGy.cm2": "mGy·cm²",
    "cGy.cm2": "cGy·cm²",
    "dGy.cm2": "dGy·cm²",
    "uGy.m2": "µGy·m²",
}

#: Canonical UCUM unit of each survey quantity (DESIGN.md "Units").
CANONICAL_UCUM: Final[dict[str, str]] = {
    "ctdivol_mean_mgy": UCUM_MGY,
    "ct_dlp_total_mgycm": UCUM_MGYCM,
    "dap_gym2": UCUM_GYM2,
    "dap_total_gym2": UCUM_GYM2,
    "dose_rp_total_gy": UCUM_GY,
    "agd_mgy": UCUM_MGY,
    "fluoro_time_total_s": UCUM_S,
    "patient_weight_kg": "kg",
}


def unit_factor(quantity: str, unit_ucum: str) -> float:
    """Return the factor from ``quantity``'s canonical unit to ``unit_ucum``.

    ``dap_total_gym2`` to ``Gy.cm2`` is 1e4; to ``mGy.cm2`` 1e7; ``dose_rp_total_gy`` to
    ``mGy`` 1e3 (from :data:`kerma.units.CONVERSIONS`).

    Raises
    ------
    ValueError
        When the unit is not one the quantity can be written in.
    """
    canonical = CANONICAL_UCUM[quantity]
    if unit_ucum == canonical:
        return 1.0
    factor = conversion_factor(unit_ucum, canonical)
    if factor is None:
        raise ValueError(f"Unable to write {quantity} in {unit_ucum!r}: not a unit of it.")
    return 1.0 / factor


@dataclass(frozen=True)
class SurveyColumn:
    """One column of a survey: header, statistic of a quantity, and its unit.

    Attributes
    ----------
    header : str
        Header text without the unit (the unit is appended: ``"Median DLP (mGy·cm)"``).
    quantity : str or None
        Canonical quantity name (``None``: a context column).
    statistic : str
        ``n``, ``median``, ``mean`` or a context column of the statistics frame.
    unit_ucum : str
        UCUM code the value is converted to (``""``: no unit).
    unit : str
        How the header writes the unit.
    """

    header: str
    quantity: str | None
    statistic: str
    unit_ucum: str = ""
    unit: str = ""

    @property
    def title(self) -> str:
        """Return the header with its unit, e.g. ``"Median KAP (Gy·cm²)"``."""
        return f"{self.header} ({self.unit})" if self.unit else self.header

    def value(self, group: dict[str, dict[str, Any]], context: dict[str, Any]) -> Any:
        """Return this column's cell for one (exam, room) group.

        ``group`` maps quantity -> its statistics row; ``context`` the group's columns.
        """
        if self.quantity is None:
            value = context.get(self.statistic)
            return value.date() if isinstance(value, dt.datetime) else value
        row = group.get(self.quantity)
        if row is None:
            return 0 if self.statistic == "n" else None
        value = row[self.statistic]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.statistic == "n":
            return int(value)
        return float(value) * unit_factor(self.quantity, self.unit_ucum)


def _context(header: str, column: str) -> SurveyColumn:
    """Return a context column (exam, room, dates)."""
    return SurveyColumn(header, None, column)


#: Fields of the UK national CT dose survey form (see module doc), in its order.
UK_CT_FIELDS: Final[tuple[SurveyColumn, ...]] = (
    _context("Examination", "standard_exam"),
    _context("Scanner", "device_name"),
    _context("Station name", "station_name"),
    _context("Audit period start", "first_study_date"),
    _context("Audit period end", "last_study_date"),
    SurveyColumn("Number of patients", "ct_dlp_total_mgycm", "n"),
    SurveyColumn("Median CTDIvol", "ctdivol_mean_mgy", "median", UCUM_MGY, "mGy"),
    SurveyColumn("Median DLP", "ct_dlp_total_mgycm", "median", UCUM_MGYCM, "mGy·cm"),
    SurveyColumn("Mean CTDIvol", "ctdivol_mean_mgy", "mean", UCUM_MGY, "mGy"),
    SurveyColumn("Mean DLP", "ct_dlp_total_mgycm", "mean", UCUM_MGYCM, "mGy·cm"),
    SurveyColumn("Number of patients with weight", "patient_weight_kg", "n"),
    SurveyColumn("Median patient weight", "patient_weight_kg", "median", "kg", "kg"),
)


def generic_fields(dap_unit: str = "Gy.cm2") -> tuple[SurveyColumn, ...]:
    """Return the columns of the generic survey CSV, KAP in ``dap_unit`` (UCUM).

    Raises
    ------
    ValueError
        When ``dap_unit`` is not one of :data:`DAP_UNITS`.
    """
    if dap_unit not in DAP_UNITS:
        raise ValueError(f"Unable to write KAP in {dap_unit!r}: use one of {', '.join(DAP_UNITS)}.")
    dap_label = DAP_UNITS[dap_unit]
    columns = [
        _context("Modality", "modality_family"),
        _context("Standard exam", "standard_exam"),
        _context("Room", "device_name"),
        _context("Station name", "station_name"),
        _context("First study date", "first_study_date"),
        _context("Last study date", "last_study_date"),
    ]
    quantities = (
        ("CTDIvol", "ctdivol_mean_mgy", UCUM_MGY, "mGy"),
        ("DLP", "ct_dlp_total_mgycm", UCUM_MGYCM, "mGy·cm"),
        ("KAP per projection", "dap_gym2", dap_unit, dap_label),
        ("AGD per view", "agd_mgy", UCUM_MGY, "mGy"),
        ("KAP total", "dap_total_gym2", dap_unit, dap_label),
        ("Ka,r total", "dose_rp_total_gy", UCUM_MGY, "mGy"),
        ("Fluoroscopy time", "fluoro_time_total_s", UCUM_S, "s"),
        ("Patient weight", "patient_weight_kg", "kg", "kg"),
    )
    for label, quantity, ucum, unit in quantities:
        columns.append(SurveyColumn(f"{label} n", quantity, "n"))
        columns.append(SurveyColumn(f"{label} median", quantity, "median", ucum, unit))
        columns.append(SurveyColumn(f"{label} mean", quantity, "mean", ucum, unit))
    return tuple(columns)


GROUP_KEYS: Final[tuple[str, ...]] = (
    "modality_family",
    "standard_exam",
    "device_name",
    "station_name",
)


def survey_rows(table: pd.DataFrame, fields: tuple[SurveyColumn, ...]) -> list[list[Any]]:
    """Return one row per (exam, room) group of a survey statistics table.

    ``table`` is :func:`kerma.services.exports.survey_statistics` (long format).
    """
    groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    contexts: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in table.to_dict("records"):
        key = tuple(record.get(k) for k in GROUP_KEYS)
        groups.setdefault(key, {})[str(record["quantity"])] = record
        context = contexts.setdefault(key, {k: record.get(k) for k in GROUP_KEYS})
        for name, pick in (("first_study_date", min), ("last_study_date", max)):
            value = record.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                context[name] = value if name not in context else pick(context[name], value)
    ordered = sorted(groups, key=lambda k: tuple("" if v is None else str(v) for v in k))
    return [[f.value(groups[k], contexts[k]) for f in fields] for k in ordered]


def _write(rows: list[list[Any]], fields: tuple[SurveyColumn, ...], out: Path | IO[str]) -> int:
    """Write a header and rows as UTF-8 CSV (byte-order mark for a path); return rows."""
    from kerma.files import open_private

    def emit(stream: IO[str]) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow([f.title for f in fields])
        for row in rows:
            writer.writerow(
                "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row
            )

    if isinstance(out, Path | str):
        with open_private(Path(out), "w", encoding="utf-8-sig", newline="") as stream:
            emit(stream)
    else:
        emit(out)
    return len(rows)


def write_uk_ct_survey(
    registry: Registry, out: Path | IO[str], *, flt: StudyFilter | None = None
) -> int:
    """Write the UK national CT dose survey fields, one row per CT exam and scanner.

    Returns
    -------
    int
        Rows written (exam and scanner groups).
    """
    from kerma.services.exports import survey_statistics

    with registry.session(write=False) as session:
        table = survey_statistics(session, flt=flt, families=("CT",))
    return _write(survey_rows(table, UK_CT_FIELDS), UK_CT_FIELDS, out)


def write_generic_survey(
    registry: Registry,
    out: Path | IO[str],
    *,
    flt: StudyFilter | None = None,
    families: tuple[str, ...] = ("CT", "DX", "MG", "RF/XA"),
    dap_unit: str = "Gy.cm2",
) -> int:
    """Write the generic survey CSV: per family, exam and room, n/median/mean per quantity.

    Raises
    ------
    ValueError
        When ``dap_unit`` or a family is unknown.

    Returns
    -------
    int
        Rows written.
    """
    from kerma.services.exports import survey_statistics

    fields = generic_fields(dap_unit)
    with registry.session(write=False) as session:
        table = survey_statistics(session, flt=flt, families=families)
    return _write(survey_rows(table, fields), fields, out)

"""Packaged reference tables: DRLs, CT k-factors and SSDE coefficients, with their sources.

The CSV files in ``kerma/reference/`` are copies of the curated project tables (see
``kerma/reference/README.md``). Every row keeps its ``source_ref`` keys (resolved in
``kerma/reference/SOURCES.md``) and its ``verification`` grade (``primary``,
``primary-reproduction``, ``secondary``, ``unverified``). This module loads them and
harmonises the five DRL tables into one long frame whose ``standard_exam`` names are
the names the standard-exam rules assign (``kerma.analysis.exams``), so a DRL is found
by ``(standard_exam, quantity)``.

This module reads package data and optional site CSV files; it must not import
``kerma.db``, ``kerma.web`` or ``kerma.cli``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from kerma.errors import ConfigurationError
from kerma.units import QUANTITIES, UCUM_GY, UCUM_GYM2, conversion_factor

logger = logging.getLogger(__name__)

#: Package-data folder holding the CSV tables and their documentation.
REFERENCE_PACKAGE: Final = "kerma"
REFERENCE_DIR: Final = "reference"

#: Canonical unit of each DRL quantity (``kerma.units``). The tables publish KAP in
#: Gy·cm² and Ka,r in mGy; :func:`load_drls` converts them once, on loading.
QUANTITY_UNITS: Final[dict[str, str]] = {
    name: QUANTITIES[name].unit
    for name in (
        "ctdivol_mgy",
        "dlp_mgycm",
        "dap_gym2",
        "agd_mgy",
        "dose_rp_gy",
        "esd_mgy",
        "esak_mgy",
    )
}

#: Published DRL column -> (quantity, factor from the published unit to the canonical
#: one, :func:`kerma.units.conversion_factor`). The CSV column names mirror
#: ``../shared/reference`` and stay as published.
PUBLISHED_COLUMNS: Final[dict[str, tuple[str, float]]] = {
    "ctdivol_mGy": ("ctdivol_mgy", 1.0),
    "dlp_mGycm": ("dlp_mgycm", 1.0),
    "dap_Gycm2": ("dap_gym2", float(conversion_factor("Gy.cm2", UCUM_GYM2) or 0.0)),
    "kap_Gycm2": ("dap_gym2", float(conversion_factor("Gy.cm2", UCUM_GYM2) or 0.0)),
    "kar_mGy": ("dose_rp_gy", float(conversion_factor("mGy", UCUM_GY) or 0.0)),
    "esak_mGy": ("esak_mgy", 1.0),
    "esd_mGy": ("esd_mgy", 1.0),
    "agd_mGy": ("agd_mgy", 1.0),
}

#: Quantity names of site tables in the harmonised shape written before Kerma used one
#: name per quantity: old name -> (canonical name, factor to its canonical unit).
LEGACY_QUANTITIES: Final[dict[str, tuple[str, float]]] = {
    "kap_gycm2": ("dap_gym2", float(conversion_factor("Gy.cm2", UCUM_GYM2) or 0.0)),
    "ka_r_mgy": ("dose_rp_gy", float(conversion_factor("mGy", UCUM_GY) or 0.0)),
}

#: Columns of the harmonised DRL frame returned by :func:`load_drls`.
DRL_COLUMNS: Final[tuple[str, ...]] = (
    "drl_region",
    "drl_table",
    "drl_source",
    "drl_year",
    "standard_exam",
    "indication_exam",
    "exam_as_published",
    "clinical_indication",
    "modality_family",
    "quantity",
    "drl_value",
    "unit",
    "phantom_cm",
    "patient_group",
    "band_grouping",
    "band_label",
    "band_min",
    "band_max",
    "band_unit",
    "contrast",
    "view",
    "status",
    "verification",
    "source_ref",
    "notes",
    "valid_from",
    "valid_to",
    "table_ref",
    "unit_as_published",
)

#: Verification grades of the shipped rows, strongest first (``SOURCES.md``); site
#: tables get ``"site"``.
VERIFICATION_GRADES: Final[tuple[str, ...]] = (
    "primary",
    "primary-reproduction",
    "secondary",
    "unverified",
)

#: Status of a row kept for comparison with studies of its validity period only.
STATUS_SUPERSEDED: Final = "superseded"

#: Adult CT rows (exam, clinical indication as published) that are DRLs of a EUCLID
#: clinical indication (EC RP 195, 2021), and that indication's name as the EU table
#: gives it. Such a row's ``indication_exam`` is ``"CT <exam> (<indication>)"``, the
#: standard exam the indication rules assign; every other adult CT row (no indication,
#: a technique such as "With contrast", or a national indication without a EUCLID
#: counterpart such as UK "Abscess") is the exam's anatomical DRL. Non-EU rows are
#: listed where their indication is the EUCLID one in other words (an interpretation,
#: added to the row's ``notes``).
CT_CLINICAL_INDICATIONS: Final[dict[tuple[str, str], str]] = {
    ("Head", "Stroke"): "Stroke",
    ("Head", "Acute stroke"): "Stroke",  # UKHSA 2022
    ("Paranasal sinuses", "Chronic sinusitis"): "Chronic sinusitis",
    ("Paranasal sinuses", "Sinus disease"): "Chronic sinusitis",  # UKHSA 2022
    ("Cervical spine", "Trauma"): "Trauma",
    ("Cervical spine", "Fracture"): "Trauma",  # UKHSA 2022
    ("Cervical spine", "Non-contrast (trauma)"): "Trauma",  # ARPANSA 2018
    ("Chest", "Lung cancer"): "Lung cancer",
    ("Abdomen-Pelvis", "Colic/abdominal pain"): "Colic/abdominal pain",
    ("Abdomen-Pelvis", "Appendicitis"): "Appendicitis",
}

#: Indication exam -> DRL exams tried, in order, when the selected set has no row for
#: the indication itself; the anatomical exam (``split_indication_exam``) is always
#: tried last. Renal colic is the clinical question of the UK and AU "KUB" DRLs.
INDICATION_FALLBACKS: Final[dict[str, tuple[str, ...]]] = {
    "CT Abdomen-Pelvis (Colic/abdominal pain)": ("CT KUB",),
}


def drl_exam_candidates(standard_exam: str) -> list[str]:
    """Return the DRL exams a study of ``standard_exam`` is compared with, in order.

    An anatomical exam (``"CT Head"``) is compared only with its own (anatomical) DRL
    rows, never with a clinical-indication row. A clinical-indication exam
    (``"CT Head (Stroke)"``) is compared with the indication's rows; when the selected
    set has none, with ``INDICATION_FALLBACKS`` and then the anatomical exam's rows.

    Parameters
    ----------
    standard_exam : str
        The study's standard exam.

    Returns
    -------
    list of str
        DRL exam names (a DRL row's ``indication_exam``, else its ``standard_exam``),
        the study's own first.
    """
    from kerma.analysis.exams import split_indication_exam

    anatomical, indication = split_indication_exam(standard_exam)
    if not indication:
        return [standard_exam]
    return [standard_exam, *INDICATION_FALLBACKS.get(standard_exam, ()), anatomical]


#: Radiography (exam, projection as published) -> kerma standard exam, where the plain
#: "exam projection" rule does not apply. Each alias is an interpretation and says so.
RADIOGRAPHY_ALIASES: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("Abdomen", ""): (
        "Abdomen AP",
        "projection not stated in source; compared as Abdomen AP (plain abdomen)",
    ),
    ("Abdomen", "AP/PA"): ("Abdomen AP", "published for AP/PA; compared as Abdomen AP"),
    ("Pelvis", "AP/PA"): ("Pelvis AP", "published for AP/PA; compared as Pelvis AP"),
    ("Lumbar spine", "AP/PA"): ("Lumbar spine AP", "published for AP/PA"),
    ("Thoracic spine", "AP/PA"): ("Thoracic spine AP", "published for AP/PA"),
    ("Skull", "AP/PA"): ("Skull AP", "published for AP/PA"),
    ("Lumbar spine", "LSJ (lumbosacral junction)"): ("Lumbar spine LSJ", ""),
    ("Shoulder", "per plane"): ("Shoulder", "per plane (projection)"),
    ("Orthopantomography (dental panoramic)", ""): ("Orthopantomography", ""),
    ("Paranasal sinuses", "one projection"): (
        "Paranasal sinuses",
        "published for the one-projection examination; compared per projection",
    ),
}

#: Fluoroscopy/interventional procedure as published -> kerma standard exam.
FLUORO_ALIASES: Final[dict[str, tuple[str, str]]] = {
    "Percutaneous coronary intervention (PCI)": ("PCI", ""),
    "PTCA": ("PCI", "published as PTCA; compared as PCI"),
    "Coronary angiography (diagnostic)": ("Coronary angiography", ""),
    "Transcatheter aortic valve implantation (TAVI)": ("TAVI", ""),
    "Colon contrast enema (barium enema)": ("Barium enema", ""),
    "Combined coronary angiography and PCI": ("Coronary angiography and PCI", ""),
    "Mechanical thrombectomy (thrombus aspiration) after stroke": (
        "Mechanical thrombectomy (stroke)",
        "",
    ),
    "Endovascular aortic aneurysm repair (thoracic or abdominal aorta, supra- or infrarenal)": (
        "Endovascular aortic aneurysm repair (EVAR/TEVAR)",
        "",
    ),
    "Lower limb and iliac angiography": (
        "Arteriography pelvis-leg",
        "published as lower limb and iliac angiography; compared as arteriography "
        "pelvis-leg (the same arteries, the DE name)",
    ),
}

#: DRL tables shipped with Kerma (file stem -> modality family).
DRL_TABLES: Final[dict[str, str]] = {
    "drl_ct_adult": "CT",
    "drl_ct_paediatric": "CT",
    "drl_radiography": "DX",
    "drl_mammography": "MG",
    "drl_fluoro_interventional": "RF/XA",
}


def reference_path(name: str) -> Path:
    """Return the path of a packaged reference file.

    Parameters
    ----------
    name : str
        File name inside ``kerma/reference``, e.g. ``"drl_ct_adult.csv"``.

    Returns
    -------
    pathlib.Path
        The file's path (the package is installed unzipped).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the file is not part of the installed package.
    """
    path = Path(str(resources.files(REFERENCE_PACKAGE).joinpath(REFERENCE_DIR, name)))
    if not path.is_file():
        raise ConfigurationError(
            f"Unable to find the reference table {name!r}: it is not in {path.parent}. "
            "Reinstall Kerma with its package data."
        )
    return path


def read_reference_table(name: str) -> pd.DataFrame:
    """Return one packaged CSV table as published, all columns kept.

    Parameters
    ----------
    name : str
        File stem or name, e.g. ``"drl_ct_adult"`` or ``"ssde_fit_coefficients.csv"``.

    Returns
    -------
    pandas.DataFrame
        One row per table row; empty cells are ``NaN``. Column meanings are in the
        table's ``.md`` file beside it.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the table does not exist.
    """
    file_name = name if name.endswith(".csv") else f"{name}.csv"
    return _read_csv(reference_path(file_name))


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a reference CSV: only empty cells are missing (``NA`` is a region code)."""
    return pd.read_csv(
        path,
        keep_default_na=False,
        na_values=[""],
        dtype={"source_ref": str, "region": str, "age_years": str, "kvp": str},
    )


def _text(value: object) -> str:
    """Return ``value`` as a stripped string, ``""`` for missing values."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _ct_exam_name(exam: str) -> str:
    """Return the CT standard exam name of a DRL table's harmonised exam name."""
    return exam if exam.upper().startswith("CT ") else f"CT {exam}"


def _long_rows(
    table: pd.DataFrame,
    *,
    table_name: str,
    columns: Sequence[str],
    base: dict[str, pd.Series],
) -> pd.DataFrame:
    """Melt the published quantity ``columns`` of ``table`` into the long DRL shape.

    Values are converted to the quantity's canonical unit (:data:`PUBLISHED_COLUMNS`).
    """
    parts = []
    for column in columns:
        if column not in table.columns:
            continue
        quantity, factor = PUBLISHED_COLUMNS[column]
        values = pd.to_numeric(table[column], errors="coerce") * factor
        frame = pd.DataFrame(base)
        frame["drl_table"] = table_name
        frame["quantity"] = quantity
        frame["drl_value"] = values
        frame["unit"] = QUANTITY_UNITS[quantity]
        parts.append(frame[values.notna()])
    if not parts:
        return pd.DataFrame(columns=list(DRL_COLUMNS))
    out = pd.concat(parts, ignore_index=True)
    for column in DRL_COLUMNS:
        if column not in out.columns:
            out[column] = np.nan
    return out[list(DRL_COLUMNS)]


def _common(table: pd.DataFrame) -> dict[str, pd.Series]:
    """Return the columns every DRL table shares, renamed to the harmonised names."""
    return {
        "drl_region": table["region"].astype(str),
        "drl_source": table["source"].astype(str),
        "drl_year": pd.to_numeric(table["year"], errors="coerce").astype("Int64"),
        "status": table["status"],
        "verification": table["verification"],
        "source_ref": table["source_ref"],
        "notes": table["notes"].map(_text),
        "valid_from": _dates(table, "valid_from"),
        "valid_to": _dates(table, "valid_to"),
        "table_ref": _texts(table, "table_ref"),
        "unit_as_published": _texts(table, "unit_as_published"),
    }


def _dates(table: pd.DataFrame, column: str) -> pd.Series:
    """Return an ISO-date column as ``datetime64`` (``NaT`` where empty or absent).

    ``valid_from`` and ``valid_to`` are inclusive calendar days (README.md of the
    reference folder, "Validity and traceability columns").

    Raises
    ------
    kerma.errors.ConfigurationError
        When a cell is not an ISO date (``YYYY-MM-DD``).
    """
    if column not in table.columns:
        return pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns]")
    text = table[column].map(_text)
    dates = pd.to_datetime(text.where(text != ""), format="%Y-%m-%d", errors="coerce")
    bad = text[(text != "") & dates.isna()]
    if not bad.empty:
        raise ConfigurationError(
            f"Unable to read the DRL validity column {column!r}: {bad.iloc[0]!r} is not a "
            "date in the form YYYY-MM-DD."
        )
    return dates


def _texts(table: pd.DataFrame, column: str) -> pd.Series:
    """Return a text column, ``""`` where empty or absent."""
    if column not in table.columns:
        return pd.Series("", index=table.index, dtype=object)
    return table[column].map(_text)


def _indication_exam(exam: object, clinical_indication: object) -> str:
    """Return the indication exam of an adult CT row (``CT_CLINICAL_INDICATIONS``), or ``""``."""
    indication = CT_CLINICAL_INDICATIONS.get((_text(exam), _text(clinical_indication)))
    return f"{_ct_exam_name(_text(exam))} ({indication})" if indication else ""


def _harmonise_ct_adult(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``drl_ct_adult.csv`` in the harmonised DRL shape.

    ``indication_exam`` names the EUCLID clinical indication of the row
    (``CT_CLINICAL_INDICATIONS``), ``""`` for an anatomical DRL.
    """
    base = _common(table)
    aliased = [
        CT_CLINICAL_INDICATIONS.get((_text(e), _text(c)), _text(c)) != _text(c)
        for e, c in zip(table["exam"], table["clinical_indication"], strict=True)
    ]
    base["notes"] = pd.Series(
        [
            "; ".join(
                x
                for x in (
                    note,
                    f"compared as EUCLID indication "
                    f"'{CT_CLINICAL_INDICATIONS[(_text(e), _text(c))]}'"
                    if alias
                    else "",
                )
                if x
            )
            for e, c, note, alias in zip(
                table["exam"], table["clinical_indication"], base["notes"], aliased, strict=True
            )
        ],
        index=table.index,
    )
    base |= {
        "standard_exam": table["exam"].map(_ct_exam_name),
        "indication_exam": pd.Series(
            [
                _indication_exam(e, c)
                for e, c in zip(table["exam"], table["clinical_indication"], strict=True)
            ],
            index=table.index,
            dtype=object,
        ),
        "exam_as_published": table["exam"],
        "clinical_indication": table["clinical_indication"].map(_text),
        "modality_family": pd.Series("CT", index=table.index),
        "phantom_cm": pd.to_numeric(table["phantom_cm"], errors="coerce"),
        "patient_group": pd.Series("adult", index=table.index),
    }
    return _long_rows(
        table,
        table_name="drl_ct_adult",
        columns=("ctdivol_mGy", "dlp_mGycm"),
        base=base,
    )


def _harmonise_ct_paediatric(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``drl_ct_paediatric.csv`` in the harmonised DRL shape (bands kept)."""
    base = _common(table)
    base |= {
        "standard_exam": table["exam"].map(_ct_exam_name),
        "exam_as_published": table["exam"],
        "clinical_indication": pd.Series("", index=table.index),
        "modality_family": pd.Series("CT", index=table.index),
        "phantom_cm": pd.to_numeric(table["phantom_cm"], errors="coerce"),
        "patient_group": pd.Series("paediatric", index=table.index),
        "band_grouping": table["grouping"],
        "band_label": table["band_label"],
        "band_min": pd.to_numeric(table["band_min"], errors="coerce"),
        "band_max": pd.to_numeric(table["band_max"], errors="coerce"),
        "band_unit": table["band_unit"],
        "contrast": table["contrast"].map(_text),
    }
    return _long_rows(
        table,
        table_name="drl_ct_paediatric",
        columns=("ctdivol_mGy", "dlp_mGycm"),
        base=base,
    )


def _radiography_exam(exam: str, projection: str) -> tuple[str, str]:
    """Return (standard exam, note) for a radiography row (see ``RADIOGRAPHY_ALIASES``)."""
    if (exam, projection) in RADIOGRAPHY_ALIASES:
        return RADIOGRAPHY_ALIASES[(exam, projection)]
    return (f"{exam} {projection}".strip(), "")


def _harmonise_radiography(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``drl_radiography.csv`` in the harmonised DRL shape (KAP, ESAK, ESD)."""
    names = [
        _radiography_exam(_text(e), _text(p))
        for e, p in zip(table["exam"], table["projection"], strict=True)
    ]
    base = _common(table)
    notes = [
        "; ".join(x for x in (alias_note, note) if x)
        for (_, alias_note), note in zip(names, base["notes"], strict=True)
    ]
    base |= {
        "standard_exam": pd.Series([n for n, _ in names], index=table.index),
        "exam_as_published": (table["exam"] + " " + table["projection"].map(_text)).str.strip(),
        "clinical_indication": pd.Series("", index=table.index),
        "modality_family": pd.Series("DX", index=table.index),
        "patient_group": table["patient_group"],
        "notes": pd.Series(notes, index=table.index),
    }
    return _long_rows(
        table,
        table_name="drl_radiography",
        columns=("dap_Gycm2", "esak_mGy", "esd_mGy"),
        base=base,
    )


def _label_where(condition: pd.Series, label: str) -> pd.Series:
    """Return ``label`` where ``condition`` holds, else ``None`` (object dtype)."""
    return pd.Series(None, index=condition.index, dtype=object).mask(condition, label)


def _harmonise_mammography(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``drl_mammography.csv`` in the harmonised DRL shape.

    Rows published for ``context = all`` apply to screening and diagnostic mammography
    and are listed once for each; ``view = "CC and MLO"`` applies to every view (``view``
    left empty).
    """
    rows = []
    for _, row in table.iterrows():
        contexts = ["screening", "diagnostic"] if row["context"] == "all" else [row["context"]]
        for context in contexts:
            record = row.to_dict()
            record["standard_exam"] = f"Mammography {context}"
            record["view_norm"] = "" if _text(row["view"]) == "CC and MLO" else _text(row["view"])
            rows.append(record)
    expanded = pd.DataFrame(rows)
    base = _common(expanded)
    base |= {
        "standard_exam": expanded["standard_exam"],
        "exam_as_published": expanded["context"] + " " + expanded["view"].map(_text),
        "clinical_indication": expanded["breast_category"].map(_text),
        "modality_family": pd.Series("MG", index=expanded.index),
        "patient_group": pd.Series("adult", index=expanded.index),
        "band_grouping": _label_where(
            expanded["cbt_min_mm"].notna(), "compressed breast thickness"
        ),
        "band_min": pd.to_numeric(expanded["cbt_min_mm"], errors="coerce"),
        "band_max": pd.to_numeric(expanded["cbt_max_mm"], errors="coerce"),
        "band_unit": _label_where(expanded["cbt_min_mm"].notna(), "mm (inclusive)"),
        "view": expanded["view_norm"],
    }
    return _long_rows(expanded, table_name="drl_mammography", columns=("agd_mGy",), base=base)


def _harmonise_fluoro(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``drl_fluoro_interventional.csv`` in the harmonised DRL shape."""
    names = [FLUORO_ALIASES.get(p, (p, "")) for p in table["procedure"]]
    base = _common(table)
    base |= {
        "standard_exam": pd.Series([n for n, _ in names], index=table.index),
        "exam_as_published": table["procedure"] + " (" + table["category"] + ")",
        "clinical_indication": pd.Series("", index=table.index),
        "modality_family": pd.Series("RF/XA", index=table.index),
        "patient_group": pd.Series("adult", index=table.index),
        "notes": pd.Series(
            [
                "; ".join(x for x in (a, n) if x)
                for (_, a), n in zip(names, base["notes"], strict=True)
            ],
            index=table.index,
        ),
    }
    return _long_rows(
        table,
        table_name="drl_fluoro_interventional",
        columns=("kap_Gycm2", "kar_mGy"),
        base=base,
    )


_HARMONISERS = {
    "drl_ct_adult": _harmonise_ct_adult,
    "drl_ct_paediatric": _harmonise_ct_paediatric,
    "drl_radiography": _harmonise_radiography,
    "drl_mammography": _harmonise_mammography,
    "drl_fluoro_interventional": _harmonise_fluoro,
}

#: Columns that identify which published table shape a site CSV follows.
_SHAPE_MARKERS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("harmonised", frozenset({"standard_exam", "quantity", "drl_value"})),
    ("drl_ct_paediatric", frozenset({"exam", "ctdivol_mGy", "band_min"})),
    ("drl_ct_adult", frozenset({"exam", "ctdivol_mGy", "dlp_mGycm"})),
    ("drl_radiography", frozenset({"exam", "projection", "dap_Gycm2"})),
    ("drl_mammography", frozenset({"view", "agd_mGy"})),
    ("drl_fluoro_interventional", frozenset({"procedure", "kap_Gycm2"})),
)


def _harmonise_site_table(path: Path) -> pd.DataFrame:
    """Read a site DRL CSV in one of the published shapes or in the harmonised shape."""
    try:
        table = _read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"Unable to read the site DRL table {path}: {exc}") from exc
    columns = set(table.columns)
    shape = next((name for name, markers in _SHAPE_MARKERS if markers <= columns), None)
    if shape is None:
        raise ConfigurationError(
            f"Unable to use the site DRL table {path}: its columns match none of the "
            "shipped DRL tables (see docs/analysis.md, 'Adding a site DRL table')."
        )
    for column in ("status", "verification", "source_ref", "notes", "year", "source", "region"):
        if column not in table.columns:
            table[column] = {"status": "current", "verification": "site"}.get(column, "")
    if shape == "harmonised":
        table = table.rename(
            columns={"region": "drl_region", "source": "drl_source", "year": "drl_year"}
        )
        for column in DRL_COLUMNS:
            if column not in table.columns:
                table[column] = np.nan
        table["drl_table"] = f"site:{path.name}"
        table["valid_from"] = _dates(table, "valid_from")
        table["valid_to"] = _dates(table, "valid_to")
        values = pd.to_numeric(table["drl_value"], errors="coerce")
        for old_name, (name, factor) in LEGACY_QUANTITIES.items():
            legacy = table["quantity"] == old_name
            values = values.where(~legacy, values * factor)
            table.loc[legacy, "quantity"] = name
        table["drl_value"] = values
        unknown = sorted(set(table["quantity"].astype(str)) - set(QUANTITY_UNITS))
        if unknown:
            raise ConfigurationError(
                f"Unable to use the site DRL table {path}: unknown quantity {unknown}; use "
                f"{', '.join(QUANTITY_UNITS)} (values in their canonical units)."
            )
        table["unit"] = table["quantity"].map(QUANTITY_UNITS)
        return table[list(DRL_COLUMNS)]
    out = _HARMONISERS[shape](table)
    out["drl_table"] = f"site:{path.name}"
    return out


def load_drls(
    *, extra_paths: Iterable[Path | str] = (), include_packaged: bool = True
) -> pd.DataFrame:
    """Return every DRL row (packaged tables and site tables) in one harmonised frame.

    Sources: ``kerma/reference/drl_*.csv`` (citations per row in ``source_ref``; see
    ``kerma/reference/README.md``), plus each site CSV in ``extra_paths``
    (``Settings.drl_extra_paths``).

    Parameters
    ----------
    extra_paths : iterable of path, optional
        Site DRL tables. Each is a CSV with the columns of one of the shipped tables
        (e.g. ``drl_ct_adult.csv``) or the harmonised columns below (at least
        ``region, source, year, standard_exam, quantity, drl_value``; ``drl_value``
        in the quantity's canonical unit; the older names ``kap_gycm2`` (Gy·cm²) and
        ``ka_r_mgy`` (mGy) are converted).
    include_packaged : bool, optional
        Include the shipped tables (default ``True``).

    Returns
    -------
    pandas.DataFrame
        One row per (published row, quantity). Columns: ``drl_region`` (``EU``, ``UK``
        ...), ``drl_table``, ``drl_source``, ``drl_year``, ``standard_exam`` (kerma's
        name, e.g. ``"CT Head"``, ``"Chest PA"``, ``"Mammography screening"``, ``"PCI"``),
        ``indication_exam`` (adult CT rows of a EUCLID clinical indication: the standard
        exam of the indication, e.g. ``"CT Head (Stroke)"``; ``""`` or missing for
        anatomical DRLs; see ``CT_CLINICAL_INDICATIONS``), ``exam_as_published``,
        ``clinical_indication``, ``modality_family`` (``CT``, ``DX``, ``MG``, ``RF/XA``),
        ``quantity`` (``ctdivol_mgy``, ``dlp_mgycm``,
        ``dap_gym2``, ``agd_mgy``, ``dose_rp_gy``, ``esd_mgy``, ``esak_mgy``),
        ``drl_value`` (float, in the canonical ``unit`` of the quantity: mGy, mGy·cm,
        Gy·m², Gy; published KAP (Gy·cm²) and Ka,r (mGy) values are converted on
        loading), ``unit``, ``phantom_cm``,
        ``patient_group`` (``adult``/``paediatric``), ``band_grouping`` (``age``,
        ``weight``, ``compressed breast thickness``), ``band_label``, ``band_min``,
        ``band_max``, ``band_unit``, ``contrast``, ``view``, ``status``,
        ``verification``, ``source_ref``, ``notes``.

    Raises
    ------
    kerma.errors.ConfigurationError
        When a site table cannot be read or has unknown columns.
    """
    parts = []
    if include_packaged:
        parts.append(_packaged_drls())
    for path in extra_paths:
        parts.append(_harmonise_site_table(Path(path)))
    if not parts:
        return pd.DataFrame(columns=list(DRL_COLUMNS))
    return pd.concat(parts, ignore_index=True)


_PACKAGED_DRLS: list[pd.DataFrame] = []


def _packaged_drls() -> pd.DataFrame:
    """Return the packaged DRL tables harmonised (read once per process; a copy)."""
    if not _PACKAGED_DRLS:
        _PACKAGED_DRLS.append(
            pd.concat(
                [h(read_reference_table(stem)) for stem, h in _HARMONISERS.items()],
                ignore_index=True,
            )
        )
    return _PACKAGED_DRLS[0].copy()


def parse_drl_set(drl_set: str | Sequence[str]) -> list[str]:
    """Return the region codes of a DRL-set selection in priority order.

    ``"EU"`` selects the EU set; ``"UK,EU"`` looks in the UK set first and uses the EU
    set for exams the UK set lacks.
    """
    items = drl_set.split(",") if isinstance(drl_set, str) else list(drl_set)
    return [item.strip() for item in items if item.strip()]


def select_drls(
    drls: pd.DataFrame,
    drl_set: str | Sequence[str],
    *,
    statuses: Sequence[str] = ("current",),
) -> pd.DataFrame:
    """Return the DRL rows of the selected set(s), one region per (exam, quantity, group).

    For each ``(standard_exam, quantity, patient_group)`` the first region in
    ``drl_set`` that has rows wins. Its rows with one of ``statuses`` are kept
    together with its **dated superseded editions** (status ``"superseded"`` and a
    ``valid_to`` date): the comparison gives each study the edition in force on its
    study date (``valid_from``/``valid_to``, :func:`kerma.analysis.drl.compare_with_drls`),
    so a study dated before a table's publication is compared with the edition then in
    force. When a region has neither, its most recent year is used instead (so a
    region whose undated set is wholly superseded still answers, and the status column
    says so). The winning
    region supplies all the exam's rows, clinical-indication rows included. When its
    rows are all clinical-indication rows (``indication_exam``; e.g. the EU set's
    ``CT Head`` is only *Stroke*), the next region with an anatomical row for the exam
    also supplies that row, so studies without a known indication can be compared:
    ``"EU,US"`` gives EU's stroke DRL and US's routine head DRL.

    Parameters
    ----------
    drls : pandas.DataFrame
        Output of :func:`load_drls`.
    drl_set : str or sequence of str
        Region codes in priority order (``Settings.drl_set``, e.g. ``"EU"`` or
        ``"UK,EU"``).
    statuses : sequence of str, optional
        Preferred statuses (default ``("current",)``).

    Returns
    -------
    pandas.DataFrame
        The selected rows, same columns as :func:`load_drls`.

    Raises
    ------
    kerma.errors.ConfigurationError
        When none of the region codes exists in ``drls``.
    """
    known = set(drls["drl_region"].astype(str))
    # region codes match whatever their case ("be" is BE); a code that names no set is
    # refused, also in a priority list ("EU,DX" must not silently drop the second set)
    by_upper = {region.upper(): region for region in known}
    regions = [by_upper.get(region.upper(), region) for region in parse_drl_set(drl_set)]
    unknown = [region for region in regions if region not in known]
    if unknown or not regions:
        raise ConfigurationError(
            f"Unable to select the DRL set {','.join(regions)!r}: no such region"
            f"{' ' + ', '.join(unknown) if unknown and len(regions) > 1 else ''}. "
            f"Known sets: {', '.join(sorted(known))} (see `kerma drl sets`)."
        )
    key = ["standard_exam", "quantity", "patient_group"]
    chosen: list[pd.DataFrame] = []
    # exam key -> True when its rows are complete, False when only indication rows
    # have been taken so far (a later region may add the anatomical row).
    taken: dict[tuple[str, ...], bool] = {}
    for region in regions:
        rows = drls[drls["drl_region"] == region]
        for group_key, group in rows.groupby(key, sort=False, dropna=False):
            tkey = tuple(str(v) for v in group_key)
            if taken.get(tkey, False):
                continue
            if tkey in taken:
                group = group[~_is_indication_row(group)]
                if group.empty:
                    continue
            preferred = _editions(group, statuses)
            chosen.append(preferred)
            taken[tkey] = bool((~_is_indication_row(preferred)).any())
    if not chosen:
        return drls.iloc[0:0]
    return pd.concat(chosen, ignore_index=True)


def _editions(group: pd.DataFrame, statuses: Sequence[str]) -> pd.DataFrame:
    """Return the rows of one region and exam that the comparison may use.

    The rows with one of ``statuses`` and the superseded rows with a ``valid_to`` date
    (each compared only with studies of its validity period); without either, the
    rows of the most recent year (legacy undated tables).
    """
    preferred = group["status"].isin(statuses)
    valid_to = group["valid_to"] if "valid_to" in group.columns else None
    dated = (
        (group["status"] == STATUS_SUPERSEDED) & valid_to.notna()
        if valid_to is not None
        else pd.Series(False, index=group.index)
    )
    kept = group[preferred | dated]
    if kept.empty:
        kept = group[group["drl_year"] == group["drl_year"].max()]
    return kept


def _is_indication_row(drls: pd.DataFrame) -> pd.Series:
    """Return which DRL rows are clinical-indication rows (non-empty ``indication_exam``)."""
    if "indication_exam" not in drls.columns:
        return pd.Series(False, index=drls.index)
    return drls["indication_exam"].fillna("").astype(str) != ""


def list_drl_sets(drls: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per DRL set (region, source, year) with what it covers.

    Parameters
    ----------
    drls : pandas.DataFrame, optional
        Output of :func:`load_drls`; the packaged tables when omitted.

    Returns
    -------
    pandas.DataFrame
        One row per (region, year, table). Columns ``drl_region``, ``drl_source`` (the
        fullest citation string of the rows), ``drl_year``, ``drl_table``, ``n_rows``
        (DRL values),
        ``modalities`` (e.g. ``"CT, RF/XA"``), ``quantities``, ``statuses`` and
        ``verification`` (grades present, comma-joined), sorted by region and year.
    """
    if drls is None:
        drls = load_drls()

    def join(values: pd.Series) -> str:
        return ", ".join(sorted({str(v) for v in values.dropna() if str(v)}))

    def longest(values: pd.Series) -> str:
        return max((str(v) for v in values.dropna()), key=len, default="")

    grouped = drls.groupby(["drl_region", "drl_year", "drl_table"], dropna=False)
    out = grouped.agg(
        drl_source=("drl_source", longest),
        n_rows=("drl_value", "size"),
        modalities=("modality_family", join),
        quantities=("quantity", join),
        statuses=("status", join),
        verification=("verification", join),
    ).reset_index()
    out = out.sort_values(["drl_region", "drl_year"], ascending=[True, False])
    columns = ["drl_region", "drl_source", "drl_year", "drl_table", "n_rows", "modalities"]
    columns += ["quantities", "statuses", "verification"]
    return out[columns].reset_index(drop=True)


#: Columns of :func:`drl_coverage`.
COVERAGE_COLUMNS: Final[tuple[str, ...]] = (
    "drl_region",
    "modalities",
    "n_exams",
    "exams",
    "editions",
    "n_rows",
    *(f"share_{grade}" for grade in (*VERIFICATION_GRADES, "site")),
)


def _edition_label(region: str, year: object, valid_from: object, valid_to: object) -> str:
    """Return ``"2018 (from 2018-01-26)"``-style text for one edition of a set."""
    year_text = "" if pd.isna(year) else str(int(str(year)))
    dates = []
    if pd.notna(valid_from):
        dates.append(f"from {pd.Timestamp(valid_from).date().isoformat()}")
    if pd.notna(valid_to):
        dates.append(f"to {pd.Timestamp(valid_to).date().isoformat()}")
    label = year_text or "undated"
    return f"{label} ({', '.join(dates)})" if dates else label


def drl_coverage(drls: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return per DRL set (region) what it covers and how well its rows are verified.

    Parameters
    ----------
    drls : pandas.DataFrame, optional
        Output of :func:`load_drls`; the packaged tables when omitted.

    Returns
    -------
    pandas.DataFrame
        One row per region, sorted by region: ``drl_region``; ``modalities`` (families
        with rows, e.g. ``"CT, DX, MG"``); ``n_exams`` (distinct exams, a clinical
        indication counting as its own exam) and ``exams`` (their names joined with
        ``"; "``); ``editions`` (each year of the set with its validity dates, newest
        first, e.g. ``"2018 (from 2018-01-26); undated (to 2018-01-25)"``);
        ``n_rows`` (DRL values: one per published row and quantity, as
        :func:`load_drls` counts them); and ``share_primary``,
        ``share_primary-reproduction``, ``share_secondary``, ``share_unverified``,
        ``share_site`` (fraction 0-1 of the set's rows at each verification grade of
        ``SOURCES.md``; site tables are graded ``"site"``).
    """
    if drls is None:
        drls = load_drls()
    rows = []
    keyed = drls.assign(
        _exam=drls["indication_exam"]
        .fillna("")
        .astype(str)
        .where(lambda s: s != "", drls["standard_exam"].astype(str))
    )
    for region, group in keyed.groupby("drl_region", sort=True):
        editions = (
            group[["drl_year", "valid_from", "valid_to"]]
            .drop_duplicates()
            .sort_values(["drl_year", "valid_from"], ascending=False, na_position="last")
        )
        grades = group["verification"].fillna("unverified").astype(str)
        row: dict[str, object] = {
            "drl_region": str(region),
            "modalities": ", ".join(sorted(set(group["modality_family"].astype(str)))),
            "n_exams": int(group["_exam"].nunique()),
            "exams": "; ".join(sorted(set(group["_exam"]))),
            "editions": "; ".join(
                dict.fromkeys(
                    _edition_label(str(region), y, f, to)
                    for y, f, to in editions.itertuples(index=False)
                )
            ),
            "n_rows": len(group),
        }
        for grade in (*VERIFICATION_GRADES, "site"):
            row[f"share_{grade}"] = float((grades == grade).mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))


def load_k_factors() -> pd.DataFrame:
    """Return the CT DLP→effective-dose coefficient table as published.

    Source: ``kerma/reference/ct_effective_dose_k_factors.csv`` (sets: EUR 16262/AAPM
    Report 96 (ICRP 60), Lee et al. Med Phys 2012 Table XII (ICRP 60 and 103), an ICRP
    103 adult set (secondary), Huda et al. 2008).

    Returns
    -------
    pandas.DataFrame
        Columns ``source``, ``icrp_basis``, ``body_region``, ``age_years`` (str:
        ``0``, ``1``, ``5``, ``10``, ``15``, ``adult``), ``kvp`` (str), ``sex``,
        ``k_mSv_per_mGycm`` (mSv per mGy·cm), ``dlp_reference_phantom``,
        ``verification``, ``source_ref``, ``notes``.
    """
    return _read_csv(reference_path("ct_effective_dose_k_factors.csv"))


def load_ssde_coefficients() -> pd.DataFrame:
    """Return the AAPM Report 204 exponential-fit coefficients, one row per phantom.

    Source: ``kerma/reference/ssde_fit_coefficients.csv`` (AAPM Report 204, 2011;
    verification ``secondary``: identical in at least five public implementations).

    Returns
    -------
    pandas.DataFrame
        Columns ``phantom_cm`` (16, 32), ``a``, ``b`` (per cm), ``valid_dw_min_cm``,
        ``valid_dw_max_cm``, ``source``, ``verification``, ``notes``, indexed by
        ``phantom_cm``.
    """
    table = _read_csv(reference_path("ssde_fit_coefficients.csv"))
    return table.set_index("phantom_cm", drop=False)


def load_alert_levels(*, category: str | None = None) -> pd.DataFrame:
    """Return the per-patient notification, alert and follow-up thresholds as published.

    Source: ``kerma/reference/alert_levels.csv`` (AAPM CT Dose Check 2011, NCRP Report
    No. 168 (2010) substantial radiation dose levels, The Joint Commission sentinel
    event, UK IR(ME)R SAUE notification criteria, ACR accreditation; see
    ``alert_levels.md`` and ``SOURCES.md``). These are not DRLs: they are triggers for
    one patient or one procedure.

    Parameters
    ----------
    category : str, optional
        Keep only rows of this ``category``, e.g.
        ``"substantial radiation dose level (SRDL)"`` (exact text of the table).

    Returns
    -------
    pandas.DataFrame
        Columns ``jurisdiction``, ``issuer``, ``source``, ``year``, ``modality``,
        ``category``, ``applies_to``, ``quantity`` (as published, e.g. ``"Peak skin
        dose"``), ``operator`` (``>`` or ``>=``), ``threshold_value`` (float, in
        ``unit``), ``unit`` (``mGy``, ``Gy``, ``Gy.cm2``, ``min``, ``mSv`` ...),
        ``phantom_cm``, ``verification``, ``source_ref``, ``notes``.
    """
    table = _read_csv(reference_path("alert_levels.csv"))
    if category is not None:
        table = table[table["category"] == category].reset_index(drop=True)
    return table


@cache
def reference_version(name: str) -> str:
    """Return ``"<file> sha256:<first 12 hex digits>"`` of a packaged reference table.

    Derived values record it (``study.ssde_reference``, ``effective_dose_reference``), so
    a value can be traced to the exact table content it was computed with.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the table is not part of the installed package.
    """
    path = reference_path(name)
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"

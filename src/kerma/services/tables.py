"""Tables for people and spreadsheets: display units and CSV files from the one label table.

Frames and rows carry canonical names and units (``dap_total_gym2`` in Gy·m²). CSV
files keep them by default; ``units="display"`` writes the label with the display unit
as header (``"KAP total (Gy·cm²)"``) and converted values, from
:data:`kerma.units.QUANTITIES`. Long-format frames (a ``quantity`` column, e.g.
statistics, DRL comparisons, the summary) have their value columns converted row by
row, and ``quantity``/``label``/``unit`` say the display unit. Numbers are written with
:data:`kerma.units.CSV_SIGNIFICANT_DIGITS` significant digits, without float noise.

May import ``kerma.units`` (pandas only inside the frame functions).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from kerma.files import open_private
from kerma.units import CSV_FLOAT_FORMAT, QUANTITIES, format_number

if TYPE_CHECKING:
    import pandas as pd

Units = Literal["canonical", "display"]

#: Value columns of long-format frames, converted by the row's ``quantity``.
LONG_VALUE_COLUMNS: Final[tuple[str, ...]] = (
    "mean",
    "std",
    "min",
    "p25",
    "median",
    "p75",
    "p95",
    "max",
    "typical_value",
    "sample_median",
    "drl_value",
    "local_drl",
    "median_of_room_medians",
)


def check_units(units: str) -> Units:
    """Return ``units`` when it is ``canonical`` or ``display``.

    Raises
    ------
    ValueError
        Otherwise.
    """
    if units not in ("canonical", "display"):
        raise ValueError(f"Unable to write units {units!r}: use canonical or display.")
    return units  # type: ignore[return-value]


def header(name: str, units: Units) -> str:
    """Return a column's header: its name, or its display label (``units="display"``)."""
    quantity = QUANTITIES.get(name)
    return quantity.display_label if units == "display" and quantity else name


def cell(name: str, value: Any, units: Units = "canonical") -> Any:
    """Return one CSV cell: numbers at 10 significant digits, converted for display."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        quantity = QUANTITIES.get(name)
        if units == "display" and quantity:
            value *= quantity.factor
        return format_number(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def write_rows_csv(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    path: Path | str,
    *,
    units: Units = "canonical",
) -> int:
    """Write dict rows to a CSV file (streamed, no pandas); return the number of rows."""
    check_units(units)
    n = 0
    with open_private(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([header(c, units) for c in columns])
        for row in rows:
            writer.writerow([cell(c, row.get(c), units) for c in columns])
            n += 1
    return n


def display_frame(frame: pd.DataFrame, *, rename: bool = True) -> pd.DataFrame:
    """Return ``frame`` with values in display units (see the module docstring).

    Columns named after a quantity are converted (and, with ``rename``, headed by its
    display label, ``"KAP total (Gy·cm²)"``). In a long-format frame (a ``quantity``
    column) the :data:`LONG_VALUE_COLUMNS` are converted row by row, ``quantity``
    becomes the quantity's label (``"KAP"``), ``unit`` its display unit and ``label``
    (when present) its display label.
    """
    import pandas as pd

    out = frame.copy()
    if "quantity" in out.columns:
        known = out["quantity"].map(QUANTITIES.get)
        factors = known.map(lambda q: q.factor if q is not None else 1.0).astype(float)
        for name in LONG_VALUE_COLUMNS:
            if name in out.columns:
                out[name] = pd.to_numeric(out[name], errors="coerce") * factors
        if "unit" in out.columns:
            out["unit"] = [
                q.display_unit if q is not None else u
                for q, u in zip(known, out["unit"], strict=True)
            ]
        if "label" in out.columns:
            out["label"] = [
                q.display_label if q is not None else lab
                for q, lab in zip(known, out["label"], strict=True)
            ]
        out["quantity"] = [
            q.label if q is not None else name
            for q, name in zip(known, out["quantity"], strict=True)
        ]
    renames = {}
    for name in out.columns:
        quantity = QUANTITIES.get(str(name))
        if quantity is not None:
            out[name] = pd.to_numeric(out[name], errors="coerce") * quantity.factor
            renames[name] = quantity.display_label
    return out.rename(columns=renames) if rename else out


def write_frame_csv(frame: pd.DataFrame, path: Path | str, *, units: Units = "canonical") -> int:
    """Write a frame to CSV (canonical names and units, or display); return its rows.

    The file is created (or truncated) with mode 0600 whatever the umask
    (:func:`kerma.files.open_private`): exports carry pseudonyms and Study Instance UIDs
    (``docs/privacy.md``).
    """
    check_units(units)
    shown = display_frame(frame) if units == "display" else frame
    with open_private(path, "w", encoding="utf-8", newline="") as handle:
        shown.to_csv(handle, index=False, float_format=CSV_FLOAT_FORMAT)
    return len(frame)

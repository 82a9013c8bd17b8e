"""Plausibility ranges of dose and patient values: flag for review, or reject (issue #11).

A value read correctly can still be impossible (a negative dose) or implausible (a
CTDIvol of 1e9 mGy, a weight of 5,000 kg, a DAP 10⁵ times a radiography room's
maximum: a unit or scaling fault of the device). The ranges are a table per quantity
and modality, shipped as ``kerma/reference/plausibility.csv`` with its sources in
``plausibility.md``:

- ``action`` ``reject``: a value outside cannot be physical (a dose, activity, weight,
  height or age below 0). The object is rejected with the reason (kept in the archive,
  listed by ``kerma rejects``), never stored with a wrong number;
- ``action`` ``flag``: a value outside is beyond the limits of real equipment or
  patients. It is stored as read, with a warning on the report, and its study is
  flagged for review (``plausibility_flag`` rows; ``kerma studies --flagged``).

A value that is not a finite number (NaN, infinity: an unreadable value) is always a
flag, whatever the table says: it is stored empty, but never silently.

A site may override the table with its own CSV (setting ``KERMA_PLAUSIBILITY``, same
columns): a site row replaces the shipped row of the same quantity, modality and
action; a site row with neither ``min`` nor ``max`` switches the shipped row off.

Pure: no database, no DICOM. May import ``kerma.records``, ``kerma.units`` and
``kerma.errors``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Final

from kerma.errors import ConfigurationError
from kerma.records import Accumulated, AccumulatedPlane, DoseReport, IrradiationEvent, StudyInfo
from kerma.units import LABELS

#: The shipped table (package data, with ``plausibility.md`` beside it).
TABLE_NAME: Final = "plausibility.csv"
#: Columns of the table (a site file has the same).
COLUMNS: Final = ("quantity", "modality", "min", "max", "action", "source")
#: ``modality`` of a row that applies to every modality.
ANY_MODALITY: Final = "*"

_STUDY_FIELDS = frozenset(f.name for f in dataclasses.fields(StudyInfo))
_ACCUMULATED_FIELDS = frozenset(f.name for f in dataclasses.fields(Accumulated))
_PLANE_FIELDS = frozenset(f.name for f in dataclasses.fields(AccumulatedPlane))
_EVENT_FIELDS = frozenset(f.name for f in dataclasses.fields(IrradiationEvent))
#: Fields read per record part, in a fixed order (numbers only are checked).
_STUDY_ORDER = tuple(sorted(_STUDY_FIELDS))
_ACCUMULATED_ORDER = tuple(sorted(_ACCUMULATED_FIELDS - {"planes"}))
_PLANE_ORDER = tuple(sorted(_PLANE_FIELDS))
_EVENT_ORDER = tuple(sorted(_EVENT_FIELDS - {"xray_sources", "xray_filters"}))


class Action(StrEnum):
    """What a value outside a range leads to."""

    FLAG = "flag"
    REJECT = "reject"


@dataclass(frozen=True)
class PlausibilityRange:
    """One row of the table: the range of a quantity for a modality.

    Attributes
    ----------
    quantity : str
        A record field with its canonical unit in the name (``ctdivol_mgy``,
        ``dap_gym2``, ``patient_weight_kg`` ...).
    modality : str
        ``CT``, ``DX``, ``MG`` ...; ``*`` for every modality.
    min, max : float or None
        The range, both ends included, in the quantity's canonical unit; ``None``: open.
    action : Action
        ``reject`` or ``flag``.
    source : str
        Keys of the sources in ``plausibility.md``.
    """

    quantity: str
    modality: str
    min: float | None
    max: float | None
    action: Action
    source: str

    def applies_to(self, modality: str | None) -> bool:
        """Return whether the row covers ``modality`` (any for ``*``)."""
        return self.modality == ANY_MODALITY or self.modality == (modality or "").upper()

    def outside(self, value: float) -> bool:
        """Return whether a finite ``value`` lies outside ``[min, max]``."""
        return (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        )


@dataclass(frozen=True)
class Finding:
    """A value outside its range (or not a finite number).

    Attributes
    ----------
    quantity : str
        The record field.
    where : str
        ``study``, ``accumulated``, ``plane 1`` or ``event 3``.
    value : float
        The value as read (NaN or infinite for an unreadable value).
    action : Action
        ``reject`` (the object is not stored) or ``flag`` (stored, study flagged).
    message : str
        The sentence shown to the user (warning, review list or rejection reason).
    range : PlausibilityRange or None
        The row the value is outside of (``None`` for a value that is not finite).
    """

    quantity: str
    where: str
    value: float
    action: Action
    message: str
    range: PlausibilityRange | None = None

    @property
    def value_text(self) -> str:
        """Return the value as text (``'nan'``, ``'1e+09'``)."""
        return f"{self.value:g}"


def _number(text: str, *, column: str, where: str) -> float | None:
    """Return a table cell as a number (``None`` when empty)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"Unable to read the plausibility table {where}: {column} {text!r} is not a number."
        ) from exc
    if math.isnan(value):
        raise ConfigurationError(
            f"Unable to read the plausibility table {where}: {column} must not be NaN."
        )
    return value


def parse_ranges(text: str, *, name: str) -> list[PlausibilityRange]:
    """Return the rows of a plausibility CSV.

    Parameters
    ----------
    text : str
        CSV with the columns of :data:`COLUMNS` (others are ignored).
    name : str
        How messages name the file.

    Raises
    ------
    kerma.errors.ConfigurationError
        When a column is missing, a quantity is not a record field, a limit is not a
        number or an action is not ``flag`` or ``reject``.
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigurationError(
            f"Unable to read the plausibility table {name}: columns {', '.join(missing)} are "
            f"missing; it needs {', '.join(COLUMNS)}."
        )
    known = _STUDY_FIELDS | _ACCUMULATED_FIELDS | _PLANE_FIELDS | _EVENT_FIELDS
    rows = []
    for line, row in enumerate(reader, start=2):
        where = f"{name} line {line}"
        quantity = (row["quantity"] or "").strip()
        if not quantity or quantity.startswith("#"):
            continue
        if quantity not in known:
            raise ConfigurationError(
                f"Unable to read the plausibility table {where}: {quantity!r} is not a "
                "quantity Kerma extracts (use a field name such as ctdivol_mgy or dap_gym2)."
            )
        action = (row["action"] or "").strip().lower()
        if action not in {a.value for a in Action}:
            raise ConfigurationError(
                f"Unable to read the plausibility table {where}: action {action!r} is not "
                "'flag' or 'reject'."
            )
        rows.append(
            PlausibilityRange(
                quantity=quantity,
                modality=(row["modality"] or ANY_MODALITY).strip().upper() or ANY_MODALITY,
                min=_number(row["min"] or "", column="min", where=where),
                max=_number(row["max"] or "", column="max", where=where),
                action=Action(action),
                source=(row["source"] or "").strip(),
            )
        )
    return rows


def shipped_ranges() -> list[PlausibilityRange]:
    """Return the shipped table (``kerma/reference/plausibility.csv``)."""
    text = resources.files("kerma").joinpath("reference", TABLE_NAME).read_text("utf-8")
    return parse_ranges(text, name=TABLE_NAME)


def load_ranges(site_path: Path | None = None) -> tuple[PlausibilityRange, ...]:
    """Return the table in force: the shipped rows, overridden by a site file.

    Parameters
    ----------
    site_path : pathlib.Path, optional
        A site CSV (setting ``KERMA_PLAUSIBILITY``). Its rows replace the shipped rows
        of the same (quantity, modality, action); a row with neither ``min`` nor ``max``
        removes it; other rows are added.

    Raises
    ------
    kerma.errors.ConfigurationError
        When the site file cannot be read or is not a valid table.
    """
    rows = {(r.quantity, r.modality, r.action): r for r in shipped_ranges()}
    if site_path is not None:
        try:
            text = Path(site_path).read_text("utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"Unable to read the plausibility table {site_path} (KERMA_PLAUSIBILITY): "
                f"{exc.strerror or exc}."
            ) from exc
        for row in parse_ranges(text, name=str(site_path)):
            key = (row.quantity, row.modality, row.action)
            if row.min is None and row.max is None:
                rows.pop(key, None)
            else:
                rows[key] = row
    return tuple(rows.values())


def _values(report: DoseReport) -> Iterator[tuple[str, str, str | None, object]]:
    """Yield (where, quantity, modality, value) of every number of a report."""
    modality = report.study.modality
    for name in _STUDY_ORDER:
        yield "study", name, modality, getattr(report.study, name)
    for name in _ACCUMULATED_ORDER:
        yield "accumulated", name, modality, getattr(report.accumulated, name)
    for n, plane in enumerate(report.accumulated.planes, start=1):
        for name in _PLANE_ORDER:
            yield f"plane {n}", name, modality, getattr(plane, name)
    for n, event in enumerate(report.events, start=1):
        event_modality = event.modality or modality
        values = event.__dict__
        for name in _EVENT_ORDER:
            value = values[name]
            if value is not None and not isinstance(value, str):
                yield f"event {n}", name, event_modality, value


def _label(quantity: str) -> str:
    """Return how a message names a quantity: its display label and field name."""
    label = LABELS.get(quantity)
    return f"{label} [{quantity}]" if label else quantity


def _limit(value: float | None) -> str:
    """Return a limit as text."""
    return "-" if value is None else f"{value:g}"


def check_report(report: DoseReport, ranges: Iterable[PlausibilityRange]) -> list[Finding]:
    """Return the values of a report outside their ranges, rejections first.

    Parameters
    ----------
    report : DoseReport
        An extracted record (canonical units).
    ranges : iterable of PlausibilityRange
        The table in force (:func:`load_ranges`).

    Returns
    -------
    list of Finding
        One per value and row it falls outside of (a value outside a ``reject`` row is
        not also reported against a ``flag`` row); every NaN or infinite number is a
        ``flag``. Empty when every value is plausible.
    """
    by_quantity: dict[str, list[PlausibilityRange]] = {}
    for row in ranges:
        by_quantity.setdefault(row.quantity, []).append(row)
    rejected: list[Finding] = []
    flagged: list[Finding] = []
    for where, quantity, modality, value in _values(report):
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        number = float(value)
        if not math.isfinite(number):
            flagged.append(
                Finding(
                    quantity,
                    where,
                    number,
                    Action.FLAG,
                    f"{where}: {_label(quantity)} is {number!r}, not a finite number (an "
                    "unreadable value); stored empty and the study flagged for review",
                )
            )
            continue
        rows = [r for r in by_quantity.get(quantity, ()) if r.applies_to(modality)]
        for row in sorted(rows, key=lambda r: r.action is not Action.REJECT):
            if not row.outside(number):
                continue
            bound = "below" if row.min is not None and number < row.min else "above"
            limit = row.min if bound == "below" else row.max
            scope = "any modality" if row.modality == ANY_MODALITY else row.modality
            if row.action is Action.REJECT:
                rejected.append(
                    Finding(
                        quantity,
                        where,
                        number,
                        Action.REJECT,
                        f"{where}: {_label(quantity)} {number:g} is {bound} {_limit(limit)}, "
                        f"which cannot be physical (plausibility table, {scope}; source "
                        f"{row.source})",
                        row,
                    )
                )
            else:
                flagged.append(
                    Finding(
                        quantity,
                        where,
                        number,
                        Action.FLAG,
                        f"{where}: {_label(quantity)} {number:g} is {bound} "
                        f"{_limit(limit)}, the plausible limit for {scope} (plausibility "
                        f"table; source {row.source}); stored and the study flagged for review",
                        row,
                    )
                )
            break
    return rejected + flagged


def rejection_reason(source: str, sop_instance_uid: str | None, findings: list[Finding]) -> str:
    """Return the rejection reason of an object with impossible values.

    Starts with ``"Rejected as implausible"`` (the ``implausible`` group of ``kerma
    rejects``).
    """
    shown = "; ".join(f.message for f in findings if f.action is Action.REJECT)
    return (
        f"Rejected as implausible: {source} ({sop_instance_uid or 'no SOP Instance UID'}) "
        f"holds values that cannot be physical: {shown}. The object is kept in the archive; "
        "have the device or its export corrected and send it again, or, if the table is "
        "wrong for your site, override the row (KERMA_PLAUSIBILITY) and run 'kerma reprocess'."
    )


__all__ = [
    "ANY_MODALITY",
    "COLUMNS",
    "Action",
    "Finding",
    "PlausibilityRange",
    "check_report",
    "load_ranges",
    "parse_ranges",
    "rejection_reason",
    "shipped_ranges",
]

"""Alert rules: loading rule packs (TOML) and evaluating them on studies (pure).

A rule pack is a TOML file with ``pack``, ``title`` and a list of ``[[rule]]`` tables
(``docs/alerts.md``; shipped packs in ``kerma/reference/alert_packs/``). Each rule has
a ``kind``:

``threshold``
    a stored or derived quantity of a study (``level = "study"``, a study summary
    column such as ``dose_rp_total_gy``) or of an irradiation event (``level =
    "event"``, e.g. ``ctdivol_mgy`` per CT series) compared with a fixed value;
``drl_multiple``
    the quantity compared with ``factor`` x the DRL of the study's (or the event's)
    standard exam in the selected DRL set (:func:`kerma.analysis.reference.select_drls`);
``device_history``
    a study quantity compared with ``factor`` x the median of the previous ``history``
    studies of the same standard exam on the same device;
``drl_group``
    StrlSchV 2018 Anlage 14 Part I number 1: the mean of the last ``group_size``
    studies of the same exam on one device above ``mean_factor`` x DRL once one of
    them was above ``trigger_factor`` x DRL;
``cumulative``
    the sum of a study quantity (or the number of studies, ``quantity = "count"``) of
    one patient (pseudonym) over ``window_days`` ending with the study.

The scope of a rule (``[rule.scope]``) selects modality families (``CT``, ``RF/XA``,
``DX``, ``MG``, ``NM``), devices and standard exams (regular expressions), an
acquisition protocol pattern, an age band (``min_age_years`` inclusive,
``max_age_years`` exclusive; a rule with an upper age bound skips unknown ages), and any
other text column through ``[rule.scope.match]`` / ``[rule.scope.exclude]``. Non-patient
(QA, phantom) studies are never evaluated.

A rule's version is the first 16 hex digits of the SHA-256 of its normalised
definition (:attr:`AlertRule.version`): changing what a rule decides makes a new
version, changing its title, source, note or recipients does not.

This module never opens a session: the service (:mod:`kerma.services.alerts`) reads
the frames and histories and writes the alerts. May import ``kerma.units``,
``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import pandas as pd

from kerma.analysis.reference import REFERENCE_DIR, REFERENCE_PACKAGE, drl_exam_candidates
from kerma.errors import ConfigurationError
from kerma.units import QUANTITIES, conversion_factor

#: Rule kinds.
RULE_KINDS: Final = ("threshold", "drl_multiple", "device_history", "drl_group", "cumulative")

#: Comparison operators a rule may use.
OPERATORS: Final = (">", ">=")

#: Pack ids of the packs shipped in ``kerma/reference/alert_packs``.
DEFAULT_PACK_FILE: Final = "kerma_default.toml"
ANLAGE14_PACK_FILE: Final = "de_strlschv_anlage14.toml"
ANLAGE14_PACK_ID: Final = "DE-StrlSchV-Anlage14"

#: Study summary columns a study-level rule may compare (canonical units).
STUDY_QUANTITIES: Final = (
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "ctdivol_max_mgy",
    "ssde_mgy",
    "effective_dose_msv",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "administered_activity_total_mbq",
    "peak_skin_dose_mgy",
)

#: Irradiation event columns an event-level rule may compare (canonical units).
EVENT_QUANTITIES: Final = (
    "ctdivol_mgy",
    "dlp_mgycm",
    "dap_gym2",
    "dose_rp_gy",
    "agd_mgy",
    "entrance_dose_mgy",
    "administered_activity_mbq",
)

#: Text columns a scope may match, per level (events also see their study's columns).
STUDY_TEXT_FIELDS: Final = (
    "modality",
    "modality_family",
    "device_name",
    "standard_exam",
    "study_description",
    "acquisition_protocols",
    "patient_sex",
)
EVENT_TEXT_FIELDS: Final = (
    "event_modality",
    "acquisition_protocol",
    "ct_acquisition_type",
    "ctdiw_phantom_type",
    "image_view",
    "laterality",
    "event_standard_exam",
)

#: Canonical UCUM unit of each canonical display unit of :data:`kerma.units.QUANTITIES`.
_UCUM_OF: Final[dict[str, str]] = {
    "mGy": "mGy",
    "Gy": "Gy",
    "mGy·cm": "mGy.cm",
    "Gy·m²": "Gy.m2",
    "s": "s",
    "MBq": "MBq",
    "mSv": "mSv",
    "mm": "mm",
}

#: Subject kinds of an alert: what it is about.
SUBJECT_STUDY: Final = "study"
SUBJECT_GROUP: Final = "device_exam"
SUBJECT_PATIENT: Final = "patient"


@dataclass(frozen=True)
class RuleScope:
    """Where a rule applies (``[rule.scope]``); every part optional.

    Attributes
    ----------
    modalities : tuple of str
        Modality families (``CT``, ``RF/XA``, ``DX``, ``MG``, ``NM``) or modalities.
    devices, exams : tuple of str
        Regular expressions (case-insensitive, searched) on the device name and on the
        standard exam (the event's exam for DX/MG events); a study without a value
        does not match.
    protocol : str or None
        Regular expression on the acquisition protocol (event level) or the study's
        joined protocols (study level).
    min_age_years, max_age_years : float or None
        Age band, lower-inclusive and upper-exclusive, in years.
    match, exclude : tuple of (field, regex)
        Further text columns that must match / must not match.
    """

    modalities: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    exams: tuple[str, ...] = ()
    protocol: str | None = None
    min_age_years: float | None = None
    max_age_years: float | None = None
    match: tuple[tuple[str, str], ...] = ()
    exclude: tuple[tuple[str, str], ...] = ()

    def normalised(self) -> dict[str, Any]:
        """Return the scope as plain data (for the rule version)."""
        return {
            "modalities": sorted(self.modalities),
            "devices": list(self.devices),
            "exams": list(self.exams),
            "protocol": self.protocol,
            "min_age_years": self.min_age_years,
            "max_age_years": self.max_age_years,
            "match": [list(m) for m in self.match],
            "exclude": [list(m) for m in self.exclude],
        }


@dataclass(frozen=True)
class AlertRule:
    """One alert rule of a pack (thresholds in the quantity's canonical unit).

    Attributes
    ----------
    rule_id : str
        Unique over the loaded packs.
    pack : str
        Pack id (``kerma-default``, ``DE-StrlSchV-Anlage14`` ...).
    title, source, source_ref, basis, note : str
        What the rule checks, the citation of its threshold, the key of
        ``kerma/reference/SOURCES.md``, ``published`` / ``law`` / ``site policy``, and
        the reading taken where the source needs interpretation.
    kind, level : str
        See the module docstring; level ``study`` or ``event``.
    quantity : str
        Compared column (canonical unit in the name) or ``count``.
    operator : str
        ``>`` or ``>=``.
    threshold : float or None
        Fixed threshold in the canonical unit (``threshold`` and ``cumulative``).
    unit : str
        Canonical unit of ``quantity`` (for display).
    threshold_as_written : str
        The threshold as the pack wrote it (``"500 Gy.cm2"``).
    factor : float or None
        Multiple of the DRL or of the device median.
    drl_quantity, drl_set : str or None
        DRL quantity (``dlp_mgycm`` ...) and the DRL set of the rule (default: the
        registry's ``KERMA_DRL_SET``).
    history, min_history : int
        Device history length and the fewest previous studies needed.
    group_size, trigger_factor, mean_factor
        Anlage 14 group criterion parameters.
    window_days : int
        Cumulative window.
    scope : RuleScope
    recipients : tuple of str
        E-mail addresses to notify (used by the notification module).
    """

    rule_id: str
    pack: str
    title: str
    kind: str
    quantity: str
    operator: str
    unit: str
    source: str
    source_ref: str = ""
    basis: str = ""
    note: str = ""
    level: str = "study"
    threshold: float | None = None
    threshold_as_written: str = ""
    factor: float | None = None
    drl_quantity: str | None = None
    drl_set: str | None = None
    history: int = 20
    min_history: int = 5
    group_size: int = 20
    trigger_factor: float = 3.0
    mean_factor: float = 2.0
    window_days: int = 365
    scope: RuleScope = field(default_factory=RuleScope)
    recipients: tuple[str, ...] = ()

    def normalised(self) -> dict[str, Any]:
        """Return what the rule decides as plain data (the input of :attr:`version`)."""
        data: dict[str, Any] = {
            "id": self.rule_id,
            "kind": self.kind,
            "level": self.level,
            "quantity": self.quantity,
            "operator": self.operator,
            "scope": self.scope.normalised(),
        }
        if self.kind in ("threshold", "cumulative"):
            data["threshold"] = self.threshold
        if self.kind in ("drl_multiple", "device_history"):
            data["factor"] = self.factor
        if self.kind in ("drl_multiple", "drl_group"):
            data["drl_quantity"] = self.drl_quantity
            data["drl_set"] = self.drl_set
        if self.kind == "device_history":
            data["history"] = self.history
            data["min_history"] = self.min_history
        if self.kind == "drl_group":
            data["group"] = [self.group_size, self.trigger_factor, self.mean_factor]
        if self.kind == "cumulative":
            data["window_days"] = self.window_days
        return data

    @property
    def version(self) -> str:
        """Return the rule version: 16 hex digits of SHA-256 of :meth:`normalised`."""
        text = json.dumps(self.normalised(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def threshold_text(self) -> str:
        """Return the threshold in words (``"> 80 mGy"``, ``">= 2 x DRL"``)."""
        if self.kind == "drl_multiple":
            return f"{self.operator} {self.factor:g} x DRL ({self.drl_quantity})"
        if self.kind == "device_history":
            return f"{self.operator} {self.factor:g} x median of last {self.history} on device"
        if self.kind == "drl_group":
            return (
                f"mean of last {self.group_size} > {self.mean_factor:g} x DRL after one "
                f"> {self.trigger_factor:g} x DRL ({self.drl_quantity})"
            )
        written = self.threshold_as_written or f"{self.threshold:g} {self.unit}"
        if self.kind == "cumulative":
            what = "studies" if self.quantity == "count" else "sum"
            return f"{what} over {self.window_days} d {self.operator} {written}"
        return f"{self.operator} {written}"


@dataclass(frozen=True)
class RuleSet:
    """The rules in force: every loaded pack's rules, in pack order."""

    rules: tuple[AlertRule, ...]
    sources: tuple[str, ...] = ()

    def get(self, rule_id: str) -> AlertRule | None:
        """Return the rule of an id, or ``None``."""
        for rule in self.rules:
            if rule.rule_id == rule_id:
                return rule
        return None

    def __len__(self) -> int:
        """Return the number of rules."""
        return len(self.rules)


@dataclass
class Crossing:
    """One rule crossed by one subject (the input of an alert record).

    Attributes
    ----------
    rule : AlertRule
    study_id : int
        The study the crossing was found on.
    subject_kind, subject_key : str
        ``study`` (``study:<id>``), ``device_exam`` (``group:<device>:<exam>:<trigger
        study>``) or ``patient`` (``patient:<id>:<first study>``).
    value : float
        The compared value (the largest crossing event's at event level; the mean of
        the window for ``drl_group``; the sum or count for ``cumulative``), canonical.
    threshold : float
        The absolute threshold it was compared with, in the same unit.
    detail : dict
        What else a reviewer needs: events, DRL row, history, window.
    """

    rule: AlertRule
    study_id: int
    subject_kind: str
    subject_key: str
    value: float
    threshold: float
    detail: dict[str, Any] = field(default_factory=dict)


# -- loading -------------------------------------------------------------------------------


def packaged_pack_path(name: str) -> Path:
    """Return the path of a shipped pack file (``kerma_default.toml`` ...).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the file is not part of the installed package.
    """
    path = _pack_dir() / name
    if not path.is_file():
        raise ConfigurationError(
            f"Unable to find the alert pack {name}: it is not part of the installed Kerma "
            "package. Reinstall Kerma."
        )
    return path


def _pack_dir() -> Path:
    """Return the folder of the shipped packs (``kerma/reference/alert_packs``)."""
    return Path(str(resources.files(REFERENCE_PACKAGE).joinpath(REFERENCE_DIR, "alert_packs")))


def _tuple(value: object, *, where: str) -> tuple[str, ...]:
    """Return a TOML string or list of strings as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigurationError(f"Unable to read {where}: expected a string or a list of strings.")


def _regex(pattern: str, *, where: str) -> str:
    """Return ``pattern`` after checking it compiles."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(
            f"Unable to read {where}: {pattern!r} is not a regular expression ({exc})."
        ) from exc
    return pattern


def _pairs(value: object, *, where: str) -> tuple[tuple[str, str], ...]:
    """Return a ``{field = regex}`` table as sorted (field, regex) pairs."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"Unable to read {where}: expected a table of field = regex.")
    known = set(STUDY_TEXT_FIELDS) | set(EVENT_TEXT_FIELDS) | {"acquisition_protocol"}
    pairs = []
    for key, pattern in value.items():
        if key not in known:
            raise ConfigurationError(
                f"Unable to read {where}: unknown field {key!r}; use one of "
                f"{', '.join(sorted(known))}."
            )
        pairs.append((str(key), _regex(str(pattern), where=f"{where}.{key}")))
    return tuple(sorted(pairs))


def _number(value: object, *, where: str) -> float | None:
    """Return a TOML number as float (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"Unable to read {where}: expected a number, not {value!r}.")
    return float(value)


def _parse_scope(data: object, *, where: str) -> RuleScope:
    """Return the scope of a rule from its ``[rule.scope]`` table."""
    if data is None:
        return RuleScope()
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"Unable to read {where}: expected a table.")
    protocol = data.get("protocol")
    return RuleScope(
        modalities=tuple(m.upper() for m in _tuple(data.get("modalities"), where=where)),
        devices=tuple(_regex(p, where=where) for p in _tuple(data.get("devices"), where=where)),
        exams=tuple(_regex(p, where=where) for p in _tuple(data.get("exams"), where=where)),
        protocol=_regex(str(protocol), where=where) if protocol else None,
        min_age_years=_number(data.get("min_age_years"), where=f"{where}.min_age_years"),
        max_age_years=_number(data.get("max_age_years"), where=f"{where}.max_age_years"),
        match=_pairs(data.get("match"), where=f"{where}.match"),
        exclude=_pairs(data.get("exclude"), where=f"{where}.exclude"),
    )


def _canonical_unit(quantity: str) -> str:
    """Return the canonical unit of a rule quantity (``"1"`` for ``count``)."""
    if quantity == "count":
        return "1"
    known = QUANTITIES.get(quantity)
    if known is None:
        return ""
    return known.unit


def _parse_rule(data: Mapping[str, Any], *, pack: str, where: str) -> AlertRule:
    """Return one rule of a pack, thresholds converted to the canonical unit."""
    rule_id = data.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise ConfigurationError(f"Unable to read {where}: every [[rule]] needs an id.")
    where = f"{where} rule {rule_id!r}"
    kind = data.get("kind", "threshold")
    if kind not in RULE_KINDS:
        raise ConfigurationError(
            f"Unable to read {where}: kind {kind!r} is not one of {', '.join(RULE_KINDS)}."
        )
    level = data.get("level", "study")
    quantity = str(data.get("quantity", ""))
    allowed = EVENT_QUANTITIES if level == "event" else (*STUDY_QUANTITIES, "count")
    if level not in ("study", "event") or quantity not in allowed:
        raise ConfigurationError(
            f"Unable to read {where}: quantity {quantity!r} at level {level!r} is not "
            f"known; use one of {', '.join(allowed)}."
        )
    if quantity == "count" and kind != "cumulative":
        raise ConfigurationError(f"Unable to read {where}: 'count' needs kind = 'cumulative'.")
    operator = data.get("operator", ">=")
    if operator not in OPERATORS:
        raise ConfigurationError(
            f"Unable to read {where}: operator {operator!r} is not one of {OPERATORS}."
        )
    unit = _canonical_unit(quantity)
    threshold = _number(data.get("threshold"), where=f"{where}.threshold")
    written = ""
    if kind in ("threshold", "cumulative"):
        if threshold is None:
            raise ConfigurationError(f"Unable to read {where}: a {kind} rule needs threshold.")
        given = str(data.get("unit", unit))
        written = f"{threshold:g}" if quantity == "count" else f"{threshold:g} {given}"
        if given != unit and quantity != "count":
            canonical = _UCUM_OF.get(unit, unit)
            factor = conversion_factor(given, canonical)
            if factor is None:
                raise ConfigurationError(
                    f"Unable to read {where}: unit {given!r} cannot be converted to {unit} "
                    f"(the unit of {quantity})."
                )
            threshold *= factor
    factor_value = _number(data.get("factor"), where=f"{where}.factor")
    if kind in ("drl_multiple", "device_history") and factor_value is None:
        raise ConfigurationError(f"Unable to read {where}: a {kind} rule needs factor.")
    drl_quantity = data.get("drl_quantity")
    if kind in ("drl_multiple", "drl_group") and not drl_quantity:
        raise ConfigurationError(f"Unable to read {where}: a {kind} rule needs drl_quantity.")
    if kind in ("device_history", "drl_group", "cumulative") and level != "study":
        raise ConfigurationError(f"Unable to read {where}: a {kind} rule is study level.")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        raise ConfigurationError(
            f"Unable to read {where}: every rule must cite the source of its threshold "
            "(source = \"...\"; 'Site policy ...' for a local choice)."
        )
    return AlertRule(
        rule_id=rule_id,
        pack=pack,
        title=str(data.get("title", rule_id)),
        kind=kind,
        level=level,
        quantity=quantity,
        operator=operator,
        unit=unit,
        source=source,
        source_ref=str(data.get("source_ref", "")),
        basis=str(data.get("basis", "")),
        note=str(data.get("note", "")),
        threshold=threshold,
        threshold_as_written=written,
        factor=factor_value,
        drl_quantity=str(drl_quantity) if drl_quantity else None,
        drl_set=str(data["drl_set"]) if data.get("drl_set") else None,
        history=int(data.get("history", 20)),
        min_history=int(data.get("min_history", 5)),
        group_size=int(data.get("group_size", 20)),
        trigger_factor=float(data.get("trigger_factor", 3.0)),
        mean_factor=float(data.get("mean_factor", 2.0)),
        window_days=int(data.get("window_days", 365)),
        scope=_parse_scope(data.get("scope"), where=f"{where}.scope"),
        recipients=_tuple(data.get("recipients"), where=f"{where}.recipients"),
    )


def load_pack(path: Path | str) -> list[AlertRule]:
    """Return the rules of one pack file.

    Parameters
    ----------
    path : path-like
        A TOML file with ``pack`` (id) and ``[[rule]]`` tables (``docs/alerts.md``).

    Raises
    ------
    kerma.errors.ConfigurationError
        When the file cannot be read or a rule is invalid (the message names the file
        and the rule).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"Unable to read the alert rules {path}: {exc}.") from exc
    pack = data.get("pack")
    if not isinstance(pack, str) or not pack:
        raise ConfigurationError(
            f'Unable to read the alert rules {path}: the file needs pack = "<id>".'
        )
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise ConfigurationError(f"Unable to read the alert rules {path}: use [[rule]] tables.")
    return [_parse_rule(r, pack=pack, where=str(path)) for r in rules]


def load_rules(path: Path | str | None = None, *, anlage14: bool = False) -> RuleSet:
    """Return the rules in force.

    Parameters
    ----------
    path : path-like, optional
        A pack file, or a folder whose ``*.toml`` files are read in name order
        (``KERMA_ALERT_RULES``). Default: the packaged ``kerma_default.toml``.
    anlage14 : bool, optional
        Add the packaged ``DE-StrlSchV-Anlage14`` pack (``KERMA_ALERT_ANLAGE14``) unless
        ``path`` already holds it.

    Raises
    ------
    kerma.errors.ConfigurationError
        When a file cannot be read, a rule is invalid, or two rules share an id.
    """
    files: list[Path]
    if path is None:
        files = [packaged_pack_path(DEFAULT_PACK_FILE)]
    else:
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.toml"))
        elif path.is_file():
            files = [path]
        else:
            raise ConfigurationError(
                f"Unable to read the alert rules {path}: no such file or folder. Check "
                "KERMA_ALERT_RULES."
            )
    rules: list[AlertRule] = []
    for file in files:
        rules.extend(load_pack(file))
    if anlage14 and not any(r.pack == ANLAGE14_PACK_ID for r in rules):
        file = packaged_pack_path(ANLAGE14_PACK_FILE)
        files.append(file)
        rules.extend(load_pack(file))
    seen: set[str] = set()
    for rule in rules:
        if rule.rule_id in seen:
            raise ConfigurationError(
                f"Unable to use the alert rules: rule id {rule.rule_id!r} appears twice "
                f"({', '.join(str(f) for f in files)}). Rule ids must be unique."
            )
        seen.add(rule.rule_id)
    return RuleSet(tuple(rules), tuple(str(f) for f in files))


def rules_frame(rules: RuleSet) -> pd.DataFrame:
    """Return one row per rule: id, pack, kind, level, quantity, threshold, source.

    Columns ``rule_id``, ``pack``, ``version``, ``kind``, ``level``, ``quantity``,
    ``threshold`` (words, as :attr:`AlertRule.threshold_text`), ``modalities``,
    ``basis``, ``source``, ``source_ref``, ``note``, ``recipients``.
    """
    rows = [
        {
            "rule_id": r.rule_id,
            "pack": r.pack,
            "version": r.version,
            "title": r.title,
            "kind": r.kind,
            "level": r.level,
            "quantity": r.quantity,
            "threshold": r.threshold_text,
            "modalities": ",".join(r.scope.modalities),
            "basis": r.basis,
            "source": r.source,
            "source_ref": r.source_ref,
            "note": r.note,
            "recipients": ",".join(r.recipients),
        }
        for r in rules.rules
    ]
    return pd.DataFrame(rows)


# -- scope -------------------------------------------------------------------------------


def _text(value: object) -> str:
    """Return a cell as text (missing values as ``""``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _search(pattern: str, value: object) -> bool:
    """Return whether ``pattern`` is found (case-insensitive) in a non-empty value."""
    text = _text(value)
    return bool(text) and re.search(pattern, text, re.IGNORECASE) is not None


def _number_or_none(value: object) -> float | None:
    """Return a finite float, or ``None``."""
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _field(row: Mapping[str, Any], name: str) -> object:
    """Return a scope field of a study or event row (event exam falls back to the study's)."""
    if name == "standard_exam":
        return row.get("event_standard_exam") or row.get("standard_exam")
    return row.get(name)


def in_scope(rule: AlertRule, row: Mapping[str, Any]) -> bool:
    """Return whether a study row (or a study-and-event row) is in the rule's scope.

    Parameters
    ----------
    rule : AlertRule
    row : mapping
        A study row (:data:`STUDY_TEXT_FIELDS`, ``patient_age_years``,
        ``is_non_patient``), joined with an event's columns at event level.
    """
    if row.get("is_non_patient"):
        return False
    scope = rule.scope
    if scope.modalities:
        family = _text(row.get("modality_family")).upper()
        modalities = {
            m.strip().upper()
            for m in (_text(row.get("modalities")) + "," + _text(row.get("modality"))).split(",")
            if m.strip()
        }
        if family not in scope.modalities and not modalities & set(scope.modalities):
            return False
    if scope.devices and not any(_search(p, row.get("device_name")) for p in scope.devices):
        return False
    exam = _field(row, "standard_exam")
    if scope.exams and not any(_search(p, exam) for p in scope.exams):
        return False
    if scope.protocol is not None:
        protocol = row.get("acquisition_protocol") or row.get("acquisition_protocols")
        if not _search(scope.protocol, protocol):
            return False
    age = _number_or_none(row.get("patient_age_years"))
    if scope.max_age_years is not None and (age is None or age >= scope.max_age_years):
        return False
    if scope.min_age_years is not None and age is not None and age < scope.min_age_years:
        return False
    if any(not _search(p, _field(row, name)) for name, p in scope.match):
        return False
    return not any(_search(p, _field(row, name)) for name, p in scope.exclude)


def crosses(value: float, threshold: float, operator: str) -> bool:
    """Return whether ``value`` crosses ``threshold`` (``>`` or ``>=``)."""
    return value > threshold if operator == ">" else value >= threshold


# -- DRL look-up ----------------------------------------------------------------------------


def find_drl(
    drls: pd.DataFrame,
    *,
    quantity: str,
    exam: object,
    age_years: object = None,
    compression_thickness_mm: object = None,
    adult_age_years: float = 18.0,
    study_date: object = None,
) -> dict[str, Any] | None:
    """Return the DRL row that a single study or event of ``exam`` is compared with.

    Of several editions of the exam's DRL (``select_drls`` keeps dated superseded
    ones, #16), the one in force on ``study_date`` is used (``valid_from`` and
    ``valid_to``, inclusive); when none was in force, or the date is unknown, the
    current edition (else the most recent year) as before #16, so an alert rule
    keeps a threshold where the selected set lacks the table of the study's date.

    Candidates follow :func:`kerma.analysis.reference.drl_exam_candidates` (an
    indication exam first, then its anatomical exam). Patients younger than
    ``adult_age_years`` take the paediatric row of their age band (none: ``None``),
    others (and unknown ages) the adult row; a mammography row with a compressed
    breast thickness band takes the band that holds the thickness when given.

    Parameters
    ----------
    drls : pandas.DataFrame
        Selected DRL rows (:func:`kerma.analysis.reference.select_drls`).
    quantity : str
        DRL quantity (``dlp_mgycm``, ``ctdivol_mgy``, ``dap_gym2``, ``agd_mgy`` ...).
    exam : str
        Standard exam.

    Returns
    -------
    dict or None
        ``drl_value`` (canonical unit), ``drl_exam``, ``drl_region``, ``drl_source``,
        ``drl_year``, ``source_ref``, ``band_label``; ``None`` when the set has none.
    """
    name = _text(exam)
    if not name or drls.empty:
        return None
    rows = drls[drls["quantity"] == quantity]
    age = _number_or_none(age_years)
    group = "paediatric" if age is not None and age < adult_age_years else "adult"
    rows = rows[rows["patient_group"] == group]
    if rows.empty:
        return None
    keys = rows.get("indication_exam", pd.Series("", index=rows.index)).fillna("").astype(str)
    keys = keys.where(keys != "", rows["standard_exam"].astype(str))
    for candidate in drl_exam_candidates(name):
        matched = _edition_for(rows[keys == candidate], study_date)
        if matched.empty:
            continue
        if group == "paediatric":
            matched = matched[_in_band(matched, age)]
        thickness = _number_or_none(compression_thickness_mm)
        banded = matched["band_grouping"].astype(str) == "compressed breast thickness"
        if banded.any():
            unbanded = matched[~banded]
            if thickness is not None:
                lo = pd.to_numeric(matched["band_min"], errors="coerce")
                hi = pd.to_numeric(matched["band_max"], errors="coerce")
                inside = matched[banded & (lo <= thickness) & (hi >= thickness)]
                matched = inside if not inside.empty else unbanded
            else:
                matched = unbanded
        if matched.empty:
            continue
        row = matched.iloc[0]
        return {
            "drl_value": float(row["drl_value"]),
            "drl_exam": candidate,
            "drl_region": _text(row.get("drl_region")),
            "drl_source": _text(row.get("drl_source")),
            "drl_year": _text(row.get("drl_year")),
            "source_ref": _text(row.get("source_ref")),
            "band_label": _text(row.get("band_label")),
        }
    return None


def _edition_for(rows: pd.DataFrame, study_date: object) -> pd.DataFrame:
    """Return the rows of one exam's DRL edition for a study of ``study_date``.

    The rows in force on the date (``valid_from``/``valid_to``, inclusive); when none
    (or the date is unknown), the ``current`` rows, else those of the most recent year.
    """
    if rows.empty or "valid_to" not in rows.columns or "valid_from" not in rows.columns:
        return rows
    date = pd.to_datetime(study_date, errors="coerce") if study_date is not None else pd.NaT
    if pd.notna(date):
        day = pd.Timestamp(date).normalize()
        valid_from = pd.to_datetime(rows["valid_from"], errors="coerce")
        valid_to = pd.to_datetime(rows["valid_to"], errors="coerce")
        in_force = (valid_from.isna() | (valid_from <= day)) & (valid_to.isna() | (day <= valid_to))
        inside = rows[in_force]
        if not inside.empty:
            return inside
    if "status" in rows.columns and (rows["status"] == "current").any():
        return rows[rows["status"] == "current"]
    years = pd.to_numeric(rows["drl_year"], errors="coerce")
    return rows[years == years.max()] if years.notna().any() else rows


def _in_band(rows: pd.DataFrame, age: float | None) -> pd.Series:
    """Return which paediatric DRL rows hold ``age`` (age bands; other bands pass)."""
    grouping = rows["band_grouping"].astype(str)
    lo = pd.to_numeric(rows["band_min"], errors="coerce")
    hi = pd.to_numeric(rows["band_max"], errors="coerce")
    if age is None:
        return grouping != "age"
    inside = (lo.isna() | (lo <= age)) & (hi.isna() | (age < hi))
    return (grouping != "age") | inside


# -- evaluation ----------------------------------------------------------------------------


def _study_key(study_id: int) -> str:
    """Return the subject key of a study alert."""
    return f"study:{study_id}"


def evaluate_studies(
    rules: Iterable[AlertRule],
    studies: Sequence[Mapping[str, Any]],
    events: Mapping[int, Sequence[Mapping[str, Any]]],
    *,
    drls: Mapping[str, pd.DataFrame] | None = None,
    default_drl_set: str = "EU",
) -> list[Crossing]:
    """Return the crossings of the ``threshold`` and ``drl_multiple`` rules.

    Parameters
    ----------
    rules : iterable of AlertRule
        Rules of other kinds are skipped (they need histories:
        :func:`evaluate_device_history`, :func:`evaluate_drl_group`,
        :func:`evaluate_cumulative`).
    studies : sequence of mapping
        One row per study: ``study_id``, the text fields of
        :data:`STUDY_TEXT_FIELDS`, ``modalities``, ``patient_age_years``,
        ``is_non_patient`` and the :data:`STUDY_QUANTITIES` (canonical units).
    events : mapping of int to sequence of mapping
        Current irradiation events per study id: ``event_id``, the
        :data:`EVENT_TEXT_FIELDS`, ``compression_thickness_mm`` and the
        :data:`EVENT_QUANTITIES`.
    drls : mapping of str to pandas.DataFrame, optional
        Selected DRL rows per DRL set (needed by ``drl_multiple`` rules).
    default_drl_set : str, optional
        DRL set of rules without ``drl_set``.

    Returns
    -------
    list of Crossing
        At most one per (rule, study): at event level the largest crossing event's
        value, with every crossing event listed in ``detail["events"]``.
    """
    found: list[Crossing] = []
    wanted = [r for r in rules if r.kind in ("threshold", "drl_multiple")]
    for study in studies:
        study_id = int(study["study_id"])
        for rule in wanted:
            drl_rows = None
            if rule.kind == "drl_multiple":
                drl_rows = (drls or {}).get(rule.drl_set or default_drl_set)
                if drl_rows is None:
                    continue
            if rule.level == "study":
                crossing = _study_crossing(rule, study, drl_rows)
            else:
                crossing = _event_crossing(rule, study, events.get(study_id, ()), drl_rows)
            if crossing is not None:
                found.append(crossing)
    return found


def _limit(
    rule: AlertRule, row: Mapping[str, Any], drl_rows: pd.DataFrame | None
) -> tuple[float, dict[str, Any]] | None:
    """Return the absolute threshold of a row and what it came from (``None``: no DRL)."""
    if rule.kind == "threshold":
        assert rule.threshold is not None
        return rule.threshold, {}
    assert drl_rows is not None and rule.factor is not None and rule.drl_quantity is not None
    drl = find_drl(
        drl_rows,
        quantity=rule.drl_quantity,
        exam=_field(row, "standard_exam"),
        age_years=row.get("patient_age_years"),
        compression_thickness_mm=row.get("compression_thickness_mm"),
        study_date=row.get("study_date"),
    )
    if drl is None:
        return None
    return rule.factor * drl["drl_value"], {"drl": drl}


def _study_crossing(
    rule: AlertRule, study: Mapping[str, Any], drl_rows: pd.DataFrame | None
) -> Crossing | None:
    """Return the crossing of a study-level rule by one study, or ``None``."""
    value = _number_or_none(study.get(rule.quantity))
    if value is None or not in_scope(rule, study):
        return None
    limit = _limit(rule, study, drl_rows)
    if limit is None or not crosses(value, limit[0], rule.operator):
        return None
    study_id = int(study["study_id"])
    return Crossing(rule, study_id, SUBJECT_STUDY, _study_key(study_id), value, limit[0], limit[1])


def _event_crossing(
    rule: AlertRule,
    study: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    drl_rows: pd.DataFrame | None,
) -> Crossing | None:
    """Return the crossing of an event-level rule by a study's events, or ``None``."""
    if study.get("is_non_patient"):
        return None
    hits: list[dict[str, Any]] = []
    best: tuple[float, float, dict[str, Any]] | None = None
    for event in events:
        value = _number_or_none(event.get(rule.quantity))
        if value is None:
            continue
        row = {**study, **event}
        if not in_scope(rule, row):
            continue
        limit = _limit(rule, row, drl_rows)
        if limit is None or not crosses(value, limit[0], rule.operator):
            continue
        hits.append(
            {
                "event_id": event.get("event_id"),
                "value": value,
                "threshold": limit[0],
                "acquisition_protocol": _text(event.get("acquisition_protocol")),
            }
        )
        if best is None or value / limit[0] > best[0] / best[1]:
            best = (value, limit[0], limit[1])
    if best is None:
        return None
    study_id = int(study["study_id"])
    detail = {**best[2], "events": hits}
    return Crossing(rule, study_id, SUBJECT_STUDY, _study_key(study_id), best[0], best[1], detail)


def evaluate_device_history(
    rule: AlertRule, study: Mapping[str, Any], previous: Sequence[float]
) -> Crossing | None:
    """Return the crossing of a ``device_history`` rule by one study, or ``None``.

    Parameters
    ----------
    rule : AlertRule
    study : mapping
        The study row (as for :func:`evaluate_studies`).
    previous : sequence of float
        The rule quantity of the previous studies of the same standard exam on the
        same device, newest first, at most ``rule.history`` (canonical unit).

    Returns
    -------
    Crossing or None
        ``None`` when fewer than ``rule.min_history`` previous values exist or the
        value stays below ``factor`` x their median.
    """
    value = _number_or_none(study.get(rule.quantity))
    if value is None or not in_scope(rule, study) or not study.get("standard_exam"):
        return None
    values = [v for v in previous[: rule.history] if v is not None and not math.isnan(v)]
    if len(values) < rule.min_history:
        return None
    median = float(pd.Series(values).median())
    assert rule.factor is not None
    limit = rule.factor * median
    if limit <= 0 or not crosses(value, limit, rule.operator):
        return None
    study_id = int(study["study_id"])
    detail = {"median": median, "n_history": len(values)}
    return Crossing(rule, study_id, SUBJECT_STUDY, _study_key(study_id), value, limit, detail)


def evaluate_drl_group(
    rule: AlertRule,
    study: Mapping[str, Any],
    window: Sequence[tuple[int, float]],
    drl: Mapping[str, Any] | None,
) -> Crossing | None:
    """Return the crossing of an Anlage 14 group rule at one study, or ``None``.

    StrlSchV 2018 Anlage 14 Part I number 1, in the reading of
    ``de_strlschv_anlage14.toml``: the window is the ``rule.group_size`` consecutive
    examinations of the standard exam on the device ending with ``study``; the
    criterion is met when one of them exceeds ``trigger_factor`` x DRL and their mean
    exceeds ``mean_factor`` x DRL.

    Parameters
    ----------
    window : sequence of (int, float)
        (study id, value) of the window, oldest first, ending with ``study``.
    drl : mapping or None
        :func:`find_drl` result for the study's exam.

    Returns
    -------
    Crossing or None
        Subject ``device_exam`` keyed by device, exam and the first triggering study;
        ``value`` is the window mean, ``threshold`` ``mean_factor`` x DRL.
    """
    if drl is None or not in_scope(rule, study) or len(window) < rule.group_size:
        return None
    window = list(window)[-rule.group_size :]
    if window[-1][0] != int(study["study_id"]):
        return None
    drl_value = float(drl["drl_value"])
    triggers = [sid for sid, v in window if v > rule.trigger_factor * drl_value]
    if not triggers:
        return None
    mean = sum(v for _, v in window) / len(window)
    limit = rule.mean_factor * drl_value
    if not crosses(mean, limit, rule.operator):
        return None
    study_id = int(study["study_id"])
    key = f"group:{study.get('device_id')}:{study.get('standard_exam')}:{triggers[0]}"
    detail = {
        "drl": dict(drl),
        "window_study_ids": [sid for sid, _ in window],
        "trigger_study_id": triggers[0],
        "trigger_threshold": rule.trigger_factor * drl_value,
    }
    return Crossing(rule, study_id, SUBJECT_GROUP, key, mean, limit, detail)


def evaluate_cumulative(
    rule: AlertRule, study: Mapping[str, Any], window: Sequence[tuple[int, float | None]]
) -> Crossing | None:
    """Return the crossing of a cumulative rule at one study, or ``None``.

    Parameters
    ----------
    rule : AlertRule
    study : mapping
        The study row; needs ``patient_id``.
    window : sequence of (int, float or None)
        (study id, value) of the patient's studies in scope within ``rule.window_days``
        ending with the study's date, the study itself included.

    Returns
    -------
    Crossing or None
        Subject ``patient`` (key completed by the service, which groups crossings
        of one patient into episodes); ``value`` the sum (or count).
    """
    if study.get("patient_id") is None or not in_scope(rule, study):
        return None
    if rule.quantity == "count":
        total = float(len(window))
    else:
        values = [v for _, v in window if v is not None and not math.isnan(v)]
        if not values:
            return None
        total = float(sum(values))
    assert rule.threshold is not None
    if not crosses(total, rule.threshold, rule.operator):
        return None
    study_id = int(study["study_id"])
    detail = {"window_study_ids": [sid for sid, _ in window], "window_days": rule.window_days}
    key = f"patient:{study['patient_id']}"
    return Crossing(rule, study_id, SUBJECT_PATIENT, key, total, rule.threshold, detail)


def age_band(age_years: object) -> str:
    """Return a coarse age band for reports (``"40-49 y"``; ``"unknown"``)."""
    age = _number_or_none(age_years)
    if age is None:
        return "unknown"
    bands = ((1, "<1 y"), (5, "1-4 y"), (10, "5-9 y"), (15, "10-14 y"), (18, "15-17 y"))
    for upper, label in bands:
        if age < upper:
            return label
    low = int(age // 10 * 10)
    return f"{low}-{low + 9} y" if age >= 20 else "18-19 y"

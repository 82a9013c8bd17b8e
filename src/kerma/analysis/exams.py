"""Standard exams: ordered, case-insensitive regular-expression rules, first match wins.

A study (or one irradiation event) is given a standard exam name, e.g. ``"CT Head"``,
``"Chest PA"``, ``"Mammography screening"`` or ``"PCI"``, by the first rule whose
patterns match its modality, study description, requested procedure, procedure
reported, acquisition protocol, target region, anatomical structure and image view.
The names are the harmonised exam names of the packaged DRL tables
(:mod:`kerma.analysis.reference`), so DRL look-up works by name. Where the description
reveals a EUCLID clinical indication (EC RP 195, 2021), the CT exam is named
``"<anatomical exam> (<clinical indication>)"``, e.g. ``"CT Head (Stroke)"`` or
``"CT Abdomen-Pelvis (Appendicitis)"`` (:func:`split_indication_exam`); a study whose
indication is unknown keeps the anatomical name (``"CT Abdomen-Pelvis"``).

The default rules ship as ``kerma/analysis/default_exam_rules.toml``. A site file
(``Settings.exam_rules_path``, ``KERMA_EXAM_RULES_PATH``) **replaces** the defaults;
with ``extend_defaults = true`` at its top, its rules are tried **before** the
defaults instead.

This module works on DataFrames and plain mappings only. May import ``kerma.records``,
``kerma.units``, ``kerma.errors`` and ``kerma.analysis``; writing a mapping to the
registry is :mod:`kerma.services.exams`'s job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final, Literal

import pandas as pd

from kerma.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Fields a rule may test. ``text`` is every descriptive field joined by ``" | "``.
RULE_FIELDS: Final[tuple[str, ...]] = (
    "modality",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "requested_procedure_code",
    "acquisition_protocol",
    "target_region",
    "anatomical_structure",
    "image_view",
    "laterality",
    "text",
)

#: Descriptive fields joined into ``text``.
TEXT_FIELDS: Final[tuple[str, ...]] = (
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "acquisition_protocol",
    "target_region",
    "anatomical_structure",
)

#: Event fields joined (``"; "``, unique, in order) to describe a whole study.
EVENT_TEXT_FIELDS: Final[tuple[str, ...]] = (
    "acquisition_protocol",
    "target_region",
    "anatomical_structure",
    "image_view",
    "laterality",
)

DEFAULT_RULES_FILE: Final = "default_exam_rules.toml"

#: A CT clinical-indication exam name: ``"CT <anatomical exam> (<clinical indication>)"``.
_INDICATION_EXAM: Final = re.compile(r"(?P<exam>CT .+?) \((?P<indication>[^()]+)\)")

Level = Literal["study", "event", "both"]


@dataclass(frozen=True)
class ExamRule:
    """One standard-exam rule (a ``[[rule]]`` table of the TOML file).

    Attributes
    ----------
    name : str
        Rule identifier, written to ``study.standard_exam_rule``.
    exam : str
        Standard exam name assigned on a match.
    modality : re.Pattern or None
        Pattern the modality must fully match (``None``: any modality).
    any : dict of str to re.Pattern
        At least one must match (empty: no condition).
    all : dict of str to re.Pattern
        Every one must match.
    none : dict of str to re.Pattern
        None may match.
    level : {"study", "event", "both"}
        Where the rule applies.
    """

    name: str
    exam: str
    modality: re.Pattern[str] | None = None
    any: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    all: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    none: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    level: Level = "both"

    def matches(self, values: Mapping[str, str]) -> bool:
        """Return whether the rule matches one study or event's field values."""
        if self.modality is not None and not self.modality.fullmatch(values.get("modality", "")):
            return False
        if self.any and not any(p.search(values.get(f, "")) for f, p in self.any.items()):
            return False
        if not all(p.search(values.get(f, "")) for f, p in self.all.items()):
            return False
        return not any(p.search(values.get(f, "")) for f, p in self.none.items())


@dataclass(frozen=True)
class ExamRuleSet:
    """An ordered list of rules with where they came from."""

    rules: tuple[ExamRule, ...]
    sources: tuple[str, ...]
    version: str = ""

    @property
    def fingerprint(self) -> str:
        """Return 16 hex digits of SHA-256 over the rules (names, exams, patterns, levels).

        Two rule sets with the same rules in the same order have the same fingerprint
        wherever their files are; the registry stores it with each study's mapping
        (``study.exam_rules_fingerprint``) to know when a re-mapping is due.
        """
        payload = [
            {
                "name": rule.name,
                "exam": rule.exam,
                "modality": rule.modality.pattern if rule.modality else None,
                "any": {f: p.pattern for f, p in rule.any.items()},
                "all": {f: p.pattern for f, p in rule.all.items()},
                "none": {f: p.pattern for f, p in rule.none.items()},
                "level": rule.level,
            }
            for rule in self.rules
        ]
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_frame(self) -> pd.DataFrame:
        """Return one row per rule: ``order``, ``name``, ``exam``, ``modality``, ``level``
        and ``conditions`` (the patterns as text)."""
        rows = []
        for order, rule in enumerate(self.rules, start=1):
            conditions = []
            for kind in ("any", "all", "none"):
                patterns: Mapping[str, re.Pattern[str]] = getattr(rule, kind)
                if patterns:
                    inner = ", ".join(f"{f}~{p.pattern}" for f, p in patterns.items())
                    conditions.append(f"{kind}({inner})")
            rows.append(
                {
                    "order": order,
                    "name": rule.name,
                    "exam": rule.exam,
                    "modality": rule.modality.pattern if rule.modality else "",
                    "level": rule.level,
                    "conditions": "; ".join(conditions),
                }
            )
        return pd.DataFrame(rows)


def split_indication_exam(standard_exam: str) -> tuple[str, str]:
    """Return the anatomical exam and the clinical indication of a standard exam name.

    Clinical-indication exams are CT exams named ``"<anatomical exam> (<indication>)"``
    (the EUCLID indication as EC RP 195 publishes it). Other names (including
    fluoroscopy names with parentheses such as ``"Transarterial chemoembolisation
    (TACE)"``) have no indication.

    Parameters
    ----------
    standard_exam : str
        A standard exam name.

    Returns
    -------
    tuple of str
        ``(anatomical exam, clinical indication)``; the indication is ``""`` when the
        name carries none.

    Examples
    --------
    >>> split_indication_exam("CT Abdomen-Pelvis (Appendicitis)")
    ('CT Abdomen-Pelvis', 'Appendicitis')
    >>> split_indication_exam("CT Head")
    ('CT Head', '')
    """
    match = _INDICATION_EXAM.fullmatch(standard_exam)
    if match is None:
        return standard_exam, ""
    return match["exam"], match["indication"]


def _compile(pattern: str, *, where: str) -> re.Pattern[str]:
    """Compile one case-insensitive pattern, naming the rule in the error."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigurationError(
            f"Unable to read the exam rule {where}: pattern {pattern!r} is not a valid "
            f"regular expression ({exc})."
        ) from exc


def _parse_rules(data: Mapping[str, object], *, source: str) -> list[ExamRule]:
    """Build :class:`ExamRule` objects from a parsed TOML document."""
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigurationError(f"Unable to read exam rules from {source}: 'rule' is not a list.")
    rules = []
    for index, raw in enumerate(raw_rules, start=1):
        if not isinstance(raw, dict) or "exam" not in raw:
            raise ConfigurationError(
                f"Unable to read exam rule #{index} of {source}: it has no 'exam'."
            )
        name = str(raw.get("name", f"{Path(source).stem}-{index}"))
        where = f"{name!r} in {source}"
        groups: dict[str, dict[str, re.Pattern[str]]] = {}
        for kind in ("any", "all", "none"):
            table = raw.get(kind, {})
            if not isinstance(table, dict):
                raise ConfigurationError(
                    f"Unable to read exam rule {where}: {kind} is not a table."
                )
            unknown = set(table) - set(RULE_FIELDS)
            if unknown:
                raise ConfigurationError(
                    f"Unable to read exam rule {where}: unknown field(s) {sorted(unknown)}; "
                    f"fields are {', '.join(RULE_FIELDS)}."
                )
            groups[kind] = {f: _compile(str(p), where=where) for f, p in table.items()}
        level = str(raw.get("level", "both"))
        if level not in ("study", "event", "both"):
            raise ConfigurationError(
                f"Unable to read exam rule {where}: level must be study, event or both."
            )
        modality = raw.get("modality")
        rules.append(
            ExamRule(
                name=name,
                exam=str(raw["exam"]),
                modality=_compile(str(modality), where=where) if modality else None,
                any=groups["any"],
                all=groups["all"],
                none=groups["none"],
                level=level,  # type: ignore[arg-type]
            )
        )
    return rules


def parse_rules(data: Mapping[str, object], *, source: str) -> list[ExamRule]:
    """Return the rules of a parsed exam-rules document (``{"rule": [{...}, ...]}``).

    The format of the TOML file (``[[rule]]`` tables with ``name``, ``exam``,
    ``modality``, ``level`` and ``any``/``all``/``none`` field → pattern tables); the
    site rules saved in the registry use it too.

    Raises
    ------
    kerma.errors.ConfigurationError
        When a rule lacks ``exam``, names an unknown field, has an unknown level or a
        pattern that does not compile.
    """
    return _parse_rules(data, source=source)


def layer_rules(site_rules: Sequence[ExamRule], base: ExamRuleSet, *, source: str) -> ExamRuleSet:
    """Return ``base`` with ``site_rules`` tried before it (``base`` when there are none)."""
    if not site_rules:
        return base
    return ExamRuleSet(tuple(site_rules) + base.rules, (source, *base.sources), base.version)


def _read_toml(path: Path) -> dict[str, object]:
    """Read a TOML file, translating errors to :class:`ConfigurationError`."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"Unable to read the exam rules file {path}: {exc}") from exc


def load_exam_rules(path: Path | str | None = None) -> ExamRuleSet:
    """Return the standard-exam rules in force.

    Parameters
    ----------
    path : path, optional
        A site TOML file (``Settings.exam_rules_path``). Without it the packaged
        defaults are used. With it, the site rules replace the defaults unless the file
        says ``extend_defaults = true``, in which case they are tried before them.

    Returns
    -------
    ExamRuleSet
        The ordered rules and the files they came from.

    Raises
    ------
    kerma.errors.ConfigurationError
        When a file cannot be read, a pattern does not compile or a rule lacks ``exam``.
    """
    default_path = Path(str(resources.files("kerma.analysis").joinpath(DEFAULT_RULES_FILE)))
    default_doc = _read_toml(default_path)
    default_rules = _parse_rules(default_doc, source=DEFAULT_RULES_FILE)
    if path is None:
        return ExamRuleSet(
            tuple(default_rules), (str(default_path),), str(default_doc.get("version", ""))
        )
    site_path = Path(path)
    site_doc = _read_toml(site_path)
    site_rules = _parse_rules(site_doc, source=str(site_path))
    if site_doc.get("extend_defaults", False):
        return ExamRuleSet(
            tuple(site_rules + default_rules),
            (str(site_path), str(default_path)),
            str(site_doc.get("version", "")),
        )
    return ExamRuleSet(tuple(site_rules), (str(site_path),), str(site_doc.get("version", "")))


def _clean(value: object) -> str:
    """Return a cell as text; missing values become ``""``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def _join_unique(values: Iterable[object]) -> str:
    """Join the distinct non-empty values in order with ``"; "``."""
    seen: dict[str, None] = {}
    for value in values:
        text = _clean(value).strip()
        if text:
            seen.setdefault(text, None)
    return "; ".join(seen)


def _matching_values(row: Mapping[str, object]) -> dict[str, str]:
    """Return the rule fields of one row, with ``text`` built from the descriptive fields."""
    values = {name: _clean(row.get(name)) for name in RULE_FIELDS if name != "text"}
    values["text"] = " | ".join(values[f] for f in TEXT_FIELDS if values[f])
    return values


def _first_match(
    values: Mapping[str, str], rules: Sequence[ExamRule], level: str
) -> tuple[str | None, str | None]:
    """Return (exam, rule name) of the first rule of ``level`` that matches."""
    for rule in rules:
        if rule.level in (level, "both") and rule.matches(values):
            return rule.exam, rule.name
    return None, None


def match_exam(
    record: Mapping[str, object], rules: ExamRuleSet | Sequence[ExamRule], *, level: str
) -> tuple[str | None, str | None]:
    """Return (standard exam, rule name) of one study or event given as a mapping.

    The mapping holds the rule fields (:data:`RULE_FIELDS` but ``text``; missing ones
    count as empty); for ``level="event"`` an empty ``modality`` falls back to
    ``study_modality``. This is what :func:`map_standard_exams` does per row, for
    callers that hold plain records (the registry's derive step).
    """
    rule_list = rules.rules if isinstance(rules, ExamRuleSet) else tuple(rules)
    values = dict(record)
    if level == "event" and not _clean(values.get("modality")):
        values["modality"] = values.get("study_modality")
    return _first_match(_matching_values(values), rule_list, level)


def join_unique(values: Iterable[object]) -> str | None:
    """Return the distinct non-empty values in order joined with ``"; "`` (``None`` if none)."""
    return _join_unique(values) or None


def study_rule_frame(studies: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per study with the fields the rules test.

    Parameters
    ----------
    studies : pandas.DataFrame
        ``Registry.studies()`` shape: at least ``study_id`` and ``modality``; uses
        ``study_description``, ``requested_procedure_description``,
        ``procedure_reported`` when present.
    events : pandas.DataFrame, optional
        ``Registry.events()`` shape; each study's ``acquisition_protocol``,
        ``target_region``, ``anatomical_structure``, ``image_view`` and ``laterality``
        values are joined with ``"; "`` (distinct values, in event order).

    Returns
    -------
    pandas.DataFrame
        ``study_id`` and one column per rule field (strings, ``""`` when unknown).
    """
    frame = studies.copy()
    if events is not None and not events.empty:
        present = [f for f in EVENT_TEXT_FIELDS if f in events.columns]
        joined = events.groupby("study_id", sort=False)[present].agg(_join_unique)
        frame = frame.drop(columns=[c for c in present if c in frame.columns])
        frame = frame.merge(joined, how="left", left_on="study_id", right_index=True)
    for name in RULE_FIELDS:
        if name != "text" and name not in frame.columns:
            frame[name] = ""
    return frame


def map_standard_exams(
    frame: pd.DataFrame, rules: ExamRuleSet | Sequence[ExamRule], *, level: str = "study"
) -> pd.DataFrame:
    """Return the standard exam and rule name for every row of ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per study (:func:`study_rule_frame`) or per irradiation event
        (``Registry.events()``; the event's own ``modality`` is tested, falling back
        to ``study_modality``). Missing rule fields count as empty text.
    rules : ExamRuleSet or sequence of ExamRule
        Ordered rules (:func:`load_exam_rules`); the first match wins.
    level : {"study", "event"}, optional
        Which rules apply: rules with ``level = "both"`` or this level.

    Returns
    -------
    pandas.DataFrame
        Same index as ``frame``; columns ``standard_exam`` and ``standard_exam_rule``
        (``None`` where no rule matches).
    """
    rule_list = rules.rules if isinstance(rules, ExamRuleSet) else tuple(rules)
    records = frame.to_dict("records")
    exams: list[str | None] = []
    names: list[str | None] = []
    for record in records:
        if level == "event" and not _clean(record.get("modality")):
            record["modality"] = record.get("study_modality")
        exam, name = _first_match(_matching_values(record), rule_list, level)
        exams.append(exam)
        names.append(name)
    return pd.DataFrame(
        {"standard_exam": exams, "standard_exam_rule": names}, index=frame.index, dtype=object
    )


def assign_study_exams(
    studies: pd.DataFrame,
    events: pd.DataFrame | None,
    rules: ExamRuleSet | Sequence[ExamRule],
) -> pd.DataFrame:
    """Return ``study_id``, ``standard_exam`` and ``standard_exam_rule`` per study.

    See :func:`study_rule_frame` for the inputs and :func:`map_standard_exams` for the
    matching.
    """
    fields = study_rule_frame(studies, events)
    mapped = map_standard_exams(fields, rules, level="study")
    return pd.concat([fields[["study_id"]], mapped], axis=1).reset_index(drop=True)


def assign_event_exams(events: pd.DataFrame, rules: ExamRuleSet | Sequence[ExamRule]) -> pd.Series:
    """Return the standard exam of every irradiation event (per-projection exams).

    Event-level rules (``level = "event"`` or ``"both"``) are tried on the event's own
    protocol, target region, view and the study's descriptions; where none matches,
    the study's ``standard_exam`` column (when ``events`` has one) is kept.

    Parameters
    ----------
    events : pandas.DataFrame
        ``Registry.events()`` shape.
    rules : ExamRuleSet or sequence of ExamRule
        Ordered rules.

    Returns
    -------
    pandas.Series
        Named ``event_standard_exam``, same index as ``events``.
    """
    mapped = map_standard_exams(events, rules, level="event")["standard_exam"]
    if "standard_exam" in events.columns:
        mapped = mapped.where(mapped.notna(), events["standard_exam"])
    return mapped.rename("event_standard_exam")


def summarise_mapping(
    studies: pd.DataFrame, mapped: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (exam → number of studies, unmapped descriptions with counts).

    Parameters
    ----------
    studies : pandas.DataFrame
        ``Registry.studies()`` shape (``study_id``, ``modality``, ``study_description``).
    mapped : pandas.DataFrame
        Output of :func:`assign_study_exams`.

    Returns
    -------
    tuple of pandas.DataFrame
        ``mappings``: ``standard_exam``, ``n_studies`` (descending);
        ``unmapped``: ``modality``, ``study_description``, ``n_studies`` (descending).
    """
    joined = studies[["study_id", "modality", "study_description"]].merge(
        mapped, on="study_id", how="left"
    )
    mappings = (
        joined.dropna(subset=["standard_exam"])
        .groupby("standard_exam")
        .size()
        .rename("n_studies")
        .reset_index()
        .sort_values(["n_studies", "standard_exam"], ascending=[False, True], ignore_index=True)
    )
    unmapped = (
        joined[joined["standard_exam"].isna()]
        .fillna({"modality": "", "study_description": ""})
        .groupby(["modality", "study_description"])
        .size()
        .rename("n_studies")
        .reset_index()
        .sort_values("n_studies", ascending=False, ignore_index=True)
    )
    return mappings, unmapped

"""Dose analytics: standard exams, DRLs (ICRP 135), statistics, effective dose, SSDE,
skin dose and cumulative dose.

Every function is pure: DataFrames, arrays or plain records in, DataFrames or values
out, columns named with their canonical unit (``ct_dlp_total_mgycm``, ``dap_gym2``,
``effective_dose_msv``, ``ssde_mgy``). It never opens a session: the registry's frames
come from :mod:`kerma.services` (and :class:`kerma.Registry`). Reference tables (DRLs,
k-factors, SSDE coefficients, alert levels) ship as package data in
``kerma/reference`` with their sources (:mod:`kerma.analysis.reference`).

May import ``kerma.records``, ``kerma.units``, ``kerma.errors`` and ``kerma.config``
only (DESIGN.md, layers).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule defining it, imported on first use (PEP 562), so that
#: ``from kerma.analysis.drl import ...`` does not import every analysis module.
_EXPORTS: dict[str, str] = {
    "ExamRule": "kerma.analysis.exams",
    "ExamRuleSet": "kerma.analysis.exams",
    "SkinDoseResult": "kerma.analysis.skin_dose",
    "StudySummary": "kerma.analysis.summary",
    "SummaryContext": "kerma.analysis.summary",
    "add_period": "kerma.analysis.stats",
    "add_srdl_flags": "kerma.analysis.skin_dose",
    "assign_event_exams": "kerma.analysis.exams",
    "assign_study_exams": "kerma.analysis.exams",
    "build_dose_samples": "kerma.analysis.frames",
    "compare_by_period": "kerma.analysis.drl",
    "compare_with_drls": "kerma.analysis.drl",
    "conversion_factor": "kerma.analysis.ssde",
    "ct_effective_dose": "kerma.analysis.effective_dose",
    "cumulative_dose": "kerma.analysis.cumulative",
    "dose_statistics": "kerma.analysis.stats",
    "effective_diameter_mm": "kerma.analysis.ssde",
    "estimate_skin_dose": "kerma.analysis.skin_dose",
    "filter_samples": "kerma.analysis.stats",
    "list_drl_sets": "kerma.analysis.reference",
    "load_alert_levels": "kerma.analysis.reference",
    "load_drls": "kerma.analysis.reference",
    "load_exam_rules": "kerma.analysis.exams",
    "load_k_factors": "kerma.analysis.reference",
    "load_ssde_coefficients": "kerma.analysis.reference",
    "local_drls": "kerma.analysis.drl",
    "map_standard_exams": "kerma.analysis.exams",
    "rolling_cumulative_dose": "kerma.analysis.cumulative",
    "select_drls": "kerma.analysis.reference",
    "select_k_factor": "kerma.analysis.effective_dose",
    "skin_dose_map_figure": "kerma.analysis.skin_dose",
    "split_indication_exam": "kerma.analysis.exams",
    "ssde_events": "kerma.analysis.ssde",
    "summarise_mapping": "kerma.analysis.exams",
    "summarise_study": "kerma.analysis.summary",
    "write_skin_dose_map": "kerma.analysis.skin_dose",
}

__all__ = [
    "ExamRule",
    "ExamRuleSet",
    "SkinDoseResult",
    "StudySummary",
    "SummaryContext",
    "add_period",
    "add_srdl_flags",
    "assign_event_exams",
    "assign_study_exams",
    "build_dose_samples",
    "compare_by_period",
    "compare_with_drls",
    "conversion_factor",
    "ct_effective_dose",
    "cumulative_dose",
    "dose_statistics",
    "effective_diameter_mm",
    "estimate_skin_dose",
    "filter_samples",
    "list_drl_sets",
    "load_alert_levels",
    "load_drls",
    "load_exam_rules",
    "load_k_factors",
    "load_ssde_coefficients",
    "local_drls",
    "map_standard_exams",
    "rolling_cumulative_dose",
    "select_drls",
    "select_k_factor",
    "skin_dose_map_figure",
    "split_indication_exam",
    "ssde_events",
    "summarise_mapping",
    "summarise_study",
    "write_skin_dose_map",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerma.analysis' has no attribute {name!r}")

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

from kerma.analysis.cumulative import cumulative_dose, rolling_cumulative_dose
from kerma.analysis.drl import compare_by_period, compare_with_drls, local_drls
from kerma.analysis.effective_dose import ct_effective_dose, select_k_factor
from kerma.analysis.exams import (
    ExamRule,
    ExamRuleSet,
    assign_event_exams,
    assign_study_exams,
    load_exam_rules,
    map_standard_exams,
    split_indication_exam,
    summarise_mapping,
)
from kerma.analysis.frames import build_dose_samples
from kerma.analysis.reference import (
    list_drl_sets,
    load_alert_levels,
    load_drls,
    load_k_factors,
    load_ssde_coefficients,
    select_drls,
)
from kerma.analysis.skin_dose import (
    SkinDoseResult,
    add_srdl_flags,
    estimate_skin_dose,
    skin_dose_map_figure,
    write_skin_dose_map,
)
from kerma.analysis.ssde import conversion_factor, effective_diameter_mm, ssde_events
from kerma.analysis.stats import add_period, dose_statistics, filter_samples
from kerma.analysis.summary import StudySummary, SummaryContext, summarise_study

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

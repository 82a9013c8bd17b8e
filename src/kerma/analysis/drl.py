"""Comparison with diagnostic reference levels by the method of ICRP Publication 135.

ICRP Publication 135 (Diagnostic Reference Levels in Medical Imaging, 2017):

* the **typical value** of a room (X-ray device) for an examination is the **median**
  of the DRL quantity over a sample of patients, computed only when the sample is
  large enough: ICRP 135 sets the minimum in **patients**, at least 20 per room and
  examination, 50 for mammography (Kerma: ``Settings.drl_min_sample``, 20, and
  ``Settings.drl_min_sample_mammography``, 50). Kerma counts the distinct studies
  (``study_id``, one patient examination each) that contribute values, not the values:
  radiography (KAP per projection) and mammography (AGD per view) give several values
  per patient, and 60 views of 15 women are a sample of 15. The typical value stays the
  median of all the values (per projection or per view where the DRL is);
* the typical value is compared with the **national DRL** for that examination, in
  the quantity's canonical unit (CTDIvol in mGy, DLP in mGy·cm, KAP in Gy·m², Ka,r in
  Gy, AGD in mGy; published KAP and Ka,r DRLs are converted when loaded); a typical
  value above the DRL calls for a review of the procedure;
* a **local DRL** is the **75th percentile of the room medians** of the rooms of a
  facility or group.

Kerma also flags rooms whose typical value exceeds the DRL in several **consecutive
periods** (``Settings.drl_consecutive_periods``, 2 quarters by default).

Per-exam quantities come from :mod:`kerma.analysis.frames`: CT DLP per complete
examination (the DRL tables' "per complete examination"); CT CTDIvol as the per-study
mean over the non-localiser irradiation events (the UK NDRL defines CTDIvol "per
sequence": the study mean of sequence CTDIvols is Kerma's choice, documented in
``docs/analysis.md``); radiography KAP per projection; fluoroscopy KAP per procedure;
mammography AGD per view. Paediatric CT samples (age below ``adult_age_years``) are
compared with the paediatric table's age or weight band that contains the patient,
never with adult DRLs. Samples of unknown age are compared as adults or left out
(``Settings.drl_unknown_age``) and counted in ``n_unknown_age`` (included in ``n``
under ``"adult"``, the number excluded under ``"exclude"``; ``unknown_age_policy``
says which).

Clinical indications (EUCLID, EC RP 195): a study mapped to an indication exam (``"CT
Head (Stroke)"``) is compared with the set's row for that indication, else with the
set's anatomical row (``"CT Head"``); a study of an anatomical exam is never compared
with an indication row (:func:`kerma.analysis.reference.drl_exam_candidates`).

This module works on DataFrames only. May import ``kerma.records``, ``kerma.units``,
``kerma.errors`` and ``kerma.analysis``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from kerma.analysis.exams import split_indication_exam
from kerma.analysis.frames import DRL_QUANTITY_COLUMNS, PRIMARY_QUANTITY, SAMPLE_QUANTITIES
from kerma.analysis.reference import QUANTITY_UNITS, drl_exam_candidates
from kerma.analysis.stats import add_period
from kerma.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Age (years) from which the adult DRL tables apply; below it, the paediatric ones.
ADULT_AGE_YEARS: Final = 18.0

STATUS_ABOVE: Final = "above"
STATUS_BELOW: Final = "below"
STATUS_INSUFFICIENT: Final = "insufficient sample"
STATUS_NO_DRL: Final = "no DRL in the selected set"
STATUS_NEEDS_INDICATION: Final = "no DRL without clinical indication"
STATUS_NO_EDITION: Final = "no DRL in force on the study date"

#: What the comparison does with samples whose patient age is unknown
#: (``Settings.drl_unknown_age``): compare them with the adult DRLs, or leave them out.
UNKNOWN_AGE_POLICIES: Final[tuple[str, ...]] = ("adult", "exclude")

#: Columns of :func:`compare_with_drls`.
COMPARISON_COLUMNS: Final[tuple[str, ...]] = (
    "standard_exam",
    "clinical_indication",
    "patient_group",
    "band_label",
    "view",
    "device_id",
    "device_name",
    "quantity",
    "unit",
    "n",
    "n_studies",
    "n_unknown_age",
    "unknown_age_policy",
    "min_sample",
    "typical_value",
    "sample_median",
    "drl_value",
    "ratio_to_drl",
    "status",
    "drl_exam",
    "drl_region",
    "drl_source",
    "drl_year",
    "drl_status",
    "drl_verification",
    "drl_valid_from",
    "drl_valid_to",
    "source_ref",
    "note",
)


#: Text columns of :func:`compare_with_drls` (pandas strings; missing values stay missing).
_TEXT_COLUMNS: Final[tuple[str, ...]] = tuple(
    name
    for name in COMPARISON_COLUMNS
    if name
    not in {"device_id", "n", "n_studies", "n_unknown_age", "min_sample", "typical_value",
            "sample_median", "drl_value", "ratio_to_drl", "drl_year", "drl_valid_from",
            "drl_valid_to"}
)  # fmt: skip


def _band_mask(samples: pd.DataFrame, drl: pd.Series) -> pd.Series:
    """Return which samples fall in a DRL row's band and view.

    Paediatric rows: the age or weight band (lower-inclusive, upper-exclusive; a
    sample without the value is in no band). Mammography rows: the compressed breast
    thickness band (inclusive) and the view. Adult/paediatric selection is done by
    the caller.
    """
    mask = pd.Series(True, index=samples.index)
    grouping = drl.get("band_grouping")
    column = {"age": "patient_age_years", "weight": "patient_weight_kg"}.get(str(grouping))
    if drl["patient_group"] == "paediatric" and column is not None:
        values = pd.to_numeric(samples.get(column), errors="coerce")
        mask &= values.notna()
        if pd.notna(drl["band_min"]):
            mask &= values >= drl["band_min"]
        if pd.notna(drl["band_max"]):
            mask &= values < drl["band_max"]
    if grouping == "compressed breast thickness":
        thickness = pd.to_numeric(samples.get("compression_thickness_mm"), errors="coerce")
        mask &= thickness.between(drl["band_min"], drl["band_max"], inclusive="both")
    view = drl.get("view")
    if isinstance(view, str) and view:
        mask &= samples.get("view", pd.Series(None, index=samples.index)) == view
    return mask.fillna(False).astype(bool)


def _in_force(samples: pd.DataFrame, drl: pd.Series) -> pd.Series:
    """Return which samples a DRL row applies to by date: the edition in force.

    A row applies to studies whose ``study_date`` lies in its validity period
    (``valid_from`` and ``valid_to``, inclusive calendar days; an empty bound is
    open). A row without validity dates applies at every date. Samples without a
    study date (or frames without the column) are compared only with editions that
    are still open-ended (no ``valid_to``): the current ones.
    """
    valid_from = drl.get("valid_from")
    valid_to = drl.get("valid_to")
    valid_from = pd.Timestamp(valid_from) if pd.notna(valid_from) else None
    valid_to = pd.Timestamp(valid_to) if pd.notna(valid_to) else None
    if valid_from is None and valid_to is None:
        return pd.Series(True, index=samples.index)
    if "study_date" not in samples.columns:
        return pd.Series(valid_to is None, index=samples.index)
    days = pd.to_datetime(samples["study_date"], errors="coerce").dt.normalize()
    mask = days.notna()
    if valid_from is not None:
        mask &= days >= valid_from
    if valid_to is not None:
        mask &= days <= valid_to
    return (mask | (days.isna() & (valid_to is None))).astype(bool)


def _room_medians(
    subset: pd.DataFrame,
    column: str,
    min_sample: int,
    included: pd.Series | None = None,
    unknown_age: pd.Series | None = None,
) -> pd.DataFrame:
    """Return n, n_studies, unknown-age count and median per room (``device_id``).

    ``n`` counts the values of ``column`` (projections, views, studies) and
    ``n_studies`` the distinct ``study_id`` they come from; ``included`` marks the
    samples that count (default: all); ``unknown_age`` marks samples of unknown age,
    counted in ``n_unknown_age`` whether included or not. A room whose ``n_studies`` is
    below ``min_sample`` gets a NaN typical value (ICRP 135 sets the minimum in
    patients). A frame without ``study_id`` counts each row as a study. Rooms come in
    ``device_id`` order. Vectorised with numpy (the comparison calls it per exam, DRL
    row and band): the median is that of :func:`numpy.median` on each room's values.
    """
    values = pd.to_numeric(subset[column], errors="coerce").to_numpy(dtype=float)
    inc = np.ones(len(subset), dtype=bool) if included is None else included.to_numpy(dtype=bool)
    unk = (
        np.zeros(len(subset), dtype=bool)
        if unknown_age is None
        else unknown_age.to_numpy(dtype=bool)
    )
    keep = ~np.isnan(values) & (inc | unk)
    columns = [
        "device_id",
        "device_name",
        "n",
        "n_studies",
        "n_unknown_age",
        "typical_value",
        "sample_median",
    ]
    if not keep.any():
        return pd.DataFrame(columns=columns)
    study = (
        subset["study_id"].to_numpy() if "study_id" in subset.columns else np.arange(len(subset))
    )[keep]
    codes, rooms = pd.factorize(subset["device_id"].to_numpy()[keep], sort=True)
    k = len(rooms)
    names = subset["device_name"].to_numpy()[keep]
    _, first = np.unique(codes, return_index=True)
    counted = inc[keep]
    value = values[keep]
    n = np.bincount(codes[counted], minlength=k)
    n_unknown = np.bincount(codes, weights=unk[keep].astype(float), minlength=k)
    study_codes = pd.factorize(study[counted])[0]
    pairs = np.unique(codes[counted].astype(np.int64) * (study_codes.max(initial=0) + 1)
                      + study_codes)  # fmt: skip
    n_studies = np.bincount(pairs // (study_codes.max(initial=0) + 1), minlength=k)
    typical = np.full(k, np.nan)
    order = np.lexsort((value[counted], codes[counted]))
    ordered = value[counted][order]
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    has = n > 0
    low = ordered[(starts + (n - 1) // 2)[has]]
    high = ordered[(starts + n // 2)[has]]
    typical[has] = (low + high) / 2.0
    median = typical.copy()  # shown even below the minimum, marked insufficient
    typical[n_studies < min_sample] = np.nan
    return pd.DataFrame(
        {
            "device_id": rooms,
            "device_name": names[first],
            "n": n.astype(int),
            "n_studies": n_studies.astype(int),
            "n_unknown_age": n_unknown.astype(int),
            "typical_value": typical,
            "sample_median": median,
        }
    )


def _drl_exam_key(drls: pd.DataFrame) -> pd.Series:
    """Return the exam each DRL row is for: its ``indication_exam``, else ``standard_exam``."""
    indication = drls.get("indication_exam", pd.Series("", index=drls.index))
    indication = indication.fillna("").astype(str)
    return indication.where(indication != "", drls["standard_exam"].astype(str))


def _matching_drls(rows: pd.DataFrame, exam: str) -> tuple[pd.DataFrame, str]:
    """Return the DRL rows a study of ``exam`` is compared with, and their exam name.

    ``rows`` are the set's rows of one modality family and patient group, with their
    exam key in ``_key`` (:func:`_drl_exam_key`). Tries
    :func:`kerma.analysis.reference.drl_exam_candidates` in order; returns an empty
    frame and ``""`` when the selected set has none.
    """
    for candidate in drl_exam_candidates(exam):
        matched = rows[rows["_key"] == candidate]
        if not matched.empty:
            return matched, candidate
    return rows.iloc[0:0], ""


def _no_drl_status(rows: pd.DataFrame, exam: str) -> tuple[str, str]:
    """Return (status, note) for an exam and patient group without a DRL row in the set.

    ``rows`` as for :func:`_matching_drls`.
    """
    anatomical, indication = split_indication_exam(exam)
    indications = sorted(set(rows.loc[rows["standard_exam"] == anatomical, "_key"]))
    if not indications:
        return STATUS_NO_DRL, ""
    listed = ", ".join(indications)
    if indication:
        return STATUS_NO_DRL, f"the selected set has DRLs only for {listed}"
    return (
        STATUS_NEEDS_INDICATION,
        f"the selected set has DRLs only for {listed}: add exam rules that recognise "
        "the clinical indication (docs/analysis.md, Standard exams)",
    )


def compare_with_drls(
    samples: pd.DataFrame,
    drls: pd.DataFrame,
    *,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    adult_age_years: float = ADULT_AGE_YEARS,
    unknown_age: str = "adult",
    include_no_drl: bool = True,
) -> pd.DataFrame:
    """Return, per exam, room and DRL, the room's typical value and its DRL status.

    Each study's standard exam is compared with the DRL rows of the same exam
    (:func:`kerma.analysis.reference.drl_exam_candidates`): a clinical-indication exam
    such as ``"CT Abdomen-Pelvis (Appendicitis)"`` with the set's row for that EUCLID
    indication, else (no such row in the set) with the set's anatomical row
    (``"CT Abdomen-Pelvis"``; ``drl_exam`` and ``note`` say so); an anatomical exam
    only with anatomical rows, never with a clinical-indication row: when the set has
    only indication rows for it (the EU set's ``CT Abdomen-Pelvis``), the status is
    ``"no DRL without clinical indication"``. Patients younger than
    ``adult_age_years`` are compared only with paediatric rows of their age or weight
    band; an exam with no paediatric row in the set is reported with status ``"no DRL
    in the selected set"`` for them, never compared with adult DRLs.

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame (:func:`kerma.analysis.frames.build_dose_samples`), already
        filtered (dates, devices); rows without ``standard_exam`` are ignored.
    drls : pandas.DataFrame
        Selected DRL rows (:func:`kerma.analysis.reference.select_drls`).
    min_sample : int, optional
        Minimum sample per room and exam, in patients: distinct studies
        (``study_id``) contributing values, not the values themselves (ICRP 135: 20
        patients; ``Settings.drl_min_sample``).
    min_sample_mammography : int, optional
        Minimum for mammography, in patients (ICRP 135: 50), however many views each
        contributes (``Settings.drl_min_sample_mammography``).
    adult_age_years : float, optional
        Age (years) from which adult DRLs apply (default 18); younger patients are
        compared with the paediatric rows whose band contains their age or weight.
    unknown_age : {"adult", "exclude"}, optional
        Samples whose patient age is unknown are compared with the adult DRLs
        (``"adult"``, default) or left out (``"exclude"``); ``Settings.drl_unknown_age``.
        Paediatric rows never take them.
    include_no_drl : bool, optional
        Also list exams and rooms that have samples but no DRL in the selected set
        (in the family's main quantity).

    Returns
    -------
    pandas.DataFrame
        One row per (DRL row, room), or per (exam, patient group, room) without DRL:
        ``standard_exam`` (the studies' exam), ``clinical_indication`` (the DRL row's,
        as published), ``patient_group`` (``adult``/``paediatric``), ``band_label``,
        ``view``, ``device_id``, ``device_name``, ``quantity`` (``dlp_mgycm``,
        ``ctdivol_mgy``, ``dap_gym2``, ``dose_rp_gy``, ``agd_mgy``), ``unit`` (canonical),
        ``n`` (values: one
        per study for CT and fluoroscopy, per projection for radiography, per view for
        mammography), ``n_studies`` (distinct studies, i.e. patient examinations, that
        contribute the ``n`` values: the sample size that ICRP 135's minimum applies
        to), ``n_unknown_age`` (values of unknown patient age in this room, exam and
        band: *included* in ``n`` under ``"adult"``, *excluded* from it under
        ``"exclude"``; 0 on paediatric rows), ``unknown_age_policy`` (``"adult"`` or
        ``"exclude"``, saying which), ``min_sample`` (in studies), ``typical_value``
        (median of the ``n`` values, in ``unit``; NaN when ``n_studies`` is below
        ``min_sample``), ``sample_median`` (the same median, also below the minimum:
        shown marked "insufficient", never compared), ``drl_value``, ``ratio_to_drl``,
        ``status`` (``"above"``,
        ``"below"`` (at or below), ``"insufficient sample"``, ``"no DRL in the
        selected set"``, ``"no DRL without clinical indication"``), ``drl_exam`` (the
        exam of the DRL row compared with), ``drl_region``, ``drl_source``,
        ``drl_year``, ``drl_status``, ``drl_verification``, ``source_ref`` (keys of
        ``kerma/reference/SOURCES.md``) and ``note`` (fallbacks and hints).

    Raises
    ------
    kerma.errors.ConfigurationError
        When ``unknown_age`` is not ``"adult"`` or ``"exclude"``.

    References
    ----------
    ICRP Publication 135, Diagnostic Reference Levels in Medical Imaging, Ann. ICRP
    46(1), 2017: the typical value is the median of the DRL quantity for a room and
    examination; the sample should be at least 20 patients (50 for mammography).
    """
    check_unknown_age(unknown_age)
    if samples.empty or "standard_exam" not in samples.columns:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    samples = samples[samples["standard_exam"].notna()]
    cells = plan_comparison(
        present_groups(samples, adult_age_years=adult_age_years),
        drls,
        min_sample=min_sample,
        min_sample_mammography=min_sample_mammography,
        include_no_drl=include_no_drl,
        columns=set(samples.columns),
    )
    rooms = [
        cell_room_medians(samples, cell, adult_age_years=adult_age_years, unknown_age=unknown_age)
        for cell in cells
    ]
    return assemble_comparison(cells, rooms, unknown_age=unknown_age)


def check_unknown_age(unknown_age: str) -> None:
    """Raise when ``unknown_age`` is not a policy of :data:`UNKNOWN_AGE_POLICIES`.

    Raises
    ------
    kerma.errors.ConfigurationError
        When ``unknown_age`` is not ``"adult"`` or ``"exclude"``.
    """
    if unknown_age not in UNKNOWN_AGE_POLICIES:
        raise ConfigurationError(
            f"Unable to compare with DRLs: the unknown-age policy {unknown_age!r} is not "
            f"one of {', '.join(UNKNOWN_AGE_POLICIES)} (KERMA_DRL_UNKNOWN_AGE)."
        )


@dataclass(eq=False)
class RoomCell:
    """One set of room medians of a DRL comparison: which samples, which column.

    The samples of ``family`` mapped to ``exam`` and of ``patient_group`` (``"adult"``:
    at least the adult age, with the unknown-age samples counted in ``n_unknown_age``
    and, under the ``"adult"`` policy, in ``n``; ``"paediatric"``: younger;
    ``"all"``: every sample, as local DRLs take them); when ``drl`` is given, only
    those in its band and view (:func:`_band_mask`) on whose date it is in force
    (:func:`_in_force`); when ``outside`` is given, only those on whose date none of
    these DRL rows is in force. The room medians are taken of ``column``, and a room
    whose sample has fewer than ``min_sample`` distinct studies gets no typical value.

    ``status`` and ``note`` are the comparison's for cells without a DRL row
    (``drl`` is ``None``): ``"no DRL in the selected set"``, ``"no DRL without
    clinical indication"`` or ``"no DRL in force on the study date"``.
    """

    family: str
    exam: str
    patient_group: str
    column: str
    min_sample: int
    drl: pd.Series | None = None
    drl_exam: str = ""
    outside: tuple[pd.Series, ...] = ()
    status: str | None = None
    note: str = ""


#: Patient groups of the comparison, in the order their rows are listed.
PATIENT_GROUPS: Final[tuple[str, ...]] = ("adult", "paediatric")


def present_groups(
    samples: pd.DataFrame, *, adult_age_years: float = ADULT_AGE_YEARS
) -> set[tuple[str, str, str]]:
    """Return the (modality family, standard exam, patient group) that have samples.

    A sample of unknown age belongs to the adult group (counted there whatever the
    unknown-age policy); ``samples`` without ``standard_exam`` are ignored.
    """
    data = samples[samples["standard_exam"].notna()]
    age = pd.to_numeric(
        data.get("patient_age_years", pd.Series(np.nan, index=data.index)), errors="coerce"
    )
    is_child = (age < adult_age_years).to_numpy()
    out: set[tuple[str, str, str]] = set()
    for group, members in (("adult", ~is_child), ("paediatric", is_child)):
        keys = data.loc[members, ["modality_family", "standard_exam"]].drop_duplicates()
        out |= {(str(f), str(e), group) for f, e in keys.itertuples(index=False)}
    return out


def plan_comparison(
    present: set[tuple[str, str, str]],
    drls: pd.DataFrame,
    *,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    include_no_drl: bool = True,
    columns: set[str] | None = None,
) -> list[RoomCell]:
    """Return the room medians a DRL comparison needs, in the order of its rows.

    Parameters
    ----------
    present : set of (str, str, str)
        The (modality family, standard exam, patient group) that have samples
        (:func:`present_groups`, or the database's counts).
    drls : pandas.DataFrame
        Selected DRL rows (:func:`kerma.analysis.reference.select_drls`).
    min_sample, min_sample_mammography, include_no_drl : optional
        As :func:`compare_with_drls`.
    columns : set of str, optional
        The sample columns there are (default: all); a DRL row whose column is
        missing is not compared.

    Returns
    -------
    list of RoomCell
        Per (family, exam) in sorted order and patient group (adult, paediatric):
        one cell per matching DRL row (then one for the samples no edition covers),
        or one without DRL (the family's main quantity) when the set has none.
    """
    keyed = drls.assign(_key=_drl_exam_key(drls))
    by_group = {
        (str(family), str(group)): rows
        for (family, group), rows in keyed.groupby(["modality_family", "patient_group"])
    }
    empty = keyed.iloc[0:0]
    order = {group: i for i, group in enumerate(PATIENT_GROUPS)}
    cells: list[RoomCell] = []
    for family, exam, patient_group in sorted(present, key=lambda k: (k[0], k[1], order[k[2]])):
        threshold = min_sample_mammography if family == "MG" else min_sample
        primary = DRL_QUANTITY_COLUMNS.get((family, PRIMARY_QUANTITY.get(family, "")))
        candidates = by_group.get((family, patient_group), empty)
        matched, drl_exam = _matching_drls(candidates, exam)
        if matched.empty:
            if include_no_drl and primary is not None:
                status, note = _no_drl_status(candidates, exam)
                cells.append(
                    RoomCell(family, exam, patient_group, primary, threshold, status=status,
                             note=note)
                )  # fmt: skip
            continue
        note = (
            ""
            if drl_exam == exam
            else f"no {patient_group} DRL for {exam} in the selected set; compared "
            f"with the {drl_exam} DRL"
        )
        compared: list[pd.Series] = []
        for _, drl in matched.iterrows():
            column = DRL_QUANTITY_COLUMNS.get((family, str(drl["quantity"])))
            if column is None or (columns is not None and column not in columns):
                continue
            compared.append(drl)
            cells.append(
                RoomCell(family, exam, patient_group, column, threshold, drl=drl,
                         drl_exam=drl_exam, note=note)
            )  # fmt: skip
        if include_no_drl and compared and primary is not None:
            cells.append(
                RoomCell(
                    family,
                    exam,
                    patient_group,
                    primary,
                    threshold,
                    outside=tuple(compared),
                    status=STATUS_NO_EDITION,
                    note=f"no edition of the selected set's {drl_exam} DRL was in force on "
                    "these studies' dates (the set's editions of it are valid "
                    f"{_validity_text(matched)})",
                )
            )
    return cells


def cell_room_medians(
    samples: pd.DataFrame,
    cell: RoomCell,
    *,
    adult_age_years: float = ADULT_AGE_YEARS,
    unknown_age: str = "adult",
) -> pd.DataFrame:
    """Return the room medians of one cell from a sample frame (:func:`_room_medians`)."""
    if cell.column not in samples.columns:
        return pd.DataFrame()
    subset = samples[
        (samples["modality_family"] == cell.family) & (samples["standard_exam"] == cell.exam)
    ]
    age = pd.to_numeric(
        subset.get("patient_age_years", pd.Series(np.nan, index=subset.index)),
        errors="coerce",
    )
    is_unknown = age.isna()
    if cell.patient_group == "all":
        included = pd.Series(True, index=subset.index)
        unknown = pd.Series(False, index=subset.index)
    elif cell.patient_group == "adult":
        included = (~is_unknown & ~(age < adult_age_years)) | (
            is_unknown & (unknown_age == "adult")
        )
        unknown = is_unknown
    else:
        included = age < adult_age_years
        unknown = pd.Series(False, index=subset.index)
    keep = pd.Series(True, index=subset.index)
    if cell.drl is not None:
        keep &= _band_mask(subset, cell.drl) & _in_force(subset, cell.drl)
    if cell.outside:
        covered = pd.Series(False, index=subset.index)
        for drl in cell.outside:
            covered |= _in_force(subset, drl)
        keep &= ~covered & (included | unknown)
    if cell.patient_group == "all":
        return _room_medians(subset[keep], cell.column, cell.min_sample)
    return _room_medians(subset[keep], cell.column, cell.min_sample, included[keep], unknown[keep])


def assemble_comparison(
    cells: Sequence[RoomCell], rooms: Sequence[pd.DataFrame], *, unknown_age: str
) -> pd.DataFrame:
    """Return the :func:`compare_with_drls` frame from its cells and their room medians.

    Parameters
    ----------
    cells : sequence of RoomCell
        :func:`plan_comparison`.
    rooms : sequence of pandas.DataFrame
        Per cell, one row per room (``device_id`` order): ``device_id``,
        ``device_name``, ``n``, ``n_studies``, ``n_unknown_age``, ``typical_value``
        (NaN below the minimum) and ``sample_median``.
    unknown_age : str
        The unknown-age policy (shown in ``unknown_age_policy``).
    """
    kept = [(cell, found) for cell, found in zip(cells, rooms, strict=True) if not found.empty]
    if not kept:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    # one metadata row per cell, repeated over its rooms (not one assignment per cell)
    meta = pd.DataFrame([_cell_columns(cell) for cell, _ in kept])
    meta = meta.loc[meta.index.repeat([len(found) for _, found in kept])]
    found_rooms = pd.concat([found for _, found in kept], ignore_index=True)
    out = pd.concat([found_rooms, meta.reset_index(drop=True)], axis=1)
    for name in COMPARISON_COLUMNS:
        if name not in out.columns:
            out[name] = np.nan
    out["ratio_to_drl"] = out["typical_value"] / out["drl_value"]
    out["status"] = np.select(
        [
            out["status"].notna(),
            out["drl_value"].isna(),
            out["typical_value"].isna(),
            out["typical_value"] > out["drl_value"],
        ],
        [out["status"], STATUS_NO_DRL, STATUS_INSUFFICIENT, STATUS_ABOVE],
        default=STATUS_BELOW,
    )
    for name in ("clinical_indication", "band_label", "view", "drl_exam", "note"):
        out[name] = out[name].fillna("")
    out["n"] = out["n"].astype(int)
    out["n_studies"] = out["n_studies"].astype(int)
    out["n_unknown_age"] = out["n_unknown_age"].astype(int)
    out["unknown_age_policy"] = unknown_age
    out = out[list(COMPARISON_COLUMNS)]
    for name in ("drl_valid_from", "drl_valid_to"):  # the DRL table's unit, not the cells'
        out[name] = pd.to_datetime(out[name]).astype("datetime64[ns]")
    for name in _TEXT_COLUMNS:
        out[name] = out[name].astype("str")
    return out.sort_values(
        ["standard_exam", "quantity", "patient_group", "band_label", "device_name"],
        ignore_index=True,
    )


def _cell_columns(cell: RoomCell) -> dict[str, Any]:
    """Return the comparison columns a cell gives each of its rooms (DRL row or status)."""
    if cell.drl is None:
        quantity = PRIMARY_QUANTITY[cell.family]
        return {
            "standard_exam": cell.exam,
            "quantity": quantity,
            "unit": QUANTITY_UNITS[quantity],
            "min_sample": cell.min_sample,
            "drl_value": np.nan,
            "patient_group": cell.patient_group,
            "status": cell.status,
            "note": cell.note,
        }
    drl = cell.drl
    return {
        "min_sample": cell.min_sample,
        "drl_value": float(drl["drl_value"]),
        "standard_exam": cell.exam,
        "drl_exam": cell.drl_exam,
        "note": cell.note,
        **{name: drl[name] for name in ("clinical_indication", "patient_group", "band_label")},
        "view": drl["view"] if isinstance(drl["view"], str) else "",
        "quantity": drl["quantity"],
        "unit": drl["unit"],
        **{name: drl[name] for name in ("drl_region", "drl_source", "drl_year", "source_ref")},
        "drl_status": drl["status"],
        "drl_verification": drl["verification"],
        "drl_valid_from": drl.get("valid_from", pd.NaT),
        "drl_valid_to": drl.get("valid_to", pd.NaT),
    }


def _validity_text(drls: pd.DataFrame) -> str:
    """Return the validity periods of DRL rows, e.g. ``"2010-07-28 to 2016-07-14"``."""
    if "valid_from" not in drls.columns or "valid_to" not in drls.columns:
        return "no validity dates"
    periods = []
    for valid_from, valid_to in (
        drls[["valid_from", "valid_to"]].drop_duplicates().itertuples(index=False)
    ):
        start = pd.Timestamp(valid_from).date().isoformat() if pd.notna(valid_from) else "…"
        end = pd.Timestamp(valid_to).date().isoformat() if pd.notna(valid_to) else "…"
        periods.append(f"{start} to {end}")
    return "; ".join(periods)


def local_drls(
    samples: pd.DataFrame,
    *,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    quantities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return local DRLs: the 75th percentile of room medians per exam (ICRP 135).

    Only rooms whose sample reaches the minimum, counted in distinct studies
    (patients, ICRP 135) rather than values, contribute a median. The percentile is
    ``numpy.percentile(medians, 75, method="linear")``. With a single room the local
    DRL equals that room's median (ICRP 135 then speaks of a typical value; the
    ``n_rooms`` column shows it).

    Parameters
    ----------
    samples : pandas.DataFrame
        Sample frame (:func:`kerma.analysis.frames.build_dose_samples`).
    min_sample, min_sample_mammography : int, optional
        Minimum sample per room, in distinct studies (ICRP 135: 20 patients,
        mammography 50).
    quantities : sequence of str, optional
        Sample columns (default: every ``SAMPLE_QUANTITIES`` column with data).

    Returns
    -------
    pandas.DataFrame
        One row per (``modality_family``, ``standard_exam``, ``quantity``):
        ``unit``, ``n_rooms`` (rooms with a sufficient sample), ``n`` (their values),
        ``n_studies`` (their distinct studies),
        ``local_drl`` (in ``unit``), ``median_of_room_medians``.
    """
    if quantities is None:
        quantities = [q for q in SAMPLE_QUANTITIES if q in samples.columns]
    data = samples[samples["standard_exam"].notna()]
    pairs = data[["modality_family", "standard_exam"]].drop_duplicates()
    cells = plan_local_drls(
        {(str(f), str(e)) for f, e in pairs.itertuples(index=False)},
        {family: list(quantities) for family in data["modality_family"].unique()},
        min_sample=min_sample,
        min_sample_mammography=min_sample_mammography,
    )
    return assemble_local_drls(cells, [cell_room_medians(data, cell) for cell in cells])


#: Columns of :func:`local_drls`.
LOCAL_DRL_COLUMNS: Final[tuple[str, ...]] = (
    "modality_family",
    "standard_exam",
    "quantity",
    "unit",
    "n_rooms",
    "n",
    "n_studies",
    "local_drl",
    "median_of_room_medians",
)


def plan_local_drls(
    present: set[tuple[str, str]],
    quantities: Mapping[str, Sequence[str]],
    *,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
) -> list[RoomCell]:
    """Return the room medians local DRLs need: per (family, exam) and quantity, all samples.

    Parameters
    ----------
    present : set of (str, str)
        The (modality family, standard exam) pairs that have samples.
    quantities : mapping of str to sequence of str
        Sample columns described per modality family, in the order of the rows.
    min_sample, min_sample_mammography : int, optional
        As :func:`local_drls`.
    """
    cells = []
    for family, exam in sorted(present):
        threshold = min_sample_mammography if family == "MG" else min_sample
        cells += [
            RoomCell(family, exam, "all", quantity, threshold)
            for quantity in quantities.get(family, ())
        ]
    return cells


def assemble_local_drls(cells: Sequence[RoomCell], rooms: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Return the :func:`local_drls` frame from its cells and their room medians."""
    rows = []
    for cell, found in zip(cells, rooms, strict=True):
        if found.empty:
            continue
        sufficient = found.dropna(subset=["typical_value"])
        if sufficient.empty:
            continue
        medians = sufficient["typical_value"].to_numpy(dtype=float)
        rows.append(
            {
                "modality_family": cell.family,
                "standard_exam": cell.exam,
                "quantity": cell.column,
                "unit": SAMPLE_QUANTITIES.get(cell.column, ""),
                "n_rooms": len(medians),
                "n": int(sufficient["n"].sum()),
                "n_studies": int(sufficient["n_studies"].sum()),
                "local_drl": float(np.percentile(medians, 75, method="linear")),
                "median_of_room_medians": float(np.median(medians)),
            }
        )
    return pd.DataFrame(rows, columns=list(LOCAL_DRL_COLUMNS))


def compare_by_period(
    samples: pd.DataFrame,
    drls: pd.DataFrame,
    *,
    period: str = "quarter",
    consecutive: int = 2,
    min_sample: int = 20,
    min_sample_mammography: int = 50,
    adult_age_years: float = ADULT_AGE_YEARS,
    unknown_age: str = "adult",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the DRL comparison per period and the rooms consistently above the DRL.

    Parameters
    ----------
    samples, drls : pandas.DataFrame
        As for :func:`compare_with_drls`; so are ``min_sample``,
        ``min_sample_mammography``, ``adult_age_years`` and ``unknown_age``.
    period : {"month", "quarter", "year"}, optional
        Length of a period (default quarter).
    consecutive : int, optional
        Number of consecutive periods above the DRL that make a room "consistently
        above" (``Settings.drl_consecutive_periods``, default 2). Periods are
        consecutive when they are adjacent in the calendar; a period with an
        insufficient sample or without data breaks the run.

    Returns
    -------
    tuple of pandas.DataFrame
        ``per_period``: the :func:`compare_with_drls` columns plus ``period``;
        ``summary``: one row per (exam, DRL row, room, quantity) with
        ``periods_above`` (count), ``longest_run_above``, ``last_period``,
        ``last_status`` and ``consistently_above`` (bool: longest run ≥
        ``consecutive``).

    Raises
    ------
    kerma.errors.ConfigurationError
        When ``unknown_age`` is not ``"adult"`` or ``"exclude"``.
    """
    with_period = add_period(samples, period)
    parts = []
    for label, subset in with_period.groupby("period", sort=True):
        compared = compare_with_drls(
            subset,
            drls,
            min_sample=min_sample,
            min_sample_mammography=min_sample_mammography,
            adult_age_years=adult_age_years,
            unknown_age=unknown_age,
            include_no_drl=False,
        )
        compared.insert(0, "period", label)
        parts.append(compared)
    return summarise_periods(parts, period=period, consecutive=consecutive)


def summarise_periods(
    parts: Sequence[pd.DataFrame], *, period: str, consecutive: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return :func:`compare_by_period`'s frames from the per-period comparisons.

    Parameters
    ----------
    parts : sequence of pandas.DataFrame
        Per period in label order, :func:`compare_with_drls` (without the rows of no
        DRL) with the ``period`` label first.
    period : {"month", "quarter", "year"}
        Length of a period.
    consecutive : int
        As :func:`compare_by_period`.
    """
    if not parts:
        empty = pd.DataFrame(columns=["period", *COMPARISON_COLUMNS])
        return empty, pd.DataFrame()
    per_period = pd.concat(parts, ignore_index=True)
    freq = {"month": "M", "quarter": "Q", "year": "Y"}.get(period, period)
    per_period["_ordinal"] = [pd.Period(p, freq=freq).ordinal for p in per_period["period"]]
    key = ["standard_exam", "clinical_indication", "patient_group", "band_label", "view"]
    key += ["device_id", "device_name", "quantity", "drl_exam", "drl_value"]
    summary_rows = []
    for group_key, group in per_period.groupby(key, dropna=False, sort=True):
        group = group.sort_values("_ordinal")
        above = group.loc[group["status"] == STATUS_ABOVE, "_ordinal"].to_list()
        longest = run = 0
        previous: int | None = None
        for ordinal in above:
            run = run + 1 if previous is not None and ordinal == previous + 1 else 1
            longest = max(longest, run)
            previous = ordinal
        summary_rows.append(
            {
                **dict(zip(key, group_key, strict=True)),
                "periods_above": len(above),
                "longest_run_above": longest,
                "last_period": group["period"].iloc[-1],
                "last_status": group["status"].iloc[-1],
                "consistently_above": longest >= consecutive,
            }
        )
    return per_period.drop(columns="_ordinal"), pd.DataFrame(summary_rows)

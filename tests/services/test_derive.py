"""Study summary columns derived at ingest equal the whole-table computation (shared files).

The reference is what Kerma computed before the summary columns existed: the totals of
the old ``Registry.studies()`` SQL (sums of current events, else the current reports'
accumulated totals) and :func:`kerma.analysis.frames.build_dose_samples` /
:func:`kerma.analysis.effective_dose.ct_effective_dose` / the exam rules on the whole
event frame, recomputed here from the stored rows. Where the definition changed on
purpose (Ka,r: the larger plane, never a sum over planes; AGD per breast) the reference
follows the new definition and says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from kerma.analysis.effective_dose import ct_effective_dose
from kerma.analysis.exams import assign_event_exams, assign_study_exams, load_exam_rules
from kerma.analysis.frames import build_dose_samples, modality_family
from kerma.db.models import DoseReport, IrradiationEvent
from kerma.ingest.pseudonym import Pseudonymizer
from kerma.services.registry import Registry
from tests.conftest import CASES_DIR, DICOM_DIR
from tests.db_fixtures import BACKENDS, TEST_PSEUDONYM_KEY, fresh_database, make_settings

pytestmark = pytest.mark.slow


@dataclass
class Imported:
    """A registry holding ../shared/dicom and ../shared/cases, and its frames."""

    registry: Registry
    studies: pd.DataFrame
    events: pd.DataFrame
    reports: pd.DataFrame


@pytest.fixture(scope="module", params=BACKENDS)
def imported(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Imported]:
    """Import every shared file once per backend."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    folder = tmp_path_factory.mktemp("derive")
    with fresh_database(request.param, folder) as url:
        registry = Registry(settings=make_settings(url, folder))
        registry.import_paths([DICOM_DIR, CASES_DIR])
        studies = registry.studies(include_non_patient=True).set_index("study_id")
        events = registry.events(include_non_patient=True)
        r = DoseReport
        with registry.session(write=False) as session:
            rows = session.execute(
                select(
                    r.study_id,
                    r.superseded_by_id,
                    r.ct_dlp_total_mgycm,
                    r.dap_total_gym2,
                    r.fluoro_time_total_s,
                    r.content,
                )
            ).all()
        reports = pd.DataFrame.from_records(
            rows,
            columns=["study_id", "superseded_by_id", "ct_dlp", "dap", "fluoro_s", "content"],
        )
        yield Imported(registry, studies, events, reports)
        registry.close()


def _sum(values: pd.Series) -> float:
    """Return the sum of the present values, NaN when none is present (SQL SUM)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.sum()) if len(values) else math.nan


def _reference_totals(imported: Imported) -> pd.DataFrame:
    """Return the old studies() totals per study (and the new per-plane Ka,r, per-breast AGD)."""
    events, reports = imported.events, imported.reports
    current = reports[reports["superseded_by_id"].isna()]
    out = {}
    for study_id in imported.studies.index:
        ev = events[events["study_id"] == study_id]
        rep = current[current["study_id"] == study_id]
        planes = [
            p for c in rep["content"] for p in (c.get("accumulated") or {}).get("planes") or []
        ]
        fluoro = ev[ev["irradiation_event_type"] == "Fluoroscopy"]
        row: dict[str, Any] = {
            "number_of_events": len(ev),
            "number_of_reports": int((reports["study_id"] == study_id).sum()),
            "ct_dlp_total_mgycm": _first_present(_sum(ev["dlp_mgycm"]), _sum(rep["ct_dlp"])),
            "dap_total_gym2": _first_present(_sum(rep["dap"]), _sum(ev["dap_gym2"])),
            "fluoro_time_total_s": _first_present(
                _sum(rep["fluoro_s"]), _sum(fluoro["irradiation_duration_s"])
            ),
            "administered_activity_total_mbq": _sum(ev["administered_activity_mbq"]),
        }
        # new definition: Ka,r per plane (accumulated, else events), the larger plane
        by_plane: dict[str, list[float]] = {"A": [], "B": []}
        if any(p.get("dose_rp_total_gy") is not None for p in planes):
            for p in planes:
                if p.get("dose_rp_total_gy") is not None:
                    by_plane["B" if p.get("acquisition_plane") == "Plane B" else "A"].append(
                        p["dose_rp_total_gy"]
                    )
        else:
            for plane, value in zip(ev["acquisition_plane"], ev["dose_rp_gy"], strict=True):
                if pd.notna(value):
                    by_plane["B" if plane == "Plane B" else "A"].append(float(value))
        totals = [sum(v) for v in by_plane.values() if v]
        row["dose_rp_total_gy"] = max(totals) if totals else math.nan
        # new definition: AGD per breast (accumulated by laterality, else the events)
        for side, name in (("Left", "agd_total_left_mgy"), ("Right", "agd_total_right_mgy")):
            accumulated = [(c.get("accumulated") or {}).get(name) for c in rep["content"]]
            accumulated = [v for v in accumulated if v is not None]
            row[name] = (
                sum(accumulated)
                if accumulated
                else _sum(ev.loc[ev["laterality"].isin([side, side[0]]), "agd_mgy"])
            )
        out[study_id] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _first_present(a: float, b: float) -> float:
    """Return ``a`` unless it is NaN, else ``b`` (SQL COALESCE)."""
    return b if math.isnan(a) else a


def _assert_column(derived: pd.Series, reference: pd.Series, name: str) -> None:
    """Assert two columns are equal, NaN matching NaN, floats to 1e-9."""
    joined = pd.concat([derived.rename("derived"), reference.rename("reference")], axis=1)
    a = pd.to_numeric(joined["derived"], errors="coerce").to_numpy(dtype=float)
    b = pd.to_numeric(joined["reference"], errors="coerce").to_numpy(dtype=float)
    bad = ~((np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=0.0))
    assert not bad.any(), (name, joined[bad])


class TestSummaryColumnsOnSharedFiles:
    """Every study of ../shared: derived columns = whole-table computation."""

    @pytest.mark.parametrize(
        "column",
        [
            "number_of_events",
            "number_of_reports",
            "ct_dlp_total_mgycm",
            "dap_total_gym2",
            "dose_rp_total_gy",
            "fluoro_time_total_s",
            "agd_total_left_mgy",
            "agd_total_right_mgy",
            "administered_activity_total_mbq",
        ],
    )
    def test_totals(self, imported: Imported, column: str) -> None:
        """Counts and dose totals equal the old studies() aggregation (new Ka,r, AGD rules)."""
        reference = _reference_totals(imported)
        _assert_column(imported.studies[column], reference[column], column)

    def test_there_is_something_to_compare(self, imported: Imported) -> None:
        """The shared files hold CT, projection, mammography and NM studies with totals."""
        studies = imported.studies
        assert studies["ct_dlp_total_mgycm"].notna().sum() >= 10
        assert studies["dap_total_gym2"].notna().sum() >= 10
        assert (
            studies["agd_total_left_mgy"].notna() | studies["agd_total_right_mgy"].notna()
        ).any()
        assert studies["administered_activity_total_mbq"].notna().any()
        assert studies["dose_rp_total_plane_b_gy"].notna().any()  # a biplane study (C30)

    def test_biplane_ka_r_is_the_larger_plane(self, imported: Imported) -> None:
        """C30: KAP adds the planes (7.5e-4 Gy·m²); Ka,r is plane A's 0.06 Gy, not 0.095."""
        studies = imported.studies
        # accession numbers are stored as their keyed hash (kerma.ingest.pseudonym)
        hashed = Pseudonymizer(TEST_PSEUDONYM_KEY.encode(), []).accession_pseudonym("ACCC30")
        row = studies[studies["accession_pseudonym"] == hashed].iloc[0]
        assert row["dap_total_gym2"] == pytest.approx(0.00075)
        assert row["dap_total_plane_a_gym2"] == pytest.approx(0.0005)
        assert row["dap_total_plane_b_gym2"] == pytest.approx(0.00025)
        assert row["dose_rp_total_gy"] == pytest.approx(0.06)
        assert row["dose_rp_total_plane_a_gy"] == pytest.approx(0.06)
        assert row["dose_rp_total_plane_b_gy"] == pytest.approx(0.035)

    def test_ct_values_equal_the_sample_frame(self, imported: Imported) -> None:
        """CTDIvol mean/max, kVp, SSDE and its size equal build_dose_samples on all events."""
        studies = imported.studies.reset_index()
        rules = load_exam_rules()
        samples = build_dose_samples(
            imported.events, studies=studies, rules=rules, include_non_patient=True
        )
        ct = samples[samples["modality_family"] == "CT"].set_index("study_id")
        assert len(ct) >= 10
        derived = imported.studies.loc[ct.index]
        for column in ("ctdivol_mean_mgy", "ctdivol_max_mgy", "kvp_kv", "ssde_mgy", "ssde_size_mm"):
            _assert_column(derived[column], ct[column], column)
        assert (derived["ssde_size_source"].fillna("") == ct["ssde_size_source"].fillna("")).all()
        with_dlp = ct["ct_dlp_total_mgycm"].notna()
        _assert_column(
            derived.loc[with_dlp, "ct_dlp_total_mgycm"],
            ct.loc[with_dlp, "ct_dlp_total_mgycm"],
            "dlp",
        )
        # effective dose: k × DLP with the sample frame's exam, age and kVp
        reference = ct_effective_dose(ct.reset_index()).set_index("study_id")
        _assert_column(
            derived.loc[with_dlp, "effective_dose_msv"],
            reference.loc[with_dlp, "effective_dose_msv"],
            "effective_dose_msv",
        )
        has_e = derived["effective_dose_msv"].notna()
        assert has_e.sum() >= 5
        assert (
            derived.loc[has_e, "effective_dose_reference"]
            .str.contains("ct_effective_dose_k_factors.csv sha256:")
            .all()
        )

    def test_exams_equal_the_rules_on_all_events(self, imported: Imported) -> None:
        """Study exams and per-projection exams equal the rules run on the whole frames."""
        rules = load_exam_rules()
        studies = imported.studies.reset_index()
        mapped = assign_study_exams(studies, imported.events, rules).set_index("study_id")
        stored = imported.studies.loc[mapped.index, "standard_exam"]
        assert (stored.fillna("") == mapped["standard_exam"].fillna("")).all()
        assert stored.notna().sum() >= 10
        events = imported.events.copy()
        events["standard_exam"] = events["study_id"].map(mapped["standard_exam"])
        per_event = modality_family(events).isin(["DX", "MG"])
        expected = assign_event_exams(events[per_event], rules)
        with imported.registry.session(write=False) as session:
            exam_of = dict(
                session.execute(select(IrradiationEvent.id, IrradiationEvent.standard_exam)).all()
            )
        got = events.loc[per_event, "event_id"].map(exam_of).replace("", None)  # "": unmapped
        assert per_event.sum() >= 10
        assert (got.fillna("").to_numpy() == expected.fillna("").to_numpy()).all()
        from kerma.db.models import Study

        with imported.registry.session(write=False) as session:
            fingerprints = set(session.scalars(select(Study.exam_rules_fingerprint)))
        assert fingerprints == {rules.fingerprint}  # every study mapped with these rules

    def test_image_sizes_equal_the_measurements(self, imported: Imported) -> None:
        """image_size_mm is the mean axial Dw of the study UID (else the localizer size)."""
        sizes = imported.registry.study_patient_sizes().set_index("study_instance_uid")
        studies = imported.studies
        with_size = studies[studies["image_size_mm"].notna()]
        for _, row in with_size.iterrows():
            assert row["image_size_mm"] == pytest.approx(
                sizes.loc[row["study_instance_uid"], "image_size_mm"]
            )
            assert (
                row["image_size_source"]
                == sizes.loc[row["study_instance_uid"], "image_size_source"]
            )

    def test_summary_fast_path_equals_reading_path(self, imported: Imported) -> None:
        """Percentiles walked through the indexes equal numpy on the read values."""
        from kerma.db.analytics import summary_groups
        from kerma.services.analytics import _summary_by_reading, _summary_in_database

        registry = imported.registry
        with registry.session(write=False) as session:
            groups = summary_groups(session, flt=None)
            keys = {g.group_id: (g.modality, g.device_id, g.acquisition_protocol) for g in groups}
            fast = _summary_in_database(session, keys)
            from kerma.services.filters import StudyFilter

            slow = _summary_by_reading(session, StudyFilter(), keys)
        assert fast.keys() == slow.keys()
        for key, per_quantity in fast.items():
            for quantity, values in per_quantity.items():
                for name, value in values.items():
                    assert value == pytest.approx(slow[key][quantity][name]), (key, quantity, name)

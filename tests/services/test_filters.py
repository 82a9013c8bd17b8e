"""The one study filter: each field narrows the crafted registry as it should (both stores)."""

from __future__ import annotations

import pytest

from kerma.services.filters import StudyFilter
from kerma.services.registry import Registry
from tests.services.conftest import CT1

#: Patient studies of the crafted registry (``qa`` is the non-patient one).
PATIENT = {"ct1", "ct2", "ct3", "dx", "xa", "mg", "nm"}


def selected(registry: Registry, ids: dict[str, int], flt: StudyFilter) -> set[str]:
    """Return the names of the studies ``flt`` selects, checking list and count agree."""
    page = registry.list_studies(flt, limit=None)
    names = {name for name, sid in ids.items() if sid in {r["study_id"] for r in page.rows}}
    assert page.total == len(page.rows) == registry.count_studies(flt)
    return names


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, PATIENT),
        ({"include_non_patient": True}, PATIENT | {"qa"}),
        ({"modalities": "CT"}, {"ct1", "ct2", "ct3"}),
        ({"modalities": ("dx", "MG")}, {"dx", "mg"}),
        ({"modalities": "XA,NM"}, {"xa", "nm"}),
        ({"date_from": "2024-06-01"}, {"ct2", "ct3", "xa", "mg"}),
        ({"date_to": "2024-01-10"}, {"ct1", "nm"}),
        ({"date_from": "2024-02-01", "date_to": "2024-09-01"}, {"ct2", "dx", "mg"}),
        ({"device_name": "scanner"}, {"ct1", "ct2", "ct3"}),
        ({"device_name": "ctroom2"}, {"ct3"}),  # station name, any case
        ({"device_name": "Scanner One"}, {"ct1", "ct2"}),  # model name
        ({"standard_exams": "CT Head"}, {"ct1", "ct3"}),
        ({"standard_exams": ("CT Chest", "Chest PA")}, {"ct2", "dx"}),
        ({"protocol": "head"}, {"ct1", "ct3"}),
        ({"protocol": "cine"}, {"xa"}),
        ({"study_description": "chest"}, {"ct2", "dx"}),
        ({"age_min_years": 18}, {"ct1", "ct2", "xa", "mg", "nm"}),  # unknown age left out
        ({"age_max_years": 18}, {"ct3"}),
        ({"age_min_years": 45, "age_max_years": 60}, {"mg", "nm"}),  # 60 excluded
        ({"sex": "m"}, {"ct2", "ct3", "nm"}),
        ({"sex": "F"}, {"ct1", "xa", "mg"}),
        ({"weight_min_kg": 70}, {"ct2", "xa", "nm"}),
        ({"weight_min_kg": 60, "weight_max_kg": 70}, {"ct1", "mg"}),
        ({"dose_quantity": "ct_dlp_total_mgycm", "dose_min": 500}, {"ct1", "ct3"}),
        ({"dose_quantity": "ct_dlp_total_mgycm", "dose_max": 500}, {"ct2", "ct3"}),
        ({"dose_quantity": "dap_total_gym2", "dose_min": 1e-4}, {"xa"}),
        ({"dose_quantity": "dose_rp_total_gy", "dose_min": 1.0, "dose_max": 1.2}, {"xa"}),
        ({"dose_quantity": "agd_total_left_mgy", "dose_min": 2.0}, {"mg"}),
        ({"dose_quantity": "administered_activity_total_mbq", "dose_min": 100}, {"nm"}),
    ],
    ids=lambda v: str(v) if not isinstance(v, set) else "",
)
def test_each_field_narrows(crafted, fields: dict, expected: set[str]) -> None:
    """A field selects exactly the studies that have the value (the rows are asserted)."""
    registry, ids = crafted
    assert selected(registry, ids, StudyFilter(**fields)) == expected


def test_fields_combine_with_and(crafted) -> None:
    """Modality, date, device and sex together select their intersection."""
    registry, ids = crafted
    flt = StudyFilter(modalities="CT", date_to="2024-12-31", device_name=CT1, sex="F")
    assert selected(registry, ids, flt) == {"ct1"}


def test_device_ids(crafted) -> None:
    """device_ids selects the studies of those rooms."""
    registry, ids = crafted
    study = registry.study(ids["ct3"]).study
    assert selected(registry, ids, StudyFilter(device_ids=study["device_id"])) == {"ct3"}


def test_the_same_filter_drives_every_service(crafted) -> None:
    """Listing, summary, statistics and cumulative all honour the filter."""
    registry, _ = crafted
    flt = StudyFilter(date_from="2025-01-01")  # ct3 and xa
    summary = registry.summary(flt=flt)
    assert set(summary["modality"]) == {"CT", "XA"}
    assert set(summary["acquisition_protocol"]) == {"Head paed", "Cardiac fluoro", "Cardiac cine"}
    stats = registry.statistics(flt, by=["standard_exam"]).table
    assert set(stats["standard_exam"]) == {"CT Head", "Coronary angiography"}
    cumulative = registry.cumulative(flt, window_days=3650)
    assert cumulative["number_of_studies"].sum() == 2


class TestValidation:
    """Bad filter values are refused with a clear message."""

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"sex": "X"}, "sex 'X' is not one of M, F, O"),
            ({"dose_quantity": "kap_gycm2", "dose_min": 1}, "'kap_gycm2' is not a study dose"),
            ({"dose_min": 1}, "a dose range needs dose_quantity"),
            ({"age_min_years": 18, "age_max_years": 10}, "age band minimum 18 must be below"),
            ({"date_from": "01.02.2024"}, "Invalid isoformat"),
            ({"weight_min_kg": "heavy"}, "weight_min_kg 'heavy' is not a number"),
        ],
    )
    def test_refused(self, fields: dict, message: str) -> None:
        """The constructor raises ValueError naming the field."""
        with pytest.raises(ValueError, match=message):
            StudyFilter(**fields)

    def test_is_frozen_and_normalised(self) -> None:
        """Strings become tuples and dates; the filter is hashable and immutable."""
        flt = StudyFilter(modalities="ct, dx", date_from="2024-01-01", standard_exams="CT Head")
        assert flt.modalities == ("CT", "DX")
        assert flt.standard_exams == ("CT Head",)
        assert str(flt.date_from) == "2024-01-01"
        assert hash(flt) == hash(StudyFilter(modalities=("CT", "DX"), date_from="2024-01-01",
                                             standard_exams=("CT Head",)))  # fmt: skip
        with pytest.raises(AttributeError):
            flt.sex = "F"  # type: ignore[misc]

"""Paged, sorted listings, streaming and study detail (kerma.services.studies), both stores."""

from __future__ import annotations

import pytest

from kerma.db.studies import STUDY_COLUMNS
from kerma.errors import NotFoundError, UnknownColumnError
from kerma.services.filters import StudyFilter

EVERYTHING = StudyFilter(include_non_patient=True)


class TestSorting:
    """Sort in the database by any listed column, ties broken by study id."""

    def test_default_is_newest_first_with_id_tiebreak(self, crafted) -> None:
        """Dates descending; ct1 and qa share a date and time: the higher id first."""
        registry, ids = crafted
        rows = registry.list_studies(EVERYTHING, limit=None).rows
        dates = [r["study_date"] for r in rows]
        assert dates == sorted(dates, reverse=True)
        order = [r["study_id"] for r in rows]
        assert order.index(ids["qa"]) < order.index(ids["ct1"])  # same date: id descending

    @pytest.mark.parametrize(
        "column",
        [
            "device_name",
            "study_description",
            "patient_age_years",
            "dap_total_gym2",
            "ct_dlp_total_mgycm",
            "standard_exam",
            "number_of_events",
        ],
    )
    @pytest.mark.parametrize("direction", ["asc", "desc"])
    def test_any_column_either_way(self, crafted, column: str, direction: str) -> None:
        """Values are ordered (missing ones grouped at one end); equal values by id."""
        registry, _ = crafted
        rows = registry.list_studies(EVERYTHING, sort=f"{column}:{direction}", limit=None).rows
        assert len(rows) == 8
        present = [(r[column], r["study_id"]) for r in rows if r[column] is not None]
        keyed = sorted(present, reverse=direction == "desc")
        assert present == keyed
        missing = [i for i, r in enumerate(rows) if r[column] is None]
        assert missing == list(range(missing[0], missing[0] + len(missing))) if missing else True

    def test_several_keys(self, crafted) -> None:
        """device_name then study_date descending: each room's studies newest first."""
        registry, ids = crafted
        rows = registry.list_studies(
            EVERYTHING, sort=[("device_name", "asc"), ("study_date", "desc")], limit=None
        ).rows
        ct1 = [r["study_id"] for r in rows if r["device_name"].startswith("ACME Scanner One")]
        assert ct1 == [ids["ct2"], ids["qa"], ids["ct1"]]

    def test_unknown_column_refused(self, crafted) -> None:
        """A sort key that is not a listed column names the columns allowed."""
        registry, _ = crafted
        with pytest.raises(UnknownColumnError, match="Unable to sort studies by 'kap_gycm2'"):
            registry.list_studies(sort="kap_gycm2:desc")
        with pytest.raises(UnknownColumnError, match="direction 'down'"):
            registry.list_studies(sort="study_date:down")


class TestPaging:
    """LIMIT/OFFSET pages in the database cover every row once, in order."""

    @pytest.mark.parametrize("sort", [None, "device_name", "dap_total_gym2:desc"])
    def test_pages_concatenate_to_the_full_listing(self, crafted, sort: str | None) -> None:
        """Pages of 3 (3 + 3 + 2) equal the unpaged listing; the total is on each page."""
        registry, _ = crafted
        full = [
            r["study_id"] for r in registry.list_studies(EVERYTHING, sort=sort, limit=None).rows
        ]
        paged = []
        for page in range(4):
            result = registry.list_studies(EVERYTHING, sort=sort, limit=3, offset=3 * page)
            assert result.total == 8
            paged += [r["study_id"] for r in result.rows]
        assert paged == full
        assert len(registry.list_studies(EVERYTHING, limit=3, offset=6).rows) == 2
        assert registry.list_studies(EVERYTHING, limit=3, offset=9).rows == []

    def test_columns_and_frame(self, crafted) -> None:
        """A page can carry a few columns and turn into a DataFrame with typed dates."""
        registry, _ = crafted
        page = registry.list_studies(limit=2)
        assert page.columns == STUDY_COLUMNS
        frame = page.to_frame()
        assert list(frame.columns) == list(STUDY_COLUMNS)
        assert frame["study_date"].dtype.kind == "M"
        assert len(frame) == 2


class TestStreamingAndDetail:
    """Iterators for exports and the study detail."""

    def test_iter_studies_and_events_stream_everything(self, crafted) -> None:
        """Every selected study and each current event come out, oldest first."""
        registry, _ = crafted
        studies = list(registry.iter_studies(EVERYTHING, batch_size=3))
        assert len(studies) == 8
        dates = [s["study_date"] for s in studies]
        assert dates == sorted(dates)
        events = list(registry.iter_events(StudyFilter(modalities="MG"), batch_size=2))
        assert [e["agd_mgy"] for e in events] == [1.2, 1.1, 1.5]

    def test_study_detail_holds_its_events(self, crafted) -> None:
        """The XA study: its summary and its two events with their planes."""
        registry, ids = crafted
        detail = registry.study(ids["xa"])
        assert detail.study["dose_rp_total_gy"] == pytest.approx(1.2)  # larger plane
        assert [e["acquisition_plane"] for e in detail.events] == ["Plane A", "Plane B"]

    def test_unknown_study_raises(self, crafted) -> None:
        """NotFoundError names the id."""
        registry, _ = crafted
        with pytest.raises(NotFoundError, match="No study with id 9999"):
            registry.study(9999)

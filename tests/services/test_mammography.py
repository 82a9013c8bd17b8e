"""Mammography: AGD per view, accumulated per breast, never summed across breasts; DRLs
compared per view and compressed-breast-thickness band, as each DRL table defines them.

Expected values come from ../shared/dicom/expected/*.json of the MG RDSRs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from kerma.api import Registry
from kerma.db.models import DoseReport
from tests.conftest import DICOM_DIR
from tests.db_fixtures import BACKENDS, fresh_database, make_settings

pytestmark = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

FILES = ("MG-RDSR-GEPristina-2D", "MG-RDSR-Giotto-DBT", "MG-RDSR-Hologic_2D", "MG-RDSR-Hologic_mix")
VIEWS = {"cranio-caudal": "CC", "medio-lateral oblique": "MLO"}


def expected(name: str) -> dict:
    """Return the expected record of a shared file."""
    return json.loads((DICOM_DIR / "expected" / f"{name}.json").read_text())


@pytest.fixture(scope="module", params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Registry]:
    """A registry holding the four mammography RDSRs."""
    folder = tmp_path_factory.mktemp("mg")
    with fresh_database(request.param, folder) as url:
        reg = Registry(settings=make_settings(url, folder))
        reg.import_paths([DICOM_DIR / f"{name}.dcm" for name in FILES])
        yield reg
        reg.close()


@pytest.mark.parametrize("name", FILES)
class TestPerViewAndPerBreast:
    """AGD per view (events) and accumulated per breast (study), from the RDSR."""

    def test_agd_per_view_is_each_events_value(self, registry: Registry, name: str) -> None:
        """Every view keeps its own AGD (mGy), laterality, view and thickness."""
        want = expected(name)
        uid = want["study"]["study_instance_uid"]
        events = registry.events(include_non_patient=True)
        events = events[events["study_instance_uid"] == uid]
        got = sorted(
            zip(
                events["laterality"],
                events["agd_mgy"],
                events["compression_thickness_mm"],
                strict=True,
            )
        )
        wanted = sorted(
            (e["laterality"], e["agd_mgy"], e["compression_thickness_mm"]) for e in want["events"]
        )
        assert [g[0] for g in got] == [w[0] for w in wanted]
        assert [g[1] for g in got] == pytest.approx([w[1] for w in wanted])
        assert [g[2] for g in got] == pytest.approx([w[2] for w in wanted])

    def test_study_agd_is_per_breast_never_summed(self, registry: Registry, name: str) -> None:
        """Study: the RDSR's accumulated AGD per breast (TID 10005); the report's AGD is the
        larger breast, not the sum of both."""
        want = expected(name)
        acc = want["accumulated"]
        studies = registry.studies(include_non_patient=True)
        study = studies[studies["study_instance_uid"] == want["study"]["study_instance_uid"]]
        assert len(study) == 1
        left, right = study.iloc[0]["agd_total_left_mgy"], study.iloc[0]["agd_total_right_mgy"]
        assert left == pytest.approx(acc["agd_total_left_mgy"])
        assert right == pytest.approx(acc["agd_total_right_mgy"])
        with registry.session(write=False) as session:
            report = session.scalars(
                select(DoseReport).where(DoseReport.sop_instance_uid == want["sop_instance_uid"])
            ).one()
            assert report.agd_total_mgy == pytest.approx(max(left, right))
        if left and right:
            assert not any(
                isinstance(v, float) and math.isclose(v, left + right)
                for v in study.iloc[0].to_dict().values()
            )


class TestDrlPerViewAndBand:
    """The UG table defines DRLs per view (CC, MLO) and compressed-thickness band."""

    def test_views_are_compared_in_their_band(self, registry: Registry) -> None:
        """Each view's AGD goes to the UG row of its view and thickness band, no other."""
        result = registry.drl(drl_set="UG", families=["MG"])
        rows = result.comparison
        for name in FILES:
            want = expected(name)
            device = registry.studies(include_non_patient=True)
            device = device[device["study_instance_uid"] == want["study"]["study_instance_uid"]]
            room = rows[rows["device_id"] == device.iloc[0]["device_id"]]
            bands = {(7, 39): 0, (40, 59): 0, (60, 99): 0}
            counts: dict[tuple[str, tuple[int, int]], int] = {}
            for e in want["events"]:
                view = VIEWS[e["image_view"]]
                for band in bands:
                    if band[0] <= e["compression_thickness_mm"] <= band[1]:
                        counts[(view, band)] = counts.get((view, band), 0) + 1
            got = {
                (r["view"], r["drl_value"]): r["n"]
                for r in room.to_dict("records")
                if r["drl_region"] == "UG"
            }
            drl = {
                ("CC", (7, 39)): 1.5,
                ("MLO", (7, 39)): 1.66,
                ("CC", (40, 59)): 1.78,
                ("MLO", (40, 59)): 1.87,
                ("CC", (60, 99)): 2.18,
                ("MLO", (60, 99)): 2.22,
            }
            assert got == {(view, drl[(view, band)]): n for (view, band), n in counts.items()}

"""The JSON API under /api/v1 on SQLite and PostgreSQL: paginated, filtered, same values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.filters import StudyFilter
from tests.db_fixtures import BACKENDS
from tests.web.dashboard_fixtures import dash_client, dash_registry, shared_settings

__all__ = ["dash_client", "dash_registry"]  # fixtures used by the tests below


@pytest.fixture(scope="module", params=BACKENDS)
def dash_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The registry of ../shared/dicom on SQLite, then PostgreSQL."""
    yield from shared_settings(request.param, tmp_path_factory)


class TestStudiesApi:
    def test_pages_cover_every_study_once(
        self, dash_client: TestClient, dash_registry: Any
    ) -> None:
        """Walking the pages of 10 returns every patient study once; total is right."""
        expected = set(dash_registry.studies()["study_id"])
        seen: list[int] = []
        page = 1
        while True:
            body = dash_client.get("/api/v1/studies", params={"per_page": 10, "page": page}).json()
            assert body["total"] == len(expected)
            if not body["items"]:
                break
            seen += [item["study_id"] for item in body["items"]]
            page += 1
        assert sorted(seen) == sorted(expected)

    def test_filters_filter(self, dash_client: TestClient, dash_registry: Any) -> None:
        """modality and a date range keep exactly the matching studies."""
        f = dash_registry.studies()
        keep = (f["modality"] == "RF") & (f["study_date"] >= "2017-01-01")
        body = dash_client.get(
            "/api/v1/studies", params={"modality": "RF", "date_from": "2017-01-01", "per_page": 500}
        ).json()
        assert {i["study_id"] for i in body["items"]} == set(f.loc[keep, "study_id"])
        assert all(i["modality"] == "RF" and i["study_date"] >= "2017-01-01" for i in body["items"])
        assert body["total"] == int(keep.sum())

    def test_bad_filter_is_400_json(self, dash_client: TestClient) -> None:
        """A bad value answers 400 with a JSON detail."""
        answer = dash_client.get("/api/v1/studies", params={"sex": "X"})
        assert answer.status_code == 400
        assert "sex" in answer.json()["detail"]

    @pytest.mark.parametrize(
        "path", ["/api/v1/studies", "/api/v1/statistics", "/api/v1/drl", "/api/v1/quality/ei"]
    )
    def test_misspelt_parameter_is_400_naming_it(self, dash_client: TestClient, path: str) -> None:
        """A parameter the endpoint does not take (a misspelt filter) answers 400 naming
        it and the endpoint's own, instead of answering for every study."""
        answer = dash_client.get(path, params={"modalty": "CT"})
        assert answer.status_code == 400, answer.text
        detail = answer.json()["detail"]
        assert "modalty" in detail and "modality" in detail
        assert dash_client.get("/api/v1/studies", params={"modality": "CT"}).status_code == 200

    def test_unknown_sort_column_is_400_json(self, dash_client: TestClient) -> None:
        """A sort by a column that does not exist answers 400 naming it, not a 500."""
        answer = dash_client.get("/api/v1/studies", params={"sort": "zzz"})
        assert answer.status_code == 400
        assert "'zzz'" in answer.json()["detail"]

    def test_events_of_a_study(self, dash_client: TestClient, dash_registry: Any) -> None:
        """The events endpoint returns every current event with canonical values."""
        f = dash_registry.studies()
        study_id = int(f.loc[f["modality"] == "CT", "study_id"].iloc[0])
        detail = dash_registry.study(study_id)
        body = dash_client.get(f"/api/v1/studies/{study_id}/events").json()
        assert len(body["rows"]) == len(detail.events)
        dlp = sum(e["dlp_mgycm"] or 0 for e in body["rows"])
        assert dlp == pytest.approx(sum(e["dlp_mgycm"] or 0 for e in detail.events))
        one = dash_client.get(f"/api/v1/studies/{study_id}").json()
        assert one["study"]["study_instance_uid"] == detail.study["study_instance_uid"]
        assert dash_client.get("/api/v1/studies/999999").status_code == 404


class TestAggregatesApi:
    def test_statistics(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Statistics per exam and room equal the registry's."""
        body = dash_client.get("/api/v1/statistics", params={"modality": "CT"}).json()
        expected = dash_registry.statistics(StudyFilter(modalities="CT"))
        assert body["n_samples"] == expected.n_samples > 0
        assert len(body["rows"]) == len(expected.table)

    def test_drl(self, dash_client: TestClient, dash_registry: Any) -> None:
        """The DRL comparison has one row per room, exam and quantity of the registry's."""
        body = dash_client.get("/api/v1/drl").json()
        assert len(body["rows"]) == len(dash_registry.drl().comparison)

    def test_studies_per_month(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Studies per month add up to the patient studies."""
        body = dash_client.get("/api/v1/overview/studies-per-month").json()
        assert sum(r["n_studies"] for r in body["rows"]) == len(dash_registry.studies())

    def test_alerts(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Alerts list with total, and one alert with its history."""
        body = dash_client.get("/api/v1/alerts").json()
        assert body["total"] == dash_registry.count_alerts()
        alert_id = body["items"][0]["alert_id"]
        one = dash_client.get(f"/api/v1/alerts/{alert_id}").json()
        assert one["alert_id"] == alert_id
        assert one["history_entries"]

    def test_openapi_describes_the_api(self, dash_client: TestClient) -> None:
        """The OpenAPI description lists every /api/v1 path."""
        paths = dash_client.get("/openapi.json").json()["paths"]
        for path in ("/api/v1/studies", "/api/v1/studies/{study_id}/events",
                     "/api/v1/statistics", "/api/v1/drl", "/api/v1/alerts"):  # fmt: skip
            assert path in paths

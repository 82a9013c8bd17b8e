"""Sites through the web (issue #15): a user assigned to one site sees only its studies.

The JSON API's study list, a study's detail and events, the FHIR export and the study
page are narrowed to, or refused outside, the sites of the logged-in user
(``kerma sites assign``); an unassigned user sees every site. SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kerma.services.registry import Registry
from tests.db_fixtures import make_settings
from tests.web.conftest import login

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"
NORTH = ["CT-RDSR-Siemens_Flash-TAP-SS.dcm", "DX-RDSR-Canon_CXDI.dcm"]
SOUTH = ["CT-RDSR-Toshiba_DoseCheck.dcm", "MG-RDSR-Hologic_2D.dcm"]

pytestmark = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom missing")


@pytest.fixture
def two_sites(web_settings, accounts, tmp_path: Path) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """Import North's and South's studies (two nodes); restrict ``phys`` to North."""
    for site, names in (("North", NORTH), ("South", SOUTH)):
        settings = make_settings(web_settings.database_url, tmp_path, site=site)
        with Registry(settings=settings) as node:
            node.import_paths([SHARED_DICOM / n for n in names])
    with Registry(settings=web_settings) as registry:
        registry.assign_user_sites("phys", ["North"])
        ids = {
            site: sorted(int(i) for i in registry.studies(flt=flt)["study_id"])
            for site, flt in (
                ("North", registry_filter("North")),
                ("South", registry_filter("South")),
            )
        }
    assert len(ids["North"]) == 2 and len(ids["South"]) == 2
    return ids


def registry_filter(site: str):  # type: ignore[no-untyped-def]
    """The study filter of one site, by name."""
    from kerma.services.filters import StudyFilter

    return StudyFilter(site_names=(site,))


def listed(client: TestClient) -> list[int]:
    """The study ids of ``GET /api/v1/studies`` (all pages of 1,000)."""
    answer = client.get("/api/v1/studies", params={"per_page": 1000})
    assert answer.status_code == 200, answer.text
    return sorted(int(row["study_id"]) for row in answer.json()["items"])


def test_site_user_sees_only_their_site(app, two_sites) -> None:  # type: ignore[no-untyped-def]
    """phys (North) lists North's studies and gets 403 for South's; admin sees both."""
    north, south = two_sites["North"], two_sites["South"]
    with TestClient(app) as client:
        login(client, "phys")
        assert listed(client) == north
        assert client.get(f"/api/v1/studies/{north[0]}").status_code == 200
        for path in (
            f"/api/v1/studies/{south[0]}",
            f"/api/v1/studies/{south[0]}/events",
            f"/studies/{south[0]}",
        ):
            answer = client.get(path)
            assert answer.status_code == 403, (path, answer.text)
            assert "not of a site you are assigned to" in answer.text
        uid = client.get(f"/api/v1/studies/{north[0]}").json()["study"]["study_instance_uid"]
        assert client.get(f"/api/v1/studies/{uid}/fhir").status_code == 200
        # the browser's CSV of every study holds North's only
        csv = client.get("/studies.csv")
        assert csv.status_code == 200
        assert len(csv.text.strip().splitlines()) == 1 + len(north)
    with TestClient(app) as client:
        login(client, "admin")  # no site assigned: every site
        assert listed(client) == sorted(north + south)
        assert client.get(f"/api/v1/studies/{south[0]}").status_code == 200

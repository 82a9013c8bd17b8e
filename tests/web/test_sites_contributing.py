"""A patient's cumulative alert is seen by every site that contributed a study to its
window, not only by the site of the study that crossed (issue #15; Directive
2013/59/Euratom Art. 63).

One patient, three CT studies: two at North (2 and 9 March 2026), one at South (20
March). The only rule sums CT DLP over 365 days with a threshold that North's two
studies miss and all three reach, so the alert is recorded at South's study. ``north``
(a physicist restricted to North) sees the alert in the lists and its detail, with
North's two studies, "1 study at other sites" and the total value, and no UID, id or
date of South's study; it may review it, its site written in the history. ``east``
(restricted to East, where another patient was imaged) gets 403 and no alert in the
lists; ``admin`` sees everything. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.registry import Registry
from tests.db_fixtures import BACKENDS, fresh_database, make_settings
from tests.web.dashboard_fixtures import add_user, csrf_of, sign_in
from tests.web.site_alert_fixtures import SHARED_DICOM, cumulative_ct_dlp_pack, import_at_site

#: (site, file of ../shared/dicom, Study Date written into it): one patient's CT studies.
STUDIES = [
    ("North", "CT-RDSR-Toshiba_DoseCheck.dcm", "20260302"),
    ("North", "CT-RDSR-Philips_BigBore4DCT.dcm", "20260309"),
    ("South", "CT-RDSR-Siemens_Flash-TAP-SS.dcm", "20260320"),
]
PATIENT_ID = "KERMA-SITES-CONTRIB-1"
#: Another patient's study, at East (so East is a site with no study of the window).
EAST_FILE = "DX-RDSR-Canon_CXDI.dcm"
RULE_ID = "test-cumulative-ct-dlp-contrib"

pytestmark = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom missing")


@dataclass(frozen=True)
class CrossedAtSouth:
    """The registry, the patient alert and each site's studies."""

    settings: Settings
    alert_id: int
    north: list[dict[str, Any]]
    south: dict[str, Any]
    total_mgycm: float


@pytest.fixture(scope="module", params=BACKENDS)
def crossed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CrossedAtSouth]:
    """Import the studies at their sites and East's; recheck with a threshold between
    North's sum and the sum of all three; restrict ``north`` and ``east``."""
    folder = tmp_path_factory.mktemp("contrib")
    with fresh_database(request.param, folder) as url:
        for site, name, date in STUDIES:
            import_at_site(url, folder, site, name, date, PATIENT_ID)
        import_at_site(url, folder, "East", EAST_FILE, "20260315", "KERMA-SITES-CONTRIB-2")
        with Registry(settings=make_settings(url, folder)) as registry:
            studies = registry.studies(modality="CT")
        rows = studies.sort_values("study_date").to_dict("records")
        assert len(rows) == 3 and studies["patient_pseudonym"].nunique() == 1
        for row in rows:
            row["study_date"] = row["study_date"].date().isoformat()
        dlps = [float(r["ct_dlp_total_mgycm"]) for r in rows]
        assert all(d > 0 for d in dlps), dlps
        threshold = sum(dlps[:2]) + dlps[2] / 2  # North's two miss, the three reach
        pack = folder / "rules.toml"
        pack.write_text(
            cumulative_ct_dlp_pack(
                threshold, pack="test-sites-contrib", rule_id=RULE_ID, source=Path(__file__).name
            ),
            encoding="utf-8",
        )
        settings = make_settings(url, folder, alert_rules=pack)
        add_user(settings, "admin", "admin")
        for name in ("north", "east"):
            add_user(settings, name, "physicist")
        with Registry(settings=settings) as registry:
            registry.assign_user_sites("north", ["North"])
            registry.assign_user_sites("east", ["East"])
            registry.recheck_alerts()
            alerts = registry.alerts(rule_id=RULE_ID)
        assert len(alerts) == 1, alerts
        assert int(alerts["study_id"].iloc[0]) == int(rows[2]["study_id"])  # South's
        yield CrossedAtSouth(
            settings=settings,
            alert_id=int(alerts["alert_id"].iloc[0]),
            north=rows[:2],
            south=rows[2],
            total_mgycm=sum(dlps),
        )


@pytest.fixture(scope="module")
def clients(crossed: CrossedAtSouth) -> Iterator[dict[str, TestClient]]:
    """Signed-in clients of one app: ``admin``, ``north`` and ``east``."""
    from kerma.web.app import create_app

    app = create_app(crossed.settings)
    opened: dict[str, TestClient] = {}
    try:
        for name in ("admin", "north", "east"):
            opened[name] = sign_in(TestClient(app).__enter__(), name)
        yield opened
    finally:
        for client in opened.values():
            client.__exit__(None, None, None)
        accounts = getattr(app.state, "accounts", None)
        if accounts is not None:
            accounts.close()


def _south_markers(crossed: CrossedAtSouth, text: str) -> list[str]:
    """Return what identifies South's study in ``text`` (UID, id, date)."""
    south = crossed.south
    found = []
    if str(south["study_instance_uid"]) in text:
        found.append("uid")
    sid = south["study_id"]
    if re.search(rf'(/studies/{sid}\b|"study_id":\s*{sid}\b|:{sid}")', text):
        found.append(f"study {sid}")
    if str(south["study_date"]) in text:
        found.append(f"date {south['study_date']}")
    return found


def test_contributing_site_sees_the_alert_in_lists(
    crossed: CrossedAtSouth, clients: dict[str, TestClient]
) -> None:
    """/api/v1/alerts and /alerts: North lists the alert (without South's study), East
    does not; the admin lists it with South's study."""
    for name, expected in (("admin", 1), ("north", 1), ("east", 0)):
        page = clients[name].get("/api/v1/alerts", params={"state": "open"})
        assert page.status_code == 200, (name, page.text[:300])
        ids = [i["alert_id"] for i in page.json()["items"]]
        assert ids.count(crossed.alert_id) == expected, (name, ids)
        assert page.json()["total"] == len(ids), name
    admin_item = next(
        i
        for i in clients["admin"].get("/api/v1/alerts").json()["items"]
        if i["alert_id"] == crossed.alert_id
    )
    assert admin_item["study_id"] == crossed.south["study_id"]
    north = clients["north"].get("/api/v1/alerts")
    (item,) = [i for i in north.json()["items"] if i["alert_id"] == crossed.alert_id]
    assert item["study_id"] is None and item["device_name"] is None
    assert item["value"] == pytest.approx(crossed.total_mgycm)
    assert _south_markers(crossed, north.text) == []
    html = clients["north"].get("/alerts")
    assert html.status_code == 200
    assert f'href="/alerts/{crossed.alert_id}"' in html.text
    assert _south_markers(crossed, html.text) == []
    assert f'href="/alerts/{crossed.alert_id}"' not in clients["east"].get("/alerts").text


def test_contributing_site_sees_its_window_studies_only(
    crossed: CrossedAtSouth, clients: dict[str, TestClient]
) -> None:
    """/api/v1/alerts/{id} and /alerts/{id}: North gets 200, its two studies, a count of
    1 other and the total; no South UID, id or date. East gets 403; admin all three."""
    path = f"/api/v1/alerts/{crossed.alert_id}"
    every = clients["admin"].get(path).json()
    assert every["study_instance_uid"] == crossed.south["study_instance_uid"]
    assert len(every["window_studies"]) == 3 and every["window_studies_other_sites"] == 0
    assert every["contributing_site"] is False
    answer = clients["north"].get(path)
    assert answer.status_code == 200, answer.text[:300]
    seen = answer.json()
    assert [w["study_id"] for w in seen["window_studies"]] == [s["study_id"] for s in crossed.north]
    assert seen["window_studies_other_sites"] == 1
    assert seen["value"] == pytest.approx(crossed.total_mgycm)
    assert seen["contributing_site"] is True
    assert seen["study_id"] is None and seen["study_instance_uid"] is None
    assert _south_markers(crossed, json.dumps(seen, separators=(",", ":"))) == []
    assert f"{float(crossed.south['ct_dlp_total_mgycm'])!r}" not in answer.text
    page = clients["north"].get(f"/alerts/{crossed.alert_id}")
    assert page.status_code == 200, page.text[:300]
    for study in crossed.north:
        assert str(study["study_instance_uid"]) in page.text
    assert 'id="crossed-at-other-site"' in page.text
    other = re.search(r'id="window-other-sites">([^<]*)<', page.text)
    assert other is not None and other.group(1).startswith("and 1 study at other sites")
    assert _south_markers(crossed, page.text) == []
    for where in (path, f"/alerts/{crossed.alert_id}"):
        refused = clients["east"].get(where)
        assert refused.status_code == 403, (where, refused.text[:300])
        assert "not of a site you are assigned to" in refused.text
    # the significant-event report names South's study: South's (and the admin's) only
    report = clients["north"].get(f"/alerts/{crossed.alert_id}/report.pdf")
    assert report.status_code == 403, report.text[:300]


def test_overview_counts_the_contributing_sites_alert(
    crossed: CrossedAtSouth, clients: dict[str, TestClient]
) -> None:
    """The open-alert count (service of the overview) includes the alert for North, not
    for East."""
    from kerma.db.alerts import AlertFilter
    from kerma.services.alerts import count_alerts
    from kerma.services.sites import narrow_alert_filter

    class _P:
        def __init__(self, ids: tuple[int, ...] | None) -> None:
            self.site_ids = ids

    with Registry(settings=crossed.settings) as registry, registry.session(write=False) as session:
        from kerma.services.sites import site_ids

        north, east = site_ids(session, ["North"]), site_ids(session, ["East"])
        flt = AlertFilter(state="open", rule_id=RULE_ID)
        counts = [
            count_alerts(session, flt=narrow_alert_filter(flt, _P(ids)))
            for ids in (None, north, east)
        ]
    assert counts == [1, 1, 0]


def test_contributing_site_reviews_with_its_site_in_the_history(
    crossed: CrossedAtSouth, clients: dict[str, TestClient]
) -> None:
    """North may put the alert under review and add a note; the history says the user
    and ``[site North]``. East's review is refused and changes nothing."""
    alert = crossed.alert_id
    csrf = csrf_of(clients["east"].get("/alerts").text)
    refused = clients["east"].post(
        f"/alerts/{alert}/note",
        data={"note": "not mine", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert refused.status_code == 403, refused.text[:300]
    csrf = csrf_of(clients["north"].get(f"/alerts/{alert}").text)
    done = clients["north"].post(
        f"/alerts/{alert}/review",
        data={"note": "our two CTs", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text[:300]
    noted = clients["north"].post(
        f"/alerts/{alert}/note",
        data={"note": "GP informed", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert noted.status_code == 303, noted.text[:300]
    detail = clients["admin"].get(f"/api/v1/alerts/{alert}").json()
    assert detail["state"] == "under_review"
    entries = [(h["user"], h["text"]) for h in detail["history_entries"]]
    assert ("north", "[site North] our two CTs") in entries, entries
    assert ("north", "[site North] GP informed") in entries, entries
    assert not any("not mine" in t for _, t in entries)

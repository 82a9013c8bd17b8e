"""A patient's cumulative alert shows a site-restricted principal its sites' studies only
(issue #15).

One patient, three CT studies: two at South (2 and 9 March 2026), one at North (20
March). The only rule in force sums CT DLP over 365 days with a threshold that the two
South studies miss and all three reach, so the recheck records one patient alert at
North's study, its window holding South's two studies. ``admin`` (every site) sees the
three studies in the alert's page and JSON; ``phys`` and a token (North) see North's
study and "2 studies at other sites": no UID, id, date or DLP of South's studies. The
alert's value (the sum over the three) is the same for both. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.registry import Registry
from tests.db_fixtures import BACKENDS, fresh_database, make_settings
from tests.web.dashboard_fixtures import add_user, sign_in
from tests.web.site_alert_fixtures import SHARED_DICOM, cumulative_ct_dlp_pack, import_at_site

#: (site, file of ../shared/dicom, Study Date written into it): one patient's CT studies.
STUDIES = [
    ("South", "CT-RDSR-Toshiba_DoseCheck.dcm", "20260302"),
    ("South", "CT-RDSR-Philips_BigBore4DCT.dcm", "20260309"),
    ("North", "CT-RDSR-Siemens_Flash-TAP-SS.dcm", "20260320"),
]
PATIENT_ID = "KERMA-SITES-WINDOW-1"
#: Another patient's study of no site (no KERMA_SITE, no (0008,0080) Institution Name).
NO_SITE_FILE = "DX-RDSR-Canon_CXDI.dcm"
RULE_ID = "test-cumulative-ct-dlp"

pytestmark = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom missing")


@dataclass(frozen=True)
class PatientAtTwoSites:
    """The registry, the patient alert and each site's study ids, UIDs and DLPs."""

    settings: Settings
    alert_id: int
    north: dict[str, Any]
    south: list[dict[str, Any]]
    total_mgycm: float
    token: str
    no_site_id: int


@pytest.fixture(scope="module", params=BACKENDS)
def patient(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PatientAtTwoSites]:
    """Import the studies at their sites; recheck with a threshold between the South
    sum and the sum of all three; restrict ``phys`` and a token to North."""
    folder = tmp_path_factory.mktemp("window")
    with fresh_database(request.param, folder) as url:
        for site, name, date in STUDIES:
            import_at_site(url, folder, site, name, date, PATIENT_ID)
        with Registry(settings=make_settings(url, folder)) as registry:
            studies = registry.studies()
        assert list(studies["study_date"].dt.strftime("%Y-%m-%d")) == [
            "2026-03-02",
            "2026-03-09",
            "2026-03-20",
        ]
        assert studies["patient_pseudonym"].nunique() == 1
        rows = studies.to_dict("records")
        for row in rows:  # "2026-03-02", as the page and the JSON write it
            row["study_date"] = row["study_date"].date().isoformat()
        dlps = [float(r["ct_dlp_total_mgycm"]) for r in rows]
        assert all(d > 0 for d in dlps), dlps
        # the two South studies stay below, the three reach it: the alert is North's
        threshold = sum(dlps[:2]) + dlps[2] / 2
        pack = folder / "rules.toml"
        pack.write_text(
            cumulative_ct_dlp_pack(
                threshold, pack="test-sites", rule_id=RULE_ID, source=Path(__file__).name
            ),
            encoding="utf-8",
        )
        settings = make_settings(url, folder, alert_rules=pack)
        for name, role in (("admin", "admin"), ("phys", "physicist")):
            add_user(settings, name, role)
        from kerma.services.users import Accounts, Actor

        accounts = Accounts(settings)
        try:
            _, token = accounts.add_token(
                "north", "physicist", Actor("test", "cli"), sites=["North"]
            )
        finally:
            accounts.close()
        with Registry(settings=settings) as registry:
            registry.assign_user_sites("phys", ["North"])
            registry.recheck_alerts()
            alerts = registry.alerts(rule_id=RULE_ID)
        assert len(alerts) == 1, alerts
        assert int(alerts["study_id"].iloc[0]) == int(rows[2]["study_id"])
        ds = pydicom.dcmread(SHARED_DICOM / NO_SITE_FILE)
        del ds.InstitutionName
        ds.StudyDate = "20260325"
        target = folder / NO_SITE_FILE
        ds.save_as(target, enforce_file_format=True)
        with Registry(settings=settings) as registry:
            assert sum(registry.import_paths([target]).imported.values()) == 1
            late = registry.studies(date_from="2026-03-25")
        assert len(late) == 1
        yield PatientAtTwoSites(
            settings=settings,
            alert_id=int(alerts["alert_id"].iloc[0]),
            north=rows[2],
            south=rows[:2],
            total_mgycm=sum(dlps),
            token=token,
            no_site_id=int(late["study_id"].iloc[0]),
        )


@pytest.fixture(scope="module")
def clients(patient: PatientAtTwoSites) -> Iterator[dict[str, TestClient]]:
    """Clients of one app: ``admin`` and ``phys`` signed in, ``token`` (North) by header."""
    from kerma.web.app import create_app

    app = create_app(patient.settings)
    opened: dict[str, TestClient] = {}
    try:
        for name in ("admin", "phys"):
            opened[name] = sign_in(TestClient(app).__enter__(), name)
        token = TestClient(app).__enter__()
        token.headers["Authorization"] = f"Bearer {patient.token}"
        opened["token"] = token
        yield opened
    finally:
        for client in opened.values():
            client.__exit__(None, None, None)
        accounts = getattr(app.state, "accounts", None)
        if accounts is not None:
            accounts.close()


def _south_markers(patient: PatientAtTwoSites, text: str) -> list[str]:
    """Return what identifies South's studies in ``text`` (UIDs, ids, dates)."""
    found = [str(s["study_instance_uid"]) for s in patient.south if s["study_instance_uid"] in text]
    for s in patient.south:
        if re.search(rf'(/studies/{s["study_id"]}\b|"study_id":\s*{s["study_id"]}\b)', text):
            found.append(f"study {s['study_id']}")
        if str(s["study_date"]) in text:
            found.append(f"date {s['study_date']}")
    return found


def test_alert_json_of_a_restricted_principal_lists_its_sites_studies(
    patient: PatientAtTwoSites, clients: dict[str, TestClient]
) -> None:
    """/api/v1/alerts/{id}: the admin gets the three studies (with their DLPs); phys and
    the North token North's study and a count of 2; the value is the sum of all three."""
    path = f"/api/v1/alerts/{patient.alert_id}"
    admin = clients["admin"].get(path)
    assert admin.status_code == 200, admin.text[:300]
    every = admin.json()
    assert [w["study_instance_uid"] for w in every["window_studies"]] == [
        s["study_instance_uid"] for s in (*patient.south, patient.north)
    ]
    assert [w["value"] for w in every["window_studies"]] == pytest.approx(
        [s["ct_dlp_total_mgycm"] for s in (*patient.south, patient.north)]
    )
    assert every["window_studies_other_sites"] == 0
    assert len(every["detail"]["window_study_ids"]) == 3
    assert every["value"] == pytest.approx(patient.total_mgycm)
    assert _south_markers(patient, json.dumps(every, separators=(",", ":")))
    for name in ("phys", "token"):
        answer = clients[name].get(path)
        assert answer.status_code == 200, (name, answer.text[:300])
        seen = answer.json()
        assert [w["study_id"] for w in seen["window_studies"]] == [patient.north["study_id"]]
        assert seen["window_studies"][0]["value"] == pytest.approx(
            patient.north["ct_dlp_total_mgycm"]
        )
        assert seen["window_studies_other_sites"] == 2
        assert seen["detail"]["window_study_ids"] == [patient.north["study_id"]]
        assert seen["value"] == pytest.approx(patient.total_mgycm)
        text = json.dumps(seen, separators=(",", ":"))
        assert _south_markers(patient, text) == [], name
        for south in patient.south:  # no dose of a South study either
            assert f"{float(south['ct_dlp_total_mgycm'])!r}" not in text, name


def test_alert_page_of_a_restricted_principal_counts_other_sites(
    patient: PatientAtTwoSites, clients: dict[str, TestClient]
) -> None:
    """/alerts/{id}: the admin's window table lists South's UIDs; phys's lists North's
    study only and says "and 2 studies at other sites"."""
    path = f"/alerts/{patient.alert_id}"
    admin = clients["admin"].get(path)
    assert admin.status_code == 200, admin.text[:300]
    table = admin.text.split('id="window-studies"', 1)[1].split("</table>", 1)[0]
    for study in (*patient.south, patient.north):
        assert str(study["study_instance_uid"]) in table
    assert 'id="window-other-sites"' not in admin.text
    page = clients["phys"].get(path)
    assert page.status_code == 200, page.text[:300]
    assert str(patient.north["study_instance_uid"]) in page.text
    assert f'href="/studies/{patient.north["study_id"]}"' in page.text
    assert _south_markers(patient, page.text) == []
    other = re.search(r'id="window-other-sites">([^<]*)<', page.text)
    assert other is not None and other.group(1).startswith("and 2 studies at other sites")


def test_study_json_names_its_site(
    patient: PatientAtTwoSites, clients: dict[str, TestClient]
) -> None:
    """``site`` in /api/v1/studies items and the study detail: South, South, North and
    null (a study of no site) for the admin; North only for phys (narrowed listing)."""
    items = clients["admin"].get("/api/v1/studies", params={"sort": "study_date"}).json()["items"]
    assert [(i["study_date"], i["site"]) for i in items] == [
        ("2026-03-02", "South"),
        ("2026-03-09", "South"),
        ("2026-03-20", "North"),
        ("2026-03-25", None),
    ]
    # sortable by site (where NULL sorts differs: SQLite first, PostgreSQL last)
    bysite = clients["admin"].get("/api/v1/studies", params={"sort": "site,study_date"})
    assert [i["site"] for i in bysite.json()["items"] if i["site"]] == ["North", "South", "South"]
    mine = clients["phys"].get("/api/v1/studies").json()["items"]
    assert [(i["study_id"], i["site"]) for i in mine] == [(patient.north["study_id"], "North")]
    for name, study_id, site in (
        ("admin", patient.south[0]["study_id"], "South"),
        ("admin", patient.no_site_id, None),
        ("phys", patient.north["study_id"], "North"),
        ("token", patient.north["study_id"], "North"),
    ):
        detail = clients[name].get(f"/api/v1/studies/{study_id}")
        assert detail.status_code == 200, detail.text[:300]
        assert detail.json()["study"]["site"] == site, (name, study_id)


def test_cli_alerts_show_lists_every_sites_window_study(
    patient: PatientAtTwoSites, tmp_path: Path
) -> None:
    """``kerma alerts show`` (a local operator: every site) lists the three studies."""
    from typer.testing import CliRunner

    from kerma.cli.main import build_app
    from tests.db_fixtures import TEST_PSEUDONYM_KEY

    env = {
        "KERMA_DATABASE_URL": patient.settings.database_url,
        "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "KERMA_ALERT_RULES": str(patient.settings.alert_rules),
        "COLUMNS": "300",
    }
    shown = CliRunner().invoke(
        build_app("alerts"), ["alerts", "show", str(patient.alert_id)], env=env
    )
    assert shown.exit_code == 0, shown.output
    assert "Studies in the window" in shown.output
    for study in (*patient.south, patient.north):
        assert str(study["study_instance_uid"]) in shown.output
        assert str(study["study_date"]) in shown.output

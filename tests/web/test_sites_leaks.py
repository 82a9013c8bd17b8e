"""No page or API shows a site-restricted principal another site's studies (issue #15).

Two sites' studies in one registry (North: a CT, a DX and a CR; South: a CT, an MG,
an RF with two alerts, a DX image and a CT series measured for noise); ``phys``
(physicist) and ``view`` (viewer) are assigned to North, and an API token is made for
North. Every page and API route that lists or aggregates studies is asked by the admin
(every site: South's rooms, studies or alerts are there, so the check can fail) and by
North's principals (none of South's are there). Another site's alert answers 403, as
another site's study does. SQLite and PostgreSQL.
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
from typer.testing import CliRunner

from kerma.config import Settings
from kerma.services.filters import StudyFilter
from kerma.services.registry import Registry
from tests.db_fixtures import BACKENDS, TEST_PSEUDONYM_KEY, fresh_database, make_settings
from tests.quality.generators import ct_series, write
from tests.web.dashboard_fixtures import add_user, csrf_of, sign_in

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"
NORTH = ["CT-RDSR-Siemens_Flash-TAP-SS.dcm", "DX-RDSR-Canon_CXDI.dcm", "DX-Im-Carestream_DRX.dcm"]
SOUTH = [
    "CT-RDSR-Toshiba_DoseCheck.dcm",
    "MG-RDSR-Hologic_2D.dcm",
    "RF-Pat-Orientation-Modifier-Missing.dcm",  # two alerts (study and patient)
    "DX-Im-GE_XR220-1.dcm",
]
#: Station Name of South's synthetic CT series (tests/quality/generators.py).
SOUTH_CT_STATION = "SOUTH-NOISE-CT"

pytestmark = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom missing")


@dataclass(frozen=True)
class TwoSites:
    """The registry of both sites and what identifies each site's data."""

    settings: Settings
    north_ids: list[int]
    south_ids: list[int]
    north_devices: list[str]
    south_devices: list[str]
    south_uids: list[str]
    south_alerts: list[int]
    north_token: str
    south_exam: str

    def south_markers(self, text: str) -> list[str]:
        """Return what of South's data ``text`` holds (rooms, UIDs, study and alert links)."""
        found = [d for d in (*self.south_devices, SOUTH_CT_STATION) if d in text]
        found += [u for u in self.south_uids if u in text]
        for i in self.south_ids:
            if re.search(rf'(/studies/{i}\b|"study_id":\s*{i}\b)', text):
                found.append(f"study {i}")
        for a in self.south_alerts:
            if re.search(rf'(/alerts/{a}\b|"alert_id":\s*{a}\b)', text):
                found.append(f"alert {a}")
        return found


@pytest.fixture(scope="module", params=BACKENDS)
def two_sites(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoSites]:
    """Import North's and South's objects (two nodes); restrict phys, view and a token."""
    folder = tmp_path_factory.mktemp("sites")
    with fresh_database(request.param, folder) as url:
        for site, names in (("North", NORTH), ("South", SOUTH)):
            with Registry(settings=make_settings(url, folder, site=site)) as node:
                node.import_paths([SHARED_DICOM / n for n in names])
                if site == "South":  # a CT series measured for noise (/quality, noise API)
                    series = ct_series(sigma_hu=10.0, n_images=2, station=SOUTH_CT_STATION)
                    node.import_paths([write(ds, folder / "ct") for ds in series])
        settings = make_settings(url, folder)
        for name, role in (("admin", "admin"), ("phys", "physicist"), ("view", "viewer")):
            add_user(settings, name, role)
        from kerma.services.users import Accounts, Actor

        accounts = Accounts(settings)
        try:
            info, token = accounts.add_token(
                "north-script", "physicist", Actor("test", "cli"), sites=["north"]
            )
        finally:
            accounts.close()
        assert info.site_names == ("North",)
        with Registry(settings=settings) as registry:
            registry.assign_user_sites("phys", ["North"])
            registry.assign_user_sites("view", ["North"])
            north = registry.studies(flt=StudyFilter(site_names=("North",)))
            south = registry.studies(flt=StudyFilter(site_names=("South",)))
            alerts = registry.alerts()
        south_ids = sorted(int(i) for i in south["study_id"])
        south_alerts = sorted(
            int(a)
            for a, s in zip(alerts["alert_id"], alerts["study_id"], strict=True)
            if int(s) in south_ids
        )
        assert len(north) == 3 and len(south) == 5 and len(south_alerts) == 2
        north_devices = sorted(set(north["device_name"]))
        south_devices = sorted(set(south["device_name"]) - {"unknown device"})
        assert not any(s in n or n in s for s in south_devices for n in north_devices)
        yield TwoSites(
            settings=settings,
            north_ids=sorted(int(i) for i in north["study_id"]),
            south_ids=south_ids,
            north_devices=north_devices,
            south_devices=south_devices,
            south_uids=sorted(south["study_instance_uid"]),
            south_alerts=south_alerts,
            north_token=token,
            south_exam=str(south[south["modality"] == "DX"]["standard_exam"].iloc[0]),
        )


@pytest.fixture(scope="module")
def clients(two_sites: TwoSites) -> Iterator[dict[str, TestClient]]:
    """Logged-in clients of one app: admin (every site), phys and view (North), token."""
    from kerma.web.app import create_app

    app = create_app(two_sites.settings)
    opened: dict[str, TestClient] = {}
    try:
        for name in ("admin", "phys", "view"):
            client = TestClient(app).__enter__()
            opened[name] = sign_in(client, name)
        token = TestClient(app).__enter__()
        token.headers["Authorization"] = f"Bearer {two_sites.north_token}"
        opened["token"] = token
        yield opened
    finally:
        for client in opened.values():
            client.__exit__(None, None, None)
        accounts = getattr(app.state, "accounts", None)
        if accounts is not None:
            accounts.close()


#: Every page and API route that lists or aggregates studies (or their alerts):
#: (path, who may ask besides the admin, whether the admin's answer shows South's data).
#: ``{exam}`` is South's DX standard exam.
ROUTES: list[tuple[str, tuple[str, ...], bool]] = [
    ("/", ("phys", "view"), True),
    ("/studies", ("phys",), True),
    ("/studies.csv", ("phys",), True),
    ("/analysis?exam={exam}", ("phys", "view"), True),
    ("/analysis/boxes.csv?exam={exam}", ("phys", "view"), True),
    ("/alerts?state=all", ("phys",), True),
    ("/quality", ("phys", "view"), True),
    ("/api/v1/studies?per_page=1000", ("phys", "token"), True),
    ("/api/v1/statistics?by=device_name", ("phys", "view", "token"), True),
    ("/api/v1/drl", ("phys", "view", "token"), True),
    ("/api/v1/alerts", ("phys", "token"), True),
    ("/api/v1/quality/ei?by=room", ("phys", "view", "token"), True),
    ("/api/v1/quality/vendor", ("phys", "view", "token"), True),
    ("/api/v1/quality/rejects?by=room", ("phys", "view", "token"), True),
    ("/api/v1/quality/points", ("phys", "view", "token"), True),
    ("/api/v1/quality/noise", ("phys", "view", "token"), True),
]


def _text(answer: Any) -> str:
    """Return a response's body as text (JSON compacted, so ``"study_id":6`` matches)."""
    if answer.headers.get("content-type", "").startswith("application/json"):
        return json.dumps(answer.json(), separators=(",", ":"))
    return str(answer.text)


@pytest.mark.parametrize(
    ("path", "who", "admin_sees_south"), ROUTES, ids=[r[0].split("?")[0] for r in ROUTES]
)
def test_restricted_principal_sees_none_of_another_sites_data(
    two_sites: TwoSites,
    clients: dict[str, TestClient],
    path: str,
    who: tuple[str, ...],
    admin_sees_south: bool,
) -> None:
    """The admin's answer shows South's rooms/studies/alerts; North's principals' never."""
    url = path.format(exam=two_sites.south_exam)
    admin = clients["admin"].get(url)
    assert admin.status_code == 200, (url, admin.text[:300])
    if admin_sees_south:
        assert two_sites.south_markers(_text(admin)), (url, "admin sees no South data")
    for name in who:
        answer = clients[name].get(url)
        assert answer.status_code in (200, 404), (name, url, answer.text[:300])
        leaked = two_sites.south_markers(_text(answer))
        assert leaked == [], (name, url, leaked)


def test_overview_numbers_are_of_the_users_sites(
    two_sites: TwoSites, clients: dict[str, TestClient]
) -> None:
    """Studies per month and open alerts: the admin's counts both sites, North's not
    South's (asked after the admin, so a registry-wide cached value would show)."""
    count = re.compile(r'id="n-studies">([\d,]+)<')
    open_alerts = re.compile(r'id="open-alerts">(\d+)<')
    admin = clients["admin"].get("/").text
    assert count.search(admin).group(1) == str(  # type: ignore[union-attr]
        len(two_sites.north_ids) + len(two_sites.south_ids)
    )
    assert open_alerts.search(admin).group(1) == "2"  # type: ignore[union-attr]
    for name in ("phys", "view"):
        page = clients[name].get("/").text
        assert count.search(page).group(1) == str(len(two_sites.north_ids))  # type: ignore[union-attr]
        assert open_alerts.search(page).group(1) == "0"  # type: ignore[union-attr]
    for name in ("phys", "view", "token"):
        rows = clients[name].get("/api/v1/overview/studies-per-month").json()["rows"]
        assert sum(r["n_studies"] for r in rows) == len(two_sites.north_ids), name
    rows = clients["admin"].get("/api/v1/overview/studies-per-month").json()["rows"]
    assert sum(r["n_studies"] for r in rows) == len(two_sites.north_ids + two_sites.south_ids)


def test_another_sites_alert_and_study_are_refused(
    two_sites: TwoSites, clients: dict[str, TestClient]
) -> None:
    """phys and the North token get 403 for South's alerts and studies; the admin 200."""
    alert = two_sites.south_alerts[0]
    study = two_sites.south_ids[0]
    for path in (f"/alerts/{alert}", f"/alerts/{alert}/report.pdf"):
        answer = clients["phys"].get(path)
        assert answer.status_code == 403, (path, answer.text[:300])
        assert "not of a site you are assigned to" in answer.text
    for name in ("phys", "token"):
        for path in (
            f"/api/v1/alerts/{alert}",
            f"/api/v1/studies/{study}",
            f"/api/v1/studies/{study}/events",
            f"/api/v1/studies/{two_sites.south_uids[0]}/fhir",
        ):
            answer = clients[name].get(path)
            assert answer.status_code == 403, (name, path, answer.text[:300])
    # a review of another site's alert is refused and changes nothing
    page = clients["phys"].get(f"/studies/{two_sites.north_ids[0]}")
    answer = clients["phys"].post(
        f"/alerts/{alert}/review",
        data={"note": "not mine", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 403, answer.text[:300]
    detail = clients["admin"].get(f"/api/v1/alerts/{alert}").json()
    assert detail["state"] == "open"
    assert clients["admin"].get(f"/alerts/{alert}").status_code == 200
    assert clients["token"].get(f"/api/v1/studies/{two_sites.north_ids[0]}").status_code == 200


def test_tokens_cli_makes_and_lists_site_tokens(two_sites: TwoSites, tmp_path: Path) -> None:
    """``kerma tokens add --site`` restricts a token, ``list`` shows its sites; an unknown
    site is refused naming the sites (exit 2)."""
    from kerma.cli.main import build_app

    env = {
        "KERMA_DATABASE_URL": two_sites.settings.database_url,
        "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "250",
    }
    runner = CliRunner()
    made = runner.invoke(
        build_app("tokens"),
        ["tokens", "add", "south-stow", "--site", "South", "--site", "North"],
        env=env,
    )
    assert made.exit_code == 0, made.output
    assert "sites North, South" in made.output
    every = runner.invoke(build_app("tokens"), ["tokens", "add", "any-site"], env=env)
    assert every.exit_code == 0 and "every site" in every.output, every.output
    listed = runner.invoke(build_app("tokens"), ["tokens", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[1]: line for line in listed.output.splitlines() if "physicist" in line}
    assert "North, South" in rows["south-stow"]
    assert "North" in rows["north-script"] and "South" not in rows["north-script"]
    assert " all " in rows["any-site"]
    refused = runner.invoke(
        build_app("tokens"), ["tokens", "add", "east", "--site", "East"], env=env
    )
    assert refused.exit_code == 2
    out = " ".join(refused.output.split())
    assert "No site named 'East'. The sites are: North, South." in out, out


@pytest.mark.parametrize("command", ["drl", "studies", "stats"])
def test_unknown_site_is_a_usage_error_naming_the_sites(
    two_sites: TwoSites, tmp_path: Path, command: str
) -> None:
    """``kerma drl|studies|stats --site Unknown``: exit 2, the known sites, no traceback
    (before: an empty table, as if the site had no studies)."""
    from kerma.cli.main import build_app

    env = {
        "KERMA_DATABASE_URL": two_sites.settings.database_url,
        "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "COLUMNS": "250",
    }
    result = CliRunner().invoke(build_app(command), [command, "--site", "Unknown"], env=env)
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "'--site'" in out and "No site named 'Unknown'. The sites are: North, South." in out
    assert "Traceback" not in out
    known = CliRunner().invoke(build_app(command), [command, "--site", "south"], env=env)
    assert known.exit_code == 0, known.output


def test_admin_tokens_page_makes_a_site_token(
    two_sites: TwoSites, clients: dict[str, TestClient]
) -> None:
    """/admin/tokens takes comma-separated sites: the new token sees South only; an
    unknown site is refused (400) naming the sites."""
    admin = clients["admin"]
    csrf = csrf_of(admin.get("/admin/tokens").text)
    refused = admin.post(
        "/admin/tokens",
        data={"name": "x-east", "role": "viewer", "sites": "East", "csrf_token": csrf},
    )
    assert refused.status_code == 400 and "No site named &#39;East&#39;" in refused.text
    made = admin.post(
        "/admin/tokens",
        data={"name": "south-web", "role": "physicist", "sites": " south ", "csrf_token": csrf},
    )
    assert made.status_code == 200, made.text[:300]
    token = re.search(r'<code id="new-token">([^<]+)</code>', made.text).group(1)  # type: ignore[union-attr]
    row = re.search(r"<td>south-web</td>\s*<td>physicist</td>\s*<td>([^<]*)</td>", made.text)
    assert row is not None and row.group(1) == "South"
    with TestClient(admin.app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        items = client.get("/api/v1/studies", params={"per_page": 1000}).json()["items"]
    assert sorted(int(i["study_id"]) for i in items) == two_sites.south_ids


def _study_ids(client: TestClient, site: str) -> list[int]:
    """Return the ids of the studies ``/api/v1/studies?site=`` gives ``client``."""
    answer = client.get("/api/v1/studies", params={"per_page": 1000, "site": site})
    assert answer.status_code == 200, answer.text[:300]
    body = answer.json()
    assert body["total"] == len(body["items"])
    return sorted(int(i["study_id"]) for i in body["items"])


class TestSiteQueryParameter:
    """``site=`` on the JSON API and the study browser (before: 400 "Unknown query
    parameter(s) site", and no site field in the browser's form)."""

    def test_unrestricted_user_gets_the_sites_studies(
        self, two_sites: TwoSites, clients: dict[str, TestClient]
    ) -> None:
        """The admin: site=North gives North's studies, site=south (any case) South's."""
        assert _study_ids(clients["admin"], "North") == two_sites.north_ids
        assert _study_ids(clients["admin"], "south") == two_sites.south_ids

    def test_restricted_user_asking_its_own_site_gets_it(
        self, two_sites: TwoSites, clients: dict[str, TestClient]
    ) -> None:
        """phys and the North token asking for North get North's studies."""
        for name in ("phys", "token"):
            assert _study_ids(clients[name], "North") == two_sites.north_ids, name

    def test_restricted_user_asking_another_site_gets_nothing(
        self, two_sites: TwoSites, clients: dict[str, TestClient]
    ) -> None:
        """phys, view and the North token asking for South: no study, no group, no row
        (not North's data, not South's)."""
        for name in ("phys", "token"):
            assert _study_ids(clients[name], "South") == [], name
        for name in ("phys", "view", "token"):
            for path in ("/api/v1/statistics", "/api/v1/drl", "/api/v1/overview/studies-per-month"):
                answer = clients[name].get(path, params={"site": "South"})
                assert answer.status_code == 200, (name, path, answer.text[:300])
                assert answer.json()["rows"] == [], (name, path)

    def test_statistics_and_drl_take_the_site(
        self, two_sites: TwoSites, clients: dict[str, TestClient]
    ) -> None:
        """statistics and the overview count only the site asked for (the admin)."""
        admin = clients["admin"]
        for site, ids in (("North", two_sites.north_ids), ("South", two_sites.south_ids)):
            rows = admin.get("/api/v1/overview/studies-per-month", params={"site": site})
            assert sum(r["n_studies"] for r in rows.json()["rows"]) == len(ids), site
        stats = admin.get("/api/v1/statistics", params={"by": "device_name", "site": "South"})
        assert stats.status_code == 200, stats.text[:300]
        rooms = {r["device_name"] for r in stats.json()["rows"]}
        assert rooms and not rooms & set(two_sites.north_devices), rooms
        drl = admin.get("/api/v1/drl", params={"site": "North"})
        assert drl.status_code == 200, drl.text[:300]
        assert two_sites.south_markers(json.dumps(drl.json(), separators=(",", ":"))) == []

    def test_unknown_site_answers_400_naming_the_sites(
        self, two_sites: TwoSites, clients: dict[str, TestClient]
    ) -> None:
        """site=East: 400 naming the sites the principal may see (North's only North)."""
        for path in ("/api/v1/studies", "/api/v1/statistics", "/api/v1/drl"):
            answer = clients["admin"].get(path, params={"site": "East"})
            assert answer.status_code == 400, (path, answer.text[:300])
            assert answer.json()["detail"] == (
                "Unable to filter: No site named 'East'. The sites are: North, South."
            )
        answer = clients["token"].get("/api/v1/studies", params={"site": "East"})
        assert answer.status_code == 400
        assert answer.json()["detail"] == (
            "Unable to filter: No site named 'East'. The sites are: North."
        )

    def test_browser_has_a_site_select_of_the_users_sites(
        self, two_sites: TwoSites, clients: dict[str, TestClient]
    ) -> None:
        """/studies: the admin chooses North or South, phys North only; site=South shows
        South's studies to the admin and none to phys."""
        choices = re.compile(r'<select name="site">(.*?)</select>', re.S)
        options = re.compile(r'<option value="([^"]*)"')
        admin = choices.search(clients["admin"].get("/studies").text)
        assert admin is not None and options.findall(admin.group(1)) == ["", "North", "South"]
        phys = choices.search(clients["phys"].get("/studies").text)
        assert phys is not None and options.findall(phys.group(1)) == ["", "North"]
        page = clients["admin"].get("/studies", params={"site": "South", "per_page": 200}).text
        shown = sorted({int(i) for i in re.findall(r'href="/studies/(\d+)"', page)})
        assert shown == two_sites.south_ids
        assert '<option value="South" selected>South</option>' in page
        page = clients["phys"].get("/studies", params={"site": "South"}).text
        assert re.findall(r'href="/studies/(\d+)"', page) == []

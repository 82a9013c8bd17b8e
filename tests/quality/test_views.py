"""The quality views (issue #17): ``kerma quality`` CLI, JSON API and ``/quality`` page."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kerma.cli.main import app as cli_app
from kerma.config import Settings
from kerma.services.registry import Registry
from kerma.services.users import Accounts, Actor
from kerma.web.app import create_app
from kerma.web.routes import quality as quality_routes
from tests.conftest import DICOM_DIR
from tests.db_fixtures import make_settings
from tests.quality.generators import ct_series, dx_image, rejection_kos, write
from tests.web.conftest import PASSWORD, login

pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason="../shared/dicom missing")


@dataclass
class Site:
    """A small registry with DX images, a rejection note and a CT series."""

    settings: Settings
    folder: Path
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header of the site's viewer API token."""
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Import 4 DX images (1 rejected, DI 0.0 to 3.0) and a CT series (σ 10 HU)."""
    folder = tmp_path_factory.mktemp("quality-views")
    settings = make_settings(f"sqlite:///{folder / 'kerma.db'}", folder)
    images = [
        dx_image(station="VIEW-ROOM", exposure_index=250.0 * f, protocol="Chest <b>PA</b>")
        for f in (1.0, 1.5, 2.0, 0.5)
    ]
    with Registry(settings=settings) as registry:
        registry.import_paths([write(im, folder / "dx") for im in images])
        registry.import_paths([write(rejection_kos(images[:1]), folder / "kos")])
        registry.import_paths([write(ds, folder / "ct") for ds in ct_series(sigma_hu=10.0)])
    accounts = Accounts(settings)
    try:
        _info, token = accounts.add_token("quality-viewer", "viewer", Actor("test", "cli"))
        accounts.add_user("viewer", PASSWORD, "viewer", Actor("test", "cli"))
    finally:
        accounts.close()
    yield Site(settings, folder, token)


class TestApi:
    """/api/v1/quality/... give the service results as JSON."""

    def test_ei_rejects_noise_points(self, site: Site) -> None:
        """Each endpoint answers with the aggregate it names."""
        with TestClient(create_app(site.settings), headers=site.headers) as client:
            ei = client.get("/api/v1/quality/ei", params={"by": "room"}).json()
            rejects = client.get("/api/v1/quality/rejects").json()
            noise = client.get("/api/v1/quality/noise").json()
            points = client.get("/api/v1/quality/points").json()
            vendor = client.get("/api/v1/quality/vendor")
        assert ei[0]["room"] == "VIEW-ROOM" and ei[0]["n_di"] == 4
        assert ei[0]["n_di_calculated"] == 4
        room = next(r for r in rejects if r["room"] == "VIEW-ROOM")
        assert (room["n_images"], room["n_rejected"]) == (4, 1)
        assert noise[0]["global_noise_hu"] == pytest.approx(10.0, rel=0.10)
        assert noise[0]["ctdivol_mgy"] == pytest.approx(10.0)
        assert sorted(round(p["deviation_index"], 2) for p in points) == [-3.01, 0.0, 1.76, 3.01]
        assert vendor.status_code == 200

    def test_bad_group_is_422(self, site: Site) -> None:
        """An unknown group key is a 422 with the keys that exist, not a 500."""
        with TestClient(create_app(site.settings), headers=site.headers) as client:
            response = client.get("/api/v1/quality/ei", params={"by": "colour"})
        assert response.status_code == 422
        assert "choose from room" in response.json()["detail"]

    def test_without_token_is_401(self, site: Site) -> None:
        """The API refuses a request without a session or token."""
        with TestClient(create_app(site.settings)) as client:
            assert client.get("/api/v1/quality/ei").status_code == 401

    def test_every_route_requires_a_role(self) -> None:
        """Each quality route depends on require_role (security interface)."""
        for router in (quality_routes.api, quality_routes.pages):
            for route in router.routes:
                assert isinstance(route, APIRoute)
                calls = [d.call for d in route.dependant.dependencies]
                names = [getattr(c, "__qualname__", "") for c in calls]
                assert any("require_role" in n for n in names), route.path


class TestPage:
    """/quality shows the two scatters and the reject table, protocol names escaped."""

    def test_page_renders(self, site: Site) -> None:
        """Figures are embedded as JSON that cannot close the script element."""
        with TestClient(create_app(site.settings)) as client:
            assert client.get("/quality", follow_redirects=False).status_code == 303
            login(client, "viewer")
            response = client.get("/quality")
        assert response.status_code == 200
        html = response.text
        assert 'id="di-figure"' in html and 'id="noise-figure"' in html
        assert "/static/vendor/plotly.min.js" in html
        assert "VIEW-ROOM" in html and "25.0 %" in html
        assert "<b>PA</b>" not in html  # a protocol name is data, never markup


class TestCli:
    """``kerma quality`` prints the same aggregates."""

    def _run(self, site: Site, args: list[str]) -> str:
        env = {
            "KERMA_DATABASE_URL": site.settings.database_url,
            "KERMA_ARCHIVE_DIR": str(site.settings.archive_dir),
            "KERMA_PSEUDONYM_KEY": site.settings.pseudonym_key.get_secret_value()
            if hasattr(site.settings.pseudonym_key, "get_secret_value")
            else str(site.settings.pseudonym_key),
            "COLUMNS": "200",
        }
        result = CliRunner().invoke(cli_app, ["quality", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    def test_ei_rejects_noise(self, site: Site, tmp_path: Path) -> None:
        """The tables name the room, rates and noise; --csv writes every row."""
        out = self._run(site, ["ei", "--by", "room", "--csv", str(tmp_path / "ei.csv")])
        assert "VIEW-ROOM" in out
        assert (tmp_path / "ei.csv").read_text().startswith("room,n_events")
        assert "0.25" in self._run(site, ["rejects"])
        assert "Abdomen" in self._run(site, ["noise"])

    def test_rejects_table_shows_kap_in_gy_cm2(self, site: Site, tmp_path: Path) -> None:
        """The reject table gives the KAP of rejects in Gy·cm² (the rejected image's 1.5
        dGy·cm² is 0.15), as every Kerma table; --csv keeps dap_rejected_gym2 in Gy·m²
        (regression: the table showed 1.5e-05 under 'dap_rejected_gym2')."""
        out = self._run(site, ["rejects", "--csv", str(tmp_path / "rejects.csv")])
        assert "KAP rejected (Gy·cm²)" in out
        assert "0.15" in out and "1.5e-05" not in out
        rows = pd.read_csv(tmp_path / "rejects.csv")
        room = rows[rows["room"] == "VIEW-ROOM"].iloc[0]
        assert room["dap_rejected_gym2"] == pytest.approx(1.5e-5)

    def test_import_rejects_needs_a_readable_mapping(self, site: Site, tmp_path: Path) -> None:
        """A missing mapping file is a clear error, not a traceback."""
        log = tmp_path / "log.csv"
        log.write_text("Room\nA\n", encoding="utf-8")
        env = {**os.environ, "KERMA_DATABASE_URL": site.settings.database_url}
        result = subprocess.run(
            [
                *(sys.executable, "-m", "kerma.cli.main", "quality", "import-rejects"),
                *(str(log), "--mapping", str(tmp_path / "none.toml")),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert "Unable to read the reject-log mapping" in result.stderr
        assert "Traceback" not in result.stderr

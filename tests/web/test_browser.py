"""The dashboard in a real browser: Playwright driving Debian's Chromium against ``kerma serve``.

``kerma serve`` runs as a process on a free loopback port over a registry imported from
../shared/dicom; the test logs in, filters the study browser and checks the rows against
the registry, opens a study, reviews and closes an alert, downloads the CSV of the filter
and checks its rows, and saves a screenshot of every page under
``test-output/playwright/`` (ignored by git). Skipped without ``/usr/bin/chromium``
(``scripts/test`` installs it) or the ``playwright`` package; no ``playwright install``.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.db_fixtures import make_settings
from tests.web.dashboard_fixtures import PASSWORD, add_user, has_security, import_shared

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "playwright"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """Yield (base URL, settings) of ``kerma serve`` over an imported registry."""
    import httpx

    folder = tmp_path_factory.mktemp("served")
    settings = make_settings(f"sqlite:///{folder / 'kerma.db'}", folder)
    import_shared(settings)
    add_user(settings, "admin", "admin")
    port = free_port()
    env = os.environ | {
        "KERMA_DATABASE_URL": settings.database_url,
        "KERMA_ARCHIVE_DIR": str(settings.archive_dir),
        "KERMA_PSEUDONYM_KEY": str(settings.pseudonym_key),
        "KERMA_ARCHIVE_MODE": "original",
    }
    kerma = Path(sys.executable).with_name("kerma")
    log = (folder / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(kerma), "serve", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if server.poll() is not None:
                pytest.fail(f"kerma serve exited: {(folder / 'serve.log').read_text()}")
            try:
                httpx.get(f"{base}/static/kerma.css", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base, settings
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser_page(served: tuple[str, Any]) -> Iterator[Any]:
    """A Chromium page (headless, Debian's binary), logged in as the admin."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    base, _ = served
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(base_url=base, accept_downloads=True,
                                      viewport={"width": 1400, "height": 1000})  # fmt: skip
        page = context.new_page()
        page.goto("/")
        if "/login" in page.url:
            page.screenshot(path=str(OUTPUT / "00-login.png"))
            page.fill('input[name="username"]', "admin")
            page.fill('input[name="password"]', PASSWORD)
            page.click('main button[type="submit"]')
            page.wait_for_url(f"{base}/", timeout=120_000)
        yield page
        context.close()
        browser.close()


def shot(page: Any, name: str) -> None:
    """Save a full-page screenshot under test-output/playwright/."""
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


class TestInChromium:
    def test_walk_the_dashboard(self, browser_page: Any, served: tuple[str, Any]) -> None:
        """Log in, filter, open a study, review and close an alert, download the CSV."""
        from kerma.api import Registry

        page = browser_page
        _, settings = served
        with Registry(settings=settings) as registry:
            studies = registry.studies()
            alert_id = int(registry.alerts(state="open")["alert_id"].iloc[0])
        expected_ct = set(studies.loc[studies["modality"] == "CT", "study_id"])

        # overview: the chart is drawn by plotly.js served from the package
        page.goto("/")
        page.wait_for_selector("#per-month .main-svg")
        assert page.inner_text("#n-studies") == f"{len(studies):,}"
        shot(page, "01-overview")

        # study browser: filter on CT through the form; every row shown is a CT study
        page.goto("/studies")
        page.fill('#study-filter input[name="modality"]', "CT")
        page.select_option('#study-filter select[name="per_page"]', "200")
        page.click('#study-filter button[type="submit"]')
        page.wait_for_url("**/studies?*modality=CT*")
        modalities = page.locator('#studies td[data-col="modality"]').all_inner_texts()
        ids = {int(i) for i in page.locator("#studies tr[data-study-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.studyId)")}  # fmt: skip
        assert modalities and set(modalities) == {"CT"}
        assert ids == expected_ct
        assert page.inner_text("#total") == str(len(expected_ct))
        shot(page, "02-studies-ct")

        # the CSV of the current filter
        with page.expect_download() as download_info:
            page.click("#csv")
        path = download_info.value.path()
        with Path(path).open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert {int(r["study_id"]) for r in rows} == expected_ct
        assert {r["modality"] for r in rows} == {"CT"}

        # a study
        page.click("#studies tr[data-study-id] td a")
        page.wait_for_selector("#events")
        assert page.locator("#events tbody tr").count() >= 1
        shot(page, "03-study")

        # an alert: review, then close with outcome and justification
        page.goto("/alerts")
        shot(page, "04-alerts")
        page.goto(f"/alerts/{alert_id}")
        page.fill("#review-form textarea[name=note]", "checked in the browser")
        page.click("#review-form button")
        page.wait_for_selector("#alert-state:text('under_review')")
        page.select_option("#close-form select[name=outcome]", "no_action")
        page.fill("#close-form textarea[name=justification]", "clinically justified")
        page.click("#close-form button")
        page.wait_for_selector("#alert-state:text('closed')")
        assert page.inner_text("#alert-outcome") == "no_action"
        shot(page, "05-alert-closed")

        # analysis, admin pages
        page.goto("/analysis?exam=CT+Chest-Abdomen-Pelvis")
        page.wait_for_selector("#chart-boxes .main-svg")
        shot(page, "06-analysis")

        # quality views (issue #17): dose against the deviation index, drawn by the
        # plotly.js of /static/vendor (the shared DX/MG images carry exposure indices)
        with page.expect_response(lambda r: r.url.endswith("/static/vendor/plotly.min.js")) as js:
            page.goto("/quality")
        assert js.value.status == 200
        page.wait_for_selector("#di-figure .main-svg")
        assert page.locator("#di-figure .scatterlayer .point").count() > 0
        shot(page, "11-quality")
        for name, url in (("07-admin", "/admin"), ("08-exam-rules", "/admin/exam-rules?exam="
                          "CT+Chest&pattern=chest&modality=CT"), ("09-intake", "/admin/intake"),
                          ("10-api-docs", "/docs")):  # fmt: skip
            page.goto(url)
            page.wait_for_load_state("networkidle")
            shot(page, name)
        # an admin saves a site exam rule (the studies are mapped again), then deletes it
        page.goto("/admin/exam-rules?exam=CT+Chest+site&pattern=chest&modality=CT")
        page.fill('#rule-save input[name="name"]', "site-ct-chest")
        page.click("#rule-save button[type=submit]")
        page.wait_for_selector("#remap-summary")
        shot(page, "12-exam-rule-saved")
        with Registry(settings=settings) as registry:
            exams = registry.studies(include_non_patient=True)["standard_exam"]
        assert exams.eq("CT Chest site").sum() > 0
        page.click("#site-rules form[action$='/delete'] button")
        page.wait_for_selector("text=Site rule site-ct-chest deleted.")
        with Registry(settings=settings) as registry:
            exams = registry.studies(include_non_patient=True)["standard_exam"]
            alert = registry.alert(alert_id)
        assert exams.eq("CT Chest site").sum() == 0
        assert (alert["state"], alert["outcome"]) == ("closed", "no_action")
        assert len(list(OUTPUT.glob("*.png"))) >= 11

        if has_security():
            from kerma.services.users import Accounts, AuditFilter

            accounts = Accounts(settings)
            try:
                page_ = accounts.audit_page(AuditFilter(), per_page=1000)
                actions = {e.action for e in page_.entries}
            finally:
                accounts.close()
            for action in ("login.ok", "study.view", "export.studies_csv", "alert.review",
                           "alert.close", "config.exam_rule"):  # fmt: skip
                assert action in actions, actions

"""The alert queue and an alert's page show its value and threshold in display units,
as ``kerma alerts list``/``show``, the study page and the alert's own history do.

Regression (trial3): the queue and the page showed KAP as stored, ``0.0003592 Gy·m²``,
next to a history line of ``3.592 Gy·cm²``; a count read ``12 1`` (UCUM's "1").

One fluoroscopy study of ../shared/dicom; a pack of two rules, both crossed by it: a
threshold on the KAP total (written in Gy·cm², stored in Gy·m²) and a count of the
patient's RF/XA studies in 365 days (unit "1"). SQLite: the rendering is the subject.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.registry import Registry
from tests.db_fixtures import fresh_database, make_settings
from tests.web.dashboard_fixtures import add_user, sign_in

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"
RF_FILE = "RF-RDSR-Philips_Azurion.dcm"
KAP_RULE = "test-kap-gycm2"
COUNT_RULE = "test-rf-count"

pytestmark = pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/dicom missing")

PACK = f"""pack = "test-units"
title = "Test: a KAP threshold in Gy.cm2 and a count"

[[rule]]
id = "{KAP_RULE}"
title = "Fluoroscopy KAP total at or above 0.5 Gy.cm2"
kind = "threshold"
level = "study"
quantity = "dap_total_gym2"
operator = ">="
threshold = 0.5
unit = "Gy.cm2"
basis = "site policy"
source = "Test policy (tests/web/test_alert_units.py)"
source_ref = "SITE-POLICY"
[rule.scope]
modalities = ["RF/XA"]

[[rule]]
id = "{COUNT_RULE}"
title = "RF/XA studies of one patient in 12 months at or above 1"
kind = "cumulative"
quantity = "count"
operator = ">="
threshold = 1
unit = "1"
window_days = 365
basis = "site policy"
source = "Test policy (tests/web/test_alert_units.py)"
source_ref = "SITE-POLICY"
[rule.scope]
modalities = ["RF/XA"]
"""


@pytest.fixture(scope="module")
def alerted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """Yield the settings and the alerts frame of a registry of the RF study, alerted."""
    folder = tmp_path_factory.mktemp("alert-units")
    with fresh_database("sqlite", folder) as url:
        pack = folder / "rules.toml"
        pack.write_text(PACK, encoding="utf-8")
        settings = make_settings(url, folder, alert_rules=pack)
        add_user(settings, "phys", "physicist")
        with Registry(settings=settings) as registry:
            registry.import_paths([SHARED_DICOM / RF_FILE])
            registry.recheck_alerts()
            alerts = registry.alerts()
        yield settings, alerts


@pytest.fixture(scope="module")
def client(alerted: tuple[Settings, Any]) -> Iterator[TestClient]:
    """A TestClient of the app, logged in as a physicist."""
    from kerma.web.app import create_app

    with TestClient(create_app(alerted[0])) as test_client:
        sign_in(test_client, "phys")
        yield test_client


def _row(alerts: Any, rule_id: str) -> dict[str, Any]:
    rows = alerts[alerts["rule_id"] == rule_id].to_dict("records")
    assert len(rows) == 1, alerts[["rule_id", "value"]]
    return rows[0]


def _text(page: str) -> str:
    """Return a page's text with tags removed and white space made single."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_kap_alert_page_shows_gy_cm2(client: TestClient, alerted: tuple[Settings, Any]) -> None:
    """Value and threshold of a KAP alert in Gy·cm² (stored Gy·m² × 10⁴), not Gy·m²."""
    row = _row(alerted[1], KAP_RULE)
    assert row["unit"] == "Gy·m²"
    assert row["threshold"] == pytest.approx(0.5e-4)
    shown = f"{row['value'] * 1e4:.4g} Gy·cm²"
    page = client.get(f"/alerts/{row['alert_id']}")
    assert page.status_code == 200
    value = re.search(r'id="alert-value">([^<]*)<', page.text)
    threshold = re.search(r'id="alert-threshold">([^<]*)<', page.text)
    assert value is not None and threshold is not None
    assert value.group(1).startswith(f"{shown} (dap_total_gym2)"), value.group(1)
    assert threshold.group(1).startswith("0.5 Gy·cm² — "), threshold.group(1)
    assert "Gy·m²" not in _text(page.text)
    queue = _text(client.get("/alerts").text)
    assert f"{shown} 0.5 " in queue, queue
    assert "Gy·m²" not in queue


def test_count_alert_has_no_unit_one(client: TestClient, alerted: tuple[Settings, Any]) -> None:
    """A count reads "1 (count)" and "1 — source", and its history "count 1 >= 1"."""
    row = _row(alerted[1], COUNT_RULE)
    assert (row["unit"], row["value"], row["threshold"]) == ("1", 1.0, 1.0)
    page = client.get(f"/alerts/{row['alert_id']}")
    text = _text(page.text)
    value = re.search(r'id="alert-value">([^<]*)<', page.text)
    threshold = re.search(r'id="alert-threshold">([^<]*)<', page.text)
    assert value is not None and threshold is not None
    assert value.group(1) == "1 (count)", value.group(1)
    assert threshold.group(1).startswith("1 — Test policy"), threshold.group(1)
    assert "count 1 >= 1 " in text + " ", text
    assert "count 1 1 >=" not in text


def test_report_lists_the_alerts_quantity_once(alerted: tuple[Settings, Any]) -> None:
    """The significant-event report's dose table: the alert's KAP in Gy·cm² first, then
    the study's other quantities, KAP total not again (it was listed twice: once as
    stored, Gy·m², once in Gy·cm²)."""
    from kerma.services.alert_report import render_report
    from kerma.services.alerts import report_message

    row = _row(alerted[1], KAP_RULE)
    with Registry(settings=alerted[0]) as registry:
        registry.close_alert(
            int(row["alert_id"]),
            outcome="notified_to_authority",
            justification="test",
            user="test",
        )
        message, quantities = report_message(registry, int(row["alert_id"]))
    labels = [label for label, _, _ in quantities]
    assert "KAP total" not in labels and len(labels) == len(set(labels)), labels
    assert "Ka,r total" in labels, labels
    page = render_report(message, quantities, "html")
    text = _text(page.decode("utf-8") if isinstance(page, bytes) else page)
    assert text.count(f"KAP total {row['value'] * 1e4:.5g} Gy·cm²") == 1, text

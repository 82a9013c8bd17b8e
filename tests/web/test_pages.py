"""The dashboard pages against a registry imported from ../shared/dicom (SQLite).

Each page answers, shows the registry's values, and its filters really filter: the rows
shown are compared with the registry's own study frame filtered here with pandas.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from tests.web.dashboard_fixtures import csrf_of, dash_client, dash_registry, shared_settings

__all__ = ["dash_client", "dash_registry"]  # fixtures used by the tests below


@pytest.fixture(scope="module")
def dash_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The SQLite registry of ../shared/dicom (the pages read through the same services
    on both backends; the API tests run on both)."""
    yield from shared_settings("sqlite", tmp_path_factory)


ROW = re.compile(r'<tr data-study-id="(\d+)">')


def shown_ids(html: str) -> list[int]:
    """Return the study ids of the browser's rows, in order."""
    return [int(i) for i in ROW.findall(html)]


def frame(registry: Any) -> pd.DataFrame:
    """Return every patient study of the registry (the test's independent expectation)."""
    return registry.studies()


class TestOverview:
    def test_overview_counts_studies_and_alerts(
        self, dash_client: TestClient, dash_registry: Any
    ) -> None:
        """The overview shows the number of patient studies, open alerts and every device."""
        page = dash_client.get("/")
        assert page.status_code == 200
        n = len(frame(dash_registry))
        assert f'id="n-studies">{n:,}<' in page.text
        open_alerts = dash_registry.count_alerts(state="open")
        assert f'id="open-alerts">{open_alerts}<' in page.text
        for name in dash_registry.devices()["device_name"]:
            assert str(name).replace("&", "&amp;") in page.text
        assert "Plotly.newPlot" in page.text
        assert '<script src="/static/vendor/plotly.min.js">' in page.text

    def test_plotly_served_from_the_package(self, dash_client: TestClient) -> None:
        """plotly.js comes from the installed plotly package, not a CDN."""
        answer = dash_client.get("/static/vendor/plotly.min.js")
        assert answer.status_code == 200
        assert b"plotly" in answer.content[:2000].lower()
        assert "cdn" not in dash_client.get("/").text.lower()


class TestStudyBrowser:
    def test_first_page_is_newest_first(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Without a filter: every patient study, newest first, total shown."""
        expected = frame(dash_registry).sort_values(["study_date", "study_time"], ascending=False)
        page = dash_client.get("/studies?per_page=200")
        assert page.status_code == 200
        ids = shown_ids(page.text)
        assert len(ids) == len(expected)
        assert f'id="total">{len(expected)}<' in page.text
        dates = dict(zip(expected["study_id"], expected["study_date"], strict=True))
        shown_dates = [dates[i] for i in ids]
        assert shown_dates == sorted(shown_dates, reverse=True)

    @pytest.mark.parametrize(
        ("query", "keep"),
        [
            ("modality=CT", lambda f: f["modality"] == "CT"),
            ("modality=RF&date_from=2017-01-01&date_to=2019-12-31",
             lambda f: (f["modality"] == "RF") & (f["study_date"] >= "2017-01-01")
             & (f["study_date"] <= "2019-12-31")),
            ("sex=F", lambda f: f["patient_sex"] == "F"),
            ("age_min=50&age_max=70", lambda f: (f["patient_age_years"] >= 50)
             & (f["patient_age_years"] < 70)),
            ("exam=Mammography+screening", lambda f: f["standard_exam"] == "Mammography screening"),
            ("dose_quantity=ct_dlp_total_mgycm&dose_min=500&dose_max=1000",
             lambda f: (f["ct_dlp_total_mgycm"] >= 500) & (f["ct_dlp_total_mgycm"] <= 1000)),
            # the page's form sends KAP in Gy·cm² (display unit); stored in Gy·m²
            ("dose_quantity=dap_total_gym2&dose_min=10&dose_max=50&dose_unit=display",
             lambda f: (f["dap_total_gym2"] >= 0.001) & (f["dap_total_gym2"] <= 0.005)),
            ("weight_min=70", lambda f: f["patient_weight_kg"] >= 70),
            ("description=chest", lambda f: f["study_description"].fillna("").str.lower()
             .str.contains("chest")),
        ],
        ids=["modality", "modality-dates", "sex", "age-band", "exam", "dose-range",
             "kap-range-display-unit", "weight", "description"],
    )  # fmt: skip
    def test_filter_rows_match(
        self, dash_client: TestClient, dash_registry: Any, query: str, keep: Any
    ) -> None:
        """The rows shown are exactly the studies the filter selects (checked with pandas)."""
        f = frame(dash_registry)
        f["study_date"] = f["study_date"].dt.strftime("%Y-%m-%d")
        expected = set(f.loc[keep(f).fillna(False).astype(bool), "study_id"])
        assert expected, "the filter must select something"
        assert len(expected) < len(f), "the filter must leave something out"
        page = dash_client.get(f"/studies?per_page=200&{query}")
        assert page.status_code == 200
        assert set(shown_ids(page.text)) == expected

    def test_has_alert_filter(self, dash_client: TestClient, dash_registry: Any) -> None:
        """has_alert=yes shows the studies with an alert, no the others."""
        alerted = set(dash_registry.alerts()["study_id"].dropna().astype(int))
        yes = set(shown_ids(dash_client.get("/studies?per_page=200&has_alert=yes").text))
        no = set(shown_ids(dash_client.get("/studies?per_page=200&has_alert=no").text))
        assert yes == alerted
        assert not yes & no
        assert len(yes | no) == len(frame(dash_registry))

    def test_device_filter(self, dash_client: TestClient, dash_registry: Any) -> None:
        """device_id keeps the studies of one room."""
        f = frame(dash_registry)
        device_id = int(f["device_id"].mode().iloc[0])
        page = dash_client.get(f"/studies?per_page=200&device_id={device_id}")
        assert set(shown_ids(page.text)) == set(f.loc[f["device_id"] == device_id, "study_id"])

    def test_qa_studies_only_when_asked(self, dash_client: TestClient, dash_registry: Any) -> None:
        """QA / phantom studies are hidden unless include_qa is set."""
        everything = dash_registry.studies(include_non_patient=True)
        qa = set(everything.loc[everything["is_non_patient"], "study_id"])
        assert qa, "../shared/dicom holds a QA study"
        hidden = set(shown_ids(dash_client.get("/studies?per_page=200").text))
        shown = set(shown_ids(dash_client.get("/studies?per_page=200&include_qa=true").text))
        assert not qa & hidden
        assert qa <= shown

    def test_sort_and_paging(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Sorting by DLP ascending and paging by 5 walk the CT studies in DLP order."""
        f = frame(dash_registry)
        ct = f[f["modality"] == "CT"].sort_values(["ct_dlp_total_mgycm", "study_id"])
        ids: list[int] = []
        for page in (1, 2, 3):
            html = dash_client.get(
                f"/studies?modality=CT&sort=ct_dlp_total_mgycm:asc&per_page=5&page={page}"
            ).text
            ids += shown_ids(html)
        assert ids[: len(ct)] == list(ct["study_id"])[: len(ids)]
        assert len(ids) == len(ct)

    def test_empty_form_selects_everything(
        self, dash_client: TestClient, dash_registry: Any
    ) -> None:
        """The filter form submitted with every field empty lists every study (regression:
        an empty room field was refused)."""
        fields = ("modality", "date_from", "date_to", "device_id", "exam", "protocol",
                  "description", "age_min", "age_max", "sex", "weight_min", "weight_max",
                  "dose_quantity", "dose_min", "dose_max", "has_alert")  # fmt: skip
        query = "&".join(f"{f}=" for f in fields)
        page = dash_client.get(f"/studies?per_page=200&{query}")
        assert page.status_code == 200
        assert len(shown_ids(page.text)) == len(frame(dash_registry))
        assert dash_client.get("/studies?page=x").status_code == 400

    def test_bad_filter_is_a_clear_error(self, dash_client: TestClient) -> None:
        """A value that is not a date or number answers 400 with a message, no traceback."""
        page = dash_client.get("/studies?date_from=yesterday")
        assert page.status_code == 400
        assert "Unable to filter" in page.text
        assert "Traceback" not in page.text
        assert dash_client.get("/studies?age_min=old").status_code == 400
        assert dash_client.get("/studies?dose_unit=furlong").status_code == 400

    def test_form_sends_dose_bounds_in_display_units(self, dash_client: TestClient) -> None:
        """The form's dose bounds are in the unit its quantity list shows (KAP Gy·cm²)."""
        page = dash_client.get("/studies")
        assert '<input type="hidden" name="dose_unit" value="display">' in page.text
        assert "KAP" in page.text and "Gy·cm²" in page.text

    def test_csv_streams_the_filter(self, dash_client: TestClient, dash_registry: Any) -> None:
        """The CSV holds one row per study of the filter, with canonical column names."""
        answer = dash_client.get("/studies.csv?modality=CT")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        f = frame(dash_registry)
        assert {int(r["study_id"]) for r in rows} == set(f.loc[f["modality"] == "CT", "study_id"])
        assert all(r["modality"] == "CT" for r in rows)
        assert "ct_dlp_total_mgycm" in rows[0]
        assert "accession_number" not in rows[0]


class TestStudyDetail:
    def test_detail_lists_every_event(self, dash_client: TestClient, dash_registry: Any) -> None:
        """The study page shows the study, each current event and the archived originals."""
        f = frame(dash_registry)
        study_id = int(f.loc[f["modality"] == "CT", "study_id"].iloc[0])
        detail = dash_registry.study(study_id)
        page = dash_client.get(f"/studies/{study_id}")
        assert page.status_code == 200
        body = page.text.split('id="events"')[1].split("</table>")[0]
        assert body.count("<tr>") == len(detail.events) + 1  # header row
        assert detail.study["study_instance_uid"] in page.text
        assert "/originals/" in page.text

    def test_detail_shows_kap_in_display_units(
        self, dash_client: TestClient, dash_registry: Any
    ) -> None:
        """KAP and Ka,r read as on the device and in ``kerma drl``: Gy·cm² and mGy, not the
        canonical Gy·m² and Gy (a fluoroscopy study's totals)."""
        f = frame(dash_registry)
        row = f[(f["modality"] == "RF") & f["dap_total_gym2"].notna()].iloc[0]
        page = dash_client.get(f"/studies/{int(row['study_id'])}").text
        totals = page.split('id="totals"')[1].split("</dl>")[0]
        assert "KAP total (Gy·cm²)" in totals and "Gy·m²" not in totals
        shown = totals.split('data-col="dap_total_gym2">')[1].split("<")[0]
        assert float(shown) == pytest.approx(row["dap_total_gym2"] * 1e4, rel=1e-3)

    def test_original_downloads(self, dash_client: TestClient, dash_registry: Any) -> None:
        """An original downloads as the archived DICOM bytes (readable by pydicom)."""
        import pydicom

        f = frame(dash_registry)
        study_id = int(f.loc[f["modality"] == "CT", "study_id"].iloc[0])
        page = dash_client.get(f"/studies/{study_id}").text
        link = re.search(rf"/studies/{study_id}/originals/(\d+)", page)
        assert link is not None
        answer = dash_client.get(link.group(0))
        assert answer.status_code == 200
        ds = pydicom.dcmread(io.BytesIO(answer.content))
        assert ds.StudyInstanceUID == dash_registry.study(study_id).study["study_instance_uid"]

    def test_missing_study_is_404(self, dash_client: TestClient) -> None:
        """An unknown study answers 404 with a message."""
        answer = dash_client.get("/studies/999999")
        assert answer.status_code == 404
        assert "No study with id 999999" in answer.text


class TestAnalysis:
    def test_analysis_of_an_exam(self, dash_client: TestClient, dash_registry: Any) -> None:
        """The analysis page of an exam counts its samples and draws its five charts."""
        exam = "CT Chest-Abdomen-Pelvis"
        f = frame(dash_registry)
        n = int(((f["standard_exam"] == exam) & f["ct_dlp_total_mgycm"].notna()).sum())
        page = dash_client.get("/analysis", params={"exam": exam})
        assert page.status_code == 200
        assert f'id="n-samples">{n}<' in page.text
        assert page.text.count("Plotly.newPlot") == 5

    def test_browser_shows_kap_in_display_units(
        self, dash_client: TestClient, dash_registry: Any
    ) -> None:
        """The study browser's KAP column reads in Gy·cm² like ``kerma studies``; its
        ``data-value`` (and sorting, filtering, CSV) stay canonical."""
        f = frame(dash_registry)
        row = f[(f["modality"] == "RF") & f["dap_total_gym2"].notna()].iloc[0]
        page = dash_client.get(
            "/studies", params={"modality": "RF", "per_page": 500, "sort": "study_id"}
        ).text
        assert "KAP total (Gy·cm²)" in page and "KAP total (Gy·m²)</a>" not in page
        cell = page.split(f'data-study-id="{int(row["study_id"])}"')[1]
        cell = cell.split('data-col="dap_total_gym2"')[1].split("</td>")[0]
        value, shown = cell.split('data-value="')[1].split('">')
        assert float(value) == pytest.approx(row["dap_total_gym2"])
        assert float(shown) == pytest.approx(row["dap_total_gym2"] * 1e4, rel=1e-3)

    def test_national_drl_of_a_study_total(
        self, dash_client: TestClient, dash_registry: Any
    ) -> None:
        """The DRL card finds the DRL of the analysed total (KAP total of a fluoroscopy
        exam against the EU DRL given as 'dap_gym2'), in display units, as the overview."""
        from kerma.services.dashboard import selected_drls

        exam = "Pacemaker implantation single-chamber"
        drls = selected_drls(dash_registry.settings)
        drl = drls[(drls["standard_exam"] == exam) & (drls["quantity"] == "dap_gym2")]
        assert len(drl) == 1
        page = dash_client.get("/analysis", params={"exam": exam})
        assert page.status_code == 200
        shown = page.text.split('id="drl">')[1].split("<")[0]
        assert float(shown) == pytest.approx(float(drl["drl_value"].iloc[0]) * 1e4)

    def test_chart_csv(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Each chart's data downloads as CSV; the box data count the exam's samples per room."""
        exam = "CT Chest-Abdomen-Pelvis"
        f = frame(dash_registry)
        rows = f[(f["standard_exam"] == exam) & f["ct_dlp_total_mgycm"].notna()]
        answer = dash_client.get("/analysis/boxes.csv", params={"exam": exam})
        assert answer.status_code == 200
        boxes = list(csv.DictReader(io.StringIO(answer.text)))
        assert sum(int(b["n"]) for b in boxes) == len(rows)
        for box in boxes:
            values = rows.loc[rows["device_name"] == box["device_name"], "ct_dlp_total_mgycm"]
            assert float(box["median"]) == pytest.approx(values.median())
        for chart in ("histogram", "monthly", "scatter", "workload"):
            assert (
                dash_client.get(f"/analysis/{chart}.csv", params={"exam": exam}).status_code == 200
            )
        assert dash_client.get("/analysis/nothing.csv", params={"exam": exam}).status_code == 404


class TestAlerts:
    def test_unknown_alert_state_is_refused(self, dash_client: TestClient) -> None:
        """An alert state that does not exist answers 400 naming the states; all is all."""
        refused = dash_client.get("/alerts", params={"state": "bogus"})
        assert refused.status_code == 400
        assert "open, under_review, closed" in refused.text
        every = dash_client.get("/alerts", params={"state": "all"})
        assert every.status_code == 200
        assert every.text.count('href="/alerts/') == dash_client.get(
            "/alerts", params={"state": ""}
        ).text.count('href="/alerts/')

    def test_review_and_close(self, dash_client: TestClient, dash_registry: Any) -> None:
        """An open alert is reviewed, then closed with outcome and justification."""
        alert_id = int(dash_registry.alerts(state="open")["alert_id"].iloc[0])
        queue = dash_client.get("/alerts")
        assert f"/alerts/{alert_id}" in queue.text
        page = dash_client.get(f"/alerts/{alert_id}")
        token = csrf_of(page.text)
        answer = dash_client.post(f"/alerts/{alert_id}/review",
                                  data={"note": "looking", "csrf_token": token})  # fmt: skip
        assert answer.status_code == 200  # after the redirect
        assert dash_registry.alert(alert_id)["state"] == "under_review"
        # a close without justification is refused with the service's message
        refused = dash_client.post(f"/alerts/{alert_id}/close",
                                   data={"outcome": "no_action", "justification": "",
                                         "csrf_token": token})  # fmt: skip
        assert refused.status_code == 400
        assert "justification is required" in refused.text
        assert "--justification" not in refused.text  # no CLI option in a web message
        dash_client.post(f"/alerts/{alert_id}/close", data={"outcome": "optimisation",
                         "justification": "protocol revised", "csrf_token": token})  # fmt: skip
        alert = dash_registry.alert(alert_id)
        assert (alert["state"], alert["outcome"]) == ("closed", "optimisation")
        history = dash_client.get(f"/alerts/{alert_id}").text
        assert "protocol revised" in history
        assert "looking" in history


class TestAdmin:
    def test_admin_pages(self, dash_client: TestClient, dash_registry: Any) -> None:
        """Admin shows the DRL set, alert rules, devices; rejected and ignored objects."""
        page = dash_client.get("/admin")
        assert page.status_code == 200
        assert 'id="drl-set">EU<' in page.text
        intake = dash_client.get("/admin/intake")
        assert intake.status_code == 200
        assert f"Rejected ({dash_registry.count_rejects()};" in intake.text

    def test_rule_trial(self, dash_client: TestClient, dash_registry: Any) -> None:
        """A trial rule counts the stored studies its pattern matches, saving nothing."""
        f = dash_registry.studies(include_non_patient=True)
        text = (f["study_description"].fillna("") + " " + f["requested_procedure_description"]
                .fillna("") + " " + f["procedure_reported"].fillna(""))  # fmt: skip
        n = int((text.str.contains("chest", case=False) & (f["modality"] == "CT")).sum())
        page = dash_client.get("/admin/exam-rules", params={"exam": "CT Thorax trial",
                               "pattern": "chest", "modality": "CT"})  # fmt: skip
        assert page.status_code == 200
        assert f"would map <strong>{n}</strong> studies" in page.text
        assert (
            dash_registry.studies(include_non_patient=True)["standard_exam"]
            .eq("CT Thorax trial")
            .sum()
            == 0
        )
        bad = dash_client.get("/admin/exam-rules", params={"exam": "X", "pattern": "(["})
        assert bad.status_code == 400
        assert "not a valid regular expression" in bad.text


class TestRoles:
    def test_viewer_sees_aggregates_only(self, dash_settings: Settings, dash_registry: Any) -> None:
        """A viewer gets the overview and the analysis, 403 on studies, alerts and admin."""
        from kerma.web.app import create_app
        from tests.web.dashboard_fixtures import has_security, sign_in

        if not has_security():
            pytest.skip("needs the security work (users and roles)")
        study_id = int(frame(dash_registry)["study_id"].iloc[0])
        with TestClient(create_app(dash_settings)) as client:
            sign_in(client, "view")
            assert client.get("/").status_code == 200
            assert client.get("/analysis").status_code == 200
            for url in (f"/studies/{study_id}", "/studies", "/studies.csv", "/alerts", "/admin",
                        f"/api/v1/studies/{study_id}/events"):  # fmt: skip
                assert client.get(url, follow_redirects=False).status_code == 403, url
        with TestClient(create_app(dash_settings)) as anonymous:
            assert anonymous.get("/studies", follow_redirects=False).status_code in (303, 307)
            assert anonymous.get("/api/v1/studies").status_code == 401


def test_missing_dataframe_values_are_not_shown_as_nan() -> None:
    """A missing string of a pandas 3 ``str`` column is NaN: ``{{ r.station_name or "" }}``
    shows a dash, not "nan" (the overview's station column of an RF room without one)."""
    import pandas as pd

    from kerma.web.templating import templates

    row = pd.DataFrame({"station_name": ["CT1", None]}, dtype="str").to_dict("records")[1]
    html = templates.env.from_string('<td>{{ r.station_name or "" }}</td>').render(r=row)
    assert html == "<td>–</td>"


def test_api_docs_page_needs_no_internet(dash_client: TestClient) -> None:
    """/docs lists the API's operations from the OpenAPI description, loading nothing from
    a CDN (Swagger UI's scripts would not load on a closed hospital network)."""
    page = dash_client.get("/docs")
    assert page.status_code == 200, page.text[-600:]
    assert "/api/v1/studies/{study_id}/events" in page.text
    assert "/dicomweb/studies" in page.text
    assert "cdn." not in page.text and "https://" not in page.text

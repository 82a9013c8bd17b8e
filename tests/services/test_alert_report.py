"""The significant-event report: PDF text (pdftotext), HTML escaping, refusal, font fallback."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kerma.cli.main import build_app
from kerma.errors import AlertMessageError, ReportNotAllowedError
from kerma.services import alert_report
from kerma.services.alert_notify import AlertMessage
from kerma.services.alert_report import render_report, transliterate
from tests.services.alert_fixtures import PlantedPatient, alert_dict, planted_patient

HISTORY: list[dict[str, Any]] = [
    {
        "time": "2026-12-01T10:00:00+00:00",
        "user": "kerma",
        "action": "opened",
        "text": "KAP 612.5 Gy·cm² ≥ 500 Gy·cm²",
    },
    {
        "time": "2026-12-02T09:30:00+00:00",
        "user": "mpe.huber",
        "action": "under_review",
        "text": "Skin follow-up arranged <script>alert(1)</script>",
    },
    {
        "time": "2026-12-03T15:05:09+00:00",
        "user": "rpo.meier",
        "action": "closed",
        "text": "Notified to the authority, reference 42/26; protocol frame rate lowered.",
    },
]
EXTRA = [("Ka,r total", 4210.0, "mGy"), ("Fluoro time", 3720.0, "s")]
DRLS = [("DRL KAP coronary angiography", 35.0, "Gy·cm²", "EC Radiation Protection 195 (2021)")]

needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="no pdftotext")


@pytest.fixture
def patient(shared_dir: Path) -> PlantedPatient:
    """The identifying values of the real source file."""
    return planted_patient(shared_dir / "dicom")


def notified(uid: str, **changes: Any) -> AlertMessage:
    """Return a closed alert notified to the authority, with its history."""
    values: dict[str, Any] = {
        "state": "closed",
        "outcome": "notified_to_authority",
        "history": HISTORY,
    }
    values.update(changes)
    return AlertMessage.from_dict(alert_dict(uid, alert_id=31, **values))


def pdf_text(data: bytes, tmp_path: Path, *options: str) -> str:
    """Return the text of a PDF (pdftotext with ``options``), whitespace collapsed."""
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", *options, str(path), "-"], capture_output=True, check=True)
    return " ".join(done.stdout.decode("utf-8").split())


@needs_pdftotext
class TestPdf:
    """The PDF for the authority."""

    def test_text_holds_doses_sources_and_every_history_entry(
        self, patient: PlantedPatient, tmp_path: Path
    ) -> None:
        """Values with units, threshold and DRL sources, patient data, the whole history."""
        message = notified(patient.study_instance_uid)
        data = render_report(message, EXTRA, "pdf", reference_levels=DRLS)
        assert data.startswith(b"%PDF-")
        text = pdf_text(data, tmp_path, "-layout")  # table rows as on the page
        for expected in (
            "high-dose alert #31",
            "KAP total 612.5 Gy·cm²",
            "Ka,r total 4210 mGy",
            "Fluoro time 3720 s",
            "NCRP Report No. 168 (2010), Table 4.5",
            "EC Radiation Protection 195 (2021)",
            "Allura Xper FD20 (Cath lab 2)",
            "Coronary angiography",
            "Cardiac 15 fps <Low>",
            "2026-11-30",
            "9f3ac2e1",
            "60-69",
            "Significant event notified to the authority",
            "1.23 × threshold (+23 %)",
        ):
            assert expected in text, expected
        text = pdf_text(data, tmp_path)  # reading order: each table cell whole
        for entry in HISTORY:
            assert entry["user"] in text
            assert entry["action"].replace("_", " ") in text
        assert "KAP 612.5 Gy·cm² ≥ 500 Gy·cm²" in text
        assert "Skin follow-up arranged <script>alert(1)</script>" in text
        assert "Notified to the authority, reference 42/26; protocol frame rate lowered." in text
        for time in ("2026-12-01 10:00:00 UTC", "2026-12-02 09:30:00 UTC", "2026-12-03 15:05:09"):
            assert time in text
        for forbidden in patient.forbidden():
            assert forbidden.lower() not in text.lower()

    def test_without_dejavu_core_font_keeps_units_readable(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """No DejaVu: Helvetica prints Gy·cm² (Latin-1) and transliterates ≥."""
        monkeypatch.setattr(alert_report, "DEJAVU_DIRS", ())
        assert alert_report.find_unicode_font() is None
        text = pdf_text(render_report(notified("1.2.3"), EXTRA, "pdf"), tmp_path, "-layout")
        assert "KAP total 612.5 Gy·cm²" in text
        assert "KAP 612.5 Gy·cm² >= 500 Gy·cm²" in text
        assert "rpo.meier" in text

    def test_report_command_writes_the_pdf(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``kerma alerts report --message FILE.json`` writes the PDF."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("KERMA_DATABASE_URL", f"sqlite:///{tmp_path / 'kerma.db'}")
        saved = tmp_path / "alert.json"
        saved.write_text(
            json.dumps({"message": notified("1.2.3").to_dict(), "quantities": EXTRA}),
            encoding="utf-8",
        )
        result = CliRunner().invoke(
            build_app("alerts"), ["alerts", "report", "--message", str(saved)]
        )
        assert result.exit_code == 0, result.output
        text = pdf_text((tmp_path / "report-31.pdf").read_bytes(), tmp_path, "-layout")
        assert "Ka,r total 4210 mGy" in text


class TestHtml:
    """The HTML page."""

    def test_text_is_escaped(self) -> None:
        """Protocol names and comments are escaped, never markup."""
        page = render_report(notified("1.2.3"), EXTRA, "html").decode("utf-8")
        assert "<script>" not in page
        assert "Skin follow-up arranged &lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "Cardiac 15 fps &lt;Low&gt;" in page
        assert "612.5" in page and "Gy·cm²" in page
        assert "NCRP Report No. 168 (2010), Table 4.5" in page
        assert page.count("<tr>") >= len(HISTORY) + 1


class TestRefusal:
    """Only for an alert closed as notified to the authority."""

    @pytest.mark.parametrize(
        ("state", "outcome", "shown"),
        [
            ("open", None, "'not set'"),
            ("closed", "optimisation_action", "'Optimisation action'"),
            ("closed", "no_action", "'No action needed'"),
        ],
        ids=["open", "optimisation", "no-action"],
    )
    def test_other_outcome_is_refused(self, state: str, outcome: str | None, shown: str) -> None:
        """The error says what the outcome is and what the report needs."""
        message = AlertMessage.from_dict(alert_dict("1.2.3", state=state, outcome=outcome))
        with pytest.raises(
            ReportNotAllowedError,
            match=f"alert #1: its outcome is {shown} \\(state '{state}'\\)",
        ):
            render_report(message, [], "pdf")

    def test_unknown_format_and_bad_quantity(self) -> None:
        """A format other than pdf/html and a non-numeric quantity are named."""
        with pytest.raises(AlertMessageError, match="as 'docx'"):
            render_report(notified("1.2.3"), [], "docx")
        with pytest.raises(AlertMessageError, match="quantity \\('DLP', 'high', 'mGy·cm'\\)"):
            render_report(notified("1.2.3"), [("DLP", "high", "mGy·cm")], "html")  # type: ignore[list-item]


def test_transliterate_keeps_latin1_and_replaces_the_rest() -> None:
    """Latin-1 stays (Gy·cm², µGy), the rest becomes ASCII."""
    assert transliterate("Gy·cm² µGy ≥ 5 — Križ") == "Gy·cm² µGy >= 5 - Kriz"


def test_generated_at_is_printed() -> None:
    """The report carries its date."""
    page = render_report(
        notified("1.2.3"), [], "html", generated_at=dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)
    ).decode()
    assert "Generated 2026-12-04 08:00 UTC." in page

"""Shared set-up of the site tests of patient alerts (test_sites_alert_window.py,
test_sites_contributing.py): one patient's studies imported at named sites, and a pack of
one cumulative CT DLP rule."""

from __future__ import annotations

from pathlib import Path

import pydicom

from kerma.services.registry import Registry
from tests.db_fixtures import make_settings

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"


def cumulative_ct_dlp_pack(threshold_mgycm: float, *, pack: str, rule_id: str, source: str) -> str:
    """Return a pack of one cumulative rule: CT DLP of one patient over 365 days."""
    return f"""pack = "{pack}"
title = "Test: one patient's CT DLP summed over a year"

[[rule]]
id = "{rule_id}"
title = "Summed CT DLP of one patient in 12 months"
kind = "cumulative"
quantity = "ct_dlp_total_mgycm"
operator = ">="
threshold = {threshold_mgycm!r}
unit = "mGy.cm"
window_days = 365
basis = "site policy"
source = "Test policy ({source})"
source_ref = "SITE-POLICY"
[rule.scope]
modalities = ["CT"]
"""


def import_at_site(url: str, folder: Path, site: str, name: str, date: str, patient: str) -> None:
    """Import ``name`` of ../shared/dicom as ``patient``'s study of ``date`` (YYYYMMDD) at
    ``site``, with alerts off; exactly one object is imported."""
    ds = pydicom.dcmread(SHARED_DICOM / name)
    ds.PatientID = patient
    ds.IssuerOfPatientID = "KERMA-TEST"
    ds.StudyDate = date
    target = folder / site / name
    target.parent.mkdir(exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    settings = make_settings(url, folder, site=site, alerts_enabled=False)
    with Registry(settings=settings) as node:
        assert sum(node.import_paths([target]).imported.values()) == 1

"""Admin pages that change the configuration (issue #13): site exam rules, DRL set,
alert rules — saved in the registry, applied at once, audited, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.users import Accounts, AuditFilter
from tests.db_fixtures import BACKENDS
from tests.web.dashboard_fixtures import csrf_of, shared_settings, sign_in


@pytest.fixture(scope="module", params=BACKENDS)
def cfg_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A registry of ../shared/dicom with an admin, per backend."""
    yield from shared_settings(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def admin_client(cfg_settings: Settings) -> Iterator[TestClient]:
    """The app, logged in as the admin."""
    from kerma.web.app import create_app

    with TestClient(create_app(cfg_settings)) as client:
        sign_in(client, "admin")
        yield client


def studies(settings: Settings) -> Any:
    """Return every study as stored (a registry opened afresh: what other processes see)."""
    from kerma.api import Registry

    with Registry(settings=settings) as registry:
        return registry.studies(include_non_patient=True).set_index("study_id")


def exam_rules_of(settings: Settings) -> Any:
    """Return the stored rule name of every study's standard exam (by study id)."""
    from kerma.api import Registry
    from kerma.services.exams import study_exams_frame

    with Registry(settings=settings) as registry, registry.session(write=False) as session:
        return study_exams_frame(session).set_index("study_id")["standard_exam_rule"]


def audited(settings: Settings, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (username, target, detail) of the audit entries of ``action``, oldest first."""
    accounts = Accounts(settings)
    try:
        page = accounts.audit_page(AuditFilter(action=action), per_page=500)
        return [(e.username, e.target, e.detail) for e in reversed(page.entries)]
    finally:
        accounts.close()


def post(client: TestClient, path: str, page: str, data: dict[str, str]) -> Any:
    """POST a form of ``page`` with the session's CSRF token."""
    token = csrf_of(client.get(page).text)
    return client.post(path, data={"csrf_token": token, **data})


def test_site_exam_rule_add_edit_delete(admin_client: TestClient, cfg_settings: Settings) -> None:
    """A saved rule maps the stored studies at once; editing and deleting map them again."""
    before = studies(cfg_settings)
    expected = before.index[
        before["study_description"].fillna("").str.contains("chest", case=False)
        & before["modality"].eq("CT")
    ]
    assert len(expected) > 0
    # without the CSRF token: refused, nothing saved
    refused = admin_client.post(
        "/admin/exam-rules", data={"name": "x", "exam": "X", "pattern": "chest"}
    )
    assert refused.status_code == 403
    r = post(
        admin_client,
        "/admin/exam-rules",
        "/admin/exam-rules",
        {
            "name": "site-chest",
            "exam": "CT Chest site",
            "pattern": "chest",
            "field": "study_description",
            "modality": "CT",
            "level": "study",
        },
    )
    assert r.status_code == 200, r.text[:2000]
    assert "Site rule site-chest added." in r.text
    assert 'id="remap-summary"' in r.text
    after = studies(cfg_settings)
    mapped = after.index[after["standard_exam"].eq("CT Chest site")]
    assert sorted(mapped) == sorted(expected)
    assert set(exam_rules_of(cfg_settings).loc[mapped]) == {"site-chest"}
    changed = int((before.loc[expected, "standard_exam"] != "CT Chest site").sum())
    assert f"of them <strong>{changed}</strong> changed exam" in r.text
    # edit: another exam name
    page = admin_client.get("/admin/exam-rules").text
    assert 'id="site-rules"' in page and 'value="site-chest"' in page
    from kerma.api import Registry
    from kerma.services.web_config import site_exam_rule_rows

    with Registry(settings=cfg_settings) as registry:
        with registry.session(write=False) as session:
            (row,) = site_exam_rule_rows(session)
        assert registry.exam_rules.rules[0].name == "site-chest"  # layered before the file
    r = post(
        admin_client,
        "/admin/exam-rules",
        "/admin/exam-rules",
        {
            "rule_id": str(row["id"]),
            "name": "site-chest",
            "exam": "CT Chest edited",
            "pattern": "chest",
            "field": "study_description",
            "modality": "CT",
            "level": "study",
        },
    )
    assert r.status_code == 200, r.text[:2000]
    edited = studies(cfg_settings)
    assert sorted(edited.index[edited["standard_exam"].eq("CT Chest edited")]) == sorted(expected)
    assert edited["standard_exam"].eq("CT Chest site").sum() == 0
    # delete: back to the mapping of the file/packaged rules
    r = post(admin_client, f"/admin/exam-rules/{row['id']}/delete", "/admin/exam-rules", {})
    assert r.status_code == 200, r.text[:2000]
    assert "Site rule site-chest deleted." in r.text
    restored = studies(cfg_settings)
    assert (
        restored["standard_exam"].fillna("").tolist() == before["standard_exam"].fillna("").tolist()
    )
    entries = [(u, t, d["change"]) for u, t, d in audited(cfg_settings, "config.exam_rule")]
    assert entries == [
        ("admin", "site-chest", "added"),
        ("admin", "site-chest", "edited"),
        ("admin", "site-chest", "deleted"),
    ]


def test_site_exam_rule_bad_input(admin_client: TestClient, cfg_settings: Settings) -> None:
    """A bad pattern, an empty exam or an unknown field: 400 with the reason, nothing saved."""
    cases = [
        ({"name": "bad", "exam": "X", "pattern": "(["}, "not a valid regular expression"),
        ({"name": "bad", "exam": "", "pattern": "chest"}, "needs a standard exam name"),
        ({"name": "bad", "exam": "X", "pattern": "a", "field": "nope"}, "Unknown field"),
        ({"name": "bad", "exam": "X", "pattern": "a", "position": "first"}, "not a whole"),
    ]
    for data, message in cases:
        r = post(admin_client, "/admin/exam-rules", "/admin/exam-rules", data)
        assert r.status_code == 400, data
        assert message in r.text, data
        assert "Traceback" not in r.text
    r = post(admin_client, "/admin/exam-rules/999999/delete", "/admin/exam-rules", {})
    assert r.status_code == 404
    assert "There is no site rule #999999." in r.text
    assert "No site rules saved here" in admin_client.get("/admin/exam-rules").text


def test_drl_set_choice(admin_client: TestClient, cfg_settings: Settings) -> None:
    """The chosen DRL set is used by the pages and any registry opened afterwards."""
    from kerma.api import Registry

    r = post(admin_client, "/admin/drl-set", "/admin", {"drl_set": "UK, EU"})
    assert r.status_code == 200, r.text[:2000]
    assert 'id="drl-set">UK,EU<' in r.text
    with Registry(settings=cfg_settings) as registry:
        assert registry.settings.drl_set == "UK,EU"
        assert registry.alert_context.default_drl_set == "UK,EU"
    bad = post(admin_client, "/admin/drl-set", "/admin", {"drl_set": "UK,XX"})
    assert bad.status_code == 400
    assert "Unknown DRL set(s) XX" in bad.text
    assert 'id="drl-set">UK,EU<' in bad.text  # unchanged
    r = post(admin_client, "/admin/drl-set", "/admin", {"drl_set": ""})
    assert f'id="drl-set">{cfg_settings.drl_set}<' in r.text
    with Registry(settings=cfg_settings) as registry:
        assert registry.settings.drl_set == cfg_settings.drl_set
    targets = [(u, d["drl_set"]) for u, _, d in audited(cfg_settings, "config.drl_set")]
    assert targets == [("admin", "UK,EU"), ("admin", "")]


def test_alert_rule_disable_and_threshold(admin_client: TestClient, cfg_settings: Settings) -> None:
    """An alert rule disabled or given another threshold is what the registry evaluates."""
    from kerma.api import Registry

    with Registry(settings=cfg_settings) as registry:
        rules = registry.alert_context.rules
    fixed = next(r for r in rules.rules if r.kind == "threshold")
    other = next(r for r in rules.rules if r.rule_id != fixed.rule_id)
    r = post(
        admin_client,
        f"/admin/alert-rules/{fixed.rule_id}",
        "/admin",
        {"enabled": "on", "threshold": "1234.5"},
    )
    assert r.status_code == 200, r.text[:2000]
    assert f"Alert rule {fixed.rule_id} enabled (threshold 1234.5)." in r.text
    r = post(admin_client, f"/admin/alert-rules/{other.rule_id}", "/admin", {})
    assert f"Alert rule {other.rule_id} disabled." in r.text
    with Registry(settings=cfg_settings) as registry:
        in_force = registry.alert_context.rules
        assert in_force.get(fixed.rule_id).threshold == 1234.5  # type: ignore[union-attr]
        assert in_force.get(other.rule_id) is None
        assert len(in_force) == len(rules) - 1
    bad = post(admin_client, f"/admin/alert-rules/{fixed.rule_id}", "/admin", {"threshold": "abc"})
    assert bad.status_code == 400 and "is not a number" in bad.text
    nope = post(admin_client, "/admin/alert-rules/no-such-rule", "/admin", {"enabled": "on"})
    assert nope.status_code == 400 and "There is no alert rule &#39;no-such-rule&#39;." in nope.text
    # back to the packs
    for rule in (fixed, other):
        post(admin_client, f"/admin/alert-rules/{rule.rule_id}", "/admin", {"enabled": "on"})
    with Registry(settings=cfg_settings) as registry:
        assert registry.alert_context.rules == rules
    targets = [t for _, t, _ in audited(cfg_settings, "config.alert_rule")]
    assert targets == [fixed.rule_id, other.rule_id, fixed.rule_id, other.rule_id]

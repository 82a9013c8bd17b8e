"""``kerma users`` and ``kerma tokens`` (issue #13), run with Typer's CliRunner.

Each command opens the registry of ``KERMA_DATABASE_URL`` (a fresh SQLite file) and
calls :class:`kerma.services.users.Accounts`; the results are read back through it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerma.cli.main import build_app
from kerma.services.users import Accounts, AuditFilter
from tests.db_fixtures import TEST_PSEUDONYM_KEY, make_settings
from tests.web.conftest import PASSWORD, SETUP


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment of the commands: a fresh SQLite registry in ``tmp_path``."""
    return {
        "KERMA_DATABASE_URL": f"sqlite:///{tmp_path / 'kerma.db'}",
        "KERMA_ARCHIVE_DIR": str(tmp_path / "archive"),
        "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
    }


def run(env: dict[str, str], *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    """Run ``kerma ARGS`` and return the result."""
    return CliRunner().invoke(build_app(args[0]), list(args), input=stdin, env=env)


def accounts_of(env: dict[str, str], tmp_path: Path) -> Accounts:
    """Open the accounts of the commands' registry."""
    return Accounts(make_settings(env["KERMA_DATABASE_URL"], tmp_path))


class TestUsersCommand:
    """kerma users add|passwd|role|disable|enable|list."""

    def test_bootstrap_first_admin_and_manage_users(self, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        """The first admin (password typed twice), then a physicist; role, disable, list."""
        done = run(
            env, "users", "add", "admin", "--role", "admin", stdin=f"{PASSWORD}\n{PASSWORD}\n"
        )
        assert done.exit_code == 0, done.output
        assert "user admin added (admin)" in done.output
        done = run(
            env,
            "users",
            "add",
            "anna",
            "--role",
            "physicist",
            "--password-stdin",
            stdin=f"{PASSWORD}\n",
        )
        assert done.exit_code == 0, done.output
        assert run(env, "users", "role", "anna", "viewer").exit_code == 0
        done = run(
            env, "users", "passwd", "anna", "--password-stdin", stdin="a new long password\n"
        )
        assert done.exit_code == 0, done.output
        assert run(env, "users", "disable", "anna").exit_code == 0
        listing = run(env, "users", "list")
        assert listing.exit_code == 0
        assert "anna" in listing.output and "disabled" in listing.output
        accounts = accounts_of(env, tmp_path)
        try:
            users = {u.username: (u.role.value, u.is_disabled) for u in accounts.list_users()}
            assert users == {"admin": ("admin", False), "anna": ("viewer", True)}
            page = accounts.audit_page(AuditFilter(), per_page=100)
            actions = [(e.action, e.target, e.principal_kind) for e in reversed(page.entries)]
            assert actions == [
                ("user.add", "admin", "cli"),
                ("user.add", "anna", "cli"),
                ("user.role", "anna", "cli"),
                ("user.password", "anna", "cli"),
                ("user.disable", "anna", "cli"),
            ]
            assert all(e.username.endswith(" (cli)") for e in page.entries)
        finally:
            accounts.close()

    def test_short_password_is_refused(self, env) -> None:  # type: ignore[no-untyped-def]
        """A password under 12 characters: exit 2 semantics (AccountError), no user."""
        done = run(env, "users", "add", "bob", "--password-stdin", stdin="short\n")
        assert done.exit_code != 0
        assert "at least 12 characters" in str(done.exception)
        assert "No users yet" in run(env, "users", "list").output

    def test_unknown_role_is_refused(self, env) -> None:  # type: ignore[no-untyped-def]
        """An unknown role is named in the error before any password is asked."""
        done = run(env, "users", "add", "bob", "--role", "boss", "--password-stdin", stdin="")
        assert "'boss' is not a role" in str(done.exception)

    def test_list_shows_each_users_sites(self, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        """``kerma users list``, ``Accounts.list_users`` and /admin/users name the sites a
        user is restricted to, "all" for the others (regression: no command or page showed
        ``kerma sites assign``)."""
        from fastapi.testclient import TestClient

        from kerma.services.registry import Registry
        from kerma.web.app import create_app
        from tests.web.dashboard_fixtures import SHARED_DICOM, sign_in

        if not SHARED_DICOM.is_dir():
            pytest.skip("../shared/dicom is not beside the repository")
        url = env["KERMA_DATABASE_URL"]
        for site, name in (("North", "DX-RDSR-Canon_CXDI.dcm"), ("South", "RF-RDSR-GE.dcm")):
            with Registry(settings=make_settings(url, tmp_path, site=site)) as node:
                node.import_paths([SHARED_DICOM / name])
        for user, role in (("admin", "admin"), ("nina", "physicist"), ("sam", "viewer")):
            added = run(env, "users", "add", user, "--role", role, "--password-stdin",
                        stdin=f"{PASSWORD}\n")  # fmt: skip
            assert added.exit_code == 0, added.output
        assert run(env, "sites", "assign", "nina", "North").exit_code == 0
        assert run(env, "sites", "assign", "sam", "South", "North").exit_code == 0
        accounts = accounts_of(env, tmp_path)
        try:
            sites = {u.username: u.site_names for u in accounts.list_users()}
        finally:
            accounts.close()
        assert sites == {"admin": (), "nina": ("North",), "sam": ("North", "South")}
        listing = run(env, "users", "list")
        assert listing.exit_code == 0, listing.output
        rows = {line.split()[1]: line for line in listing.output.splitlines() if "│" in line}
        assert "all" in rows["admin"].split()
        assert "North" in rows["nina"] and "South" not in rows["nina"]
        assert "North, South" in rows["sam"]
        with TestClient(create_app(make_settings(url, tmp_path))) as client:
            sign_in(client, "admin")
            page = client.get("/admin/users").text
        cells = [c.strip() for c in re.findall(r"<td>([^<]*)</td>", page)]
        assert cells.count("North") == 1 and cells.count("North, South") == 1, cells
        assert cells.count("all") == 1, cells


class TestTokensCommand:
    """kerma tokens add|list|revoke."""

    def test_token_is_printed_once_and_revocable(self, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        """add prints the token (stdout) once; list shows no token; revoke marks it."""
        done = run(env, "tokens", "add", "ct-room-3", "--role", "physicist")
        assert done.exit_code == 0, done.output
        token = done.stdout.strip().splitlines()[-1]
        assert token.startswith("kerma_")
        listing = run(env, "tokens", "list")
        assert "ct-room-3" in listing.output and token not in listing.output
        accounts = accounts_of(env, tmp_path)
        try:
            assert accounts.resolve_token(token) is not None
            assert run(env, "tokens", "revoke", "ct-room-3").exit_code == 0
            assert accounts.resolve_token(token) is None
        finally:
            accounts.close()
        assert "revoked" in run(env, "tokens", "list").output


class TestServeHint:
    """kerma serve with no users says how to make the first admin."""

    def test_hint_without_users_only(self, env, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
        """The hint names `kerma users add admin --role admin`; silent once a user exists."""
        from kerma.cli.serve import _hint_first_admin

        settings = make_settings(env["KERMA_DATABASE_URL"], tmp_path)
        _hint_first_admin(settings)
        assert "kerma users add admin --role admin" in capsys.readouterr().err
        accounts = Accounts(settings)
        try:
            accounts.add_user("admin", PASSWORD, "admin", SETUP)
        finally:
            accounts.close()
        _hint_first_admin(settings)
        assert capsys.readouterr().err == ""

"""``kerma users`` and ``kerma tokens`` (issue #13), run with Typer's CliRunner.

Each command opens the registry of ``KERMA_DATABASE_URL`` (a fresh SQLite file) and
calls :class:`kerma.services.users.Accounts`; the results are read back through it.
"""

from __future__ import annotations

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

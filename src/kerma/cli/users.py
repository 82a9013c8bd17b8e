"""``kerma users`` and ``kerma tokens``: web users and the API tokens of machine clients.

Thin wrappers around :class:`kerma.services.users.Accounts`. Every change is written to
the audit log as done by ``<login name> (cli)``. The first admin is made with
``kerma users add admin --role admin``.

May import ``kerma.services``, ``kerma.config``, ``kerma.errors`` and ``kerma.cli``.
"""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.config import get_settings
from kerma.errors import AccountError, NotFoundError

if TYPE_CHECKING:
    from kerma.services.users import Accounts, Actor

users_app = typer.Typer(
    name="users",
    help="Web users: add, set a password, change a role, disable, list.",
    no_args_is_help=True,
)
tokens_app = typer.Typer(
    name="tokens",
    help="API tokens of machine clients (STOW-RS senders, JSON API scripts).",
    no_args_is_help=True,
)

UserArg = Annotated[str, typer.Argument(help="Username.")]
RoleHelp = "viewer (aggregates), physicist (study detail, review, exports) or admin."


def _accounts() -> Accounts:
    """Open the accounts of the configured registry."""
    from kerma.services.users import Accounts

    return Accounts(get_settings())


def _actor() -> Actor:
    """Return the audit actor of a command: the operating-system login name."""
    from kerma.services.users import Actor

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(name=f"{name} (cli)", kind="cli")


def read_password(password_stdin: bool) -> str:
    """Return a new password: one line of standard input, or prompted twice (hidden).

    Raises
    ------
    AccountError
        When standard input is empty (``--password-stdin``).
    """
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise AccountError("No password on standard input (--password-stdin).")
        return line
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


@users_app.command("add")
def add_user(
    username: UserArg,
    role: Annotated[str, typer.Option("--role", help=RoleHelp)] = "viewer",
    password_stdin: PasswordStdin = False,
) -> None:
    """Add a web user; the password is asked twice (at least 12 characters).

    The first admin: `kerma users add admin --role admin`.
    """
    from kerma.services.users import check_name, parse_role

    check_name(username)
    parse_role(role)
    password = read_password(password_stdin)
    accounts = _accounts()
    try:
        info = accounts.add_user(username, password, role, _actor())
    finally:
        accounts.close()
    make_console().print(f"user {escape(info.username)} added ({info.role.value})")


@users_app.command("passwd")
def passwd(username: UserArg, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (lifts a lock-out; their browser sessions end)."""
    password = read_password(password_stdin)
    accounts = _accounts()
    try:
        accounts.set_password(username, password, _actor())
    finally:
        accounts.close()
    make_console().print(f"password of {escape(username)} set")


@users_app.command("role")
def role(
    username: UserArg, new_role: Annotated[str, typer.Argument(metavar="ROLE", help=RoleHelp)]
) -> None:
    """Change a user's role (their browser sessions end)."""
    accounts = _accounts()
    try:
        info = accounts.set_role(username, new_role, _actor())
    finally:
        accounts.close()
    make_console().print(f"{escape(info.username)} is now {info.role.value}")


@users_app.command("disable")
def disable(username: UserArg) -> None:
    """Disable a user: no login; their browser sessions end."""
    accounts = _accounts()
    try:
        accounts.set_disabled(username, True, _actor())
    finally:
        accounts.close()
    make_console().print(f"{escape(username)} disabled")


@users_app.command("enable")
def enable(username: UserArg) -> None:
    """Enable a disabled user again (and lift a lock-out)."""
    accounts = _accounts()
    try:
        accounts.set_disabled(username, False, _actor())
    finally:
        accounts.close()
    make_console().print(f"{escape(username)} enabled")


def _when(value: object) -> str:
    """Format a time (UTC, minutes) or ``-``."""
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"  # type: ignore[attr-defined]


@users_app.command("list")
def list_users() -> None:
    """List the users: role, sites, status, last login."""
    accounts = _accounts()
    try:
        users = accounts.list_users()
    finally:
        accounts.close()
    console = make_console()
    if not users:
        console.print("No users yet: `kerma users add admin --role admin` makes the first admin.")
        return
    table = Table(title=f"Users ({len(users)})", header_style="bold")
    for heading in (
        "user", "role", "sites", "status", "failed logins", "last login (UTC)", "source"
    ):  # fmt: skip
        table.add_column(heading)
    for u in users:
        status = (
            "disabled"
            if u.is_disabled
            else (f"locked until {_when(u.locked_until)}" if u.locked_until else "active")
        )
        table.add_row(
            escape(u.username),
            u.role.value,
            escape(", ".join(u.site_names)) if u.site_names else "all",
            status,
            str(u.failed_logins),
            _when(u.last_login_at),
            "directory" if u.is_ldap else "local",
        )
    console.print(table)


@tokens_app.command("add")
def add_token(
    name: Annotated[str, typer.Argument(help="Name of the client, e.g. ct-room-3-stow.")],
    role: Annotated[str, typer.Option("--role", help=RoleHelp)] = "physicist",
    site: Annotated[
        list[str] | None,
        typer.Option(
            "--site",
            help="Restrict the token to this site's studies (repeat for several; see "
            "kerma sites list); default: every site.",
        ),
    ] = None,
) -> None:
    """Create an API token and print it once (only its SHA-256 is kept).

    Clients send it as `Authorization: Bearer <token>`; STOW-RS needs the physicist role.
    A token made with --site sees those sites' studies only, as a user assigned with
    `kerma sites assign` (another site's study answers 403).
    """
    accounts = _accounts()
    try:
        info, token = accounts.add_token(name, role, _actor(), sites=site or ())
    except NotFoundError as exc:
        raise typer.BadParameter(escape(str(exc)), param_hint="'--site'") from exc
    finally:
        accounts.close()
    err = make_console(stderr=True)
    scope = f"sites {', '.join(info.site_names)}" if info.site_names else "every site"
    err.print(
        f"token {escape(info.name)} ({info.role.value}, {escape(scope)}) created; "
        "it is shown only this once:"
    )
    print(token)


@tokens_app.command("list")
def list_tokens() -> None:
    """List the API tokens (never the tokens themselves)."""
    accounts = _accounts()
    try:
        tokens = accounts.list_tokens()
    finally:
        accounts.close()
    console = make_console()
    if not tokens:
        console.print("No API tokens: `kerma tokens add NAME --role physicist` makes one.")
        return
    table = Table(title=f"API tokens ({len(tokens)})", header_style="bold")
    for heading in ("name", "role", "sites", "created (UTC)", "by", "last used (UTC)", "status"):
        table.add_column(heading)
    for t in tokens:
        table.add_row(
            escape(t.name),
            t.role.value,
            escape(", ".join(t.site_names)) if t.site_names else "all",
            _when(t.created_at),
            escape(t.created_by),
            _when(t.last_used_at),
            f"revoked {_when(t.revoked_at)}" if t.revoked_at else "active",
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke_token(name: Annotated[str, typer.Argument(help="Token name.")]) -> None:
    """Revoke an API token: requests with it are refused from now on."""
    accounts = _accounts()
    try:
        accounts.revoke_token(name, _actor())
    finally:
        accounts.close()
    make_console().print(f"token {escape(name)} revoked")


def register(app: typer.Typer) -> None:
    """Add ``users`` and ``tokens`` to the ``kerma`` command."""
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")

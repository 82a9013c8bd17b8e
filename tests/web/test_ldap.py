"""Login through LDAP (issue #13), against a real OpenLDAP ``slapd`` on loopback.

The test starts ``slapd`` (Debian's ``slapd`` package, installed by scripts/test) with
a temporary ``slapd.conf`` and an MDB database in ``tmp_path``, loaded with
``slapadd``: three people under ``ou=people`` and two ``groupOfNames`` under
``ou=groups``. Kerma binds as the user (DN from a template, or found by a search) and
reads the groups whose ``member`` is the user.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.directory import directory_login
from kerma.services.users import Accounts, AuditFilter
from tests.db_fixtures import make_settings
from tests.net.conftest import free_port, wait_until
from tests.web.conftest import form_csrf

SUFFIX = "dc=kerma,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "ldap-root-secret"
PHYSICISTS = f"cn=kerma-physicists,ou=groups,{SUFFIX}"
ADMINS = f"cn=kerma-admins,ou=groups,{SUFFIX}"

#: People of the test directory: uid -> (password, groups).
PEOPLE = {
    "marie": ("radium-1898-polonium", [PHYSICISTS]),
    "rolf": ("sievert-unit-1979", [PHYSICISTS, ADMINS]),
    "nobody": ("in-no-group-at-all", []),
}

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {folder}/slapd.pid
argsfile {folder}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {folder}/data
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


def directory_ldif() -> str:
    """Return the LDIF of the test directory."""
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: kerma\no: Kerma",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for uid, (password, _groups) in PEOPLE.items():
        entries.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid.title()}\nsn: {uid.title()}\nuserPassword: {password}"
        )
    for group in (PHYSICISTS, ADMINS):
        members = [f"uid={u},ou=people,{SUFFIX}" for u, (_p, g) in PEOPLE.items() if group in g]
        cn = group.split(",")[0].split("=")[1]
        lines = "\n".join(f"member: {m}" for m in members)
        entries.append(f"dn: {group}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}")
    return "\n\n".join(entries) + "\n"


@dataclass
class Slapd:
    """A running slapd on 127.0.0.1:port."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"ldap://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """Start slapd with the test directory (skip when slapd is not installed)."""
    exe, slapadd = shutil.which("slapd") or "/usr/sbin/slapd", "/usr/sbin/slapadd"
    if not Path(exe).exists() or not Path(slapadd).exists():
        pytest.skip("slapd is not installed (apt-get install slapd ldap-utils; scripts/test does)")
    folder = tmp_path_factory.mktemp("slapd")
    (folder / "data").mkdir()
    conf = folder / "slapd.conf"
    conf.write_text(
        SLAPD_CONF.format(folder=folder, suffix=SUFFIX, root_dn=ROOT_DN, root_pw=ROOT_PW)
    )
    (folder / "directory.ldif").write_text(directory_ldif())
    subprocess.run(
        [slapadd, "-f", str(conf), "-l", str(folder / "directory.ldif")],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (folder / "slapd.log").open("wb")
    process = subprocess.Popen(
        [exe, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Slapd(process, port, folder)

    def up() -> bool:
        import socket

        if process.poll() is not None:
            return True
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    assert wait_until(up, timeout=60) and process.poll() is None, (folder / "slapd.log").read_text()
    yield server
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def ldap_settings(slapd: Slapd, tmp_path: Path, **overrides: object) -> Settings:
    """Settings with the test directory: DN template, group search, the two groups mapped."""
    values: dict[str, object] = {
        "ldap_url": slapd.url,
        "ldap_user_dn_template": f"uid={{username}},ou=people,{SUFFIX}",
        "ldap_group_search_base": f"ou=groups,{SUFFIX}",
        "ldap_group_roles": {PHYSICISTS: "physicist", ADMINS: "admin"},
        "ldap_timeout_s": 10.0,
    }
    values.update(overrides)
    return make_settings(f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path, **values)


class TestDirectoryLogin:
    """kerma.services.directory against slapd."""

    def test_role_is_the_highest_mapped_group(self, slapd: Slapd, tmp_path: Path) -> None:
        """marie (physicists) -> physicist; rolf (physicists, admins) -> admin."""
        settings = ldap_settings(slapd, tmp_path)
        assert directory_login(settings, "marie", PEOPLE["marie"][0]) == "physicist"
        assert directory_login(settings, "rolf", PEOPLE["rolf"][0]) == "admin"

    def test_refusals(self, slapd: Slapd, tmp_path: Path) -> None:
        """Wrong password, empty password, unknown user, no mapped group: no role."""
        settings = ldap_settings(slapd, tmp_path)
        assert directory_login(settings, "marie", "wrong password") is None
        assert directory_login(settings, "marie", "") is None  # unauthenticated bind
        assert directory_login(settings, "ghost", "whatever it is") is None
        assert directory_login(settings, "nobody", PEOPLE["nobody"][0]) is None

    def test_search_mode_with_service_account(self, slapd: Slapd, tmp_path: Path) -> None:
        """DN found by a search as the service account; an injection attempt finds nobody."""
        settings = ldap_settings(
            slapd,
            tmp_path,
            ldap_user_dn_template=None,
            ldap_search_base=f"ou=people,{SUFFIX}",
            ldap_search_filter="(uid={username})",
            ldap_bind_dn=ROOT_DN,
            ldap_bind_password=ROOT_PW,
        )
        assert directory_login(settings, "marie", PEOPLE["marie"][0]) == "physicist"
        assert directory_login(settings, "*", PEOPLE["marie"][0]) is None
        assert directory_login(settings, "marie)(uid=*", PEOPLE["marie"][0]) is None

    def test_unreachable_directory_refuses(self, tmp_path: Path) -> None:
        """No server on the port: no login (logged), no exception."""
        settings = make_settings(
            f"sqlite:///{tmp_path / 'kerma.db'}",
            tmp_path,
            ldap_url=f"ldap://127.0.0.1:{free_port()}",
            ldap_user_dn_template=f"uid={{username}},ou=people,{SUFFIX}",
            ldap_group_roles={PHYSICISTS: "physicist"},
            ldap_timeout_s=2.0,
        )
        assert directory_login(settings, "marie", PEOPLE["marie"][0]) is None


class TestWebLoginThroughLDAP:
    """The login page with LDAP set: a directory user gets a session and a role."""

    def test_directory_user_logs_in_with_role_and_is_audited(
        self, slapd: Slapd, tmp_path: Path
    ) -> None:
        """marie logs in (physicist, user made as directory user, no password hash)."""
        from kerma.web.app import create_app

        settings = ldap_settings(slapd, tmp_path)
        with TestClient(create_app(settings)) as client:
            page = client.get("/login")
            r = client.post(
                "/login",
                data={
                    "username": "marie",
                    "password": "not her password",
                    "csrf_token": form_csrf(page.text),
                },
            )
            assert r.status_code == 401
            page = client.get("/login")
            r = client.post(
                "/login",
                data={
                    "username": "marie",
                    "password": PEOPLE["marie"][0],
                    "csrf_token": form_csrf(page.text),
                    "next": "/openapi.json",
                },
                follow_redirects=False,
            )
            assert r.status_code == 303, r.text
            assert "kerma_session" in client.cookies
        accounts = Accounts(settings)
        try:
            (marie,) = accounts.list_users()
            assert (marie.username, marie.role.value, marie.is_ldap) == ("marie", "physicist", True)
            with accounts.session(write=False) as s:
                from sqlalchemy import text

                stored = s.execute(text("SELECT password_hash FROM user_account")).scalar()
            assert stored is None
            entries = accounts.audit_page(AuditFilter(), per_page=50).entries
            assert [(e.username, e.action) for e in reversed(entries)] == [
                ("marie", "login.failed"),
                ("directory", "user.add"),
                ("marie", "login.ok"),
            ]
        finally:
            accounts.close()

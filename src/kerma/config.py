"""Settings, read from the environment (``KERMA_*``) and an optional ``.env`` file.

One :class:`Settings` object is built at the edge (CLI, SCP, web app) and passed down;
library code never reads the environment itself.

This module must not import anything else from Kerma.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Default patterns (case-insensitive regular expressions, searched in Patient ID,
#: Patient's Name and Study Description) that mark a study as non-patient (QA/phantom).
DEFAULT_NON_PATIENT_PATTERNS: tuple[str, ...] = (
    r"phantom",
    r"\bqa\b",
    r"\bqc\b",
    r"quality ?control",
    r"constancy",
    r"\btest ?patient\b",
    r"\bcalibration\b",
    r"physics",  # 'Z_Physics Test', 'Specials^PhysicsTesting' (OpenREM test files)
)

#: Free-text attributes a site treats as identifying by default
#: (KERMA_IDENTIFYING_ATTRIBUTES): names of the persons involved and comments, which
#: PS3.15 Annex E Table E.1-1 (Basic Application Level Confidentiality Profile)
#: removes. Kerma stores none of them today; the list guards what a later extractor
#: reads and is removed from a de-identified archive (archive_mode 'deidentified').
DEFAULT_IDENTIFYING_ATTRIBUTES: tuple[str, ...] = (
    "OperatorsName",
    "PerformingPhysicianName",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "PatientComments",
    "AdditionalPatientHistory",
    "StudyComments",
    "RequestedProcedureComments",
)


#: Default largest object accepted, in bytes (256 MiB): a C-STORE data set, a STOW-RS or
#: WADO-RS part, a file given to ``kerma import``/``inspect``. Dose reports are kilobytes
#: to a few megabytes; a CT image with its pixel data a few hundred kilobytes; a large
#: enhanced multi-frame image or whole-slide tile set may exceed this (raise it then).
DEFAULT_MAX_OBJECT_BYTES = 256 * 1024 * 1024

#: Default largest inflated data set of a Deflated Explicit VR Little Endian object
#: (PS3.5 A.5), in bytes (512 MiB): a deflate "bomb" of 1 MB can inflate to gigabytes.
DEFAULT_MAX_INFLATED_BYTES = 512 * 1024 * 1024

#: Default largest STOW-RS request body, in bytes (1 GiB, several objects).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024 * 1024


class Settings(BaseSettings):
    """Kerma's configuration.

    Every field is read from the environment variable ``KERMA_<FIELD>`` (for example
    ``KERMA_DATABASE_URL``), or from a ``.env`` file in the working directory.
    """

    model_config = SettingsConfigDict(env_prefix="KERMA_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///kerma.db",
        description="SQLAlchemy URL of the registry; SQLite file in the working directory "
        "by default, e.g. postgresql+psycopg://user@host/db for PostgreSQL.",
    )
    archive_dir: Path = Field(
        default=Path("kerma-archive"),
        description="Folder of the content-addressed archive of every received object.",
    )
    pseudonym_key: str | None = Field(
        default=None,
        description="Secret key of the HMAC-SHA-256 patient pseudonym (at least 32 "
        "bytes); takes precedence over key_file. Unset by default.",
    )
    key_file: Path = Field(
        default=Path("kerma-key/kerma.key"),
        description="File of the pseudonym key (one key per line, mode 0600, folder "
        "0700), kept apart from the archive: it must not be inside archive_dir. Created "
        "with a random key on first use of an empty registry; never re-created for a "
        "registry that holds pseudonyms. Back it up apart from the archive.",
    )
    archive_mode: Literal["original", "deidentified", "encrypted"] = Field(
        default="encrypted",
        description="How the archive keeps received objects: 'encrypted' (default; the "
        "original bytes, AES-256-GCM with a key derived from the pseudonym key, "
        "recoverable only with the key), 'deidentified' (patient identity attributes "
        "removed, PS3.15 Annex E), or 'original' (the bytes as received, in clear).",
    )
    identifying_attributes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IDENTIFYING_ATTRIBUTES),
        description="DICOM attribute keywords whose free text a site treats as "
        "identifying: never stored in the registry, and removed from a de-identified "
        "archive. Stored texts that may be listed: AccessionNumber, StudyDescription, "
        "SeriesDescription, RequestedProcedureDescription, ProtocolName, StationName, "
        "InstitutionName, and Comment (the SR comment of an irradiation event, DCM "
        "121106).",
    )
    accession_in_clear: bool = Field(
        default=False,
        description="Keep (0008,0050) Accession Numbers in clear in study.accession_number "
        "as well as their keyed hash (study.accession_pseudonym). Off by default: only "
        "the keyed hash is stored; 'kerma patient --accession A' finds a study either way.",
    )
    non_patient_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NON_PATIENT_PATTERNS),
        description="Regular expressions (case-insensitive) on Patient ID, Patient's Name "
        "and Study Description that flag a study as non-patient (QA, phantom).",
    )
    strict: bool = Field(
        default=False,
        description="Turn reading warnings into rejections (like pydicom's "
        "reading_validation_mode RAISE).",
    )
    conflict_rule: Literal["manual", "prefer-device-association"] = Field(
        default="manual",
        description="Who decides when a SOP Instance UID arrives again with different "
        "content (both versions are kept, the study is marked in conflict): 'manual' waits "
        "for 'kerma conflicts resolve'; 'prefer-device-association' keeps the one version "
        "received by C-STORE from the study's device (its Device Observer UID, or an AE "
        "title equal to its station name) over file imports, STOW-RS and C-GET, and logs "
        "the decision (docs/registry.md, Conflicts).",
    )
    site: str | None = Field(
        default=None,
        description="Site (institution) this node receives for (issue #15): every "
        "study and device it stores belongs to this site unless site_map names the "
        "object's institution. Unset: the site is the object's (0008,0080) Institution "
        "Name (none without one). 'kerma import --site' sets it for one import.",
    )
    site_map: dict[str, str] = Field(
        default_factory=dict,
        description="(0008,0080) Institution Name -> site name, as JSON, e.g. "
        '{"St Mary Hosp": "St Mary", "ST MARYS HOSPITAL": "St Mary"}: one site for the '
        "spellings of an institution; names compared without case and extra spaces. A "
        "key 'Name|Address' matches only objects whose (0008,0081) Institution Address "
        "is Address (two institutions of one name told apart); it is tried before the "
        "key of the name alone.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a read replica (a PostgreSQL hot standby) that "
        "the dashboard and analytics read from; writes always go to database_url. "
        "Unset: everything reads the primary.",
    )
    plausibility: Path | None = Field(
        default=None,
        description="A site's plausibility table (CSV, columns of "
        "kerma/reference/plausibility.csv); its rows override the shipped ones "
        "(docs/hardening.md).",
    )
    # DICOM network (kerma.net)
    scp_aet: str = "KERMA"
    scp_port: int = 11112
    scp_host: str = "127.0.0.1"
    scp_allowed_aets: list[str] = Field(
        default_factory=list, description="Calling AE titles allowed; empty = any."
    )
    scp_keep_non_dose: bool = Field(
        default=False, description="Keep objects that hold no dose information in the archive."
    )
    scp_tls_cert: Path | None = Field(
        default=None, description="PEM certificate of the SCP; with scp_tls_key enables TLS."
    )
    scp_tls_key: Path | None = Field(default=None, description="PEM private key of the SCP.")
    scp_tls_ca: Path | None = Field(
        default=None, description="PEM CA bundle; when set, peers must present a certificate."
    )
    scp_tls_aet_certificates: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Calling AE title -> the client certificates it may use, each as a "
        "SHA-256 fingerprint (hex, colons allowed, optional 'sha256:' prefix) or a subject "
        "common name as 'CN=<name>'. With TLS on and this set, an association whose "
        "calling AE title is not bound to the certificate the peer presented is rejected "
        "(calling AE title not recognised): an AE title alone is spoofable. Needs "
        "scp_tls_ca (client certificates required).",
    )
    # intake limits (kerma.net, kerma.dicom): docs/network.md "Limits"
    max_object_bytes: int = Field(
        default=DEFAULT_MAX_OBJECT_BYTES,
        gt=0,
        description="Largest object accepted, in bytes (C-STORE data set, STOW-RS and "
        "WADO-RS part, file of kerma import/inspect); 256 MiB by default.",
    )
    max_inflated_bytes: int = Field(
        default=DEFAULT_MAX_INFLATED_BYTES,
        gt=0,
        description="Largest inflated data set of a deflated object (Deflated Explicit VR "
        "Little Endian), in bytes; it is inflated in bounded steps and refused beyond "
        "this. 512 MiB by default.",
    )
    stow_max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        gt=0,
        description="Largest STOW-RS request body, in bytes (HTTP 413 beyond); 1 GiB.",
    )
    scp_max_associations: int = Field(
        default=64, gt=0, description="Concurrent associations the SCP accepts in total."
    )
    scp_max_associations_per_peer: int = Field(
        default=32,
        ge=0,
        description="Concurrent associations accepted from one peer address, and from one "
        "calling AE title (0 = no per-peer limit); one peer cannot take every association.",
    )
    scp_acse_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for an association message (ACSE)."
    )
    scp_dimse_timeout_s: float = Field(
        default=60.0, gt=0, description="Seconds to wait for a DIMSE message."
    )
    scp_network_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds an association may stay silent before the SCP closes it "
        "(idle time-out).",
    )
    # analysis (kerma.analysis)
    drl_set: str = Field(default="EU", description="Region code of the selected national DRL set.")
    exam_rules_path: Path | None = Field(
        default=None, description="TOML file of site standard-exam rules (replaces defaults)."
    )
    hl7_mapping: Path | None = Field(
        default=None,
        description="TOML file of the site's HL7 v2 mapping: which segment and field carry "
        "accession, patient ID, weight, height, procedure and department, per sending "
        "application (docs/ris.md); default: the packaged mapping.",
    )
    hl7_tls_cert: Path | None = Field(
        default=None, description="PEM certificate of the HL7 listener (MLLP over TLS)."
    )
    hl7_tls_key: Path | None = Field(
        default=None, description="PEM private key of the HL7 listener."
    )
    drl_min_sample: int = Field(default=20, description="ICRP 135 minimum sample per room.")
    drl_min_sample_mammography: int = Field(default=50)
    drl_unknown_age: Literal["adult", "exclude"] = Field(
        default="adult",
        description="DRL comparison of samples whose patient age is unknown: 'adult' "
        "compares them with the adult DRLs (most adult RDSRs carry the age, and a "
        "general hospital's unknown ages are mostly adults); 'exclude' leaves them out "
        "(a children's hospital, where an unknown age may be a child's). Paediatric DRL "
        "bands never take them. The DRL output counts them in n_unknown_age.",
    )
    drl_extra_paths: list[Path] = Field(
        default_factory=list,
        description="Site DRL tables (CSV, columns of a shipped DRL table); their region "
        "code becomes a selectable DRL set.",
    )
    drl_period: str = Field(
        default="quarter", description="Period for 'consistently above DRL': month, quarter."
    )
    drl_consecutive_periods: int = Field(
        default=2, description="Consecutive periods above the DRL that flag a room."
    )
    cumulative_window_days: int = Field(
        default=365, description="Rolling window of cumulative patient dose (days)."
    )
    # alert e-mail (kerma.services.alert_notify; docs/alerts-notifications.md)
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Address of Kerma's web app as users reach it; alert e-mails link "
        "to <base_url>/studies/<Study Instance UID>.",
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server of alert e-mails; unset = e-mails are queued, not sent.",
    )
    smtp_port: int | None = Field(
        default=None,
        description="SMTP port; default by smtp_security: 25 (none), 587 (starttls), 465 (tls).",
    )
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="Connection security: 'starttls' (RFC 3207, upgrade on the submission "
        "port), 'tls' (implicit TLS, RFC 8314) or 'none' (plain, a relay on the local "
        "network only).",
    )
    smtp_tls_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the SMTP server's certificate (e.g. the "
        "hospital's own CA); default: the system's trusted CAs.",
    )
    smtp_username: str | None = Field(default=None, description="SMTP login, when needed.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_sender: str = Field(
        default="kerma@localhost", description="From address of alert e-mails."
    )
    smtp_timeout_s: float = Field(default=30.0, description="SMTP connection timeout (s).")
    alert_default_recipients: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="E-mail addresses (comma-separated) that receive the alerts of a "
        "rule naming no recipients of its own.",
    )
    alert_digest: bool = Field(
        default=False,
        description="Send one digest e-mail per recipient per day (the day's alerts) "
        "instead of one e-mail per alert.",
    )
    alert_mail_retry_s: float = Field(
        default=60.0, description="Delay before the first retry of a failed e-mail (s)."
    )
    alert_mail_retry_max_s: float = Field(
        default=3600.0, description="Longest delay between retries (s); delays double."
    )

    @field_validator("alert_default_recipients", mode="before")
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        """Accept ``a@x, b@y`` (one string, comma-separated) as well as a list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    # alerts (kerma.analysis.alerts, kerma.services.alerts; docs/alerts.md)
    alert_rules: Path | None = Field(
        default=None,
        description="Alert rule pack (TOML file) or folder of packs (KERMA_ALERT_RULES); "
        "replaces the packaged default pack (kerma-default).",
    )
    alert_anlage14: bool = Field(
        default=False,
        description="Also evaluate the packaged DE-StrlSchV-Anlage14 pack (German "
        "significant-event criteria, StrlSchV 2018 Anlage 14).",
    )
    alerts_enabled: bool = Field(
        default=True,
        description="Evaluate the alert rules after each imported object (ingest); "
        "'kerma alerts recheck' works either way.",
    )

    # web security (kerma.services.users, kerma.web.security; docs/security.md)
    session_lifetime_minutes: int = Field(
        default=480,
        gt=0,
        description="Longest life of a browser session after login, in minutes (8 h); "
        "the user logs in again afterwards.",
    )
    session_idle_minutes: int = Field(
        default=60,
        gt=0,
        description="A browser session ends after this many minutes without a request.",
    )
    session_cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="The Secure attribute of the session cookie: 'auto' sets it when the "
        "request came over HTTPS (behind a TLS proxy, run uvicorn with --proxy-headers), "
        "'always' sets it always (the browser then sends the cookie over HTTPS only), "
        "'never' never.",
    )
    login_max_failures: int = Field(
        default=5,
        gt=0,
        description="Failed logins in a row after which an account is locked.",
    )
    login_lockout_s: float = Field(
        default=60.0,
        gt=0,
        description="First lock-out, in seconds; each further failure after a lock "
        "doubles it (back-off).",
    )
    login_lockout_max_s: float = Field(
        default=86400.0,
        gt=0,
        description="Longest lock-out, in seconds (one day).",
    )
    ldap_url: str | None = Field(
        default=None,
        description="LDAP or Active Directory server (ldap://host:389 or "
        "ldaps://host:636); unset = local users only.",
    )
    ldap_user_dn_template: str | None = Field(
        default=None,
        description="DN a user binds as, '{username}' replaced (e.g. "
        "'uid={username},ou=people,dc=example,dc=org', or '{username}@example.org' for "
        "Active Directory); or leave unset and set ldap_search_base.",
    )
    ldap_search_base: str | None = Field(
        default=None,
        description="Where to search a user's entry (with ldap_search_filter), when the "
        "DN is not made from a template.",
    )
    ldap_search_filter: str = Field(
        default="(uid={username})",
        description="Filter finding a user's entry under ldap_search_base "
        "('(sAMAccountName={username})' for Active Directory).",
    )
    ldap_bind_dn: str | None = Field(
        default=None, description="Service account that searches (unset: anonymous)."
    )
    ldap_bind_password: SecretStr | None = Field(
        default=None, description="Password of ldap_bind_dn."
    )
    ldap_group_search_base: str | None = Field(
        default=None,
        description="Where to search groups whose 'member' is the user (groupOfNames); "
        "unset = the user entry's memberOf attribute (Active Directory, OpenLDAP memberof "
        "overlay).",
    )
    ldap_group_roles: dict[str, str] = Field(
        default_factory=dict,
        description="Group DN -> Kerma role (viewer, physicist, admin), as JSON; a user "
        "gets the highest role of the groups they are in, and no login without one.",
    )
    ldap_start_tls: bool = Field(
        default=False, description="Upgrade an ldap:// connection with StartTLS."
    )
    ldap_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle of the directory's certificate."
    )
    ldap_timeout_s: float = Field(default=10.0, gt=0, description="LDAP time-out (s).")

    @field_validator(
        "archive_dir",
        "exam_rules_path",
        "hl7_mapping",
        "hl7_tls_cert",
        "hl7_tls_key",
        "scp_tls_cert",
        "scp_tls_key",
        "scp_tls_ca",
        "drl_extra_paths",
        mode="after",
    )
    @classmethod
    def _absolute(cls, value: Path | list[Path] | None) -> Path | list[Path] | None:
        """Make folder and file settings absolute, once, against the working directory.

        Paths are resolved when the settings are made, so that every part of Kerma
        (also a child process with another working directory, such as the PySkinDose
        run of ``kerma skin-dose``) sees the same folder; ``~`` is expanded.
        """
        if value is None:
            return None
        if isinstance(value, list):
            return [Path(v).expanduser().absolute() for v in value]
        return Path(value).expanduser().absolute()


def get_settings(**overrides: object) -> Settings:
    """Return settings from the environment, with keyword ``overrides`` applied."""
    return Settings(**overrides)  # type: ignore[arg-type]

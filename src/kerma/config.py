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
        description="Secret key of the HMAC-SHA-256 patient pseudonym. When unset, a "
        "random key is created once and kept in <archive_dir>/pseudonym.key.",
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
    # analysis (kerma.analysis)
    drl_set: str = Field(default="EU", description="Region code of the selected national DRL set.")
    exam_rules_path: Path | None = Field(
        default=None, description="TOML file of site standard-exam rules (replaces defaults)."
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


def get_settings(**overrides: object) -> Settings:
    """Return settings from the environment, with keyword ``overrides`` applied."""
    return Settings(**overrides)  # type: ignore[arg-type]

"""Settings, read from the environment (``KERMA_*``) and an optional ``.env`` file.

One :class:`Settings` object is built at the edge (CLI, SCP, web app) and passed down;
library code never reads the environment itself.

This module must not import anything else from Kerma.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    @field_validator(
        "archive_dir",
        "exam_rules_path",
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

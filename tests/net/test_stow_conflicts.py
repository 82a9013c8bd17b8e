"""The forged-then-genuine sequence over the network (issue #11, item 3).

A forged copy of a real RDSR (a DLP changed, the genuine SOP Instance UID kept) is sent
first by STOW-RS to the Kerma web app running under uvicorn; the genuine object
follows by STOW-RS, or by C-STORE (dcmtk ``storescu``) to a ``kerma listen`` on the same
registry. Both versions are kept and the study is in conflict; with
``KERMA_CONFLICT_RULE=prefer-device-association`` the device's C-STORE wins and the
decision is logged. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from kerma.api import Registry
from kerma.config import Settings
from kerma.ingest.versions import RULE_DECIDER
from kerma.web.app import create_app
from tests.db_fixtures import make_settings
from tests.ingest.conflict_helpers import (
    FORGED_DLP_MGYCM,
    GENUINE,
    GENUINE_DLP_MGYCM,
    forged_bytes,
    sop_instance_uid,
)
from tests.net.conftest import (
    DICOM_DIR,
    KermaListener,
    bearer,
    free_port,
    require_binary,
    stow_token,
    wait_until,
)

pytestmark = pytest.mark.network

BOUNDARY = "kerma-conflict-boundary"
STOW_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

#: The station name of the genuine RDSR's device, used as the modality's AE title.
DEVICE_AE_TITLE = "CTAWP12345"


class App:
    """The Kerma web app under uvicorn on a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.server.started, timeout=60)
        self.headers = bearer(stow_token(settings))

    def stow(self, data: bytes) -> httpx.Response:
        """POST one object to ``/dicomweb/studies`` and wait until it is imported."""
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/dicomweb/studies",
            content=body,
            headers={"Content-Type": STOW_CONTENT_TYPE, **self.headers},
            timeout=60,
        )
        assert wait_until(lambda: not self.app.state.spool.pending(), timeout=300)
        assert self.app.state.worker.wait_idle(300)
        return response

    def stop(self) -> None:
        """Stop uvicorn."""
        self.server.should_exit = True
        self.thread.join(60)


class SharedListener(KermaListener):
    """A ``kerma listen`` on the test's registry (any back end) and archive."""

    shared: Settings | None = None

    @property
    def database_url(self) -> str:
        """The test registry's URL."""
        assert self.shared is not None
        return self.shared.database_url

    @property
    def archive_dir(self) -> Path:
        """The test registry's archive."""
        assert self.shared is not None
        return self.shared.archive_dir


def registry_settings_for(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings of the test registry shared by the app and the listener."""
    return make_settings(database_url, tmp_path, **overrides)


@pytest.fixture
def stow_app(database_url: str, tmp_path: Path) -> Iterator[App]:
    """The app on a fresh registry (manual conflict rule, the default)."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    app = App(registry_settings_for(database_url, tmp_path))
    yield app
    app.stop()


def study_dlp(settings: Settings) -> float:
    """Return the DLP total (mGy·cm) of the registry's only study."""
    with Registry(settings=settings) as reg:
        studies = reg.studies(include_non_patient=True)
    assert len(studies) == 1
    return float(studies["ct_dlp_total_mgycm"].iloc[0])


class TestForgedThenGenuineByStow:
    """Both copies by STOW-RS: held, study in conflict, a user decides."""

    def test_both_versions_kept_then_resolved(self, stow_app: App) -> None:
        """Forged then genuine: 200 each; two versions; resolve keeps the genuine one."""
        uid = sop_instance_uid()
        assert stow_app.stow(forged_bytes()).status_code == 200
        assert study_dlp(stow_app.settings) == pytest.approx(FORGED_DLP_MGYCM)
        # the genuine copy is acknowledged too: it is kept, not refused
        assert stow_app.stow(GENUINE.read_bytes()).status_code == 200
        with Registry(settings=stow_app.settings) as reg:
            assert reg.rejects().empty
            detail = reg.conflict(uid)
            assert detail.is_open
            assert [(v.version, v.is_current, v.transport) for v in detail.versions] == [
                (1, True, "stow-rs"),
                (2, False, "stow-rs"),
            ]
            assert [v.source for v in detail.versions] == ["STOW-RS from 127.0.0.1"] * 2
            in_conflict = reg.studies(has_conflict=True, include_non_patient=True)
            assert len(in_conflict) == 1
            assert in_conflict["ct_dlp_total_mgycm"].iloc[0] == pytest.approx(FORGED_DLP_MGYCM)
            reg.resolve_conflict(uid, keep=2, reason="genuine RDSR from the CT", user="mpe")
            [decision] = reg.conflict_decisions(uid)
            assert (decision.version_kept, decision.decided_by) == (2, "mpe")
        assert study_dlp(stow_app.settings) == pytest.approx(GENUINE_DLP_MGYCM)
        # the same bytes again add no third version, and do not reopen the decision
        assert stow_app.stow(forged_bytes()).status_code == 200
        with Registry(settings=stow_app.settings) as reg:
            detail = reg.conflict(uid)
        assert (len(detail.versions), detail.is_open) == (2, False)


class TestDeviceAssociationRule:
    """Forged by STOW-RS, genuine by C-STORE from the device: the rule keeps the genuine."""

    def test_c_store_from_the_device_wins(self, database_url: str, tmp_path: Path) -> None:
        """storescu -aet CTAWP12345 to kerma listen on the same registry; decision logged."""
        if not DICOM_DIR.is_dir():
            pytest.skip("../shared/dicom is not beside the repository")
        exe = require_binary("storescu")
        settings = registry_settings_for(
            database_url, tmp_path, conflict_rule="prefer-device-association"
        )
        uid = sop_instance_uid()
        app = App(settings)
        try:
            assert app.stow(forged_bytes()).status_code == 200
        finally:
            app.stop()
        listener = SharedListener(
            tmp_path / "listen",
            extra_env={
                "KERMA_PSEUDONYM_KEY": str(settings.pseudonym_key),
                "KERMA_CONFLICT_RULE": "prefer-device-association",
            },
        )
        listener.shared = settings
        listener.start()
        try:
            sent = subprocess.run(
                [
                    exe,
                    "-aet",
                    DEVICE_AE_TITLE,
                    "-aec",
                    listener.aet,
                    "127.0.0.1",
                    str(listener.port),
                    str(GENUINE),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr

            def decided() -> bool:
                with Registry(settings=settings) as reg:
                    return bool(reg.conflict_decisions(uid))

            assert wait_until(decided, timeout=300, interval=0.5), listener.log()[-3000:]
        finally:
            listener.terminate()
            listener.reap_orphans()
        with Registry(settings=settings) as reg:
            detail = reg.conflict(uid)
            [decision] = reg.conflict_decisions(uid)
            in_conflict = reg.studies(has_conflict=True, include_non_patient=True)
        assert [(v.transport, v.calling_ae_title) for v in detail.versions] == [
            ("stow-rs", None),
            ("c-store", DEVICE_AE_TITLE),
        ]
        assert (detail.is_open, detail.current_version) == (False, 2)
        assert (decision.method, decision.decided_by, decision.version_kept) == (
            "rule",
            RULE_DECIDER,
            2,
        )
        assert in_conflict.empty
        assert study_dlp(settings) == pytest.approx(GENUINE_DLP_MGYCM)

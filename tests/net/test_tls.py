"""``kerma listen`` over TLS: a test CA, server and client certificates made with openssl.

The certificates are generated in the test's temporary folder with the ``openssl``
command line (the ``cryptography`` package is not a dependency): a CA, a server
certificate for ``localhost``/127.0.0.1 and a client certificate, all signed by that
CA. The listener gets ``KERMA_SCP_TLS_CERT``/``KERMA_SCP_TLS_KEY`` (and
``KERMA_SCP_TLS_CA`` for client certificates); senders are pynetdicom SCUs with a
Python :class:`ssl.SSLContext` (``tls_args``) and, when it was built with OpenSSL,
dcmtk ``storescu +tls``.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from kerma.api import Registry
from kerma.net import status
from tests.net.conftest import DICOM_DIR, KermaListener, registry_sop_uids, require_binary

pytestmark = pytest.mark.network

#: The RDSR sent over TLS, and its expected values (``../shared/dicom/expected``).
RDSR = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
RDSR_EXPECTED = DICOM_DIR / "expected" / "CT-RDSR-Siemens-Multi-1.json"

#: Host name in the server certificate (and the SAN IP 127.0.0.1).
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class TestPKI:
    """PEM files of a throw-away CA and the server and client certificates it signed."""

    __test__ = False  # not a test class

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    """Run ``openssl`` with ``args`` in ``cwd``; fail the test with its output on error."""
    exe = require_binary("openssl")
    run = subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, f"openssl {' '.join(args)}:\n{run.stderr}"


def make_pki(directory: Path) -> TestPKI:
    """Create a CA and a server and a client certificate (RSA 2048, 2 days) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Kerma Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    for name, cn, usage, san in (
        ("server", SERVER_NAME, "serverAuth", f"DNS:{SERVER_NAME},IP:127.0.0.1"),
        ("client", "MODALITY1", "clientAuth", "DNS:modality1"),
    ):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}",
            cwd=directory,
        )  # fmt: skip
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\n"
            f"subjectAltName={san}\n"
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
            "-extfile", f"{name}.ext",
            cwd=directory,
        )  # fmt: skip
    return TestPKI(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def client_context(pki: TestPKI, *, with_certificate: bool) -> ssl.SSLContext:
    """Return a client TLS context that trusts the test CA (and presents the client cert)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    if with_certificate:
        context.load_cert_chain(certfile=str(pki.client_cert), keyfile=str(pki.client_key))
    return context


def send_over_tls(
    port: int, path: Path, tls_args: tuple[ssl.SSLContext, str] | None, *, aet: str = "KERMA"
) -> int | None:
    """Send one file with pynetdicom (over TLS unless ``tls_args`` is None).

    Returns the C-STORE status, or None when the association was not established.
    """
    meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(
        meta.file_meta.MediaStorageSOPClassUID, meta.file_meta.TransferSyntaxUID
    )
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        rsp = assoc.send_c_store(path)
        return int(rsp.Status)
    finally:
        assoc.release()


def is_established(port: int, tls_args: tuple[ssl.SSLContext, str] | None) -> bool:
    """Return whether an association (Verification) with the listener can be established."""
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="KERMA", tls_args=tls_args)
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A test CA with a server and a client certificate."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_listener(workdir: Path, pki: TestPKI, *, require_client_cert: bool) -> KermaListener:
    """Return a started TLS listener (client certificates required if asked)."""
    env = {
        "KERMA_SCP_TLS_CERT": str(pki.server_cert),
        "KERMA_SCP_TLS_KEY": str(pki.server_key),
    }
    if require_client_cert:
        env["KERMA_SCP_TLS_CA"] = str(pki.ca_cert)
    scp = KermaListener(
        workdir,
        extra_env=env,
        tls_args=(client_context(pki, with_certificate=True), SERVER_NAME),
    )
    scp.start()
    return scp


@pytest.fixture
def tls_listener(tmp_path: Path, pki: TestPKI) -> Iterator[KermaListener]:
    """``kerma listen`` with TLS (server certificate only)."""
    scp = _tls_listener(tmp_path / "kerma", pki, require_client_cert=False)
    yield scp
    scp.terminate()
    scp.reap_orphans()


@pytest.fixture
def mutual_tls_listener(tmp_path: Path, pki: TestPKI) -> Iterator[KermaListener]:
    """``kerma listen`` with TLS that requires a client certificate signed by the test CA."""
    scp = _tls_listener(tmp_path / "kerma", pki, require_client_cert=True)
    yield scp
    scp.terminate()
    scp.reap_orphans()


class TestTLS:
    """DICOM over TLS with a server certificate."""

    def test_rdsr_over_tls_is_imported_with_its_dlp(
        self, tls_listener: KermaListener, pki: TestPKI
    ) -> None:
        """A CT RDSR sent over TLS gets 0x0000 and is imported with its expected DLP total."""
        tls_args = (client_context(pki, with_certificate=False), SERVER_NAME)
        assert send_over_tls(tls_listener.port, RDSR, tls_args) == status.SUCCESS
        tls_listener.wait_drained()
        expected = json.loads(RDSR_EXPECTED.read_text())
        assert registry_sop_uids(tls_listener.settings) == [expected["sop_instance_uid"]]
        with Registry(settings=tls_listener.settings) as reg:
            studies = reg.studies(include_non_patient=True)
        assert len(studies) == 1
        assert studies["ct_dlp_total_mgycm"].iloc[0] == pytest.approx(
            expected["accumulated"]["ct_dlp_total_mgycm"]
        )

    def test_plain_association_is_refused(self, tls_listener: KermaListener) -> None:
        """An association without TLS cannot be established with a TLS listener."""
        assert not is_established(tls_listener.port, None)
        assert send_over_tls(tls_listener.port, RDSR, None) is None
        assert registry_sop_uids(tls_listener.settings) == []

    def test_client_that_does_not_trust_the_server_is_refused(
        self, tls_listener: KermaListener
    ) -> None:
        """A client that verifies the server against the system CAs only fails the handshake."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        assert not is_established(tls_listener.port, (context, SERVER_NAME))

    def test_listen_prints_that_tls_is_on(self, tls_listener: KermaListener) -> None:
        """``kerma listen`` says on start that TLS is on (client certificates not required)."""
        log = tls_listener.log()
        assert "TLS on;" in log, log

    def test_storescu_over_tls_is_imported(self, tls_listener: KermaListener, pki: TestPKI) -> None:
        """dcmtk storescu +tls (client certificate, server verified by the CA) stores an RDSR."""
        exe = require_binary("storescu")
        if "+tls" not in subprocess.run([exe, "--help"], capture_output=True, text=True).stdout:
            pytest.skip("this storescu was built without OpenSSL (no +tls)")
        path = DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm"
        run = subprocess.run(
            [
                exe, "-v", "+tls", str(pki.client_key), str(pki.client_cert),
                "+cf", str(pki.ca_cert), "-aec", tls_listener.aet,
                "127.0.0.1", str(tls_listener.port), str(path),
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        output = run.stdout + run.stderr
        assert run.returncode == 0, output
        assert output.count("Received Store Response (Success)") == 1, output
        tls_listener.wait_drained()
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert registry_sop_uids(tls_listener.settings) == [uid]


class TestMutualTLS:
    """DICOM over TLS with client certificates required (``KERMA_SCP_TLS_CA``)."""

    def test_client_with_certificate_stores(
        self, mutual_tls_listener: KermaListener, pki: TestPKI
    ) -> None:
        """A client presenting a certificate signed by the CA stores an RDSR (0x0000)."""
        tls_args = (client_context(pki, with_certificate=True), SERVER_NAME)
        assert send_over_tls(mutual_tls_listener.port, RDSR, tls_args) == status.SUCCESS
        mutual_tls_listener.wait_drained()
        expected = json.loads(RDSR_EXPECTED.read_text())
        assert registry_sop_uids(mutual_tls_listener.settings) == [expected["sop_instance_uid"]]

    def test_client_without_certificate_is_refused(
        self, mutual_tls_listener: KermaListener, pki: TestPKI
    ) -> None:
        """A TLS client without a certificate cannot associate, and nothing is stored."""
        tls_args = (client_context(pki, with_certificate=False), SERVER_NAME)
        assert not is_established(mutual_tls_listener.port, tls_args)
        assert send_over_tls(mutual_tls_listener.port, RDSR, tls_args) is None
        assert registry_sop_uids(mutual_tls_listener.settings) == []

    def test_listen_prints_client_certificates_required(
        self, mutual_tls_listener: KermaListener
    ) -> None:
        """``kerma listen`` says on start that client certificates are required."""
        log = mutual_tls_listener.log()
        assert "TLS on, client certificates required;" in log, log


def make_client_certificate(pki: TestPKI, name: str, common_name: str) -> tuple[Path, Path]:
    """Sign one more client certificate (``CN=<common_name>``) with the test CA."""
    directory = pki.ca_cert.parent
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"


def sha256_fingerprint(cert: Path) -> str:
    """Return the certificate's SHA-256 fingerprint as openssl prints it (``AB:CD:...``)."""
    run = subprocess.run(
        [require_binary("openssl"), "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.strip().split("=", 1)[1]


def store_as(
    port: int, calling: str, cert: tuple[Path, Path], pki: TestPKI, path: Path = RDSR
) -> int | None:
    """C-STORE ``path`` over TLS as AE ``calling`` presenting ``cert``; None if refused."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(certfile=str(cert[0]), keyfile=str(cert[1]))
    ae = AE(ae_title=calling)
    ae.add_requested_context(pydicom.uid.XRayRadiationDoseSRStorage)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="KERMA", tls_args=(context, SERVER_NAME))
    if not assoc.is_established:
        assert assoc.is_rejected  # an A-ASSOCIATE-RJ, not a failed handshake
        return None
    try:
        return int(assoc.send_c_store(pydicom.dcmread(path)).Status)
    finally:
        assoc.release()


class TestAETitleBoundToCertificate:
    """``KERMA_SCP_TLS_AET_CERTIFICATES``: a calling AE title is accepted only with its
    own client certificate (by subject CN or SHA-256 fingerprint)."""

    def test_spoofed_ae_title_is_rejected(self, tmp_path: Path, pki: TestPKI) -> None:
        """MODALITY1 (by CN) and MODALITY2 (by fingerprint) store with their own
        certificates; each is rejected with the other's, as is an unlisted AE title."""
        second = make_client_certificate(pki, "client2", "Cath Lab 2")
        first = (pki.client_cert, pki.client_key)
        bindings = {
            "MODALITY1": ["CN=MODALITY1"],
            "MODALITY2": [sha256_fingerprint(second[0])],
        }
        scp = KermaListener(
            tmp_path / "kerma",
            extra_env={
                "KERMA_SCP_TLS_CERT": str(pki.server_cert),
                "KERMA_SCP_TLS_KEY": str(pki.server_key),
                "KERMA_SCP_TLS_CA": str(pki.ca_cert),
                "KERMA_SCP_TLS_AET_CERTIFICATES": json.dumps(bindings),
            },
            ready_calling="MODALITY1",
            tls_args=(client_context(pki, with_certificate=True), SERVER_NAME),
        )
        scp.start()
        try:
            assert store_as(scp.port, "MODALITY2", first, pki) is None  # spoofed
            assert store_as(scp.port, "MODALITY1", second, pki) is None  # spoofed
            assert store_as(scp.port, "STRANGER", first, pki) is None  # not listed
            assert store_as(scp.port, "MODALITY1", first, pki) == status.SUCCESS
            dx = DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm"
            assert store_as(scp.port, "MODALITY2", second, pki, dx) == status.SUCCESS
            scp.wait_drained()
            log = scp.log()
        finally:
            scp.terminate()
            scp.reap_orphans()
        assert log.count("scp_tls_aet_certificates") == 3, log
        assert "is not bound to this calling AE title" in log
        expected = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in (RDSR, DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm")
        }
        assert set(registry_sop_uids(scp.settings)) == expected

    def test_bindings_without_client_certificates_stop_listen(
        self, tmp_path: Path, pki: TestPKI
    ) -> None:
        """Bindings without KERMA_SCP_TLS_CA are a configuration error: listen exits."""
        scp = KermaListener(
            tmp_path / "kerma",
            extra_env={
                "KERMA_SCP_TLS_CERT": str(pki.server_cert),
                "KERMA_SCP_TLS_KEY": str(pki.server_key),
                "KERMA_SCP_TLS_AET_CERTIFICATES": '{"MODALITY1": ["CN=MODALITY1"]}',
            },
        )
        with pytest.raises(RuntimeError, match="set KERMA_SCP_TLS_CA"):
            scp.start()
        assert scp.process is not None and scp.process.returncode not in (None, 0)

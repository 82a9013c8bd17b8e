"""HL7 v2 over MLLP and FHIR in: round trips, refusals, matching, DRL, planted identity.

Real components: the MLLP listener on loopback (:class:`kerma.ris.mllp.Hl7Listener`)
and python-hl7's asyncio MLLP client, a real CT RDSR from ``../shared/dicom`` given a
child's identity, a FHIR server on loopback (``http.server``), the web app's
``POST /fhir/notify``, ``kerma drl`` through the CLI, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from kerma.config import Settings
from kerma.ingest.archive import is_encrypted
from kerma.ris.mllp import Hl7Listener
from kerma.services.hl7 import load_mapping, parse_message
from kerma.services.orders import OrderIntake
from tests.conftest import DICOM_DIR
from tests.db_fixtures import BACKENDS, TEST_PSEUDONYM_KEY, fresh_database, make_settings
from tests.ingest.helpers import dump_text
from tests.ris.helpers import (
    ACCESSION_AFTER,
    ACCESSION_BEFORE,
    PATIENT_ID,
    PATIENT_NAME,
    ack_fields,
    hl7_message,
    msh,
    orm,
    pid,
    send,
    write_rdsr,
)

needs_shared = pytest.mark.skipif(
    not DICOM_DIR.is_dir(), reason="../shared is not beside the repository"
)

#: A site rule: the RIS code CTCH is a CT Chest (the requested procedure code feeds
#: the standard-exam rules), tried before the packaged rules.
SITE_EXAM_RULES = """
extend_defaults = true

[[rule]]
name = "ris-ctch"
exam = "CT Chest"
modality = "CT"
level = "study"
all = { requested_procedure_code = "^CTCH$" }
"""

#: Tokens that must never be stored or logged in clear.
PLANTED = (PATIENT_ID, ACCESSION_BEFORE, ACCESSION_AFTER, "ZQXACC0003", "ZQXFHIRPID", "Zqxplant")


class _LogFile:
    """Every kerma log record at DEBUG, written to a file for the planted-identity scan."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.logger = logging.getLogger("kerma")
        self.level = self.logger.level

    def __enter__(self) -> _LogFile:
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.handler.close()


@pytest.fixture(params=BACKENDS)
def ris_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a fresh registry with the site exam rule and a DRL sample of 1."""
    rules = tmp_path / "exam_rules.toml"
    rules.write_text(SITE_EXAM_RULES, encoding="utf-8")
    with fresh_database(request.param, tmp_path) as url:
        yield make_settings(
            url,
            tmp_path,
            exam_rules_path=rules,
            drl_min_sample=1,
            archive_mode="encrypted",
            accession_in_clear=False,
        )


@pytest.fixture
def listener(ris_settings: Settings) -> Iterator[Hl7Listener]:
    """An MLLP listener on a free loopback port, stopped afterwards."""
    from kerma.api import Registry

    registry = Registry(settings=ris_settings)
    intake = OrderIntake(ris_settings, session_factory=registry.session_factory)
    server = Hl7Listener(intake, host="127.0.0.1", port=0)
    server.start_in_thread()
    yield server
    server.stop()
    registry.close()


def _rows(settings: Settings, sql: str) -> list[tuple]:
    """Return the rows of a query on the registry."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


class _Fhir(BaseHTTPRequestHandler):
    """A small FHIR server: a searchset of two pages (ServiceRequest, Patient; Observation)."""

    pages: ClassVar[dict[str, dict]] = {}

    def do_GET(self) -> None:
        page = self.pages.get(self.path)
        body = json.dumps(page).encode() if page is not None else b"{}"
        self.send_response(200 if page is not None else 404)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


def _fhir_pages(base: str) -> dict[str, dict]:
    """Return the two pages of the FHIR search the poll reads."""
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "value": "ZQXFHIRPID",
            }
        ],
        "name": [{"family": "Zqxplant", "given": ["Fhir"]}],
    }
    request = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "value": "ZQXACC0003",
            }
        ],
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"code": "CTCH", "display": "CT Chest paediatric"}]},
        "occurrenceDateTime": "2024-11-02T10:00:00Z",
    }
    weight = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "basedOn": [{"reference": "ServiceRequest/sr1"}],
        "effectiveDateTime": "2024-11-02",
        "valueQuantity": {
            "value": 17400,
            "unit": "g",
            "system": "http://unitsofmeasure.org",
            "code": "g",
        },
    }
    return {
        "/fhir/ServiceRequest": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": request}, {"resource": patient}],
            "link": [{"relation": "next", "url": f"{base}/fhir/page2"}],
        },
        "/fhir/page2": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": weight}, {"resource": request}, {"resource": patient}],
        },
    }


@needs_shared
@pytest.mark.network
@pytest.mark.slow
class TestOrdersEndToEnd:
    def test_orders_fill_studies_before_and_after_and_nothing_leaks(
        self, ris_settings: Settings, listener: Hl7Listener, tmp_path: Path, monkeypatch
    ) -> None:
        """Every message type round trip, refusals kept, late arrivals both ways, DRL, scan."""
        from kerma.api import Registry

        log = tmp_path / "kerma.log"
        with _LogFile(log):
            registry = Registry(settings=ris_settings)
            # a dose study imported BEFORE its order
            before = write_rdsr(tmp_path / "in", "before.dcm", accession=ACCESSION_BEFORE)
            assert registry.import_paths([before]).n_imported == 1

            messages = [
                # order of the study above: weight in kg, height in m
                orm("C1", ACCESSION_BEFORE),
                # order of a study still to come: pounds and inches
                orm(
                    "C2",
                    ACCESSION_AFTER,
                    weight="51.8",
                    unit="[lb_av]",
                    height="48",
                    height_unit="[in_i]",
                ),
                # OMI^O23 (IHE RAD-4 v2.5.1): accession in IPC-1, modality IPC-5
                hl7_message(
                    msh("OMI^O23", "C3"),
                    pid(),
                    "ORC|NW|P9|F9",
                    "TQ1|1||||||20241105",
                    "OBR|1|P9|F9|MRHEAD^MR Head",
                    "IPC|ZQXACC0009|P9|1.2.3.4|SPS9|MR",
                    "OBX|1|NM|29463-7^Body weight^LN||24000|g",
                ),
                # ORU^R01 result with a weight for the first order
                hl7_message(
                    msh("ORU^R01", "C4"),
                    pid(),
                    f"OBR|1|P{ACCESSION_BEFORE}|F{ACCESSION_BEFORE}|CTCH^CT Chest paediatric"
                    f"|||20241101||||||||||{ACCESSION_BEFORE}",
                    "OBX|1|NM|29463-7^Body weight^LN||23.5|kg|||||F",
                ),
                # ADT^A08 patient update: a height, matched by patient and date
                hl7_message(
                    msh("ADT^A08", "C5"),
                    "EVN|A08|20241101",
                    pid(),
                    "PV1|1|O",
                    "OBX|1|NM|8302-2^Body height^LN||1.22|m",
                ),
                # malformed: weight not a number (AE), a unit not known (AE),
                # an unsupported message type (AR), not HL7 at all (AR)
                hl7_message(
                    msh("ORM^O01", "C6"),
                    pid(),
                    "OBR|1|||||||||||||||||ZQXACC0006",
                    "OBX|1|NM|29463-7^Body weight^LN||heavy|kg",
                ),
                hl7_message(
                    msh("ORM^O01", "C7"),
                    pid(),
                    "OBR|1|||||||||||||||||ZQXACC0007",
                    "OBX|1|NM|29463-7^Body weight^LN||20|stone",
                ),
                hl7_message(msh("SIU^S12", "C8"), pid()),
                f"PID|1||{PATIENT_ID}|garbage without MSH".encode(),
            ]
            acks = [ack_fields(a) for a in send(listener.port, messages)]
            codes = [a["MSA"][1] for a in acks]
            assert codes == ["AA", "AA", "AA", "AA", "AA", "AE", "AE", "AR", "AR"]
            assert [a["MSA"][2] for a in acks[:8]] == [f"C{i}" for i in range(1, 9)]
            assert acks[8]["MSA"][2] == ""  # no control ID to echo
            # refusals carry the reason in MSA-3 and ERR-3 (Table 0357) / ERR-8
            assert acks[5]["ERR"][3].startswith("102^")
            assert "not a number" in acks[5]["ERR"][8]
            assert acks[6]["ERR"][3].startswith("103^")
            assert "not a known unit" in acks[6]["MSA"][3]
            assert acks[7]["ERR"][3].startswith("200^")
            assert acks[8]["ERR"][3].startswith("100^")
            assert all(a["MSH"][8].startswith("ACK") for a in acks)

            # a dose study imported AFTER its order
            after = write_rdsr(
                tmp_path / "in", "after.dcm", accession=ACCESSION_AFTER, study_date="20241101"
            )
            assert registry.import_paths([after]).n_imported == 1

            # FHIR: poll a server on loopback; then a subscription notification
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
            base = f"http://127.0.0.1:{server.server_address[1]}"
            _Fhir.pages = _fhir_pages(base)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                fhir_study = write_rdsr(
                    tmp_path / "in",
                    "fhir.dcm",
                    accession="ZQXACC0003",
                    study_date="20241102",
                    patient_id="ZQXFHIRPID",
                )
                assert registry.import_paths([fhir_study]).n_imported == 1
                from kerma.ris.fhir import poll

                intake = OrderIntake(ris_settings, session_factory=registry.session_factory)
                result = poll(intake, f"{base}/fhir/ServiceRequest")
            finally:
                server.shutdown()
                server.server_close()
            assert result.pages == 2
            assert result.refused == []

            from fastapi.testclient import TestClient

            from kerma.web.app import create_app

            notification = {
                "resourceType": "Bundle",
                "type": "history",
                "entry": [
                    {"resource": {"resourceType": "SubscriptionStatus", "status": "active"}},
                    {
                        "resource": {
                            "resourceType": "Observation",
                            "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                            "subject": {"identifier": {"value": "ZQXFHIRPID"}},
                            "effectiveDateTime": "2024-11-02T08:00:00+01:00",
                            "valueQuantity": {"value": 109, "code": "cm"},
                        }
                    },
                ],
            }
            from kerma.services.users import Accounts, Actor

            accounts = Accounts(ris_settings)
            try:
                _, token = accounts.add_token(
                    "fhir-server", "physicist", Actor(name="test-setup", kind="cli")
                )
            finally:
                accounts.close()
            bearer = {"Authorization": f"Bearer {token}"}
            with TestClient(create_app(ris_settings)) as client:
                anonymous = client.post("/fhir/notify", content=json.dumps(notification))
                ok = client.post("/fhir/notify", content=json.dumps(notification), headers=bearer)
                bad = client.post("/fhir/notify", content=b"not json", headers=bearer)
            assert anonymous.status_code == 401  # a machine interface: no redirect to /login
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"status": "accepted", "orders": 1, "studies_updated": 1}
            assert bad.status_code == 422
            registry.close()

            # `kerma drl` compares the child with the EU weight-banded paediatric CT Chest DRL
            out = tmp_path / "drl.csv"
            for key, value in {
                "KERMA_DATABASE_URL": ris_settings.database_url,
                "KERMA_ARCHIVE_DIR": str(ris_settings.archive_dir),
                "KERMA_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
                "KERMA_EXAM_RULES_PATH": str(ris_settings.exam_rules_path),
                "KERMA_DRL_MIN_SAMPLE": "1",
                "KERMA_LOG_LEVEL": "DEBUG",
                "KERMA_LOG_FILE": str(tmp_path / "cli.log"),
            }.items():
                monkeypatch.setenv(key, value)
            from kerma.cli.main import app

            run = CliRunner().invoke(app, ["drl", "--set", "EU", "--out", str(out)])
            assert run.exit_code == 0, run.output

        # weights and heights: from the orders, converted to kg and m, source recorded
        rows = _rows(
            ris_settings,
            "select study_date, patient_weight_kg, patient_size_m, patient_weight_source, "
            "patient_size_source, requested_procedure_code, standard_exam "
            "from study order by id",
        )
        assert len(rows) == 3
        first, second, third = rows
        assert first[1] == pytest.approx(23.5)  # imported before its order
        assert first[2] == pytest.approx(1.22)
        assert first[3:6] == ("ris", "ris", "CTCH")
        assert second[1] == pytest.approx(51.8 * 0.45359237)  # imported after: 23.496 kg
        assert second[2] == pytest.approx(48 * 0.0254)
        assert second[3:5] == ("ris", "ris")
        assert first[6] == second[6] == "CT Chest"  # the RIS code fed the exam rule
        assert third[1] == pytest.approx(17.4)  # FHIR: 17400 g
        assert third[2] == pytest.approx(1.09)  # FHIR notification: 109 cm
        assert third[3:5] == ("fhir", "fhir")

        # the DRL comparison put both children in the 15 to <30 kg band of CT Chest
        import pandas as pd

        drl = pd.read_csv(out)
        child = drl[(drl["patient_group"] == "paediatric") & (drl["quantity"] == "dlp_mgycm")]
        assert set(child["band_label"]) == {"15 to <30 kg"}
        assert child["n"].sum() == 3
        assert set(child["drl_value"]) == {70.0}

        # every message kept: accepted and refused, in the archive, encrypted
        messages = _rows(
            ris_settings, "select status, message_control_id, archive_path from ris_message"
        )
        statuses = sorted(m[0] for m in messages)
        assert statuses.count("accepted") == 5 + 2 + 1  # HL7, two FHIR pages, notification
        assert statuses.count("error") == 2
        assert statuses.count("rejected") == 2 + 1  # and the FHIR body that is not JSON
        for _, _, path in messages:
            blob = (ris_settings.archive_dir / path).read_bytes()
            assert is_encrypted(blob)

        # planted identity: no patient ID, accession number or name in clear anywhere
        engine = create_engine(ris_settings.database_url)
        try:
            dumped = dump_text(engine)
        finally:
            engine.dispose()
        cli_log = tmp_path / "cli.log"
        logs = log.read_text(encoding="utf-8") + (
            cli_log.read_text(encoding="utf-8") if cli_log.exists() else ""
        )
        assert "HL7" in logs or "ORM^O01" in logs  # the logs did record the messages
        archive_files = [p for p in ris_settings.archive_dir.rglob("*") if p.is_file()]
        for token in PLANTED:
            assert token not in dumped, token
            assert token not in logs, token
            for path in archive_files:
                assert token.encode() not in path.read_bytes(), (token, path)
                assert token not in str(path)
        assert PATIENT_NAME not in dumped


class TestMapping:
    def test_default_mapping_reads_ihe_order(self) -> None:
        """The packaged mapping reads OBR-18, PID-3, OBR-4, ORC-17 and the OBX units."""
        order = parse_message(
            orm("X1", "ACC-1", weight="52", unit="[lb_av]", height="120", height_unit="cm"),
            load_mapping(),
        )
        assert order.accession_number == "ACC-1"
        assert order.patient_id == PATIENT_ID
        assert order.requested_procedure_code == "CTCH"
        assert order.requested_procedure_text == "CT Chest paediatric"
        assert order.ordering_department == "Paediatric ward"
        assert order.modality == "CT"
        assert str(order.order_date) == "2024-11-01"
        assert order.patient_weight_kg == pytest.approx(52 * 0.45359237)
        assert order.patient_size_m == pytest.approx(1.2)
        assert PATIENT_ID not in repr(order) and "ACC-1" not in repr(order)

    def test_application_table_overrides_default(self, tmp_path: Path) -> None:
        """[application."ACME"] reads the accession number from ORC-3 for ACME only."""
        path = tmp_path / "mapping.toml"
        path.write_text('[application."ACME"]\naccession_number = ["ORC-3"]\n', encoding="utf-8")
        mapping = load_mapping(path)
        message = orm("X2", "ACC-2").replace(b"|RIS|", b"|ACME|", 1)
        assert parse_message(message, mapping).accession_number == "FACC-2"
        assert parse_message(orm("X3", "ACC-3"), mapping).accession_number == "ACC-3"

    @pytest.mark.parametrize(
        ("content", "match"),
        [
            ('[default]\naccession_number = ["OBR18"]\n', "not a field path"),
            ('[default]\nweigth_codes = ["x"]\n', "unknown keys"),
            ("[sites]\n", "unknown tables"),
            ("[default\n", "not valid TOML"),
        ],
        ids=["bad-path", "unknown-key", "unknown-table", "not-toml"],
    )
    def test_bad_mapping_is_refused(self, tmp_path: Path, content: str, match: str) -> None:
        """A mapping with a mistake is refused with a message naming it."""
        from kerma.errors import ConfigurationError

        path = tmp_path / "mapping.toml"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigurationError, match=match):
            load_mapping(path)

    def test_test_message_shows_pseudonyms(self, tmp_path: Path, monkeypatch) -> None:
        """`kerma hl7 test-message` shows the values, the identity only as keyed hashes."""
        from kerma.cli.main import app
        from tests.db_fixtures import TEST_PSEUDONYM_KEY

        sample = tmp_path / "order.hl7"
        sample.write_bytes(orm("X4", ACCESSION_BEFORE))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("KERMA_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
        monkeypatch.setenv("KERMA_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
        run = CliRunner().invoke(app, ["hl7", "test-message", str(sample)])
        assert run.exit_code == 0, run.output
        assert "CTCH" in run.output and "Paediatric ward" in run.output
        assert "23.5" in run.output and "1.22" in run.output
        assert "P-" in run.output and "keyed hash" in run.output
        assert PATIENT_ID not in run.output and ACCESSION_BEFORE not in run.output


@pytest.mark.network
def test_connection_without_a_complete_frame_is_closed(ris_settings: Settings) -> None:
    """A client that sends no MLLP end block (here an HTTP request) is disconnected after
    the idle time-out instead of holding its connection for ever; nothing is stored."""
    import socket

    from kerma.api import Registry

    registry = Registry(settings=ris_settings)
    intake = OrderIntake(ris_settings, session_factory=registry.session_factory)
    server = Hl7Listener(intake, port=0, idle_timeout_s=0.5)
    server.start_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert sock.recv(100) == b""  # closed by the listener, no ACK
    finally:
        server.stop()
        registry.close()
    assert _rows(ris_settings, "select count(*) from ris_message") == [(0,)]


@pytest.mark.network
class TestTls:
    def test_order_over_tls_is_acknowledged(self, tmp_path: Path) -> None:
        """MLLP over TLS: the test CA's client gets AA; a plain-TCP client gets no ACK."""
        import ssl

        from kerma.api import Registry
        from kerma.ris.mllp import build_ssl_context
        from tests.net.test_tls import SERVER_NAME, make_pki

        pki = make_pki(tmp_path / "pki")
        settings = make_settings(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
        registry = Registry(settings=settings)
        intake = OrderIntake(settings, session_factory=registry.session_factory)
        server = Hl7Listener(
            intake, port=0, ssl_context=build_ssl_context(pki.server_cert, pki.server_key)
        )
        server.start_in_thread()
        try:
            context = ssl.create_default_context(cafile=str(pki.ca_cert))
            (ack,) = send(server.port, [orm("T1", "ACC-TLS")], host=SERVER_NAME, ssl=context)
            assert ack_fields(ack)["MSA"][1:3] == ["AA", "T1"]
            with pytest.raises((ConnectionError, OSError, EOFError)):
                send(server.port, [orm("T2", "ACC-PLAIN")])
        finally:
            server.stop()
            registry.close()
        assert _rows(settings, "select message_control_id from ris_message") == [("T1",)]


@needs_shared
class TestMatchingRules:
    def test_device_weight_kept_and_patient_day_update_fills_height(self, tmp_path: Path) -> None:
        """A device's weight stays (source device); an ADT height fills by patient and date."""
        import pydicom

        from kerma.api import Registry
        from tests.ris.helpers import SOURCE_RDSR

        settings = make_settings(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
        ds = pydicom.dcmread(SOURCE_RDSR)  # weight 87 kg, height 1.86 m; accession ACC12345601
        del ds.PatientSize
        path = tmp_path / "rdsr.dcm"
        ds.save_as(path)
        registry = Registry(settings=settings)
        try:
            assert registry.import_paths([path]).n_imported == 1
            intake = OrderIntake(settings, session_factory=registry.session_factory)
            order = orm("M1", "ACC12345601", weight="80", height=None, date="19970101")
            order = order.replace(f"PID|1||{PATIENT_ID}^".encode(), b"PID|1||123456^")
            assert intake.receive_hl7(order).ack_code == "AA"
            adt = hl7_message(
                msh("ADT^A08", "M2").replace("20241101120000", "19970101083000"),
                "PID|1||123456^^^HOSP^MR",
                "OBX|1|NM|8302-2^Body height^LN||71|[in_i]",
            )
            receipt = intake.receive_hl7(adt)
            assert receipt.ack_code == "AA"
            assert len(receipt.studies_updated) == 1
        finally:
            registry.close()
        ((weight, weight_source, size, size_source, code),) = _rows(
            settings,
            "select patient_weight_kg, patient_weight_source, patient_size_m, "
            "patient_size_source, requested_procedure_code from study",
        )
        assert (weight, weight_source) == (87.0, "device")  # not a placeholder: kept
        assert size == pytest.approx(71 * 0.0254)
        assert size_source == "ris"
        assert code == "CTCH"
        assert _rows(
            settings,
            "select patient_weight_kg from ris_order where accession_pseudonym is not null",
        ) == [(80.0,)]


class TestDamagedMessages:
    def test_damaged_messages_refused_with_reason_and_never_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """3,000 seeded mutations of an order: each parses or is a MessageError, no value logged.

        python-hl7 logs field values when it cannot unescape them; those loggers are off.
        """
        import random

        from kerma.errors import MessageError

        mapping = load_mapping()
        base = orm("F1", ACCESSION_BEFORE)
        rng = random.Random(18)
        outcomes = {"parsed": 0, "refused": 0}
        with caplog.at_level(logging.DEBUG):
            for _ in range(3000):
                data = bytearray(base)
                for _ in range(rng.randint(1, 8)):
                    op, pos = rng.random(), rng.randrange(len(data))
                    if op < 0.4:
                        data[pos] = rng.choice(b"|^~\\&\r0123456789AZ \x00\xff")
                    elif op < 0.7:
                        del data[pos : pos + rng.randint(1, 20)]
                    else:
                        data[pos:pos] = bytes(rng.choice(b"|^~\\&\r") for _ in range(5))
                try:
                    parse_message(bytes(data), mapping)
                    outcomes["parsed"] += 1
                except MessageError as exc:
                    assert exc.ack_code in ("AE", "AR")
                    assert PATIENT_ID not in str(exc) and ACCESSION_BEFORE not in str(exc)
                    outcomes["refused"] += 1
        assert outcomes["parsed"] > 0 and outcomes["refused"] > 0
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "ZQXPID" not in logged and "ZQXACC" not in logged

"""HL7 FHIR R4 Radiation Dose Summary of one study of each kind (issue #14 item 2).

The Bundles are parsed with the FHIR R4 (4.0.1) models of ``fhir.resources`` 5.1.1:
the last release whose default models are R4 (6.x ships R4B 4.3.0, 7.x/8.x R5 with R4B
and STU3 sub-packages, none R4), and which refuses a missing required element, a wrong
type and an unknown key. The profile's required elements are checked by walking
:data:`REQUIRED_ELEMENTS`, derived from the guide's FSH.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from tests.conftest import DICOM_DIR
from tests.db_fixtures import BACKENDS, fresh_database, make_settings

fhir_bundle = pytest.importorskip("fhir.resources.bundle")
import fhir.resources as fhir_resources  # noqa: E402

#: One study of each kind: file, modality family, then the components expected
#: (DCM code -> (value, UCUM unit)), hand-converted from ../shared/dicom/expected/*.json
#: (Gy -> mGy x1000; Gy.m2 -> mGy.cm2 x1e7).
CASES: dict[str, tuple[str, dict[str, tuple[float, str]]]] = {
    "CT": ("CT-RDSR-Siemens_Flash-TAP-SS.dcm", {"113813": (724.52, "mGy.cm")}),
    "RF": (
        "RF-RDSR-Philips_Allura.dcm",
        {
            "113725": (4.27128035068, "mGy"),  # 0.00427128035068 Gy
            "113722": (1535.6864017, "mGy.cm2"),  # 0.00015356864017 Gy.m2
            "113730": (13.0, "s"),
        },
    ),
    "XA": (
        "PSD-philips_allura_clarity_u104.dcm",
        {
            "113725": (0.70936639118, "mGy"),  # plane A 0.00070936639118 Gy (B: 0)
            "113722": (78.391324289, "mGy.cm2"),  # 7.8391324289e-06 Gy.m2
            "113730": (37.0, "s"),
        },
    ),
    "DX": ("DX-RDSR-Canon_CXDI.dcm", {"113722": (107.0, "mGy.cm2")}),  # 1.07e-05 Gy.m2
    "MG": ("MG-RDSR-Hologic_2D.dcm", {"111637": (1.3, "mGy")}),  # left 1.3 (right 1.28)
    "NM": ("NM-RRDSR-Siemens-Extended.dcm", {"113507": (250.0, "MBq")}),
}

#: 'Procedure reported' (DCM 121058) expected per case (ProcedureReportedTypeVS).
PROCEDURE: dict[str, str] = {
    "CT": "77477000",
    "RF": "113704",
    "XA": "113704",
    "DX": "113704",
    "MG": "71651007",
    "NM": "113502",
}

#: The elements the guide marks required (min >= 1), as (resource, dotted path, rule),
#: read from HL7/fhir-radiation-dose-summary-ig (commit 86c77fa, version 1.0.0)
#: input/fsh/RadiationDoseSummary.fsh and Modality.fsh, plus FHIR R4 Observation's
#: own 1..1 (status, code) and Device's none. ``absent-ok``: Kerma cannot know the
#: value and sends the data-absent-reason extension (documented in kerma.export.fhir).
REQUIRED_ELEMENTS: tuple[tuple[str, str, str], ...] = (
    ("Observation", "status", "present"),  # R4 base 1..1
    ("Observation", "code.coding", "73569-6"),  # code = LOINC#73569-6
    ("Observation", "partOf", "present"),  # partOf[imagingStudyRef] 1..1
    ("Observation", "partOf.identifier.type", "present"),  # ...identifier.type 1..1
    ("Observation", "partOf.identifier.value", "present"),  # ...identifier.value 1..1
    ("Observation", "subject", "present"),  # subject 1..1
    ("Observation", "focus", "present"),  # focus 1..1
    ("Observation", "effectiveDateTime", "present"),  # effective[x] 1..1 (dateTime)
    ("Observation", "valueString", "present"),  # value[x] 1..1 (string)
    ("Observation", "performer", "absent-ok"),  # performer[irradiationAuthorizingPerson] 1..1
    ("Observation", "identifier.value", "present"),  # identifier[radiationSRUID].value 1..1
    ("Device", "type", "present"),  # type 1..1 (CID 33)
    ("Device", "identifier", "present"),  # identifier[aeTitle] 1..1
    ("Device", "identifier.value", "absent-ok"),  # identifier[aeTitle].value 1..1
)


def _values(node: Any, path: str) -> list[Any]:
    """Return every value at a dotted ``path`` under ``node`` (lists flattened)."""
    current = [node]
    for part in path.split("."):
        found: list[Any] = []
        for item in current:
            value = item.get(part) if isinstance(item, dict) else None
            if isinstance(value, list):
                found.extend(value)
            elif value is not None:
                found.append(value)
        current = found
    return current


@pytest.fixture(scope="module", params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A registry (SQLite, PostgreSQL) holding one study of each kind of :data:`CASES`."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    from kerma.api import Registry

    folder = tmp_path_factory.mktemp("fhir")
    with fresh_database(request.param, folder) as url:
        reg = Registry(settings=make_settings(url, folder))
        reg.import_paths([DICOM_DIR / name for name, _ in CASES.values()])
        yield reg
        reg.close()


def _bundle(registry: Any, study_uid: str, bundle_type: str = "collection") -> dict[str, Any]:
    """Return the Bundle of one study, round-tripped through JSON."""
    from kerma.export.fhir import build_bundle
    from kerma.services.dose_summary import dose_summaries

    with registry.session(write=False) as session:
        summaries = dose_summaries(session, study_instance_uid=study_uid)
    return json.loads(json.dumps(build_bundle(summaries, bundle_type=bundle_type)))


def _study_uid(name: str) -> str:
    """Return the Study Instance UID of a shared file."""
    import pydicom

    return str(pydicom.dcmread(DICOM_DIR / name, stop_before_pixels=True).StudyInstanceUID)


def _by_type(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Return the resources of one type in a Bundle."""
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


class TestRadiationDoseSummary:
    """The Bundle of one study of each kind."""

    def test_models_are_fhir_r4(self) -> None:
        """The validating models are FHIR 4.0.1 (R4), the guide's version."""
        assert fhir_resources.__fhir_version__ == "4.0.1"

    @pytest.mark.parametrize("case", list(CASES))
    def test_bundle_parses_with_r4_models_and_has_the_doses(self, registry: Any, case: str) -> None:
        """Each study's Bundle parses as FHIR R4 and carries its dose values in UCUM."""
        name, expected = CASES[case]
        uid = _study_uid(name)
        bundle = _bundle(registry, uid)
        fhir_bundle.Bundle(bundle)  # raises FHIRValidationError on any R4 violation
        (observation,) = _by_type(bundle, "Observation")
        assert observation["meta"]["profile"] == [
            "http://hl7.org/fhir/uv/radiation-dose-summary/StructureDefinition/radiation-dose-summary"
        ]
        quantities: dict[str, list[dict[str, Any]]] = {}
        for c in observation["component"]:
            if "valueQuantity" in c:
                quantities.setdefault(c["code"]["coding"][0]["code"], []).append(c["valueQuantity"])
        for code, (value, unit) in expected.items():
            matching = [q for q in quantities[code] if q["value"] == pytest.approx(value, rel=1e-9)]
            assert matching, f"{code}: {quantities[code]}"
            for quantity in matching:
                assert (quantity["unit"], quantity["code"], quantity["system"]) == (
                    unit,
                    unit,
                    "http://unitsofmeasure.org",
                )
        procedure = next(
            c for c in observation["component"] if c["code"]["coding"][0]["code"] == "121058"
        )
        assert procedure["valueCodeableConcept"]["coding"][0]["code"] == PROCEDURE[case]
        (study,) = _by_type(bundle, "ImagingStudy")
        assert study["identifier"] == [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
        assert observation["partOf"][0]["identifier"]["value"] == f"urn:oid:{uid}"
        assert observation["partOf"][0]["reference"] == observation["focus"][0]["reference"]

    @pytest.mark.parametrize("case", list(CASES))
    def test_every_required_element_is_present(self, registry: Any, case: str) -> None:
        """Every element of :data:`REQUIRED_ELEMENTS` is filled (or marked data-absent)."""
        bundle = _bundle(registry, _study_uid(CASES[case][0]))
        for kind, path, rule in REQUIRED_ELEMENTS:
            (resource,) = _by_type(bundle, kind)
            values = _values(resource, path)
            if rule == "absent-ok" and not values:
                parent, _, leaf = path.rpartition(".")
                holders = _values(resource, parent) if parent else [resource]
                marked = [h for h in holders if "_" + leaf in h or "extension" in h]
                assert marked, f"{kind}.{path} neither present nor marked absent ({case})"
                continue
            assert values, f"{kind}.{path} missing ({case})"
            if rule not in ("present", "absent-ok"):
                assert any(v.get("code") == rule for v in values), f"{kind}.{path} ({case})"

    def test_patient_carries_only_the_pseudonym(self, registry: Any) -> None:
        """The Patient has one identifier, the registry pseudonym, and nothing else."""
        bundle = _bundle(registry, _study_uid(CASES["CT"][0]))
        (patient,) = _by_type(bundle, "Patient")
        assert set(patient) == {"resourceType", "identifier"}
        (identifier,) = patient["identifier"]
        assert identifier["system"] == "urn:kerma:patient-pseudonym"
        assert len(identifier["value"]) == 64

    def test_device_identifiers(self, registry: Any) -> None:
        """The ModalityDevice gives serial number, device UID, manufacturer and type."""
        bundle = _bundle(registry, _study_uid(CASES["CT"][0]))
        (device,) = _by_type(bundle, "Device")
        codes = {i["type"]["coding"][0]["code"]: i for i in device["identifier"]}
        assert codes["SNO"]["value"] == device["serialNumber"]
        assert codes["device-uid"]["value"].startswith("urn:oid:")
        assert device["manufacturer"] == "SIEMENS"
        assert device["type"]["coding"][0]["code"] == "CT"

    def test_unknown_study_is_not_found(self, registry: Any) -> None:
        """An unknown Study Instance UID raises NotFoundError naming it."""
        from kerma.errors import NotFoundError
        from kerma.services.dose_summary import dose_summaries

        with (
            registry.session(write=False) as session,
            pytest.raises(NotFoundError, match=r"No study with Study Instance UID 1\.2\.3\."),
        ):
            dose_summaries(session, study_instance_uid="1.2.3")


# -- the CLI and a FHIR server on loopback ---------------------------------------------------


class _FhirServer(BaseHTTPRequestHandler):
    """A minimal FHIR server: stores each POSTed Bundle, answers a transaction-response."""

    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        """Store the request; answer 200 with one 201 entry per resource."""
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, dict(self.headers), body))
        if self.path.endswith("/refuse"):
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid", "diagnostics": "no thanks"}],
            }
            data = json.dumps(outcome).encode()
            self.send_response(422)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        bundle = json.loads(body)
        answer = {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [
                {"response": {"status": "201 Created", "location": f"{e['request']['url']}/{i}"}}
                for i, e in enumerate(bundle["entry"])
            ],
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def fhir_server() -> Iterator[str]:
    """Start the loopback FHIR server; yield its base URL; stop it."""
    _FhirServer.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FhirServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cli_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite registry in ``tmp_path`` (environment set for the CLI) with the CT study."""
    from kerma.api import Registry

    settings = make_settings(f"sqlite:///{tmp_path / 'kerma.db'}", tmp_path)
    reg = Registry(settings=settings)
    reg.import_paths([DICOM_DIR / CASES["CT"][0], DICOM_DIR / CASES["NM"][0]])
    reg.close()
    monkeypatch.setenv("KERMA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("KERMA_ARCHIVE_DIR", str(settings.archive_dir))
    monkeypatch.setenv("KERMA_PSEUDONYM_KEY", str(settings.pseudonym_key))
    monkeypatch.setenv("KERMA_ARCHIVE_MODE", "original")
    return tmp_path


class TestCli:
    """``kerma export fhir``."""

    def test_out_writes_a_collection(self, cli_registry: Path) -> None:
        """--out writes a collection Bundle of both studies that parses as R4."""
        from kerma.cli.main import build_app

        out = cli_registry / "b.json"
        uids = [_study_uid(CASES["CT"][0]), _study_uid(CASES["NM"][0])]
        result = CliRunner().invoke(
            build_app("export"), ["export", "fhir", *uids, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        bundle = json.loads(out.read_text())
        fhir_bundle.Bundle(bundle)
        assert bundle["type"] == "collection"
        assert len(_by_type(bundle, "Observation")) == 2
        assert len(_by_type(bundle, "Patient")) == 2

    def test_post_sends_a_transaction(self, cli_registry: Path, fhir_server: str) -> None:
        """--post sends a transaction Bundle that arrives whole at the FHIR server."""
        from kerma.cli.main import build_app

        uid = _study_uid(CASES["CT"][0])
        result = CliRunner().invoke(
            build_app("export"), ["export", "fhir", uid, "--post", fhir_server]
        )
        assert result.exit_code == 0, result.output
        assert "HTTP 200" in result.output
        ((path, headers, body),) = _FhirServer.received
        assert path == "/fhir"
        assert headers["Content-Type"].startswith("application/fhir+json")
        bundle = json.loads(body)
        fhir_bundle.Bundle(bundle)
        assert bundle["type"] == "transaction"
        methods = {e["resource"]["resourceType"]: e["request"] for e in bundle["entry"]}
        assert methods["Observation"] == {"method": "POST", "url": "Observation"}
        assert methods["ImagingStudy"]["ifNoneExist"] == f"identifier=urn:dicom:uid|urn:oid:{uid}"
        (observation,) = _by_type(bundle, "Observation")
        dlp = next(
            c for c in observation["component"] if c["code"]["coding"][0]["code"] == "113813"
        )
        assert dlp["valueQuantity"]["value"] == 724.52

    def test_refusal_exits_1_with_the_outcome(self, cli_registry: Path, fhir_server: str) -> None:
        """A server that refuses the Bundle: exit 1 and its OperationOutcome shown."""
        from kerma.cli.main import build_app

        uid = _study_uid(CASES["CT"][0])
        result = CliRunner().invoke(
            build_app("export"), ["export", "fhir", uid, "--post", fhir_server + "/refuse"]
        )
        assert result.exit_code == 1
        assert "HTTP 422" in result.output
        assert "no thanks" in result.output

    def test_unknown_study_exits_1(self, cli_registry: Path) -> None:
        """An unknown UID is reported without a traceback."""
        from kerma.cli.main import build_app

        result = CliRunner().invoke(build_app("export"), ["export", "fhir", "1.2.3"])
        assert result.exit_code == 1
        assert "No study with Study Instance UID 1.2.3" in result.output


class TestWebRoute:
    """``GET /api/v1/studies/{uid}/fhir``."""

    def test_returns_the_bundle_and_audits(
        self, cli_registry: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The route answers the study's Bundle as application/fhir+json and audits it."""
        from fastapi.testclient import TestClient

        from kerma.config import get_settings
        from kerma.services.users import Accounts, Actor
        from kerma.web import app as app_module
        from kerma.web.routes import fhir as route

        audited: list[tuple[str, str]] = []
        real_audit = route.audit

        def spy(req: object, who: object, action: str, target: str, detail: object) -> None:
            audited.append((action, target))
            real_audit(req, who, action, target, detail)

        monkeypatch.setattr(route, "audit", spy)
        settings = get_settings()
        accounts = Accounts(settings)
        try:
            _info, token = accounts.add_token("fhir-test", "physicist", Actor("test", "cli"))
        finally:
            accounts.close()
        app = app_module.create_app(settings)
        uid = _study_uid(CASES["CT"][0])
        client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        assert TestClient(app).get(f"/api/v1/studies/{uid}/fhir").status_code == 401
        answer = client.get(f"/api/v1/studies/{uid}/fhir")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/fhir+json")
        bundle = answer.json()
        fhir_bundle.Bundle(bundle)
        (observation,) = _by_type(bundle, "Observation")
        assert observation["partOf"][0]["identifier"]["value"] == f"urn:oid:{uid}"
        assert audited == [("export.fhir", uid)]
        assert client.get("/api/v1/studies/1.2.3/fhir").status_code == 404
        app.state.registry.close()

    def test_route_requires_physicist(self) -> None:
        """The route depends on require_role (physicist)."""
        from kerma.web.routes.fhir import router

        (api_route,) = router.routes
        names = [d.call.__qualname__ for d in api_route.dependant.dependencies]
        assert any("require_role" in n for n in names)


class TestAeTitle:
    """The ModalityDevice's AE title comes from how the object arrived."""

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("C-STORE from CT01 at 10.1.2.3", "CT01"),  # kerma listen (net.handlers)
            ("C-GET from PACS at 10.1.2.3:104", "PACS"),  # kerma pull --get
            ("C-STORE from ? at 10.1.2.3", None),  # pynetdicom did not tell
            ("CT-RDSR-Siemens_Flash-TAP-SS.dcm", None),  # a file import
            (None, None),
        ],
        ids=["c-store", "c-get", "unknown-ae", "file", "none"],
    )
    def test_calling_ae_title(self, source: str | None, expected: str | None) -> None:
        """The calling AE title is read from the recorded origin, else None."""
        from kerma.services.dose_summary import calling_ae_title

        assert calling_ae_title(source) == expected


@pytest.mark.network
class TestReceivedOverDicom:
    """A study received by ``kerma listen`` carries the sender's AE title."""

    def test_device_ae_title_is_the_calling_ae(self, tmp_path: Path) -> None:
        """A C-STORE from AE CT01 gives Device.identifier[aeTitle] = CT01."""
        if not DICOM_DIR.is_dir():
            pytest.skip("../shared/dicom is not beside the repository")
        import pydicom
        from pynetdicom import AE

        from kerma.api import Registry
        from tests.net.conftest import KermaListener

        name = CASES["CT"][0]
        ds = pydicom.dcmread(DICOM_DIR / name)
        scp = KermaListener(tmp_path / "kerma")
        scp.start()
        try:
            ae = AE(ae_title="CT01")
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.aet)
            assert assoc.is_established
            status = assoc.send_c_store(ds)
            assoc.release()
            assert status.Status == 0x0000
            scp.wait_drained()
        finally:
            scp.terminate()
            scp.reap_orphans()
        with Registry(settings=scp.settings) as registry:
            bundle = _bundle(registry, str(ds.StudyInstanceUID))
        fhir_bundle.Bundle(bundle)
        (device,) = _by_type(bundle, "Device")
        ae_ids = [
            i
            for i in device["identifier"]
            if i["type"]["coding"][0]["code"] == "application-entity"
        ]
        assert ae_ids[0]["value"] == "CT01"

"""Every field case of ``../shared/cases`` (C24-C34) gives its expected result.

One test per case on the JSON of ``kerma inspect --format json`` (the EXTRACTION.md
contract), and, where the case states registry expectations other than per-plane study
totals, one on the events and administrations a fresh SQLite registry counts after
``kerma.Registry.import_paths``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kerma.api import Registry
from kerma.cli.main import app
from tests.conftest import CASES_DIR, load_case
from tests.db_fixtures import make_settings

pytestmark = pytest.mark.skipif(not CASES_DIR.is_dir(), reason="../shared/cases is absent")

#: Cases with one file: (case stem, file).
NEW_CASES = (
    "C24-nm-image-activity-unit-by-iod",
    "C26-dx-siemens-filtertype-cu-only",
    "C27-dx-protocol-outside-protocol-name",
    "C29-dx-fd-wrong-length",
    "C30-xa-biplane-plane-a-b",
    "C31-nm-rrdsr-rb82-rest-stress-same-activity",
    "C32-rf-pulse-level-values",
    "C33-mg-rdsr-laterality-in-target-region",
    "C34-dx-rdsr-biplanar-radiography",
)


def inspect_json(*paths: Path) -> list[dict[str, Any]]:
    """Return the records ``kerma inspect --format json`` prints for ``paths``."""
    result = CliRunner().invoke(app, ["inspect", "--format", "json", *map(str, paths)])
    assert result.exit_code == 0, result.output
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records


def assert_value(actual: Any, expected: Any, where: str) -> None:
    """Assert one expected value: numbers to 1e-9 relative, ``{"any_of": [...]}`` choices."""
    if isinstance(expected, dict) and "any_of" in expected:
        choices = expected["any_of"]
        assert any(_equal(actual, c) for c in choices), f"{where}: {actual!r} not in {choices}"
        return
    assert _equal(actual, expected), f"{where}: {actual!r} != {expected!r}"


def _equal(actual: Any, expected: Any) -> bool:
    """Return whether ``actual`` equals ``expected`` (floats approximately)."""
    if isinstance(expected, float) and isinstance(actual, int | float):
        return actual == pytest.approx(expected, rel=1e-9, abs=1e-12)
    return bool(actual == expected)


def assert_fields(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Assert every expected field of ``actual``."""
    for field, value in expected.items():
        assert_value(actual.get(field), value, f"{where}.{field}")


#: Expected keys that are about the whole record, not one event.
RECORD_KEYS = frozenset(
    {
        "kind",
        "modality",
        "n_events",
        "n_administrations",
        "events",
        "administrations",
        "planes",
        "event_planes",
        "accumulated",
        "accumulated_agd_mgy",
        "registry",
        "warning",
    }
)


def check_record(record: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Check one inspect record against the ``expected`` of a case (or of one of its files)."""
    assert record["status"] == "ok", record.get("reject_reason")
    events = record["events"]
    if "kind" in expected:
        assert record["kind"] == expected["kind"], where
    if "modality" in expected:
        assert record["study"]["modality"] == expected["modality"], where
    for key in ("n_events", "n_administrations"):
        if key in expected:
            assert len(events) == expected[key], f"{where}: {key}"
    for key in ("events", "administrations"):
        for n, wanted in enumerate(expected.get(key, [])):
            assert_fields(events[n], wanted, f"{where}.{key}[{n}]")
    if "planes" in expected:
        planes = record["accumulated"]["planes"]
        assert len(planes) == len(expected["planes"]), where
        for n, wanted in enumerate(expected["planes"]):
            assert_fields(planes[n], wanted, f"{where}.planes[{n}]")
    if "event_planes" in expected:
        assert [e.get("acquisition_plane") for e in events] == expected["event_planes"], where
    if "accumulated" in expected:
        assert_fields(record["accumulated"], expected["accumulated"], f"{where}.accumulated")
    if "accumulated_agd_mgy" in expected:
        agd = expected["accumulated_agd_mgy"]
        accumulated = record["accumulated"]
        for side in ("left", "right", "both"):
            if side in agd:
                assert_value(accumulated[f"agd_total_{side}_mgy"], agd[side], f"{where}.{side}")
    if "warning" in expected:
        assert any(expected["warning"] in w for w in record["warnings"]), (
            f"{where}: no warning {expected['warning']!r} in {record['warnings']}"
        )
    event_fields = {k: v for k, v in expected.items() if k not in RECORD_KEYS}
    if event_fields:
        assert len(events) == 1, where
        assert_fields(events[0], event_fields, f"{where}.events[0]")


def case_files(case: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """Return each file of a case with its expectation (``a``, ``b``... or the whole)."""
    files = [CASES_DIR / name for name in case["files"]]
    expected = case["expected"]
    if len(files) == 1:
        return [(files[0], expected)]
    return [(path, expected[path.stem.rsplit("-", 1)[1]]) for path in files]


class TestInspectCases:
    """``kerma inspect`` gives each case's expected record."""

    @pytest.mark.parametrize("stem", NEW_CASES)
    def test_case_gives_expected_record(self, stem: str) -> None:
        """Each file of the case: kind, modality, events, planes and warnings as expected."""
        case = load_case(stem)
        pairs = case_files(case)
        records = inspect_json(*(path for path, _ in pairs))
        for (path, expected), record in zip(pairs, records, strict=True):
            check_record(record, expected, path.name)

    def test_c24_nm_activity_not_keyed_on_manufacturer(self) -> None:
        """C24: a GE NM camera's 555 is 555 MBq, an NM image holding Bq is converted."""
        records = inspect_json(*sorted(CASES_DIR.glob("C24-*.dcm")))
        activities = [r["events"][0]["administered_activity_mbq"] for r in records]
        assert activities == [555.0, 370.0, 740.0]
        assert records[0]["warnings"] == [] and records[1]["warnings"] == []
        assert any("too large to be MBq" in w for w in records[2]["warnings"])

    def test_c26_filter_term_not_stored_as_material(self) -> None:
        """C26: 'CU_0.1_MM' gives copper 0.1 mm, never the term as a material name."""
        (record,) = inspect_json(CASES_DIR / "C26-dx-siemens-filtertype-cu-only.dcm")
        event = record["events"][0]
        assert "CU_0.1_MM" not in str(event.get("xray_filter_material"))
        assert any("filter read from Siemens Filter Type term" in w for w in record["warnings"])

    def test_c27_fallbacks_are_warned(self) -> None:
        """C27: each file says which attribute the protocol came from."""
        records = inspect_json(*sorted(CASES_DIR.glob("C27-*.dcm")))
        sources = ["Performed Protocol Code Sequence", "Image Comments"]
        for record, source in zip(records, sources, strict=True):
            assert any("Protocol Name absent" in w and source in w for w in record["warnings"]), (
                record["warnings"]
            )


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Any:
    """A :class:`kerma.Registry` on a fresh SQLite file."""
    reg = Registry(settings=make_settings(f"sqlite:///{tmp_path / 'cases.db'}", tmp_path))
    yield reg
    reg.close()


class TestRegistryCases:
    """After import into a fresh registry, the counted events are the case's."""

    def test_c30_biplane_xa_counts_both_planes(self, fresh_registry: Registry) -> None:
        """C30: 4 events on plane A and B counted (simultaneous A/B not merged), XA."""
        case = load_case("C30-xa-biplane-plane-a-b")
        fresh_registry.import_paths([CASES_DIR / f for f in case["files"]])
        events = fresh_registry.events()
        assert len(events) == case["expected"]["registry"]["n_counted_events"]
        assert set(events["modality"]) == {"XA"}
        assert sorted(events["acquisition_plane"]) == ["Plane A", "Plane A", "Plane B", "Plane B"]
        assert events["dap_gym2"].sum() == pytest.approx(
            case["expected"]["registry"]["study_dap_total_gym2"]
        )

    def test_c34_biplanar_radiography_counts_both_planes(self, fresh_registry: Registry) -> None:
        """C34: two simultaneous DX events on plane A and B both count; modality DX."""
        case = load_case("C34-dx-rdsr-biplanar-radiography")
        fresh_registry.import_paths([CASES_DIR / f for f in case["files"]])
        events = fresh_registry.events()
        assert len(events) == case["expected"]["registry"]["n_counted_events"]
        assert set(events["modality"]) == {"DX"}
        assert events["dap_gym2"].sum() == pytest.approx(
            case["expected"]["registry"]["study_dap_total_gym2"]
        )

    def test_c31_rest_and_stress_count_twice(self, fresh_registry: Registry) -> None:
        """C31: two Rb-82 administrations of 1110 MBq each count twice (2220 MBq)."""
        case = load_case("C31-nm-rrdsr-rb82-rest-stress-same-activity")
        fresh_registry.import_paths([CASES_DIR / f for f in case["files"]])
        events = fresh_registry.events()
        wanted = case["expected"]["registry"]
        assert len(events) == wanted["n_counted_administrations"]
        assert events["administered_activity_mbq"].sum() == pytest.approx(
            wanted["study_activity_total_mbq"]
        )

    def test_c31_reimport_counts_nothing_new(self, fresh_registry: Registry) -> None:
        """Importing C31 twice leaves the two administrations counted once each."""
        case = load_case("C31-nm-rrdsr-rb82-rest-stress-same-activity")
        paths = [CASES_DIR / f for f in case["files"]]
        fresh_registry.import_paths(paths)
        fresh_registry.import_paths(paths)
        assert len(fresh_registry.events()) == 2

    def test_c24_activities_stored_in_mbq(self, fresh_registry: Registry) -> None:
        """C24: the three images store 555, 370 and 740 MBq."""
        fresh_registry.import_paths(sorted(CASES_DIR.glob("C24-*.dcm")))
        activities = sorted(fresh_registry.events()["administered_activity_mbq"])
        assert activities == [370.0, 555.0, 740.0]

"""Write a realistic synthetic set of DICOM radiation dose reports (demo and load tests).

Each study becomes one X-Ray Radiation Dose SR (PS3.3 A.35.8) written with pydicom:

- CT (PS3.16 TID 10011 with 10012 accumulated, 10013 acquisition, 10014 X-ray source):
  a localiser ('Constant Angle Acquisition') then one to three 'Spiral Acquisition' or
  'Sequenced Acquisition' events with 'Mean CTDIvol' (mGy), 'DLP' (mGy.cm, CTDIvol x
  scanning length), 'CTDIw Phantom Type', kVp, tube current (mA), pitch factor,
  scanning length (mm) and exposure time (s);
- fluoroscopy (TID 10001 with 10002/10004 accumulated fluoro and acquisition totals and
  10003 events): fluoroscopy and acquisition events with 'Dose Area Product' (Gy.m2),
  'Dose (RP)' (Gy), kVp, tube current, pulse rate and width, copper and aluminium
  filters, positioner angles and distances;
- digital radiography (TID 10001, integrated projection radiography): one or two
  'Stationary Acquisition' events;
- screening mammography (TID 10001 with 10003 events and 10005 accumulated AGD by
  breast): four views with 'Average Glandular Dose' (mGy), compression thickness,
  anode and filter materials.

Every report carries the device observer (TID 1002/1004), 'Procedure reported', the
Content Template Sequence and UCUM units. Values follow per-protocol log-normal
distributions (:mod:`kerma.demo.catalogue`), scaled by patient weight and by a room
factor (``CT3`` delivers about 45 % more dose than the other CT rooms). Each CT room
has its own protocol mix, with study descriptions that name EUCLID clinical
indications (``CT HEAD STROKE``, ``CT ABDOMEN APPENDICITIS``, ``CT KUB LOW DOSE
STONE``, ``CT CHEST LUNG CANCER STAGING`` ...). A few studies are QA phantom scans
(patient name ``QA PHANTOM``) and a few patients have no birth date (age unknown).
Names and IDs are synthetic (``DEMO^PATIENT0001``); there is no patient data.

Output is reproducible: study ``i`` is drawn from ``numpy.random.default_rng([seed, i])``
and every UID from :func:`pydicom.uid.generate_uid` with entropy sources
``(seed, i, ...)``, so the same seed gives the same values and UIDs, and a different
seed gives new UIDs. Dates lie in the 12 months before ``end_date`` (today by default;
pass it for byte-identical files). Files are written one at a time, so memory does not
grow with the number of studies.

May import ``kerma.dicom`` (for the codes pydicom lacks) and :mod:`kerma.demo`.
"""

from __future__ import annotations

import datetime as dt
from collections import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    XRayRadiationDoseSRStorage,
    generate_uid,
)

from kerma.demo.catalogue import (
    DEVICES,
    FLUORO_PROTOCOLS,
    INSTITUTION_NAME,
    MAMMO_AGD_GSD,
    MAMMO_AGD_MEDIAN_MGY,
    MAMMO_AGD_PER_MM,
    MAMMO_REFERENCE_THICKNESS_MM,
    MAMMO_STUDY_DESCRIPTION,
    MODALITY_MIX,
    QA_FRACTION,
    UNKNOWN_AGE_FRACTION,
    CTProtocol,
    DemoDevice,
    ProjectionProtocol,
    ct_protocols_for,
    devices_for,
)
from kerma.demo.sr import (
    HAS_CONCEPT_MOD,
    HAS_OBS_CONTEXT,
    HAS_PROPERTIES,
    build_code,
    build_code_item,
    build_constant,
    build_constant_num,
    build_constant_text,
    build_container,
    build_datetime,
    build_num,
    build_uidref,
    code_key,
    mark_for_fast_write,
    with_children,
)
from kerma.dicom.codes import (
    UCUM_EVENTS,
    UCUM_GY_M2,
    UCUM_MA,
    UCUM_MGY,
    UCUM_MGY_CM,
    UCUM_PULSE_PER_S,
    UCUM_XRAY_SOURCES,
)

#: Reference patient weight (kg) at which the protocol medians apply.
REFERENCE_WEIGHT_KG = 75.0

#: CTDIw per 100 mAs at 120 kV (mGy) of the 16 cm and 32 cm phantoms: gives tube current.
_NCTDIW_HEAD_MGY = 17.0
_NCTDIW_BODY_MGY = 7.5

#: Vendor names of the localiser and of tube current modulation, per CT room.
_LOCALISER_NAME = {"CT1": "Topogram", "CT2": "Scout", "CT3": "Scanogram"}
_MODULATION_NAME = {"CT1": "CARE Dose4D", "CT2": "SmartmA", "CT3": "SUREExposure 3D"}
_COLLIMATION_MM = {"CT1": (0.6, 38.4), "CT2": (0.625, 40.0), "CT3": (0.5, 40.0)}

#: QA phantom protocol: a daily constancy scan of the 16 cm CTDI phantom.
QA_PROTOCOL = CTProtocol(
    "QA CTDI phantom constancy",
    "QA Head Phantom",
    codes.SCT.Head,
    True,
    42.0,
    1.02,
    100.0,
    (1, 1),
    is_sequenced=True,
    rotation_time_s=1.0,
)

_SEQUENCED_COLLIMATION_MM = 20.0

_T = TypeVar("_T")

#: Mammography patients are numbered from here (a pool apart from the others).
_MAMMO_PATIENT_OFFSET = 5000


@dataclass
class DemoEvent:
    """The values written for one irradiation event, in Kerma's canonical units."""

    irradiation_event_uid: str
    irradiation_event_type: str  # Code Meaning written
    acquisition_protocol: str
    ctdivol_mgy: float | None = None
    dlp_mgycm: float | None = None
    scanning_length_mm: float | None = None
    pitch_factor: float | None = None
    dap_gym2: float | None = None
    dose_rp_gy: float | None = None
    kvp_kv: float | None = None
    tube_current_ma: float | None = None
    agd_mgy: float | None = None
    compression_thickness_mm: float | None = None


@dataclass
class DemoStudy:
    """One written dose report and the values it holds (for tests and load tests)."""

    path: Path
    modality: str  # CT, RF or DX
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    station_name: str
    device_observer_uid: str
    study_description: str
    study_date: str  # YYYY-MM-DD
    is_qa: bool
    events: list[DemoEvent] = field(default_factory=list)
    ct_dlp_total_mgycm: float | None = None
    dap_total_gym2: float | None = None
    dose_rp_total_gy: float | None = None
    fluoro_time_total_s: float | None = None
    agd_total_left_mgy: float | None = None
    agd_total_right_mgy: float | None = None


@dataclass(frozen=True)
class _Patient:
    """A synthetic patient (name and ID made up; nothing real)."""

    name: str
    patient_id: str
    sex: str
    birth_date: dt.date | None
    weight_kg: float | None
    size_m: float | None


# --- public API ---------------------------------------------------------------------------


def generate_demo_files(
    out_dir: Path,
    *,
    studies: int = 200,
    seed: int = 1,
    end_date: dt.date | None = None,
    progress: abc.Callable[[DemoStudy], None] | None = None,
) -> list[Path]:
    """Write ``studies`` synthetic dose reports into ``out_dir`` and return their paths.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into (created when missing). Files are named
        ``DEMO-<nnnnnn>-<room>.dcm``; existing files of the same name are replaced.
    studies : int, optional
        Number of studies (one dose report each). Default 200.
    seed : int, optional
        Random seed: the same seed gives the same values and UIDs. Default 1.
    end_date : datetime.date, optional
        Last possible study date; studies lie in the 12 months before it. Default today.
    progress : callable, optional
        Called with each :class:`DemoStudy` after its file is written.

    Returns
    -------
    list of pathlib.Path
        The written files, in generation order.

    Examples
    --------
    >>> import tempfile
    >>> paths = generate_demo_files(Path(tempfile.mkdtemp()), studies=3, seed=7)
    >>> len(paths)
    3
    """
    paths: list[Path] = []
    for study in iter_demo_studies(out_dir, studies=studies, seed=seed, end_date=end_date):
        paths.append(study.path)
        if progress is not None:
            progress(study)
    return paths


def iter_demo_studies(
    out_dir: Path,
    *,
    studies: int = 200,
    seed: int = 1,
    end_date: dt.date | None = None,
) -> abc.Iterator[DemoStudy]:
    """Write the demo dose reports one by one, yielding each after it is written.

    Parameters are those of :func:`generate_demo_files`. Nothing is kept between
    studies, so memory stays flat however many are generated.

    Yields
    ------
    DemoStudy
        The file written and the values it holds (CTDIvol in mGy, DLP in mGy·cm,
        DAP in Gy·m², Dose (RP) in Gy), as a reader should extract them.

    Raises
    ------
    ValueError
        When ``studies`` is negative.
    """
    if studies < 0:
        raise ValueError(f"Unable to generate demo studies: studies must be >= 0, not {studies}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    end = end_date or dt.date.today()
    pool = max(10, int(0.8 * studies))
    for index in range(studies):
        yield _write_study(out_dir, index=index, seed=seed, end_date=end, pool=pool)


def write_demo_study(
    out_dir: Path,
    index: int,
    *,
    seed: int = 1,
    end_date: dt.date | None = None,
    studies: int = 200,
) -> DemoStudy:
    """Write study ``index`` of a demo set of ``studies`` and return it.

    The same study as the ``index``-th one :func:`iter_demo_studies` yields (each study
    draws from its own random stream), so a set can be written by several processes.
    """
    end = end_date or dt.date.today()
    return _write_study(
        Path(out_dir), index=index, seed=seed, end_date=end, pool=max(10, int(0.8 * studies))
    )


def build_demo_dataset(
    index: int, *, seed: int = 1, end_date: dt.date | None = None, studies: int = 200
) -> tuple[Dataset, DemoStudy]:
    """Return study ``index`` of a demo set as a dataset (not written) and its values.

    Used by load tests that send objects over the network without files. ``path`` of the
    returned :class:`DemoStudy` is the name the file would have.
    """
    end = end_date or dt.date.today()
    return _build_study(index=index, seed=seed, end_date=end, pool=max(10, int(0.8 * studies)))


# --- one study ------------------------------------------------------------------------------


def _write_study(
    out_dir: Path, *, index: int, seed: int, end_date: dt.date, pool: int
) -> DemoStudy:
    """Build study ``index`` and write it as a DICOM Part 10 file."""
    ds, study = _build_study(index=index, seed=seed, end_date=end_date, pool=pool)
    study.path = out_dir / study.path.name
    ds.save_as(study.path, enforce_file_format=True)
    return study


def _build_study(
    *, index: int, seed: int, end_date: dt.date, pool: int
) -> tuple[Dataset, DemoStudy]:
    """Draw study ``index`` and build its dataset."""
    rng = np.random.default_rng([seed, index])
    uid = _UIDFactory(seed, index)
    modality, is_qa, device, protocol = _plan(rng)
    study_date = end_date - dt.timedelta(days=int(rng.integers(0, 365)))
    start = dt.datetime.combine(
        study_date,
        dt.time(int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60))),
    )
    if is_qa:
        patient = _Patient("QA PHANTOM", f"QA-{device.key}", "O", None, None, None)
    else:
        patient = _patient(seed, int(rng.integers(1, pool + 1)), modality)

    study = DemoStudy(
        path=Path(f"DEMO-{index + 1:06d}-{device.key}.dcm"),
        modality=modality,
        sop_class_uid=XRayRadiationDoseSRStorage,
        sop_instance_uid=uid("sop"),
        study_instance_uid=uid("study"),
        station_name=device.station_name,
        device_observer_uid=device.device_observer_uid,
        study_description=_study_description(protocol),
        study_date=study_date.isoformat(),
        is_qa=is_qa,
    )
    if isinstance(protocol, CTProtocol):
        content, template, end_time = _ct_content(rng, uid, device, protocol, patient, start, study)
    elif isinstance(protocol, ProjectionProtocol):
        content, template, end_time = _projection_content(
            rng, uid, device, protocol, patient, start, study
        )
    else:
        content, template, end_time = _mammo_content(rng, uid, start, study)
    ds = _dataset(
        device,
        patient,
        study,
        start,
        end_time,
        template,
        content,
        accession=f"DEMO{seed % 1000:03d}{index + 1:07d}",
    )
    return ds, study


class DemoPlan(NamedTuple):
    """What study ``index`` of a demo set is, without its values (:func:`plan_demo_study`)."""

    modality: str  # CT, RF, DX or MG
    is_qa: bool  # QA phantom scan
    room: str  # DemoDevice.key, e.g. "CT3"
    study_description: str


def plan_demo_study(index: int, *, seed: int = 1) -> DemoPlan:
    """Return the modality, QA flag, room and study description of study ``index``, cheaply.

    The same draws as the generator makes first, without building the report: lets
    tests and load tests pick studies of a kind (e.g. the first QA phantom study) and
    count the studies per room and exam of a demo set.
    """
    modality, is_qa, device, protocol = _plan(np.random.default_rng([seed, index]))
    return DemoPlan(modality, is_qa, device.key, _study_description(protocol))


_Protocol = CTProtocol | ProjectionProtocol | None


def _plan(rng: np.random.Generator) -> tuple[str, bool, DemoDevice, _Protocol]:
    """Draw the modality, whether the study is a QA phantom scan, the room and the protocol.

    The protocol is ``None`` for mammography (one screening protocol).
    """
    modalities = list(MODALITY_MIX)
    shares = np.array([MODALITY_MIX[m] for m in modalities])
    modality = modalities[int(rng.choice(len(modalities), p=shares / shares.sum()))]
    is_qa = bool(modality == "CT" and rng.random() < QA_FRACTION / MODALITY_MIX["CT"])
    device = _choose(rng, devices_for(modality))
    protocol: _Protocol = None
    if modality == "CT":
        if is_qa:
            protocol = QA_PROTOCOL
        else:
            options = ct_protocols_for(device.key)
            protocol = _choose(rng, options, [p.weight_in(device.key) for p in options])
    elif modality != "MG":
        protocol = _choose(rng, FLUORO_PROTOCOLS[device.key])
    return modality, is_qa, device, protocol


def _study_description(protocol: _Protocol) -> str:
    """Return the Study Description written for ``protocol`` (``None``: mammography)."""
    return MAMMO_STUDY_DESCRIPTION if protocol is None else protocol.study_description


class _UIDFactory:
    """Deterministic UIDs of one study: ``generate_uid`` seeded by (seed, index, name)."""

    def __init__(self, seed: int, index: int) -> None:
        self._sources = ["kerma-demo", str(seed), str(index)]

    def __call__(self, name: str) -> str:
        """Return the UID called ``name`` in this study."""
        return generate_uid(entropy_srcs=[*self._sources, name])


def _choose(
    rng: np.random.Generator,
    options: abc.Sequence[_T],
    weights: abc.Sequence[float] | None = None,
) -> _T:
    """Return one of ``options``, drawn with ``weights`` (default: their ``weight``)."""
    if weights is None:
        weights = [getattr(o, "weight", 1.0) for o in options]
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _patient(seed: int, number: int, modality: str) -> _Patient:
    """Return synthetic patient ``number`` (the same for every study of that patient).

    Mammography patients are a separate pool of women aged 47 to 73 (screening).
    ``UNKNOWN_AGE_FRACTION`` of patients have no birth date (age unknown).
    """
    if modality == "MG":
        number += _MAMMO_PATIENT_OFFSET
    rng = np.random.default_rng([seed, 1_000_000 + number])
    sex = "F" if rng.random() < 0.5 or modality == "MG" else "M"
    age_years = float(np.clip(rng.normal(62.0, 16.0), 18.0, 95.0))
    if modality == "MG":
        age_years = float(np.clip(rng.normal(58.0, 7.0), 47.0, 73.0))
    birth: dt.date | None = dt.date(2026, 1, 1) - dt.timedelta(days=int(age_years * 365.25))
    median_weight = 80.0 if sex == "M" else 68.0
    weight = float(np.clip(median_weight * rng.lognormal(0.0, 0.18), 40.0, 160.0))
    size = float(np.clip(rng.normal(1.76 if sex == "M" else 1.63, 0.07), 1.40, 2.05))
    if rng.random() < UNKNOWN_AGE_FRACTION:
        birth = None  # no Patient's Birth Date nor Patient's Age: age unknown
    return _Patient(
        f"DEMO^PATIENT{number:04d}",
        f"DEMO{seed % 1000:03d}{number:06d}",
        sex,
        birth,
        round(weight, 1),
        round(size, 2),
    )


def _ds(value: float, digits: int = 4) -> tuple[str, float]:
    """Return ``value`` as a Decimal String with ``digits`` significant digits, and its float."""
    text = f"{value:.{digits}g}"
    if len(text) > 16:  # pragma: no cover - guarded by the digits used
        text = f"{value:.6e}"
    return text, float(text)


def _dt(value: dt.datetime) -> str:
    """Return a DICOM DT string (to the second)."""
    return value.strftime("%Y%m%d%H%M%S")


# --- TID 10011 CT ---------------------------------------------------------------------------


def _ct_content(
    rng: np.random.Generator,
    uid: _UIDFactory,
    device: DemoDevice,
    protocol: CTProtocol,
    patient: _Patient,
    start: dt.datetime,
    study: DemoStudy,
) -> tuple[list[Dataset], str, dt.datetime]:
    """Return the TID 10011 items after the observer context, the TID and the end time."""
    size_factor = 1.0
    if not protocol.is_head_phantom and patient.weight_kg:
        size_factor = float(np.clip((patient.weight_kg / REFERENCE_WEIGHT_KG) ** 0.8, 0.6, 1.8))
    exam_ctdivol = (
        protocol.ctdivol_median_mgy
        * device.dose_factor
        * size_factor
        * rng.lognormal(0.0, np.log(protocol.ctdivol_gsd))
    )
    n_acq = int(rng.integers(protocol.acquisitions[0], protocol.acquisitions[1] + 1))
    single_mm, total_mm = _COLLIMATION_MM[device.key]
    phantom = (
        codes.DCM.IECHeadDosimetryPhantom
        if protocol.is_head_phantom
        else codes.DCM.IECBodyDosimetryPhantom
    )
    nctdiw = _NCTDIW_HEAD_MGY if protocol.is_head_phantom else _NCTDIW_BODY_MGY
    events: list[Dataset] = []
    time = start
    total_dlp = 0.0

    # localiser
    loc_length = protocol.scanning_length_median_mm * rng.uniform(1.05, 1.2) + 30.0
    loc_ctdivol = rng.uniform(0.08, 0.3) * (2.0 if protocol.is_head_phantom else 1.0)
    items, event = _ct_event(
        uid("event-0"),
        codes.DCM.ConstantAngleAcquisition,
        _LOCALISER_NAME[device.key],
        protocol,
        phantom,
        ctdivol=loc_ctdivol,
        length_mm=loc_length,
        kvp=120.0,
        ma=float(rng.uniform(20, 50)),
        max_ma=None,
        pitch=None,
        exposure_s=loc_length / 100.0,
        rotation_s=None,
        single_mm=single_mm,
        total_mm=single_mm * 6,
        modulation="NONE",
    )
    events.append(items)
    study.events.append(event)
    total_dlp += event.dlp_mgycm or 0.0
    time += dt.timedelta(seconds=float(rng.uniform(30, 90)))

    for k in range(1, n_acq + 1):
        ctdivol = exam_ctdivol * rng.uniform(0.85, 1.15)
        length = protocol.scanning_length_median_mm * rng.uniform(0.85, 1.15)
        if k > 1:
            length *= rng.uniform(0.5, 1.0)
        kvp = protocol.kvp_kv
        nctdi = nctdiw * (kvp / 120.0) ** 2.5 / 100.0  # mGy per mAs
        if protocol.is_sequenced:
            acq_type = codes.DCM.SequencedAcquisition
            pitch = None
            coll = _SEQUENCED_COLLIMATION_MM
            rotations = np.ceil(length / coll)
            exposure_s = rotations * protocol.rotation_time_s
            ma = ctdivol / nctdi / protocol.rotation_time_s
        else:
            acq_type = codes.SCT.SpiralAcquisition
            pitch = protocol.pitch_factor
            coll = total_mm
            table_speed = pitch * coll / protocol.rotation_time_s  # mm/s
            exposure_s = (length + coll) / table_speed
            ma = ctdivol / nctdi * pitch / protocol.rotation_time_s
        name = protocol.acquisition_protocol  # repeated per acquisition, as scanners do
        items, event = _ct_event(
            uid(f"event-{k}"),
            acq_type,
            name,
            protocol,
            phantom,
            ctdivol=ctdivol,
            length_mm=length,
            kvp=kvp,
            ma=ma,
            max_ma=ma * rng.uniform(1.2, 1.6),
            pitch=pitch,
            exposure_s=exposure_s,
            rotation_s=protocol.rotation_time_s,
            single_mm=single_mm if not protocol.is_sequenced else 0.625,
            total_mm=coll,
            modulation=_MODULATION_NAME[device.key],
        )
        events.append(items)
        study.events.append(event)
        total_dlp += event.dlp_mgycm or 0.0
        time += dt.timedelta(seconds=float(exposure_s + rng.uniform(20, 120)))

    dlp_text, dlp_total = _ds(total_dlp, 6)
    study.ct_dlp_total_mgycm = dlp_total
    accumulated = build_container(
        codes.DCM.CTAccumulatedDoseData,
        [
            build_num(codes.DCM.TotalNumberOfIrradiationEvents, str(len(events)), UCUM_EVENTS),
            build_num(codes.DCM.CTDoseLengthProductTotal, dlp_text, UCUM_MGY_CM),
        ],
    )
    content = [
        build_datetime(codes.DCM.StartOfXRayIrradiation, _dt(start), relationship=HAS_OBS_CONTEXT),
        build_datetime(codes.DCM.EndOfXRayIrradiation, _dt(time), relationship=HAS_OBS_CONTEXT),
        _scope_of_accumulation(study.study_instance_uid),
        accumulated,
        *events,
        build_code(codes.DCM.SourceOfDoseInformation, codes.DCM.AutomatedDataCollection),
    ]
    return content, "10011", time


def _ct_event(
    event_uid: str,
    acquisition_type: Code,
    acquisition_protocol: str,
    protocol: CTProtocol,
    phantom: Code,
    *,
    ctdivol: float,
    length_mm: float,
    kvp: float,
    ma: float,
    max_ma: float | None,
    pitch: float | None,
    exposure_s: float,
    rotation_s: float | None,
    single_mm: float,
    total_mm: float,
    modulation: str,
) -> tuple[Dataset, DemoEvent]:
    """Return one 'CT Acquisition' container (TID 10013) and the values written."""
    ctdivol_text, ctdivol_mgy = _ds(ctdivol, 4)
    length_text, length = _ds(length_mm, 4)
    dlp_text, dlp = _ds(ctdivol_mgy * length / 10.0, 5)
    kvp_text, kvp_kv = _ds(kvp, 3)
    ma_text, ma_value = _ds(ma, 3)
    params: list[Dataset] = [
        build_num(codes.DCM.ExposureTime, _ds(exposure_s, 4)[0], codes.UCUM.Second),
        build_num(codes.DCM.ScanningLength, length_text, codes.UCUM.Millimeter),
        build_constant_num(
            codes.DCM.NominalSingleCollimationWidth, _ds(single_mm)[0], codes.UCUM.Millimeter
        ),
        build_constant_num(
            codes.DCM.NominalTotalCollimationWidth, _ds(total_mm)[0], codes.UCUM.Millimeter
        ),
    ]
    if pitch is not None:
        params.append(build_num(codes.DCM.PitchFactor, _ds(pitch, 4)[0], codes.UCUM.Ratio))
    params.append(build_constant_num(codes.DCM.NumberOfXRaySources, "1", UCUM_XRAY_SOURCES))
    source: list[Dataset] = [
        build_constant_text(codes.DCM.IdentificationOfTheXRaySource, "A"),
        build_num(codes.DCM.KVP, kvp_text, codes.UCUM.Kilovolt),
        build_num(codes.DCM.MaximumXRayTubeCurrent, _ds(max_ma or ma, 3)[0], UCUM_MA),
        build_num(codes.DCM.XRayTubeCurrent, ma_text, UCUM_MA),
    ]
    if rotation_s is not None:
        source.append(
            build_constant_num(
                codes.DCM.ExposureTimePerRotation, _ds(rotation_s)[0], codes.UCUM.Second
            )
        )
    params.append(build_container(codes.DCM.CTXRaySourceParameters, source))
    dose = build_container(
        codes.DCM.CTDose,
        [
            build_num(codes.DCM.MeanCtdivol, ctdivol_text, UCUM_MGY),
            build_code(codes.DCM.CtdiwPhantomType, phantom),
            build_num(codes.DCM.DLP, dlp_text, UCUM_MGY_CM),
        ],
    )
    container = build_container(
        codes.DCM.CTAcquisition,
        [
            build_constant_text(codes.DCM.AcquisitionProtocol, acquisition_protocol),
            build_code(codes.DCM.TargetRegion, protocol.target_region),
            build_code(codes.DCM.CTAcquisitionType, acquisition_type),
            build_uidref(codes.DCM.IrradiationEventUID, event_uid),
            build_container(codes.DCM.CTAcquisitionParameters, params),
            dose,
            build_constant_text(codes.DCM.XRayModulationType, modulation),
        ],
    )
    event = DemoEvent(
        irradiation_event_uid=event_uid,
        irradiation_event_type=acquisition_type.meaning,
        acquisition_protocol=acquisition_protocol,
        ctdivol_mgy=ctdivol_mgy,
        dlp_mgycm=dlp,
        scanning_length_mm=length,
        pitch_factor=_ds(pitch, 4)[1] if pitch is not None else None,
        kvp_kv=kvp_kv,
        tube_current_ma=ma_value,
    )
    return container, event


# --- TID 10001 projection X-ray -------------------------------------------------------------


def _projection_content(
    rng: np.random.Generator,
    uid: _UIDFactory,
    device: DemoDevice,
    protocol: ProjectionProtocol,
    patient: _Patient,
    start: dt.datetime,
    study: DemoStudy,
) -> tuple[list[Dataset], str, dt.datetime]:
    """Return the TID 10001 items after the observer context, the TID and the end time."""
    size_factor = 1.0
    if patient.weight_kg:
        size_factor = float(np.clip((patient.weight_kg / REFERENCE_WEIGHT_KG) ** 1.0, 0.5, 2.0))
    total_kap = (
        protocol.kap_median_gym2
        * device.dose_factor
        * size_factor
        * rng.lognormal(0.0, np.log(protocol.kap_gsd))
    )
    is_fluoro = protocol.fluoro_events[1] > 0
    cardiac = protocol.acquisition_frame_rate_per_s > 0
    n_fluoro = (
        int(rng.integers(protocol.fluoro_events[0], protocol.fluoro_events[1] + 1))
        if is_fluoro
        else 0
    )
    n_acq = int(rng.integers(protocol.acquisition_events[0], protocol.acquisition_events[1] + 1))
    fluoro_share = (
        float(rng.uniform(0.3, 0.7)) if is_fluoro and n_acq else (1.0 if is_fluoro else 0.0)
    )
    fluoro_kaps: list[float] = (
        list(total_kap * fluoro_share * rng.dirichlet(np.full(n_fluoro, 2.0))) if n_fluoro else []
    )
    acq_kaps: list[float] = (
        list(total_kap * (1.0 - fluoro_share) * rng.dirichlet(np.full(n_acq, 2.0))) if n_acq else []
    )
    fluoro_time = (
        protocol.fluoro_time_median_s * rng.lognormal(0.0, np.log(1.8)) if n_fluoro else 0.0
    )
    durations: list[float] = (
        list(fluoro_time * rng.dirichlet(np.full(n_fluoro, 2.0))) if n_fluoro else []
    )

    rest = ["fluoro"] * max(n_fluoro - 1, 0) + ["acq"] * n_acq
    rng.shuffle(rest)
    kinds = (["fluoro"] if n_fluoro else []) + rest  # a procedure starts with fluoroscopy
    fi = ai = 0
    events: list[Dataset] = []
    totals = {
        "fluoro_dap": 0.0,
        "fluoro_rp": 0.0,
        "fluoro_s": 0.0,
        "acq_dap": 0.0,
        "acq_rp": 0.0,
        "acq_s": 0.0,
        "frames": 0,
    }
    time = start
    for k, kind in enumerate(kinds):
        if kind == "fluoro":
            kap, duration = float(fluoro_kaps[fi]), float(durations[fi])
            fi += 1
        else:
            kap, duration = float(acq_kaps[ai]), 0.0
            ai += 1
        items, event, info = _projection_event(
            rng,
            uid(f"event-{k}"),
            device,
            protocol,
            time,
            kind=kind,
            kap=kap,
            fluoro_duration_s=duration,
            cardiac=cardiac,
        )
        events.append(items)
        study.events.append(event)
        prefix = "fluoro" if kind == "fluoro" else "acq"
        totals[f"{prefix}_dap"] += event.dap_gym2 or 0.0
        totals[f"{prefix}_rp"] += event.dose_rp_gy or 0.0
        totals[f"{prefix}_s"] += info["time_s"]
        totals["frames"] += int(info["frames"]) if kind == "acq" else 0
        time += dt.timedelta(seconds=float(info["time_s"] + rng.uniform(10, 90)))

    dap_total_text, dap_total = _ds(totals["fluoro_dap"] + totals["acq_dap"], 5)
    rp_total_text, rp_total = _ds(totals["fluoro_rp"] + totals["acq_rp"], 5)
    study.dap_total_gym2 = dap_total
    study.dose_rp_total_gy = rp_total
    plane = build_code(
        codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane, relationship=HAS_CONCEPT_MOD
    )
    acc_items: list[Dataset] = [
        plane,
        build_num(codes.DCM.DoseAreaProductTotal, dap_total_text, UCUM_GY_M2),
        build_num(codes.DCM.DoseRPTotal, rp_total_text, codes.UCUM.Gy),
    ]
    if is_fluoro:
        fluoro_s_text, study.fluoro_time_total_s = _ds(totals["fluoro_s"], 5)
        acc_items += [
            build_num(
                codes.DCM.FluoroDoseAreaProductTotal, _ds(totals["fluoro_dap"], 5)[0], UCUM_GY_M2
            ),
            build_num(codes.DCM.FluoroDoseRPTotal, _ds(totals["fluoro_rp"], 5)[0], codes.UCUM.Gy),
            build_num(codes.DCM.TotalFluoroTime, fluoro_s_text, codes.UCUM.Second),
        ]
    acc_items += [
        build_num(
            codes.DCM.AcquisitionDoseAreaProductTotal, _ds(totals["acq_dap"], 5)[0], UCUM_GY_M2
        ),
        build_num(codes.DCM.AcquisitionDoseRPTotal, _ds(totals["acq_rp"], 5)[0], codes.UCUM.Gy),
        build_num(codes.DCM.TotalAcquisitionTime, _ds(totals["acq_s"], 4)[0], codes.UCUM.Second),
        build_num(
            codes.DCM.TotalNumberOfRadiographicFrames, str(totals["frames"]), codes.UCUM.NoUnits
        ),
    ]
    if is_fluoro:
        acc_items.append(
            build_code(codes.DCM.ReferencePointDefinition, codes.DCM._15cmFromIsocenterTowardSource)
        )
    content = [
        _scope_of_accumulation(study.study_instance_uid),
        build_container(codes.DCM.AccumulatedXRayDoseData, acc_items),
        *events,
        build_code(codes.DCM.SourceOfDoseInformation, codes.DCM.AutomatedDataCollection),
    ]
    return content, "10001", time


def _projection_event(
    rng: np.random.Generator,
    event_uid: str,
    device: DemoDevice,
    protocol: ProjectionProtocol,
    started: dt.datetime,
    *,
    kind: str,
    kap: float,
    fluoro_duration_s: float,
    cardiac: bool,
) -> tuple[Dataset, DemoEvent, dict[str, float]]:
    """Return one 'Irradiation Event X-Ray Data' container (TID 10003) and its values."""
    is_fluoro = kind == "fluoro"
    is_dx = device.modality == "DX"
    dap_text, dap = _ds(kap, 4)
    rp_text, rp = _ds(kap * protocol.kar_per_kap_gy_per_gym2 * rng.uniform(0.8, 1.2), 4)
    kvp_text, kvp = _ds(rng.uniform(*protocol.kvp_range_kv), 3)
    event_type = codes.SCT.Fluoroscopy if is_fluoro else codes.DCM.StationaryAcquisition
    if is_fluoro:
        name = f"{protocol.acquisition_protocol} fluoro"
        rate = protocol.pulse_rate_per_s
        pulse_width_ms = rng.uniform(4.0, 10.0)
        pulses = max(1, round(rate * fluoro_duration_s))
        ma = rng.uniform(20.0, 120.0)
        time_s = fluoro_duration_s
    elif cardiac:
        name = f"{protocol.acquisition_protocol} cine"
        rate = protocol.acquisition_frame_rate_per_s
        time_s = rng.uniform(2.0, 6.0)
        pulses = max(1, round(rate * time_s))
        pulse_width_ms = rng.uniform(5.0, 8.0)
        ma = rng.uniform(400.0, 800.0)
    else:
        name = protocol.acquisition_protocol if is_dx else f"{protocol.acquisition_protocol} spot"
        rate = 0.0
        pulses = 1
        pulse_width_ms = rng.uniform(5.0, 40.0)
        ma = rng.uniform(200.0, 500.0)
        time_s = pulse_width_ms / 1000.0
    ma_text, ma_value = _ds(ma, 3)
    items: list[Dataset] = [
        build_code(codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane, relationship=HAS_CONCEPT_MOD),
        build_datetime(codes.DCM.DatetimeStarted, _dt(started)),
        build_code(codes.DCM.IrradiationEventType, event_type),
        build_constant_text(codes.DCM.AcquisitionProtocol, name),
        build_code(codes.DCM.TargetRegion, protocol.target_region),
        build_uidref(codes.DCM.IrradiationEventUID, event_uid),
        build_num(codes.DCM.DoseAreaProduct, dap_text, UCUM_GY_M2),
        build_num(codes.DCM.DoseRP, rp_text, codes.UCUM.Gy),
    ]
    if not is_dx:
        primary = rng.uniform(-45, 45) if cardiac else rng.uniform(-5, 5)
        secondary = rng.uniform(-30, 30) if cardiac else rng.uniform(-3, 3)
        items += [
            build_num(codes.DCM.PositionerPrimaryAngle, _ds(primary, 3)[0], codes.UCUM.Degree),
            build_num(codes.DCM.PositionerSecondaryAngle, _ds(secondary, 3)[0], codes.UCUM.Degree),
        ]
    copper = float(
        rng.choice(
            protocol.copper_mm[2:]
            if is_fluoro and len(protocol.copper_mm) > 2
            else protocol.copper_mm
        )
    )
    filters = [(codes.SCT.Aluminum, 1.0)] + ([(codes.SCT.Copper, copper)] if copper > 0 else [])
    items += [_xray_filter(material, _ds(thickness, 3)[0]) for material, thickness in filters]
    if is_fluoro:
        items.append(build_code(codes.DCM.FluoroMode, codes.DCM.Pulsed))
    if rate:
        items.append(build_constant_num(codes.DCM.PulseRate, _ds(rate, 3)[0], UCUM_PULSE_PER_S))
    items += [
        build_num(codes.DCM.NumberOfPulses, str(pulses), codes.UCUM.NoUnits),
        build_num(codes.DCM.KVP, kvp_text, codes.UCUM.Kilovolt),
        build_num(codes.DCM.XRayTubeCurrent, ma_text, UCUM_MA),
        build_num(
            codes.DCM.ExposureTime, _ds(pulses * pulse_width_ms, 4)[0], codes.UCUM.Millisecond
        ),
    ]
    if rate:
        items.append(
            build_num(codes.DCM.PulseWidth, _ds(pulse_width_ms, 3)[0], codes.UCUM.Millisecond)
        )
        items.append(build_num(codes.DCM.IrradiationDuration, _ds(time_s, 4)[0], codes.UCUM.Second))
    sdd = (
        1800.0
        if is_dx and protocol.target_region == codes.SCT.Chest
        else (1150.0 if is_dx else 1100.0)
    )
    items += [
        build_constant_num(
            codes.DCM.FocalSpotSize, "0.6" if not is_dx else "1.2", codes.UCUM.Millimeter
        ),
        build_constant_num(
            codes.DCM.DistanceSourceToDetector, _ds(sdd, 4)[0], codes.UCUM.Millimeter
        ),
    ]
    if not is_dx:
        items.append(
            build_constant_num(
                codes.DCM.DistanceSourceToIsocenter,
                "765" if cardiac else "800",
                codes.UCUM.Millimeter,
            )
        )
    event = DemoEvent(
        irradiation_event_uid=event_uid,
        irradiation_event_type=event_type.meaning,
        acquisition_protocol=name,
        dap_gym2=dap,
        dose_rp_gy=rp,
        kvp_kv=kvp,
        tube_current_ma=ma_value,
    )
    info = {"time_s": float(time_s), "frames": float(pulses)}
    return build_container(codes.DCM.IrradiationEventXRayData, items), event, info


# --- TID 10001 mammography (TID 10003 events, TID 10005 accumulated AGD) ------------------

_MAMMO_VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def _mammo_content(
    rng: np.random.Generator,
    uid: _UIDFactory,
    start: dt.datetime,
    study: DemoStudy,
) -> tuple[list[Dataset], str, dt.datetime]:
    """Return the items of a four-view screening mammography report (TID 10001).

    AGD depends on the compressed breast thickness, drawn per breast.
    """
    thickness = {side: float(np.clip(rng.normal(55.0, 12.0), 20.0, 100.0)) for side in "RL"}
    breast = {"R": codes.SCT.RightBreast, "L": codes.SCT.LeftBreast}
    view_code = {"CC": codes.SCT.CranioCaudal, "MLO": codes.SCT.MedioLateralObliqueProjection}
    totals = {"R": 0.0, "L": 0.0}
    events: list[Dataset] = []
    time = start
    for k, (side, view) in enumerate(_MAMMO_VIEWS):
        t_mm = thickness[side] * (1.05 if view == "MLO" else 1.0)
        agd = (
            MAMMO_AGD_MEDIAN_MGY
            * np.exp(MAMMO_AGD_PER_MM * (t_mm - MAMMO_REFERENCE_THICKNESS_MM))
            * rng.lognormal(0.0, np.log(MAMMO_AGD_GSD))
        )
        agd_text, agd_mgy = _ds(agd, 4)
        t_text, t_value = _ds(t_mm, 3)
        kvp = float(np.clip(round(24.0 + t_mm / 8.0 + rng.uniform(-1, 1)), 25, 39))
        filter_material = codes.SCT.Rhodium if t_mm < 60 else codes.SCT.Silver
        name = f"{side} {view}"
        event_uid = uid(f"event-{k}")
        target = with_children(
            build_code(codes.DCM.TargetRegion, codes.SCT.Breast),
            [build_code(codes.SCT.Laterality, breast[side], relationship=HAS_CONCEPT_MOD)],
        )
        items = [
            build_code(
                codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane, relationship=HAS_CONCEPT_MOD
            ),
            build_datetime(codes.DCM.DatetimeStarted, _dt(time)),
            build_code(codes.DCM.IrradiationEventType, codes.DCM.StationaryAcquisition),
            build_constant_text(codes.DCM.AcquisitionProtocol, name),
            target,
            build_code(codes.DCM.ImageView, view_code[view]),
            build_uidref(codes.DCM.IrradiationEventUID, event_uid),
            build_num(codes.DCM.AverageGlandularDose, agd_text, UCUM_MGY),
            build_num(
                codes.DCM.EntranceExposureAtRP, _ds(agd * rng.uniform(3.5, 5.0), 4)[0], UCUM_MGY
            ),
            build_num(
                codes.DCM.HalfValueLayer,
                _ds(0.45 + 0.012 * (kvp - 26), 3)[0],
                codes.UCUM.Millimeter,
            ),
            build_num(codes.DCM.CompressionThickness, t_text, codes.UCUM.Millimeter),
            build_code(codes.DCM.AnodeTargetMaterial, codes.SCT.Tungsten),
            _xray_filter(filter_material, "0.05"),
            build_num(codes.DCM.KVP, _ds(kvp, 3)[0], codes.UCUM.Kilovolt),
            build_num(codes.DCM.XRayTubeCurrent, _ds(rng.uniform(100, 200), 3)[0], UCUM_MA),
            build_num(
                codes.DCM.ExposureTime, _ds(rng.uniform(800, 1800), 4)[0], codes.UCUM.Millisecond
            ),
            build_constant_num(codes.DCM.FocalSpotSize, "0.3", codes.UCUM.Millimeter),
            build_constant_num(codes.DCM.DistanceSourceToDetector, "700", codes.UCUM.Millimeter),
        ]
        events.append(build_container(codes.DCM.IrradiationEventXRayData, items))
        study.events.append(
            DemoEvent(
                irradiation_event_uid=event_uid,
                irradiation_event_type=codes.DCM.StationaryAcquisition.meaning,
                acquisition_protocol=name,
                kvp_kv=kvp,
                agd_mgy=agd_mgy,
                compression_thickness_mm=t_value,
            )
        )
        totals[side] += agd_mgy
        time += dt.timedelta(seconds=float(rng.uniform(40, 120)))
    left_text, study.agd_total_left_mgy = _ds(totals["L"], 5)
    right_text, study.agd_total_right_mgy = _ds(totals["R"], 5)
    accumulated = [
        build_code(codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane, relationship=HAS_CONCEPT_MOD),
        with_children(
            build_num(codes.DCM.AccumulatedAverageGlandularDose, left_text, UCUM_MGY),
            [build_code(codes.SCT.Laterality, codes.SCT.LeftBreast, relationship=HAS_CONCEPT_MOD)],
        ),
        with_children(
            build_num(codes.DCM.AccumulatedAverageGlandularDose, right_text, UCUM_MGY),
            [build_code(codes.SCT.Laterality, codes.SCT.RightBreast, relationship=HAS_CONCEPT_MOD)],
        ),
        build_num(codes.DCM.TotalNumberOfRadiographicFrames, str(len(events)), codes.UCUM.NoUnits),
    ]
    content = [
        _scope_of_accumulation(study.study_instance_uid),
        build_container(codes.DCM.AccumulatedXRayDoseData, accumulated),
        *events,
        build_code(codes.DCM.SourceOfDoseInformation, codes.DCM.AutomatedDataCollection),
    ]
    return content, "10001", time


# --- common ---------------------------------------------------------------------------------


def _scope_of_accumulation(study_instance_uid: str) -> Dataset:
    """Return 'Scope of Accumulation' = Study, with its Study Instance UID (TID 10011/10001)."""
    return with_children(
        build_code(codes.DCM.ScopeOfAccumulation, codes.DCM.Study, relationship=HAS_OBS_CONTEXT),
        [build_uidref(codes.DCM.StudyInstanceUID, study_instance_uid, relationship=HAS_PROPERTIES)],
    )


def _observer_context(device: DemoDevice) -> list[Dataset]:
    """Return the device observer context items (TID 1002 / TID 1004), constant per room."""
    texts = (
        (codes.DCM.DeviceObserverName, device.station_name),
        (codes.DCM.DeviceObserverManufacturer, device.manufacturer),
        (codes.DCM.DeviceObserverModelName, device.manufacturer_model_name),
        (codes.DCM.DeviceObserverSerialNumber, device.device_serial_number),
        (codes.DCM.DeviceObserverPhysicalLocationDuringObservation, device.location),
    )
    observer_uid = device.device_observer_uid
    return [
        build_code(codes.DCM.ObserverType, codes.DCM.Device, relationship=HAS_OBS_CONTEXT),
        build_constant(
            ("observer-uid", observer_uid),
            lambda: build_uidref(
                codes.DCM.DeviceObserverUID, observer_uid, relationship=HAS_OBS_CONTEXT
            ),
        ),
        *(build_constant_text(c, v, relationship=HAS_OBS_CONTEXT) for c, v in texts),
    ]


def _xray_filter(material: Code, thickness_text: str) -> Dataset:
    """Return an 'X-Ray Filters' container (TID 10003b): a flat filter of one material.

    ``thickness_text`` (mm, a Decimal String) is both the minimum and maximum thickness.
    The container is the same in every event with that filter, so it is encoded once.
    """

    def build() -> Dataset:
        return build_container(
            codes.DCM.XRayFilters,
            [
                build_code(codes.DCM.XRayFilterType, codes.DCM.FlatFilter),
                build_code(codes.DCM.XRayFilterMaterial, material),
                build_num(
                    codes.DCM.XRayFilterThicknessMinimum, thickness_text, codes.UCUM.Millimeter
                ),
                build_num(
                    codes.DCM.XRayFilterThicknessMaximum, thickness_text, codes.UCUM.Millimeter
                ),
            ],
        )

    return build_constant(("xray-filter", code_key(material), thickness_text), build)


def _dataset(
    device: DemoDevice,
    patient: _Patient,
    study: DemoStudy,
    start: dt.datetime,
    end: dt.datetime,
    template: str,
    content: list[Dataset],
    *,
    accession: str,
) -> Dataset:
    """Return the X-Ray Radiation Dose SR dataset (PS3.3 A.35.8) around ``content``."""
    procedure = {"CT": codes.SCT.ComputedTomography, "MG": codes.SCT.Mammography}.get(
        study.modality, codes.DCM.ProjectionXRay
    )
    procedure_item = build_constant(
        ("procedure-reported", code_key(procedure)),
        lambda: with_children(
            build_code(codes.DCM.ProcedureReported, procedure, relationship=HAS_CONCEPT_MOD),
            [
                build_code(
                    codes.SCT.HasIntent, codes.SCT.DiagnosticIntent, relationship=HAS_CONCEPT_MOD
                )
            ],
        ),
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(study.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(study.sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = study.sop_class_uid
    ds.SOPInstanceUID = study.sop_instance_uid
    ds.StudyDate = ds.ContentDate = start.strftime("%Y%m%d")
    ds.StudyTime = start.strftime("%H%M%S")
    ds.ContentTime = end.strftime("%H%M%S")
    ds.AccessionNumber = accession
    ds.Modality = "SR"
    ds.Manufacturer = device.manufacturer
    ds.InstitutionName = INSTITUTION_NAME
    ds.ReferringPhysicianName = ""
    ds.StationName = device.station_name
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = "Radiation Dose Report"
    ds.ManufacturerModelName = device.manufacturer_model_name
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "KERMA-DEMO"
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ds.PatientSex = patient.sex
    if patient.birth_date is not None:
        age = int((start.date() - patient.birth_date).days // 365.25)
        ds.PatientAge = f"{age:03d}Y"
    if patient.size_m is not None:
        ds.PatientSize = f"{patient.size_m:.2f}"
    if patient.weight_kg is not None:
        ds.PatientWeight = f"{patient.weight_kg:.1f}"
    ds.DeviceSerialNumber = device.device_serial_number
    ds.SoftwareVersions = device.software_versions
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study.sop_instance_uid, "series"])
    ds.StudyID = accession[-8:]
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([build_code_item(codes.DCM.XRayRadiationDoseReport)])
    ds.ContinuityOfContent = "SEPARATE"
    template_item = Dataset()
    template_item.MappingResource = "DCMR"
    template_item.TemplateIdentifier = template
    ds.ContentTemplateSequence = Sequence([template_item])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.ContentSequence = Sequence([procedure_item, *_observer_context(device), *content])
    return mark_for_fast_write(ds)


__all__ = [
    "DEVICES",
    "DemoEvent",
    "DemoPlan",
    "DemoStudy",
    "build_demo_dataset",
    "generate_demo_files",
    "iter_demo_studies",
    "plan_demo_study",
]

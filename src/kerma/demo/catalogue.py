"""The rooms and protocols of the synthetic demo department.

Three CT scanners from different vendors (one, ``CT3``, deliberately delivers about
45 % more dose than the others, so DRL comparison has something to find; each room
has its own mix of protocols, with study descriptions that name EUCLID clinical
indications such as stroke, appendicitis, renal colic and lung cancer), two
fluoroscopy rooms (a cardiac cath lab and a general fluoroscopy room), one digital
radiography room and a mammography unit. Each protocol carries the parameters of a
log-normal distribution of its main dose quantity: the median and the geometric
standard deviation (GSD). The medians are of the order of published national DRLs and
surveys (e.g. UK NDRL 2022, EU RP 180): CT head CTDIvol about 50 mGy (16 cm phantom),
chest 8 mGy, abdomen-pelvis 12 mGy (32 cm phantom); coronary angiography KAP about
30 Gy·cm² (3e-3 Gy·m²); mammography AGD about 1.3 mGy per view at 55 mm.

The study mix (:data:`MODALITY_MIX`, room and protocol weights) is sized so that the
default demo of 1,000 studies expects 35 or more studies in every room and exam that
has an EU DRL (ICRP Publication 135 asks for at least 20 patients per room and exam;
the demo's 120 mammography studies exceed its 50), while fluoroscopy, whose reports
are the largest to write and import, stays a small share.

Pure data; may import ``pydicom`` codes only.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

#: Institution written in every demo object.
INSTITUTION_NAME = "Kerma Demo Hospital"


@dataclass(frozen=True)
class DemoDevice:
    """One imaging room: equipment attributes and its TID 1004 device observer."""

    key: str
    modality: str  # CT, RF, DX, MG
    manufacturer: str
    manufacturer_model_name: str
    device_serial_number: str
    station_name: str
    software_versions: str
    location: str
    dose_factor: float = 1.0  # multiplies every protocol median (room optimisation)
    weight: float = 1.0  # share of its modality's studies, relative to the other rooms

    @property
    def device_observer_uid(self) -> str:
        """Return the room's Device Observer UID (121012), stable across runs and seeds."""
        return generate_uid(entropy_srcs=["kerma-demo-device", self.key, self.device_serial_number])


@dataclass(frozen=True)
class CTProtocol:
    """A CT protocol: a localiser then ``acquisitions`` spiral or sequenced events."""

    study_description: str
    acquisition_protocol: str
    target_region: Code
    is_head_phantom: bool  # CTDIvol of the 16 cm (head) or 32 cm (body) phantom
    ctdivol_median_mgy: float
    ctdivol_gsd: float
    scanning_length_median_mm: float
    acquisitions: tuple[int, int]  # min, max number of spiral/sequenced events
    kvp_kv: float = 120.0
    is_sequenced: bool = False
    pitch_factor: float = 0.984
    rotation_time_s: float = 0.5
    rooms: tuple[tuple[str, float], ...] = ()  # (CT room, relative frequency in that room)

    def weight_in(self, room: str) -> float:
        """Return the protocol's relative frequency in CT room ``room`` (0: not done there)."""
        return dict(self.rooms).get(room, 0.0)


@dataclass(frozen=True)
class ProjectionProtocol:
    """A fluoroscopy or radiography protocol: total KAP and how it splits into events."""

    study_description: str
    acquisition_protocol: str
    target_region: Code
    kap_median_gym2: float  # total dose area product of the study
    kap_gsd: float
    fluoro_time_median_s: float  # 0 for radiography
    fluoro_events: tuple[int, int]
    acquisition_events: tuple[int, int]
    kar_per_kap_gy_per_gym2: float  # Dose (RP) / KAP: Ka,r in Gy per Gy·m²
    pulse_rate_per_s: float = 7.5
    acquisition_frame_rate_per_s: float = 0.0  # 0: single-frame acquisitions (spot, DX)
    kvp_range_kv: tuple[float, float] = (70.0, 90.0)
    copper_mm: tuple[float, ...] = (0.1, 0.2, 0.3, 0.6, 0.9)
    weight: float = 1.0  # relative frequency in its room (expected studies in 1,000)


DEVICES: tuple[DemoDevice, ...] = (
    DemoDevice(
        "CT1",
        "CT",
        "SIEMENS",
        "SOMATOM Definition Edge",
        "83412",
        "CTAWP83412",
        "syngo CT VB20A",
        "CT room 1, main building",
        weight=0.35,
    ),
    DemoDevice(
        "CT2",
        "CT",
        "GE MEDICAL SYSTEMS",
        "Revolution CT",
        "RCT20571",
        "GECT2",
        "revo_ct_21a.41",
        "CT room 2, emergency department",
        weight=0.36,
    ),
    DemoDevice(
        "CT3",
        "CT",
        "CANON_MEC",
        "Aquilion Prime SP",
        "5EA1932",
        "CANONCT3",
        "V10.12",
        "CT room 3, acute and outpatient imaging",
        dose_factor=1.45,
        weight=0.29,
    ),
    DemoDevice(
        "CATHLAB1",
        "RF",
        "Philips",
        "Azurion 7 M20",
        "722079",
        "CATHLAB1",
        "R2.2.5",
        "Cardiac cath lab 1",
        weight=0.62,
    ),
    DemoDevice(
        "FLUORO2",
        "RF",
        "SIEMENS",
        "Luminos dRF Max",
        "12345",
        "FLUORO2",
        "VF10C",
        "Fluoroscopy room 2",
        weight=0.38,
    ),
    DemoDevice(
        "MAMMO1",
        "MG",
        "HOLOGIC, Inc.",
        "Selenia Dimensions",
        "SDM20331",
        "MAMMO1",
        "1.11.2.17",
        "Breast screening unit",
    ),
    DemoDevice(
        "DXROOM1",
        "DX",
        "CARESTREAM HEALTH",
        "DRX-Evolution Plus",
        "DRXE8871",
        "DXROOM1",
        "5.7.412",
        "X-ray room 1",
    ),
)

#: CT protocols. Study descriptions name the clinical indication where a department
#: would (``"CT HEAD STROKE"``, ``"CT ABDOMEN APPENDICITIS"``, ``"CT KUB LOW DOSE
#: STONE"``, ``"CT CHEST LUNG CANCER STAGING"``, ...), so the default exam rules map them
#: to EUCLID clinical-indication exams; routine studies keep an anatomical description.
#: ``rooms`` gives the CT rooms that perform the protocol with its relative frequency
#: there, written as the expected number of studies in a default demo of 1,000 studies
#: (520 CT studies, 20 of them QA phantom scans): CT2 (emergency department) does the
#: strokes, appendicitis, renal colic, spine trauma and pulmonary embolism; CT1 (main
#: building) oncology, sinuses and routine work; CT3 a mix. Every room and exam that has
#: an EU DRL expects 35 to 40 studies, so each reaches the ICRP 135 minimum sample of
#: 20 in a default demo. Medians sit below the EU DRLs (EUCLID, EC RP 195) for CT1 and
#: CT2, so that CT3's factor 1.45 puts it above them: stroke 44 mGy x 14.5 cm, DRL
#: 48 mGy / 807 mGy·cm; appendicitis 9 mGy x 44 cm, DRL 9 mGy / 498 mGy·cm; lung cancer
#: 6.5 mGy x 32 cm, DRL 8 mGy / 348 mGy·cm; pulmonary embolism 6.5 mGy x 30 cm, DRL
#: 9 mGy / 307 mGy·cm; colic (low-dose KUB) 4.5 mGy x 40 cm, DRL 436 mGy·cm (body
#: CTDIvol grows with patient weight, so room medians sit above the protocol's).
CT_PROTOCOLS: tuple[CTProtocol, ...] = (
    CTProtocol(
        "CT Head",
        "Routine Head",
        codes.SCT.Head,
        True,
        50.0,
        1.25,
        150.0,
        (1, 1),
        is_sequenced=True,
        rotation_time_s=1.0,
        rooms=(("CT1", 27.0),),
    ),
    CTProtocol(
        "CT HEAD STROKE",
        "Stroke Head",
        codes.SCT.Head,
        True,
        44.0,
        1.2,
        145.0,
        (1, 1),
        is_sequenced=True,
        rotation_time_s=1.0,
        rooms=(("CT2", 40.0), ("CT3", 38.0)),
    ),
    CTProtocol(
        "CT Chest",
        "Thorax Routine",
        codes.SCT.Chest,
        False,
        8.0,
        1.45,
        320.0,
        (1, 1),
        kvp_kv=110.0,
        rooms=(("CT1", 20.0),),
    ),
    CTProtocol(
        "CT CHEST LUNG CANCER STAGING",
        "Thorax Staging",
        codes.SCT.Chest,
        False,
        6.5,
        1.35,
        320.0,
        (1, 1),
        kvp_kv=110.0,
        rooms=(("CT1", 38.0), ("CT3", 37.0)),
    ),
    CTProtocol(
        "CT Abdomen-Pelvis",
        "Abdomen Pelvis",
        codes.SCT.AbdomenAndPelvis,
        False,
        12.0,
        1.45,
        430.0,
        (1, 2),
        rooms=(("CT1", 20.0),),
    ),
    CTProtocol(
        "CT ABDOMEN APPENDICITIS",
        "Abdomen Pelvis",
        codes.SCT.AbdomenAndPelvis,
        False,
        9.0,
        1.3,
        440.0,
        (1, 1),
        rooms=(("CT2", 35.0), ("CT3", 35.0)),
    ),
    CTProtocol(
        "CT KUB LOW DOSE STONE",
        "Low Dose KUB",
        codes.SCT.AbdomenAndPelvis,
        False,
        4.5,
        1.35,
        400.0,
        (1, 1),
        rooms=(("CT2", 35.0),),
    ),
    CTProtocol(
        "CT Chest-Abdomen-Pelvis",
        "Chest Abdomen Pelvis",
        codes.SCT.ChestAbdomenAndPelvis,
        False,
        10.0,
        1.45,
        650.0,
        (1, 3),
        rooms=(("CT1", 35.0),),
    ),
    CTProtocol(
        "CT Pulmonary Angiogram",
        "CTPA",
        codes.SCT.Chest,
        False,
        6.5,
        1.35,
        300.0,
        (1, 1),
        kvp_kv=100.0,
        pitch_factor=1.2,
        rotation_time_s=0.33,
        rooms=(("CT2", 35.0), ("CT3", 35.0)),
    ),
    CTProtocol(
        "CT C-SPINE TRAUMA",
        "C-Spine Trauma",
        codes.SCT.CervicalSpine,
        False,
        14.0,
        1.3,
        200.0,
        (1, 1),
        rooms=(("CT2", 35.0),),
    ),
    CTProtocol(
        "CT SINUSES CHRONIC SINUSITIS",
        "Sinus",
        codes.SCT.ParanasalSinus,
        True,
        10.0,
        1.3,
        100.0,
        (1, 1),
        rooms=(("CT1", 35.0),),
    ),
)


def ct_protocols_for(room: str) -> tuple[CTProtocol, ...]:
    """Return the CT protocols performed in CT room ``room`` (e.g. ``"CT2"``)."""
    return tuple(p for p in CT_PROTOCOLS if p.weight_in(room) > 0)


#: Fluoroscopy and radiography protocols per room; ``weight`` is written as the expected
#: number of studies in a default demo of 1,000 (cath lab 87: coronary angiography 50
#: and PCI 37, both with EU DRLs; fluoroscopy room 53; radiography room 220).
FLUORO_PROTOCOLS: dict[str, tuple[ProjectionProtocol, ...]] = {
    "CATHLAB1": (
        ProjectionProtocol(
            "Coronary angiography",
            "Coronary",
            codes.SCT.Heart,
            3.0e-3,
            1.8,
            240.0,
            (4, 12),
            (6, 12),
            kar_per_kap_gy_per_gym2=120.0,
            pulse_rate_per_s=15.0,
            acquisition_frame_rate_per_s=15.0,
            weight=50.0,
        ),
        ProjectionProtocol(
            "Percutaneous coronary intervention",
            "PCI",
            codes.SCT.Heart,
            6.5e-3,
            1.9,
            720.0,
            (8, 20),
            (8, 18),
            kar_per_kap_gy_per_gym2=130.0,
            pulse_rate_per_s=15.0,
            acquisition_frame_rate_per_s=15.0,
            weight=37.0,
        ),
    ),
    "FLUORO2": (
        ProjectionProtocol(
            "Barium swallow",
            "Oesophagus",
            codes.SCT.Esophagus,
            9.0e-4,
            1.7,
            150.0,
            (3, 8),
            (2, 8),
            kar_per_kap_gy_per_gym2=60.0,
            weight=23.0,
        ),
        ProjectionProtocol(
            "ERCP",
            "ERCP",
            codes.SCT.BiliaryTract,
            1.5e-3,
            1.9,
            300.0,
            (4, 12),
            (2, 6),
            kar_per_kap_gy_per_gym2=70.0,
            weight=18.0,
        ),
        ProjectionProtocol(
            "Hysterosalpingogram",
            "HSG",
            codes.SCT.Uterus,
            2.5e-4,
            1.8,
            40.0,
            (1, 4),
            (1, 4),
            kar_per_kap_gy_per_gym2=60.0,
            weight=12.0,
        ),
    ),
    "DXROOM1": (
        ProjectionProtocol(
            "Chest PA",
            "Chest PA",
            codes.SCT.Chest,
            1.0e-5,
            1.5,
            0.0,
            (0, 0),
            (1, 1),
            kar_per_kap_gy_per_gym2=15.0,
            kvp_range_kv=(110.0, 125.0),
            copper_mm=(0.1, 0.2),
            weight=132.0,
        ),
        ProjectionProtocol(
            "Abdomen AP",
            "Abdomen AP",
            codes.SCT.Abdomen,
            1.5e-4,
            1.6,
            0.0,
            (0, 0),
            (1, 1),
            kar_per_kap_gy_per_gym2=25.0,
            kvp_range_kv=(75.0, 85.0),
            copper_mm=(0.0, 0.1),
            weight=44.0,
        ),
        ProjectionProtocol(
            "Lumbar spine AP and lateral",
            "L-spine",
            codes.SCT.LumbarSpine,
            1.0e-4,
            1.6,
            0.0,
            (0, 0),
            (2, 2),
            kar_per_kap_gy_per_gym2=30.0,
            kvp_range_kv=(75.0, 95.0),
            copper_mm=(0.0, 0.1),
            weight=44.0,
        ),
    ),
}

#: Mammography (TID 10001 with TID 10005): four-view screening; AGD per view (mGy) at
#: the reference compressed breast thickness, and its growth per mm of thickness.
MAMMO_STUDY_DESCRIPTION = "Screening mammography"
MAMMO_AGD_MEDIAN_MGY = 1.3
MAMMO_AGD_GSD = 1.15
MAMMO_REFERENCE_THICKNESS_MM = 55.0
MAMMO_AGD_PER_MM = 0.012  # relative AGD increase per mm of compressed thickness

#: The study mix: share of CT, fluoroscopy, radiography and mammography studies. CT
#: leads (three rooms, the EUCLID clinical-indication DRLs); fluoroscopy is the smallest
#: share, as in a real department, and its reports are the largest (a PCI report holds
#: 16 to 38 irradiation events, each with about 25 content items).
MODALITY_MIX: dict[str, float] = {"CT": 0.52, "RF": 0.14, "DX": 0.22, "MG": 0.12}

#: Share of studies that are QA phantom scans (patient name "QA PHANTOM").
QA_FRACTION = 0.02

#: Share of patients whose reports carry no birth date or age (as some RDSRs and
#: emergency registrations do): the DRL comparison counts them in ``n_unknown_age``.
UNKNOWN_AGE_FRACTION = 0.04


def devices_for(modality: str) -> list[DemoDevice]:
    """Return the demo rooms of one modality (``CT``, ``RF``, ``DX`` or ``MG``)."""
    return [d for d in DEVICES if d.modality == modality]

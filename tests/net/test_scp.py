"""``kerma listen`` with real senders: dcmtk echoscu/storescu and pynetdicom SCU threads."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pydicom
import pytest
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from kerma.api import Registry
from kerma.net import status
from kerma.net.handlers import FileMetaEncoder, check_dataset, check_encoded_dataset
from kerma.net.spool import Spool, parse_slot
from kerma.services import intake_importer
from tests.net.conftest import (
    CASES_DIR,
    DICOM_DIR,
    KermaListener,
    SendLog,
    deep_sr_file,
    mr_image_file,
    registry_sop_uids,
    require_binary,
    send_with_storescu,
    storescu,
    wait_until,
    write_copies,
)

pytestmark = pytest.mark.network

#: Shared RDSRs sent with storescu (CT, projection, mammography, radiopharmaceutical).
RDSR_FILES = (
    "CT-RDSR-Siemens-Multi-1.dcm",
    "CT-RDSR-Toshiba_DoseCheck.dcm",
    "DX-RDSR-Canon_CXDI.dcm",
    "RF-RDSR-Philips_Allura.dcm",
    "MG-RDSR-Hologic_2D.dcm",
    "NM-RRDSR-Siemens.dcm",
)

C14 = CASES_DIR / "C14-nm-radiopharm-rdsr-network.dcm"


def send_file(port: int, path: Path, *, aet: str = "KERMA") -> int:
    """Send one file with pynetdicom (without decoding it); return the C-STORE status."""
    meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(
        meta.file_meta.MediaStorageSOPClassUID, meta.file_meta.TransferSyntaxUID
    )
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(path)
        return int(rsp.Status)
    finally:
        assoc.release()


class TestListen:
    """Echo, store and reject with a running ``kerma listen``."""

    def test_echoscu_returns_success(self, listener: KermaListener) -> None:
        """dcmtk echoscu gets a successful C-ECHO."""
        exe = require_binary("echoscu")
        run = subprocess.run(
            [exe, "-aec", listener.aet, "127.0.0.1", str(listener.port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr

    def test_storescu_rdsrs_are_in_registry(self, listener: KermaListener) -> None:
        """Shared RDSRs sent with storescu are acknowledged and imported with their totals."""
        files = [DICOM_DIR / name for name in RDSR_FILES]
        run = storescu(listener.port, files)
        assert run.returncode == 0, run.stderr
        assert run.stderr.count("Received Store Response (Success)") == len(files)
        listener.wait_drained()
        expected = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        assert sorted(registry_sop_uids(listener.settings)) == sorted(expected)
        with Registry(settings=listener.settings) as reg:
            reference = Registry(
                "sqlite://",
                settings=listener.settings.model_copy(
                    update={"archive_dir": listener.workdir / "ref-archive"}
                ),
            )
            reference.import_paths(files)
            got = reg.studies(include_non_patient=True)
            want = reference.studies(include_non_patient=True)
        assert len(got) == len(want) == len(files)
        assert got["number_of_events"].sum() == want["number_of_events"].sum()
        assert got["ct_dlp_total_mgycm"].sum() == pytest.approx(want["ct_dlp_total_mgycm"].sum())
        assert got["dap_total_gym2"].sum() == pytest.approx(want["dap_total_gym2"].sum())

    def test_radiopharmaceutical_sr_c14_is_accepted(self, listener: KermaListener) -> None:
        """Case C14: a .88.68 Radiopharmaceutical Radiation Dose SR gets 0x0000 and is imported."""
        assert send_file(listener.port, C14) == status.SUCCESS
        listener.wait_drained()
        uid = str(pydicom.dcmread(C14, stop_before_pixels=True).SOPInstanceUID)
        assert registry_sop_uids(listener.settings) == [uid]

    def test_dose_sr_classes_c14_contexts_are_accepted(self, listener: KermaListener) -> None:
        """Case C14: every dose SR SOP class's presentation context is accepted."""
        from tests.conftest import load_case

        network = load_case("C14-nm-radiopharm-rdsr-network")["expected"]["network"]
        uids = [network["sop_class_uid"], *network["scp_must_also_accept"]]
        ae = AE(ae_title="TESTSCU")
        for uid in uids:
            ae.add_requested_context(uid)
        assoc = ae.associate("127.0.0.1", listener.port, ae_title=listener.aet)
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assoc.release()
        assert accepted == set(uids)

    def test_non_dose_objects_are_acknowledged_listed_not_kept(
        self, listener: KermaListener, tmp_path: Path
    ) -> None:
        """A non-dose Enhanced SR and an MR image: 0x0000, in ignored(), not stored or kept."""
        esr = DICOM_DIR / "ESR_non-dose.dcm"
        mr = mr_image_file(tmp_path / "mr.dcm")
        assert send_file(listener.port, esr) == status.SUCCESS
        assert send_file(listener.port, tmp_path / "mr.dcm") == status.SUCCESS
        listener.wait_drained()
        assert registry_sop_uids(listener.settings) == []
        with Registry(settings=listener.settings) as reg:
            assert reg.rejects().empty
            ignored = reg.ignored()
        esr_ds = pydicom.dcmread(esr, stop_before_pixels=True)
        by_uid = ignored.set_index("sop_instance_uid")
        assert sorted(by_uid.index) == sorted([str(esr_ds.SOPInstanceUID), str(mr.SOPInstanceUID)])
        assert by_uid.loc[str(mr.SOPInstanceUID), "modality"] == "MR"
        assert by_uid.loc[str(mr.SOPInstanceUID), "sop_class_uid"] == str(mr.SOPClassUID)
        assert by_uid.loc[str(mr.SOPInstanceUID), "series_instance_uid"] == str(
            mr.SeriesInstanceUID
        )
        assert by_uid.loc[str(esr_ds.SOPInstanceUID), "study_instance_uid"] == str(
            esr_ds.StudyInstanceUID
        )
        assert by_uid["reason"].str.len().min() > 0
        assert list(listener.archive_dir.rglob("*.dcm")) == []  # neither archived nor spooled
        assert listener.terminate() == 0
        assert "2 ignored as non-dose, 0 rejected" in listener.log()

    def test_deep_sr_is_rejected_by_import_and_kept(
        self, listener: KermaListener, tmp_path: Path
    ) -> None:
        """A 300-deep SR (undefined lengths) is acknowledged, rejected on import, archived."""
        deep = deep_sr_file(tmp_path / "deep.dcm", depth=300)
        deep_uid = str(read_file_meta_info(deep).MediaStorageSOPInstanceUID)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20000)  # only so that pynetdicom can send it
        try:
            assert send_file(listener.port, deep) == status.SUCCESS
        finally:
            sys.setrecursionlimit(limit)
        good = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
        assert send_file(listener.port, good) == status.SUCCESS
        listener.wait_drained()
        assert registry_sop_uids(listener.settings) == [
            str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
        ]
        with Registry(settings=listener.settings) as reg:
            rejects = reg.rejects()
        assert len(rejects) == 1
        assert rejects["sop_instance_uid"].iloc[0] in (deep_uid, None)
        reason = rejects["reason"].iloc[0]
        assert "nested too deeply" in reason or "nested more than 64 levels deep" in reason
        archived = listener.archive_dir / rejects["archive_path"].iloc[0]
        assert archived.is_file()  # kept for inspection

    def test_deep_sr_from_storescu_is_rejected_and_kept(
        self, listener: KermaListener, tmp_path: Path
    ) -> None:
        """A 300-deep SR re-encoded by storescu is stored, then rejected by import and archived."""
        deep = deep_sr_file(tmp_path / "deep.dcm", depth=300)
        deep_uid = str(read_file_meta_info(deep).MediaStorageSOPInstanceUID)
        good = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
        run = storescu(listener.port, [deep, good])
        assert run.stderr.count("Received Store Response (Success)") == 2, run.stderr
        listener.wait_drained()
        assert registry_sop_uids(listener.settings) == [
            str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
        ]
        with Registry(settings=listener.settings) as reg:
            rejects = reg.rejects()
        assert list(rejects["sop_instance_uid"].fillna("")) in ([deep_uid], [""])
        assert len(rejects) == 1
        reason = rejects["reason"].iloc[0]
        assert "nested too deeply" in reason or "nested more than 64 levels deep" in reason
        assert (listener.archive_dir / rejects["archive_path"].iloc[0]).is_file()

    def test_sigterm_stops_cleanly(self, listener: KermaListener) -> None:
        """SIGTERM after a store: exit code 0, the object imported, nothing left in the spool."""
        assert send_file(listener.port, DICOM_DIR / "DX-RDSR-Canon_CXDI.dcm") == status.SUCCESS
        assert listener.terminate() == 0
        assert "stopped:" in listener.log()
        restarted = KermaListener(listener.workdir, port=listener.port)
        restarted.start()
        restarted.wait_drained()
        restarted.terminate()
        assert len(registry_sop_uids(listener.settings)) == 1


class TestCheckEncodedDataset:
    """The decode check of the C-STORE handler (no network)."""

    @pytest.mark.parametrize(
        "cut",
        [
            pytest.param(0, id="empty"),
            pytest.param(100, id="preamble-only"),
            pytest.param(400, id="truncated-before-sop-instance-uid"),
        ],
    )
    def test_truncated_object_raises(self, cut: int) -> None:
        """A truncated object cannot be understood (the handler answers 0xC210)."""
        data = (DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm").read_bytes()[:cut]
        with pytest.raises(ValueError, match=r"."):
            check_encoded_dataset(data)

    def test_rdsr_returns_its_uids(self) -> None:
        """A shared RDSR gives its SOP Class and Instance UIDs."""
        path = DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert check_encoded_dataset(path.read_bytes()) == (
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID),
        )


class TestCheckDataset:
    """The check of a C-STORE data set in its presentation context's transfer syntax."""

    @pytest.mark.parametrize(
        "transfer_syntax",
        [
            pytest.param(pydicom.uid.ImplicitVRLittleEndian, id="implicit-le"),
            pytest.param(pydicom.uid.ExplicitVRLittleEndian, id="explicit-le"),
            pytest.param(pydicom.uid.ExplicitVRBigEndian, id="explicit-be"),
            pytest.param(pydicom.uid.DeflatedExplicitVRLittleEndian, id="deflated"),
        ],
    )
    def test_rdsr_in_each_transfer_syntax_returns_its_uids(self, transfer_syntax: str) -> None:
        """An RDSR encoded as C-STORE sends it (no file meta) gives its SOP UIDs."""
        from pynetdicom.dsutils import encode

        ds = pydicom.dcmread(DICOM_DIR / "CT-RDSR-Siemens-Multi-1.dcm")
        ts = pydicom.uid.UID(transfer_syntax)
        encoded = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
        assert encoded is not None
        assert check_dataset(encoded, ts) == (str(ds.SOPClassUID), str(ds.SOPInstanceUID))

    def test_garbage_raises(self) -> None:
        """Bytes that are not a data set cannot be understood (the handler answers 0xC210)."""
        with pytest.raises(ValueError, match=r"."):
            check_dataset(b"\xff" * 64, pydicom.uid.ExplicitVRLittleEndian)


class TestFileMetaEncoder:
    """The cached File Meta Information encoding of the C-STORE handler."""

    @pytest.mark.parametrize(
        "sop_instance_uid",
        [
            pytest.param("1.2.3", id="odd-length"),
            pytest.param("1.2.34", id="even-length"),
            pytest.param("2.25." + "1" * 59, id="64-characters"),
            pytest.param("1.2.3.4x", id="not-a-uid-encoded-by-pydicom"),
        ],
    )
    def test_same_bytes_as_pynetdicom(self, sop_instance_uid: str) -> None:
        """Cached encodings equal pynetdicom's encode_file_meta, for several UIDs in a row."""
        from pynetdicom.dsutils import create_file_meta, encode_file_meta

        encoder = FileMetaEncoder()
        sop_class = str(pydicom.uid.XRayRadiationDoseSRStorage)
        for ts in (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian):
            for uid in (sop_instance_uid, sop_instance_uid[:-1] + "7"):
                expected = encode_file_meta(
                    create_file_meta(
                        sop_class_uid=pydicom.uid.UID(sop_class),
                        sop_instance_uid=pydicom.uid.UID(uid),
                        transfer_syntax=ts,
                    )
                )
                assert encoder.encode(sop_class, uid, str(ts)) == expected


class TestSpool:
    """The durable spool (no network)."""

    def test_concurrent_puts_share_folder_fsyncs(self, tmp_path: Path) -> None:
        """40 objects written by 20 threads at once: all spooled, one fsync each, slots shared."""
        spool = Spool(tmp_path / "archive")
        objects = [f"object {i}".encode() * 1000 for i in range(40)]
        paths: list[Path] = []
        lock = threading.Lock()

        def writer(chunk: list[bytes]) -> None:
            for data in chunk:
                path = spool.put(data)
                with lock:
                    paths.append(path)

        threads = [threading.Thread(target=writer, args=(objects[i::20],)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(parse_slot(p.read_bytes()) for p in paths) == sorted(objects)
        assert len(spool.pending()) == 40
        assert spool.file_fsyncs == 40
        assert 1 <= spool.directory_fsyncs <= 2  # slot names, fsynced a batch at a time
        spool.close()


class TestAssociationActivity:
    """The DUL reactor sleep follows each association's activity (in-process SCP)."""

    def test_idle_associations_poll_slowly(self, tmp_path: Path) -> None:
        """Three associations that send nothing get the idle reactor sleep (5 ms)."""
        from kerma.config import Settings
        from kerma.net.handlers import DUL_LOOP_DELAY_IDLE_S
        from kerma.net.scp import StorageSCP

        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'kerma.db'}", archive_dir=tmp_path / "archive"
        )
        scp = StorageSCP(
            settings,
            importer_factory=lambda: intake_importer(settings),
            host="127.0.0.1",
            port=0,
        )
        scp.start()
        assocs = []
        try:
            ae = AE(ae_title="TESTSCU")
            ae.add_requested_context(Verification)
            assocs = [ae.associate("127.0.0.1", scp.address[1], ae_title="KERMA") for _ in range(3)]
            assert all(a.is_established for a in assocs)

            def delays() -> list[float]:
                return [a.dul._run_loop_delay for a in scp._server.active_associations]

            assert wait_until(lambda: delays() == [DUL_LOOP_DELAY_IDLE_S] * 3, timeout=30)
        finally:
            for assoc in assocs:
                if assoc.is_established:
                    assoc.release()
            scp.stop(grace_s=5)


class TestAllowList:
    """The optional calling-AE allow-list."""

    def test_unknown_calling_aet_is_rejected(self, tmp_path: Path) -> None:
        """A calling AE title outside KERMA_SCP_ALLOWED_AETS cannot associate; a listed one can."""
        scp = KermaListener(
            tmp_path / "kerma",
            extra_env={"KERMA_SCP_ALLOWED_AETS": '["MODALITY1"]'},
            ready_calling="MODALITY1",
        )
        scp.start()
        try:
            for calling, expected in (("STRANGER", False), ("MODALITY1", True)):
                ae = AE(ae_title=calling)
                ae.add_requested_context(Verification)
                assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.aet)
                assert assoc.is_established is expected
                if assoc.is_established:
                    assoc.release()
        finally:
            scp.terminate()


class TestLoad:
    """Many concurrent associations, and a crash in the middle of a transfer."""

    N_OBJECTS = 1000
    N_ASSOCIATIONS = 20

    @pytest.mark.slow
    def test_twenty_associations_store_each_object_once(
        self, listener: KermaListener, tmp_path: Path
    ) -> None:
        """1,000 objects over 20 concurrent storescu associations: each stored exactly once."""
        files = write_copies(tmp_path / "objects", self.N_OBJECTS)
        log = send_with_storescu(files, listener.port, processes=self.N_ASSOCIATIONS)
        assert len(log.succeeded) == self.N_OBJECTS
        listener.wait_drained()
        uids = registry_sop_uids(listener.settings)
        assert len(uids) == len(set(uids)) == self.N_OBJECTS
        assert set(uids) == log.succeeded
        with Registry(settings=listener.settings) as reg:
            assert len(reg.studies(include_non_patient=True)) == self.N_OBJECTS

    #: The intake limits the kill test runs with (issue #11 item 6): tight enough to be
    #: in force for every object and association of the test (RDSRs of about
    #: 10 kB; 20 associations from one peer plus the readiness C-ECHO).
    LIMITS_ENV: ClassVar[dict[str, str]] = {
        "KERMA_MAX_OBJECT_BYTES": str(2 * 1024 * 1024),
        "KERMA_MAX_INFLATED_BYTES": str(8 * 1024 * 1024),
        "KERMA_SCP_MAX_ASSOCIATIONS_PER_PEER": str(N_ASSOCIATIONS + 2),
        "KERMA_SCP_MAX_ASSOCIATIONS": str(N_ASSOCIATIONS + 4),
        "KERMA_SCP_NETWORK_TIMEOUT_S": "30",
    }

    @pytest.mark.slow
    def test_sigkill_mid_transfer_loses_nothing(self, tmp_path: Path) -> None:
        """SIGKILL mid-transfer of 1,000 objects: every acknowledged one is imported, once
        (the listener runs with the intake limits of :attr:`LIMITS_ENV`)."""
        if not DICOM_DIR.is_dir():
            pytest.skip("../shared/dicom is not beside the repository")
        listener = KermaListener(tmp_path / "kerma", extra_env=dict(self.LIMITS_ENV))
        listener.start()
        try:
            self._kill_and_restart(listener, tmp_path)
        finally:
            listener.terminate()
            listener.reap_orphans()

    def _kill_and_restart(self, listener: KermaListener, tmp_path: Path) -> None:
        """The kill test's body (see :meth:`test_sigkill_mid_transfer_loses_nothing`)."""
        n_objects = self.N_OBJECTS
        files = write_copies(tmp_path / "objects", n_objects, seed=1)
        log = SendLog()
        kill_after = n_objects // 3
        sender = threading.Thread(
            target=send_with_storescu,
            args=(files, listener.port),
            kwargs={"processes": self.N_ASSOCIATIONS, "log": log},
        )
        sender.start()
        assert wait_until(lambda: len(log.statuses) >= kill_after, timeout=600, interval=0.02)
        listener.kill()
        sender.join()
        acknowledged = log.succeeded
        assert kill_after <= len(acknowledged) < n_objects
        assert set(log.statuses.values()) == {status.SUCCESS}

        restarted = KermaListener(
            listener.workdir, port=listener.port, extra_env=dict(self.LIMITS_ENV)
        )
        restarted.start()
        try:
            restarted.wait_drained()
            after_restart = registry_sop_uids(listener.settings)
            # then send the rest; objects stored but not acknowledged arrive twice
            rest = {p: uid for p, uid in files.items() if uid not in acknowledged}
            resend = send_with_storescu(rest, restarted.port, processes=self.N_ASSOCIATIONS)
            restarted.wait_drained()
        finally:
            restarted.terminate()
            restarted.reap_orphans()
        uids = registry_sop_uids(listener.settings)
        print(
            f"\nkill test: {n_objects} objects over {self.N_ASSOCIATIONS} associations; "
            f"{len(acknowledged)} acknowledged before SIGKILL; "
            f"{len(after_restart)} in the registry after restart and drain "
            f"({len(set(after_restart) - acknowledged)} stored but not acknowledged); "
            f"{len(rest)} re-sent, {len(resend.succeeded)} acknowledged; "
            f"{len(uids)} in the registry at the end, {len(set(uids))} distinct, "
            f"{len(uids) - len(set(uids))} duplicates"
        )
        assert acknowledged <= set(after_restart)  # nothing acknowledged was lost
        assert len(after_restart) == len(set(after_restart))
        assert resend.succeeded == set(rest.values())
        assert len(uids) == len(set(uids)) == n_objects  # nothing imported twice
        assert set(uids) == acknowledged | resend.succeeded == set(files.values())
        assert restarted.pending() == []

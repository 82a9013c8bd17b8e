"""The durable spool: slots with footers, their pool, recovery after a crash (no network)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kerma.errors import SlotError
from kerma.net.spool import (
    FOOTER,
    SLOT_BATCH,
    SLOT_LOW_WATER,
    SLOT_MAGIC,
    SLOT_SUFFIX,
    Spool,
    SpoolWorker,
    pack_footer,
    parse_frame,
    parse_slot,
    read_spooled,
    wait_for,
)

#: A dead instance's id (no lock file: its process is gone).
DEAD = "0123456789abcdef"


@dataclass(frozen=True)
class Outcome:
    """What the recording importer returns (``status`` as ``ImportOutcome.status``)."""

    status: str = "imported"


class RecordingRegistry:
    """Stands in for the ingest pipeline: records what ``import_bytes`` is given."""

    def __init__(self) -> None:
        self.imported: list[bytes] = []
        self.sha256s: list[str | None] = []
        self.origins: list[str | None] = []
        self.lock = threading.Lock()

    def import_bytes(
        self,
        data: bytes,
        *,
        sha256: str | None = None,
        source: str = "bytes",
        origin: str | None = None,
        keep_non_dose: bool = True,
        modalities: Any = None,
    ) -> Outcome:
        """Record the object, the digest and the origin it came with."""
        with self.lock:
            self.imported.append(bytes(data))
            self.sha256s.append(sha256)
            self.origins.append(origin)
        return Outcome()


def run_worker(spool: Spool, registry: RecordingRegistry) -> SpoolWorker:
    """Start a worker on ``spool``, wait until it handled everything, stop it."""
    worker = SpoolWorker(spool, lambda: registry, retry_delay_s=0.1)
    worker.start()
    try:
        assert worker.wait_idle(timeout=30)
    finally:
        worker.stop()
    return worker


def slot_bytes(content: bytes, origin: str | None = None) -> bytes:
    """Return what :meth:`Spool.put` writes to a slot for ``content``."""
    return content + pack_footer(len(content), hashlib.sha256(content).digest(), origin)


def old_slot_bytes(content: bytes) -> bytes:
    """Return what an earlier version wrote to a slot (footer without origin)."""
    return content + FOOTER.pack(SLOT_MAGIC, len(content), hashlib.sha256(content).digest())


def put_and_die(archive_dir: Path, objects: list[bytes]) -> list[Path]:
    """Put objects in a child process that then kills itself (SIGKILL); return the slots."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from kerma.net.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1]))\n"
        "for data in sys.argv[2:]:\n"
        "    print(spool.put(data.encode()), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(archive_dir), *(o.decode() for o in objects)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == -9, run.stderr
    return [Path(line) for line in run.stdout.split()]


class TestSlotFormat:
    """The footer that marks a slot complete."""

    def test_put_in_chunks_keeps_exact_bytes(self, tmp_path: Path) -> None:
        """A put in chunks gives a slot whose content is the concatenation, footer checked."""
        spool = Spool(tmp_path / "archive")
        slot = spool.put([b"preamble", b"meta", b"dataset"])
        assert slot.suffix == ".dcm"  # the link listed as pending, same inode as the slot
        assert slot.with_suffix(SLOT_SUFFIX).stat().st_ino == slot.stat().st_ino
        assert slot.read_bytes() == slot_bytes(b"preamblemetadataset")
        assert parse_slot(slot.read_bytes()) == b"preamblemetadataset"
        spooled = read_spooled(slot)
        assert spooled.data == b"preamblemetadataset"
        assert spooled.sha256 == hashlib.sha256(b"preamblemetadataset").hexdigest()
        assert spooled.origin is None
        spool.close()

    def test_origin_is_kept_with_the_object(self, tmp_path: Path) -> None:
        """The origin given to put is in the slot, after the object, and read back."""
        spool = Spool(tmp_path / "archive")
        origin = "C-STORE from CT_ÜBER_1 at 10.1.2.3"
        slot = spool.put(b"object", origin=origin)
        assert slot.read_bytes() == slot_bytes(b"object", origin)
        assert parse_frame(slot.read_bytes()).origin == origin
        assert read_spooled(slot).origin == origin
        assert read_spooled(slot).data == b"object"
        spool.close()

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            pytest.param(b"", "fewer than a footer", id="empty"),
            pytest.param(b"object only, never finished" * 3, "magic", id="no-footer"),
            pytest.param(slot_bytes(b"object")[:-1], "do not match its size", id="footer-cut"),
            pytest.param(b"x" + slot_bytes(b"object"), "do not match its size", id="length"),
            pytest.param(
                b"x" + slot_bytes(b"object", "CT1"), "do not match its size", id="origin-length"
            ),
            pytest.param(
                b"OBJECT" + slot_bytes(b"object")[6:], "SHA-256", id="content-not-flushed"
            ),
            pytest.param(
                b"OBJECT" + old_slot_bytes(b"object")[6:], "SHA-256", id="old-format-torn"
            ),
        ],
    )
    def test_torn_slot_raises(self, data: bytes, match: str) -> None:
        """A slot whose footer is missing or does not match its bytes is not complete."""
        with pytest.raises(SlotError, match=match):
            parse_slot(data)


class TestPut:
    """What :meth:`Spool.put` flushes before it returns."""

    def test_put_returns_after_its_slot_fsync(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each put fsyncs its slot, complete, before returning, and fsyncs nothing else."""
        spool = Spool(tmp_path / "archive")
        spool.put(b"first")  # fills the pool (slot names fsynced with the folder)
        assert wait_for(lambda: spool.free_slots == SLOT_BATCH - 1, timeout=10)
        calls: list[tuple[int, int, bool]] = []
        real_fsync = os.fsync

        def recording_fsync(fd: int) -> None:
            real_fsync(fd)
            st = os.fstat(fd)
            calls.append((st.st_ino, st.st_size, os.path.isdir(f"/proc/self/fd/{fd}")))

        monkeypatch.setattr(os, "fsync", recording_fsync)
        data = b"an acknowledged object" * 100
        slot = spool.put(data)
        returned = list(calls)
        monkeypatch.undo()
        st = slot.stat()
        assert returned == [(st.st_ino, len(slot_bytes(data)), False)]  # one flush: the slot
        assert st.st_size == len(slot_bytes(data))
        spool.close()

    def test_same_bytes_twice_are_imported_as_two_slots(self, tmp_path: Path) -> None:
        """The same object put twice makes two complete slots (the registry stores it once)."""
        spool = Spool(tmp_path / "archive")
        first, second = spool.put(b"abc"), spool.put([b"a", b"bc"])
        assert first != second
        assert spool.pending() == [first, second]
        registry = RecordingRegistry()
        run_worker(spool, registry)
        assert registry.imported == [b"abc", b"abc"]
        assert registry.sha256s == [hashlib.sha256(b"abc").hexdigest()] * 2
        assert spool.pending() == []


class TestPool:
    """The pool of empty slots whose names are already durable."""

    def test_pool_refills_in_the_background(self, tmp_path: Path) -> None:
        """Taking slots below the low-water mark refills the pool, one folder fsync per batch."""
        spool = Spool(tmp_path / "archive")
        n = SLOT_BATCH - SLOT_LOW_WATER + 1
        for i in range(n):
            spool.put(f"object {i}".encode())
        assert wait_for(lambda: spool.free_slots >= SLOT_BATCH, timeout=10)
        assert spool.directory_fsyncs == 2
        assert spool.file_fsyncs == n
        assert len(list(spool.directory.glob(f"*{SLOT_SUFFIX}"))) == n + spool.free_slots
        spool.close()

    def test_puts_beyond_the_pool_from_twenty_threads_all_land(self, tmp_path: Path) -> None:
        """20 threads putting 3 batches' worth of objects: every object in its own slot."""
        spool = Spool(tmp_path / "archive")
        objects = [f"object {i}".encode() * 100 for i in range(3 * SLOT_BATCH)]
        slots: list[Path] = []
        lock = threading.Lock()

        def writer(chunk: list[bytes]) -> None:
            for data in chunk:
                slot = spool.put(data)
                with lock:
                    slots.append(slot)

        threads = [threading.Thread(target=writer, args=(objects[i::20],)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(slots)) == len(objects)
        assert sorted(parse_slot(s.read_bytes()) for s in slots) == sorted(objects)
        assert spool.file_fsyncs == len(objects)
        assert spool.directory_fsyncs <= len(objects) // SLOT_BATCH + 2
        spool.close()

    def test_close_removes_free_slots_and_lock(self, tmp_path: Path) -> None:
        """close() leaves only the complete slots; a later put starts a new pool."""
        spool = Spool(tmp_path / "archive")
        slot = spool.put(b"kept")
        spool.close()
        assert sorted(p.name for p in spool.directory.iterdir()) == [
            slot.name,
            slot.with_suffix(SLOT_SUFFIX).name,
        ]
        again = spool.put(b"after close")
        assert parse_slot(again.read_bytes()) == b"after close"
        spool.close()


class TestRecovery:
    """What a new worker does with what a previous run left in the spool."""

    def test_torn_slots_are_discarded_and_not_imported(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Torn slots of a gone instance are deleted, logged at INFO by name, never imported."""
        spool = Spool(tmp_path / "archive")
        torn = {
            f"{DEAD}-00000000{SLOT_SUFFIX}": b"half of an object",
            f"{DEAD}-00000001{SLOT_SUFFIX}": b"OBJECT" + slot_bytes(b"object")[6:],
            f"{DEAD}-00000002{SLOT_SUFFIX}": slot_bytes(b"object")[:-10],
        }
        for name, data in torn.items():
            (spool.directory / name).write_bytes(data)
        (spool.directory / f"{DEAD}-00000003{SLOT_SUFFIX}").write_bytes(b"")  # free slot
        registry = RecordingRegistry()
        with caplog.at_level(logging.INFO, logger="kerma.net.spool"):
            worker = run_worker(spool, registry)
        assert registry.imported == []
        assert worker.imported == 0
        assert worker.rejected == 0
        assert list(spool.directory.glob(f"*{SLOT_SUFFIX}")) == []
        discarded = [r for r in caplog.records if "Discarding spool slot" in r.getMessage()]
        assert {r.levelno for r in discarded} == {logging.INFO}
        assert sorted(n for n in torn if any(n in r.getMessage() for r in discarded)) == sorted(
            torn
        )

    def test_complete_slot_after_sigkill_is_imported_exactly_once(self, tmp_path: Path) -> None:
        """Slots put by a process killed with SIGKILL (one without its link) are imported once."""
        archive = tmp_path / "archive"
        objects = [b"first object", b"second object"]
        slots = put_and_die(archive, objects)
        assert all(parse_slot(s.read_bytes()) in objects for s in slots)
        slots[0].unlink()  # its .dcm link was not durable: only the slot name survived
        registry = RecordingRegistry()
        spool = Spool(archive)
        worker = run_worker(spool, registry)
        assert sorted(registry.imported) == sorted(objects)
        assert worker.imported == len(objects)
        assert not any(s.exists() for s in slots)
        assert sorted(p.name for p in spool.directory.iterdir()) == []  # empty slots, lock, copies
        run_worker(Spool(archive), registry)  # a second restart finds nothing
        assert sorted(registry.imported) == sorted(objects)

    def test_old_format_file_is_imported_as_it_is(self, tmp_path: Path) -> None:
        """A ``<sha256>.dcm`` file left by an earlier version is imported from its own path."""
        spool = Spool(tmp_path / "archive")
        data = b"written by kerma before slots"
        old = spool.directory / f"{hashlib.sha256(data).hexdigest()}.dcm"
        old.write_bytes(data)
        assert spool.pending() == [old]
        registry = RecordingRegistry()
        run_worker(spool, registry)
        assert registry.imported == [data]
        assert registry.sha256s == [hashlib.sha256(data).hexdigest()]  # from its name
        assert registry.origins == [f"spool file {old.name} (origin not recorded)"]
        assert not old.exists()

    def test_slot_of_an_earlier_version_is_imported(self, tmp_path: Path) -> None:
        """A complete slot with the footer of an earlier version (no origin) is imported."""
        spool = Spool(tmp_path / "archive")
        name = f"{DEAD}-00000007{SLOT_SUFFIX}"
        (spool.directory / name).write_bytes(old_slot_bytes(b"old slot"))
        registry = RecordingRegistry()
        run_worker(spool, registry)
        assert registry.imported == [b"old slot"]
        assert registry.sha256s == [hashlib.sha256(b"old slot").hexdigest()]
        assert registry.origins == [f"spool file {name} (origin not recorded)"]

    def test_the_import_gets_digest_and_origin_from_the_footer(self, tmp_path: Path) -> None:
        """The worker hands the pipeline the slot's bytes, the footer's SHA-256 and origin."""
        spool = Spool(tmp_path / "archive")
        objects = {b"one" * 50: "C-STORE from A at 10.0.0.1", b"two" * 70: "STOW-RS from ::1"}
        for data, origin in objects.items():
            spool.put([data[:10], data[10:]], origin=origin)
        registry = RecordingRegistry()
        run_worker(spool, registry)
        got = dict(
            zip(
                registry.imported, zip(registry.sha256s, registry.origins, strict=True), strict=True
            )
        )
        assert got == {
            data: (hashlib.sha256(data).hexdigest(), origin) for data, origin in objects.items()
        }

    def test_slots_of_a_live_instance_are_left_alone(self, tmp_path: Path) -> None:
        """Another live instance's complete slots are imported; its empty or torn ones kept."""
        writer = Spool(tmp_path / "archive")
        complete = writer.put(b"complete")
        in_flight = sorted(writer.directory.glob(f"{writer.instance}-*{SLOT_SUFFIX}"))[-1]
        in_flight.write_bytes(b"being written")
        empty = sorted(writer.directory.glob(f"{writer.instance}-*{SLOT_SUFFIX}"))[-2]
        registry = RecordingRegistry()
        run_worker(Spool(tmp_path / "archive"), registry)
        assert registry.imported == [b"complete"]
        assert not complete.exists()
        assert not complete.with_suffix(SLOT_SUFFIX).exists()
        assert in_flight.read_bytes() == b"being written"
        assert empty.exists()
        writer.close()

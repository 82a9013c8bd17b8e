"""A KOS 'Rejected for Quality Reasons' sent with dcmtk ``storescu`` to ``kerma listen``
marks its referenced images rejected (issue #17).

Real peers on loopback: the ``listener`` fixture (``kerma listen`` subprocess with its
own SQLite registry) and dcmtk ``storescu``; the KOS is generated with pydicom.
"""

from __future__ import annotations

from pathlib import Path

from kerma.api import Registry
from kerma.services import quality
from tests.net.conftest import KermaListener, storescu
from tests.quality.generators import dx_image, rejection_kos, write


class TestRejectionNoteOverDicom:
    """The SCP routes the KOS to the quality store instead of ignoring it."""

    def test_storescu_kos_marks_images_rejected(
        self, listener: KermaListener, tmp_path: Path
    ) -> None:
        """Five images and a KOS rejecting two of them: reject rate 2/5 in the room."""
        images = [dx_image(station="SCP-ROOM", serial="SN-SCP") for _ in range(5)]
        files = [write(im, tmp_path / "images") for im in images]
        kos = write(rejection_kos(images[:2]), tmp_path / "kos")
        run = storescu(listener.port, [kos, *files])
        assert run.returncode == 0, run.stderr
        listener.wait_drained()
        with (
            Registry(settings=listener.settings) as registry,
            registry.session(write=False) as session,
        ):
            frame = quality.reject_rates(session, group_by=["room"])
            pending = quality.pending_rejections(session)
        row = frame[frame["source"] == "registry"].set_index("room").loc["SCP-ROOM"]
        assert (row["n_images"], row["n_rejected"]) == (5, 2)
        assert row["reject_rate"] == 0.4
        assert pending == 0


class TestRejectionNoteOverStow:
    """The same through STOW-RS (``POST /dicomweb/studies``), the app in this process."""

    def test_stow_kos_marks_images_rejected(self, tmp_path: Path) -> None:
        """Three images, then a KOS rejecting one of them: reject rate 1/3."""
        import httpx

        from tests.net.conftest import wait_until
        from tests.net.test_stow import InProcessServer

        def stow(paths: list[Path]) -> int:
            """POST the files as one multipart/related request; return the status."""
            boundary = "kerma-quality"
            body = (
                b"".join(
                    b"--"
                    + boundary.encode()
                    + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + p.read_bytes()
                    + b"\r\n"
                    for p in paths
                )
                + b"--"
                + boundary.encode()
                + b"--\r\n"
            )
            content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
            response = httpx.post(
                f"{server.url}/dicomweb/studies",
                content=body,
                headers={"Content-Type": content_type, **auth},
                timeout=120,
            )
            return response.status_code

        server = InProcessServer(tmp_path / "app")
        auth = server.headers  # a physicist token: STOW-RS needs one (#13)
        try:
            images = [dx_image(station="STOW-ROOM", serial="SN-STOW") for _ in range(3)]
            assert stow([write(im, tmp_path / "images") for im in images]) == 200
            assert stow([write(rejection_kos(images[:1]), tmp_path / "kos")]) == 200
            incoming = server.settings.archive_dir / "incoming"
            assert wait_until(lambda: not list(incoming.glob("*.dcm")), timeout=300)
            assert server.app.state.worker.wait_idle(300)
        finally:
            server.stop()
        with (
            Registry(settings=server.settings) as registry,
            registry.session(write=False) as session,
        ):
            frame = quality.reject_rates(session, group_by=["room"])
        row = frame[frame["source"] == "registry"].set_index("room").loc["STOW-ROOM"]
        assert (row["n_images"], row["n_rejected"]) == (3, 1)

"""HL7 v2 listener: MLLP over TCP (optionally TLS), one ACK per message after commit.

MLLP (HL7 v2.5.1 Appendix C, Minimal Lower Layer Protocol): each message is framed as
``<VT> message <FS><CR>``; python-hl7's asyncio streams (:mod:`hl7.mllp`) read and
write the frames. Each message is handed to
:meth:`kerma.services.orders.OrderIntake.receive_hl7` on one worker thread (messages
are stored in the order they arrive; the event loop keeps accepting connections) and
its ACK is written back only once that returns, i.e. after the message is committed
(AA) or its refusal recorded (AE/AR).

A frame that is not MLLP (no start block) or larger than ``max_message_bytes`` closes
the connection (there is no message to acknowledge); nothing is stored for it, and the
sender sees no ACK and sends again. So does a connection that completes no frame within
``idle_timeout_s`` (a client that sends something other than MLLP, so never the end
block, or stops in the middle of a frame, would otherwise hold its connection forever).

May import ``kerma.services``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from kerma.errors import ConfigurationError
from kerma.services.orders import OrderIntake

logger = logging.getLogger(__name__)

#: Default MLLP port (IANA "hl7" 2575/tcp).
DEFAULT_PORT: Final = 2575

#: Largest message accepted, in bytes (orders are a few kilobytes; an ORU with an
#: embedded report a few hundred).
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024

#: Seconds a connection may wait for its next complete frame before it is closed (the
#: Storage SCP's network time-out, ``KERMA_SCP_NETWORK_TIMEOUT_S``, is 60 s too).
DEFAULT_IDLE_TIMEOUT_S: Final = 60.0


def build_ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """Return the TLS context of the listener, ``None`` without a certificate.

    Raises
    ------
    ConfigurationError
        When only one of certificate and key is given, or they cannot be loaded.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError(
            "Unable to start the HL7 listener with TLS: give both --tls-cert and --tls-key "
            "(KERMA_HL7_TLS_CERT, KERMA_HL7_TLS_KEY)."
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"Unable to load the HL7 listener's certificate {cert} and key {key}: {exc}."
        ) from exc
    return context


class Hl7Listener:
    """An MLLP server that stores each HL7 v2 message and acknowledges it.

    Parameters
    ----------
    intake : OrderIntake
        Where messages go.
    host : str, optional
        Address to listen on (default ``127.0.0.1``).
    port : int, optional
        TCP port (default 2575; 0: any free port, see :attr:`port`).
    ssl_context : ssl.SSLContext, optional
        MLLP over TLS when given.
    max_message_bytes : int, optional
        Largest message accepted.
    idle_timeout_s : float, optional
        Seconds without a complete frame after which a connection is closed.
    """

    def __init__(
        self,
        intake: OrderIntake,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.intake = intake
        self.idle_timeout_s = idle_timeout_s
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_message_bytes = max_message_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kerma-hl7")
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.messages = 0

    async def start(self) -> None:
        """Start listening (in the running event loop); :attr:`port` is then the real port."""
        from hl7.mllp import start_hl7_server

        self._loop = asyncio.get_running_loop()
        self._server = await start_hl7_server(
            self._handle,
            host=self.host,
            port=self.port,
            limit=self.max_message_bytes,
            ssl=self.ssl_context,
        )
        sockets = getattr(self._server, "sockets", None) or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info(
            "HL7 listener on %s:%d%s", self.host, self.port, " (TLS)" if self.ssl_context else ""
        )

    async def _handle(self, reader: Any, writer: Any) -> None:
        """Serve one connection: read frames, store each message, write its ACK."""
        from hl7.mllp import InvalidBlockError

        peer = writer.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    block = await asyncio.wait_for(reader.readblock(), self.idle_timeout_s)
                except asyncio.IncompleteReadError:
                    break  # the peer closed the connection
                except TimeoutError:
                    logger.warning(
                        "HL7 connection from %s sent no complete MLLP frame for %g s; closed",
                        peer,
                        self.idle_timeout_s,
                    )
                    break
                except InvalidBlockError:
                    logger.warning("HL7 connection from %s sent a frame that is not MLLP", peer)
                    break
                except ValueError:
                    logger.warning(
                        "HL7 connection from %s sent a message over %d bytes; closed",
                        peer,
                        self.max_message_bytes,
                    )
                    break
                receipt = await loop.run_in_executor(
                    self._executor, self.intake.receive_hl7, bytes(block)
                )
                self.messages += 1
                writer.writeblock(receipt.ack)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            # the connection broke, or the archive could not be written: no ACK is sent,
            # so the sender keeps the message and sends it again
            logger.warning("HL7 connection from %s closed without ACK: %s", peer, exc)
        except Exception:  # boundary: one bad connection never stops the listener
            logger.exception("HL7 connection from %s failed; closed without ACK", peer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop listening and wait for the connections' work to end."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- a listener on a thread of its own (tests, kerma serve) ---------------------------

    def start_in_thread(self) -> None:
        """Run the listener's event loop on a daemon thread; return once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="kerma-hl7-listener", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """Stop a listener started with :meth:`start_in_thread`."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._executor.shutdown(wait=True)


def serve_forever(
    listener: Hl7Listener, *, on_ready: Callable[[Hl7Listener], object] | None = None
) -> None:
    """Run ``listener`` until interrupted (Ctrl-C or SIGTERM).

    ``on_ready`` is called once it listens (:attr:`Hl7Listener.port` is the real port).
    """

    async def main() -> None:
        await listener.start()
        if on_ready is not None:
            on_ready(listener)
        try:
            await asyncio.Event().wait()
        finally:
            await listener.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        listener._executor.shutdown(wait=True)

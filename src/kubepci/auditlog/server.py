"""``kubepci trail serve``: the HTTPS ingestion server of the audit trail.

Routes: ``POST /v1/k8s-audit`` (the API server's audit webhook: an EventList), ``POST /v1/falco``
(Falco ``http_output`` or falcosidekick's webhook), ``GET /healthz``, ``GET /readyz`` (the store is
open and the last commit succeeded) and ``GET /metrics`` (Prometheus).

The promise to a sender is the API server's own contract (reference/audit-trail.md 5.3): **200 only
once the batch is durable**. A request is authenticated (client certificate or bearer token, see
:mod:`kubepci.auditlog.sources`), read up to the body limit (413), split and reviewed on the one
ingest thread (:mod:`kubepci.auditlog.ingest`; a bad body is a 400 that stores nothing), then
handed to the :class:`~kubepci.auditlog.committer.GroupCommitter`, and answered when the shared
transaction has committed. A retry of the same events (the API server retries every failed batch
up to five times) gets the indices the first delivery was given: never lost, never counted twice.
A failed commit is a 503, which the sender retries.

In the background the server ticks: the reviewer's silence checks (D14/D22 alerts), a ``gap``
entry for every source silent past its threshold and a resume entry when it delivers again
(10.7.3: start and end of the failure), and a signed checkpoint every N leaves or T seconds. The
server's own start and stop are entries too (10.2.1.6).

The HTTP layer is uvicorn with httptools and uvloop, the stack the admission webhook measured as
fastest (bench/webhook_bench.py), under a raw ASGI app. One addition: uvicorn does not pass the
client certificate to the app, so a small protocol subclass puts the verified peer's names into
``scope["extensions"]["tls"]``. With a client CA the TLS layer asks for a certificate but does not
require one (``CERT_OPTIONAL``): a request without one gets a 401 the sender can read, instead of a
handshake failure; a certificate from another CA still fails the handshake.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from kubepci.asgi import Receive, Scope, Send, read_body, server_tls_context
from kubepci.asgi import header as _header
from kubepci.asgi import respond as _respond
from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.committer import CommitResult, GroupCommitter
from kubepci.auditlog.envelope import NewEntry
from kubepci.auditlog.events import SilenceMonitor, lifecycle_entry
from kubepci.auditlog.ingest import IngestBatch, IngestError, Ingestor
from kubepci.auditlog.server_metrics import IngestMetrics
from kubepci.auditlog.sources import Sources, peer_identities
from kubepci.auditlog.store import TrailStore

__all__ = ["DEFAULT_MAX_BODY_BYTES", "IngestApp", "IngestServer", "IngestSettings", "tls_context"]

#: The API server's batches are at most 400 events; with truncation off an event can be large.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_LOG = logging.getLogger("kubepci.trail.server")
_PATHS = {"/v1/k8s-audit": "k8s-audit", "/v1/falco": "falco"}



def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _error(reason: str) -> bytes:
    return orjson.dumps({"error": reason})


class IngestApp:
    """The ASGI app: authentication, body limit, parse on the ingest thread, group commit, answer."""

    def __init__(
        self,
        committer: GroupCommitter,
        ingestor: Ingestor,
        sources: Sources,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        tick_seconds: float = 10.0,
        clock: Callable[[], dt.datetime] = _utcnow,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.committer = committer
        self.ingestor = ingestor
        self.sources = sources
        self.max_body_bytes = max_body_bytes
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.metrics = metrics or IngestMetrics()
        self.monitor = SilenceMonitor(sources.silence_thresholds(), clock())
        # one thread runs the parser, the reviewer and the silence monitor: none is thread-safe
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kubepci-trail-ingest")
        self._ticker: asyncio.Task[None] | None = None
        self.metrics.bind(committer, self.monitor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- lifecycle -------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        entry = lifecycle_entry("trail-start", self.clock(), sources=",".join(s.name for s in self.sources.specs))
        await asyncio.wrap_future(self.committer.submit([entry]))
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self.committer.submit([lifecycle_entry("trail-stop", self.clock())]))
        self._worker.shutdown(wait=True)
        # here, not after the server returns: uvicorn re-raises SIGTERM once it is done, which ends the
        # process before any code after server.run() -- the last checkpoint must be signed by then
        await asyncio.get_running_loop().run_in_executor(None, self.committer.stop)

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                entries = await loop.run_in_executor(self._worker, self._tick, self.clock())
                if entries:
                    await asyncio.wrap_future(self.committer.submit(entries))
            except Exception as exc:  # a failed tick must not end the ticking
                _LOG.error("trail tick failed: %s: %s", type(exc).__name__, exc)

    def _tick(self, now: dt.datetime) -> list[NewEntry]:
        entries = self.ingestor.tick(now)
        gaps = self.monitor.check(now)
        self.metrics.gaps.inc(len(gaps))
        return entries + gaps

    # -- requests --------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        endpoint = _PATHS.get(path)
        if endpoint is not None:
            if method != "POST":
                await _respond(send, 405, _error("use POST"), extra=((b"allow", b"POST"),))
                return
            status = await self._ingest(endpoint, scope, receive, send)
            self.metrics.requests.labels(endpoint, str(status)).inc()
        elif path in ("/healthz", "/livez"):
            await _respond(send, 200, b"ok", b"text/plain")
        elif path == "/readyz":
            ready = self.committer.ready
            reason = b"ok" if ready else (self.committer.last_error or "store not open").encode()
            await _respond(send, 200 if ready else 503, reason, b"text/plain")
        elif path == "/metrics" and method == "GET":
            body, content_type = self.metrics.render()
            await _respond(send, 200, body, content_type)
        else:
            await _respond(send, 404, _error("not found"))

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        return await read_body(scope, receive, self.max_body_bytes)

    async def _ingest(self, endpoint: str, scope: Scope, receive: Receive, send: Send) -> int:
        tls = scope.get("extensions", {}).get("tls", {})
        auth = self.sources.authenticate(endpoint, _header(scope, b"authorization"), tls.get("kubepci.peer"))
        if auth.source is None:
            challenge = ((b"www-authenticate", b'Bearer realm="kubepci-trail"'),) if auth.status == 401 else ()
            await _respond(send, auth.status, _error(auth.reason), extra=challenge)
            return auth.status
        body = await self._body(scope, receive)
        if body is None:
            await _respond(send, 413, _error(f"body exceeds {self.max_body_bytes} bytes"))
            return 413
        content_type = (_header(scope, b"content-type") or b"application/json").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            shown = content_type.decode("latin-1")
            await _respond(send, 415, _error(f"content-type must be application/json, not {shown}"))
            return 415
        received = self.clock()
        began = time.perf_counter()
        try:
            batch, extra = await asyncio.get_running_loop().run_in_executor(
                self._worker, self._parse, endpoint, body, auth.source.name, received)
        except IngestError as exc:
            await _respond(send, 400, _error(exc.reason))
            return 400
        entries = [*extra, *batch.entries]
        try:
            result = await asyncio.wrap_future(self.committer.submit(entries)) if entries else CommitResult((), 0)
        except Exception as exc:
            await _respond(send, 503, _error(f"trail store unavailable, retry: {type(exc).__name__}"))
            return 503
        indices = result.indices[len(extra):]
        self.metrics.observe(batch, indices, result.size_before, time.perf_counter() - began)
        await _respond(send, 200, _answer(batch, indices, result.size_before))
        return 200

    def _parse(
        self, endpoint: str, body: bytes, source: str, received: dt.datetime
    ) -> tuple[IngestBatch, list[NewEntry]]:
        """On the ingest thread: the batch, plus a resume entry if this source had gone silent."""
        batch = self.ingestor.ingest(endpoint, body, source=source, received=received)
        return batch, self.monitor.seen(source, received)


def _answer(batch: IngestBatch, indices: tuple[int, ...], size_before: int) -> bytes:
    return orjson.dumps({
        "source": batch.source,
        "batch_id": batch.batch_id,
        "received_at": batch.received_at,
        "items": len(batch.items),
        "accepted": batch.accepted,
        "appended": len({i for i in indices if i >= size_before}),
        "duplicates": sum(1 for position, _ in batch.items if indices[position] < size_before),
        "indices": [indices[position] for position, _ in batch.items],
        "rejected": [{"item": n, "reason": reason} for n, reason in batch.rejected],
        "alerts": [{"check": alert.check, "index": indices[position]}
                   for alert, position in zip(batch.alerts, batch.alert_positions, strict=True)],
    })


def tls_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+; with a client CA, client certificates are asked for and verified (not required)."""
    return server_tls_context(cert_file, key_file, client_ca_file, client_cert_required=False)


def _peer_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, plus the verified client certificate's names in the scope."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class PeerAwareProtocol(HttpToolsProtocol):
        peer: frozenset[str] | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            self.peer = peer_identities(ssl_object.getpeercert()) if ssl_object is not None else None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {"tls": {"kubepci.peer": self.peer}}

    return PeerAwareProtocol


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Everything ``kubepci trail serve`` takes from its options."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    checkpoint_every: int = 10_000
    checkpoint_seconds: float = 60.0
    tick_seconds: float = 10.0
    #: the API server keeps idle connections 90 s; closing sooner races its next POST into an EOF
    keep_alive_seconds: int = 120
    #: on SIGTERM, how long to wait for open connections: a TLS peer that never answers close_notify
    #: would otherwise hold the shutdown for the SSL layer's own 30 s
    shutdown_seconds: int = 5


class IngestServer:
    """uvicorn around an :class:`IngestApp`, a committer and an ingestor; foreground or thread."""

    def __init__(
        self,
        open_store: Callable[[], TrailStore],
        settings: IngestSettings,
        sources: Sources,
        *,
        signer: NoteSigner | None = None,
        ingestor: Ingestor | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        append_worker_url: str | None = None,
    ) -> None:
        """``append_worker_url``: run the store's appends in a worker process on that store (see
        :mod:`kubepci.auditlog.store.worker`); ``kubepci trail serve`` does."""
        import uvicorn

        if settings.client_ca_file is None and sources.uses_certificates and not sources.uses_tokens:
            raise ValueError("sources authenticate by client certificate, but no client CA was given")
        self.settings = settings
        self.metrics = IngestMetrics()
        self.committer = GroupCommitter(
            open_store, signer=signer, checkpoint_every=settings.checkpoint_every,
            checkpoint_seconds=settings.checkpoint_seconds, on_commit=self.metrics.commit,
            on_checkpoint=self.metrics.checkpoint, worker_url=append_worker_url,
        )
        self.app = IngestApp(
            self.committer, ingestor or Ingestor(clock=clock), sources, max_body_bytes=settings.max_body_bytes,
            tick_seconds=settings.tick_seconds, clock=clock, metrics=self.metrics,
        )
        self.ssl = tls_context(settings.cert_file, settings.key_file, settings.client_ca_file)
        self.config = uvicorn.Config(
            self.app, host=settings.host, port=settings.port, loop="uvloop", http=_peer_protocol(), lifespan="on",
            interface="asgi3", access_log=False, log_config=None, log_level="warning", server_header=False,
            timeout_keep_alive=settings.keep_alive_seconds, backlog=2048,
            timeout_graceful_shutdown=settings.shutdown_seconds,
            ssl_certfile=str(settings.cert_file), ssl_keyfile=str(settings.key_file),
            ssl_context_factory=lambda _config, _default: self.ssl,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.settings.port

    def run(self) -> None:
        """Serve in the foreground until SIGTERM/SIGINT; the committer stops after the server."""
        self.committer.start()
        try:
            self.server.run()
        finally:
            self.committer.stop()
        if not self.server.started:
            raise RuntimeError(f"trail server did not start on {self.settings.host}:{self.settings.port}")

    def start(self, timeout: float = 15.0) -> None:
        """Serve from a background thread (tests, benchmarks); returns once the socket listens."""
        self.committer.start()
        self._thread = threading.Thread(target=self.server.run, name="kubepci-trail-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.committer.stop()
                raise RuntimeError(f"trail server did not start on {self.settings.host}:{self.settings.port}")
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.committer.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[IngestServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

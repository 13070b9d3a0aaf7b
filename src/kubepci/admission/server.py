"""The webhook's HTTPS adapter: bytes in, :func:`~kubepci.admission.decide.decide`, bytes out.

Nothing here decides anything. The app is a raw ASGI callable (no framework: four routes do not
need a router, and every microsecond of the hot path is spent on the decision) served by uvicorn
with httptools and uvloop, chosen by measurement (``bench/webhook_bench.py``; the figures are in
its docstring). Routes:

- ``POST /validate``: an AdmissionReview v1; 400 with the reason for a malformed one, 413 above
  the body limit, 503 until the snapshot cache has synced (the apiserver then applies the
  webhook's failure policy: closed for the CDE, open elsewhere);
- ``GET /healthz`` (process alive), ``GET /readyz`` (cache synced), ``GET /metrics`` (Prometheus).

Every decision is logged as one JSON line (ids, fields and outcomes, never object content) and
handed to ``on_decision`` so the audit trail can append it; dry-run decisions are flagged so the
trail can leave them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubepci.admission.cache import CacheStats, Snapshot
from kubepci.admission.decide import Decision, Policy, decide
from kubepci.admission.review import ReviewError, parse_review
from kubepci.asgi import Receive, Scope, Send, read_body, server_tls_context
from kubepci.asgi import header as _header
from kubepci.asgi import respond as _respond

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AdmissionApp",
    "ServerSettings",
    "SnapshotProvider",
    "StaticSnapshot",
    "WebhookServer",
    "tls_context",
]

#: etcd caps an object at 1.5 MiB; a review can carry it twice (object and oldObject)
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DECISION_LOGGER = "kubepci.admission.decision"
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

DecisionHook = Callable[[Mapping[str, Any]], None]


class SnapshotProvider(Protocol):
    """What the app reads from the cache; :class:`~kubepci.admission.cache.SnapshotCache` is one."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def ready(self) -> bool: ...

    def wait_for_namespace(self, name: str, timeout: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class StaticSnapshot:
    """A fixed snapshot (benchmarks, offline tests): always ready."""

    snapshot: Snapshot
    ready: bool = True

    def wait_for_namespace(self, name: str, timeout: float) -> bool:
        return name in self.snapshot.namespaces


class _CacheCollector(Collector):
    """Cache gauges read at scrape time, so the hot path never touches them."""

    def __init__(self, stats: Callable[[], CacheStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        objects = GaugeMetricFamily("kubepci_admission_cache_objects", "Objects held by the snapshot cache",
                                    labels=["kind"])
        relists = GaugeMetricFamily("kubepci_admission_cache_relists_gone", "Relists forced by 410 Gone",
                                    labels=["kind"])
        for kind, n in stats.objects.items():
            objects.add_metric([kind], n)
            relists.add_metric([kind], stats.relists_gone.get(kind, 0))
        yield objects
        yield relists


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("kubepci_admission_requests", "Admission requests by outcome",
                                ["decision"], registry=registry)
        self.latency = Histogram("kubepci_admission_request_duration_seconds",
                                 "Time from the last body byte to the response", buckets=_BUCKETS,
                                 registry=registry)
        self.errors = Counter("kubepci_admission_errors", "Requests that got no decision, by cause",
                              ["cause"], registry=registry)
        self.failures = Counter("kubepci_admission_check_failures", "Failing checks by enforcement action",
                                ["check", "enforcement"], registry=registry)


class AdmissionApp:
    """The ASGI app. One instance per process; all state is the policy, the cache and the metrics."""

    def __init__(
        self,
        policy: Policy,
        cache: SnapshotProvider,
        *,
        on_decision: DecisionHook | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        registry: CollectorRegistry | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        namespace_wait_seconds: float = 1.0,
        cache_stats: Callable[[], CacheStats | None] | None = None,
    ) -> None:
        self.policy = policy
        self.cache = cache
        self.on_decision = on_decision
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.registry = registry or CollectorRegistry()
        self.max_body_bytes = max_body_bytes
        self.namespace_wait_seconds = namespace_wait_seconds
        self.metrics = _Metrics(self.registry)
        if cache_stats is not None:
            self.registry.register(_CacheCollector(cache_stats))
        self.log = logging.getLogger(DECISION_LOGGER)
        self.on_startup: list[Callable[[], Awaitable[None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for hook in self.on_startup:
                    await hook()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/validate":
            if method != "POST":
                await _respond(send, 405, b'{"error":"use POST"}', extra=((b"allow", b"POST"),))
            else:
                await self._validate(scope, receive, send)
        elif path in ("/healthz", "/livez"):
            await _respond(send, 200, b"ok", b"text/plain")
        elif path == "/readyz":
            ready = self.cache.ready
            await _respond(send, 200 if ready else 503, b"ok" if ready else b"snapshot cache not synced",
                           b"text/plain")
        elif path == "/metrics" and method == "GET":
            await _respond(send, 200, generate_latest(self.registry), b"text/plain; version=0.0.4; charset=utf-8")
        else:
            await _respond(send, 404, b'{"error":"not found"}')

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        return await read_body(scope, receive, self.max_body_bytes)

    async def _validate(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body(scope, receive)
        began = time.perf_counter()
        peer = scope.get("client") or ("", 0)
        if body is None:
            self._reject("too_large", f"body exceeds {self.max_body_bytes} bytes", peer)
            await _respond(send, 413, orjson.dumps({"error": f"body exceeds {self.max_body_bytes} bytes"}))
            return
        ctype = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            reason = f"content-type must be application/json, got {ctype.decode('latin-1') or 'none'}"
            self._reject("bad_request", reason, peer)
            await _respond(send, 415, orjson.dumps({"error": reason}))
            return
        try:
            request = parse_review(body)
        except ReviewError as exc:
            self._reject("bad_request", exc.reason, peer)
            await _respond(send, 400, orjson.dumps({"error": exc.reason}))
            return
        if not self.cache.ready:
            self._reject("not_ready", "snapshot cache not synced", peer, request.uid)
            await _respond(send, 503, b'{"error":"snapshot cache not synced"}')
            return
        namespace = request.namespace
        if (namespace and request.operation in ("CREATE", "UPDATE")
                and namespace not in self.cache.snapshot.namespaces):
            # the namespace's watch event may trail a pod created right after it; wait briefly for it
            await asyncio.get_running_loop().run_in_executor(
                None, self.cache.wait_for_namespace, namespace, self.namespace_wait_seconds)
        try:
            decision = decide(request, self.cache.snapshot, self.policy, now=self.clock())
            payload = decision.response()
        except Exception as exc:  # a bug must surface as a 500 the failure policy handles, not a hang
            self._reject("internal", f"{type(exc).__name__}: {exc}", peer, request.uid)
            await _respond(send, 500, b'{"error":"internal error"}')
            return
        await _respond(send, 200, payload)
        elapsed = time.perf_counter() - began
        self.metrics.latency.observe(elapsed)
        self._record(decision, request.username, elapsed)

    def _record(self, decision: Decision, username: str, elapsed: float) -> None:
        self.metrics.requests.labels("allowed" if decision.allowed else "denied").inc()
        for reasons in (decision.denied, decision.warned, decision.audited):
            for r in reasons:
                self.metrics.failures.labels(r.check_id, r.enforcement.value).inc()
        logging_on = self.log.isEnabledFor(logging.INFO)
        if not logging_on and self.on_decision is None:
            return
        record = decision.record()
        record["event"] = "admission.decision"
        record["user"] = username
        record["catalog"] = self.policy.catalog_digest
        record["time"] = self.clock().isoformat()
        record["duration_ms"] = round(elapsed * 1000, 3)
        if logging_on:
            self.log.info(orjson.dumps(record).decode())
        if self.on_decision is not None:
            try:
                self.on_decision(record)
            except Exception as exc:  # the hook may not take the webhook down with it
                self.metrics.errors.labels("hook").inc()
                self.log.error(orjson.dumps({"event": "admission.hook_error", "decision_id": decision.uid,
                                             "error": f"{type(exc).__name__}: {exc}"}).decode())

    def _reject(self, cause: str, reason: str, peer: Any, uid: str = "") -> None:
        self.metrics.errors.labels(cause).inc()
        self.metrics.requests.labels("error").inc()
        host = peer[0] if isinstance(peer, (list, tuple)) and peer else ""
        self.log.warning(orjson.dumps({"event": "admission.rejected", "cause": cause, "reason": reason[:500],
                                       "uid": uid, "peer": host, "time": self.clock().isoformat()}).decode())


def tls_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+; with a client CA, a client certificate signed by it is required."""
    return server_tls_context(cert_file, key_file, client_ca_file, client_cert_required=True)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    cert_file: Path
    key_file: Path
    host: str = "127.0.0.1"
    port: int = 8443
    client_ca_file: Path | None = None
    #: the apiserver keeps idle connections 90 s; closing sooner races its next POST into an EOF
    keep_alive_seconds: int = 120
    cert_reload_seconds: float = 30.0


class WebhookServer:
    """uvicorn (httptools, uvloop) around an :class:`AdmissionApp`, in the foreground or a thread."""

    def __init__(self, app: AdmissionApp, settings: ServerSettings) -> None:
        import uvicorn

        self.app = app
        self.settings = settings
        self.ssl = tls_context(settings.cert_file, settings.key_file, settings.client_ca_file)
        self._stamp = self._cert_stamp()
        app.on_startup.append(self._start_reloader)
        self.config = uvicorn.Config(
            app, host=settings.host, port=settings.port, loop="uvloop", http="httptools", lifespan="on",
            interface="asgi3", access_log=False, log_config=None, log_level="warning", server_header=False,
            timeout_keep_alive=settings.keep_alive_seconds, backlog=2048,
            ssl_certfile=str(settings.cert_file), ssl_keyfile=str(settings.key_file),
            ssl_context_factory=lambda _config, _default: self.ssl,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port (settings.port may be 0: any free port, for tests and benchmarks)."""
        sock = self._bind()
        return int(sock.getsockname()[1])

    def _bind(self) -> socket.socket:
        if self._socket is None:
            family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.settings.host, self.settings.port))
            sock.listen(self.config.backlog)
            sock.set_inheritable(True)
            self._socket = sock
        return self._socket

    def _serve(self) -> None:
        self.server.run(sockets=[self._bind()])

    def _cert_stamp(self) -> tuple[float, float]:
        try:
            return (os.stat(self.settings.cert_file).st_mtime, os.stat(self.settings.key_file).st_mtime)
        except OSError:
            return self._stamp

    async def _start_reloader(self) -> None:
        asyncio.get_running_loop().create_task(self._reload_certificates())

    async def _reload_certificates(self) -> None:
        """cert-manager rotates the serving cert in place; new handshakes pick it up (event-loop thread)."""
        while not self.server.should_exit:
            await asyncio.sleep(self.settings.cert_reload_seconds)
            stamp = self._cert_stamp()
            if stamp != self._stamp:
                try:
                    self.ssl.load_cert_chain(str(self.settings.cert_file), str(self.settings.key_file))
                    self._stamp = stamp
                except (OSError, ssl.SSLError) as exc:  # half-written pair: retry on the next tick
                    logging.getLogger(DECISION_LOGGER).warning("certificate reload failed: %s", exc)

    def run(self) -> None:
        """Serve in the foreground until SIGTERM/SIGINT."""
        self._serve()

    def start(self, timeout: float = 10.0) -> None:
        """Serve from a background thread (tests, benchmarks); returns once the socket listens."""
        self._bind()
        self._thread = threading.Thread(target=self._serve, name="kubepci-webhook", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"webhook server did not start on {self.settings.host}:{self.settings.port}")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @contextlib.contextmanager
    def running(self) -> Iterator[WebhookServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

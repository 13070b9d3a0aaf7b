"""The few ASGI and TLS pieces both kubepci servers (admission webhook, trail ingestion) share.

Both are raw ASGI apps on uvicorn: no framework sits on their hot path (the webhook's p99 budget is
5 ms), so these helpers are all the "framework" there is.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["Message", "Receive", "Scope", "Send", "header", "read_body", "respond", "server_tls_context"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (ASGI names are lower case)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` (the rest is not buffered); b"" when the
    client went away."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json",
                  extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def server_tls_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None, *,
                       client_cert_required: bool = True) -> ssl.SSLContext:
    """TLS 1.2+ server context. With a client CA, client certificates are verified against it:
    required (the webhook), or asked for but optional so the app can answer 401 with a reason
    (the trail, which also accepts per-source tokens)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if client_cert_required else ssl.CERT_OPTIONAL
    return ctx

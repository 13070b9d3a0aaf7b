"""Request bodies to leaves: split, validate, review, and envelope one delivery.

One call turns one HTTP request body into the entries of one ``append_batch``:

* ``k8s-audit``: an ``audit.k8s.io/v1`` (or ``v1beta1``) ``EventList``, the API server's audit
  webhook body; one leaf per item.
* ``falco``: a Falco ``http_output`` alert or a falcosidekick webhook payload (one JSON object),
  or a JSON array of them; one leaf per alert.

**Exact bytes.** A leaf's payload must be the bytes that arrived, never a re-serialisation
(reference/audit-trail.md section 9), so each item is *sliced* out of the body. The slicing uses
the standard library's C JSON scanner, not a second hand-written parser: the body is decoded as
UTF-8 once, the two outer levels (the EventList object and its ``items`` array) are walked here,
and every value in them is read by ``JSONDecoder.raw_decode(text, pos)``, which parses exactly one
value starting at ``pos`` and returns where it ended. Those are character offsets; for an ASCII
body (what the API server sends: Go escapes nothing else, but real objects rarely hold other
text) they are byte offsets too, and otherwise each is converted by encoding the text between
consecutive offsets, which is linear in the body. The item is therefore parsed exactly once and
its bytes are ``body[start:end]``, which tests check re-parse to the same value.

**What is refused.** A body that is not UTF-8 JSON, not the expected shape, or beyond the nesting
the scanner allows raises :class:`IngestError` (HTTP 400) and nothing is stored. A well-formed
list with one bad *item* is not refused: the API server retries a rejected batch and then drops
all of it, so refusing 399 good events for one odd one would lose evidence. The bad item becomes
a ``rejected`` leaf instead (its exact bytes, the reason as its rule), reported in the answer.

**Review.** Every accepted event goes through the 10.4.1.1 :class:`~kubepci.auditlog.rules.Reviewer`
and each alert becomes an ``alert`` leaf right after its event, in the same batch, so an alert is
durable exactly when its evidence is. :class:`Ingestor` holds the reviewer's state and is not
thread-safe: the server runs it on one thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from kubepci.auditlog.envelope import (
    Envelope,
    EnvelopeError,
    IndexFields,
    NewEntry,
    falco_entry,
    format_time,
    k8s_audit_entry,
    normalize_time,
)
from kubepci.auditlog.events import alert_entry
from kubepci.auditlog.rules import Reviewer
from kubepci.auditlog.rules_data import Alert
from kubepci.errors import InputError

__all__ = [
    "ENDPOINTS",
    "IngestBatch",
    "IngestError",
    "Ingestor",
    "RawItem",
    "rejected_entry",
    "split_compact",
    "split_event_list",
    "split_falco",
]

ENDPOINTS: Final = ("k8s-audit", "falco")
_WS = re.compile(r"[ \t\n\r]*")
_MAX_REASON = 300


class IngestError(InputError):
    """The body as a whole cannot be accepted (answered 400); nothing of it is stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True, slots=True)
class RawItem:
    """One value of a list in the body: its exact bytes and what they parse to."""

    raw: bytes
    value: Any


class _Text:
    """A decoded body with a cursor, mapping character offsets back to byte offsets."""

    __slots__ = ("_ascii", "_byte", "_char", "body", "pos", "text")

    def __init__(self, body: bytes) -> None:
        try:
            self.text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IngestError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
        self.body = body
        self._ascii = len(self.text) == len(body)
        self._char = self._byte = 0
        self.pos = 0

    def byte_offset(self, char: int) -> int:
        """Byte offset of character ``char``; calls must not go backwards (linear overall)."""
        if self._ascii:
            return char
        self._byte += len(self.text[self._char : char].encode("utf-8"))
        self._char = char
        return self._byte

    def fail(self, message: str, pos: int | None = None) -> IngestError:
        where = self.pos if pos is None else pos
        line = self.text.count("\n", 0, where) + 1
        column = where - self.text.rfind("\n", 0, where)
        return IngestError(f"not valid JSON: {message}: line {line} column {column} (char {where})")

    def skip_ws(self) -> str:
        """Skip whitespace; the next character, or '' at the end."""
        match = _WS.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str, what: str) -> None:
        if self.skip_ws() != char:
            raise self.fail(f"expecting {what}")
        self.pos += 1

    def value(self) -> Any:
        """Parse one JSON value at the cursor with the C scanner; the cursor moves past it."""
        self.skip_ws()
        try:
            value, end = _DECODER.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise IngestError(f"not valid JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:
            raise self.fail(str(exc) if isinstance(exc, ValueError) else "nested too deeply") from None
        self.pos = end
        return value

    def items(self) -> Iterator[RawItem]:
        """The values of the array at the cursor, with their exact bytes."""
        self.expect("[", "'['")
        if self.skip_ws() == "]":
            self.pos += 1
            return
        while True:
            self.skip_ws()
            start = self.pos
            value = self.value()
            yield RawItem(self.body[self.byte_offset(start) : self.byte_offset(self.pos)], value)
            following = self.skip_ws()
            self.pos += 1
            if following == "]":
                return
            if following != ",":
                raise self.fail("expecting ',' or ']' after an array item", self.pos - 1)

    def end(self) -> None:
        if self.skip_ws():
            raise self.fail("extra data after the JSON value")


def split_event_list(body: bytes) -> tuple[dict[str, Any], list[RawItem]]:
    """The EventList's other members and its items (exact bytes each); :class:`IngestError` if bad."""
    compact = split_compact(body)
    members, items = compact if compact is not None else _split_event_list_text(body)
    kind, api_version = members.get("kind"), members.get("apiVersion")
    if kind != "EventList":
        raise IngestError(f"expected an audit.k8s.io EventList, got kind={kind!r}")
    if not (isinstance(api_version, str) and api_version.startswith("audit.k8s.io/")):
        raise IngestError(f"expected apiVersion audit.k8s.io/v1, got {api_version!r}")
    return members, items


#: What Go's encoding/json escapes that a plain JSON writer does not (HTML characters and the two
#: JavaScript line terminators); they can only occur inside strings, so replacing the bytes is exact.
_GO_ESCAPES: Final = ((b"&", b"\\u0026"), (b"<", b"\\u003c"), (b">", b"\\u003e"),
                      ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def _go_escaped(data: bytes) -> bytes:
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def split_compact(body: bytes) -> tuple[dict[str, Any], list[RawItem]] | None:
    """The fast path of :func:`split_event_list`, for a body in compact form; None otherwise.

    The API server's webhook body is Go's compact ``encoding/json`` output. orjson parses it in
    half the time the standard library's scanner needs, and writes compact JSON too, so the body
    is rebuilt from the parsed values -- each item with orjson, with Go's extra escapes or without
    -- and compared with what arrived. Only when the rebuilt body equals the received bytes
    (surrounding whitespace aside) is it used, and then each item's exact bytes *are* its rebuilt
    serialisation, with nothing left to slice or trust. Any other body (spacing, another float or
    escape style, duplicate keys, ``-0``, a number orjson cannot hold, bad JSON) returns None and
    takes the careful path, which also words the errors.
    """
    body_stripped = body.strip(b" \t\r\n")  # JSON's whitespace; Go's Encoder ends with a newline
    try:
        doc = orjson.loads(body_stripped)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    values = doc.get("items")
    if type(values) is not list:
        return None
    dumps = orjson.dumps
    items = [dumps(value) for value in values]
    members = {key: value for key, value in doc.items() if key != "items"}
    parts = [b'"items":[' + b",".join(items) + b"]" if key == "items" else dumps(key) + b":" + dumps(value)
             for key, value in doc.items()]
    rebuilt = b"{" + b",".join(parts) + b"}"
    if rebuilt != body_stripped:
        escaped = _go_escaped(rebuilt)
        if escaped is rebuilt or escaped != body_stripped:
            return None
        items = [_go_escaped(item) for item in items]
    return members, [RawItem(raw, value) for raw, value in zip(items, values, strict=True)]


def _split_event_list_text(body: bytes) -> tuple[dict[str, Any], list[RawItem]]:
    """The careful path: any spacing and escaping, and a precise reason for a bad body."""
    doc = _Text(body)
    members: dict[str, Any] = {}
    items: list[RawItem] | None = None
    doc.expect("{", "an EventList object")
    if doc.skip_ws() == "}":
        doc.pos += 1
    else:
        while True:
            if doc.skip_ws() != '"':
                raise doc.fail("expecting a member name in double quotes")
            key = doc.value()
            doc.expect(":", "':' after a member name")
            if key == "items":
                if items is not None:
                    raise IngestError("EventList has two 'items' members")
                doc.skip_ws()
                if doc.text.startswith("null", doc.pos):
                    doc.pos += 4
                    items = []
                else:
                    items = list(doc.items())
            else:
                members[key] = doc.value()
            following = doc.skip_ws()
            doc.pos += 1
            if following == "}":
                break
            if following != ",":
                raise doc.fail("expecting ',' or '}' after an object member", doc.pos - 1)
    doc.end()
    return members, items or []


def split_falco(body: bytes) -> tuple[bool, list[RawItem]]:
    """``(single, alerts)``: one alert object, or a JSON array of alerts; :class:`IngestError` if bad."""
    doc = _Text(body)
    first = doc.skip_ws()
    if first == "[":
        items = list(doc.items())
        doc.end()
        return False, items
    if first != "{":
        raise doc.fail("expecting a Falco alert object or an array of them")
    start = doc.pos
    value = doc.value()
    item = RawItem(body[doc.byte_offset(start) : doc.byte_offset(doc.pos)], value)
    doc.end()
    return True, [item]


def rejected_entry(
    raw: bytes, reason: str, value: object, *, source: str, received_at: str, batch_id: str | None
) -> NewEntry:
    """Leaf for an item that could not become an event: its exact bytes, and why as the rule.

    The index keeps the auditID and stage when they are readable, so a retried delivery of the
    same bad item dedupes like any other.
    """
    obj: Mapping[str, Any] = value if isinstance(value, dict) else {}
    audit_id, stage = obj.get("auditID"), obj.get("stage")
    index = IndexFields(
        audit_id=audit_id[:1024] if isinstance(audit_id, str) and audit_id else None,
        stage=stage[:1024] if isinstance(stage, str) and stage else None,
        event_time=normalize_time(obj.get("stageTimestamp")) or normalize_time(obj.get("time")),
        rule=f"invalid-event: {reason}"[:_MAX_REASON], priority="Warning",
    )
    index = IndexFields(**{k: _safe(v) for k, v in index.to_dict().items()})
    envelope = Envelope(source=source, received_at=received_at, payload_sha256=hashlib.sha256(raw).hexdigest(),
                        kind="rejected", index=index, batch_id=batch_id)
    return NewEntry.build(envelope, raw)


def _safe(value: object) -> Any:
    """Index text as the envelope builders make it: UTF-8 encodable, no NUL (see envelope._text)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "backslashreplace").decode("utf-8")
    return value


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """What one request body became. ``entries`` go to one ``append_batch`` in this order.

    ``items`` gives, per item of the body, its position in ``entries`` and its rejection reason
    (None when accepted), so the answer can report each item's leaf index.
    """

    endpoint: str
    source: str
    batch_id: str
    received_at: str
    entries: tuple[NewEntry, ...]
    items: tuple[tuple[int, str | None], ...]
    alerts: tuple[Alert, ...] = ()
    alert_positions: tuple[int, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(1 for _, reason in self.items if reason is None)

    @property
    def rejected(self) -> list[tuple[int, str]]:
        return [(n, reason) for n, (_, reason) in enumerate(self.items) if reason is not None]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while one body is turned into leaves.

    A 400-event EventList becomes some 40,000 short-lived objects, none in a reference cycle; the
    collector kept rescanning them and tripled the cost of parsing (measured: 11 us per 1.5 KB
    event without collections, 30-40 us with). Reference counting still frees everything.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Ingestor:
    """Turns request bodies into leaves and runs the automated review. One thread at a time.

    ``review=False`` skips the review (for benchmarks that separate its cost). A reviewer may be
    passed in to share its context; otherwise a default one is made.
    """

    def __init__(
        self,
        reviewer: Reviewer | None = None,
        *,
        review: bool = True,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.reviewer = reviewer or Reviewer()
        self.review = review
        self.clock = clock

    def ingest(self, endpoint: str, body: bytes, *, source: str, received: dt.datetime | None = None) -> IngestBatch:
        with _gc_paused():
            if endpoint == "k8s-audit":
                return self.k8s_audit(body, source=source, received=received)
            if endpoint == "falco":
                return self.falco(body, source=source, received=received)
        raise IngestError(f"unknown ingest endpoint {endpoint!r}")

    def k8s_audit(self, body: bytes, *, source: str, received: dt.datetime | None = None) -> IngestBatch:
        """Leaves for an EventList body (raises :class:`IngestError` for a bad body)."""
        members, items = split_event_list(body)
        moment = received or self.clock()
        at = format_time(moment)
        batch_id = hashlib.sha256(body).hexdigest()[:32]
        out = _Builder("k8s-audit", source, batch_id, at)
        for item in items:
            value = item.value
            if not isinstance(value, dict):
                out.reject(item, f"an EventList item must be an object, got {type(value).__name__}")
                continue
            try:
                entry = k8s_audit_entry(item.raw, source=source, received_at=at, batch_id=batch_id, event=value)
            except EnvelopeError as exc:
                out.reject(item, str(exc))
                continue
            out.accept(entry)
            if self.review:
                out.alerts(self.reviewer.review_k8s_event(value, moment), source, entry)
        return out.batch({"kind": members.get("kind"), "apiVersion": members.get("apiVersion")})

    def falco(self, body: bytes, *, source: str, received: dt.datetime | None = None) -> IngestBatch:
        """Leaves for a Falco or falcosidekick body; a single invalid alert is a bad body."""
        single, items = split_falco(body)
        moment = received or self.clock()
        at = format_time(moment)
        batch_id = hashlib.sha256(body).hexdigest()[:32]
        out = _Builder("falco", source, batch_id, at)
        for item in items:
            value = item.value
            try:
                if not isinstance(value, dict):
                    raise EnvelopeError(f"a Falco alert must be an object, got {type(value).__name__}")
                entry = falco_entry(item.raw, source=source, received_at=at, batch_id=batch_id, alert=value)
            except EnvelopeError as exc:
                if single:
                    raise IngestError(str(exc)) from None
                out.reject(item, str(exc))
                continue
            out.accept(entry)
            if self.review:
                out.alerts(self.reviewer.review_falco(value, moment), source, entry)
        return out.batch({})

    def tick(self, now: dt.datetime | None = None) -> list[NewEntry]:
        """Alert leaves from the reviewer's periodic checks (silent sources, missing heartbeats)."""
        moment = now or self.clock()
        at = format_time(moment)
        return [alert_entry(alert, received_at=at) for alert in self.reviewer.tick(moment)]


class _Builder:
    """Accumulates one batch: events, rejections and alerts in body order."""

    __slots__ = ("alert_list", "alert_positions", "at", "batch_id", "endpoint", "entries", "items", "source")

    def __init__(self, endpoint: str, source: str, batch_id: str, at: str) -> None:
        self.endpoint, self.source, self.batch_id, self.at = endpoint, source, batch_id, at
        self.entries: list[NewEntry] = []
        self.items: list[tuple[int, str | None]] = []
        self.alert_list: list[Alert] = []
        self.alert_positions: list[int] = []

    def accept(self, entry: NewEntry) -> None:
        self.items.append((len(self.entries), None))
        self.entries.append(entry)

    def reject(self, item: RawItem, reason: str) -> None:
        self.items.append((len(self.entries), reason))
        self.entries.append(rejected_entry(item.raw, reason, item.value, source=self.source, received_at=self.at,
                                           batch_id=self.batch_id))

    def alerts(self, alerts: list[Alert], source: str, event: NewEntry) -> None:
        for alert in alerts:
            self.alert_positions.append(len(self.entries))
            self.alert_list.append(alert)
            self.entries.append(alert_entry(alert, received_at=self.at, event_source=source,
                                            event_sha256=event.envelope.payload_sha256))

    def batch(self, extra: Mapping[str, Any]) -> IngestBatch:
        return IngestBatch(
            endpoint=self.endpoint, source=self.source, batch_id=self.batch_id, received_at=self.at,
            entries=tuple(self.entries), items=tuple(self.items), alerts=tuple(self.alert_list),
            alert_positions=tuple(self.alert_positions), extra=dict(extra),
        )

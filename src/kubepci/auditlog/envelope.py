"""Leaf envelopes: the small canonical JSON document each Merkle leaf hashes.

A leaf is never the received event itself. Received bytes are kept verbatim beside the tree and the
leaf is an RFC 8785 (JCS) envelope naming the source, our receive time, the SHA-256 of those exact
bytes, the kind of record and a normalised index. Why:

* hashing the parsed-and-re-serialised event would make the proof depend on a JSON library's key
  order, float and escape rules -- only the exact received bytes can be re-hashed by a third party;
* the raw payload may be pruned after retention (PCI DSS 10.5.1) while the envelope, and so every
  proof, stays verifiable;
* the index (who, what, where, outcome, when) is what requirement 10.2.2 asks each record to show,
  and it is bound into the tree so a search result can be proven too.

Everything here is pure: bytes and dicts in, :class:`NewEntry` out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

import orjson
import rfc8785

from kubepci.auditlog.merkle import leaf_hash
from kubepci.errors import InputError

__all__ = [
    "ENVELOPE_VERSION",
    "INDEX_FIELDS",
    "KINDS",
    "Envelope",
    "EnvelopeError",
    "IndexFields",
    "NewEntry",
    "canonical_json",
    "dedupe_key",
    "detect_kind",
    "falco_entry",
    "format_time",
    "k8s_audit_entry",
    "normalize_time",
    "parse_json_object",
    "record_entry",
]

ENVELOPE_VERSION: Final = 1
KINDS: Final = ("k8s-audit", "falco", "admission", "scan", "waiver", "heartbeat", "alert", "gap", "rejected")
INDEX_FIELDS: Final = (
    "user", "verb", "resource", "namespace", "name", "code", "source_ip", "audit_id", "stage",
    "event_time", "rule", "priority",
)
_MAX_INDEX_TEXT = 1024  # the index is for search; the full value stays in the raw payload
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?([Zz]|[+-]\d{2}:?\d{2})"
)
_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")
_NORMALIZED_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


class EnvelopeError(InputError):
    """A payload cannot become a leaf (not JSON, not an object, not the expected kind of record)."""


_SAFE_INT = 1 << 53
# For documents made only of objects with ASCII keys, arrays, strings, safe integers, booleans and
# null, RFC 8785 output is exactly what orjson writes with sorted keys: ASCII keys sort the same by
# UTF-16 code unit as by code point, strings escape the same characters (", \\, control characters
# with \\b \\t \\n \\f \\r or lower-case \\u00xx) and nothing else, and such integers have one
# decimal form. Envelopes and our own records are always such documents. This path costs ~0.5 us
# for an alert record against ~4 us for the standard library's sorting encoder and ~30 us for
# rfc8785.dumps (measured on a 2-core machine, 2026-11); test_envelope.py checks the two agree.
_JCS_OPTIONS = orjson.OPT_SORT_KEYS


def _jcs_subset(value: object) -> bool:
    """True for documents of objects with ASCII keys, arrays, strings, safe integers, booleans and
    null (subclasses too). Iterative, with exact-type checks first: this runs for every record."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is dict:
            for key, member in item.items():  # type: ignore[attr-defined]
                if not (isinstance(key, str) and key.isascii()):
                    return False
                if type(member) is not str and member is not None:
                    stack.append(member)
        elif kind is list:
            stack.extend(item)  # type: ignore[arg-type]
        elif isinstance(item, bool) or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not -_SAFE_INT < item < _SAFE_INT:
                return False
        elif isinstance(item, dict):
            stack.append(dict(item))
        elif isinstance(item, list):
            stack.extend(item)
        else:
            return False
    return True


def _canonical_known(value: dict[str, Any] | list[Any]) -> bytes:
    """:func:`canonical_json` for documents built here, already known to be in the JCS subset."""
    try:
        return orjson.dumps(value, option=_JCS_OPTIONS)
    except orjson.JSONEncodeError as exc:  # a lone surrogate: not encodable as UTF-8
        raise EnvelopeError(f"cannot canonicalise value: {exc}") from None


# C-accelerated JSON string quoting of the json module (the ensure_ascii=False flavour): escapes
# exactly ", \\ and the control characters, with lower-case \\u00xx -- the RFC 8785 string rules.
_quote: Callable[[str], str] = json.encoder.encode_basestring


def _envelope_bytes(
    source: str, received_at: str, payload_sha256: str, kind: str, ix: IndexFields, batch_id: str | None
) -> bytes:
    """RFC 8785 bytes of an envelope, written directly (keys in sorted order).

    Same output as ``_canonical_known(envelope.to_dict())`` (test_envelope.py checks the two agree
    on arbitrary text), at about a fifth of the cost: no dict is built and nothing is sorted. Falls
    back to the general encoder for a code outside the integers JCS writes plainly.
    """
    code = ix.code
    if code is not None and (type(code) is not int or not -_SAFE_INT < code < _SAFE_INT):
        raise _NotPlain
    audit_id, event_time, name, namespace, priority, resource, rule, source_ip, stage, user, verb = [
        "null" if value is None else _quote(value)
        for value in (ix.audit_id, ix.event_time, ix.name, ix.namespace, ix.priority, ix.resource, ix.rule,
                      ix.source_ip, ix.stage, ix.user, ix.verb)
    ]
    text = "".join((
        '{"batch_id":' + _quote(batch_id) + ',"index":{"audit_id":' if batch_id is not None
        else '{"index":{"audit_id":',
        audit_id, ',"code":', "null" if code is None else str(code),
        ',"event_time":', event_time, ',"name":', name, ',"namespace":', namespace,
        ',"priority":', priority, ',"resource":', resource, ',"rule":', rule,
        ',"source_ip":', source_ip, ',"stage":', stage, ',"user":', user,
        ',"verb":', verb, '},"kind":', _quote(kind), ',"payload_sha256":', _quote(payload_sha256),
        ',"received_at":', _quote(received_at), ',"source":', _quote(source), ',"v":1}',
    ))
    try:
        return text.encode("utf-8")
    except UnicodeError as exc:
        raise EnvelopeError(f"cannot canonicalise value: {exc}") from None


class _NotPlain(Exception):
    """The envelope has a value the direct writer does not handle; use the general encoder."""


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``; lone surrogates and floats outside I-JSON are rejected."""
    try:
        if _jcs_subset(value):
            return orjson.dumps(value, option=_JCS_OPTIONS)
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, UnicodeError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"cannot canonicalise value: {exc}") from None


def format_time(moment: dt.datetime) -> str:
    """Fixed-width UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: sorts as text, so stores compare it directly."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    m = moment.astimezone(dt.UTC)  # not strftime: glibc writes year 635 as "635", not "0635"
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
            f"{m.microsecond:06d}Z")


def normalize_time(value: object) -> str | None:
    """An RFC 3339 timestamp in :func:`format_time` form, or None if ``value`` is not one.

    Kubernetes MicroTime has 6 fractional digits and Falco 9; fractions past microseconds are
    truncated (the raw payload keeps the original). Offsets are converted to UTC.
    """
    if not isinstance(value, str):
        return None
    if len(value) == 27 and value.isascii() and _NORMALIZED_TIME_RE.fullmatch(value):  # MicroTime: already so
        return value if _valid_date(value) else None
    match = _TIME_RE.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        tz = dt.timezone(sign * offset)
    try:
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz
        )
    except ValueError:
        return None
    return format_time(moment)


def _valid_date(text: str) -> bool:
    """The calendar check :func:`normalize_time` makes, for a value already in normalised form."""
    try:
        dt.datetime.fromisoformat(text)  # a tenth of the cost of building it from six int() calls
    except ValueError:
        return False
    return True


def _text(value: object) -> str | None:
    """Index text: strings only, bounded, encodable as UTF-8 (JCS needs that), and without NUL.

    NUL becomes U+FFFD: PostgreSQL text cannot hold it, and one request for ``/pods/a%00b`` would
    otherwise make the store refuse the API server's whole batch on every retry. The raw payload
    keeps the original; the index is for search.
    """
    if type(value) is str and value.isascii() and 0 < len(value) <= _MAX_INDEX_TEXT and "\x00" not in value:
        return value  # the common case: nothing to cut or escape
    if not isinstance(value, str) or not value:
        return None
    text = value[:_MAX_INDEX_TEXT].replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape in the payload
        text = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    return text


def _code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 1000:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 3:
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class IndexFields:
    """The normalised, searchable facts of one record (PCI DSS 10.2.2), all optional."""

    user: str | None = None
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    code: int | None = None
    source_ip: str | None = None
    audit_id: str | None = None
    stage: str | None = None
    event_time: str | None = None
    rule: str | None = None
    priority: str | None = None

    def to_dict(self) -> dict[str, str | int | None]:
        return {name: getattr(self, name) for name in INDEX_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexFields:
        """Strict inverse of :meth:`to_dict`, used when reading envelopes back."""
        unknown = set(data) - set(INDEX_FIELDS)
        if unknown:
            raise EnvelopeError(f"unknown index field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for item in fields(cls):
            value = data.get(item.name)
            want: type = int if item.name == "code" else str
            if value is not None and (type(value) is not want):
                raise EnvelopeError(f"index field {item.name!r} must be {want.__name__} or null")
            values[item.name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The leaf document. ``seq`` is deliberately absent: a leaf's position *is* its sequence number."""

    source: str
    received_at: str
    payload_sha256: str
    kind: str
    index: IndexFields = field(default_factory=IndexFields)
    batch_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EnvelopeError(f"unknown record kind {self.kind!r}")
        if not self.source:
            raise EnvelopeError("record source must not be empty")
        if not _SHA256_HEX_RE.fullmatch(self.payload_sha256):
            raise EnvelopeError("payload_sha256 must be 64 lower-case hex digits")
        if not _NORMALIZED_TIME_RE.fullmatch(self.received_at):
            raise EnvelopeError(f"received_at {self.received_at!r} is not a normalised UTC timestamp")

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": ENVELOPE_VERSION,
            "source": self.source,
            "received_at": self.received_at,
            "payload_sha256": self.payload_sha256,
            "kind": self.kind,
            "index": self.index.to_dict(),
        }
        if self.batch_id is not None:
            doc["batch_id"] = self.batch_id
        return doc

    def canonical(self) -> bytes:
        """The exact bytes that are stored and leaf-hashed (RFC 8785; see :func:`canonical_json`)."""
        if ENVELOPE_VERSION == 1:
            try:
                return _envelope_bytes(
                    self.source, self.received_at, self.payload_sha256, self.kind, self.index, self.batch_id
                )
            except _NotPlain:
                pass
        return _canonical_known(self.to_dict())

    @classmethod
    def parse(cls, data: bytes) -> Envelope:
        """Read a stored envelope back (any version-1 document written by :meth:`canonical`)."""
        doc = parse_json_object(data)
        if doc.get("v") != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported envelope version {doc.get('v')!r}")
        extra = set(doc) - {"v", "source", "received_at", "payload_sha256", "kind", "index", "batch_id"}
        if extra:
            raise EnvelopeError(f"unknown envelope field(s): {', '.join(sorted(extra))}")
        index = doc.get("index")
        if not isinstance(index, dict):
            raise EnvelopeError("envelope index must be an object")
        try:
            return cls(
                source=_require_str(doc, "source"),
                received_at=_require_str(doc, "received_at"),
                payload_sha256=_require_str(doc, "payload_sha256"),
                kind=_require_str(doc, "kind"),
                index=IndexFields.from_dict(index),
                batch_id=_optional_str(doc, "batch_id"),
            )
        except TypeError as exc:
            raise EnvelopeError(str(exc)) from None


def _require_str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise EnvelopeError(f"envelope field {key!r} must be a string")
    return value


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise EnvelopeError(f"envelope field {key!r} must be a string")
    return value


def dedupe_key(
    source: str, event_id: str | None, stage: str | None, payload_sha256: str, event_time: str | None = None
) -> str:
    """Identity of a delivery for idempotent retries: (source, event id, stage, payload hash).

    The payload hash is part of the key, so only a byte-identical re-delivery of the same event
    from the same source is recognised as a retry; anything that differs is a new leaf. The four
    parts are hashed, so the key has a fixed size and no separator ambiguity.

    The key starts with the event's own time (which the payload determines, so a retry has the
    same one). That orders the stores' unique index roughly by arrival: a random hash alone put
    every insert on a random index page, which halved append throughput once a trail held a
    million events.
    """
    # the JCS form of the list [source, event_id, stage, payload_sha256], written directly
    text = f"[{_quote(source)},{_quote(event_id or '')},{_quote(stage or '')},{_quote(payload_sha256)}]"
    try:
        data = text.encode("utf-8")
    except UnicodeError as exc:
        raise EnvelopeError(f"cannot canonicalise value: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    return f"{event_time or '-'}/{digest}"


@dataclass(frozen=True, slots=True)
class NewEntry:
    """Everything a store needs to append one leaf: envelope, its bytes and hash, the raw payload.

    The leaf hash and the dedupe key are derived from the envelope when asked for, not stored:
    the ingest server never asks (its append worker derives both from the envelope bytes it is
    sent), and computing them up front cost its one busy thread 1.5 us an entry.
    """

    envelope: Envelope
    envelope_bytes: bytes
    raw: bytes

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.envelope_bytes)

    @property
    def dedupe_key(self) -> str:
        envelope = self.envelope
        index = envelope.index
        return dedupe_key(envelope.source, index.audit_id, index.stage, envelope.payload_sha256, index.event_time)

    @classmethod
    def build(cls, envelope: Envelope, raw: bytes) -> NewEntry:
        if hashlib.sha256(raw).hexdigest() != envelope.payload_sha256:
            raise EnvelopeError("payload_sha256 does not match the raw payload")
        return cls._hashed(envelope, raw)

    @classmethod
    def _hashed(cls, envelope: Envelope, raw: bytes) -> NewEntry:
        """:meth:`build` for callers that computed ``payload_sha256`` from ``raw`` themselves."""
        return cls(envelope, envelope.canonical(), raw)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON object parse (no NaN/Infinity); the bytes themselves are never re-serialised."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EnvelopeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    return value if type(value) is dict or isinstance(value, dict) else {}


def _payload_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def detect_kind(obj: Mapping[str, Any]) -> str | None:
    """``k8s-audit`` for an audit Event, ``falco`` for a Falco alert, None for anything else."""
    if obj.get("kind") == "Event" or ("auditID" in obj and "stage" in obj):
        return "k8s-audit"
    if "rule" in obj and ("priority" in obj or "time" in obj):
        return "falco"
    return None


def _k8s_index(event: Mapping[str, Any]) -> IndexFields:
    get = event.get
    kind = get("kind", "Event")
    if kind != "Event":
        raise EnvelopeError(f"not an audit Event (kind={kind!r})")
    api_version = get("apiVersion")
    if api_version is not None and not (isinstance(api_version, str) and api_version.startswith("audit.k8s.io/")):
        raise EnvelopeError(f"not an audit Event (apiVersion={api_version!r})")
    audit_id, stage = get("auditID"), get("stage")
    if not isinstance(audit_id, str) or not audit_id:
        raise EnvelopeError("audit Event without an auditID")
    if not isinstance(stage, str) or not stage:
        raise EnvelopeError("audit Event without a stage")
    user = _mapping(get("user"))
    ref = _mapping(get("objectRef"))
    ips = get("sourceIPs")
    # The apiserver lists X-Forwarded-For, then X-Real-Ip, then the peer: only the last is trustworthy.
    texts = (user.get("username"), get("verb"), ref.get("resource"), ref.get("subresource"), ref.get("namespace"),
             ref.get("name"), ips[-1] if type(ips) is list and ips else None, audit_id, stage)
    # _text, with its common case (plain ASCII within bounds) inline: nine calls an event add up
    user_name, verb, resource, subresource, namespace, name, source_ip, audit_id, stage = [
        value if type(value) is str and value.isascii() and 0 < len(value) <= _MAX_INDEX_TEXT and "\x00" not in value
        else _text(value) for value in texts
    ]
    if resource and subresource:
        resource = f"{resource}/{subresource}"
    event_time = (
        normalize_time(get("stageTimestamp"))
        or normalize_time(get("requestReceivedTimestamp"))
        or normalize_time(get("timestamp"))
    )
    return IndexFields(
        user=user_name,
        verb=verb,
        resource=resource,
        namespace=namespace,
        name=name,
        code=_code(_mapping(get("responseStatus")).get("code")),
        source_ip=source_ip,
        audit_id=audit_id,
        stage=stage,
        event_time=event_time,
    )


def k8s_audit_entry(
    raw: bytes,
    *,
    source: str,
    received_at: str,
    batch_id: str | None = None,
    event: Mapping[str, Any] | None = None,
) -> NewEntry:
    """Leaf for one ``audit.k8s.io`` Event (v1, v1beta1, or without apiVersion as in Falco traces).

    ``raw`` are the exact received bytes of this one event; ``event`` may be passed when the caller
    has already parsed them (a webhook EventList item), otherwise they are parsed here.
    """
    parsed = parse_json_object(raw) if event is None else event
    envelope = Envelope(
        source=source, received_at=received_at, payload_sha256=_payload_hash(raw), kind="k8s-audit",
        index=_k8s_index(parsed), batch_id=batch_id,
    )
    return NewEntry._hashed(envelope, raw)


def _first_text(fields_: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = fields_.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        text = _text(value)
        if text:
            return text
    return None


def _falco_index(alert: Mapping[str, Any]) -> IndexFields:
    rule, priority = alert.get("rule"), alert.get("priority")
    if not isinstance(rule, str) or not rule:
        raise EnvelopeError("Falco alert without a rule")
    if not isinstance(priority, str) or not priority:
        raise EnvelopeError("Falco alert without a priority")
    out = _mapping(alert.get("output_fields"))
    resource = _first_text(out, "ka.target.resource")
    subresource = _first_text(out, "ka.target.subresource")
    if resource and subresource:
        resource = f"{resource}/{subresource}"
    return IndexFields(
        user=_first_text(out, "ka.user.name", "user.name"),
        verb=_first_text(out, "ka.verb"),
        resource=resource,
        namespace=_first_text(out, "k8s.ns.name", "ka.target.namespace"),
        name=_first_text(out, "k8s.pod.name", "ka.target.name"),
        code=_code(out.get("ka.response.code")),
        source_ip=_first_text(out, "ka.sourceips", "fd.cip"),
        audit_id=_text(alert.get("uuid")) or _first_text(out, "ka.auditid"),
        event_time=normalize_time(alert.get("time")),
        rule=_text(rule),
        priority=_text(priority),
    )


def falco_entry(
    raw: bytes,
    *,
    source: str,
    received_at: str,
    batch_id: str | None = None,
    alert: Mapping[str, Any] | None = None,
) -> NewEntry:
    """Leaf for one Falco JSON alert (native ``json_output`` or falcosidekick's FalcoPayload)."""
    parsed = parse_json_object(raw) if alert is None else alert
    envelope = Envelope(
        source=source, received_at=received_at, payload_sha256=_payload_hash(raw), kind="falco",
        index=_falco_index(parsed), batch_id=batch_id,
    )
    return NewEntry._hashed(envelope, raw)


def record_entry(
    kind: str,
    record: Mapping[str, Any],
    *,
    source: str,
    received_at: str,
    index: IndexFields | None = None,
    batch_id: str | None = None,
) -> NewEntry:
    """Leaf for a record kubepci produces itself (admission decision, scan digest, gap, ...).

    Here we own the bytes, so the raw payload is the record's canonical JSON.
    """
    raw = canonical_json(dict(record))
    envelope = Envelope(
        source=source, received_at=received_at, payload_sha256=_payload_hash(raw), kind=kind,
        index=index or IndexFields(), batch_id=batch_id,
    )
    return NewEntry._hashed(envelope, raw)

"""Who may deliver to the ingest server, and as which source (PCI DSS 10.3.2: no injected events).

Anyone able to POST an EventList could otherwise write the audit trail, so every request must
authenticate as a configured *source*, by a client certificate (mTLS) or a bearer token, and a
source may only use its own endpoint. The source's name is what each envelope records as its
origin, and what silence detection tracks (10.7).

A sources file (YAML, ``kubepci trail serve --sources FILE``)::

    sources:
      - name: apiserver              # recorded in every envelope
        endpoint: k8s-audit          # k8s-audit | falco
        client_names: [kube-apiserver-audit]   # certificate CN or DNS/URI SAN; "*": any the CA signed
        silence: 5m                  # record a gap after this long without a delivery
      - name: falco
        endpoint: falco
        token_file: /run/secrets/falco-token   # or token_sha256: <hex>
        silence: 2h

Without a file and with a client CA, two sources accept any certificate that CA signed:
``apiserver`` on ``k8s-audit`` and ``falco`` on ``falco``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubepci.auditlog.ingest import ENDPOINTS
from kubepci.errors import ConfigError

__all__ = [
    "DEFAULT_SILENCE",
    "AuthResult",
    "SourceSpec",
    "Sources",
    "default_sources",
    "load_sources",
    "parse_duration",
    "peer_identities",
]

DEFAULT_SILENCE: Mapping[str, dt.timedelta] = {
    "k8s-audit": dt.timedelta(minutes=5),  # far above the apiserver's 30 s batch wait
    "falco": dt.timedelta(hours=2),  # Falco's metrics snapshot comes hourly by default
}
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


def parse_duration(value: object, where: str) -> dt.timedelta:
    """``90``, ``90s``, ``5m``, ``2h`` or ``1d``."""
    match = _DURATION.fullmatch(str(value).strip()) if isinstance(value, int | str) else None
    if match is None or isinstance(value, bool) or int(match.group(1)) <= 0:
        raise ConfigError(f"{where}: not a positive duration like 30s, 5m or 2h: {value!r}")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One sender: its name, its endpoint, how it authenticates, how long it may stay silent."""

    name: str
    endpoint: str
    client_names: frozenset[str] = frozenset()
    token_sha256: bytes | None = None
    silence: dt.timedelta | None = None

    def accepts_identity(self, identities: Iterable[str]) -> bool:
        return "*" in self.client_names or not self.client_names.isdisjoint(identities)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """``source`` when the request may proceed, else the HTTP status (401/403) and why."""

    source: SourceSpec | None
    status: int = 200
    reason: str = ""


class Sources:
    """The configured sources, and the decision which one a request comes from."""

    def __init__(self, specs: Sequence[SourceSpec]) -> None:
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"sources: duplicate name(s): {', '.join(duplicates)}")
        self.specs = tuple(specs)

    @property
    def uses_certificates(self) -> bool:
        return any(spec.client_names for spec in self.specs)

    @property
    def uses_tokens(self) -> bool:
        return any(spec.token_sha256 is not None for spec in self.specs)

    def silence_thresholds(self) -> dict[str, dt.timedelta]:
        return {spec.name: spec.silence for spec in self.specs if spec.silence is not None}

    def authenticate(self, endpoint: str, authorization: bytes | None, identities: frozenset[str] | None) -> AuthResult:
        """Bearer token if one is sent, else the verified client certificate's identities.

        401: no credentials, or a token that matches no source (RFC 6750 ``invalid_token``);
        403: a known sender on another source's endpoint, or a certificate no source is pinned to.
        """
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return AuthResult(None, 401, "Authorization must be 'Bearer <token>'")
            digest = hashlib.sha256(token.strip().encode("latin-1")).digest()
            matched = [
                spec for spec in self.specs
                if spec.token_sha256 is not None and hmac.compare_digest(spec.token_sha256, digest)
            ]
            if not matched:
                return AuthResult(None, 401, "unknown bearer token")
            return self._on_endpoint(matched, endpoint, "this token")
        if identities is None:
            return AuthResult(None, 401, "no client certificate or bearer token")
        pinned = [s for s in self.specs if s.client_names and s.accepts_identity(identities)]
        if not pinned:
            shown = ", ".join(sorted(identities)) or "no name"
            return AuthResult(None, 403, f"client certificate ({shown}) is not pinned to any source")
        return self._on_endpoint(pinned, endpoint, "this client certificate")

    @staticmethod
    def _on_endpoint(candidates: Sequence[SourceSpec], endpoint: str, what: str) -> AuthResult:
        for spec in candidates:
            if spec.endpoint == endpoint:
                return AuthResult(spec)
        allowed = ", ".join(sorted({s.endpoint for s in candidates}))
        return AuthResult(None, 403, f"{what} may only deliver to {allowed}, not {endpoint}")


def default_sources() -> Sources:
    """Any certificate the client CA signed: ``apiserver`` for audit events, ``falco`` for alerts."""
    return Sources([
        SourceSpec("apiserver", "k8s-audit", frozenset({"*"}), silence=DEFAULT_SILENCE["k8s-audit"]),
        SourceSpec("falco", "falco", frozenset({"*"}), silence=DEFAULT_SILENCE["falco"]),
    ])


def _spec(raw: Any, where: str, base: Path) -> SourceSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a source must be a mapping")
    unknown = set(raw) - {"name", "endpoint", "client_names", "token_sha256", "token_file", "silence"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    name, endpoint = raw.get("name"), raw.get("endpoint")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be 1-128 characters of letters, digits and ._:/-")
    if endpoint not in ENDPOINTS:
        raise ConfigError(f"{where}: endpoint must be one of {', '.join(ENDPOINTS)}")
    clients = raw.get("client_names") or []
    if not isinstance(clients, list) or not all(isinstance(c, str) and c for c in clients):
        raise ConfigError(f"{where}: client_names must be a list of names")
    token: bytes | None = None
    if "token_sha256" in raw and "token_file" in raw:
        raise ConfigError(f"{where}: give token_sha256 or token_file, not both")
    if "token_sha256" in raw:
        text = str(raw["token_sha256"]).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", text):
            raise ConfigError(f"{where}: token_sha256 must be 64 hex digits")
        token = bytes.fromhex(text)
    elif "token_file" in raw:
        path = base / str(raw["token_file"])
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read token_file {path}: {exc.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(f"{where}: the token in {path} is shorter than 16 characters")
        token = hashlib.sha256(secret.encode("utf-8")).digest()
    if not clients and token is None:
        raise ConfigError(f"{where}: source {name!r} has neither client_names nor a token: nobody could use it")
    silence = parse_duration(raw["silence"], f"{where}.silence") if "silence" in raw else DEFAULT_SILENCE[endpoint]
    return SourceSpec(name, str(endpoint), frozenset(clients), token, silence)


def load_sources(path: Path) -> Sources:
    """Read a sources file (see the module docstring); :class:`ConfigError` names what is wrong."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read sources file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(doc, Mapping) or set(doc) != {"sources"} or not isinstance(doc["sources"], list):
        raise ConfigError(f"{path}: expected a mapping with one key, 'sources', holding a list")
    if not doc["sources"]:
        raise ConfigError(f"{path}: no sources: nobody could deliver events")
    return Sources([_spec(raw, f"{path}: sources[{n}]", path.parent) for n, raw in enumerate(doc["sources"])])


def peer_identities(peercert: Mapping[str, Any] | None) -> frozenset[str] | None:
    """CN, DNS and URI names of a verified peer certificate (``SSLObject.getpeercert()``), or None."""
    if not peercert:
        return None
    names: set[str] = set()
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names.add(str(value))
    return frozenset(names)

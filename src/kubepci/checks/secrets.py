"""Credentials and card data in plain Kubernetes objects (controls.md DAT-005, CFG-002, DAT-007).

Env values, ConfigMaps and annotations are readable by anyone who can ``get`` the object, are
printed by ``kubectl describe`` and end up in Git, Helm release Secrets and backups. PCI DSS 8.6.2
forbids hard-coded application passwords, 2.2.2 forbids vendor defaults and 3.5.1 forbids
readable PANs wherever they are stored. No message here ever contains the value it judged:
credentials are named by key only, card numbers are masked to first six and last four digits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import chain
from typing import Any

from kubepci.checks._credentials import (
    credential_kind,
    decode_base64_text,
    default_passwords,
    is_env_reference,
    is_flag_value,
    is_ignored,
    is_password_key,
    is_sensitive_key,
    key_path,
)
from kubepci.checks._pan import find_pans, mask_text, may_contain_pan
from kubepci.checks._registry import CheckContext, check
from kubepci.checks._util import mapping
from kubepci.inventory import CONTAINER_FIELDS, WORKLOAD_KINDS, Container, Workload
from kubepci.model import Enforcement, Resource, Severity, Violation

__all__: list[str] = []


def _text(value: Any) -> str | None:
    """A scalar as YAML wrote it; unquoted numbers arrive as int and still count."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _env(c: Container) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    items = c.body.get("env")
    if not isinstance(items, list):
        return
    for i, entry in enumerate(items):
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            yield i, entry["name"], entry


def _literal_env(c: Container) -> Iterator[tuple[str, str, str]]:
    """(name, literal value, path) of env entries that carry a real literal (not ``$(VAR)``)."""
    for i, name, entry in _env(c):
        text = _text(entry.get("value"))
        if text is None or not text.strip() or is_env_reference(text):
            continue
        yield name, text, f"{c.path}.env[{i}].value"


def _string_items(section: Any) -> Iterator[tuple[str, str]]:
    for key, value in mapping(section).items():
        text = _text(value)
        if text is not None:
            yield str(key), text


def _decoded_items(section: Any) -> Iterator[tuple[str, str]]:
    for key, value in mapping(section).items():
        text = decode_base64_text(value)
        if text is not None:
            yield str(key), text


@check(
    id="secret-env-literal",
    title="Credentials must not be literal environment values",
    requirements=("8.6.2", "8.3.2"),
    blog=("R3", "R8"),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Move the value into a Secret and mount it as a file or reference it with valueFrom.",
    refs=("DAT-005", "C-0012", "KSV-0109", "CIS 5.4.1"),
)
def env_literal(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A literal env value is stored in the pod spec in clear text and visible to every reader of it.

    Fails when the variable's name says it is a credential (password, token, secret, API/access/
    private key, credential, auth) or when its value looks like one (PEM private key, JWT, AWS key
    id, GitHub/Slack token, URL with a password). Names that only describe a secret
    (``PASSWORD_FILE``, ``TOKEN_URL``, ``MAX_TOKENS``) and switches (``ALLOW_EMPTY_PASSWORD=yes``)
    pass; ``credentials.ignore_keys`` exempts further names.
    """
    ignore = ctx.config.ignore_keys
    for c in wl.containers:
        for name, text, path in _literal_env(c):
            if is_ignored(name, ignore):
                continue
            if is_sensitive_key(name):
                if not is_flag_value(text):
                    yield Violation(f"container {c.name!r} sets sensitive env {name} to a literal value", path)
                continue
            kind = credential_kind(text)
            if kind is not None:
                yield Violation(
                    f"env {name} of container {c.name!r} holds a literal value that looks like {kind}", path
                )


@check(
    id="secret-configmap-credentials",
    title="ConfigMaps must not hold credentials",
    requirements=("8.6.2", "8.3.2"),
    blog=("R3", "R8"),
    severity=Severity.HIGH,
    targets=("ConfigMap",),
    remediation="Move credentials out of the ConfigMap into a Secret, ideally synced from a secret store.",
    refs=("DAT-005", "C-0012", "KSV-01010"),
)
def configmap_credentials(cm: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """ConfigMaps are not access-controlled like Secrets (RBAC rarely restricts them, they are never
    encrypted at rest). Fails on a non-empty value under a credential-like key, or on a value
    (``data`` or decoded ``binaryData``) that looks like a private key, JWT or access token."""
    ignore = ctx.config.ignore_keys
    for section, items in (("data", _string_items(cm.body.get("data"))),
                           ("binaryData", _decoded_items(cm.body.get("binaryData")))):
        for key, text in items:
            if is_ignored(key, ignore) or not text.strip():
                continue
            path = key_path(section, key)
            if is_sensitive_key(key):
                if not is_flag_value(text):
                    yield Violation(f"ConfigMap key {key!r} looks like a credential", path)
                continue
            kind = credential_kind(text)
            if kind is not None:
                yield Violation(f"ConfigMap value of key {key!r} looks like {kind}", path)


@check(
    id="secret-env-secretkeyref",
    title="Secrets should be mounted as files rather than passed as environment variables",
    requirements=("8.6.2",),
    blog=("R3", "R8"),
    severity=Severity.LOW,
    targets=("workload",),
    remediation="Mount the Secret as a read-only volume and have the application read the file.",
    refs=("DAT-005", "C-0207", "CKV_K8S_35"),
    enforcement=Enforcement.AUDIT,
    cel=(
        "variables.containers.all(c, (!has(c.env) || c.env.all(e, !has(e.valueFrom) || "
        "!has(e.valueFrom.secretKeyRef) || size(e.valueFrom.secretKeyRef) == 0)) && (!has(c.envFrom) || "
        "c.envFrom.all(s, !has(s.secretRef) || size(s.secretRef) == 0)))"
    ),
)
def env_secret_ref(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Environment variables leak: crash dumps, ``/proc/<pid>/environ``, child processes and debug
    endpoints all expose them. Mounted files can be rotated without a restart and read once."""
    for c in wl.containers:
        for i, name, entry in _env(c):
            ref = mapping(mapping(entry.get("valueFrom")).get("secretKeyRef"))
            if ref:
                secret, key = ref.get("name"), ref.get("key")
                yield Violation(
                    f"container {c.name!r} reads Secret {secret!r} key {key!r} into env {name}",
                    f"{c.path}.env[{i}].valueFrom.secretKeyRef",
                )
        env_from = c.body.get("envFrom")
        if isinstance(env_from, list):
            for i, source in enumerate(env_from):
                ref = mapping(mapping(source).get("secretRef"))
                if ref:
                    secret = ref.get("name")
                    yield Violation(
                        f"container {c.name!r} imports every key of Secret {secret!r} as env variables",
                        f"{c.path}.envFrom[{i}].secretRef",
                    )


@check(
    id="vendor-default-password",
    title="Vendor default passwords must not be used",
    requirements=("2.2.2", "8.3.5", "8.3.6", "8.6.2"),
    blog=("R2",),
    severity=Severity.CRITICAL,
    targets=("workload", "ConfigMap", "Secret"),
    remediation="Generate a unique strong password, store it in a Secret and change the account's password.",
    refs=("CFG-002", "C-0012", "KSV-0109"),
)
def vendor_default_password(target: Workload | Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Default passwords are the first thing an attacker tries (2.2.2). Compares, case-sensitively
    and trimmed, the values of password-like keys (and well-known image variables such as
    POSTGRES_PASSWORD or RABBITMQ_DEFAULT_PASS) in env literals, ConfigMap data and decoded Secret
    data/stringData against kubepci's curated vendor-default list plus
    ``credentials.extra_default_passwords``."""
    defaults = default_passwords()
    extra = frozenset(p.strip() for p in ctx.config.extra_default_passwords)
    ignore = ctx.config.ignore_keys

    def known(name: str, text: str) -> bool:
        value = text.strip()
        return (bool(value) and (value in defaults or value in extra)
                and is_password_key(name) and not is_ignored(name, ignore))

    if isinstance(target, Workload):
        for c in target.containers:
            for name, text, path in _literal_env(c):
                if known(name, text):
                    yield Violation(
                        f"env {name} of container {c.name!r} is a known vendor default password", path
                    )
        return
    sections: tuple[tuple[str, Iterator[tuple[str, str]]], ...]
    if target.kind == "ConfigMap":
        sections = (("data", _string_items(target.body.get("data"))),)
    elif target.kind == "Secret":
        sections = (("data", _decoded_items(target.body.get("data"))),
                    ("stringData", _string_items(target.body.get("stringData"))))
    else:
        return
    for section, items in sections:
        for key, text in items:
            if known(key, text):
                yield Violation(f"{target.kind} key {key!r} is a known vendor default password",
                                key_path(section, key))


_PAN_MIN = 13  # shorter strings cannot hold a PAN: skip them before any call


def _dig(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _pan_candidate(value: Any) -> str | None:
    if type(value) is str:  # exact type check: this runs for every label of every object
        return value if len(value) >= _PAN_MIN else None
    if type(value) is int and value >= 10 ** (_PAN_MIN - 1):
        return str(value)
    return None


def _pan_in_mapping(section: Any, what: str, prefix: str, out: list[Violation]) -> None:
    """Scan the values of one string map; paths and messages are built only for hits."""
    if not section or not isinstance(section, Mapping):
        return
    try:  # one prefilter call per map instead of one per key and value; newlines never join digits
        blob = "\n".join(chain(section.keys(), section.values()))
    except TypeError:
        blob = "\n".join(map(str, chain(section.keys(), section.values())))
    if not may_contain_pan(blob):
        return
    for key, value in section.items():
        name = str(key)
        if len(name) >= _PAN_MIN and find_pans(name):  # a key is echoed in messages: never verbatim then
            name = mask_text(name)
            out.append(Violation(f"{what} name {name!r} contains a card number", key_path(prefix, name)))
        if type(value) is str and len(value) < _PAN_MIN:
            continue
        text = _pan_candidate(value)
        if text is None:
            continue
        for m in find_pans(text):
            out.append(Violation(f"{what} {name!r} contains card number {m.masked} ({m.brand})",
                                 key_path(prefix, name)))


def _pan_in_env(pod_spec: Mapping[str, Any], spec_path: str, out: list[Violation]) -> None:
    for field in CONTAINER_FIELDS:
        containers = pod_spec.get(field)
        if not isinstance(containers, list):
            continue
        for ci, c in enumerate(containers):
            env = c.get("env") if isinstance(c, Mapping) else None
            if not isinstance(env, list):
                continue
            for ei, entry in enumerate(env):
                text = _pan_candidate(entry.get("value")) if isinstance(entry, Mapping) else None
                if text is None:
                    continue
                for m in find_pans(text):
                    out.append(Violation(
                        f"env {mask_text(str(entry.get('name')))} of container {c.get('name')!r} contains card "
                        f"number {m.masked} ({m.brand})",
                        f"{spec_path}.{field}[{ci}].env[{ei}].value",
                    ))


@check(
    id="pan-exposure",
    title="Card numbers must not appear in cluster objects",
    requirements=("3.2.1", "3.5.1", "12.5.2", "A3.2.5"),
    blog=("R3",),
    severity=Severity.CRITICAL,
    targets=("*",),
    remediation="Remove the card number, purge it from history and backups and run the PAN-found procedure.",
    refs=("DAT-007",),
    include_exempt=True,
)
def pan_exposure(res: Resource, ctx: CheckContext) -> list[Violation]:
    """A PAN in a ConfigMap, an env value, an annotation or a label is stored unprotected outside any
    declared cardholder-data store (3.2.1, 3.5.1) and widens the CDE to everything that can read it.

    Detection: 13–19 digits (optionally 4-4-4-4 or 4-6-5 with single spaces or dashes) that pass
    Luhn and match a card brand's issuer range and length, not embedded in a longer number. Secret
    data is not scanned: a Secret is an access-controlled store and DAT-001 covers its encryption.
    Exempt (system) namespaces are scanned too: card data is out of place everywhere.
    """
    out: list[Violation] = []
    meta = res.body.get("metadata")
    if isinstance(meta, Mapping):
        _pan_in_mapping(meta.get("annotations"), "annotation", "metadata.annotations", out)
        _pan_in_mapping(meta.get("labels"), "label", "metadata.labels", out)
    kind = res.kind
    if kind == "ConfigMap":
        _pan_in_mapping(res.body.get("data"), "ConfigMap key", "data", out)
        binary = dict(_decoded_items(res.body.get("binaryData")))
        _pan_in_mapping(binary, "ConfigMap binary key", "binaryData", out)
    elif kind in WORKLOAD_KINDS:
        keys = WORKLOAD_KINDS[kind]
        pod_spec = _dig(res.body, keys)
        if not isinstance(pod_spec, Mapping):
            return out
        spec_path = ".".join(keys)
        if kind != "Pod":  # a Pod's own metadata was scanned above
            tmeta = mapping(_dig(res.body, (*keys[:-1], "metadata")))
            prefix = spec_path.removesuffix("spec") + "metadata."
            _pan_in_mapping(tmeta.get("annotations"), "annotation", prefix + "annotations", out)
            _pan_in_mapping(tmeta.get("labels"), "label", prefix + "labels", out)
        _pan_in_env(pod_spec, spec_path, out)
    return out

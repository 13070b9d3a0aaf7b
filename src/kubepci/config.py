"""Typed run configuration: ``kubepci.yaml`` (DESIGN.md "Configuration").

One file serves the scan, the webhook, the analyzers and the trail. Unknown keys are errors with
the file and line, because a misspelt scope key silently shrinking the CDE is the worst failure a
compliance tool can have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubepci.errors import ConfigError
from kubepci.model import Enforcement, Severity

if TYPE_CHECKING:
    import yaml

__all__ = [
    "CheckOverride",
    "Config",
    "Flow",
    "ScopeRule",
    "load_config",
    "parse_config",
]

# The accepted shape; a dict value is a nested mapping with fixed keys, "*" means free-form keys.
_SCHEMA: Mapping[str, Any] = {
    "scope": {
        "cde": {"namespaces": None, "selector": None},
        "connected": {"namespaces": None, "selector": None},
        "out_of_scope": {"namespaces": None, "selector": None},
        "exempt": {"namespaces": None, "selector": None},
    },
    "zones": "*",
    "flows": None,
    "images": {"allowed_registries": None, "require_digest": None},
    "credentials": {"extra_default_passwords": None, "ignore_keys": None},
    "tls": {"min_version": None, "max_certificate_days": None, "min_rsa_bits": None, "min_ec_bits": None,
            "expiry_warning_days": None},
    "thresholds": {"min_uid": None},
    "runtime": {"sandboxed_runtime_classes": None},
    "rbac": {"allowed_admin_subjects": None, "allowed_secret_readers": None},
    "netpol": {"ipblock_matches_pod_ips": None},
    "admission": {"namespace": None, "service": None, "failure_policy_cde": None, "failure_policy_other": None,
                  "exclude_namespaces": None, "timeout_seconds": None},
    "checks": "*",
    "waivers": None,
    "trail": {"store": None, "key": None},
}

DEFAULT_EXEMPT = ("kube-system", "kube-public", "kube-node-lease")
DEFAULT_SANDBOXED = ("gvisor", "kata", "kata-containers", "kata-qemu", "kata-fc")


@dataclass(frozen=True, slots=True)
class ScopeRule:
    namespaces: tuple[str, ...] = ()
    selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Flow:
    """One approved flow of the PCI 1.2.1 ruleset."""

    source: str
    destination: str
    ports: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class CheckOverride:
    severity: Severity | None = None
    enforcement: Enforcement | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    cde: ScopeRule = ScopeRule()
    connected: ScopeRule = ScopeRule()
    out_of_scope: ScopeRule = ScopeRule()
    exempt: ScopeRule = ScopeRule(namespaces=DEFAULT_EXEMPT)
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    flows: tuple[Flow, ...] = ()
    allowed_registries: tuple[str, ...] = ()
    require_digest: str = "cde"  # cde | all | none
    extra_default_passwords: tuple[str, ...] = ()
    ignore_keys: tuple[str, ...] = ()
    tls_min_version: str = "1.2"
    max_certificate_days: int = 397
    expiry_warning_days: int = 30
    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    min_uid: int = 10000
    sandboxed_runtime_classes: tuple[str, ...] = DEFAULT_SANDBOXED
    allowed_admin_subjects: tuple[str, ...] = ()
    allowed_secret_readers: tuple[str, ...] = ()  # "Kind:namespace/name" or "Kind:name" of subjects
    ipblock_matches_pod_ips: bool = True  # upstream e2e semantics (netpol-rbac.md §2.3)
    admission_namespace: str = "kubepci-system"
    admission_service: str = "kubepci-admission"
    failure_policy_cde: str = "Fail"
    failure_policy_other: str = "Ignore"
    admission_exclude_namespaces: tuple[str, ...] = ()
    admission_timeout_seconds: int = 5
    checks: Mapping[str, CheckOverride] = field(default_factory=dict)
    waivers_path: Path | None = None
    trail_store: str | None = None
    trail_key: Path | None = None
    source: str = "(defaults)"


def _check_keys(node: yaml.Node, schema: Any, source: str, where: str) -> None:
    import yaml

    if schema is None or schema == "*":
        return
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{source}:{node.start_mark.line + 1}: {where or 'document'} must be a mapping")
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in schema:
            allowed = ", ".join(sorted(schema))
            raise ConfigError(
                f"{source}:{key_node.start_mark.line + 1}: unknown key {(where + '.' if where else '')}{key!s}"
                f" (allowed: {allowed})"
            )
        _check_keys(value_node, schema[key], source, f"{where}.{key}" if where else str(key))


def _strs(value: Any, what: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ConfigError(f"{source}: {what} must be a list of strings")
    return tuple(str(v) for v in value)


def _rule(raw: Any, what: str, source: str, default: ScopeRule | None = None) -> ScopeRule:
    if raw is None:
        return default or ScopeRule()
    selector = raw.get("selector") or {}
    if not isinstance(selector, Mapping):
        raise ConfigError(f"{source}: scope.{what}.selector must be a mapping of label to value")
    return ScopeRule(_strs(raw.get("namespaces"), f"scope.{what}.namespaces", source),
                     {str(k): str(v) for k, v in selector.items()})


def _int(raw: Mapping[str, Any], key: str, default: int, source: str, section: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{source}: {section}.{key} must be a non-negative integer")
    return value


def parse_config(text: str, source: str = "kubepci.yaml", base_dir: Path | None = None) -> Config:
    """Parse and validate config text; raises ConfigError naming file and line."""
    import yaml  # here, not at the top: a scan without a config file never needs PyYAML

    try:
        node = yaml.compose(text, Loader=yaml.CSafeLoader)
        raw = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None or raw is None:
        return Config(source=source)
    _check_keys(node, _SCHEMA, source, "")
    base = base_dir or Path(".")
    scope = raw.get("scope") or {}
    zones_raw = raw.get("zones") or {}
    if not isinstance(zones_raw, Mapping):
        raise ConfigError(f"{source}: zones must map a zone name to a list of CIDRs")
    zones = {str(k): _strs(v, f"zones.{k}", source) for k, v in zones_raw.items()}
    flows: list[Flow] = []
    for i, f in enumerate(raw.get("flows") or []):
        if not isinstance(f, Mapping) or "from" not in f or "to" not in f:
            raise ConfigError(f"{source}: flows[{i}] needs 'from' and 'to'")
        unknown = set(f) - {"from", "to", "ports", "reason"}
        if unknown:
            raise ConfigError(f"{source}: flows[{i}] has unknown keys: {', '.join(sorted(unknown))}")
        flows.append(Flow(str(f["from"]), str(f["to"]), _strs(f.get("ports"), f"flows[{i}].ports", source),
                          str(f.get("reason", ""))))
    images = raw.get("images") or {}
    require_digest = str(images.get("require_digest", "cde"))
    if require_digest not in ("cde", "all", "none"):
        raise ConfigError(f"{source}: images.require_digest must be cde, all or none")
    creds = raw.get("credentials") or {}
    tls = raw.get("tls") or {}
    thresholds = raw.get("thresholds") or {}
    runtime = raw.get("runtime") or {}
    rbac = raw.get("rbac") or {}
    netpol = raw.get("netpol") or {}
    admission = raw.get("admission") or {}
    for key in ("failure_policy_cde", "failure_policy_other"):
        if admission.get(key, "Fail") not in ("Fail", "Ignore"):
            raise ConfigError(f"{source}: admission.{key} must be Fail or Ignore")
    checks: dict[str, CheckOverride] = {}
    checks_raw = raw.get("checks") or {}
    if not isinstance(checks_raw, Mapping):
        raise ConfigError(f"{source}: checks must map a check id to overrides")
    for check_id, ov in checks_raw.items():
        if not isinstance(ov, Mapping) or set(ov) - {"severity", "enforcement", "enabled"}:
            raise ConfigError(f"{source}: checks.{check_id} accepts only severity, enforcement, enabled")
        try:
            sev = Severity.parse(str(ov["severity"])) if "severity" in ov else None
            enf = Enforcement(str(ov["enforcement"])) if "enforcement" in ov else None
        except ValueError as exc:
            raise ConfigError(f"{source}: checks.{check_id}: {exc}") from None
        checks[str(check_id)] = CheckOverride(sev, enf, bool(ov.get("enabled", True)))
    waivers = raw.get("waivers")
    trail = raw.get("trail") or {}
    tls_min = str(tls.get("min_version", "1.2"))
    if tls_min not in ("1.2", "1.3"):
        raise ConfigError(f"{source}: tls.min_version must be 1.2 or 1.3")
    sandboxed = _strs(runtime.get("sandboxed_runtime_classes"), "runtime.sandboxed_runtime_classes", source)
    return Config(
        cde=_rule(scope.get("cde"), "cde", source),
        connected=_rule(scope.get("connected"), "connected", source),
        out_of_scope=_rule(scope.get("out_of_scope"), "out_of_scope", source),
        exempt=_rule(scope.get("exempt"), "exempt", source, ScopeRule(namespaces=DEFAULT_EXEMPT)),
        zones=zones,
        flows=tuple(flows),
        allowed_registries=_strs(images.get("allowed_registries"), "images.allowed_registries", source),
        require_digest=require_digest,
        extra_default_passwords=_strs(creds.get("extra_default_passwords"), "credentials.extra_default_passwords",
                                      source),
        ignore_keys=_strs(creds.get("ignore_keys"), "credentials.ignore_keys", source),
        tls_min_version=tls_min,
        max_certificate_days=_int(tls, "max_certificate_days", 397, source, "tls"),
        expiry_warning_days=_int(tls, "expiry_warning_days", 30, source, "tls"),
        min_rsa_bits=_int(tls, "min_rsa_bits", 2048, source, "tls"),
        min_ec_bits=_int(tls, "min_ec_bits", 256, source, "tls"),
        min_uid=_int(thresholds, "min_uid", 10000, source, "thresholds"),
        sandboxed_runtime_classes=sandboxed or DEFAULT_SANDBOXED,
        allowed_admin_subjects=_strs(rbac.get("allowed_admin_subjects"), "rbac.allowed_admin_subjects", source),
        allowed_secret_readers=_strs(rbac.get("allowed_secret_readers"), "rbac.allowed_secret_readers", source),
        ipblock_matches_pod_ips=bool(netpol.get("ipblock_matches_pod_ips", True)),
        admission_namespace=str(admission.get("namespace", "kubepci-system")),
        admission_service=str(admission.get("service", "kubepci-admission")),
        failure_policy_cde=str(admission.get("failure_policy_cde", "Fail")),
        failure_policy_other=str(admission.get("failure_policy_other", "Ignore")),
        admission_exclude_namespaces=_strs(admission.get("exclude_namespaces"), "admission.exclude_namespaces",
                                           source),
        admission_timeout_seconds=_int(admission, "timeout_seconds", 5, source, "admission"),
        checks=checks,
        waivers_path=(base / str(waivers)) if waivers else None,
        trail_store=str(trail["store"]) if trail.get("store") else None,
        trail_key=(base / str(trail["key"])) if trail.get("key") else None,
        source=source,
    )


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    return parse_config(text, str(path), path.parent)

"""kubepci.yaml parsing: typed values, and unknown keys are errors with file and line."""

from __future__ import annotations

import pytest

from kubepci.config import Config, parse_config
from kubepci.errors import ConfigError
from kubepci.model import Enforcement, Severity

GOOD = """\
scope:
  cde: {namespaces: [payments, vault], selector: {kubepci.io/scope: cde}}
  connected: {namespaces: [ingress]}
zones:
  internet: [0.0.0.0/0]
flows:
  - {from: ingress/ingress-nginx, to: payments/api, ports: [8443/TCP], reason: "public API"}
images: {allowed_registries: [harbor.example.com/], require_digest: all}
credentials: {extra_default_passwords: [Winter2026!]}
tls: {min_version: "1.3", max_certificate_days: 90}
checks: {workload-seccomp: {severity: high, enforcement: warn}}
waivers: waivers.yaml
"""


def test_good_config_is_typed() -> None:
    cfg = parse_config(GOOD, "k.yaml")
    assert cfg.cde.namespaces == ("payments", "vault")
    assert cfg.cde.selector == {"kubepci.io/scope": "cde"}
    assert cfg.flows[0].destination == "payments/api"
    assert cfg.flows[0].ports == ("8443/TCP",)
    assert cfg.allowed_registries == ("harbor.example.com/",)
    assert cfg.require_digest == "all"
    assert cfg.tls_min_version == "1.3"
    assert cfg.max_certificate_days == 90
    assert cfg.checks["workload-seccomp"].severity is Severity.HIGH
    assert cfg.checks["workload-seccomp"].enforcement is Enforcement.WARN
    assert cfg.waivers_path is not None
    assert cfg.waivers_path.name == "waivers.yaml"
    assert cfg.exempt.namespaces == ("kube-system", "kube-public", "kube-node-lease")


def test_unknown_nested_key_names_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"k.yaml:3: unknown key scope.cde.namespace \(allowed"):
        parse_config("scope:\n  cde:\n    namespace: [payments]\n", "k.yaml")


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"k.yaml:2: unknown key scopes"):
        parse_config("zones: {}\nscopes: {}\n", "k.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images: {require_digest: sometimes}\n", "require_digest must be cde, all or none"),
        ("tls: {min_version: '1.0'}\n", "min_version must be 1.2 or 1.3"),
        ("checks: {x-y: {severity: huge}}\n", "unknown severity"),
        ("flows: [{from: a}]\n", r"flows\[0\] needs 'from' and 'to'"),
        ("scope: [1\n", "invalid YAML"),
    ],
)
def test_invalid_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "k.yaml")


def test_empty_config_is_defaults() -> None:
    assert parse_config("", "k.yaml") == Config(source="k.yaml")

"""Evaluate an ``audit.k8s.io/v1`` Policy the way the API server does, against PCI-relevant requests.

Rather than pattern-match rule shapes, the linter asks the policy what it would do with concrete
requests a human (an OIDC user, not a system component) could make: reading a Secret, exec into a
pod, changing a ClusterRoleBinding. First matching rule wins, exactly as in the apiserver's
``policy.Checker``, including ``*``/``resource/*``/``*/subresource`` resource patterns,
``resourceNames``, namespaces and non-resource URL prefixes. Expectations come from
audit-trail.md §5.5 (the recommended PCI policy) and the kubescape/CIS content rule:

- Secret, ConfigMap, TokenReview and TokenRequest bodies are never logged (exactly Metadata):
  card data or credentials in the trail would breach requirement 3 themselves, and dropping the
  events (None) would hide who read them (10.2.1.1).
- Interactive access (exec, attach, port-forward, proxies) is logged, with ``ResponseStarted`` kept
  because exec sessions are long-running and runtime detections key on that stage.
- RBAC changes are logged with at least the request body (10.2.1.5: changes to identification and
  authorization); workload, namespace, admission and identity-object changes at least as Metadata.
- Deleting Events (covering tracks, 10.2.1.7) and any other human request is logged (catch-all not None).
- ``ResponseComplete`` is never omitted: it carries the response code (10.2.2 success or failure).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EXPECTATIONS", "LEVELS", "Expectation", "Gap", "Probe", "audit_gaps", "decide", "rule_matches"]

LEVELS = {"None": 0, "Metadata": 1, "Request": 2, "RequestResponse": 3}
_HUMAN = "jane.doe@example.com"
_HUMAN_GROUPS = ("system:authenticated", "oidc:payments-admins")


@dataclass(frozen=True, slots=True)
class Probe:
    """One request the policy is asked about."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = "example"
    url: str = ""  # non-resource requests

    def describe(self) -> str:
        if self.url:
            return f"{self.verb} {self.url}"
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        group = f".{self.group}" if self.group else ""
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {res}{group}{where}"


@dataclass(frozen=True, slots=True)
class Expectation:
    """A family of requests and the levels the trail needs for them."""

    topic: str
    probes: tuple[Probe, ...]
    minimum: str
    maximum: str = "RequestResponse"
    keep_response_started: bool = False
    why: str = ""


def _probes(verbs: str, group: str, resources: str, namespace: str = "payments") -> tuple[Probe, ...]:
    out = []
    for res in resources.split():
        resource, _, sub = res.partition("/")
        for verb in verbs.split():
            out.append(Probe(verb, group, resource, sub, "" if resource in _CLUSTER_SCOPED else namespace))
    return tuple(out)


_CLUSTER_SCOPED = frozenset({"namespaces", "nodes", "clusterroles", "clusterrolebindings", "tokenreviews",
                             "customresourcedefinitions", "validatingwebhookconfigurations",
                             "mutatingwebhookconfigurations", "validatingadmissionpolicies",
                             "validatingadmissionpolicybindings", "certificatesigningrequests", "widgets"})
_READ_WRITE = "get list watch create update patch delete"
_WRITE = "create update patch delete"

EXPECTATIONS: tuple[Expectation, ...] = (
    Expectation("Secret and ConfigMap bodies",
                _probes(_READ_WRITE, "", "secrets configmaps") + _probes(_READ_WRITE, "", "secrets configmaps",
                                                                          "kube-system"),
                "Metadata", "Metadata",
                why="bodies may hold credentials or card data; reads must still be recorded"),
    Expectation("token requests and reviews",
                _probes("create", "", "serviceaccounts/token") + _probes("create", "authentication.k8s.io",
                                                                        "tokenreviews"),
                "Metadata", "Metadata", why="their bodies carry bearer tokens"),
    Expectation("interactive access to pods and nodes",
                _probes("get create", "", "pods/exec pods/attach pods/portforward")
                + _probes("get create", "", "pods/proxy services/proxy") + _probes("get", "", "nodes/proxy"),
                "Metadata", keep_response_started=True, why="exec and proxy sessions are privileged access"),
    Expectation("RBAC changes",
                _probes(_WRITE, "rbac.authorization.k8s.io", "roles rolebindings clusterroles clusterrolebindings"),
                "Request", why="changes to authorization must show what was granted (10.2.1.5)"),
    Expectation("workload changes",
                _probes(_WRITE, "", "pods pods/ephemeralcontainers")
                + _probes(_WRITE, "apps", "deployments daemonsets statefulsets replicasets")
                + _probes(_WRITE, "batch", "jobs cronjobs"),
                "Metadata", why="changes to what runs in the CDE must be attributable"),
    Expectation("identity, namespace, network and admission objects",
                _probes(_WRITE, "", "serviceaccounts namespaces nodes")
                + _probes(_WRITE, "networking.k8s.io", "networkpolicies")
                + _probes(_WRITE, "apiextensions.k8s.io", "customresourcedefinitions")
                + _probes(_WRITE, "admissionregistration.k8s.io",
                          "validatingwebhookconfigurations mutatingwebhookconfigurations validatingadmissionpolicies"
                          " validatingadmissionpolicybindings")
                + _probes(_WRITE, "certificates.k8s.io",
                          "certificatesigningrequests certificatesigningrequests/approval"),
                "Metadata", why="these objects define identities, segmentation and policy enforcement"),
    Expectation("deletion of events",
                _probes("delete deletecollection", "", "events") + _probes("delete", "events.k8s.io", "events"),
                "Metadata", why="deleting events removes evidence (10.2.1.7)"),
    Expectation("other requests by people",
                _probes("get list", "", "pods services") + _probes("get create", "example.com", "widgets"),
                "Metadata", why="every action by an individual user must be traceable (10.2.1.2)"),
)


def _has(values: Any, item: str) -> bool:
    return isinstance(values, list) and item in values


def _resource_matches(rule: Mapping[str, Any], probe: Probe) -> bool:
    groups = rule.get("resources")
    if not isinstance(groups, list) or not groups:
        return True
    combined = f"{probe.resource}/{probe.subresource}" if probe.subresource else probe.resource
    for gr in groups:
        if not isinstance(gr, Mapping) or (gr.get("group") or "") != probe.group:
            continue
        names = gr.get("resources")
        if not isinstance(names, list) or not names:
            return True
        allowed_names = gr.get("resourceNames")
        if isinstance(allowed_names, list) and allowed_names and probe.name not in allowed_names:
            continue
        for res in names:
            if not isinstance(res, str):
                continue
            if res in (combined, "*"):
                return True
            if probe.subresource and res.startswith("*/") and res[2:] == probe.subresource:
                return True
            if res.endswith("/*") and res[:-2] == probe.resource:
                return True
    return False


def _url_matches(patterns: Any, url: str) -> bool:
    for p in patterns if isinstance(patterns, list) else ():
        if isinstance(p, str) and (p == url or (p.endswith("*") and url.startswith(p[:-1]))):
            return True
    return False


def rule_matches(rule: Mapping[str, Any], probe: Probe, user: str = _HUMAN,
                 groups: Sequence[str] = _HUMAN_GROUPS) -> bool:
    users, user_groups, verbs = rule.get("users"), rule.get("userGroups"), rule.get("verbs")
    if isinstance(users, list) and users and user not in users:
        return False
    if isinstance(user_groups, list) and user_groups and not any(g in user_groups for g in groups):
        return False
    if isinstance(verbs, list) and verbs and probe.verb not in verbs:
        return False
    if probe.url:
        if rule.get("namespaces") or rule.get("resources"):
            return False
        return not rule.get("nonResourceURLs") or _url_matches(rule.get("nonResourceURLs"), probe.url)
    if rule.get("nonResourceURLs"):
        return False
    namespaces = rule.get("namespaces")
    if isinstance(namespaces, list) and namespaces and probe.namespace not in namespaces:
        return False
    return _resource_matches(rule, probe)


def decide(policy: Mapping[str, Any], probe: Probe) -> tuple[str, frozenset[str], int | None]:
    """(level, omitted stages, index of the deciding rule or None) for one request."""
    top = policy.get("omitStages")
    omitted = {s for s in top if isinstance(s, str)} if isinstance(top, list) else set()
    rules = policy.get("rules")
    for index, rule in enumerate(rules if isinstance(rules, list) else ()):
        if isinstance(rule, Mapping) and rule_matches(rule, probe):
            level = rule.get("level")
            stages = rule.get("omitStages")
            if isinstance(stages, list):
                omitted |= {s for s in stages if isinstance(s, str)}
            return (level if isinstance(level, str) and level in LEVELS else "None"), frozenset(omitted), index
    return "None", frozenset(omitted), None


@dataclass(frozen=True, slots=True)
class Gap:
    """Requests of one expectation that one rule (or no rule) handles wrongly."""

    expectation: Expectation
    rule_index: int | None
    level: str
    problem: str
    requests: tuple[str, ...]

    @property
    def path(self) -> str:
        return "rules" if self.rule_index is None else f"rules[{self.rule_index}]"

    def message(self) -> str:
        shown = ", ".join(self.requests[:4]) + (f" and {len(self.requests) - 4} more" if len(self.requests) > 4
                                                 else "")
        who = "no rule matches, so they are not logged" if self.rule_index is None else (
            f"{self.path} logs them at {self.level}")
        return f"{self.expectation.topic}: {self.problem} ({shown}); {who}: {self.expectation.why}"


def audit_gaps(policy: Mapping[str, Any]) -> Iterator[Gap]:
    """Every place where ``policy`` falls short of the expectations, grouped by deciding rule."""
    for exp in EXPECTATIONS:
        grouped: dict[tuple[int | None, str, str], list[str]] = {}
        for probe in exp.probes:
            level, omitted, index = decide(policy, probe)
            rank = LEVELS[level]
            problems = []
            if rank < LEVELS[exp.minimum]:
                problems.append(f"logged below {exp.minimum}")
            elif rank > LEVELS[exp.maximum]:
                problems.append(f"bodies logged (above {exp.maximum})")
            if rank > 0 and "ResponseComplete" in omitted:
                problems.append("ResponseComplete stage omitted, so the outcome is lost")
            if rank > 0 and exp.keep_response_started and "ResponseStarted" in omitted:
                problems.append("ResponseStarted stage omitted, so sessions are seen only when they end")
            for problem in problems:
                grouped.setdefault((index, level, problem), []).append(probe.describe())
        for (index, level, problem), requests in grouped.items():
            yield Gap(exp, index, level, problem, tuple(requests))

"""Small builders for netpol tests: the x/y/z × a/b/c cluster and one-call model compilation."""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from kubepci.analyzers.netpol import CompileOptions, NetpolModel, compile_inventory
from kubepci.config import parse_config
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import parse_text

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
POD_NAMES = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in PODS)
ALL_PAIRS = frozenset((s, d) for s in POD_NAMES for d in POD_NAMES if s != d)


def pod_ip(ns: str, pod: str) -> str:
    return f"10.0.{NAMESPACES.index(ns) + 1}.{PODS.index(pod) + 1}"


def xyz_yaml(with_ips: bool = True) -> str:
    """Three namespaces x, y, z labelled ns=<name>; pods a, b, c labelled pod=<name>, each serving
    ports 80 and 81 on TCP, UDP and SCTP under names serve-<port>-<proto>."""
    docs: list[dict[str, object]] = []
    for ns in NAMESPACES:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}})
        for pod in PODS:
            ports = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
                     for port in (80, 81) for proto in ("TCP", "UDP", "SCTP")]
            body: dict[str, object] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
                "spec": {"containers": [{"name": "cont", "image": "agnhost", "ports": ports}]},
            }
            if with_ips:
                body["status"] = {"podIP": pod_ip(ns, pod)}
            docs.append(body)
    return yaml.safe_dump_all(docs, sort_keys=False)


def build(*docs: str, config: str = "", with_xyz: bool = True, with_ips: bool = True,
          pod_ips_match: bool = True) -> NetpolModel:
    text = "\n---\n".join(([xyz_yaml(with_ips)] if with_xyz else []) + [d for d in docs if d.strip()])
    resources, problems = parse_text(text, "test.yaml")
    assert not problems, problems
    inventory = Inventory.build(resources)
    return compile_inventory(inventory, parse_config(config, "kubepci.yaml"),
                             CompileOptions(ipblock_matches_pod_ips=pod_ips_match))


def reach(model: NetpolModel, port: int, proto: str = "TCP") -> frozenset[tuple[str, str]]:
    """Allowed (src, dst) pod pairs of the x/y/z model on one port; self pairs left out like e2e."""
    out = set()
    for s in POD_NAMES:
        for d in POD_NAMES:
            if s != d and model.allowed_ports(s, d).contains(port, proto):
                out.add((s, d))
    return frozenset(out)


def into(dsts: Iterable[str], srcs: Iterable[str] = POD_NAMES) -> frozenset[tuple[str, str]]:
    dst_list = list(dsts)
    return frozenset((s, d) for s in srcs for d in dst_list if s != d)


def out_of(srcs: Iterable[str], dsts: Iterable[str] = POD_NAMES) -> frozenset[tuple[str, str]]:
    src_list = list(srcs)
    return frozenset((s, d) for s in src_list for d in dsts if s != d)


def netpol(name: str, namespace: str, spec: str) -> str:
    """A NetworkPolicy document; ``spec`` is YAML for the spec mapping."""
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": yaml.safe_load(spec)}
    return yaml.safe_dump(body, sort_keys=False)

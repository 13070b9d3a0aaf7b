"""Benchmark of the NetworkPolicy reachability engine on a synthetic large cluster.

Generates 10,000 pods in 500 namespaces with 2,000 NetworkPolicies (four per namespace: default
deny, ingress from the namespace and from monitoring on a named port, ingress from labelled
namespaces with endPort plus an ipBlock with except, egress to DNS, the namespace, databases, the
namespaces of the team it serves and an external range), then reports compile time, full
namespace-matrix time, the time of a single can-reach query after compile, and peak RSS.
Targets: compile + matrix < 5 s, query < 10 ms.

Run: .venv/bin/python bench/netpol_bench.py [--namespaces 500] [--pods-per-namespace 20]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from typing import Any

from kubepci.analyzers.netpol import compile_inventory
from kubepci.config import Config
from kubepci.inventory import Inventory
from kubepci.model import Resource, ResourceRef, SourceLocation

APPS = ("web", "api", "worker", "cache", "db")
TEAMS = ("red", "green", "blue", "gold")


def _res(kind: str, name: str, namespace: str, body: dict[str, Any], api: str = "v1") -> Resource:
    body = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace, **body.pop("meta", {})},
            **body}
    return Resource(ResourceRef(namespace, kind, name, api), body, SourceLocation("bench"))


def _netpol(ns: str, name: str, spec: dict[str, Any]) -> Resource:
    return _res("NetworkPolicy", name, ns, {"spec": spec}, "networking.k8s.io/v1")


def generate(namespaces: int, pods_per_ns: int, seed: int = 7) -> list[Resource]:
    rng = random.Random(seed)
    out: list[Resource] = []
    names = ["kube-system", "monitoring"] + [f"ns-{i:03d}" for i in range(namespaces - 2)]
    pod_ip = 0
    for i, ns in enumerate(names):
        labels = {"team": TEAMS[i % len(TEAMS)], "env": "prod" if i % 3 else "dev"}
        out.append(Resource(ResourceRef("", "Namespace", ns, "v1"),
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
                            SourceLocation("bench")))
        for p in range(pods_per_ns):
            app = APPS[p % len(APPS)] if ns not in ("kube-system", "monitoring") else (
                "kube-dns" if ns == "kube-system" else "prometheus")
            pod_ip += 1
            ip = f"10.{(pod_ip >> 16) & 255}.{(pod_ip >> 8) & 255}.{pod_ip & 255}"
            spec = {"containers": [{"name": "c", "image": "x", "ports": [
                {"name": "http", "containerPort": 8000 + (p % 3), "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9090}]}]}
            out.append(_res("Pod", f"{app}-{p}", ns, {
                "meta": {"labels": {"app": app, "tier": "backend" if p % 2 else "frontend",
                                    "version": f"v{rng.randint(1, 2)}"}},
                "spec": spec, "status": {"podIP": ip}}))
        if ns in ("kube-system", "monitoring"):
            continue
        out.append(_netpol(ns, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        out.append(_netpol(ns, "allow-local-and-metrics", {"podSelector": {}, "ingress": [
            {"from": [{"podSelector": {}}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                       "podSelector": {"matchLabels": {"app": "prometheus"}}}],
             "ports": [{"port": "metrics"}, {"port": "http"}]}]}))
        out.append(_netpol(ns, "allow-team", {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"team": TEAMS[(i + 1) % len(TEAMS)]}},
                           "podSelector": {"matchLabels": {"tier": "frontend"}}}],
                 "ports": [{"port": 8000, "endPort": 8010}]},
                {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                 "ports": [{"port": 443}]}]}))
        out.append(_netpol(ns, "egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"app": "kube-dns"}}}],
             "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"to": [{"podSelector": {}}]},
            {"to": [{"namespaceSelector": {"matchLabels": {"env": "prod"}},
                     "podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]},
            {"to": [{"namespaceSelector": {"matchLabels": {"team": TEAMS[(i - 1) % len(TEAMS)]}},
                     "podSelector": {"matchExpressions": [
                         {"key": "app", "operator": "In", "values": ["web", "api"]}]}}],
             "ports": [{"port": 8000, "endPort": 8010}]},
            {"to": [{"ipBlock": {"cidr": f"203.0.{i % 256}.0/24"}}], "ports": [{"port": 443}]}]}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namespaces", type=int, default=500)
    ap.add_argument("--pods-per-namespace", type=int, default=20)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nca-namespaces", type=int, default=50, help="namespaces of the NCA comparison case")
    ap.add_argument("--skip-nca", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    resources = generate(args.namespaces, args.pods_per_namespace)
    inventory = Inventory.build(resources)
    t1 = time.perf_counter()
    pods = sum(1 for r in resources if r.kind == "Pod")
    policies = sum(1 for r in resources if r.kind == "NetworkPolicy")
    print(f"generated {pods} pods, {args.namespaces} namespaces, {policies} policies in {t1 - t0:.2f} s")

    t1 = time.perf_counter()
    model = compile_inventory(inventory, Config())
    t2 = time.perf_counter()
    b = model.binding
    print(f"compile: {t2 - t1:.2f} s  ({b.n_pods} pod classes, {len(b.atoms)} IP atoms, "
          f"{len(set(b.ingress_sig))} ingress / {len(set(b.egress_sig))} egress signatures)")

    matrix = model.namespace_matrix()
    t3 = time.perf_counter()
    print(f"namespace matrix: {t3 - t2:.2f} s  ({len(matrix.nodes)} nodes, {len(matrix.cells)} non-empty cells)")
    print(f"compile + matrix: {t3 - t1:.2f} s (target < 5 s)")

    rng = random.Random(1)
    workloads = [e for e in model.endpoints() if e.kind == "workload"]
    pairs = [(rng.choice(workloads), rng.choice(workloads)) for _ in range(args.queries)]
    t4 = time.perf_counter()
    for src, dst in pairs:
        model.can_reach(src, dst, 8000, "TCP")
    t5 = time.perf_counter()
    per_query = (t5 - t4) / len(pairs) * 1000
    print(f"can-reach: {per_query:.3f} ms per query over {len(pairs)} queries (target < 10 ms)")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak / 1024:.0f} MiB")
    if not args.skip_nca:
        compare_with_nca(args.nca_namespaces, args.pods_per_namespace)
    return 0


def compare_with_nca(namespaces: int, pods_per_ns: int) -> None:
    """The same generator at ~1,000 pods, written as YAML: kubepci (load + compile + workload-level
    connectivity) against network-config-analyzer 2.1.0 (``--connectivity``), both timed here."""
    import subprocess
    import tempfile
    from pathlib import Path

    import yaml

    from kubepci.inventory.loaders.manifests import load_paths

    venv = Path.home() / ".cache" / "kubepci" / "nca-venv"
    nca = venv / "bin" / "nca"
    if not nca.exists():
        print(f"network-config-analyzer: not installed at {nca} (run scripts/setup-nca-oracle.sh)")
        return
    resources = generate(namespaces, pods_per_ns)
    pods = sum(1 for r in resources if r.kind == "Pod")
    with tempfile.TemporaryDirectory(prefix="kubepci-nca-bench-") as tmp:
        target = Path(tmp) / "cluster.yaml"
        ordered = sorted(resources, key=lambda r: r.kind != "Namespace")  # NCA wants namespaces first
        target.write_text(yaml.safe_dump_all([dict(r.body) for r in ordered], sort_keys=False))
        t0 = time.perf_counter()
        loaded = load_paths([str(target)])
        model = compile_inventory(Inventory.build(loaded.resources), Config())
        pairs = model.connectivity_pairs(level="workload")
        ours = time.perf_counter() - t0
        t1 = time.perf_counter()
        proc = subprocess.run([str(nca), "--connectivity", "-r", tmp, "-o", "txt_no_fw_rules",
                               "--output_endpoints", "pods"], capture_output=True, timeout=1800, check=False)
        theirs = time.perf_counter() - t1
    status = "" if proc.returncode == 0 else f" (exit {proc.returncode})"
    print(f"{pods}-pod case: kubepci {ours:.2f} s ({len(pairs)} workload pairs), "
          f"network-config-analyzer 2.1.0 {theirs:.2f} s{status}: kubepci {theirs / ours:.0f}x faster")


if __name__ == "__main__":
    sys.exit(main())

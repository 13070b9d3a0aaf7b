"""The oracle harness's own parts: normalisations (netpol-rbac.md §2.1) on literal NCA text, the generator.

These need no NCA installation: they pin how each output form NCA 2.1.0 can print is read, so a
differential failure is always about the engines and never about the harness.
"""

from __future__ import annotations

import pytest
import yaml

from tests.oracle_nca.generate import CASES, generate
from tests.oracle_nca.nca import NameMap, parse_connection, parse_nca_output
from tests.oracle_nca.relation import FULL, Ports, compare, normalise, parse_ip_endpoint

ALL_PORTS = ((1, 65535),)


def _ports(**by_proto: tuple[tuple[int, int], ...]) -> Ports:
    return Ports.build(by_proto)


@pytest.mark.parametrize(("text", "expected"), [
    ("All connections", FULL),
    ("No connections", Ports(())),
    ("{protocols:TCP,dst_ports:80}", _ports(TCP=((80, 80),))),
    ("{protocols:TCP, UDP, SCTP}", FULL),
    ("{protocols:*,dst_ports:8080}", _ports(TCP=((8080, 8080),), UDP=((8080, 8080),), SCTP=((8080, 8080),))),
    ("{dst_ports:8080}", _ports(TCP=((8080, 8080),), UDP=((8080, 8080),), SCTP=((8080, 8080),))),
    ("{protocols:TCP,dst_ports:80,90-99},{protocols:UDP,dst_ports:53}",
     _ports(TCP=((80, 80), (90, 99)), UDP=((53, 53),))),
    ("{protocols:SCTP,dst_ports:1000-2000}", _ports(SCTP=((1000, 2000),))),
    ("{protocols:ICMP}", Ports(())),
    ("{protocols:all but ICMP, UDP}", _ports(TCP=ALL_PORTS, SCTP=ALL_PORTS)),
    ("All but {protocols:TCP,dst_ports:80}", _ports(TCP=((1, 79), (81, 65535)), UDP=ALL_PORTS, SCTP=ALL_PORTS)),
    ("All but {protocols:UDP},{protocols:TCP,dst_ports:1-1024}",
     _ports(TCP=((1025, 65535),), SCTP=ALL_PORTS)),
    ("{protocols:TCP,dst_ports:0-80}", _ports(TCP=((1, 80),))),
])
def test_connection_text_becomes_port_sets(text: str, expected: Ports) -> None:
    assert parse_connection(text) == expected


def test_connection_with_a_dimension_netpol_cannot_express_is_refused() -> None:
    with pytest.raises(ValueError, match="methods"):
        parse_connection("{protocols:TCP,methods:GET}")


def test_ip_endpoints_in_every_printed_form() -> None:
    assert parse_ip_endpoint("49.50.0.0") == ((4, 0x31320000, 0x31320000),)
    assert parse_ip_endpoint("10.0.0.0-10.0.0.255") == ((4, 0x0A000000, 0x0A0000FF),)
    assert parse_ip_endpoint("192.168.0.0/24") == ((4, 0xC0A80000, 0xC0A800FF),)
    assert parse_ip_endpoint("10.0.0.0/25,10.0.1.0") == ((4, 0x0A000000, 0x0A00007F), (4, 0x0A000100, 0x0A000100))
    assert parse_ip_endpoint("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == ((6, 0, (1 << 128) - 1),)
    assert parse_ip_endpoint("x/a") is None
    assert parse_ip_endpoint("10.0.0.9-10.0.0.1") is None


DOCS = [
    {"kind": "Namespace", "metadata": {"name": "x"}},
    {"kind": "Pod", "metadata": {"name": "a", "namespace": "x"}},
    {"kind": "Deployment", "metadata": {"name": "web", "namespace": "x"}, "spec": {"replicas": 3}},
    {"kind": "StatefulSet", "metadata": {"name": "db", "namespace": "y"}, "spec": {}},
    {"kind": "Job", "metadata": {"name": "mig", "namespace": "y"}, "spec": {"parallelism": 2, "replicas": 7}},
    {"kind": "CronJob", "metadata": {"name": "nightly"}, "spec": {"jobTemplate": {}}},
    {"kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "x"}},
]


def test_nca_pod_names_map_to_kubepci_workloads() -> None:
    names = NameMap.from_documents(DOCS)
    assert dict(names.pods) == {
        "x/a": "x/a[Pod]",
        "x/web-1": "x/web[Deployment]", "x/web-2": "x/web[Deployment]",  # at most two pods per workload
        "y/db-1": "y/db[StatefulSet]",  # replicas defaults to 1
        "y/mig-1": "y/mig[Job]", "y/mig-2": "y/mig[Job]",  # Jobs count parallelism, not replicas
        "default/nightly-1": "default/nightly[CronJob]",  # no namespace means default
    }
    assert names.replicated == frozenset({"x/web[Deployment]", "y/mig[Job]"})


@pytest.mark.parametrize(("docs", "message"), [
    ([{"kind": "Pod", "metadata": {"name": "web-1", "namespace": "x"}},
      {"kind": "Deployment", "metadata": {"name": "web", "namespace": "x"}, "spec": {}}], "two pods 'x/web-1'"),
    ([{"kind": "Deployment", "metadata": {"name": "idle", "namespace": "x"}, "spec": {"replicas": 0}}],
     "creates no pods"),
    ([{"kind": "Pod", "metadata": {"name": "p", "namespace": "x", "ownerReferences": [{"kind": "ReplicaSet"}]}}],
     "owned pods"),
])
def test_ambiguous_or_unmodelled_names_are_refused(docs: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NameMap.from_documents(docs)


NCA_TEXT = """\
Warning: Missing named port dns in the pod x/a. Ignoring the pod
global: cluster has 4 unique endpoints, 1 namespaces
0.0.0.0-255.255.255.255 => x/a : {protocols:TCP,dst_ports:80}
0.0.0.0-255.255.255.255 => x/a : {protocols:UDP,dst_ports:53}
x/web-1 => x/web-2 : All connections
x/web-2 => x/a : {protocols:SCTP}
kube-system/kube-dns-livesim => x/a : All connections
x/a => 203.0.113.7[External] : {protocols:TCP,dst_ports:443}
Total run time:   0.01 seconds
"""


def test_nca_output_lines_become_pairs() -> None:
    names = NameMap.from_documents(DOCS)
    pairs = parse_nca_output(NCA_TEXT, names)
    assert pairs == [
        (((4, 0, (1 << 32) - 1),), "x/a[Pod]", _ports(TCP=((80, 80),))),
        (((4, 0, (1 << 32) - 1),), "x/a[Pod]", _ports(UDP=((53, 53),))),
        ("x/web[Deployment]", "x/web[Deployment]", FULL),
        ("x/web[Deployment]", "x/a[Pod]", _ports(SCTP=ALL_PORTS)),
        ("x/a[Pod]", ((4, 0xCB007107, 0xCB007107),), _ports(TCP=((443, 443),))),
    ]
    rel = normalise(pairs)[0]
    # the other side's single address cuts 0.0.0.0/0 into three atoms; each gets the union of both lines
    both = _ports(TCP=((80, 80),), UDP=((53, 53),))
    atoms = [(4, 0, 0xCB007106), (4, 0xCB007107, 0xCB007107), (4, 0xCB007108, (1 << 32) - 1)]
    assert [rel[(atom, "x/a[Pod]")] for atom in atoms] == [both, both, both]


def test_unknown_pod_names_are_errors_not_guesses() -> None:
    with pytest.raises(ValueError, match="neither a known pod"):
        parse_nca_output("x/ghost => x/a : All connections\n", NameMap.from_documents(DOCS))


def test_address_endpoints_are_refined_before_comparison() -> None:
    v4 = (4, 0x0A000000, 0x0A0000FF)
    lower, upper = (4, 0x0A000000, 0x0A00007F), (4, 0x0A000080, 0x0A0000FF)
    tcp80 = _ports(TCP=((80, 80),))
    same = compare([("x/a[Pod]", (lower,), tcp80), ("x/a[Pod]", (upper,), tcp80)], [("x/a[Pod]", (v4,), tcp80)])
    assert same == []
    differ = compare([("x/a[Pod]", (lower,), tcp80)], [("x/a[Pod]", (v4,), tcp80)])
    assert [m.line() for m in differ] == ["x/a[Pod] => 10.0.0.128/25: kubepci=none nca=TCP 80"]
    assert differ[0].detail().endswith("[only kubepci: none; only nca: TCP 80]")


def test_generated_cases_are_reproducible_and_exercise_every_construct() -> None:
    cases = [generate(i) for i in range(CASES)]
    assert cases == [generate(i) for i in range(CASES)]
    text = "\n".join(yaml.safe_dump_all(c, sort_keys=True) for c in cases)
    for construct in ("endPort:", "except:", "operator: NotIn", "operator: DoesNotExist", "operator: Exists",
                      "operator: In", "protocol: SCTP", "protocol: UDP", "port: http", "ipBlock:",
                      "kubernetes.io/metadata.name", "kind: Deployment", "from: []", "ports: []", "- Egress"):
        assert construct in text, f"no generated case uses {construct!r}"
    policies = [d for c in cases for d in c if d["kind"] == "NetworkPolicy"]
    assert any("policyTypes" not in p["spec"] for p in policies)
    assert any(len(peer) == 2 for p in policies for r in p["spec"].get("ingress", []) for peer in r.get("from", []))
    assert sum(len(c) for c in cases) <= 5 * CASES  # bounded: at most one workload and four policies per case

"""PortSet, IPSet/IPAtoms and label selectors: the algebra the engine rests on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepci.analyzers.netpol.ipset import IPAtoms, IPSet, format_range, parse_ip
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.analyzers.netpol.selectors import LabelIndex
from kubepci.selectors import LabelSelector, SelectorError

_ranges = st.lists(st.tuples(st.sampled_from(["TCP", "UDP", "SCTP"]), st.integers(1, 200), st.integers(0, 20)),
                   max_size=4)


def _ps(items: list[tuple[str, int, int]]) -> PortSet:
    out = PortSet.empty()
    for proto, lo, width in items:
        out |= PortSet.of(proto, lo, lo + width)
    return out


def _members(p: PortSet) -> set[tuple[str, int]]:
    return {(proto, n) for proto, rng in p.items() for lo, hi in rng for n in range(lo, hi + 1)}


@given(_ranges, _ranges)
def test_portset_algebra_matches_python_sets(a: list[tuple[str, int, int]], b: list[tuple[str, int, int]]) -> None:
    pa, pb = _ps(a), _ps(b)
    assert _members(pa | pb) == _members(pa) | _members(pb)
    assert _members(pa & pb) == _members(pa) & _members(pb)
    assert _members(pa - pb) == _members(pa) - _members(pb)
    assert (pa - pb).issubset(pa)


def test_portset_parse_and_text() -> None:
    assert PortSet.parse("8443/TCP") == PortSet.of("TCP", 8443)
    assert PortSet.parse("53/udp") == PortSet.of("UDP", 53)
    assert PortSet.parse("8000-8100/TCP") == PortSet.of("TCP", 8000, 8100)
    assert PortSet.parse("SCTP") == PortSet.of("SCTP")
    assert PortSet.parse("all").is_all()
    assert str(PortSet.of("TCP", 80) | PortSet.of("TCP", 82, 90) | PortSet.of("UDP")) == "TCP 80,82-90; UDP"
    assert str(PortSet.all()) == "all ports"
    assert str(PortSet.empty()) == "none"
    assert PortSet.from_mapping(PortSet.of("TCP", 1, 5).to_dict()) == PortSet.of("TCP", 1, 5)
    with pytest.raises(ValueError, match="protocol"):
        PortSet.of("ICMP")
    with pytest.raises(ValueError, match="not a port"):
        PortSet.parse("http/TCP")


def test_ipset_except_and_atoms() -> None:
    block = IPSet.from_cidr("10.0.0.0/8") - IPSet.from_cidr("10.1.0.0/16")
    assert block.contains(*parse_ip("10.2.3.4"))
    assert not block.contains(*parse_ip("10.1.0.1"))
    assert str(block) == "10.0.0.0/16, 10.2.0.0-10.255.255.255"
    atoms = IPAtoms([block, IPSet.from_cidr("::/0"), IPSet.from_cidr("192.168.1.7/32")])
    covered = atoms.as_set(atoms.atoms_of(block))
    assert covered == block
    assert format_range(*atoms.atoms[atoms.index_of(*parse_ip("192.168.1.7"))]) == "192.168.1.7"
    v6 = IPSet.from_cidr("2001:db8::/32")
    assert v6.contains(*parse_ip("2001:db8::1"))
    assert not v6.contains(*parse_ip("10.0.0.1"))


def test_selector_semantics_and_validation() -> None:
    sel = LabelSelector.parse({"matchLabels": {"app": "web"},
                               "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})
    assert sel.matches({"app": "web"})
    assert sel.matches({"app": "web", "tier": "fe"})
    assert not sel.matches({"app": "web", "tier": "db"})
    assert not sel.matches({})
    assert LabelSelector.parse({}).matches({"anything": "x"})
    assert LabelSelector.parse({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]}).matches({})
    for bad, msg in (({"matchExpressions": [{"key": "k", "operator": "In", "values": []}]}, "non-empty"),
                     ({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}, "must be empty"),
                     ({"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]}, "operator"),
                     ({"matchLabels": {"k": 1}}, "invalid label value 1"), ({"podSelector": {}}, "unknown"),
                     ({"matchLabels": {"k8s:app": "web"}}, "invalid label key")):
        with pytest.raises(SelectorError, match=msg):
            LabelSelector.parse(bad)
    assert str(sel) == "app=web,tier notin (db)"


_labels = st.dictionaries(st.sampled_from(["app", "tier", "env"]), st.sampled_from(["a", "b", "c"]), max_size=3)
_expr = st.fixed_dictionaries({"key": st.sampled_from(["app", "tier", "env"]),
                               "operator": st.sampled_from(["In", "NotIn"]),
                               "values": st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=2)})


@given(st.lists(_labels, max_size=12), st.lists(_expr, max_size=3), _labels)
def test_bitset_index_equals_per_object_matching(items: list[dict[str, str]], exprs: list[dict[str, object]],
                                                 match: dict[str, str]) -> None:
    sel = LabelSelector.parse({"matchLabels": match, "matchExpressions": exprs})
    index = LabelIndex(items)
    bits = index.select(sel)
    assert [bool(bits >> i & 1) for i in range(len(items))] == [sel.matches(x) for x in items]

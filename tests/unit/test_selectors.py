"""Label-selector semantics (upstream LabelSelectorAsSelector) and Calico selector expressions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepci.selectors import (
    NAMESPACE_NAME_LABEL,
    CalicoSelector,
    LabelSelector,
    Requirement,
    SelectorError,
    namespace_labels,
    selector_matches,
    selects,
)

WEB = {"app": "web", "tier": "frontend", "team": "a"}


# --- Kubernetes LabelSelector: matching --------------------------------------------------------


@pytest.mark.parametrize("raw", [{}, None, {"matchLabels": {}}, {"matchLabels": None, "matchExpressions": []}])
def test_empty_selector_matches_everything(raw: Any) -> None:
    sel = LabelSelector.parse(raw)
    assert sel.empty
    assert sel.matches({})
    assert sel.matches(WEB)
    assert str(sel) == ""


def test_match_labels_and_expressions_are_anded() -> None:
    raw = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In",
                                                                 "values": ["backend"]}]}
    assert not selector_matches(raw, WEB)
    assert selector_matches(raw, {**WEB, "tier": "backend"})
    assert not selector_matches(raw, {"tier": "backend"})


@pytest.mark.parametrize(
    ("op", "values", "labels", "expected"),
    [
        ("In", ["web", "api"], {"app": "web"}, True),
        ("In", ["web", "api"], {"app": "db"}, False),
        ("In", ["web"], {}, False),  # In needs the key
        ("NotIn", ["web"], {"app": "db"}, True),
        ("NotIn", ["web"], {"app": "web"}, False),
        ("NotIn", ["web"], {}, True),  # NotIn matches objects without the key
        ("Exists", [], {"app": ""}, True),  # an empty value still exists
        ("Exists", [], {}, False),
        ("DoesNotExist", [], {}, True),
        ("DoesNotExist", [], {"app": "web"}, False),
    ],
)
def test_operators(op: str, values: list[str], labels: dict[str, str], expected: bool) -> None:
    raw = {"matchExpressions": [{"key": "app", "operator": op, "values": values}]}
    assert selector_matches(raw, labels) is expected


def test_values_are_case_sensitive_and_exact() -> None:
    assert not selector_matches({"matchLabels": {"app": "Web"}}, {"app": "web"})
    assert not selector_matches({"matchLabels": {"app": "web"}}, {"app": "web "})


def test_non_string_object_labels_count_as_absent() -> None:
    """metadata.labels is map[string]string: a YAML int never reaches the API, so it cannot match."""
    assert not selector_matches({"matchExpressions": [{"key": "v", "operator": "Exists"}]}, {"v": 1})
    assert selector_matches({"matchExpressions": [{"key": "v", "operator": "NotIn", "values": ["1"]}]}, {"v": 1})


def test_exists_tolerates_missing_values_key() -> None:
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, WEB)
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "Exists", "values": None}]}, WEB)


# --- Kubernetes LabelSelector: validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "non-empty"),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, "non-empty"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "must be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]}, "must be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}, "not a valid"),
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, "not a valid"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "invalid label key"),
        ({"matchExpressions": {"key": "a"}}, "must be a list"),
        ({"matchExpressions": ["a"]}, "must be a mapping"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}, "must be a list"),
        ({"matchLabels": ["app"]}, "mapping"),
        ({"matchLabels": {"-bad": "x"}}, "invalid label key"),
        ({"matchLabels": {"Example.com/app": "x"}}, "invalid label key"),  # prefix must be lowercase
        ({"matchLabels": {"/app": "x"}}, "invalid label key"),
        ({"matchLabels": {"a/b/c": "x"}}, "invalid label key"),
        ({"matchLabels": {"a" * 64: "x"}}, "invalid label key"),
        ({"matchLabels": {"app": "x" * 64}}, "invalid label value"),
        ({"matchLabels": {"app": "-web"}}, "invalid label value"),
        ({"matchLabels": {"app": 1}}, "invalid label value"),  # YAML int: rejected by the API
        ({"matchLabels": {"app": True}}, "invalid label value"),
        ({"matchLabels": {"app": None}}, "invalid label value"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}, "invalid label value"),
        (["app"], "must be a mapping"),
    ],
)
def test_invalid_selectors_raise(raw: Any, fragment: str) -> None:
    with pytest.raises(SelectorError, match=fragment):
        LabelSelector.parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"matchLabels": {"app.kubernetes.io/name": "web"}},
        {"matchLabels": {"a" * 63: "b" * 63}},
        {"matchLabels": {"app": ""}},  # the empty value is a valid label value
        {"matchLabels": {("d" * 60 + ".") * 4 + "io/x": "y"}},  # 247-char prefix
        {"matchExpressions": [{"key": "x_y.z-1", "operator": "NotIn", "values": ["A.b_c-9", ""]}]},
    ],
)
def test_valid_selectors_parse(raw: Any) -> None:
    LabelSelector.parse(raw)


def test_prefix_longer_than_253_is_invalid() -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse({"matchLabels": {("d" * 60 + ".") * 5 + "io/x": "y"}})


def test_lenient_parse_accepts_cilium_source_prefixes() -> None:
    raw = {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "payments"}}
    with pytest.raises(SelectorError):
        LabelSelector.parse(raw)
    assert LabelSelector.parse(raw, strict=False).matches({"k8s:io.kubernetes.pod.namespace": "payments"})
    with pytest.raises(SelectorError, match="non-empty"):  # operator rules still apply
        LabelSelector.parse({"matchExpressions": [{"key": "k8s:a", "operator": "In"}]}, strict=False)


def test_string_form_follows_kubectl() -> None:
    sel = LabelSelector.parse({
        "matchLabels": {"tier": "web"},
        "matchExpressions": [
            {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
            {"key": "app", "operator": "In", "values": ["y", "x"]},
            {"key": "debug", "operator": "DoesNotExist"},
            {"key": "canary", "operator": "Exists"},
        ],
    })
    assert str(sel) == "app in (x,y),canary,!debug,tier=web,zone notin (a,b)"
    assert sel.keys() == frozenset({"app", "canary", "debug", "tier", "zone"})


def test_partial_evaluation_is_three_valued() -> None:
    sel = LabelSelector.parse({"matchLabels": {"ns": "payments", "app": "api"}})
    known = {"ns"}.__contains__
    assert sel.evaluate({"ns": "payments"}, known) is None  # depends on the unknown pod label
    assert sel.evaluate({"ns": "shop"}, known) is False
    assert LabelSelector.parse({"matchLabels": {"ns": "payments"}}).evaluate({"ns": "payments"}, known) is True


def test_namespace_labels_synthesize_the_name_label() -> None:
    labels = namespace_labels("payments", {"team": "a", NAMESPACE_NAME_LABEL: "spoofed"})
    assert labels == {"team": "a", NAMESPACE_NAME_LABEL: "payments"}
    assert selector_matches({"matchLabels": {NAMESPACE_NAME_LABEL: "payments"}}, labels)


# --- properties --------------------------------------------------------------------------------

_keys = st.sampled_from(["app", "tier", "team", "example.com/zone"])
_vals = st.sampled_from(["", "a", "b", "web", "A"])
_labels = st.dictionaries(_keys, _vals, max_size=4)


@given(labels=_labels, extra=_labels)
def test_match_labels_of_an_object_select_it_and_its_supersets(labels: dict[str, str],
                                                               extra: dict[str, str]) -> None:
    sel = LabelSelector.parse({"matchLabels": labels})
    assert sel.matches(labels)
    assert sel.matches({**extra, **labels})


@given(key=_keys, values=st.lists(_vals, min_size=1, max_size=3), labels=_labels)
def test_notin_is_the_complement_of_in_and_absent_is_the_complement_of_exists(
    key: str, values: list[str], labels: dict[str, str]
) -> None:
    def match(op: str, vals: list[str]) -> bool:
        return selector_matches({"matchExpressions": [{"key": key, "operator": op, "values": vals}]}, labels)

    assert match("NotIn", values) is not match("In", values)
    assert match("DoesNotExist", []) is not match("Exists", [])
    assert Requirement(key, "In", tuple(values)).matches(labels) is match("In", values)


_raw_values = st.one_of(_vals, st.sampled_from(["-bad", "x" * 64]), st.integers(0, 2), st.none())
_raw_selectors = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(_keys, _raw_values, max_size=3),
        "matchExpressions": st.lists(
            st.fixed_dictionaries({
                "key": _keys,
                "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "in"]),
                "values": st.lists(_raw_values, max_size=2),
            }),
            max_size=2,
        ),
    },
)


@given(raw=_raw_selectors, labels=_labels)
def test_selects_is_parse_then_match_with_invalid_matching_nothing(raw: dict[str, Any],
                                                                   labels: dict[str, str]) -> None:
    """The fast path of selects() must never change the answer of the full parse."""
    try:
        expected = LabelSelector.parse(raw).matches(labels)
    except SelectorError:
        expected = False
    assert selects(raw, labels) is expected


def test_selects_rejects_invalid_selector_even_when_labels_match() -> None:
    raw = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "app", "operator": "In", "values": []}]}
    assert selects(raw, WEB) is False
    assert selects(None, WEB) is True


# --- Calico selectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "labels", "expected"),
    [
        ("", {}, True),
        ("all()", {"a": "b"}, True),
        ("has(app)", WEB, True),
        ("!has(app)", WEB, False),
        ("has(missing)", WEB, False),
        ("app == 'web'", WEB, True),
        ('app == "web"', WEB, True),
        ("app == 'db'", WEB, False),
        ("missing == ''", WEB, False),
        ("app != 'db'", WEB, True),
        ("missing != 'x'", WEB, True),  # != matches resources without the label
        ("app in {'db', 'web'}", WEB, True),
        ("app in {}", WEB, False),
        ("missing not in {'x'}", WEB, True),
        ("app not in {'web'}", WEB, False),
        ("tier contains 'ont'", WEB, True),
        ("tier starts with 'front'", WEB, True),
        ("tier ends with 'end'", WEB, True),
        ("missing contains ''", WEB, False),
        ("app == 'db' || tier == 'frontend' && team == 'a'", WEB, True),  # && binds tighter
        ("(app == 'db' || tier == 'frontend') && team == 'b'", WEB, False),
        ("!(app == 'db')", WEB, True),
        ("!!has(app)", WEB, True),
        ("projectcalico.org/name == 'payments'", {"projectcalico.org/name": "payments"}, True),
        ("global()", {}, False),
    ],
)
def test_calico_expressions(expr: str, labels: dict[str, str], expected: bool) -> None:
    assert CalicoSelector.parse(expr).matches(labels) is expected


def test_calico_global_matches_only_non_namespaced_subjects() -> None:
    sel = CalicoSelector.parse("global()")
    assert sel.matches({}, is_global=True)
    assert not sel.matches({}, is_global=False)


@pytest.mark.parametrize(
    "expr",
    ["app ==", "app == web", "(has(app)", "has(app))", "app = 'x'", "app in 'x'", "app not 'x'",
     "app starts 'x'", "&& has(a)", "app == 'x' ||", "app in {'a',}", 'app == "x', "app @ 'x'"],
)
def test_calico_invalid_expressions_raise(expr: str) -> None:
    with pytest.raises(SelectorError):
        CalicoSelector.parse(expr)


def test_calico_rejects_non_string() -> None:
    with pytest.raises(SelectorError):
        CalicoSelector.parse(["all()"])


def test_calico_partial_evaluation_uses_kleene_logic() -> None:
    known = {"ns"}.__contains__
    ns = {"ns": "payments"}

    def ev(expr: str) -> bool | None:
        return CalicoSelector.parse(expr).evaluate(ns, known)

    assert ev("app == 'x'") is None
    assert ev("!has(app)") is None
    assert ev("ns == 'payments' && app == 'x'") is None
    assert ev("ns == 'shop' && app == 'x'") is False
    assert ev("ns == 'payments' || app == 'x'") is True
    assert ev("ns == 'shop' || app == 'x'") is None
    assert ev("ns == 'shop' || ns != 'payments'") is False


def test_equal_selectors_parse_equal_whatever_the_order() -> None:
    """The netpol analyzer caches per selector and keys its label vocabulary on them."""
    a = LabelSelector.parse({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a", "b"]},
                                                  {"key": "app", "operator": "Exists"}]})
    b = LabelSelector.parse({"matchExpressions": [{"key": "app", "operator": "Exists"},
                                                  {"key": "tier", "operator": "In", "values": ["a", "b"]}]})
    assert a == b
    assert hash(a) == hash(b)
    assert str(a) == "app,tier in (a,b)"


def test_cilium_keys_lose_their_source_prefix() -> None:
    raw = {"matchLabels": {"k8s:app": "web", "any:tier": "fe"}}
    sel = LabelSelector.parse(raw, strict=False, key_prefixes=("k8s:", "any:"))
    assert sel.matches({"app": "web", "tier": "fe"})
    assert not sel.matches({"app": "web"})
    with pytest.raises(SelectorError, match="invalid label key 'k8s:app'"):
        LabelSelector.parse(raw)  # not a Kubernetes label key

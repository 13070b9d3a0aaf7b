"""Documents mean what kubectl (YAML 1.1, libyaml) makes of them, though most are read by yaml-rs (1.2).

The contract of ``load_document``: its result equals libyaml's safe loader on every document
libyaml accepts. ``needs_yaml11`` is only a router; the oracle here is libyaml itself, on
hand-picked cases and on generated documents mixing block and flow context with the scalars whose
meaning differs between the YAML versions.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.inventory.loaders.manifests import load_document, needs_yaml11


def _libyaml(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)


CASES = [
    "a: [x, on]\n",
    "a: [x,\n  y, on]\n",
    "a:\n  [x,\n   y, on]\n",
    "a: {b: c, d: on}\n",
    "a: &x [z,\n  x, on]\n",
    "a: &x\n  [z,\n   x, on]\n",
    "- [a,\n   b, off]\n",
    "a: [a\n  , on]\n",
    "a: x\nb: yes\n",
    "mode: 0644\n",
    "- 1_000\n",
    "t: 1:30\n",
    "f: 1e3\n",
    "a: !!str 10\n",
    "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",
]
PROSE = [
    "a: >\n  text, on\n  more\n",
    "a: 'quoted\n  {k,v} pairs, on\n  x'\n",
    "a: text (x), on\n",
    "a: [x, z]\nb: text, on\n",
    "a: 'on'\n",
    "a: prose that wraps,\n  on two lines\n",
    "a: see [docs,\n  here], on\n",
    "description: the flag is set per\n  {key,value} pair (see below), on\n  every request\n",
]


@pytest.mark.parametrize("text", CASES + PROSE)
def test_load_document_agrees_with_libyaml(text: str) -> None:
    assert load_document(text) == _libyaml(text), text


@pytest.mark.parametrize("text", PROSE)
def test_prose_with_yaml11_words_stays_on_the_fast_path(text: str) -> None:
    """A CRD description's ", on" is not a flow entry; sending it to libyaml cost 22 ms on one chart."""
    assert not needs_yaml11(text), text


_SCALARS = st.sampled_from(["on", "off", "yes", "no", "y", "N", "0644", "1_000", "1:30", "1e3", "x", "10",
                            "'on'", "\"no\"", "true", "see (x)", "a b"])


def _flow(items: list[str], mapping: bool, break_after: int) -> str:
    parts = [f"k{i}: {v}" if mapping else v for i, v in enumerate(items)]
    joined = ""
    for i, part in enumerate(parts):
        joined += part
        if i < len(parts) - 1:
            joined += ",\n    " if i == break_after else ", "
    return ("{" + joined + "}") if mapping else ("[" + joined + "]")


@st.composite
def _documents(draw: st.DrawFn) -> str:
    lines = []
    for i in range(draw(st.integers(1, 4))):
        shape = draw(st.sampled_from(["scalar", "flow", "flow-next-line", "seq", "prose", "block"]))
        if shape == "scalar":
            lines.append(f"f{i}: {draw(_SCALARS)}")
        elif shape in ("flow", "flow-next-line"):
            items = draw(st.lists(_SCALARS, min_size=1, max_size=4))
            text = _flow(items, draw(st.booleans()), draw(st.integers(-1, 3)))
            lines.append(f"f{i}:\n  {text}" if shape == "flow-next-line" else f"f{i}: {text}")
        elif shape == "seq":
            lines.append(f"f{i}:\n" + "\n".join(f"- {draw(_SCALARS)}" for _ in range(draw(st.integers(1, 3)))))
        elif shape == "prose":
            lines.append(f"f{i}: word (x), {draw(_SCALARS).strip(chr(39) + chr(34))}\n  and more, on")
        else:
            lines.append(f"f{i}: |\n  text, {draw(_SCALARS)}\n  [a, on]")
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None)
@given(_documents())
def test_generated_documents_mean_what_libyaml_says(text: str) -> None:
    try:
        expected = _libyaml(text)
    except yaml.YAMLError:
        return  # not a document kubectl would accept either
    assert load_document(text) == expected, text

"""The manifest loader: file:line per document, broken documents reported, the rest still read."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kubepci.inventory.loaders.manifests import load_paths, parse_text

MULTI = """\
# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: one, namespace: a}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: broken
  namespace: a
data: {x: [unclosed
---

apiVersion: v1
kind: Secret
metadata: {name: three, namespace: a}
"""


def test_each_document_keeps_its_line_and_broken_ones_are_listed() -> None:
    resources, problems = parse_text(MULTI, "m.yaml")
    assert [(r.name, r.location.line) for r in resources] == [("one", 2), ("three", 14)]
    assert len(problems) == 1
    assert problems[0].location.file == "m.yaml"
    assert 6 <= problems[0].location.line <= 12
    assert "invalid YAML" in problems[0].reason


def test_list_kinds_are_expanded() -> None:
    text = """\
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Service, metadata: {name: s1, namespace: n}}
  - {apiVersion: apps/v1, kind: Deployment, metadata: {name: d1, namespace: n}}
  - just a string
"""
    resources, problems = parse_text(text, "list.yaml")
    assert [str(r.ref) for r in resources] == ["n/Service/s1", "n/Deployment/d1"]
    assert [p.reason for p in problems] == ["items[2]: document is a str, not a Kubernetes object"]


def test_podlist_from_kubectl_json(tmp_path: Path) -> None:
    f = tmp_path / "dump.json"
    f.write_text('{"apiVersion": "v1", "kind": "PodList", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}')
    result = load_paths([str(tmp_path)])
    assert [str(r.ref) for r in result.resources] == ["Pod/p"]
    assert result.inputs[0][0] == str(f)


def test_broken_json_reports_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{\n  "kind": "Pod",\n  oops\n}')
    result = load_paths([str(f)])
    assert result.resources == ()
    assert str(result.unreadable[0].location) == f"{f}:3"


def test_missing_kind_and_name_are_unreadable_not_crashes() -> None:
    resources, problems = parse_text("apiVersion: v1\nmetadata: {name: x}\n---\nkind: Pod\n", "k.yaml")
    assert resources == []
    assert [(p.location.line, p.reason) for p in problems] == [(1, "missing 'kind'"), (4, "Pod has no metadata.name")]


def test_directory_walk_is_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("kind: Pod\nmetadata: {name: b}\n")
    (tmp_path / "a.yml").write_text("kind: Pod\nmetadata: {name: a}\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.yaml").write_text("kind: Pod\nmetadata: {name: c}\n")
    (tmp_path / "notes.txt").write_text("kind: Pod\n")
    result = load_paths([str(tmp_path)])
    assert [r.name for r in result.resources] == ["a", "b"]


def test_stdin_and_missing_path() -> None:
    result = load_paths(["-", "/nonexistent/x.yaml"], stdin_text="kind: Namespace\nmetadata: {name: n}\n")
    assert [r.name for r in result.resources] == ["n"]
    assert [(str(u.location), u.reason) for u in result.unreadable] == [
        ("/nonexistent/x.yaml", "no such file or directory")
    ]


def test_unsafe_yaml_tags_never_execute(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f"!!python/object/apply:os.system ['touch {marker}']\n",
        f"kind: Pod\nmetadata: {{name: p}}\nx: !!python/object/apply:os.system ['touch {marker}']\n",
        f"kind: Pod\nmetadata: {{name: p}}\nx: !!python/object/apply:os.system ['touch {marker}']\ny: yes\n",
    ):
        resources, problems = parse_text(text, "evil.yaml")
        assert len(problems) == 1, (text, resources)
        assert not marker.exists()


def test_component_config_files_are_named_after_their_file_and_cluster_wide(tmp_path: Path) -> None:
    from kubepci.inventory import Inventory

    policy = tmp_path / "audit-policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n")
    result = load_paths([str(policy)])
    assert not result.unreadable
    inventory = Inventory.build(result.resources)
    assert [str(r.ref) for r in inventory.resources] == ["Policy/audit-policy.yaml"]


def _split_by_regex(text: str) -> list[tuple[int, str]]:
    """The straightforward splitter the fast one must equal."""
    from kubepci.inventory.loaders.manifests import _DOC_SPLIT

    out, start, line = [], 0, 1
    for m in _DOC_SPLIT.finditer(text):
        chunk = text[start:m.start()]
        out.append((line, chunk))
        line += chunk.count("\n") + 1
        start = m.end() + 1
    if start <= len(text):
        out.append((line, text[start:]))
    return out


@given(st.lists(st.sampled_from(["a: 1", "---", "--- # c", "----", "...", "b: ---", " ---", "", "k: '--- x'"]),
                max_size=10), st.sampled_from(["", "\n"]))
def test_fast_document_split_equals_the_regex_split(lines: list[str], tail: str) -> None:
    from kubepci.inventory.loaders.manifests import _split_documents

    text = "\n".join(lines) + tail
    assert list(_split_documents(text)) == _split_by_regex(text)

"""Kustomize loader: real `kustomize build` runs of a base and an overlay.

The binary comes from scripts/build-kustomize.sh. Without it these tests fail, unless
KUBEPCI_E2E_OPTIONAL=1 says optional tools may be absent, in which case they skip.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from kubepci.inventory.loaders.kustomize import (
    KUSTOMIZE_VERSION,
    is_kustomization,
    kustomize_binary,
    render_kustomization,
)
from kubepci.model import Resource, SourceLocation

DATA = Path(__file__).parent / "data" / "kustomize"
BASE = DATA / "base"
PROD = DATA / "overlays" / "prod"


@pytest.fixture
def kustomize() -> str:
    binary = kustomize_binary()
    if binary is None:
        if os.environ.get("KUBEPCI_E2E_OPTIONAL") == "1":
            pytest.skip("kustomize is not built (KUBEPCI_E2E_OPTIONAL=1)")
        pytest.fail("kustomize not found: run scripts/build-kustomize.sh (or set KUBEPCI_KUSTOMIZE)")
    return binary


def by_kind(resources: list[Resource]) -> dict[str, Resource]:
    found: dict[str, Resource] = {}
    for res in resources:
        assert res.kind not in found, f"two {res.kind} objects"
        found[res.kind] = res
    return found


@pytest.mark.usefixtures("kustomize")
def test_overlay_applies_prefix_namespace_labels_patch_and_generator() -> None:
    resources, problems = render_kustomization(PROD)

    assert problems == []
    kinds = by_kind(resources)
    assert set(kinds) == {"ConfigMap", "Service", "Deployment"}
    for res in resources:
        assert res.namespace == "cde-prod"
        assert res.labels["pci.kubepci.io/scope"] == "cde"  # commonLabels
        assert res.location.file == f"{PROD} (kustomize)"

    deploy = kinds["Deployment"]
    assert deploy.ref.name == "prod-ledger"  # namePrefix
    assert kinds["Service"].ref.name == "prod-ledger"
    assert deploy.body["spec"]["selector"]["matchLabels"] == {"app": "ledger", "pci.kubepci.io/scope": "cde"}
    spec = deploy.body["spec"]
    assert spec["replicas"] == 3  # strategic-merge patch
    container = spec["template"]["spec"]["containers"][0]
    assert container["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    assert container["image"] == "registry.example.test/ledger:2.0.1"  # untouched by the patch

    config = kinds["ConfigMap"]
    assert re.fullmatch(r"prod-ledger-settings-[a-z0-9]{10}", config.ref.name), config.ref.name
    assert config.body["data"] == {"LOG_LEVEL": "info", "TLS_MIN_VERSION": "1.2"}
    # kustomize rewrote the reference to the generated, hash-suffixed name.
    assert container["envFrom"] == [{"configMapRef": {"name": config.ref.name}}]


def test_locations_are_document_lines_in_rendered_output(kustomize: str) -> None:
    resources, problems = render_kustomization(PROD)
    output = subprocess.run(
        [kustomize, "build", str(PROD)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()

    assert problems == []
    assert [r.kind for r in resources] == ["ConfigMap", "Service", "Deployment"]  # kustomize's order
    assert resources[0].location == SourceLocation(f"{PROD} (kustomize)", 1)
    for res in resources:
        line = res.location.line
        assert output[line - 1] == "apiVersion: " + res.ref.api_version  # first line of the document
        assert line == 1 or output[line - 2] == "---"
        document = output[line - 1 :]
        assert f"kind: {res.kind}" in document[: document.index("---") if "---" in document else None]


@pytest.mark.usefixtures("kustomize")
def test_base_renders_without_overlay_changes() -> None:
    resources, problems = render_kustomization(BASE)

    assert problems == []
    kinds = by_kind(resources)
    assert set(kinds) == {"Service", "Deployment"}
    deploy = kinds["Deployment"]
    assert deploy.ref.name == "ledger"
    assert deploy.namespace == ""
    container = deploy.body["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"] == {"privileged": True}


@pytest.mark.usefixtures("kustomize")
def test_broken_kustomization_is_unreadable_with_kustomize_message() -> None:
    broken = DATA / "broken"

    resources, problems = render_kustomization(broken)

    assert resources == []
    assert len(problems) == 1
    assert problems[0].location == SourceLocation(f"{broken} (kustomize)")
    reason = problems[0].reason
    assert reason.startswith("kustomize build failed (exit 1): accumulating resources")
    assert "missing-deployment.yaml" in reason
    assert "no such file or directory" in reason


@pytest.mark.usefixtures("kustomize")
def test_invalid_kustomization_field_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: [not, a, string]\n", encoding="utf-8")

    resources, problems = render_kustomization(tmp_path)

    assert resources == []
    assert problems[0].reason.startswith("kustomize build failed")
    assert "namePrefix" in problems[0].reason or "cannot unmarshal" in problems[0].reason


@pytest.mark.usefixtures("kustomize")
def test_file_outside_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.yaml"
    outside.write_text("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n", encoding="utf-8")
    root = tmp_path / "app"
    root.mkdir()
    (root / "kustomization.yaml").write_text("resources:\n  - ../secret.yaml\n", encoding="utf-8")

    resources, problems = render_kustomization(root)

    assert resources == []
    assert "security; file" in problems[0].reason or "is not in or below" in problems[0].reason


@pytest.mark.usefixtures("kustomize")
def test_timeout_is_unreadable() -> None:
    resources, problems = render_kustomization(PROD, timeout=1e-6)

    assert resources == []
    assert problems[0].reason == "kustomize build timed out after 1e-06s"


def test_not_a_kustomization_is_unreadable(tmp_path: Path) -> None:
    resources, problems = render_kustomization(tmp_path)

    assert resources == []
    assert problems[0].location == SourceLocation(f"{tmp_path} (kustomize)")
    assert problems[0].reason.startswith("not a Kustomize directory")


def test_configured_binary_that_does_not_exist_is_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-kustomize"
    monkeypatch.setenv("KUBEPCI_KUSTOMIZE", str(missing))

    assert kustomize_binary() == str(missing)
    resources, problems = render_kustomization(PROD)

    assert resources == []
    assert problems[0].reason.startswith(f"cannot run kustomize at '{missing}'")


def test_binary_lookup_prefers_env_then_cache_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    on_path = tmp_path / "bin"
    on_path.mkdir()
    for exe in (cache / f"kustomize-{KUSTOMIZE_VERSION}", on_path / "kustomize"):
        exe.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("KUBEPCI_KUSTOMIZE", raising=False)
    monkeypatch.setenv("KUBEPCI_TOOLS_CACHE", str(cache))
    monkeypatch.setenv("PATH", str(on_path))

    assert kustomize_binary() == str(cache / f"kustomize-{KUSTOMIZE_VERSION}")
    (cache / f"kustomize-{KUSTOMIZE_VERSION}").unlink()
    assert kustomize_binary() == str(on_path / "kustomize")
    monkeypatch.setenv("KUBEPCI_KUSTOMIZE", "/opt/kustomize")
    assert kustomize_binary() == "/opt/kustomize"
    monkeypatch.delenv("KUBEPCI_KUSTOMIZE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert kustomize_binary() is None


def test_is_kustomization(tmp_path: Path) -> None:
    assert is_kustomization(PROD)
    assert not is_kustomization(PROD / "kustomization.yaml")
    assert not is_kustomization(tmp_path)
    (tmp_path / "Kustomization").write_text("resources: []\n", encoding="utf-8")
    assert is_kustomization(tmp_path)

"""Render a Kustomize directory with the real ``kustomize`` binary and parse the result.

Why a subprocess: kustomize's behaviour (patch strategies, name references rewritten after
``namePrefix``, generator hash suffixes, label selectors) is defined by its Go code and no
Python port tracks it. The PyPI bindings (``pykustomize``) need Python >= 3.14, so the binary
is built from the Go modules by ``scripts/build-kustomize.sh`` at :data:`KUSTOMIZE_VERSION`
and found by :func:`kustomize_binary`.

Safety: the build runs with kustomize's defaults -- load restrictor ``RootOnly`` and no Helm,
exec or alpha plugins -- so a scanned repository cannot make kubepci run programs. Remote
bases would need the network, which kubepci does not use; they fail and are reported.

Source locations: every object is reported at ``<dir> (kustomize)``, and the line is the line
of its document **in kustomize's rendered output** (kustomize does not say which input file
an object came from, and patches merge several into one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kubepci.inventory.loaders.manifests import parse_text
from kubepci.model import Resource, SourceLocation, Unreadable

__all__ = [
    "KUSTOMIZATION_FILES",
    "KUSTOMIZE_VERSION",
    "is_kustomization",
    "kustomize_binary",
    "render_kustomization",
    "tools_cache_dir",
]

# Keep in step with KUSTOMIZE_VERSION in scripts/build-kustomize.sh.
KUSTOMIZE_VERSION = "v5.8.2"

# The three names kustomize itself accepts, in its order of preference.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

_DEFAULT_TIMEOUT = 120.0
_MAX_REASON = 4000


def is_kustomization(path: Path) -> bool:
    """A directory is a kustomization when it holds one of kustomize's three file names."""
    return path.is_dir() and any((path / name).is_file() for name in KUSTOMIZATION_FILES)


def tools_cache_dir() -> Path:
    """Where ``scripts/build-kustomize.sh`` leaves its binaries."""
    configured = os.environ.get("KUBEPCI_TOOLS_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "kubepci" / "tools"


def kustomize_binary() -> str | None:
    """The kustomize to run: ``$KUBEPCI_KUSTOMIZE``, else the built cache copy, else ``PATH``.

    An explicit ``KUBEPCI_KUSTOMIZE`` is returned even if it does not exist, so a wrong setting
    shows up as an error naming it rather than silently falling back to another kustomize.
    """
    configured = os.environ.get("KUBEPCI_KUSTOMIZE")
    if configured:
        return configured
    cached = tools_cache_dir() / f"kustomize-{KUSTOMIZE_VERSION}"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("kustomize")


def _clean_stderr(stderr: str) -> str:
    """Keep kustomize's message, drop deprecation chatter, fit it on one report line."""
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.lstrip().startswith("# Warning:")
    ]
    text = " ".join(lines).removeprefix("Error: ")
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return text or "no message on stderr"


def render_kustomization(
    directory: Path, *, timeout: float = _DEFAULT_TIMEOUT
) -> tuple[list[Resource], list[Unreadable]]:
    """Run ``kustomize build <directory>`` and parse its output.

    Failures (no binary, non-zero exit with kustomize's stderr as the reason, timeout) come
    back as one :class:`Unreadable` at ``<directory> (kustomize)`` rather than an exception.
    """
    directory = Path(directory)
    source = f"{directory} (kustomize)"
    location = SourceLocation(source)
    if not is_kustomization(directory):
        names = ", ".join(KUSTOMIZATION_FILES)
        return [], [Unreadable(location, f"not a Kustomize directory (none of {names})")]
    binary = kustomize_binary()
    if binary is None:
        return [], [
            Unreadable(
                location,
                "kustomize not found: run scripts/build-kustomize.sh or set KUBEPCI_KUSTOMIZE",
            )
        ]
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a remote base must fail, never wait for a password
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [binary, "build", "--load-restrictor", "LoadRestrictionsRootOnly", str(directory)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [], [Unreadable(location, f"kustomize build timed out after {timeout:g}s")]
    except OSError as exc:
        return [], [Unreadable(location, f"cannot run kustomize at {binary!r}: {exc.strerror or exc}")]
    if completed.returncode != 0:
        reason = f"kustomize build failed (exit {completed.returncode}): {_clean_stderr(completed.stderr)}"
        return [], [Unreadable(location, reason)]
    return parse_text(completed.stdout, source)

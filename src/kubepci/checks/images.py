"""Where images come from and whether the reference is immutable (controls.md VUL-001, VUL-004).

PCI DSS 6.3.2 wants an inventory of the software that runs and 6.5.1 wants changes to go through
change control. A mutable tag (``:latest`` or none) lets the running code change without a change
to any manifest, and an image from an unapproved registry bypasses the registry's scanning and
signing (6.3.1). Every container kind is inspected: init and ephemeral containers run code too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from kubepci.checks._registry import CheckContext, check
from kubepci.inventory import Workload
from kubepci.model import Enforcement, Scope, Severity, Violation

__all__ = ["ImageRef", "parse_image", "registry_allowed"]

_PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image reference split the way the container runtime resolves it."""

    registry: str  # lower-case host[:port]; docker.io for Docker Hub
    path: str  # repository path inside the registry, library/ added for Hub short names
    tag: str  # "" when no tag was written
    digest: str  # "" or e.g. "sha256:..."

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}"


def parse_image(image: str) -> ImageRef:
    """``nginx`` -> docker.io/library/nginx, no tag; ``host:5000/a/b:1@sha256:..`` -> all four parts.

    The first path component is a registry only if it contains ``.`` or ``:`` or is ``localhost``,
    as in the distribution reference grammar; otherwise the image is on Docker Hub.
    """
    rest, _, digest = image.strip().partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
    else:
        name, tag = rest, ""
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first.lower(), remainder
    else:
        registry, path = "docker.io", name
    if registry in _DOCKER_HUB_ALIASES:
        registry = "docker.io"
        if "/" not in path:
            path = f"library/{path}"
    return ImageRef(registry, path, tag, digest)


def _normalise_prefix(prefix: str) -> str:
    """A configured prefix in the same normal form as :attr:`ImageRef.repository`, without a final /."""
    prefix = prefix.strip().rstrip("/")
    first, sep, remainder = prefix.partition("/")
    if "." in first or ":" in first or first == "localhost":
        host = first.lower()
        host = "docker.io" if host in _DOCKER_HUB_ALIASES else host
        return f"{host}{sep}{remainder}"
    return f"docker.io/{prefix}" if prefix else ""


def registry_allowed(image: str, prefixes: tuple[str, ...]) -> bool:
    """Path-prefix match: ``harbor.example.com`` allows ``harbor.example.com/x`` but not
    ``harbor.example.com.evil.io/x`` nor ``harbor.example.com:5000/x``."""
    repo = parse_image(image).repository
    for raw in prefixes:
        prefix = _normalise_prefix(raw)
        if prefix and (repo == prefix or repo.startswith(prefix + "/")):
            return True
    return False


@check(
    id="image-tag-not-latest",
    title="Images must not use the latest tag or no tag",
    requirements=("6.5.1", "6.3.2"),
    blog=("R6",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Reference every image by a fixed version tag or, better, by its sha256 digest.",
    refs=("VUL-004", "C-0075", "KSV-0013", "CKV_K8S_14"),
    cel=(
        "variables.containers.all(c, !has(c.image) || c.image == '' || (c.image.trim().indexOf('@') >= 0 "
        "&& c.image.trim().indexOf('@') < size(c.image.trim()) - 1) || !(c.image.trim().lastIndexOf(':') "
        "<= c.image.trim().lastIndexOf('/') || c.image.trim().endsWith(':') || "
        "c.image.trim().endsWith(':@') || c.image.trim().endsWith(':latest') || "
        "c.image.trim().endsWith(':latest@')))"
    ),
)
def tag_not_latest(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """``:latest`` and an omitted tag name whatever was pushed last, so the code that runs can change
    without any reviewed change; a digest pins the content, so a digest-pinned image passes."""
    for c in wl.containers:
        image = c.image
        if not image:
            continue
        ref = parse_image(image)
        if ref.digest:
            continue
        if not ref.tag:
            problem = "has no tag (resolves to :latest)"
        elif ref.tag == "latest":
            problem = "uses the mutable :latest tag"
        else:
            continue
        yield Violation(f"container {c.name!r} image {image!r} {problem}", f"{c.path}.image")


@check(
    id="image-digest-pinned",
    title="Images must be pinned by digest",
    requirements=("6.5.1", "6.3.2"),
    blog=("R6", "R11"),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Reference the image as registry/repository@sha256:<digest> (a tag may precede the digest).",
    refs=("VUL-004", "C-0306", "CKV_K8S_43"),
    enforcement=Enforcement.WARN,
    cel=(
        "variables.containers.all(c, !has(c.image) || c.image == '' || "
        "c.image.matches('@sha256:[0-9a-f]{64}$'))"
    ),
)
def digest_pinned(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Even a version tag can be re-pushed; only a content digest proves which bytes ran.

    ``images.require_digest`` decides where this is required: ``all`` workloads, only ``cde``
    workloads (the default), or ``none`` (then every workload passes). A digest must be a full
    ``sha256:`` plus 64 hex digits; a shortened one is not a pin.
    """
    mode = ctx.config.require_digest
    if mode == "none" or (mode == "cde" and ctx.scope.of_workload(wl) is not Scope.CDE):
        return
    for c in wl.containers:
        image = c.image
        if not image or _PINNED.search(image):
            continue
        what = "has a malformed digest" if "@" in image else "is not pinned by an @sha256 digest"
        yield Violation(f"container {c.name!r} image {image!r} {what}", f"{c.path}.image")


@check(
    id="image-allowed-registry",
    title="Images must come from an approved registry",
    requirements=("6.3.1", "6.3.2", "6.5.1"),
    blog=("R5", "R6"),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Push the image to an approved registry and reference it from there.",
    refs=("VUL-001", "C-0078", "KSV-0125"),
    cel=(
        "variables.containers.all(c, !has(c.image) || c.image == '' || variables.allowedImages.exists(a, "
        "c.image.trim().matches(a.match) && !c.image.trim().matches(a.unless)))"
    ),
)
def allowed_registry(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Only an approved registry scans, signs and retains what runs in the cluster (6.3.1, 6.3.2).

    ``images.allowed_registries`` lists path prefixes; Docker Hub short names are normalised
    (``nginx`` is ``docker.io/library/nginx``). With no list configured there is nothing to
    enforce and the check passes.
    """
    allowed = ctx.config.allowed_registries
    if not allowed:
        return
    for c in wl.containers:
        image = c.image
        if image and not registry_allowed(image, allowed):
            repo = parse_image(image).repository
            yield Violation(f"container {c.name!r} image {image!r} ({repo}) is not from an approved registry",
                            f"{c.path}.image")


@check(
    id="image-pull-policy-always",
    title="Mutable images must be pulled on every start",
    requirements=("6.3.2", "6.5.1"),
    blog=("R6",),
    severity=Severity.LOW,
    targets=("workload",),
    remediation="Set imagePullPolicy: Always on every container whose image is not pinned by digest.",
    refs=("VUL-004", "CKV_K8S_15"),
    cel=(
        "variables.containers.all(c, !has(c.image) || c.image == '' || (has(c.imagePullPolicy) && "
        "c.imagePullPolicy == 'Always') || ((!has(c.imagePullPolicy) || c.imagePullPolicy == '') && "
        "(c.image.trim().indexOf('@') >= 0 && c.image.trim().indexOf('@') < size(c.image.trim()) - 1)))"
    ),
)
def pull_policy_always(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A cached copy of a tag may differ from what the registry now serves, and a node cache lets a
    pod start an image without the registry checking its pull credentials.

    Every image not pinned by digest must say ``imagePullPolicy: Always`` itself: the API server
    would default an unset policy to ``Always`` only for ``:latest`` and untagged images, so the
    behaviour hangs on the tag someone types next, and the manifest is the configuration standard
    an assessor reads (2.2.1). A digest fixes the content, so any policy is fine there.
    """
    for c in wl.containers:
        image = c.image
        if not image:
            continue
        policy = c.body.get("imagePullPolicy")
        if policy == "Always":
            continue
        path = f"{c.path}.imagePullPolicy"
        if policy is None or policy == "":
            ref = parse_image(image)
            if ref.digest:
                continue
            default = "Always only because of its tag" if ref.tag in ("", "latest") else "IfNotPresent"
            yield Violation(f"container {c.name!r}: imagePullPolicy is not set; image {image!r} is not pinned "
                            f"by digest and defaults to {default}", path)
        else:
            yield Violation(f"container {c.name!r}: imagePullPolicy is {policy!r}, not Always", path)

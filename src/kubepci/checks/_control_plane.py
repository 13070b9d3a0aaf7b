"""Reading control-plane components from pod specs: which binary a container runs and its flags.

kubeadm-style clusters run kube-apiserver, kube-controller-manager, kube-scheduler and etcd as
static pods; the API shows them as mirror pods in kube-system, and a scan of
``/etc/kubernetes/manifests`` reads the same YAML. Hosted control planes run them as Deployments.
So a component is recognised by the binary its container runs (``command[0]``, or the image name
when only ``args`` are given), never by the pod's name or labels, which vary.

Flags are parsed the way pflag does: ``--name=value``, ``--name value`` for non-boolean flags,
a bare boolean flag means true, the last occurrence wins, list flags accumulate. etcd also
reads ``ETCD_<FLAG>`` environment variables, which its flags override.

Configuration files the flags point at (EncryptionConfiguration, audit Policy) are found in the
inventory when the scan includes them: as their own YAML documents, or as a ConfigMap key holding
the file. :func:`documents_in` returns both forms.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubepci.inventory import Container, Workload
from kubepci.inventory.loaders.manifests import InvalidYAMLError, safe_load
from kubepci.model import Resource

__all__ = [
    "APISERVER",
    "CONTROLLER_MANAGER",
    "ETCD",
    "SCHEDULER",
    "ComponentFlags",
    "ConfigDocument",
    "components",
    "documents_in",
    "parse_bool",
    "runs_control_plane",
]

APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
ETCD = "etcd"
_COMPONENTS = frozenset({APISERVER, CONTROLLER_MANAGER, SCHEDULER, ETCD})
_HYPERKUBE = {"apiserver": APISERVER, "controller-manager": CONTROLLER_MANAGER, "scheduler": SCHEDULER}

#: boolean flags the checks read: a following token is never their value
_BOOL_FLAGS = frozenset({
    "anonymous-auth", "profiling", "kubelet-https", "service-account-lookup", "use-service-account-credentials",
    "client-cert-auth", "peer-client-cert-auth", "auto-tls", "peer-auto-tls", "allow-privileged",
    "service-account-extend-token-expiration", "audit-log-compress",
})
#: flags whose repeated occurrences accumulate (pflag StringSlice)
_LIST_FLAGS = frozenset({"enable-admission-plugins", "disable-admission-plugins", "admission-control",
                         "authorization-mode", "tls-cipher-suites", "cipher-suites"})
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})

def parse_bool(value: str | None) -> bool | None:
    """pflag's boolean spellings; None when unset or not a boolean."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


@dataclass(frozen=True, slots=True)
class ComponentFlags:
    """One control-plane container: which component, its flags and where each flag is written."""

    component: str
    container: Container
    values: Mapping[str, tuple[str, ...]]  # flag name -> every value given, in order
    paths: Mapping[str, str]  # flag name -> field path of its last occurrence
    args_path: str  # where a missing flag should be added

    def get(self, name: str) -> str | None:
        """The effective value (last occurrence), or None when the flag is absent."""
        found = self.values.get(name)
        return found[-1] if found else None

    def has(self, name: str) -> bool:
        value = self.get(name)
        return value is not None and value.strip() != ""

    def items(self, name: str) -> list[str]:
        """A comma-separated list flag, every occurrence accumulated, blanks dropped."""
        out: list[str] = []
        for value in self.values.get(name, ()):
            out.extend(p.strip() for p in value.split(",") if p.strip())
        return out

    def path(self, name: str) -> str:
        return self.paths.get(name, self.args_path)

    def bool(self, name: str, default: bool) -> bool:
        parsed = parse_bool(self.get(name))
        return default if parsed is None else parsed

    @property
    def label(self) -> str:
        return f"{self.component} (container {self.container.name!r})"


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _component_of(container: Container) -> tuple[str, int] | None:
    """(component, index in command where flags start) or None.

    Runs for every container of every workload under 16 checks, so the common "not a control-plane
    container" answer is reached with a couple of dict lookups and no allocation.
    """
    body = container.body
    command = body.get("command")
    if isinstance(command, list) and command:
        first = command[0]
        if not isinstance(first, str):
            return None
        binary = first[first.rfind("/") + 1:]
        if binary in _COMPONENTS:
            return binary, 1
        if binary == "hyperkube" and len(command) > 1:
            name = _HYPERKUBE.get(command[1], command[1])
            return (name, 2) if name in _COMPONENTS else None
        return None
    image = body.get("image")
    if not isinstance(image, str) or ("kube-" not in image and "etcd" not in image):
        return None
    repo = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return (repo, 0) if repo in _COMPONENTS else None


def _parse(tokens: Sequence[tuple[str, str]], values: dict[str, list[str]], paths: dict[str, str]) -> None:
    i = 0
    while i < len(tokens):
        token, path = tokens[i]
        i += 1
        if not token.startswith("-") or token in ("-", "--"):
            continue
        name, sep, value = token.lstrip("-").partition("=")
        if not sep:
            if name in _BOOL_FLAGS:
                value = "true"
            elif i < len(tokens) and not tokens[i][0].startswith("-"):
                value = tokens[i][0]
                i += 1
            else:
                value = ""
        if name in _LIST_FLAGS:
            values.setdefault(name, []).append(value)
        else:
            values[name] = [value]
        paths[name] = path


def _flags(component: str, container: Container, start: int) -> ComponentFlags:
    values: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    if component == ETCD:
        env = container.body.get("env")
        for i, var in enumerate(env if isinstance(env, list) else ()):
            if not isinstance(var, Mapping):
                continue
            name, value = var.get("name"), var.get("value")
            if isinstance(name, str) and name.startswith("ETCD_") and isinstance(value, str):
                flag = name[5:].lower().replace("_", "-")
                values[flag] = [value]
                paths[flag] = f"{container.path}.env[{i}]"
    tokens: list[tuple[str, str]] = []
    command = _strings(container.body.get("command"))
    tokens += [(t, f"{container.path}.command[{i}]") for i, t in enumerate(command) if i >= start]
    tokens += [(t, f"{container.path}.args[{i}]") for i, t in enumerate(_strings(container.body.get("args")))]
    _parse(tokens, values, paths)
    where = "command" if command else "args"
    return ComponentFlags(component, container, {k: tuple(v) for k, v in values.items()}, paths,
                          f"{container.path}.{where}")


def runs_control_plane(workload: Workload) -> bool:
    """The engine's pre-filter for the control-plane checks: computed once per workload."""
    return any(c.field != "ephemeralContainers" and _component_of(c) is not None for c in workload.containers)


def components(workload: Workload, *wanted: str) -> Iterator[ComponentFlags]:
    """Every container of ``workload`` that runs one of the ``wanted`` components (all if none given)."""
    for container in workload.containers:
        if container.field == "ephemeralContainers":
            continue
        found = _component_of(container)
        if found is None or (wanted and found[0] not in wanted):
            continue
        yield _flags(found[0], container, found[1])


@dataclass(frozen=True, slots=True)
class ConfigDocument:
    """A configuration file found in the inventory: the resource that holds it and the parsed body.

    ``prefix`` is the field path of the document inside ``resource`` ("" for a YAML document of
    its own, ``data.<key>`` for a ConfigMap key).
    """

    resource: Resource
    prefix: str
    body: Mapping[str, Any]
    file_name: str

    def path(self, inner: str) -> str:
        if not self.prefix:
            return inner
        return f"{self.prefix}.{inner}" if inner else self.prefix


def _embedded(resource: Resource, kind: str, api_group: str) -> Iterator[ConfigDocument]:
    data = resource.body.get("data")
    if not isinstance(data, Mapping):
        return
    for key, text in data.items():
        if not isinstance(text, str) or api_group not in text or kind not in text:
            continue
        try:
            doc = safe_load(text)
        except InvalidYAMLError:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == kind and str(doc.get("apiVersion", "")).startswith(
                api_group + "/"):
            yield ConfigDocument(resource, f"data.{key}", doc, str(key))


def own_document(resource: Resource, kind: str, api_group: str) -> ConfigDocument | None:
    """``resource`` itself when it is a ``kind`` document of ``api_group``."""
    if resource.kind == kind and resource.ref.api_version.startswith(api_group + "/"):
        return ConfigDocument(resource, "", resource.body, posixpath.basename(resource.location.file))
    return None


def documents_in(resource: Resource, kind: str, api_group: str) -> list[ConfigDocument]:
    """The ``kind`` documents ``resource`` is or holds (a ConfigMap may hold several keys)."""
    own = own_document(resource, kind, api_group)
    if own is not None:
        return [own]
    if resource.kind == "ConfigMap":
        return list(_embedded(resource, kind, api_group))
    return []

"""network-config-analyzer (NCA) as a live differential oracle: find it, run it, read its answer.

NCA 2.1.0 lives in its own virtualenv (its dependencies are pinned exactly and clash with ours), made
by ``scripts/setup-nca-oracle.sh``. Its ``txt_no_fw_rules`` output is one ``src => dst : conn`` line
per cube of the allowed relation, so a pair can appear several times, addresses are split wherever
NCA found it convenient and connections are written in NCA's own notation. This module turns that
into the neutral form of :mod:`tests.oracle_nca.relation` using the normalisations of
netpol-rbac.md §2.1, and knows how NCA names the pods it invents for workloads (so they can be mapped
onto kubepci's ``ns/name[Kind]`` endpoints deliberately instead of by string guessing).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.oracle_nca.relation import (
    FULL,
    PROTOCOLS,
    Endpoint,
    Ports,
    RawPair,
    parse_ip_endpoint,
)

__all__ = [
    "NCA_VERSION",
    "SETUP_SCRIPT",
    "NameMap",
    "NcaRun",
    "OracleMissing",
    "find_nca",
    "nca_command",
    "oracle_venv",
    "parse_connection",
    "parse_nca_output",
    "run_nca",
]

NCA_VERSION = "2.1.0"
SETUP_SCRIPT = "scripts/setup-nca-oracle.sh"

#: kinds from which NCA derives pods, and so the kinds whose pods it names ``<workload>-<i>``
_POD_CREATORS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController")
#: NCA keeps at most two pods per workload: enough to show replicas talking to each other
_MAX_REPLICAS = 2
_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conn>.+)$")
_CUBE_KEY = re.compile(r",(?=[a-z_]+:)")
_DROPPED_PEERS = ("livesim", "{ingress-controller}", "[VirtualMachine]")


class OracleMissing(RuntimeError):
    """The NCA virtualenv is absent or holds another version."""


def oracle_venv() -> Path:
    """Where ``scripts/setup-nca-oracle.sh`` puts the venv (same default, same override)."""
    configured = os.environ.get("KUBEPCI_ORACLE_VENV")
    return Path(configured) if configured else Path.home() / ".cache" / "kubepci" / "nca-venv"


def nca_command(venv: Path) -> Path:
    return venv / "bin" / "nca"


def _clean_env() -> dict[str, str]:
    """Our own interpreter's settings must not leak into NCA's (its imports would change)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def find_nca(venv: Path | None = None) -> Path:
    """The ``nca`` executable of the pinned version; raises OracleMissing with a how-to."""
    venv = venv or oracle_venv()
    exe = nca_command(venv)
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise OracleMissing(f"NCA oracle not found at {exe}: run `bash {SETUP_SCRIPT}` "
                            f"(or set KUBEPCI_E2E_OPTIONAL=1 to skip the oracle tests)")
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60,
                             check=False, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OracleMissing(f"{exe} does not run ({exc}): re-run `bash {SETUP_SCRIPT}`") from exc
    if f"NCA version {NCA_VERSION}" not in out.stdout:
        raise OracleMissing(f"{exe} reports {out.stdout.strip()!r}, expected {NCA_VERSION}: "
                            f"re-run `bash {SETUP_SCRIPT}`")
    return exe


@dataclass(frozen=True, slots=True)
class NcaRun:
    """One NCA invocation: exit code and both output streams, kept for failure messages."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return f"$ {' '.join(self.args)}\n[exit {self.returncode}]\n{self.stdout}\n{self.stderr}"


def run_nca(exe: Path, directory: Path, timeout: float = 120.0) -> NcaRun:
    """``nca --connectivity`` on every manifest under ``directory``, per pod, IPv6 included."""
    args = (str(exe), "--connectivity", "-r", str(directory), "-o", "txt_no_fw_rules",
            "--output_endpoints", "pods", "--print_ipv6")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          env=_clean_env(), cwd=directory)
    return NcaRun(args, proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------------------------------
# connections


def _protocols(text: str) -> frozenset[str]:
    """NCA's ProtocolSet text: ``*``, ``TCP, UDP``, or ``all but ICMP, TCP``; only TCP/UDP/SCTP kept."""
    text = text.strip()
    if text == "*":
        return frozenset(PROTOCOLS)
    negate = text.startswith("all but ")
    names = {n.strip().upper() for n in text.removeprefix("all but ").split(",") if n.strip()}
    return frozenset(PROTOCOLS) - names if negate else frozenset(PROTOCOLS) & names


def _port_ranges(text: str) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for item in text.split(","):
        lo_text, _, hi_text = item.strip().partition("-")
        lo, hi = int(lo_text), int(hi_text or lo_text)
        out.append((max(lo, 1), min(hi, 65535)))  # port 0 is "absent" (§2.1 item 3)
    return tuple(out)


def _cube(text: str) -> Ports:
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not an NCA connection cube: {text!r}")
    fields: dict[str, str] = {}
    for part in _CUBE_KEY.split(text[1:-1]):
        key, sep, value = part.partition(":")
        if not sep or key in fields:
            raise ValueError(f"malformed NCA connection cube: {text!r}")
        fields[key] = value
    unknown = set(fields) - {"protocols", "dst_ports"}
    if unknown:
        raise ValueError(f"NCA cube uses dimensions a NetworkPolicy cannot: {sorted(unknown)} in {text!r}")
    protocols = _protocols(fields["protocols"]) if "protocols" in fields else frozenset(PROTOCOLS)
    ports = _port_ranges(fields["dst_ports"]) if "dst_ports" in fields else ((1, 65535),)
    return Ports.build({p: ports for p in protocols})


def parse_connection(text: str) -> Ports:
    """``All connections`` (TCP+UDP+SCTP, all ports; ICMP and the rest ignored), ``No connections``,
    ``All but <cubes>`` or ``<cube>,<cube>...`` with cubes like ``{protocols:TCP,dst_ports:80,90-99}``."""
    text = text.strip()
    if text == "All connections":
        return FULL
    if text == "No connections":
        return Ports.build({})
    if text.startswith("All but "):
        return FULL - parse_connection(text.removeprefix("All but "))
    out = Ports.build({})
    for i, piece in enumerate(text.split("},{")):
        cube = ("" if i == 0 else "{") + piece + ("" if piece.endswith("}") else "}")
        out = out | _cube(cube)
    return out


# ---------------------------------------------------------------------------------------------------
# names


@dataclass(frozen=True, slots=True)
class NameMap:
    """NCA pod names (``ns/pod``) -> kubepci workload endpoints (``ns/name[Kind]``).

    NCA models a bare Pod under its own name and invents ``<workload>-1`` (and ``-2`` when there are
    two or more replicas; Jobs count ``parallelism``) for every pod-creating workload, in the
    workload's namespace. kubepci reports offline workloads once, as ``ns/name[Kind]``. Built from
    the manifests themselves, so a name NCA prints that is not in the map is an error, not a guess.
    """

    pods: Mapping[str, str]
    replicated: frozenset[str]  # endpoints for which NCA shows two pods (replicas talking to each other)

    @staticmethod
    def from_documents(docs: Iterable[Mapping[str, Any]]) -> NameMap:
        pods: dict[str, str] = {}
        replicated: set[str] = set()
        for doc in docs:
            kind = doc.get("kind")
            meta = doc.get("metadata") or {}
            name, ns = meta.get("name", ""), meta.get("namespace") or "default"
            if kind == "Pod":
                if meta.get("ownerReferences"):
                    raise ValueError(f"pod {ns}/{name}: owned pods are named by owner in NCA; not supported here")
                names = [name]
            elif kind in _POD_CREATORS:
                spec = doc.get("spec") or {}
                count = spec.get("parallelism", 1) if kind == "Job" else spec.get("replicas", 1)
                if not isinstance(count, int) or count < 1:
                    raise ValueError(f"{kind} {ns}/{name}: NCA creates no pods for {count!r} replicas")
                names = [f"{name}-{i}" for i in range(1, min(count, _MAX_REPLICAS) + 1)]
            else:
                continue
            endpoint = f"{ns}/{name}[{kind}]"
            if len(names) > 1:
                replicated.add(endpoint)
            for pod in names:
                key = f"{ns}/{pod}"
                if key in pods:
                    raise ValueError(f"NCA would name two pods {key!r} ({pods[key]} and {endpoint})")
                pods[key] = endpoint
        return NameMap(pods, frozenset(replicated))

    def endpoint(self, text: str) -> Endpoint | None:
        """A workload name, a tuple of IP ranges, or None for peers §2.1 says to drop."""
        if any(marker in text for marker in _DROPPED_PEERS):
            return None
        if text in self.pods:
            return self.pods[text]
        ranges = parse_ip_endpoint(text.removesuffix("[External]"))
        if ranges is None:
            raise ValueError(f"NCA printed an endpoint that is neither a known pod nor addresses: {text!r}")
        return ranges


def parse_nca_output(stdout: str, names: NameMap) -> list[RawPair]:
    """Every ``src => dst : conn`` line as (src, dst, ports); other lines are NCA's chatter."""
    out: list[RawPair] = []
    for line in stdout.splitlines():
        if " => " not in line:
            continue
        m = _LINE.match(line.strip())
        if m is None:
            raise ValueError(f"unparsable NCA line: {line!r}")
        src, dst = names.endpoint(m["src"]), names.endpoint(m["dst"])
        if src is None or dst is None:
            continue
        ports = parse_connection(m["conn"])
        if ports:
            out.append((src, dst, ports))
    return out


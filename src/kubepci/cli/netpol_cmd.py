"""`kubepci netpol`: reachability questions and CDE segmentation evidence from the command line.

Thin by design: load inputs, compile the model, call one library function, render, exit.
``can-reach`` exits 0 when the flow is allowed and 1 when it is denied, so scripts and CI can
assert segmentation directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kubepci.analyzers.netpol import CompileOptions, NetpolModel, compile_inventory
from kubepci.analyzers.netpol.svg import render_svg
from kubepci.config import Config, load_config
from kubepci.errors import InputError, KubepciError, UsageError
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.sources import SourceOptions, load_sources
from kubepci.scope import compute_scope

__all__ = ["main", "netpol"]


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=140)


def _load(paths: Sequence[str], config_path: Path | None, pod_ips: bool) -> tuple[NetpolModel, Inventory, Config]:
    if not paths:
        raise UsageError("give at least one path with manifests ('-' for stdin)")
    if config_path is not None:
        config = load_config(config_path)
    elif len(paths) == 1 and paths[0] != "-" and (Path(paths[0]) / "kubepci.yaml").is_file():
        config = load_config(Path(paths[0]) / "kubepci.yaml")
    else:
        config = Config()
    exclude = frozenset({Path(config.source).resolve()}) if config.source != "(defaults)" else frozenset()
    stdin_text = sys.stdin.read() if "-" in paths else None
    loaded = load_sources(paths, SourceOptions(exclude=exclude), stdin_text=stdin_text)
    if not loaded.resources:
        reasons = "; ".join(f"{u.location}: {u.reason}" for u in loaded.unreadable[:5]) or "no manifests found"
        raise InputError(f"nothing to analyse: {reasons}")
    inventory = Inventory.build(loaded.resources, loaded.unreadable, loaded.inputs)
    model = compile_inventory(inventory, config, CompileOptions(ipblock_matches_pod_ips=pod_ips))
    return model, inventory, config


def _common(func: Any) -> Any:
    func = click.argument("paths", nargs=-1)(func)
    func = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="kubepci.yaml (default: kubepci.yaml in the single scanned directory).")(func)
    func = click.option("--ipblock-matches-pod-ips/--no-ipblock-matches-pod-ips", "pod_ips", default=True,
                        show_default=True,
                        help="Let ipBlocks select pods by their live pod IPs (upstream e2e behaviour).")(func)
    return func


def _fmt_option(func: Any) -> Any:
    return click.option("-o", "--output", "fmt", default="table", show_default=True,
                        type=click.Choice(["table", "json"]))(func)


@click.group("netpol")
def netpol() -> None:
    """NetworkPolicy reachability: who can reach the CDE, on which ports, and why."""


def _parse_port(text: str | None) -> tuple[int | str | None, str | None]:
    if not text:
        return None, None
    port, _, proto = text.partition("/")
    proto_u = proto.upper() or None
    if proto_u is not None and proto_u not in ("TCP", "UDP", "SCTP"):
        raise UsageError(f"--port {text}: protocol must be TCP, UDP or SCTP")
    if port.upper() in ("TCP", "UDP", "SCTP") and not proto:
        return None, port.upper()
    if port.isdigit():
        if not 1 <= int(port) <= 65535:
            raise UsageError(f"--port {text}: port must be 1-65535")
        return int(port), proto_u
    if not port:
        raise UsageError(f"--port {text}: expected PORT/PROTOCOL, e.g. 8443/TCP")
    return port, proto_u


@netpol.command("can-reach")
@click.argument("src")
@click.argument("dst")
@_common
@click.option("--port", "port_text", help="PORT[/PROTO] or NAME[/PROTO] (named port of the destination).")
@_fmt_option
def can_reach(src: str, dst: str, paths: Sequence[str], config_path: Path | None, pod_ips: bool,
              port_text: str | None, fmt: str) -> None:
    """Can SRC open connections to DST? SRC/DST: ns/workload, ns, zone/<name> or an IP address."""
    port, proto = _parse_port(port_text)
    model, _inv, _cfg = _load(paths, config_path, pod_ips)
    verdict = model.can_reach(src, dst, port, proto)
    if fmt == "json":
        click.echo(json.dumps({"from": src, "to": dst, **verdict.to_dict()}, indent=2))
    else:
        head = "ALLOWED" if verdict.allowed else "DENIED"
        click.echo(f"{head}: {src} -> {dst} ({verdict.ports})")
        click.echo(verdict.explanation.text())
    sys.exit(0 if verdict.allowed else 1)


@netpol.command("matrix")
@_common
@click.option("--level", default="namespace", show_default=True, type=click.Choice(["zone", "namespace", "workload"]))
@_fmt_option
def matrix(paths: Sequence[str], config_path: Path | None, pod_ips: bool, level: str, fmt: str) -> None:
    """Allowed ports between zones, namespaces or workloads (external zones included)."""
    model, inventory, config = _load(paths, config_path, pod_ips)
    if level == "zone":
        scope = compute_scope(inventory, config)
        result = model.zone_matrix({ns: s.value for ns, s in scope.namespaces.items()})
    elif level == "namespace":
        result = model.namespace_matrix()
    else:
        result = model.workload_matrix()
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"Allowed flows by {level} ({len(result.cells)})", title_justify="left")
    for col in ("From", "To", "Ports"):
        table.add_column(col)
    for s, d, p in result.cells:
        table.add_row(s, d, str(p))
    _console().print(table)


@netpol.command("exposure")
@_common
@_fmt_option
def exposure(paths: Sequence[str], config_path: Path | None, pod_ips: bool, fmt: str) -> None:
    """Everything that can reach the CDE and everything the CDE can reach, against approved flows."""
    model, inventory, config = _load(paths, config_path, pod_ips)
    cde = compute_scope(inventory, config).cde_namespaces()
    result = model.exposure(cde)
    if fmt == "json":
        doc = result.to_dict()
        doc["diagnostics"] = [d.to_dict() for d in model.diagnostics]
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    console = _console()
    console.print(f"CDE namespaces: {', '.join(cde) or '(none: set scope.cde in kubepci.yaml)'}")
    for title, flows in (("Into the CDE", result.inbound), ("Out of the CDE", result.outbound)):
        table = Table(title=f"{title} ({len(flows)})", title_justify="left")
        for col in ("From", "To", "Allowed", "Not approved", "Approved by"):
            table.add_column(col)
        for f in flows:
            table.add_row(f.source, f.destination, str(f.ports), "" if not f.unapproved else str(f.unapproved),
                          "; ".join(f.approved_by))
        console.print(table)
    for e, d in result.not_isolated:
        console.print(f"not isolated: {e} has no NetworkPolicy isolating {d}")
    for e, r in result.not_enforceable:
        console.print(f"not enforceable: {e}: {r}")
    for e, p in result.not_analysed:
        console.print(f"not analysed: {e}: {p}")
    for diag in model.diagnostics:
        console.print(f"{diag.severity}: {diag.message}", markup=False)
    console.print("assumptions: " + "; ".join(result.assumptions), markup=False)


@netpol.command("svg")
@_common
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="SVG file to write ('-' for stdout).")
def svg(paths: Sequence[str], config_path: Path | None, pod_ips: bool, output: Path) -> None:
    """Draw zone/namespace flows as a self-contained SVG with the CDE highlighted."""
    model, inventory, config = _load(paths, config_path, pod_ips)
    scope = compute_scope(inventory, config)
    text = render_svg(model.namespace_matrix(), scope.cde_namespaces(), "kubepci: allowed flows",
                      {ns: s.value for ns, s in scope.namespaces.items()})
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the group on its own (``python -m kubepci.cli.netpol_cmd``) with kubepci's exit codes."""
    try:
        netpol.main(args=list(argv) if argv is not None else None, prog_name="kubepci netpol",
                    standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KubepciError as exc:
        click.echo(f"kubepci: {exc.diagnostics()}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()

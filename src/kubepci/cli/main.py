"""The kubepci command line: parse -> library call -> render -> exit code. Nothing else lives here."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

from kubepci import __version__
from kubepci.errors import KubepciError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

SEVERITIES = ("critical", "high", "medium", "low", "info", "none")


def _now(value: str | None) -> dt.datetime:
    """--now, else SOURCE_DATE_EPOCH (reproducible builds convention), else the wall clock."""
    if value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--now: not an ISO 8601 timestamp: {value}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    """A terminal keeps its width; pipes and CI logs get 140 columns instead of rich's 80."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    return console


class LazyGroup(click.Group):
    """Sub-command groups imported only when invoked: `kubepci scan` must not pay for the
    reachability engine or the audit-trail stores at start-up."""

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "netpol": ("kubepci.cli.netpol_cmd", "netpol"),
        "trail": ("kubepci.cli.trail_cmd", "trail"),
        "admission": ("kubepci.cli.admission_cmd", "admission"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            import importlib

            module, attr = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module}.{attr} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubepci")
def cli() -> None:
    """Prove a Kubernetes platform PCI DSS v4.0.1 compliant."""


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="kubepci.yaml (default: kubepci.yaml in the single scanned directory, if present).")
@click.option("--waivers", "waivers_path", type=click.Path(dir_okay=False, path_type=Path),
              help="waivers.yaml (default: the one kubepci.yaml names).")
@click.option("-o", "--output", "fmt", default="table", show_default=True,
              help="table, or a report format (json, ...) written to stdout.")
@click.option("--output-file", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write every supported report format into this directory.")
@click.option("--details", is_flag=True, help="List every finding with field path and remediation.")
@click.option("--fail-on", default="low", show_default=True, type=click.Choice(SEVERITIES),
              help="Exit 1 when a finding at or above this severity is not waived.")
@click.option("--strict", is_flag=True, help="Exit 3 if any input could not be read.")
@click.option("-f", "--values", "values_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Helm values file for chart directories (repeatable).")
@click.option("--set", "set_values", multiple=True, help="Helm --set for chart directories (repeatable).")
@click.option("--now", "now_text", help="Evaluation time (ISO 8601) for reproducible reports.")
@click.option("--check", "only_checks", multiple=True, help="Run only these check ids (repeatable).")
@click.option("--cluster", is_flag=True, help="Read a live cluster through its API (read-only; PATHS optional).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              help="Kubeconfig for --cluster (default: $KUBECONFIG or ~/.kube/config).")
@click.option("--context", "kube_context", help="Kubeconfig context for --cluster (default: the current one).")
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="With --cluster: read only these namespaces (repeatable; cluster-scoped objects are still read).")
@click.option("--dump", "dumps", multiple=True, type=click.Path(dir_okay=False),
              help="A 'kubectl get ... -o json|yaml' dump to scan (repeatable; same as giving it as a PATH).")
@click.option("--trail-store", help="Append the report's digest and the waiver changes seen to this audit trail "
              "(default: trail.store in kubepci.yaml).")
@click.option("--trail-key", type=click.Path(dir_okay=False, path_type=Path),
              help="Sign a trail checkpoint after appending (default: trail.key in kubepci.yaml).")
def scan(
    paths: Sequence[str], config_path: Path | None, waivers_path: Path | None, fmt: str, output_file: Path | None,
    report_dir: Path | None, details: bool, fail_on: str, strict: bool, values_files: Sequence[Path],
    set_values: Sequence[str], now_text: str | None, only_checks: Sequence[str], cluster: bool,
    kubeconfig: Path | None, kube_context: str | None, namespaces: Sequence[str], dumps: Sequence[str],
    trail_store: str | None, trail_key: Path | None,
) -> None:
    """Scan manifests, Helm charts or Kustomize directories (PATHS; '-' reads stdin), or a live cluster."""
    from kubepci.cli import scan_cmd

    paths = (*paths, *dumps)
    if not paths and not cluster:
        raise UsageError("give at least one path to scan ('-' for stdin), or --cluster")
    if not cluster and (kubeconfig is not None or kube_context or namespaces):
        raise UsageError("--kubeconfig, --context and --namespace need --cluster")
    code = scan_cmd.run_scan(
        scan_cmd.ScanArgs(
            paths=tuple(paths), config_path=config_path, waivers_path=waivers_path, fmt=fmt,
            output_file=output_file, report_dir=report_dir, details=details, fail_on=fail_on, strict=strict,
            values_files=tuple(values_files), set_values=tuple(set_values), now=_now(now_text),
            only_checks=tuple(only_checks), cluster=cluster, kubeconfig=kubeconfig, context=kube_context,
            namespaces=tuple(namespaces), trail_store=trail_store, trail_key=trail_key,
        )
    )
    sys.exit(code)


@cli.group()
def checks() -> None:
    """Browse the check catalog."""


@checks.command("list")
@click.option("-o", "--output", "fmt", default="table", type=click.Choice(["table", "json"]))
def checks_list(fmt: str) -> None:
    """Every check with severity, PCI requirements and blog requirement."""
    from rich.table import Table

    from kubepci.checks import default_catalog

    catalog = default_catalog()
    if fmt == "json":
        click.echo(json.dumps([c.meta.to_dict() for c in catalog], indent=2))
        return
    table = Table(title=f"{len(catalog)} checks · catalog {catalog.digest()[:12]}", title_justify="left")
    for col in ("ID", "Severity", "PCI DSS v4.0.1", "R", "Title"):
        table.add_column(col)
    for c in catalog:
        m = c.meta
        table.add_row(m.id, m.severity.label, ", ".join(m.requirements), "/".join(m.blog), m.title)
    stdout_console().print(table)


@checks.command("explain")
@click.argument("check_id")
def checks_explain(check_id: str) -> None:
    """What a check inspects, why, and how to fix a failure."""
    from kubepci.checks import default_catalog
    from kubepci.requirements import load_tree

    c = default_catalog().get(check_id)
    if c is None:
        raise UsageError(f"no check {check_id!r}; see 'kubepci checks list'")
    tree = load_tree()
    m = c.meta
    lines = [
        f"{m.id}: {m.title}",
        f"severity: {m.severity.label}   enforcement: {m.enforcement.value}   applies to: {m.applies_to}",
        f"targets: {', '.join(m.targets)}",
        "PCI DSS v4.0.1:",
        *[f"  {r}  {tree.get(r).title if r in tree else '(not in tree)'}" for r in m.requirements],
        f"blog requirement: {', '.join(m.blog)}",
        f"why: {m.description}",
        f"fix: {m.remediation}",
    ]
    if m.refs:
        lines.append(f"cross-references: {', '.join(m.refs)}")
    if m.cel:
        lines.append(f"CEL (ValidatingAdmissionPolicy): {m.cel}")
    click.echo("\n".join(lines))


@cli.command()
@click.option("-o", "--output", "fmt", default="table", type=click.Choice(["table", "json"]))
@click.option("--all", "show_all", is_flag=True, help="Show every requirement, not only principal ones.")
def requirements(fmt: str, show_all: bool) -> None:
    """Coverage: which requirement is automated by which checks, and which need manual evidence."""
    from rich.table import Table

    from kubepci.checks import default_catalog
    from kubepci.requirements import coverage, load_tree

    tree = load_tree()
    catalog = default_catalog()
    by_req = catalog.by_requirement()
    rows = coverage(tree, by_req)
    if fmt == "json":
        click.echo(json.dumps([
            {"id": r.requirement_id, "title": r.title, "status": r.status, "blog": r.blog,
             "v3_2_1": r.v3_2_1, "checks": list(r.check_ids)} for r in rows
        ], indent=2))
        return
    table = Table(title=f"PCI DSS v{tree.version} coverage", title_justify="left")
    for col in ("Req", "R", "v3.2.1", "Status", "Title", "Checks"):
        table.add_column(col)
    principal = {r.id for r in tree.principal()}
    for r in rows:
        if not show_all and r.requirement_id not in principal and not r.check_ids:
            continue
        table.add_row(r.requirement_id, r.blog, r.v3_2_1 or "", r.status, r.title, ", ".join(r.check_ids))
    stdout_console().print(table)


def main(argv: Sequence[str] | None = None) -> None:
    """The process entry point (console script and ``python -m kubepci``)."""
    _exit_now(_run(argv))


def _run(argv: Sequence[str] | None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="kubepci", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.exceptions.Abort:
        return 130
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.ClickException as exc:
        exc.show()
        return 2
    except KubepciError as exc:
        _stderr().print(f"kubepci: {exc.diagnostics()}", markup=False, soft_wrap=True)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except Exception as exc:
        _stderr().print(f"kubepci: internal error: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True)
        return 70
    return 0


def _exit_now(code: int) -> None:
    """Flush and leave without the interpreter's teardown: every command has closed its files by
    now, and freeing a large scan's million objects one by one cost 0.7 s of a 10 s run."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)

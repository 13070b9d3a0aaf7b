"""`kubepci admission export-vap`: the catalog's CEL checks as native ValidatingAdmissionPolicies.

Thin by design: read kubepci.yaml, call :func:`kubepci.admission.vap.export_documents`, write the
multi-document YAML (byte-stable, so it can be committed and diffed) to a file or stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kubepci.admission.vap import ACTIONS, export_documents, render_yaml
from kubepci.checks import default_catalog
from kubepci.config import Config, load_config
from kubepci.errors import InputError, UsageError

__all__ = ["export_vap"]


@click.command("export-vap")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="kubepci.yaml: scope, registries, thresholds and per-check enforcement overrides.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the YAML here instead of stdout.")
@click.option("--action", type=click.Choice(sorted(ACTIONS.values()), case_sensitive=False),
              help="validationActions for every binding (default: each check's enforcement).")
@click.option("--check", "check_ids", multiple=True, metavar="ID",
              help="Export only these checks (repeatable).")
def export_vap(config_path: Path | None, output: Path | None, action: str | None, check_ids: tuple[str, ...]) -> None:
    """Export every check that carries CEL as a ValidatingAdmissionPolicy plus bindings."""
    config = load_config(config_path) if config_path is not None else Config()
    catalog = default_catalog()
    if check_ids:
        unknown = sorted(set(check_ids) - {c.id for c in catalog})
        if unknown:
            raise UsageError(f"unknown check id(s): {', '.join(unknown)}")
        catalog = catalog.select(check_ids)
    canonical = {a.lower(): a for a in ACTIONS.values()}
    documents = export_documents(catalog, config, canonical[action.lower()] if action else None)
    if not documents:
        raise UsageError("no selected check has a CEL expression to export")
    text = render_yaml(documents)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{output}: cannot write: {exc.strerror}") from None
    policies = sum(1 for d in documents if d.get("kind") == "ValidatingAdmissionPolicy")
    click.echo(f"wrote {policies} policies and {len(documents) - policies} bindings to {output}", err=True)

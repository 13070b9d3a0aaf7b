"""Human summary for a terminal: one row per principal PCI DSS requirement, then what needs action."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kubepci.model import Finding, Status
from kubepci.model.report import Report, Verdict

__all__ = ["print_report"]

_VERDICT_STYLE = {
    Verdict.FAIL: "bold red",
    Verdict.ERROR: "bold magenta",
    Verdict.PASS: "green",
    Verdict.PARTIAL: "yellow",
    Verdict.MANUAL: "cyan",
    Verdict.NOT_TESTED: "dim",
    Verdict.NOT_APPLICABLE: "dim",
    Verdict.INHERITED: "dim",
}


def _summary_table(report: Report) -> Table:
    m = report.metadata
    table = Table(title=f"{m.standard} v{m.standard_version} — per principal requirement", title_justify="left")
    for col, kw in (("Req", {"justify": "right"}), ("R", {}), ("Requirement", {}), ("Verdict", {}),
                    ("Fail", {"justify": "right"}), ("Waived", {"justify": "right"}),
                    ("Pass", {"justify": "right"}), ("Checks", {"justify": "right"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for r in report.principal():
        table.add_row(
            r.id, r.blog, r.title, Text(r.verdict, style=_VERDICT_STYLE.get(r.verdict, "")),
            str(r.failed), str(r.waived), str(r.passed), str(len(r.checks)),
        )
    return table


def _details(console: Console, report: Report) -> None:
    meta = {c.id: c for c in report.checks}
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        if f.status in (Status.FAIL, Status.ERROR, Status.WAIVED):
            by_check[f.check_id].append(f)
    for check_id, items in sorted(by_check.items()):
        c = meta.get(check_id)
        head = Text(f"{check_id}", style="bold")
        if c is not None:
            head.append(f"  {c.title}  [{items[0].severity.label}]  PCI {', '.join(c.requirements)}")
        console.print(head)
        for f in items:
            where = f" ({f.location})" if f.location else ""
            tag = f"WAIVED by {f.waiver_id}" if f.status is Status.WAIVED else f.status.value
            console.print(f"  {tag:8} {f.resource}{where}", markup=False, highlight=False)
            console.print(f"           {f.path}: {f.message}", markup=False, highlight=False)
        if c is not None:
            console.print(f"  fix: {c.remediation}", style="italic", markup=False, highlight=False)


def print_report(report: Report, console: Console, *, details: bool = False) -> None:
    m = report.metadata
    console.print(
        f"kubepci {m.tool_version} · {m.resources} resources · {m.catalog_size} checks · "
        f"catalog {m.catalog_digest[:12]} · {m.generated_at}",
        highlight=False,
    )
    if report.scope:
        parts = [f"{k}: {', '.join(v)}" for k, v in sorted(report.scope.items())]
        console.print("scope — " + " | ".join(parts), highlight=False, markup=False)
    console.print(_summary_table(report))
    counts = report.counts
    console.print(
        f"findings: {counts.get('FAIL', 0)} fail · {counts.get('WAIVED', 0)} waived · "
        f"{counts.get('ERROR', 0)} error · {counts.get('PASS', 0)} resource checks passed",
        highlight=False,
    )
    if details:
        _details(console, report)
    elif counts.get("FAIL", 0):
        console.print("run with --details to list every finding with its field path and fix", style="dim")
    if report.unreadable:
        console.print(Text(f"could not read ({len(report.unreadable)}):", style="bold yellow"))
        for u in report.unreadable:
            console.print(f"  {u.location}: {u.reason}", markup=False, highlight=False)
    for w in report.waivers_expired:
        console.print(f"waiver {w.id} EXPIRED on {w.expires.isoformat()} and was not applied ({w.ticket})",
                      style="yellow", markup=False, highlight=False)
    for w in report.waivers_unused:
        console.print(f"waiver {w.id} matched nothing; remove it or fix its selector", style="yellow",
                      markup=False, highlight=False)
    for req in report.waiver_requests:
        console.print(f"exception requested by annotation on {req.resource} (not applied): {req.text}",
                      style="cyan", markup=False, highlight=False)

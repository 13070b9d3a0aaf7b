"""Reporters: ``render(report) -> bytes`` per format. They see only the Report."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from kubepci.model.report import Report
from kubepci.reporters import json_report, junit, sarif

__all__ = ["FORMATS", "render", "write"]

FORMATS: dict[str, Callable[[Report], bytes]] = {
    "json": json_report.render,
    "junit": junit.render,
    "sarif": sarif.render,
}


def render(report: Report, fmt: str) -> bytes:
    try:
        return FORMATS[fmt](report)
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r} (known: {', '.join(sorted(FORMATS))})") from None


def write(report: Report, fmt: str, out: BinaryIO) -> None:
    """Like render, into a file; the JSON report is streamed (large scans never hold it whole)."""
    if fmt == "json":
        json_report.write(report, out)
    else:
        out.write(render(report, fmt))

"""Pure helpers for the TLS checks: Go durations as cert-manager reads them, and DNS name matching."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["fmt_days", "host_matches", "parse_go_duration"]

_DAY = 86400.0
_GO_DURATION = re.compile(r"^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: Any) -> float | None:
    """Seconds in a Go ``time.ParseDuration`` string (``2160h``, ``1h30m``); None if invalid.

    ``90d`` is invalid in Go (there is no day unit) and cert-manager rejects it, so it is here too.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _GO_DURATION.match(text):
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_PART.findall(text))
    return -seconds if text.startswith("-") else seconds


def host_matches(pattern: str, host: str) -> bool:
    """DNS name match where ``*.example.com`` covers exactly one extra label (either side may be wild)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    for wild, name in ((pattern, host), (host, pattern)):
        if wild.startswith("*.") and "." in name and name.split(".", 1)[1] == wild[2:]:
            return True
    return False


def fmt_days(seconds: float) -> str:
    days = seconds / _DAY
    return f"{days:.0f}" if days == int(days) else f"{days:.1f}"
